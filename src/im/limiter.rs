//! Call-rate limiting: one limiter per SDKAppID, shared by every caller.
//!
//! Guarantee: no more than `max_calls` calls start in any window of
//! `window` length (1 s plus a small guard by default). A token bucket
//! cannot promise this: with a full second of burst it admits 2N calls in
//! one window. We keep the start times of the last `max_calls` calls (a
//! sliding log) instead: call k may start only once call k-N started a
//! whole window ago. That is exact, and under steady demand it delivers N
//! calls per window.
//!
//! Two refinements:
//! - A minimum spacing of `window / (2 N)` spreads a burst of waiting
//!   callers over half a window instead of firing them all in one instant,
//!   which the gateway sees as a spike. It never binds under steady demand
//!   (the log does), so it costs no throughput.
//! - A 60007 "rate limit exceeded" answer ([`RateLimiter::rate_limited`])
//!   pauses every caller of the app, and widens the window a little: the
//!   gateway counts arrivals, which jitter more on some networks and hosts
//!   than the fixed guard allows for, and each 60007 costs a retry. The
//!   limiter learns the guard it needs instead of paying for it again.
//!
//! Waiters queue on a fair (FIFO) mutex; only the head of the queue sleeps on
//! a timer, so a grant wakes one task, not all of them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::client::Command;

/// The documented rate limit of the IM REST API: 200 calls per second per
/// app (SDKAppID) and per API. The one place this number is written.
pub const DEFAULT_CALLS_PER_SECOND: u32 = 200;

/// The limiter's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max_calls: u32,
    pub window: Duration,
}

/// Added to the 1-second window by [`RateLimit::per_second`]. The gateway
/// counts arrivals, we count starts; a request that starts a window after
/// another can still arrive less than a window after it when the first was
/// slower on the wire. 15 ms absorbs that on ordinary networks and costs
/// 1.5% of throughput.
pub const DEFAULT_WINDOW_GUARD: Duration = Duration::from_millis(15);

impl RateLimit {
    /// `max_calls` per second, with [`DEFAULT_WINDOW_GUARD`].
    pub fn per_second(max_calls: u32) -> Self {
        Self { max_calls: max_calls.max(1), window: Duration::from_secs(1) + DEFAULT_WINDOW_GUARD }
    }

    /// The minimum spacing between two starts (see the module doc).
    fn min_spacing(&self) -> Duration {
        // Divided in two steps: 2 * max_calls could overflow u32.
        self.window / self.max_calls.max(1) / 2
    }
}

/// Start times of recent calls, oldest first. Pure: time is passed in.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    limit: RateLimit,
    /// Added to `limit.window`; only grows (see [`SlidingWindow::widen_to`]).
    learned_guard: Duration,
    starts: VecDeque<Instant>,
    last_start: Option<Instant>,
}

impl SlidingWindow {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            // Grows on demand: a huge limit must not allocate up front.
            starts: VecDeque::with_capacity((limit.max_calls as usize).min(4096)),
            last_start: None,
            learned_guard: Duration::ZERO,
        }
    }

    /// The window calls are counted in: the configured one plus what 60007
    /// answers taught.
    pub fn window(&self) -> Duration {
        self.limit.window + self.learned_guard
    }

    /// Widens the window by `guard` over the configured one. Never narrows
    /// it: a narrower window could let more than N calls into a second.
    pub fn widen_to(&mut self, guard: Duration) {
        self.learned_guard = self.learned_guard.max(guard);
    }

    /// The earliest moment at or after `now` at which one more call may start.
    pub fn next_start(&self, now: Instant) -> Instant {
        let mut at = now;
        if self.starts.len() >= self.limit.max_calls as usize
            && let Some(&oldest) = self.starts.front()
        {
            at = at.max(oldest + self.window());
        }
        if let Some(last) = self.last_start {
            at = at.max(last + self.limit.min_spacing());
        }
        at
    }

    /// Records a call starting at `at`, which must not precede `next_start`.
    pub fn record(&mut self, at: Instant) {
        if self.starts.len() >= self.limit.max_calls as usize {
            self.starts.pop_front();
        }
        self.starts.push_back(at);
        self.last_start = Some(at);
    }
}

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

/// How much a single 60007 answer widens the window.
pub const LEARNED_GUARD_STEP: Duration = Duration::from_millis(10);

/// The most 60007 answers can widen the window: 100 ms on a 1-second
/// window costs at most 9% of throughput, however jittery the path.
pub const MAX_LEARNED_GUARD: Duration = Duration::from_millis(100);

