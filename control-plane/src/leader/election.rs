//! The decisions of Lease-based leader election, free of I/O and of the wall clock.
//!
//! Expiry is judged on the local monotonic clock, as client-go does: a Lease held by another
//! replica is expired once it has not changed (its resourceVersion) for its lease duration since
//! this replica first saw that version. The holder's `renewTime` is never compared with the local
//! wall clock, so clock skew between nodes cannot make two replicas lead at once.

use std::time::Duration;

use tokio::time::Instant;

/// What this replica knows of the Lease object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// `spec.holderIdentity`; empty when released.
    pub holder: String,
    /// `spec.leaseDurationSeconds`, or ours when unset.
    pub lease_duration: Duration,
    /// Changes on every write, renewals included.
    pub resource_version: String,
}

/// What to do with the Lease this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it, held by us.
    Create,
    /// Released or expired: take it over.
    Acquire,
    /// Ours: renew it.
    Renew,
    /// Another replica holds a live Lease.
    Wait { holder: String },
}

/// Election state of one replica.
#[derive(Debug)]
pub struct Election {
    identity: String,
    /// A leader that could not renew for this long stops leading. Shorter than the lease
    /// duration, so it steps down before anyone else may take over.
    renew_deadline: Duration,
    /// The Lease as last read (None: it does not exist), and when its version was first seen.
    observed: Option<(LeaseView, Instant)>,
    /// When we last wrote the Lease as its holder.
    renewed_at: Option<Instant>,
}

impl Election {
    pub fn new(identity: impl Into<String>, renew_deadline: Duration) -> Self {
        Self {
            identity: identity.into(),
            renew_deadline,
            observed: None,
            renewed_at: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Records the Lease as read at `now` (None: not found).
    pub fn observe(&mut self, lease: Option<LeaseView>, now: Instant) {
        self.observed = match (lease, self.observed.take()) {
            (None, _) => None,
            // Unchanged: keep the time it was first seen, which is what expiry counts from.
            (Some(lease), Some((seen, since)))
                if seen.resource_version == lease.resource_version =>
            {
                Some((lease, since))
            }
            (Some(lease), _) => Some((lease, now)),
        };
    }

    /// What to do at `now`, given the Lease as last observed (not read yet counts as absent).
    pub fn decide(&self, now: Instant) -> Decision {
        let Some((lease, since)) = &self.observed else {
            return Decision::Create;
        };
        if lease.holder.is_empty() {
            Decision::Acquire
        } else if lease.holder == self.identity {
            Decision::Renew
        } else if now.saturating_duration_since(*since) >= lease.lease_duration {
            Decision::Acquire
        } else {
            Decision::Wait {
                holder: lease.holder.clone(),
            }
        }
    }

    /// We wrote the Lease as its holder at `now`; `written` is what the server answered.
    pub fn held(&mut self, written: LeaseView, now: Instant) {
        self.renewed_at = Some(now);
        self.observed = Some((written, now));
    }

    /// Leading: the last successful write as holder is within the renew deadline.
    pub fn is_leading(&self, now: Instant) -> bool {
        self.renewed_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.renew_deadline)
    }

    /// Stop leading at once (released on shutdown, or the Lease was taken).
    pub fn step_down(&mut self) {
        self.renewed_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);
    const DEADLINE: Duration = Duration::from_secs(10);

    fn lease(holder: &str, rv: &str) -> LeaseView {
        LeaseView {
            holder: holder.into(),
            lease_duration: LEASE,
            resource_version: rv.into(),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn no_lease_creates_a_free_one_acquires() {
        let t = Instant::now();
        let mut e = Election::new("pod-a", DEADLINE);
        assert_eq!(e.decide(t), Decision::Create);
        e.observe(None, t);
        assert_eq!(e.decide(t), Decision::Create);
        e.observe(Some(lease("", "1")), t);
        assert_eq!(e.decide(t), Decision::Acquire);
    }

    #[test]
    fn another_holder_is_waited_for_until_its_lease_stops_changing_long_enough() {
        let t = Instant::now();
        let mut e = Election::new("pod-a", DEADLINE);
        e.observe(Some(lease("pod-b", "1")), t);
        assert_eq!(
            e.decide(t + secs(14)),
            Decision::Wait {
                holder: "pod-b".into()
            }
        );
        // pod-b renews: the clock restarts from when the new version was seen.
        e.observe(Some(lease("pod-b", "2")), t + secs(10));
        assert_eq!(
            e.decide(t + secs(20)),
            Decision::Wait {
                holder: "pod-b".into()
            }
        );
        // Seen again unchanged: still counts from t+10.
        e.observe(Some(lease("pod-b", "2")), t + secs(20));
        assert_eq!(e.decide(t + secs(25)), Decision::Acquire);
    }

    #[test]
    fn a_lease_that_is_ours_is_renewed() {
        let t = Instant::now();
        let mut e = Election::new("pod-a", DEADLINE);
        // Also after a restart under the same name: it is still ours.
        e.observe(Some(lease("pod-a", "7")), t);
        assert_eq!(e.decide(t + secs(60)), Decision::Renew);
    }

    #[test]
    fn leadership_lasts_until_the_renew_deadline() {
        let t = Instant::now();
        let mut e = Election::new("pod-a", DEADLINE);
        assert!(!e.is_leading(t));
        e.held(lease("pod-a", "3"), t);
        assert!(e.is_leading(t + secs(9)));
        // Renewals failed for 10 s: lost, well before another replica may take over (15 s).
        assert!(!e.is_leading(t + secs(10)));
        e.held(lease("pod-a", "4"), t + secs(11));
        assert!(e.is_leading(t + secs(12)));
        e.step_down();
        assert!(!e.is_leading(t + secs(12)));
    }
}
