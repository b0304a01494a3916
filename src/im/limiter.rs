//! Call-rate limiting: one limiter per SDKAppID and API, shared by every caller.
//!
//! Guarantee: no more than `max_calls` calls *reach the gateway* in any
//! window of `window` length (1 s plus a small guard by default). The
//! gateway counts arrivals, and we cannot see an arrival, but we can bound
//! it: a call reaches the gateway after it starts and before its answer
//! comes back. So each call holds one of `max_calls` slots from its start
//! until a window after the latest moment it can have arrived, and a new
//! call starts only when a slot is free: a request held up on the wire keeps
//! its slot until its answer shows where it was. (Counting starts instead,
//! as a token bucket or a log of start times does, lets a delayed request
//! arrive in the same window as the ones that started after it: that is what
//! a 60007 is.) A call given up without an answer counts as arriving when it
//! was given up.
//!
//! Refinements:
//! - The latest arrival is taken as the answer's time minus the shortest
//!   round trip answered before it: a path that always takes 150 ms should
//!   not cost 150 ms of every slot, only what a call took beyond the quickest
//!   one. Shifting every arrival by the same delay does not change how many
//!   fall in a window, so this is exact once the quickest round trip seen is
//!   as quick on the way there as any later call's (a warm connection has
//!   answered). Until then (a first wave of calls that all open
//!   connections, say) the error is at most how much slower that quickest
//!   call was on its way there, which is what counting starts risks too: the
//!   guard covers it, and a bound is never earlier than the call's start.
//! - A minimum spacing of `window / (2 N)` spreads a burst of waiting
//!   callers over half a window instead of firing them all in one instant,
//!   which the gateway sees as a spike. It never binds under steady demand
//!   (the slots do), so it costs no throughput.
//! - A 60007 "rate limit exceeded" answer ([`RateLimiter::rate_limited`])
//!   pauses every caller of the app, and widens the window a little: the
//!   gateway's behaviour is not documented to the millisecond, and each
//!   60007 costs a retry. The limiter learns the guard it needs instead of
//!   paying for it again.
//!
//! Waiters queue on a fair (FIFO) mutex; only the head of the queue sleeps,
//! on a timer or until a call in flight is answered, so a grant wakes one
//! task, not all of them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::window_counter::WindowCounter;
use super::wire::Command;

/// The documented rate limit of the IM REST API: 200 calls per second per
/// app (SDKAppID) and per API. The one place this number is written.
pub const DEFAULT_CALLS_PER_SECOND: u32 = 200;

/// The limiter's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max_calls: u32,
    pub window: Duration,
}

/// Added to the 1-second window by [`RateLimit::per_second`]. It covers
/// what the bound on arrivals cannot see: the gateway's own clock and
/// timer granularity, and a round trip estimate taken before a warm
/// connection answered (see the module doc). It costs 1.5% of throughput.
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

/// Names one started call in a [`SlidingWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallId(u64);

/// The slots of recent calls. Pure: time is passed in.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    limit: RateLimit,
    /// Added to `limit.window`; only grows (see [`SlidingWindow::widen_to`]).
    learned_guard: Duration,
    /// Start times of calls not yet answered: each holds a slot until it is.
    in_flight: HashMap<CallId, Instant>,
    /// For answered calls, the latest moment each can have reached the
    /// gateway; only the largest `max_calls - in_flight` matter, so no more
    /// are kept.
    arrived_by: BinaryHeap<Reverse<Instant>>,
    /// The shortest start-to-answer time seen so far (see the module doc).
    shortest_round_trip: Option<Duration>,
    next_id: u64,
    last_start: Option<Instant>,
    /// The latest `arrived_by` ever recorded: when the last slot frees.
    latest_arrival: Option<Instant>,
}

impl SlidingWindow {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            learned_guard: Duration::ZERO,
            // Grow on demand: a huge limit must not allocate up front.
            in_flight: HashMap::new(),
            arrived_by: BinaryHeap::new(),
            shortest_round_trip: None,
            next_id: 0,
            last_start: None,
            latest_arrival: None,
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

    fn slots_held(&self) -> usize {
        self.in_flight.len() + self.arrived_by.len()
    }

