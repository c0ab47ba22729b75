//! The clock leases are timed by.
//!
//! It follows the caller's monotonic milliseconds, but never moves by more than
//! `max_step_ms` between two readings. A monotonic clock can still leap: a host suspended
//! and resumed, a virtual machine migrated, a process stopped for seconds. Followed
//! blindly, a leader's clock that leapt would see every lease expired at once and revoke
//! them before their holders' time was up (etcd issue 15247 is this class). Lagging is the
//! safe direction: a lease may live a little longer than its TTL, never shorter.

/// Lease time in milliseconds, with an origin of its own.
#[derive(Clone, Debug)]
pub struct LeaseClock {
    now_ms: u64,
    last_reading_ms: Option<u64>,
    max_step_ms: u64,
}

impl LeaseClock {
    /// A clock at 0 that moves at most `max_step_ms` per reading.
    pub fn new(max_step_ms: u64) -> LeaseClock {
        assert!(max_step_ms > 0, "a lease clock must be able to move");
        LeaseClock {
            now_ms: 0,
            last_reading_ms: None,
            max_step_ms,
        }
    }

    /// Takes a reading of the caller's monotonic clock and returns the lease time. A
    /// reading below the previous one (which a monotonic clock never gives) moves nothing.
    pub fn observe(&mut self, reading_ms: u64) -> u64 {
        if let Some(last_ms) = self.last_reading_ms {
            let step_ms = reading_ms.saturating_sub(last_ms).min(self.max_step_ms);
            self.now_ms = self.now_ms.saturating_add(step_ms);
        }
        self.last_reading_ms = Some(
            self.last_reading_ms
                .map_or(reading_ms, |last| last.max(reading_ms)),
        );
        self.now_ms
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_steady_clock() {
        let mut clock = LeaseClock::new(200);
        assert_eq!(clock.observe(5_000), 0, "the first reading sets the origin");
        assert_eq!(clock.observe(5_100), 100);
        assert_eq!(clock.observe(5_250), 250);
    }

    #[test]
    fn a_leap_moves_it_by_one_step_only() {
        let mut clock = LeaseClock::new(200);
        clock.observe(0);
        assert_eq!(clock.observe(3_600_000), 200);
        assert_eq!(
            clock.observe(3_600_100),
            300,
            "and it goes on from the new reading"
        );
    }

    #[test]
    fn never_goes_back() {
        let mut clock = LeaseClock::new(200);
        clock.observe(1_000);
        clock.observe(1_100);
        assert_eq!(clock.observe(500), 100);
        assert_eq!(
            clock.observe(1_150),
            150,
            "measured from the highest reading"
        );
    }
}
