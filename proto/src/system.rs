//! Messages that reign itself delivers to mailboxes.

use serde::{Deserialize, Serialize};

use crate::close::CloseReason;
use crate::id::{MailboxId, NodeId};

/// Delivered to a watcher when the mailbox it watches closes, or when that
/// mailbox's node becomes unreachable (see
/// [`Address::on_close_notify`](crate::Address::on_close_notify)), with
/// why. Each watch produces it at most once; a watcher on another node
/// sees the same `reason` as one on the mailbox's own node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct MailboxClosed {
    /// The mailbox that closed.
    pub id: MailboxId,
    /// Why it closed.
    pub reason: ExitReason,
}

/// A [`MailboxClosed`] is read in either of the forms a peer may send:
/// this version's (`{id, reason}`), or the bare id of nodes that predate
/// exit reasons (read as [`ExitReason::Unspecified`]): a 3-element array in
/// the binary form, its text in a human-readable one.
///
/// Written by hand rather than with `#[serde(untagged)]`: an untagged enum
/// buffers its input first, and that buffer trusts the length a CBOR array
/// announces, so a few dozen hostile bytes of nested arrays made it
/// allocate megabytes (found by the `payload` fuzz target). This visitor
/// reads the input once and allocates nothing it was not sent.
impl<'de> Deserialize<'de> for MailboxClosed {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<MailboxClosed, D::Error> {
        use serde::de::{Error, IgnoredAny, MapAccess, SeqAccess, Visitor};

        struct Closed;

        impl<'de> Visitor<'de> for Closed {
            type Value = MailboxClosed;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "a mailbox close notice ({{id, reason}} or a bare mailbox id)"
                )
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MailboxClosed, A::Error> {
                let (mut id, mut reason) = (None, None);
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match &*key {
                        "id" if id.is_none() => id = Some(map.next_value::<MailboxId>()?),
                        "reason" if reason.is_none() => {
                            reason = Some(map.next_value::<ExitReason>()?)
                        }
                        "id" | "reason" => {
                            return Err(A::Error::custom(format!("duplicate field `{key}`")))
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(MailboxClosed {
                    id: id.ok_or_else(|| A::Error::missing_field("id"))?,
                    reason: reason.ok_or_else(|| A::Error::missing_field("reason"))?,
                })
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MailboxClosed, A::Error> {
                let mut next = |i: usize| -> Result<u64, A::Error> {
                    seq.next_element::<u64>()?
                        .ok_or_else(|| A::Error::invalid_length(i, &"a mailbox id of 3 numbers"))
                };
                let (node, incarnation, serial) = (next(0)?, next(1)?, next(2)?);
                let node = u16::try_from(node)
                    .map_err(|_| A::Error::custom("a node id is a 16-bit number"))?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(A::Error::invalid_length(4, &"a mailbox id of 3 numbers"));
                }
                Ok(MailboxClosed {
                    id: MailboxId::from((node, incarnation, serial)),
                    reason: ExitReason::Unspecified,
                })
            }

            fn visit_str<E: Error>(self, text: &str) -> Result<MailboxClosed, E> {
                Ok(MailboxClosed {
                    id: text.parse().map_err(E::custom)?,
                    reason: ExitReason::Unspecified,
                })
            }
        }

        deserializer.deserialize_any(Closed)
    }
}

/// Delivered to a mailbox that traps exits (see
/// [`Mailbox::trap_exits`](crate::Mailbox::trap_exits)) when a mailbox it
/// is linked to closes, for any reason, instead of closing it (Erlang's
/// `{'EXIT', From, Reason}`). The link is gone once this is delivered.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Exit {
    /// The linked mailbox that closed.
    pub from: MailboxId,
    /// Why it closed.
    pub reason: ExitReason,
}

/// Longest text an [`ExitReason`] keeps from a panic or an error (longer
/// ones are cut at a character boundary): a reason travels in one control
/// frame to every remote watcher, so it stays small whatever a task panics
/// with.
pub const MAX_REASON_TEXT: usize = 1024;

/// Why a mailbox closed: carried by [`MailboxClosed`] and [`Exit`], the same
/// on every node that hears of it.
///
/// [`is_normal`](ExitReason::is_normal) splits them as Erlang does: a
/// normal exit does not take linked mailboxes down with it; every other
/// reason does, unless they trap exits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExitReason {
    /// A spawned task's future returned normally (`()` or `Ok`).
    Normal,
    /// The mailbox was closed by its owner: [`Mailbox::close`] or dropping
    /// the [`Mailbox`].
    ///
    /// [`Mailbox::close`]: crate::Mailbox::close
    /// [`Mailbox`]: crate::Mailbox
    Closed,
    /// A spawned task's future returned an error, with its `Display` text.
    Error(String),
    /// A spawned task panicked, with the panic's message.
    Panic(String),
    /// Killed through its address ([`Address::kill`](crate::Address::kill)),
    /// or its task was dropped by the runtime before it finished.
    Killed,
    /// Its node became unreachable or left the cluster, with the typed
    /// reason the connection closed (`None`: the node was not connected
    /// when the watch or link was made).
    Unreachable(Option<CloseReason>),
    /// Its node shut down.
    NodeShutdown,
    /// Closed because a mailbox it was linked to exited abnormally: `from`
    /// is that mailbox and `reason` the exit that started the chain (never
    /// itself `Linked`, so a chain of links does not grow the reason).
    Linked {
        /// The linked mailbox whose exit closed this one.
        from: MailboxId,
        /// The original exit.
        reason: Box<ExitReason>,
    },
    /// The mailbox did not exist when it was watched or linked: it had
    /// already closed, or never existed (Erlang's `noproc`).
    NoMailbox,
    /// Its node did not say why (a peer that predates exit reasons).
    Unspecified,
}