    /// The earliest moment at or after `now` at which one more call may
    /// start, or `None` while every slot is held by a call in flight (the
    /// next answer frees one).
    pub fn next_start(&self, now: Instant) -> Option<Instant> {
        let mut at = now;
        if self.slots_held() >= self.limit.max_calls as usize {
            let Reverse(oldest) = self.arrived_by.peek()?;
            at = at.max(*oldest + self.window());
        }
        if let Some(last) = self.last_start {
            at = at.max(last + self.limit.min_spacing());
        }
        Some(at)
    }

    /// Records a call starting at `at`, which must not precede `next_start`.
    pub fn record(&mut self, at: Instant) -> CallId {
        if self.slots_held() >= self.limit.max_calls as usize {
            // Its window has passed (next_start said so): the slot is free.
            self.arrived_by.pop();
        }
        let id = CallId(self.next_id);
        self.next_id += 1;
        self.in_flight.insert(id, at);
        self.last_start = Some(at);
        id
    }

    /// The gateway answered call `id` at `at`: its slot is now held until a
    /// window after the latest moment it can have arrived.
    pub fn answered(&mut self, id: CallId, at: Instant) {
        let Some(started) = self.in_flight.remove(&id) else {
            return;
        };
        // The shortest round trip of the calls answered before this one: a
        // call's own round trip would excuse all of its delay, and the very
        // first answer (often over a fresh connection) excuses none.
        let arrived_by = match self.shortest_round_trip {
            Some(shortest) => at.checked_sub(shortest).unwrap_or(started).max(started),
            None => at,
        };
        let round_trip = at.saturating_duration_since(started);
        self.shortest_round_trip = Some(self.shortest_round_trip.map_or(round_trip, |s| s.min(round_trip)));
        self.hold_until(arrived_by);
    }

    /// Call `id` was given up at `at` with no answer (a timeout, a refused
    /// connection, a caller that went away): nothing shows where the request
    /// got to, so it is counted as arriving at `at`, and its (perhaps very
    /// short) time teaches nothing about the path.
    pub fn given_up(&mut self, id: CallId, at: Instant) {
        if self.in_flight.remove(&id).is_some() {
            self.hold_until(at);
        }
    }

    fn hold_until(&mut self, arrived_by: Instant) {
        self.arrived_by.push(Reverse(arrived_by));
        self.latest_arrival = Some(self.latest_arrival.map_or(arrived_by, |latest| latest.max(arrived_by)));
    }

    /// True when no call is in flight and every slot's window has passed.
    fn is_idle(&self, now: Instant) -> bool {
        self.in_flight.is_empty() && self.latest_arrival.is_none_or(|latest| latest + self.window() <= now)
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
        self.cooldown_until = Some(self.cooldown_until.map_or(until, |current| current.max(until)));
    }
}

/// The async limiter for one SDKAppID.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    // tokio's Mutex is fair: waiters are granted in arrival order, and only
    // the head of the queue looks at the window.
    queue: tokio::sync::Mutex<()>,
    window: Mutex<SlidingWindow>,
    /// Wakes the head of the queue when a call in flight is answered.
    answered: Notify,
    pushback: Mutex<Pushback>,
    /// Answers that the app's budget was spent (60007, 60011), over the
    /// last [`BUDGET_ANSWERS_WINDOW`]: many of them, although this limiter
    /// kept under its limit, mean another client spends the same budget.
    budget_answers: Mutex<WindowCounter>,
}

/// How far back [`RateLimiter::budget_answers_lately`] looks.
pub const BUDGET_ANSWERS_WINDOW: Duration = Duration::from_secs(60);

/// One call's slot, from [`RateLimiter::acquire`]. Call
/// [`CallSlot::answered`] when the gateway's answer is in; dropping it
/// otherwise counts the call as given up (see [`SlidingWindow::given_up`]).
/// Hold it until then, not a moment less.
#[derive(Debug)]
#[must_use = "the slot is released when dropped: hold it until the call is answered"]
pub struct CallSlot<'a> {
    limiter: &'a RateLimiter,
    id: CallId,
    answered: bool,
}

