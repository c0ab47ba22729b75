//! The server loop's clock: tokio's monotonic time, read through a [`ClockSkew`] that the
//! simulator turns to make one server's clock run fast or slow, or leap forward, as real
//! machines' clocks do (a bad oscillator, a suspended virtual machine). The binary never
//! turns it.
//!
//! Only timers and lease time read this clock. Raft's safety never depends on it (reads go
//! through ReadIndex, not a leader lease), and leases follow it at a bounded pace
//! (`keel_core::node::lease_clock`), so skew changes how soon things happen, not what.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Rates beyond this are refused: a clock half again as fast is not a clock.
pub const MAX_RATE_PPM: i64 = 500_000;

const PPM: i64 = 1_000_000;

/// A handle that skews one server's clock; clones share it.
#[derive(Clone, Debug, Default)]
pub struct ClockSkew {
    state: Arc<SkewState>,
}

#[derive(Debug, Default)]
struct SkewState {
    rate_ppm: AtomicI64,
    pending_leap_ms: AtomicU64,
}

impl ClockSkew {
    /// The clock runs `rate_ppm` parts per million fast (negative: slow) from now on.
    pub fn set_rate_ppm(&self, rate_ppm: i64) {
        let rate_ppm = rate_ppm.clamp(-MAX_RATE_PPM, MAX_RATE_PPM);
        self.state.rate_ppm.store(rate_ppm, Ordering::Relaxed);
    }

    pub fn rate_ppm(&self) -> i64 {
        self.state.rate_ppm.load(Ordering::Relaxed)
    }

    /// The clock jumps `leap` ahead at its next reading.
    pub fn leap(&self, leap: Duration) {
        let leap_ms = u64::try_from(leap.as_millis()).unwrap_or(u64::MAX);
        self.state
            .pending_leap_ms
            .fetch_add(leap_ms, Ordering::Relaxed);
    }
}

/// One server's local time in milliseconds since it started, skewed by its [`ClockSkew`].
#[derive(Debug)]
pub struct LocalClock {
    skew: ClockSkew,
    last_real: Instant,
    local_us: u64,
}

impl LocalClock {
    pub fn new(skew: ClockSkew) -> LocalClock {
        LocalClock {
            skew,
            last_real: Instant::now(),
            local_us: 0,
        }
    }

    /// Local milliseconds since start: real time scaled by the current rate, plus leaps.
    pub fn now_ms(&mut self) -> u64 {
        let real = Instant::now();
        let elapsed_us = real.saturating_duration_since(self.last_real).as_micros();
        self.last_real = real;
        let scaled_us = elapsed_us * u128::from(rate_factor(self.skew.rate_ppm())) / PPM as u128;
        let leap_ms = self.skew.state.pending_leap_ms.swap(0, Ordering::Relaxed);
        self.local_us = self
            .local_us
            .saturating_add(u64::try_from(scaled_us).unwrap_or(u64::MAX))
            .saturating_add(leap_ms.saturating_mul(1_000));
        self.local_us / 1_000
    }

    /// The real time after which `local` of this clock's time has passed, at the current
    /// rate: a timer of `local` fires that much later on a slow clock, sooner on a fast one.
    pub fn real_duration(&self, local: Duration) -> Duration {
        let local_us = local.as_micros();
        let real_us = local_us * PPM as u128 / u128::from(rate_factor(self.skew.rate_ppm()));
        Duration::from_micros(u64::try_from(real_us).unwrap_or(u64::MAX))
    }
}

/// `PPM + rate_ppm`, positive for every allowed rate.
fn rate_factor(rate_ppm: i64) -> u64 {
    let factor = PPM + rate_ppm.clamp(-MAX_RATE_PPM, MAX_RATE_PPM);
    debug_assert!(factor > 0);
    u64::try_from(factor).unwrap_or(1)
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_unskewed_clock_is_real_time() {
        let mut clock = LocalClock::new(ClockSkew::default());
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(clock.now_ms(), 1_500);
        assert_eq!(
            clock.real_duration(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_clock_gains_and_its_timers_fire_sooner() {
        let skew = ClockSkew::default();
        let mut clock = LocalClock::new(skew.clone());
        skew.set_rate_ppm(250_000);
        tokio::time::advance(Duration::from_millis(1_000)).await;
        assert_eq!(clock.now_ms(), 1_250);
        assert_eq!(
            clock.real_duration(Duration::from_millis(125)),
            Duration::from_millis(100)
        );
        skew.set_rate_ppm(-250_000);
        tokio::time::advance(Duration::from_millis(1_000)).await;
        assert_eq!(clock.now_ms(), 2_000, "a rate applies from when it is set");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leap_shows_once() {
        let skew = ClockSkew::default();
        let mut clock = LocalClock::new(skew.clone());
        skew.leap(Duration::from_secs(30));
        assert_eq!(clock.now_ms(), 30_000);
        assert_eq!(clock.now_ms(), 30_000);
        skew.set_rate_ppm(10 * MAX_RATE_PPM);
        assert_eq!(skew.rate_ppm(), MAX_RATE_PPM, "clamped");
    }
}
