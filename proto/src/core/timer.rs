//! Every timer of the core, and the one rule that says when each is due.
//!
//! A timer is a [`Timer`] value; `Core::deadline` (with `conn_deadline` for
//! a connection's) is its rule. Both sides of the clock read those rules:
//! [`Core::poll_timeout`] takes the earliest deadline of every armed timer
//! that wakes the core, and `Core::run_timers` (core/lifecycle.rs) fires
//! every armed timer whose deadline has come. To add a timer, add a
//! variant, its rule in `deadline`, list it in `Timer::of_conn` or
//! `armed_beyond_conns`, and give it its action in `run_timers` (quinn-proto's `TimerTable` is the model; here
//! the deadlines are computed from the state they follow rather than
//! stored, so no transition can forget to re-arm one).
//!
//! Nothing here takes a lock: the request tables publish their next
//! deadline to the core ([`NodeInner::next_request_deadline`]); the log
//! summaries lock only while events wait to be summarised.
//!
//! [`NodeInner::next_request_deadline`]: crate::node::NodeInner::next_request_deadline

use std::time::Instant;

use super::conn::{Conn, Phase};
use super::{ConnId, Core};
use crate::id::NodeId;

/// One timer of the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// A connection not up yet must finish its handshake within
    /// `Tuning::handshake_timeout` of opening.
    Handshake(ConnId),
    /// An accepted connection must send its first bytes within
    /// `Tuning::first_bytes_timeout`.
    FirstBytes(ConnId),
    /// An up connection must hear from its peer within
    /// `Tuning::read_deadline`.
    Silence(ConnId),
    /// An up connection pings every `Tuning::ping_interval`.
    Ping(ConnId),
    /// A peer that is down is dialled again (its backoff).
    Redial(NodeId),
    /// Gossip to one random peer and forget long-unreachable members, every
    /// `Tuning::gossip_interval`.
    Gossip,
    /// The earliest deadline of a pending or queued request.
    Requests,
    /// The end of a graceful shutdown's drain.
    Drain,
    /// The next rate-limited log summary.
    Summaries,
}

impl Timer {
    /// The timers of one connection, in the order they are checked: the
    /// first that closes the connection ends its checks.
    pub(crate) fn of_conn(id: ConnId) -> [Timer; 4] {
        [
            Timer::Handshake(id),
            Timer::FirstBytes(id),
            Timer::Silence(id),
            Timer::Ping(id),
        ]
    }
}

impl Core {
    /// When `timer` is due, if it is armed, and whether reaching that time
    /// needs a wake-up of its own. Gossip with nobody to talk to or forget
    /// does not wake the core, but fires with the next timer that does.
    pub(crate) fn deadline(&self, timer: Timer) -> Option<(Instant, bool)> {
        let wake = |t: Instant| Some((t, true));
        match timer {
            Timer::Handshake(id) | Timer::FirstBytes(id) | Timer::Silence(id) | Timer::Ping(id) => {
                let conn = self.conns.get(&id)?;
                self.conn_deadline(conn, timer).and_then(wake)
            }
            Timer::Redial(peer) => {
                if self.shutting_down {
                    return None;
                }
                self.peers.get(&peer)?.retry_at.and_then(wake)
            }
            Timer::Gossip => {
                if self.shutting_down {
                    return None;
                }
                let someone = self.peers.values().any(|p| p.up.is_some() || p.learned);
                Some((self.next_gossip, someone))
            }
            Timer::Requests => self.node.inner.next_request_deadline().and_then(wake),
            Timer::Drain => self.drain_until.and_then(wake),
            Timer::Summaries => self.summaries_due().min().and_then(wake),
        }
    }

    /// The rule of a connection's timers.
    pub(crate) fn conn_deadline(&self, conn: &Conn, timer: Timer) -> Option<Instant> {
        let tuning = &self.tuning;
        match (timer, conn.phase) {
            (Timer::Handshake(_), Phase::Dialing | Phase::Handshaking) => {
                Some(conn.opened_at + tuning.handshake_timeout)
            }
            (Timer::FirstBytes(id), Phase::Dialing | Phase::Handshaking) => self
                .inbound
                .get(&id)
                .is_some_and(|i| !i.heard)
                .then(|| conn.opened_at + tuning.first_bytes_timeout),
            (Timer::Silence(_), Phase::Up { .. }) => Some(conn.last_recv + tuning.read_deadline),
            (Timer::Ping(_), Phase::Up { .. }) => Some(conn.next_ping),
            _ => None,
        }
    }

    /// Every timer that is not a connection's.
    pub(crate) fn armed_beyond_conns(&self) -> impl Iterator<Item = Timer> + '_ {
        let peers = self.peers.keys().map(|&peer| Timer::Redial(peer));
        peers.chain([
            Timer::Gossip,
            Timer::Requests,
            Timer::Drain,
            Timer::Summaries,
        ])
    }

    /// Whether `timer` is armed and its deadline has come.
    pub(crate) fn is_due(&self, timer: Timer, now: Instant) -> bool {
        self.deadline(timer).is_some_and(|(t, _)| now >= t)
    }
}