impl CallSlot<'_> {
    /// The gateway answered (any HTTP answer, even an error status).
    pub fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for CallSlot<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        {
            let mut window = self.limiter.window();
            if self.answered {
                window.answered(self.id, now);
            } else {
                window.given_up(self.id, now);
            }
        }
        self.limiter.answered.notify_waiters();
    }
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            queue: tokio::sync::Mutex::new(()),
            window: Mutex::new(SlidingWindow::new(limit)),
            answered: Notify::new(),
            pushback: Mutex::new(Pushback::default()),
            budget_answers: Mutex::new(WindowCounter::new(BUDGET_ANSWERS_WINDOW)),
        }
    }

    /// The gateway said at `now` that the app's budget is spent.
    pub fn note_budget_answer(&self, now: Instant) {
        self.budget_answers.lock().unwrap_or_else(|e| e.into_inner()).observe(now);
    }

    /// How many answers said the app's budget was spent in the last
    /// [`BUDGET_ANSWERS_WINDOW`], every caller of this limiter together.
    pub fn budget_answers_lately(&self, now: Instant) -> usize {
        self.budget_answers.lock().unwrap_or_else(|e| e.into_inner()).count(now)
    }

    fn pushback(&self) -> std::sync::MutexGuard<'_, Pushback> {
        self.pushback.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn window(&self) -> std::sync::MutexGuard<'_, SlidingWindow> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The window, widened by what 60007 answers have taught, and the
    /// cool-down they imposed.
    fn current_window(&self) -> (std::sync::MutexGuard<'_, SlidingWindow>, Option<Instant>) {
        let (cooldown, learned_guard) = {
            let pushback = self.pushback();
            (pushback.cooldown_until, pushback.learned_guard)
        };
        let mut window = self.window();
        window.widen_to(learned_guard);
        (window, cooldown)
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Waits until a call may start, then counts it as started; the call
    /// holds its slot until the returned [`CallSlot`] is dropped.
    /// Cancel-safe: a caller dropped while waiting uses up nothing.
    pub async fn acquire(&self) -> CallSlot<'_> {
        let _head = self.queue.lock().await;
        loop {
            // Registered before the window is read, so an answer that comes
            // in between still wakes us.
            let answered = self.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            let now = Instant::now();
            let next = {
                let (mut window, cooldown) = self.current_window();
                let next = window.next_start(now).map(|at| at.max(cooldown.unwrap_or(now)));
                if next.is_some_and(|at| at <= now) {
                    return CallSlot { limiter: self, id: window.record(now), answered: false };
                }
                next
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = answered => {}
                    }
                }
                None => answered.await,
            }
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
    /// call is in flight, every slot's window has passed and no cool-down is
    /// pending, so a fresh limiter would admit no more than this one. False
    /// while someone holds its queue.
    pub fn is_quiet(&self, now: Instant) -> bool {
        let Ok(_head) = self.queue.try_lock() else {
            return false;
        };
        // A 60007 since the last acquire may have widened the window.
        let (idle, cooldown) = {
            let (window, cooldown) = self.current_window();
            (window.is_idle(now), cooldown)
        };
        let cooling = cooldown.is_some_and(|until| until > now);
        idle && !cooling
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
    /// FIFO, on a virtual clock, each answered the moment it starts; returns
    /// their start times.
    fn simulate(limit: RateLimit, arrivals_ms: &[u64]) -> Vec<Instant> {
        let trips: Vec<(u64, u64, u64)> = arrivals_ms.iter().map(|&offset| (offset, 0, 0)).collect();
        simulate_trips(limit, &trips).into_iter().map(|(start, _)| start).collect()
    }

    /// Like [`simulate`] for callers `(ready at ms, µs on the way to the
    /// gateway, µs on the way back)`: returns each call's (start, arrival at
    /// the gateway). Answers are fed to the window in the order they come.
    fn simulate_trips(limit: RateLimit, trips: &[(u64, u64, u64)]) -> Vec<(Instant, Instant)> {
        let origin = Instant::now();
        let mut window = SlidingWindow::new(limit);
        let mut free_at = origin; // when the FIFO head may ask
        let mut answers: Vec<(Instant, CallId)> = Vec::new();
        let mut calls = Vec::new();
        for &(ready_ms, there_us, back_us) in trips {
            let mut now = (origin + Duration::from_millis(ready_ms)).max(free_at);
            loop {
                answers.sort_by_key(|&(at, _)| Reverse(at));
                while answers.last().is_some_and(|&(at, _)| at <= now) {
                    let (at, id) = answers.pop().unwrap();
                    window.answered(id, at);
                }
                let next_answer = answers.last().map(|&(at, _)| at);
                match window.next_start(now) {
                    Some(at) if at <= now => break,
                    Some(at) => now = next_answer.map_or(at, |answer| answer.min(at)),
                    None => now = next_answer.expect("every slot is in flight, so an answer is due"),
                }
            }
            let id = window.record(now);
            let arrival = now + Duration::from_micros(there_us);
            answers.push((arrival + Duration::from_micros(back_us), id));
            free_at = now;
            calls.push((now, arrival));
        }
        calls
    }

    /// The most arrivals any 1-second window of the gateway's sees when
    /// `trips` go through a window with `limit`.
    fn busiest_gateway_second(limit: RateLimit, trips: &[(u64, u64, u64)]) -> usize {
        let mut arrivals: Vec<Instant> = simulate_trips(limit, trips).into_iter().map(|(_, arrival)| arrival).collect();
        arrivals.sort_unstable();
        busiest_window(&arrivals, Duration::from_secs(1))
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

        /// Once a quick answer has shown the path's delay, requests held up on
        /// the wire, on the way there or back, by any amount, cannot put more
        /// than N arrivals into a window of the gateway's: each keeps its
        /// slot until its answer shows where it was. No guard needed.
        #[test]
        fn requests_held_up_on_the_wire_keep_their_slots(
            max_calls in 1u32..30,
            there_us in 0u64..100_000,
            back_us in 0u64..100_000,
            trips in proptest::collection::vec((0u64..4000, 0u64..400_000, 0u64..400_000), 1..300),
        ) {
            let mut trips: Vec<(u64, u64, u64)> = trips
                .into_iter()
                .map(|(ready, held_there, held_back)| (ready + 1, there_us + held_there, back_us + held_back))
                .collect();
            trips.sort_unstable();
            trips.insert(0, (0, there_us, back_us));
            let limit = RateLimit { max_calls, window: Duration::from_secs(1) };
            prop_assert!(busiest_gateway_second(limit, &trips) <= max_calls as usize);
        }

        /// The guarantee is about arrivals: however long each request spends
        /// on the wire, as long as the trip to the gateway varies by no more
        /// than the guard, no 1-second window of the gateway's sees more
        /// than N arrivals. Answers that come back in any order, quickly or
        /// slowly, cannot break it.
        #[test]
        fn no_gateway_window_ever_sees_more_than_the_limit_of_arrivals(
            max_calls in 1u32..30,
            guard_ms in 0u64..40,
            base_there_us in 0u64..200_000,
            trips in proptest::collection::vec((0u64..4000, 0u64..1_000_000, 0u64..400_000), 1..300),
        ) {
            let guard_us = guard_ms * 1000;
            let mut trips: Vec<(u64, u64, u64)> = trips
                .into_iter()
                .map(|(ready, jitter, back)| (ready, base_there_us + jitter % (guard_us + 1), back))
                .collect();
            trips.sort_unstable();
            let limit = RateLimit { max_calls, window: Duration::from_secs(1) + Duration::from_millis(guard_ms) };
            prop_assert!(busiest_gateway_second(limit, &trips) <= max_calls as usize);
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
                            let _slot = limiter.acquire().await;
                            let started = Instant::now();
                            // Reaches the gateway at once, answered later.
                            tokio::time::sleep(Duration::from_millis(offset % 37)).await;
                            started
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
            assert_eq!(window.next_start(now), Some(now));
            let call = window.record(now);
            assert!(window.next_start(now).is_some_and(|at| at >= now) || max_calls == 1);
            window.answered(call, now);
            assert!(window.next_start(now).is_some_and(|at| at >= now));
        }
    }

    /// A shorter cool-down never cuts a longer one short.
    #[tokio::test(start_paused = true)]
    async fn a_cool_down_extends_and_never_shortens() {
        let limiter = RateLimiter::new(RateLimit::per_second(200));
        let begin = Instant::now();
        limiter.cool_down(begin + Duration::from_millis(300));
        limiter.cool_down(begin + Duration::from_millis(700));
        limiter.cool_down(begin + Duration::from_millis(500));
        drop(limiter.acquire().await);
        assert_eq!(Instant::now(), begin + Duration::from_millis(700));
    }

    #[tokio::test(start_paused = true)]
    async fn cool_down_holds_every_caller_back() {
        let limiter = RateLimiter::new(RateLimit::per_second(200));
        let begin = Instant::now();
        limiter.cool_down(begin + Duration::from_millis(700));
        let _slot = limiter.acquire().await;
        assert!(Instant::now() >= begin + Duration::from_millis(700));
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

    /// A limiter is forgotten only when no one holds it, no call is in
    /// flight and its last slot's window has passed: forgetting it earlier
    /// would let a fresh one admit a second full window's worth of calls.
    #[tokio::test(start_paused = true)]
    async fn unused_limiters_are_evicted_only_once_quiet() {
        let registry = LimiterRegistry::default();
        let limit = RateLimit::per_second(200);
        let held = registry.for_app(1, limit);
        let unban = held.for_command(Command::UnbanGroupMember).clone();
        let slot = unban.acquire().await;
        assert_eq!(registry.evict_unused(Instant::now()), 3, "held by a client");
        drop(held);
        assert_eq!(registry.evict_unused(Instant::now()), 1, "the two unused APIs go; unban is held here");
        tokio::time::advance(limit.window * 3).await;
        assert!(!unban.is_quiet(Instant::now()), "a call in flight, however long, keeps it");
        drop(slot);
        assert!(!unban.is_quiet(Instant::now()), "answered just now");
        drop(unban);
        assert_eq!(registry.evict_unused(Instant::now()), 1, "its call was answered just now");
        tokio::time::advance(limit.window - Duration::from_millis(1)).await;
        assert_eq!(registry.evict_unused(Instant::now()), 1, "its slot's window has not passed");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(registry.evict_unused(Instant::now()), 0);
        let cooling = registry.for_api(1, Command::UnbanGroupMember, limit);
        cooling.cool_down(Instant::now() + Duration::from_secs(5));
        drop(cooling);
        assert_eq!(registry.evict_unused(Instant::now()), 1, "a pending cool-down keeps it");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(registry.evict_unused(Instant::now()), 0, "a cool-down that ends now is over");
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
            at = window.next_start(at).unwrap();
            let call = window.record(at);
            window.answered(call, at);
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

        drop(limiter.acquire().await);
        assert_eq!(Instant::now(), now + pause, "every caller waited out the pause");
        assert_eq!(limiter.window().window(), Duration::from_millis(1025));

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
        // Within two windows of the last, an episode continues the streak.
        tokio::time::advance(limit.window * 3 / 2).await;
        let started = Instant::now();
        assert_eq!(
            limiter.rate_limited(started, Instant::now(), pause),
            pause * 2,
            "1.5 windows on: the streak goes on"
        );
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
                at = window.next_start(at).unwrap();
                let call = window.record(at);
                window.answered(call, at);
                starts.push(at);
            }
            prop_assert!(busiest_window(&starts, limit.window) <= max_calls as usize);
            prop_assert!(window.window() >= limit.window);
        });
    }

    /// A request held up on the wire keeps its slot until its answer shows
    /// where it was. Counting starts, the third call could start a window
    /// after the slow one *started*, and reach the gateway in the same
    /// window as it: a 60007.
    #[test]
    fn a_slow_request_holds_its_slot_until_a_window_after_it_can_have_arrived() {
        let limit = RateLimit { max_calls: 2, window: Duration::from_secs(1) };
        let origin = Instant::now();
        let ms = |n: u64| origin + Duration::from_millis(n);
        let mut window = SlidingWindow::new(limit);
        let warm_up = window.record(ms(0));
        window.answered(warm_up, ms(2)); // the path's round trip: 2 ms
        // Recorded by hand, closer together than the spacing allows, to
        // keep the arithmetic plain.
        let slow = window.record(ms(1000)); // reaches the gateway at 1300 ms
        assert_eq!(window.next_start(ms(1000)), Some(ms(1250)), "the spacing still applies");
        let quick = window.record(ms(1001));
        assert_eq!(window.next_start(ms(1002)), None, "both slots are in flight");
        window.answered(quick, ms(1003));
        window.answered(slow, ms(1310));
        // The quick call's slot frees a window after it can have arrived,
        // the slow one's a window after its answer less the 2 ms trip.
        let third = window.next_start(ms(1310)).unwrap();
        assert_eq!(third, ms(2001));
        window.record(third);
        assert_eq!(window.next_start(third), Some(ms(2308)), "not at 2000 ms, a window after it started");
    }

    /// A call given up without an answer counts as arriving when it was
    /// given up, and its time (a refused connection takes a millisecond)
    /// teaches nothing about the path.
    #[test]
    fn a_call_given_up_counts_as_arriving_then_and_teaches_no_round_trip() {
        let limit = RateLimit { max_calls: 1, window: Duration::from_secs(1) };
        let origin = Instant::now();
        let ms = |n: u64| origin + Duration::from_millis(n);
        let mut window = SlidingWindow::new(limit);
        let refused = window.record(ms(0));
        window.given_up(refused, ms(1));
        assert_eq!(window.next_start(ms(1)), Some(ms(1001)));
        let slow = window.record(ms(1001));
        window.answered(slow, ms(1301));
        assert_eq!(window.next_start(ms(1301)), Some(ms(2301)), "not 2300: no 1 ms round trip was learned");
    }

    /// The quickest round trip is taken off every answer: a path that always
    /// takes 150 ms costs (next to) no throughput, where counting from
    /// answers would lose 15% of it.
    #[test]
    fn a_long_but_steady_path_costs_no_throughput() {
        let limit = RateLimit { max_calls: 50, window: Duration::from_secs(1) };
        let instant = simulate_trips(limit, &vec![(0, 0, 0); 500]);
        let steady = simulate_trips(limit, &vec![(0, 100_000, 50_000); 500]);
        let span = |calls: &[(Instant, Instant)]| calls[calls.len() - 1].0 - calls[0].0;
        assert_eq!(span(&instant), Duration::from_millis(9_490));
        // Only the first answer, with no quicker one seen before it, holds
        // its slot until it came back.
        assert!(span(&steady) <= span(&instant) + Duration::from_millis(10), "{:?}", span(&steady));
    }

    /// An answered slot takes the quickest earlier round trip off its
    /// answer; a slot dropped unanswered would not.
    #[tokio::test(start_paused = true)]
    async fn an_answered_slot_takes_the_quickest_round_trip_off() {
        let limiter = RateLimiter::new(RateLimit { max_calls: 1, window: Duration::from_secs(1) });
        let begin = Instant::now();
        let ms = |n: u64| begin + Duration::from_millis(n);
        let first = limiter.acquire().await;
        tokio::time::advance(Duration::from_millis(100)).await;
        first.answered(); // the quickest round trip: 100 ms
        let second = limiter.acquire().await;
        assert_eq!(Instant::now(), ms(1100));
        tokio::time::advance(Duration::from_millis(200)).await;
        second.answered(); // 200 ms: counted as arriving by 1200 ms
        drop(limiter.acquire().await);
        assert_eq!(Instant::now(), ms(2200), "not 2300: the answer less the quickest round trip");
    }

    /// The async limiter hands the slot back when the call is answered, and
    /// a caller queued behind a full window of calls in flight starts as soon
    /// as the window after the first answer allows.
    #[tokio::test(start_paused = true)]
    async fn calls_in_flight_hold_the_queue_until_answered() {
        let limiter = Arc::new(RateLimiter::new(RateLimit { max_calls: 1, window: Duration::from_secs(1) }));
        let begin = Instant::now();
        let slot = limiter.acquire().await;
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                drop(limiter.acquire().await);
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "the only slot is in flight");
        drop(slot);
        let started = waiter.await.unwrap();
        assert_eq!(started, begin + Duration::from_secs(6), "a window after the answer");
    }

    /// Answers that the app's budget was spent are counted per app over the
    /// last minute, whoever drew them: what tells a shared budget apart.
    #[tokio::test(start_paused = true)]
    async fn budget_answers_are_counted_over_the_last_minute() {
        let limiter = RateLimiter::new(RateLimit::per_second(200));
        let begin = Instant::now();
        assert_eq!(limiter.budget_answers_lately(begin), 0);
        for second in 0..3 {
            limiter.note_budget_answer(begin + Duration::from_secs(second));
        }
        assert_eq!(limiter.budget_answers_lately(begin + Duration::from_secs(3)), 3);
        assert_eq!(limiter.budget_answers_lately(begin + BUDGET_ANSWERS_WINDOW + Duration::from_secs(1)), 1);
        assert_eq!(limiter.budget_answers_lately(begin + BUDGET_ANSWERS_WINDOW * 2), 0);
    }
}
