//! The engine's wall clock: the system clock, or a simulated one started by `--wall-clock`
//! (tests of opening hours and SLA deadlines). Monotonic time never comes from here.

use chrono::{DateTime, Utc};
use std::sync::OnceLock;
use std::time::Instant;

static SIMULATED: OnceLock<(DateTime<Utc>, Instant)> = OnceLock::new();

/// Starts the simulated clock at `at`; it advances with real time.
pub fn set_start(at: DateTime<Utc>) {
    let _ = SIMULATED.set((at, Instant::now()));
}

pub fn now() -> DateTime<Utc> {
    match SIMULATED.get() {
        Some((start, base)) => {
            *start + chrono::TimeDelta::from_std(base.elapsed()).unwrap_or_default()
        }
        None => Utc::now(),
    }
}

pub fn now_ms() -> i64 {
    now().timestamp_millis()
}

/// The wall time of a past (or future) monotonic instant.
pub fn at(instant: Instant) -> DateTime<Utc> {
    let now_i = Instant::now();
    let now_w = now();
    if instant <= now_i {
        now_w - chrono::TimeDelta::from_std(now_i - instant).unwrap_or_default()
    } else {
        now_w + chrono::TimeDelta::from_std(instant - now_i).unwrap_or_default()
    }
}

/// The monotonic instant of a wall time in unix ms (clamped to now for future times).
pub fn instant_of_ms(ms: i64) -> Instant {
    let ago = now_ms() - ms;
    if ago <= 0 {
        Instant::now()
    } else {
        Instant::now()
            .checked_sub(std::time::Duration::from_millis(ago as u64))
            .unwrap_or_else(Instant::now)
    }
}
