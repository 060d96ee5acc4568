//! Backing off when `accept` fails.
//!
//! `accept` fails when the process or the system is out of file
//! descriptors (EMFILE/ENFILE), out of buffers, and the like. The pending
//! connection stays in the listen backlog, so an immediate retry fails the
//! same way: without a pause the accept loop spins at full CPU and logs a
//! line per failure (millions a second). [`AcceptBackoff`] pauses after each
//! failure, from [`FIRST_PAUSE`] doubling up to [`MAX_PAUSE`], and logs one
//! WARN line when a burst of failures begins, a summary (through
//! [`LogSummary`]) every [`SUMMARY_INTERVAL`] while it lasts, and one line
//! with the count when an accept succeeds again.

use std::time::{Duration, Instant};

use reign_proto::log_summary::{LogSummary, SUMMARY_INTERVAL};

/// The pause after the first failed accept of a burst: short, since a
/// descriptor may free up at once (a connection closing).
pub(crate) const FIRST_PAUSE: Duration = Duration::from_millis(5);

/// The longest pause between accepts while they keep failing: a second
/// keeps a stuck listener cheap (one try a second) and still picks up
/// waiting connections within a second of descriptors freeing up.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(1);

/// What the accept loop knows about the current burst of failures.
pub(crate) struct AcceptBackoff {
    node: u16,
    pause: Duration,
    /// Failures of the current burst and when it began.
    burst: Option<(u64, Instant)>,
    summary: LogSummary,
}

impl AcceptBackoff {
    pub(crate) fn new(node: u16) -> AcceptBackoff {
        AcceptBackoff {
            node,
            pause: FIRST_PAUSE,
            burst: None,
            summary: LogSummary::new("accepts failed"),
        }
    }

    /// An accept failed at `now`: how long to pause before the next.
    pub(crate) fn failed(&mut self, now: Instant, error: &std::io::Error) -> Duration {
        match &mut self.burst {
            None => {
                tracing::warn!(
                    node = self.node,
                    %error,
                    "accept failed; pausing accepts (up to {MAX_PAUSE:?} between tries) \
                     until it succeeds; further failures are counted every {SUMMARY_INTERVAL:?}"
                );
                self.burst = Some((1, now));
                self.pause = FIRST_PAUSE;
            }
            Some((count, _)) => {
                *count += 1;
                self.summary.record("while the first error lasts");
                self.summary.tick(now, self.node);
                self.pause = (self.pause * 2).min(MAX_PAUSE);
            }
        }
        self.pause
    }

    /// An accept succeeded at `now`: the burst, if any, is over.
    pub(crate) fn succeeded(&mut self, now: Instant) {
        if let Some((count, since)) = self.burst.take() {
            // Whatever the summary holds is in the count below.
            self.summary = LogSummary::new("accepts failed");
            tracing::warn!(
                node = self.node,
                failures = count,
                "accepting again after {count} failed accepts over {:.1} s",
                (now - since).as_secs_f64()
            );
            self.pause = FIRST_PAUSE;
        }
    }

    /// Failures in the current burst.
    #[cfg(test)]
    fn failures(&self) -> u64 {
        self.burst.map_or(0, |(n, _)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap_and_reset_after_a_success() {
        let mut b = AcceptBackoff::new(0);
        let err = std::io::Error::other("too many open files");
        let t0 = Instant::now();
        let mut pauses = Vec::new();
        for i in 0..12 {
            pauses.push(b.failed(t0 + Duration::from_millis(i), &err));
        }
        assert_eq!(pauses[0], FIRST_PAUSE);
        assert_eq!(pauses[1], FIRST_PAUSE * 2);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*pauses.last().unwrap(), MAX_PAUSE);
        assert_eq!(b.failures(), 12);
        b.succeeded(t0 + Duration::from_secs(3));
        assert_eq!(b.failures(), 0);
        assert_eq!(b.failed(t0 + Duration::from_secs(4), &err), FIRST_PAUSE);
    }
}
