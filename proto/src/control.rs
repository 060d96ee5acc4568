//! Control messages between connected nodes: registry claims, cross-node
//! watches and the messaging schemes' bookkeeping. CBOR in control frames.

use serde::{Deserialize, Serialize};

use crate::codec::payload;
use crate::error::DecodeError;
use crate::id::MailboxId;
use crate::system::ExitReason;

/// One control message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Part of the sender's whole directory (its claims, service group
    /// members and topic interest) as a batch of [`Control::Claim`],
    /// [`Control::Join`] and [`Control::Interest`] messages, sent when a
    /// connection comes up; `last` marks the final part.
    Snapshot {
        /// The deltas that rebuild the sender's directory from nothing.
        deltas: Vec<Control>,
        /// Whether this is the final part.
        last: bool,
    },
    /// The sender's node now claims `name` with `id`.
    Claim {
        /// The name.
        name: String,
        /// The claimant.
        id: MailboxId,
    },
    /// The sender's node no longer claims `name` with `id`.
    Unclaim {
        /// The name.
        name: String,
        /// The former claimant.
        id: MailboxId,
    },
    /// `id`, a mailbox of the sender, is now a member of service `group`.
    Join {
        /// The service group.
        group: String,
        /// The member.
        id: MailboxId,
    },
    /// `id` left service `group`.
    Leave {
        /// The service group.
        group: String,
        /// The former member.
        id: MailboxId,
    },
    /// Whether the sender has subscribers to `topic` (it wants one copy of
    /// each publication).
    Interest {
        /// The topic.
        topic: String,
        /// Whether it has subscribers.
        interested: bool,
    },
    /// Asks for a [`Control::SyncReply`] once everything sent before it is applied.
    SyncRequest {
        /// Correlates the reply.
        seq: u64,
    },
    /// Answers a [`Control::SyncRequest`].
    SyncReply {
        /// The request's sequence number.
        seq: u64,
    },
    /// Asks the receiver to tell the sender when its mailbox `target`
    /// closes (the sender tracks which of its own mailboxes watch it).
    Watch {
        /// A mailbox of the receiving node.
        target: MailboxId,
    },
    /// Cancels a [`Control::Watch`]: no local watcher is left.
    Unwatch {
        /// A mailbox of the receiving node.
        target: MailboxId,
    },
    /// `target`, watched by the receiving node, has closed (or never existed).
    Closed {
        /// A mailbox of the sending node.
        target: MailboxId,
    },
    /// Cluster members the sender is connected to, as `(node id, address
    /// to dial)`, itself included. Sent when a connection comes up, when a
    /// new member connects to the sender (that member alone), and now and
    /// then to a random peer; the receiver adds the members it did not know
    /// and connects to them.
    Members {
        /// The members.
        nodes: Vec<(u16, String)>,
        /// Asks the receiver to answer with its own list if it knows live
        /// members this one lacks (the periodic exchange is push-pull, so
        /// one round mends a view in either direction).
        answer: bool,
    },
    // Link budgets (issue 15, item 2).
    /// `target`, a mailbox of the sender, holds its share of unread
    /// messages (`Tuning::mailbox_unread_bytes`): the receiver refuses
    /// further sends to it with `SendError::Full` until
    /// [`Control::Ready`]. Messages to it already on the way are still
    /// taken, up to a hard cap.
    Busy {
        /// A mailbox of the sending node.
        target: MailboxId,
    },
    /// `target` was read down to half its share (or closed): sends to it
    /// may go again.
    Ready {
        /// A mailbox of the sending node.
        target: MailboxId,
    },
    // Exit reasons and links (issue 18). Sent only to peers whose hello
    // carries `handshake::FEATURE_EXITS`: a peer without it could not
    // decode them, so it gets `Closed` instead of `Exited`, and never
    // `Link`, `Unlink` or `Kill`.
    /// [`Control::Closed`] with why: `target`, watched by the receiving
    /// node, has closed (or never existed) for `reason`.
    Exited {
        /// A mailbox of the sending node.
        target: MailboxId,
        /// Why it closed.
        reason: ExitReason,
    },
    /// `from`, a mailbox of the sender, links itself to `target`, a mailbox
    /// of the receiver: the receiver links `target` back and watches
    /// `from` (the sender already watches `target`).
    Link {
        /// A mailbox of the sending node.
        from: MailboxId,
        /// A mailbox of the receiving node.
        target: MailboxId,
    },
    /// Undoes a [`Control::Link`] (the sender has stopped watching
    /// `target`).
    Unlink {
        /// A mailbox of the sending node.
        from: MailboxId,
        /// A mailbox of the receiving node.
        target: MailboxId,
    },
    /// Closes `target`, a mailbox of the receiver, with
    /// [`ExitReason::Killed`] (aborting its task, if it has one).
    Kill {
        /// A mailbox of the receiving node.
        target: MailboxId,
    },
    // Membership digests (issue 22). Sent only to peers whose hello carries
    // `handshake::FEATURE_MEMBER_DIGEST`; others get `Members` as before.
    /// What [`Control::Members`] would say, in a few bytes: the sender's
    /// own address, and the count and hash of the member ids it knows
    /// (itself included). Sent when a connection comes up and now and then
    /// to a random peer; a receiver whose own digest differs answers with
    /// its full `Members` list, one whose digest matches sends nothing.
    MemberDigest {
        /// The sender's address to dial (empty if it has none).
        address: String,
        /// How many members the sender knows, itself included.
        count: u32,
        /// FNV-1a (64 bits) of the known member ids in ascending order,
        /// each as two little-endian bytes.
        hash: u64,
        /// Set on the periodic exchange: a receiver whose digest differs
        /// answers with `Members { answer: true }`, so the sender can send
        /// its list back if the receiver lacks members (push-pull, as the
        /// full exchange was). Clear when a connection comes up, where both
        /// sides send a digest and each answers a difference with its list.
        answer: bool,
    },
}

/// The count and FNV-1a hash of a set of member ids (see
/// [`Control::MemberDigest`]); `ids` in ascending order.
pub fn member_digest(ids: impl IntoIterator<Item = u16>) -> (u32, u64) {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut count = 0u32;
    let mut hash = FNV_OFFSET;
    for id in ids {
        count += 1;
        for byte in id.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    }
    (count, hash)
}

impl Control {
    /// The CBOR body of a control frame.
    pub fn encode(&self) -> bytes::Bytes {
        payload::to_vec(self).into()
    }

    /// Decodes a control frame body.
    pub fn decode(body: &[u8]) -> Result<Control, DecodeError> {
        payload::decode(body)
    }
}
