//! Why a connection closed: one typed reason for every close the core
//! makes.
//!
//! The core closes a connection for a handful of causes: the peer said
//! goodbye, a redundant connection lost its race, a handshake or TLS failed,
//! the peer broke the framing or the protocol, a deadline passed, the peer
//! stopped reading, it went over a registry cap, the node shut down, … Each
//! is one [`CloseReason`] variant, so the core branches on the kind (is this
//! close orderly? a refused handshake?) instead of on text, and the reason
//! travels typed to the application in [`Event::PeerDown`] and
//! [`ConnectionStatus`]. Its `Display` gives the words the logs have always
//! used, so log lines (and what operators grep for) read as before.
//!
//! [`Event::PeerDown`]: crate::Event::PeerDown
//! [`ConnectionStatus`]: crate::ConnectionStatus

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::handshake::HandshakeError;
use crate::id::NodeId;

/// The goodbye text of a node that shuts down (part of the protocol: a
/// peer that reads it knows the node left on purpose).
pub(crate) const LEAVING: &str = "node shutting down";

/// What a [`CloseReason::Duplicate`] goodbye says on the wire: a dialer
/// refused with these words lost a simultaneous-dial race, routinely.
pub(crate) const DUPLICATE_TEXT: &str = "duplicate connection";

/// Why the core closed a connection (or found it closed).
///
/// `Display` gives the text the logs print. New variants may be added as
/// the core learns new reasons to close.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer said goodbye, with its words.
    Goodbye(String),
    /// The peer said goodbye because it is shutting down.
    PeerLeaving,
    /// This node dropped the peer from its membership and told it so in a
    /// goodbye (logged in the goodbye's words, as the peer reads them).
    MemberRemoved(Removal),
    /// Two connections to one peer raced; this one lost and closed
    /// quietly.
    Duplicate,
    /// The peer connected again and the newer connection replaced this one.
    Replaced,
    /// This node is shutting down.
    ShuttingDown,
    /// The dial requested by the core failed, with the driver's error.
    DialFailed(String),
    /// The socket failed, with the driver's error.
    ConnectionError(String),
    /// The socket reached a clean end of stream.
    ClosedByPeer,
    /// The TLS session failed, with rustls' error text.
    Tls(String),
    /// The reign handshake failed.
    Handshake(HandshakeError),
    /// A second newcomer claimed the id of a live peer while a first one
    /// was being checked.
    SecondClaimant {
        /// The id claimed.
        node: NodeId,
    },
    /// A newcomer claimed the id of a live peer, which proved itself alive
    /// ([`ID_IN_USE`]).
    IdInUse {
        /// The id claimed.
        node: NodeId,
    },
    /// A newcomer was held for a liveness check of a peer with its id, and
    /// the peer's live connection vanished without a verdict.
    NoProbeTarget,
    /// A handshake finished for a node the core holds no member entry for.
    NotAPeer {
        /// The node.
        node: NodeId,
    },
    /// Bytes that do not parse as frames, with the decoder's error.
    MalformedFrame(String),
    /// A control message that does not decode, with the decoder's error.
    MalformedControl(String),
    /// Well-formed frames that break the protocol: what the peer did.
    Protocol(String),
    /// The peer went over a registry cap (names, groups, topics) and was
    /// cut off; what it went over.
    RegistryCap(String),
    /// The handshake did not finish within the handshake timeout.
    HandshakeTimeout(Duration),
    /// An inbound connection sent nothing within the first-bytes timeout.
    FirstBytesTimeout(Duration),
    /// Nothing arrived from the peer within the read deadline.
    ReadTimeout(Duration),
    /// This many pings in a row went unanswered.
    PingsUnanswered(u32),
    /// The peer does not read: this many bytes of the core's own frames
    /// (pongs, replies) wait for it beyond the backlog cap.
    NotReading {
        /// Bytes waiting.
        waiting: usize,
    },
}

/// Why this node dropped a member (see [`CloseReason::MemberRemoved`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Removal {
    /// A member learned from peers said it is leaving for good.
    LeftCluster,
    /// A spec reload no longer lists it.
    RemovedFromSpec,
    /// A learned member stayed unreachable past the forget timeout.
    Unreachable,
}

impl CloseReason {
    /// The reason for a goodbye with text `text` from the peer.
    pub(crate) fn goodbye(text: String) -> CloseReason {
        if text == LEAVING {
            CloseReason::PeerLeaving
        } else {
            CloseReason::Goodbye(text)
        }
    }

    /// Whether the close was agreed rather than a failure: a goodbye
    /// (either way) or a duplicate connection closing. Such closes are not
    /// logged as errors.
    pub fn is_orderly(&self) -> bool {
        matches!(
            self,
            CloseReason::Goodbye(_)
                | CloseReason::PeerLeaving
                | CloseReason::MemberRemoved(_)
                | CloseReason::Duplicate
        )
    }

    /// Whether the reign handshake refused the connection.
    pub fn is_handshake_refusal(&self) -> bool {
        matches!(
            self,
            CloseReason::Handshake(_)
                | CloseReason::SecondClaimant { .. }
                | CloseReason::IdInUse { .. }
        )
    }

