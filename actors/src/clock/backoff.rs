//! The SNTP retry schedule: exponential backoff with jitter, bounded.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How much of each delay jitter may take away (a fifth), so that devices
/// that failed together do not retry together.
const JITTER: f64 = 0.2;

/// Exponential backoff from `min` doubling to `max`, each delay shortened
/// by up to 20% at random but never below `min`.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    rng: StdRng,
}

impl Backoff {
    /// A schedule from `min` to `max` (`max` is raised to `min` if lower).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self::with_rng(min, max, StdRng::from_entropy())
    }

    /// The same with a given random source (tests seed it).
    pub fn with_rng(min: Duration, max: Duration, rng: StdRng) -> Self {
        Self { min, max: max.max(min), next: min, rng }
    }

    /// The delay before the next retry; each call doubles the nominal delay
    /// up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.max);
        let cut = nominal.mul_f64(JITTER * self.rng.gen::<f64>());
        nominal.saturating_sub(cut).max(self.min)
    }

    /// Back to `min`, after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_bounds_with_jitter_and_reset() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(300));
        let mut b = Backoff::with_rng(min, max, StdRng::seed_from_u64(7));
        let mut nominal = min;
        let mut jittered = 0;
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d >= min && d <= max, "{d:?}");
            assert!(d <= nominal && d >= nominal.mul_f64(0.8).max(min), "{d:?} vs {nominal:?}");
            jittered += usize::from(d != nominal);
            nominal = (nominal * 2).min(max);
        }
        assert!(jittered > 10, "jitter should move most delays");
        // At the cap it stays within 240..300 s.
        assert!(b.next_delay() >= Duration::from_secs(240));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
