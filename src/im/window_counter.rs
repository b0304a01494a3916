//! Events counted over a sliding window: how a server enforces a limit
//! (the simulator answers 60007 when [`WindowCounter::try_admit`] says
//! no), and how the limiter tells how often the gateway said an app's
//! budget was spent.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Rejects rather than waits: how a server enforces a limit. Used by the
/// simulator, which answers 60007 when `try_admit` says no.
#[derive(Debug, Clone)]
pub struct WindowCounter {
    window: Duration,
    arrivals: VecDeque<Instant>,
}

impl WindowCounter {
    pub fn new(window: Duration) -> Self {
        Self { window, arrivals: VecDeque::new() }
    }

    /// Counts an event at `now` and returns how many fall in `(now - window, now]`.
    pub fn observe(&mut self, now: Instant) -> usize {
        self.forget_before(now);
        self.arrivals.push_back(now);
        self.arrivals.len()
    }

    /// How many events fall in `(now - window, now]`.
    pub fn count(&mut self, now: Instant) -> usize {
        self.forget_before(now);
        self.arrivals.len()
    }

    /// Admits an event at `now` if fewer than `max` were admitted in the window.
    pub fn try_admit(&mut self, now: Instant, max: usize) -> bool {
        self.forget_before(now);
        if self.arrivals.len() >= max {
            return false;
        }
        self.arrivals.push_back(now);
        true
    }

    fn forget_before(&mut self, now: Instant) {
        while self.arrivals.front().is_some_and(|&t| t + self.window <= now) {
            self.arrivals.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_admits_up_to_max_in_a_window_then_refuses() {
        let origin = Instant::now();
        let mut counter = WindowCounter::new(Duration::from_secs(1));
        assert!((0..3).all(|_| counter.try_admit(origin, 3)));
        assert!(!counter.try_admit(origin + Duration::from_millis(999), 3));
        assert!(counter.try_admit(origin + Duration::from_secs(1), 3));
    }

    /// The simulator's counter reports what it saw: the busiest-window
    /// figures in tests and benchmarks come from it.
    #[test]
    fn counter_observes_events_within_the_window() {
        let origin = Instant::now();
        let mut counter = WindowCounter::new(Duration::from_secs(1));
        assert_eq!(counter.observe(origin), 1);
        assert_eq!(counter.observe(origin + Duration::from_millis(500)), 2);
        assert_eq!(counter.observe(origin + Duration::from_millis(999)), 3);
        assert_eq!(counter.observe(origin + Duration::from_millis(1000)), 3, "the first has left the window");
        assert_eq!(counter.observe(origin + Duration::from_secs(5)), 1);
    }

    /// Counting looks without adding: what the limiter reports as the
    /// app's budget answers of the last minute.
    #[test]
    fn count_reports_the_window_without_adding_to_it() {
        let origin = Instant::now();
        let mut counter = WindowCounter::new(Duration::from_secs(60));
        assert_eq!(counter.count(origin), 0);
        for second in 0..5 {
            counter.observe(origin + Duration::from_secs(second));
        }
        assert_eq!(counter.count(origin + Duration::from_secs(5)), 5);
        assert_eq!(counter.count(origin + Duration::from_secs(5)), 5, "counting added nothing");
        assert_eq!(counter.count(origin + Duration::from_secs(62)), 2, "the first three have left the window");
    }
}
