//! Idle expiry for a client's connections: one reaper task per client, which runs only while
//! something is idle. Its ticks are the client's coarse clock (the epoch), so the request path
//! stamps connections with an atomic load instead of reading the clock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The tick: an eighth of the idle timeout, within these bounds.
const MIN_TICK: Duration = Duration::from_millis(1);
const MAX_TICK: Duration = Duration::from_secs(1);

pub struct IdleClock {
    epoch: AtomicU64,
    tick: Duration,
    /// Ticks after which an idle connection is closed: more than this many have passed, so
    /// never before the idle timeout and at most a tick after.
    timeout_ticks: u64,
    /// Whether the reaper task runs.
    running: AtomicBool,
}

/// What a reaper looks after: a client's connections.
pub trait Reap: Send + Sync + 'static {
    fn clock(&self) -> &IdleClock;
    /// Closes the connections idle past the timeout at epoch `now`; whether any idle ones are
    /// left (the reaper stops when none are).
    fn reap(&self, now: u64) -> bool;
}

impl IdleClock {
    pub fn new(idle_timeout: Duration) -> Self {
        let tick = (idle_timeout / 8).clamp(MIN_TICK, MAX_TICK);
        let timeout_ticks =
            u64::try_from(idle_timeout.as_nanos().div_ceil(tick.as_nanos())).unwrap_or(u64::MAX);
        IdleClock {
            epoch: AtomicU64::new(0),
            tick,
            timeout_ticks,
            running: AtomicBool::new(false),
        }
    }

    /// The current epoch (reaper ticks so far).
    pub fn now(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Whether a connection idle since epoch `since` has timed out at epoch `now`.
    pub fn expired(&self, since: u64, now: u64) -> bool {
        now.saturating_sub(since) > self.timeout_ticks
    }

    /// Starts `owner`'s reaper unless it runs: a load in the common case. Without a runtime
    /// (never on the proxy path) idle connections close with their owner.
    pub fn ensure_reaper<T: Reap>(owner: &Arc<T>) {
        let running = &owner.clock().running;
        if running.load(Ordering::Acquire) || running.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(reap(Arc::downgrade(owner)))),
            Err(_) => running.store(false, Ordering::Release),
        }
    }
}

/// Ticks the epoch and reaps, while anything is idle (the next connection that goes idle
/// starts it again).
async fn reap<T: Reap>(owner: Weak<T>) {
    loop {
        let Some(tick) = owner.upgrade().map(|o| o.clock().tick) else {
            return;
        };
        tokio::time::sleep(tick).await;
        let Some(owner) = owner.upgrade() else {
            return;
        };
        let clock = owner.clock();
        let now = clock.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        if owner.reap(now) {
            continue;
        }
        clock.running.store(false, Ordering::Release);
        // A connection that went idle during the scan saw the reaper running: look again.
        if !owner.reap(now) || clock.running.swap(true, Ordering::AcqRel) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_expires_after_more_ticks_than_the_timeout_holds() {
        let clock = IdleClock::new(Duration::from_secs(90));
        assert_eq!(clock.tick, MAX_TICK);
        assert!(!clock.expired(10, 100));
        assert!(clock.expired(10, 101));
        let short = IdleClock::new(Duration::from_millis(100));
        assert_eq!(short.tick, Duration::from_micros(12_500));
        assert_eq!(short.timeout_ticks, 8);
        // Zero and huge timeouts stay sane.
        assert_eq!(IdleClock::new(Duration::ZERO).tick, MIN_TICK);
        assert!(!IdleClock::new(Duration::MAX).expired(0, u64::MAX - 1));
    }
}