impl ExitReason {
    /// Whether this is a normal exit ([`Normal`](ExitReason::Normal) or
    /// [`Closed`](ExitReason::Closed)), which linked mailboxes survive.
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal | ExitReason::Closed)
    }

    /// The reason a mailbox linked to `from` closes with when `from` exits
    /// with `self`: the chain's original reason is kept, not nested.
    pub fn linked(self, from: MailboxId) -> ExitReason {
        let reason = match self {
            ExitReason::Linked { reason, .. } => reason,
            other => Box::new(other),
        };
        ExitReason::Linked { from, reason }
    }

    /// A panic or error text, cut to [`MAX_REASON_TEXT`].
    pub(crate) fn bounded_text(mut text: String) -> String {
        if text.len() > MAX_REASON_TEXT {
            let mut end = MAX_REASON_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        text
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Normal => write!(f, "normal"),
            ExitReason::Closed => write!(f, "closed by its owner"),
            ExitReason::Error(text) => write!(f, "error: {text}"),
            ExitReason::Panic(text) => write!(f, "panicked: {text}"),
            ExitReason::Killed => write!(f, "killed"),
            ExitReason::Unreachable(Some(reason)) => write!(f, "node unreachable: {reason}"),
            ExitReason::Unreachable(None) => write!(f, "node unreachable"),
            ExitReason::NodeShutdown => write!(f, "node shut down"),
            ExitReason::Linked { from, reason } => write!(f, "linked {from} exited: {reason}"),
            ExitReason::NoMailbox => write!(f, "no such mailbox"),
            ExitReason::Unspecified => write!(f, "unspecified"),
        }
    }
}

/// Delivered to every claimant of a name that is claimed on more than one
/// node at once, once per conflict (Go reign's semantics, but however the
/// conflict was found: a local claim, a remote claim, or a healed partition),
/// and again to a claimant that was winning the name and now loses it. Every
/// node resolves the conflict alike: the lowest id wins every lookup; to
/// learn whether it won, a claimant compares `Node::lookup(name)` with its
/// own address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MultipleClaim {
    /// The contested name.
    pub name: String,
}

/// Delivered to mailboxes subscribed with
/// [`Node::subscribe_connection_status`](crate::Node::subscribe_connection_status)
/// when a peer connects or disconnects; a disconnect says why.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectionStatus {
    /// The peer.
    pub node: NodeId,
    /// Whether it is now connected.
    pub connected: bool,
    /// Why the connection closed, for a disconnect (`None` when
    /// `connected`).
    pub reason: Option<CloseReason>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::payload;
    use crate::id::Incarnation;

    fn id() -> MailboxId {
        MailboxId {
            node: NodeId(3),
            incarnation: Incarnation(7),
            serial: 9,
        }
    }

    /// This version's form round-trips; the bare id of older nodes, binary
    /// or text, reads as `Unspecified`; anything else is an error.
    #[test]
    fn mailbox_closed_reads_both_forms() {
        let now = MailboxClosed {
            id: id(),
            reason: ExitReason::Panic("boom".into()),
        };
        assert_eq!(
            payload::decode::<MailboxClosed>(&payload::to_vec(&now)).unwrap(),
            now
        );
        let old = MailboxClosed {
            id: id(),
            reason: ExitReason::Unspecified,
        };
        assert_eq!(
            payload::decode::<MailboxClosed>(&payload::to_vec(&id())).unwrap(),
            old
        );
        let json = serde_json::to_string(&now).unwrap();
        assert_eq!(serde_json::from_str::<MailboxClosed>(&json).unwrap(), now);
        let text = serde_json::to_string(&id()).unwrap();
        assert_eq!(serde_json::from_str::<MailboxClosed>(&text).unwrap(), old);
        for bad in [
            payload::to_vec(&(3u64, 7u64)),
            payload::to_vec(&(3u64, 7u64, 9u64, 1u64)),
            payload::to_vec(&(70_000u64, 7u64, 9u64)),
            payload::to_vec(&"not an id"),
        ] {
            assert!(payload::decode::<MailboxClosed>(&bad).is_err(), "{bad:?}");
        }
    }
}
