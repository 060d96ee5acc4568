//! Calm logs for a peer that stays unreachable: every failed dial is a
//! DEBUG line, and a WARN summary comes at growing intervals.
//!
//! A peer that is down is redialled with backoff for as long as it stays
//! a member, which may be forever. Logging each failure at WARN gave a line
//! per backoff step (two a minute at the 30 s cap, without end), and a
//! cluster started by hand logged a WARN for every dial to a node not
//! started yet. The policy instead: the transition (`connection lost`) is
//! one WARN, each failed redial is DEBUG, and while the failures go on a
//! summary line says so at [`FIRST_SUMMARY_AFTER`], then at intervals
//! doubling up to [`MAX_SUMMARY_INTERVAL`]:
//!
//! ```text
//! peer 2 still unreachable after 30 s: 3 dials failed since the last report (3 in all); last: 127.0.0.1:29002: Connection refused (os error 111)
//! ```
//!
//! So a peer down for a minute costs one transition WARN and one summary;
//! an hour, six summaries; after that, one an hour. A peer found again is
//! one INFO (`connection established`, with how long it was unreachable).
//!
//! [`DialFailures`] is per peer, in the core, and reads no clock: the
//! failure's `now` decides whether a summary is due, so a summary comes
//! with the first failure at or after its due time (failures keep coming
//! at the backoff's pace, at most `Tuning::backoff_max` apart).

use std::time::{Duration, Instant};

/// How long a peer's dials may fail before the first WARN: nodes started
/// by hand come up seconds apart, and a restarted node is back within
/// seconds; failing for half a minute is no longer the normal course of
/// either, and is worth an operator's look.
pub(crate) const FIRST_SUMMARY_AFTER: Duration = Duration::from_secs(30);

/// The longest interval between two summaries for a peer that stays down:
/// a reminder an hour (24 lines a day) keeps a dead peer visible in the log
/// without filling it.
pub(crate) const MAX_SUMMARY_INTERVAL: Duration = Duration::from_secs(3600);

/// The longest error text a summary repeats: errors come from the OS or a
/// peer's goodbye, and one line must stay one line.
const MAX_ERROR_LEN: usize = 200;

/// One peer's run of failed dials, from its first failure to its next
/// successful connection.
#[derive(Debug, Default)]
pub(crate) struct DialFailures {
    /// Failures since the run began.
    total: u64,
    /// Failures since the last summary.
    since_summary: u64,
    /// When the run's first failure happened.
    first: Option<Instant>,
    /// When the next summary is due.
    next_summary: Option<Instant>,
    /// The interval after the next summary.
    interval: Duration,
    /// The last failure's reason, cut to [`MAX_ERROR_LEN`].
    last_error: String,
}

/// A summary of a run of failed dials, as logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DialSummary {
    /// How long the dials have been failing.
    pub(crate) failing_for: Duration,
    /// Failures since the previous summary.
    pub(crate) since_summary: u64,
    /// Failures in the whole run.
    pub(crate) total: u64,
    /// The last failure's reason.
    pub(crate) last_error: String,
}

impl DialFailures {
    /// Counts a failed dial at `now` for `error`; the summary to log at
    /// WARN if one is due. Whether `error` differs from the previous one is
    /// returned too, so that a new kind of failure can be logged once.
    pub(crate) fn record(&mut self, now: Instant, error: &str) -> (Option<DialSummary>, bool) {
        let error = cut(error);
        let changed = self.total == 0 || self.last_error != error;
        if changed {
            self.last_error = error.to_owned();
        }
        self.total += 1;
        self.since_summary += 1;
        let first = *self.first.get_or_insert(now);
        let due = *self.next_summary.get_or_insert(first + FIRST_SUMMARY_AFTER);
        if now < due {
            return (None, changed);
        }
        let summary = DialSummary {
            failing_for: now.saturating_duration_since(first),
            since_summary: self.since_summary,
            total: self.total,
            last_error: self.last_error.clone(),
        };
        self.since_summary = 0;
        self.interval = if self.interval.is_zero() {
            FIRST_SUMMARY_AFTER * 2
        } else {
            (self.interval * 2).min(MAX_SUMMARY_INTERVAL)
        };
        self.next_summary = Some(now + self.interval);
        (Some(summary), changed)
    }

