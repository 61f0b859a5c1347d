//! The retry budget of a cluster: retries in flight stay under a share of the requests in flight,
//! so retries cannot multiply the load on a cluster that is already failing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Retries in flight may reach this percentage of the requests in flight...
const RETRY_PERCENT: u32 = 20;
/// ...but a lightly loaded cluster may always have this many.
const MIN_RETRIES: u32 = 3;

/// Whether one more retry fits when `active` requests and `retries` retries are in flight.
pub fn allows(active: u32, retries: u32) -> bool {
    retries < (active.saturating_mul(RETRY_PERCENT) / 100).max(MIN_RETRIES)
}

#[derive(Debug, Default)]
pub struct RetryBudget {
    active: AtomicU32,
    retries: AtomicU32,
}

/// Counts one attempt in flight until dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one retry in flight until dropped. Owns its budget, since a retry may move to
/// another cluster while the token is held.
#[derive(Debug)]
pub struct RetryToken(Arc<RetryBudget>);

impl Drop for RetryToken {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RetryBudget {
    /// Counts an attempt (first or retry) in flight.
    pub fn attempt(&self) -> InFlight<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.active)
    }

    /// Takes a retry token if the budget allows one.
    pub fn retry(self: &Arc<Self>) -> Option<RetryToken> {
        let active = self.active.load(Ordering::Relaxed);
        self.retries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |retries| {
                allows(active, retries).then_some(retries + 1)
            })
            .ok()?;
        Some(RetryToken(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_a_share_of_active_requests_with_a_floor() {
        assert!(allows(0, 0));
        assert!(allows(1, 2));
        assert!(!allows(1, 3));
        assert!(!allows(14, 3));
        assert!(allows(20, 3));
        assert!(!allows(20, 4));
        assert!(allows(100, 19));
        assert!(!allows(100, 20));
        assert!(allows(u32::MAX, 3));
    }

    #[test]
    fn tokens_are_returned_on_drop() {
        let b = Arc::new(RetryBudget::default());
        let first = b.attempt();
        let tokens: Vec<_> = (0..3).map(|_| b.retry().expect("floor of 3")).collect();
        assert!(b.retry().is_none());
        drop(tokens);
        assert!(b.retry().is_some());
        // Twenty active requests allow four retries.
        let more: Vec<_> = (0..19).map(|_| b.attempt()).collect();
        let tokens: Vec<_> = (0..4).map(|_| b.retry().expect("20% of 20")).collect();
        assert!(b.retry().is_none());
        drop((first, more, tokens));
        assert_eq!(b.active.load(Ordering::Relaxed), 0);
        assert_eq!(b.retries.load(Ordering::Relaxed), 0);
    }
}
