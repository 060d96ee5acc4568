//! Reconnection delays: per peer, exponential, capped, jittered.

use std::time::Duration;

use crate::rng::Rng;

/// The reconnection schedule of one peer.
///
/// Each failure doubles the base delay up to the cap; the delay actually used
/// is drawn uniformly from the upper half of the base ("equal jitter"), so
/// peers that lost a node together do not all redial in step. Go reign
/// retried at once and then paused every peer for a global second.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    base: Duration,
}

impl Backoff {
    /// A schedule from `initial` up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            base: initial,
        }
    }

    /// The delay before the next attempt; grows the base for the one after.
    pub fn next_delay(&mut self, rng: &mut Rng) -> Duration {
        let base = self.base;
        self.base = (self.base * 2).min(self.max);
        let half = base / 2;
        let jitter = rng.below(half.as_micros() as u64 + 1);
        half + Duration::from_micros(jitter)
    }

    /// Back to the initial delay (after a successful connection).
    pub fn reset(&mut self) {
        self.base = self.initial;
    }

    /// The base delay the next attempt will draw from.
    pub fn current_base(&self) -> Duration {
        self.base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters() {
        let mut rng = Rng::new(1);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut bases = Vec::new();
        let mut delays = Vec::new();
        for _ in 0..8 {
            bases.push(b.current_base());
            delays.push(b.next_delay(&mut rng));
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            bases,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                ms(1000),
                ms(1000),
                ms(1000)
            ]
        );
        for (base, delay) in bases.iter().zip(&delays) {
            assert!(
                *delay >= *base / 2 && *delay <= *base,
                "{delay:?} outside [{:?}, {base:?}]",
                *base / 2
            );
        }
        // Jitter: the capped delays are not all equal.
        assert!(delays[4..].windows(2).any(|w| w[0] != w[1]));
        b.reset();
        assert_eq!(b.current_base(), ms(100));
    }
}