    /// Whether the peer sent input that does not parse.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            CloseReason::MalformedFrame(_) | CloseReason::MalformedControl(_)
        )
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const GOODBYE: &str = "peer said goodbye";
        match self {
            CloseReason::Goodbye(text) => write!(f, "{GOODBYE}: {text}"),
            CloseReason::PeerLeaving => write!(f, "{GOODBYE}: {LEAVING}"),
            CloseReason::MemberRemoved(why) => write!(f, "{GOODBYE}: {why}"),
            CloseReason::Duplicate => f.write_str(DUPLICATE_TEXT),
            CloseReason::Replaced => f.write_str("replaced by a newer connection"),
            CloseReason::ShuttingDown => f.write_str(LEAVING),
            CloseReason::DialFailed(e) => write!(f, "dial failed: {e}"),
            CloseReason::ConnectionError(e) => write!(f, "connection error: {e}"),
            CloseReason::ClosedByPeer => f.write_str("connection closed by peer"),
            CloseReason::Tls(e) => write!(f, "TLS error: {e}"),
            CloseReason::Handshake(e) => write!(f, "handshake failed: {e}"),
            CloseReason::SecondClaimant { node } => write!(
                f,
                "handshake failed: a second newcomer claims node {}",
                node.0
            ),
            CloseReason::IdInUse { node } => {
                write!(f, "handshake failed: {}", id_in_use_text(*node))
            }
            CloseReason::NoProbeTarget => f.write_str("no live connection to probe"),
            CloseReason::NotAPeer { node } => write!(f, "node {} is not a peer", node.0),
            CloseReason::MalformedFrame(e) => write!(f, "malformed frame: {e}"),
            CloseReason::MalformedControl(e) => write!(f, "malformed control message: {e}"),
            CloseReason::Protocol(what) => f.write_str(what),
            CloseReason::RegistryCap(e) => {
                write!(f, "cut off for going over a registry cap: {e}")
            }
            CloseReason::HandshakeTimeout(after) => {
                write!(f, "handshake not finished within {after:?}")
            }
            CloseReason::FirstBytesTimeout(after) => {
                write!(f, "nothing received within {after:?} of accepting")
            }
            CloseReason::ReadTimeout(after) => write!(f, "nothing received for {after:?}"),
            CloseReason::PingsUnanswered(count) => {
                write!(f, "{count} pings in a row went unanswered")
            }
            CloseReason::NotReading { waiting } => write!(
                f,
                "the peer does not read: {waiting} bytes of replies are waiting"
            ),
        }
    }
}

/// [`CloseReason::Handshake`] exposes the [`HandshakeError`] it wraps.
impl std::error::Error for CloseReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CloseReason::Handshake(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for Removal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Removal::LeftCluster => "left the cluster",
            Removal::RemovedFromSpec => "removed from the cluster spec",
            Removal::Unreachable => "unreachable for too long",
        })
    }
}

/// The reason given to a second process that claims the id of a node that
/// is live: the live node answered a ping after the newcomer arrived. Part
/// of the protocol: a refused node recognises it and stops.
pub const ID_IN_USE: &str = "node id is live in the cluster";

/// What a newcomer refused with [`CloseReason::IdInUse`] is told (it
/// starts with [`ID_IN_USE`], which the newcomer recognises).
pub(crate) fn id_in_use_text(node: NodeId) -> String {
    format!(
        "{ID_IN_USE}: node {} answered from its live connection",
        node.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts are the ones the logs printed before the reasons were
    /// typed; operators and tests grep for them.
    #[test]
    fn display_keeps_the_logged_words() {
        let cases: Vec<(CloseReason, &str)> = vec![
            (CloseReason::goodbye(LEAVING.into()), "peer said goodbye: node shutting down"),
            (CloseReason::goodbye("bye".into()), "peer said goodbye: bye"),
            (
                CloseReason::MemberRemoved(Removal::RemovedFromSpec),
                "peer said goodbye: removed from the cluster spec",
            ),
            (CloseReason::Duplicate, "duplicate connection"),
            (CloseReason::ShuttingDown, "node shutting down"),
            (
                CloseReason::IdInUse { node: NodeId(3) },
                "handshake failed: node id is live in the cluster: node 3 answered from its live connection",
            ),
            (CloseReason::ReadTimeout(Duration::from_secs(3)), "nothing received for 3s"),
            (CloseReason::PingsUnanswered(4), "4 pings in a row went unanswered"),
            (
                CloseReason::NotReading { waiting: 9 },
                "the peer does not read: 9 bytes of replies are waiting",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
        assert_eq!(
            CloseReason::goodbye(LEAVING.into()),
            CloseReason::PeerLeaving
        );
    }

    /// Orderly closes and handshake refusals are told apart by kind.
    #[test]
    fn kinds() {
        assert!(CloseReason::Duplicate.is_orderly());
        assert!(CloseReason::MemberRemoved(Removal::Unreachable).is_orderly());
        assert!(!CloseReason::ReadTimeout(Duration::ZERO).is_orderly());
        assert!(CloseReason::SecondClaimant { node: NodeId(1) }.is_handshake_refusal());
        assert!(!CloseReason::Tls("x".into()).is_handshake_refusal());
        assert!(CloseReason::MalformedFrame("x".into()).is_malformed());
        assert!(!CloseReason::Protocol("x".into()).is_malformed());
    }
}