/// What 60007 answers have told the limiter so far.
#[derive(Debug, Default)]
struct Pushback {
    /// Every caller waits until then.
    cooldown_until: Option<Instant>,
    /// When the last 60007 that counted as news came back.
    last_news: Option<Instant>,
    /// Consecutive 60007 episodes, each less than two windows after the
    /// last: the pause doubles with each.
    streak: u32,
    learned_guard: Duration,
}

impl Pushback {
    /// Extends the cool-down to `until`; never shortens it.
    fn extend_cooldown(&mut self, until: Instant) {
        if self.cooldown_until.is_none_or(|current| current < until) {
            self.cooldown_until = Some(until);
        }
    }
}

/// The async limiter for one SDKAppID.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    // tokio's Mutex is fair: waiters are granted in arrival order.
    window: tokio::sync::Mutex<SlidingWindow>,
    pushback: Mutex<Pushback>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            window: tokio::sync::Mutex::new(SlidingWindow::new(limit)),
            pushback: Mutex::new(Pushback::default()),
        }
    }

    fn pushback(&self) -> std::sync::MutexGuard<'_, Pushback> {
        self.pushback.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Waits until a call may start, then counts it as started.
    /// Cancel-safe: a caller dropped while waiting uses up nothing.
    pub async fn acquire(&self) {
        let mut window = self.window.lock().await;
        loop {
            let now = Instant::now();
            let (cooldown, learned_guard) = {
                let pushback = self.pushback();
                (pushback.cooldown_until, pushback.learned_guard)
            };
            window.widen_to(learned_guard);
            let at = window.next_start(now).max(cooldown.unwrap_or(now));
            if at <= now {
                window.record(now);
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    }

    /// Holds every caller back until `until` (extends, never shortens).
    pub fn cool_down(&self, until: Instant) {
        self.pushback().extend_cooldown(until);
    }

    /// A call that started at `started` was answered 60007 at `now`.
    ///
    /// Calls that started before the last 60007 came back are the same
    /// episode (they were all in flight when the gateway was full) and teach
    /// nothing new. A new episode widens the window by
    /// [`LEARNED_GUARD_STEP`] (up to [`MAX_LEARNED_GUARD`]) and pauses every
    /// caller for `first_pause`, doubled for each episode that follows the
    /// last within two windows, up to one window: a gateway that counts in
    /// fixed seconds rather than a sliding one is full until its second ends.
    /// Returns how long callers now pause.
    pub fn rate_limited(&self, started: Instant, now: Instant, first_pause: Duration) -> Duration {
        let mut pushback = self.pushback();
        if pushback.last_news.is_some_and(|news| started < news) {
            return pushback.cooldown_until.map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        }
        let follows_closely = pushback.last_news.is_some_and(|news| now < news + self.limit.window * 2);
        pushback.streak = if follows_closely { pushback.streak.saturating_add(1) } else { 1 };
        pushback.last_news = Some(now);
        pushback.learned_guard = (pushback.learned_guard + LEARNED_GUARD_STEP).min(MAX_LEARNED_GUARD);
        let doubled = first_pause.saturating_mul(1 << (pushback.streak - 1).min(16));
        let pause = doubled.min(self.limit.window.max(first_pause));
        pushback.extend_cooldown(now + pause);
        pause
    }

    /// True when forgetting this limiter now cannot break the guarantee: no
    /// call started within the last window and no cool-down is pending, so a
    /// fresh limiter would admit no more than this one. False while someone
    /// holds its queue.
    pub fn is_quiet(&self, now: Instant) -> bool {
        let Ok(window) = self.window.try_lock() else {
            return false;
        };
        let started_recently = window.last_start.is_some_and(|last| last + window.window() > now);
        let cooling = self.pushback().cooldown_until.is_some_and(|until| until > now);
        !started_recently && !cooling
    }
}

/// The limiters of one app, one per API: the IM gateway gives every API its
/// own budget, so a drift check's ban-list reads never eat the unban budget.
#[derive(Debug, Clone)]
pub struct ApiLimiters {
    unban: Arc<RateLimiter>,
    ban: Arc<RateLimiter>,
    ban_list: Arc<RateLimiter>,
}

impl ApiLimiters {
    pub fn for_command(&self, command: Command) -> &Arc<RateLimiter> {
        match command {
            Command::UnbanGroupMember => &self.unban,
            Command::BanGroupMember => &self.ban,
            Command::GetGroupBanMember => &self.ban_list,
        }
    }
}

/// One limiter for every API (a test or a tool that wants one budget).
impl From<Arc<RateLimiter>> for ApiLimiters {
    fn from(limiter: Arc<RateLimiter>) -> Self {
        Self { unban: limiter.clone(), ban: limiter.clone(), ban_list: limiter }
    }
}

/// One limiter per SDKAppID and API for the whole process: every policy,
/// client and task that calls the same app shares its budget.
#[derive(Debug, Default)]
pub struct LimiterRegistry {
    limiters: Mutex<HashMap<(u64, Command), Arc<RateLimiter>>>,
}

impl LimiterRegistry {
    /// The limiter for `command` of `sdkappid`, created with `limit` on first use.
    pub fn for_api(&self, sdkappid: u64, command: Command, limit: RateLimit) -> Arc<RateLimiter> {
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        limiters.entry((sdkappid, command)).or_insert_with(|| Arc::new(RateLimiter::new(limit))).clone()
    }

    /// The limiters of every API of `sdkappid`.
    pub fn for_app(&self, sdkappid: u64, limit: RateLimit) -> ApiLimiters {
        ApiLimiters {
            unban: self.for_api(sdkappid, Command::UnbanGroupMember, limit),
            ban: self.for_api(sdkappid, Command::BanGroupMember, limit),
            ban_list: self.for_api(sdkappid, Command::GetGroupBanMember, limit),
        }
    }

    /// Forgets limiters no client holds any more and that are quiet (see
    /// [`RateLimiter::is_quiet`]): a process that runs for months meets
    /// many apps. Returns how many are left.
    pub fn evict_unused(&self, now: Instant) -> usize {
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        limiters.retain(|_, limiter| Arc::strong_count(limiter) > 1 || !limiter.is_quiet(now));
        limiters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Largest number of `starts` (sorted) inside any half-open window.
    fn busiest_window(starts: &[Instant], window: Duration) -> usize {
        let mut busiest = 0;
        let mut first = 0;
        for (last, &t) in starts.iter().enumerate() {
            while starts[first] + window <= t {
                first += 1;
            }
            busiest = busiest.max(last - first + 1);
        }
        busiest
    }

    /// Runs callers arriving at the given offsets through the pure window,
    /// FIFO, on a virtual clock; returns their start times.
    fn simulate(limit: RateLimit, arrivals_ms: &[u64]) -> Vec<Instant> {
        let origin = Instant::now();
        let mut window = SlidingWindow::new(limit);
        let mut free_at = origin; // when the FIFO head may ask
        let mut starts = Vec::new();
        for &offset in arrivals_ms {
            let arrival = (origin + Duration::from_millis(offset)).max(free_at);
            let start = window.next_start(arrival);
            window.record(start);
            free_at = start;
            starts.push(start);
        }
        starts
    }

    proptest! {
        /// The guarantee: whatever the arrival schedule, no window holds more
        /// than N starts, and every caller eventually starts.
        #[test]
        fn no_window_ever_holds_more_than_the_limit(
            max_calls in 1u32..50,
            window_ms in 10u64..2000,
            mut arrivals in proptest::collection::vec(0u64..5000, 1..400),
        ) {
            arrivals.sort_unstable();
            let limit = RateLimit { max_calls, window: Duration::from_millis(window_ms) };
            let starts = simulate(limit, &arrivals);
            prop_assert_eq!(starts.len(), arrivals.len());
            prop_assert!(busiest_window(&starts, limit.window) <= max_calls as usize);
        }

        /// Under steady demand (everyone waiting from the start), the limiter
        /// delivers at least 97% of N per window.
        #[test]
        fn steady_demand_gets_at_least_97_percent_of_the_limit(
            max_calls in 1u32..400,
            windows in 3u32..8,
        ) {
            let limit = RateLimit { max_calls, window: Duration::from_secs(1) };
            let demand = vec![0; (max_calls * (windows + 1)) as usize];
            let starts = simulate(limit, &demand);
            let horizon = starts[0] + limit.window * windows;
            let delivered = starts.iter().filter(|&&t| t < horizon).count() as f64;
            prop_assert!(delivered >= 0.97 * f64::from(max_calls * windows),
                "delivered {} in {} windows of {}", delivered, windows, max_calls);
        }
    }

    /// The async limiter, on tokio's paused clock, keeps the same guarantee
    /// for tasks that race for it from random arrival times.
    #[test]
    fn async_limiter_keeps_the_guarantee_for_concurrent_tasks() {
        proptest!(ProptestConfig::with_cases(24), |(
            max_calls in 1u32..30,
            arrivals in proptest::collection::vec(0u64..3000, 1..150),
        )| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let limit = RateLimit { max_calls, window: Duration::from_secs(1) };
            let mut starts = runtime.block_on(async move {
                let limiter = Arc::new(RateLimiter::new(limit));
                let tasks: Vec<_> = arrivals
                    .into_iter()
                    .map(|offset| {
                        let limiter = limiter.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(offset)).await;
                            limiter.acquire().await;
                            Instant::now()
                        })
                    })
                    .collect();
                let mut starts = Vec::new();
                for task in tasks {
                    starts.push(task.await.unwrap());
                }
                starts
            });
            starts.sort_unstable();
            prop_assert!(busiest_window(&starts, limit.window) <= max_calls as usize);
        });
    }

    /// Absurd limits neither overflow nor allocate their whole log up front.
    #[test]
    fn extreme_limits_are_handled() {
        for max_calls in [1, u32::MAX / 2 + 1, u32::MAX] {
            let limit = RateLimit::per_second(max_calls);
            let mut window = SlidingWindow::new(limit);
            let now = Instant::now();
            assert!(window.next_start(now) == now);
            window.record(now);
            assert!(window.next_start(now) >= now);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cool_down_holds_every_caller_back() {
        let limiter = RateLimiter::new(RateLimit::per_second(200));
        let begin = Instant::now();
        limiter.cool_down(begin + Duration::from_millis(700));
        limiter.acquire().await;
        assert!(Instant::now() >= begin + Duration::from_millis(700));
    }

    #[test]
    fn counter_admits_up_to_max_in_a_window_then_refuses() {
        let origin = Instant::now();
        let mut counter = WindowCounter::new(Duration::from_secs(1));
        assert!((0..3).all(|_| counter.try_admit(origin, 3)));
        assert!(!counter.try_admit(origin + Duration::from_millis(999), 3));
        assert!(counter.try_admit(origin + Duration::from_secs(1), 3));
    }

    #[test]
    fn registry_shares_one_limiter_per_app() {
        let registry = LimiterRegistry::default();
        let unban = Command::UnbanGroupMember;
        let a = registry.for_api(1, unban, RateLimit::per_second(200));
        let b = registry.for_api(1, unban, RateLimit::per_second(5));
        let c = registry.for_api(2, unban, RateLimit::per_second(200));
        let list = registry.for_api(1, Command::GetGroupBanMember, RateLimit::per_second(200));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(!Arc::ptr_eq(&a, &list), "each API has its own budget");
    }

    /// A limiter is forgotten only when no one holds it and its last call
    /// started a whole window ago: forgetting it earlier would let a fresh
    /// one admit a second full window's worth of calls.
    #[tokio::test(start_paused = true)]
    async fn unused_limiters_are_evicted_only_once_quiet() {
        let registry = LimiterRegistry::default();
        let limit = RateLimit::per_second(200);
        let held = registry.for_app(1, limit);
        held.for_command(Command::UnbanGroupMember).acquire().await;
        assert_eq!(registry.evict_unused(Instant::now()), 3, "held by a client");
        drop(held);
        assert_eq!(
            registry.evict_unused(Instant::now()),
            1,
            "the two unused APIs go; the third started a call just now"
        );
        tokio::time::advance(limit.window).await;
        assert_eq!(registry.evict_unused(Instant::now()), 0);
        let cooling = registry.for_api(1, Command::UnbanGroupMember, limit);
        cooling.cool_down(Instant::now() + Duration::from_secs(5));
        drop(cooling);
        assert_eq!(registry.evict_unused(Instant::now()), 1, "a pending cool-down keeps it");
    }

    /// The 15 ms guard widens the window, never narrows it: turned the
    /// other way (985 ms), a gateway counting a plain second could see more
    /// than N calls in one of its windows.
    #[test]
    fn the_guard_widens_the_window() {
        let limit = RateLimit::per_second(200);
        assert_eq!(limit.window, Duration::from_millis(1015));
        let origin = Instant::now();
        let mut window = SlidingWindow::new(limit);
        let mut starts = Vec::new();
        let mut at = origin;
        for _ in 0..1000 {
            at = window.next_start(at);
            window.record(at);
            starts.push(at);
        }
        assert!(busiest_window(&starts, Duration::from_millis(1015)) <= 200);
        assert!(busiest_window(&starts, Duration::from_secs(1)) <= 200);
    }

    /// A burst of waiting callers is spread over half a window, not fired
    /// in one instant (which a gateway sees as a spike).
    #[test]
    fn a_burst_is_spread_over_half_a_window() {
        let limit = RateLimit::per_second(200);
        let starts = simulate(limit, &[0; 200]);
        let spacing = limit.window / 400;
        assert!(starts.windows(2).all(|pair| pair[1] - pair[0] >= spacing), "spaced by at least {spacing:?}");
        assert!(starts[199] - starts[0] < limit.window / 2 + spacing, "and done within half a window");
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

    /// One 60007 episode: calls in flight when the first answer came back
    /// teach nothing more; a later answer is a new episode, which widens the
    /// window again and pauses longer.
    #[tokio::test(start_paused = true)]
    async fn a_60007_episode_pauses_everyone_and_widens_the_window_once() {
        let limiter = RateLimiter::new(RateLimit::per_second(200));
        let pause = Duration::from_millis(100);
        let started = Instant::now();
        tokio::time::advance(Duration::from_millis(30)).await;
        let now = Instant::now();
        assert_eq!(limiter.rate_limited(started, now, pause), pause);
        assert_eq!(limiter.pushback().learned_guard, LEARNED_GUARD_STEP);
        // Another call of the same burst answers 60007 a moment later.
        tokio::time::advance(Duration::from_millis(5)).await;
        let left = limiter.rate_limited(started, Instant::now(), pause);
        assert_eq!(left, Duration::from_millis(95), "the same pause, not a new one");
        assert_eq!(limiter.pushback().learned_guard, LEARNED_GUARD_STEP, "one step per episode");

        limiter.acquire().await;
        assert_eq!(Instant::now(), now + pause, "every caller waited out the pause");
        assert_eq!(limiter.window.lock().await.window(), Duration::from_millis(1025));

        // A call started after the pause meets 60007 again: a new episode,
        // close to the last, so the pause doubles.
        let started = Instant::now();
        tokio::time::advance(Duration::from_millis(20)).await;
        assert_eq!(limiter.rate_limited(started, Instant::now(), pause), pause * 2);
        assert_eq!(limiter.pushback().learned_guard, LEARNED_GUARD_STEP * 2);
    }

    /// The pause doubles up to one window and no further, the learned guard
    /// stops at its cap, and a quiet spell resets the pause.
    #[tokio::test(start_paused = true)]
    async fn pauses_and_learned_guard_are_capped_and_the_pause_resets() {
        let limit = RateLimit::per_second(200);
        let limiter = RateLimiter::new(limit);
        let pause = Duration::from_millis(100);
        let mut pauses = Vec::new();
        for _ in 0..15 {
            let started = Instant::now();
            tokio::time::advance(Duration::from_millis(1)).await;
            pauses.push(limiter.rate_limited(started, Instant::now(), pause));
        }
        let ms: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
        assert_eq!(ms[..6], [100, 200, 400, 800, 1015, 1015]);
        assert_eq!(limiter.pushback().learned_guard, MAX_LEARNED_GUARD);

        tokio::time::advance(limit.window * 2).await;
        let started = Instant::now();
        assert_eq!(limiter.rate_limited(started, Instant::now(), pause), pause, "a new streak after a quiet spell");
    }

    /// Whatever 60007 answers teach, the window only widens: the guarantee
    /// over the configured window still holds.
    #[test]
    fn a_widened_window_keeps_the_guarantee() {
        proptest!(|(
            max_calls in 1u32..50,
            widen_every in 1usize..40,
            calls in 1usize..400,
        )| {
            let limit = RateLimit::per_second(max_calls);
            let mut window = SlidingWindow::new(limit);
            let mut at = Instant::now();
            let mut starts = Vec::new();
            for call in 0..calls {
                if call % widen_every == 0 {
                    let guard = LEARNED_GUARD_STEP * (call / widen_every) as u32;
                    window.widen_to(guard.min(MAX_LEARNED_GUARD));
                    window.widen_to(Duration::ZERO);
                }
                at = window.next_start(at);
                window.record(at);
                starts.push(at);
            }
            prop_assert!(busiest_window(&starts, limit.window) <= max_calls as usize);
            prop_assert!(window.window() >= limit.window);
        });
    }
}
