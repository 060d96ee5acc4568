//! Counters kept by a node, readable at any time as a [`NodeStats`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// Live counters, updated with relaxed atomics.
        #[derive(Debug, Default)]
        pub(crate) struct NodeCounters {
            $(pub(crate) $name: AtomicU64,)*
        }

        /// A snapshot of a node's counters.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct NodeStats {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl NodeStats {
            /// Each counter's name and its documentation (the doc comment's
            /// lines joined by newlines), in declaration order: the help
            /// text of exported metrics.
            pub const DOCS: &'static [(&'static str, &'static str)] =
                &[$((stringify!($name), concat!($($doc, "\n"),*)),)*];
        }

        impl NodeCounters {
            pub(crate) fn snapshot(&self) -> NodeStats {
                NodeStats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    /// Mailboxes created since start.
    mailboxes_created,
    /// Mailboxes closed since start.
    mailboxes_closed,
    /// Messages sent to other nodes' mailboxes (queued for the wire).
    remote_sent,
    /// Remote sends dropped because the target's node was not connected.
    dropped_unreachable,
    /// Remote sends refused because the outbound queue to the node was
    /// full, or the target mailbox said it is busy (over its share of
    /// unread messages).
    dropped_outbound_full,
    /// Messages received from other nodes and delivered to a mailbox.
    remote_delivered,
    /// Messages from other nodes dropped because the mailbox was closed or gone.
    dropped_closed,
    /// Messages from other nodes dropped because the mailbox was full.
    dropped_full,
    /// Messages from other nodes dropped because their type is not registered here.
    dropped_unknown_type,
    /// `MailboxClosed` notifications delivered to watchers on this node.
    close_notifications_sent,
    /// `MultipleClaim` notices sent to this node's claimants (for the names
    /// claimed more than once right now, see `Node::multiple_claim_count`).
    multiple_claim_notices,
    /// Registry messages from peers that were refused (claims for mailboxes
    /// of another node).
    rejected_claims,
    /// Replies that arrived after their request timed out (dropped).
    late_replies,
    /// Requests refused because the member was over its limits.
    refused_requests,
    /// Broadcasts and publications not delivered to a receiver over its cap.
    dropped_events,
    // Graceful shutdown drain (issue 15, item 3).
    /// Messages (sends, requests, replies, publications) accepted for a
    /// peer but still queued when a graceful shutdown's drain ended (see
    /// `Tuning::drain_timeout`): never sent, dropped.
    dropped_at_shutdown,
    // ----- requests (deadlines, callers giving up)
    /// Requests discarded on the member's node, unanswered, because their
    /// deadline passed while they waited for a handler slot (or before they
    /// arrived): they never reached the member.
    expired_requests,
    /// Requests discarded on the member's node, unanswered, because their
    /// caller gave up (dropped its future, or its node went away) while they
    /// waited for a handler slot.
    cancelled_requests,
    // registry (issue 15, items 7 and 8)
    /// Names this node has seen become claimed by more than one mailbox
    /// (each logged once at WARN; counted again if the conflict ends and
    /// begins anew).
    name_conflicts,
    /// Peers cut off for going over a registry cap (`max_name_len`,
    /// `max_names_per_node`, `max_group_members_per_node`,
    /// `max_topics_per_node`).
    registry_cutoffs,
    /// Messages from other nodes dropped because their mailbox already held
    /// twice its share of unread bytes (`Tuning::mailbox_unread_bytes`):
    /// sent before the sender heard the mailbox is busy, or by a sender
    /// that ignores it. The link they came on keeps carrying everything else.
    dropped_unread_share,
    /// Times a mailbox of this node went over its share of unread bytes
    /// and told a sending node it is busy (that node's later sends to it
    /// fail with `Full` until it is read down to half its share).
    busy_notices,
    // supervision (issue 18)
    /// Children restarted by the supervisors running on this node (each
    /// child started again counts once: a one-for-all restart of three
    /// children counts three).
    supervisor_restarts,
    /// Supervisors on this node that gave up because more restarts than
    /// their intensity allows came within its period: each shut its
    /// children down and exited with an error for its parent to handle.
    supervisor_escalations,
    // the latency path (issue 17)
    /// Times a thread about to wait for a message (an empty mailbox, a
    /// request without its reply) read the sleeping driver's sockets
    /// itself and fed the core what it found (the driver's inline
    /// receive): each saved the driver's wake-up and then the waiting
    /// thread's.
    inline_receives,
}