    /// Whether the run already counted a failure for `error` last (so a
    /// line that needs a human was written for it once already).
    pub(crate) fn repeats(&self, error: &str) -> bool {
        self.total > 0 && self.last_error == cut(error)
    }

    /// Ends the run (the peer connected): how many dials failed and since
    /// when, if any did.
    pub(crate) fn end(&mut self) -> Option<(u64, Instant)> {
        let run = self.first.map(|first| (self.total, first));
        *self = DialFailures::default();
        run
    }
}

/// `error` cut to at most [`MAX_ERROR_LEN`] bytes, at a character boundary.
fn cut(error: &str) -> &str {
    if error.len() <= MAX_ERROR_LEN {
        return error;
    }
    let mut end = MAX_ERROR_LEN;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failures every `step` for `span`: the times of the summaries.
    fn summaries(step: Duration, span: Duration) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut f = DialFailures::default();
        let mut at = Duration::ZERO;
        let mut out = Vec::new();
        while at <= span {
            if f.record(t0 + at, "refused").0.is_some() {
                out.push(at);
            }
            at += step;
        }
        out
    }

    #[test]
    fn summaries_come_at_growing_intervals() {
        let s = |n| Duration::from_secs(n);
        // Just under, at and over the first summary's time.
        assert!(summaries(s(1), s(29)).is_empty());
        assert_eq!(summaries(s(1), s(30)), [s(30)]);
        assert_eq!(summaries(s(1), s(60)), [s(30)]);
        // 30 s, then 60, 120, 240, 480, 960, 1920, 3600, 3600, …
        assert_eq!(
            summaries(s(1), s(11_010)),
            [30, 90, 210, 450, 930, 1890, 3810, 7410, 11010]
                .map(s)
                .to_vec()
        );
    }

    #[test]
    fn a_summary_counts_the_failures_since_the_last_and_in_all() {
        let t0 = Instant::now();
        let mut f = DialFailures::default();
        let (none, changed) = f.record(t0, "refused");
        assert!(none.is_none() && changed);
        let (none, changed) = f.record(t0 + Duration::from_secs(10), "refused");
        assert!(none.is_none() && !changed);
        let (sum, changed) = f.record(t0 + Duration::from_secs(31), "timed out");
        assert!(changed, "a new kind of failure");
        let sum = sum.expect("due");
        assert_eq!(sum.failing_for, Duration::from_secs(31));
        assert_eq!((sum.since_summary, sum.total), (3, 3));
        assert_eq!(sum.last_error, "timed out");
        let (sum, _) = f.record(t0 + Duration::from_secs(91), "timed out");
        let sum = sum.expect("due 60 s after the first");
        assert_eq!((sum.since_summary, sum.total), (1, 4));
        assert!(f.repeats("timed out") && !f.repeats("refused"));
        assert_eq!(f.end(), Some((4, t0)));
        assert!(!f.repeats("timed out"), "a new run");
        assert_eq!(f.end(), None, "a new run starts empty");
        assert!(f.record(t0 + Duration::from_secs(100), "x").0.is_none());
    }

    #[test]
    fn long_errors_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_LEN);
        let mut f = DialFailures::default();
        let t0 = Instant::now();
        f.record(t0, &long);
        let (sum, _) = f.record(t0 + FIRST_SUMMARY_AFTER, &long);
        let text = sum.unwrap().last_error;
        assert!(text.len() <= MAX_ERROR_LEN && text.len() >= MAX_ERROR_LEN - 1);
        assert_eq!(cut("short"), "short");
    }
}
