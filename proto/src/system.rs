//! Messages that reign itself delivers to mailboxes.

use serde::{Deserialize, Serialize};

use crate::close::CloseReason;
use crate::id::{MailboxId, NodeId};

/// Delivered to a watcher when the mailbox it watches closes, or when that
/// mailbox's node becomes unreachable (see
/// [`Address::on_close_notify`](crate::Address::on_close_notify)).
/// Each watch produces it at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MailboxClosed(pub MailboxId);

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
