//! Rate-limited logging of what outside or misbehaving senders can trigger.
//!
//! A port scan, a flood of connections without a certificate, a peer
//! opening tunnels past its cap or sending messages of a type this node
//! does not know: each such event is cheap for the sender and must not cost
//! the node one log line. Every site that such input can reach logs the
//! single event at DEBUG and records its **cause** (a short static phrase)
//! in a [`LogSummary`]; once per [`SUMMARY_INTERVAL`] the summary logs one
//! WARN line per kind of event with a count per cause:
//!
//! ```text
//! 812 inbound connections refused in the last 10 s: 800 without a certificate, 12 from another CA
//! ```
//!
//! So a flood of any size costs at most one line per kind every ten
//! seconds (six a minute), and a quiet node logs nothing.
//!
//! The facility never reads the clock: recording takes no time at all and
//! [`LogSummary::tick`] is driven by the caller's `now` (the core's time
//! argument, or a driver's clock). [`LogSummary::due`] says when the next
//! summary is due, for the caller's timer.

use crate::poison::lock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a summary line is written while events keep coming: long
/// enough that a flood costs at most six lines a minute per kind, short
/// enough that an operator watching the log sees an attack begin promptly.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Distinct causes one summary keeps apart; further causes are counted
/// under [`OTHER_CAUSES`]. Causes are static phrases chosen by reign's own
/// code, so this only guards against a mistake, never against a sender.
pub const MAX_CAUSES: usize = 16;

/// The cause events beyond [`MAX_CAUSES`] distinct ones are counted under.
pub const OTHER_CAUSES: &str = "other causes";

/// Counts of one kind of event per cause, logged as one line per
/// [`SUMMARY_INTERVAL`]. Thread-safe: events may be recorded from any
/// thread; whoever owns the clock calls [`tick`](LogSummary::tick).
#[derive(Debug)]
pub struct LogSummary {
    /// What the events are, plural, as the line starts after the count
    /// ("inbound connections refused").
    what: &'static str,
    /// Set while counts wait for a summary, so [`tick`](Self::tick) costs one
    /// atomic load on a quiet node.
    pending: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    counts: Vec<(&'static str, u64)>,
    /// When the caller's clock first saw the current window's events.
    since: Option<Instant>,
}

/// One summary as written to the log (also returned, for tests and callers
/// that want to count or forward it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// What the events are.
    pub what: &'static str,
    /// Events of the window, all causes.
    pub total: u64,
    /// Events per cause, in the order causes were first seen.
    pub causes: Vec<(&'static str, u64)>,
    /// How long the window lasted.
    pub window: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} in the last {} s:",
            self.total,
            self.what,
            self.window.as_secs().max(1)
        )?;
        for (i, (cause, n)) in self.causes.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{n} {cause}")?;
        }
        Ok(())
    }
}

impl LogSummary {
    /// A summary of events described as `what` (plural, e.g. "inbound
    /// connections refused").
    pub const fn new(what: &'static str) -> LogSummary {
        LogSummary {
            what,
            pending: AtomicBool::new(false),
            state: Mutex::new(State {
                counts: Vec::new(),
                since: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Counts one event of `cause`. Log the event itself at DEBUG.
    pub fn record(&self, cause: &'static str) {
        self.record_many(cause, 1);
    }

    /// Counts `n` events of `cause`.
    pub fn record_many(&self, cause: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        let mut state = self.lock();
        let at_cap = state.counts.len() >= MAX_CAUSES;
        let cause = if at_cap && !state.counts.iter().any(|(c, _)| *c == cause) {
            OTHER_CAUSES
        } else {
            cause
        };
        match state.counts.iter_mut().find(|(c, _)| *c == cause) {
            Some((_, count)) => *count += n,
            None => state.counts.push((cause, n)),
        }
        self.pending.store(true, Ordering::Release);
    }

    /// Advances the summary to `now`: the first tick after an event opens a
    /// window; the first tick [`SUMMARY_INTERVAL`] after that logs the
    /// window's counts as one WARN line (with `node` as a field) and
    /// returns them. Call after recording and at [`due`](Self::due).
    pub fn tick(&self, now: Instant, node: u16) -> Option<Summary> {
        if !self.pending.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.lock();
        let since = *state.since.get_or_insert(now);
        if now < since + SUMMARY_INTERVAL {
            return None;
        }
        let causes = std::mem::take(&mut state.counts);
        state.since = None;
        self.pending.store(false, Ordering::Release);
        drop(state);
        let summary = Summary {
            what: self.what,
            total: causes.iter().map(|(_, n)| n).sum(),
            causes,
            window: now - since,
        };
        tracing::warn!(node, "{summary}");
        Some(summary)
    }

    /// When the next summary is due, if events wait for one and a window
    /// is open.
    pub fn due(&self) -> Option<Instant> {
        if !self.pending.load(Ordering::Acquire) {
            return None;
        }
        self.lock().since.map(|s| s + SUMMARY_INTERVAL)
    }

    /// Events recorded and not yet summarised, all causes.
    pub fn pending(&self) -> u64 {
        self.lock().counts.iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_counts_per_cause() {
        let s = LogSummary::new("inbound connections refused");
        let t0 = Instant::now();
        assert_eq!(s.tick(t0, 1), None, "nothing recorded, nothing due");
        assert_eq!(s.due(), None);
        for _ in 0..800 {
            s.record("without a certificate");
        }
        s.record_many("from another CA", 12);
        assert_eq!(s.tick(t0, 1), None, "the window opens");
        assert_eq!(s.due(), Some(t0 + SUMMARY_INTERVAL));
        let just_before = t0 + SUMMARY_INTERVAL - Duration::from_millis(1);
        assert_eq!(s.tick(just_before, 1), None);
        let line = s
            .tick(t0 + SUMMARY_INTERVAL, 1)
            .expect("due at the interval");
        assert_eq!(
            line.to_string(),
            "812 inbound connections refused in the last 10 s: 800 without a certificate, 12 from another CA"
        );
        assert_eq!(s.due(), None, "quiet again");
        assert_eq!(s.tick(t0 + SUMMARY_INTERVAL * 5, 1), None);
    }

    #[test]
    fn causes_past_the_cap_are_counted_together() {
        const CAUSES: [&str; MAX_CAUSES + 2] = [
            "c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "c10", "c11", "c12", "c13",
            "c14", "c15", "c16", "c17",
        ];
        let s = LogSummary::new("events");
        for c in CAUSES {
            s.record(c);
        }
        s.record("c0");
        let t0 = Instant::now();
        s.tick(t0, 0);
        let sum = s.tick(t0 + SUMMARY_INTERVAL, 0).unwrap();
        assert_eq!(sum.total, MAX_CAUSES as u64 + 3);
        assert_eq!(sum.causes.len(), MAX_CAUSES + 1);
        assert_eq!(sum.causes[0], ("c0", 2));
        assert_eq!(sum.causes[MAX_CAUSES], (OTHER_CAUSES, 2));
    }
}
