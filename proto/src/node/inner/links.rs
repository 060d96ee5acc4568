//! Close notifications and links that cross nodes: which remote mailboxes
//! this node watches for its local watchers, which nodes watch its own
//! mailboxes, and which peers understand exit reasons.
//!
//! A link between a mailbox here and one on a peer is a watch each way
//! plus a mark on each mailbox (`MailboxShared::add_link`) that turns the
//! close notice into an exit signal (`Address::deliver_close`): this node
//! watches the remote mailbox, and `Control::Link` asks the peer to link
//! its side back and watch ours. So a link needs nothing else to fire on
//! an exit, on a lost node (`peer_down` tells the watchers) or on a watch
//! of a mailbox that is already gone.
//!
//! Versioning: `Exited` (a close with its reason), `Link`, `Unlink` and
//! `Kill` go only to peers whose hello carried `FEATURE_EXITS`
//! (`exit_peers`); a peer without it gets the reasonless `Closed`, which
//! this node reads as `ExitReason::Unspecified`.

use std::collections::{BTreeMap, BTreeSet};

use crate::poison::lock;

use crate::close::CloseReason;
use crate::control::Control;
use crate::error::SendError;
use crate::handshake::FEATURE_EXITS;
use crate::id::{MailboxId, NodeId};
use crate::node::address::Address;
use crate::node::NodeInner;
use crate::system::ExitReason;

/// Most links peers may make to one mailbox of this node (`Control::Link`):
/// each costs an id in the mailbox and a watch entry here, and nothing a
/// peer sends may grow memory without a bound. Beyond it a peer's link is
/// one way (its side still hears this mailbox's exit, through its watch).
/// Far above what a supervisor with its children needs.
pub(crate) const MAX_PEER_LINKS: usize = 1 << 16;

/// Close notifications that cross nodes.
#[derive(Default)]
pub(in crate::node) struct Links {
    /// Mailboxes of other nodes watched from here, with their local watchers.
    pub(in crate::node) watching: BTreeMap<MailboxId, Vec<Address>>,
    /// Mailboxes of this node watched by other nodes.
    pub(in crate::node) watched_by: BTreeMap<MailboxId, BTreeSet<NodeId>>,
    /// Connected peers that understand exit reasons and links
    /// ([`FEATURE_EXITS`]).
    pub(in crate::node) exit_peers: BTreeSet<NodeId>,
}

impl NodeInner {
    /// Notes what a peer that just connected understands.
    pub(in crate::node) fn set_peer_features(&self, peer: NodeId, features: u64) {
        let mut links = lock(&self.links);
        if features & FEATURE_EXITS != 0 {
            links.exit_peers.insert(peer);
        } else {
            links.exit_peers.remove(&peer);
        }
    }

    /// Whether `peer` is connected and understands exit reasons and links.
    fn peer_has_exits(&self, peer: NodeId) -> bool {
        lock(&self.links).exit_peers.contains(&peer)
    }

    /// The control message telling `peer` that `target` closed for
    /// `reason`: `Exited` if it understands reasons, `Closed` if not.
    pub(in crate::node) fn closed_control(
        &self,
        peer: NodeId,
        target: MailboxId,
        reason: ExitReason,
    ) -> Control {
        if self.peer_has_exits(peer) {
            Control::Exited { target, reason }
        } else {
            Control::Closed { target }
        }
    }

    /// Links `me`, a local mailbox already linked on its side, to `target`
    /// on another node: watches `target`, and asks its node to link back.
    pub(crate) fn link_remote(&self, me: &Address, target: MailboxId) {
        self.watch_remote(target, me);
        if self.peer_has_exits(target.node) {
            self.queue_control(
                target.node,
                &Control::Link {
                    from: me.id(),
                    target,
                },
            );
        }
    }

    /// Undoes [`link_remote`](NodeInner::link_remote).
    pub(crate) fn unlink_remote(&self, me: &Address, target: MailboxId) {
        self.unwatch_remote(target, me);
        if self.peer_has_exits(target.node) {
            self.queue_control(
                target.node,
                &Control::Unlink {
                    from: me.id(),
                    target,
                },
            );
        }
    }

    /// Kills a mailbox of another node (see [`Address::kill`]).
    pub(crate) fn kill_remote(&self, target: MailboxId) -> Result<(), SendError> {
        if self.is_shutting_down() {
            return Err(SendError::NodeShutdown);
        }
        let connected = self
            .net
            .outbox(target.node)
            .is_some_and(|o| o.lock().connected);
        if !connected {
            return Ok(());
        }
        if !self.peer_has_exits(target.node) {
            return Err(SendError::Unsupported);
        }
        self.queue_control(target.node, &Control::Kill { target });
        Ok(())
    }

    /// A local mailbox `id` closed: drops the watches it held, as one side
    /// of a link, on the mailboxes in `links` (the other sides learn of the
    /// close from their own watches of `id`).
    pub(in crate::node) fn unwatch_links(&self, id: MailboxId, links: Vec<MailboxId>) {
        let me = Address::gone(id, self.me.clone());
        for other in links {
            if other.node == self.id {
                if let Some(mailbox) = self.local_mailbox(other) {
                    mailbox.remove_watcher(&me);
                }
            } else {
                self.unwatch_remote(other, &me);
            }
        }
    }

    /// Watches a mailbox of another node: the first local watcher of a
    /// target asks the target's node to report its closing; a target on a
    /// node that is not connected is unreachable, and reported closed now.
    pub(crate) fn watch_remote(&self, target: MailboxId, watcher: &Address) {
        let mut links = lock(&self.links);
        if !self
            .net
            .outbox(target.node)
            .is_some_and(|o| o.lock().connected)
        {
            drop(links);
            self.notify_closed(watcher, target, &ExitReason::Unreachable(None));
            return;
        }
        let watchers = links.watching.entry(target).or_default();
        let first = watchers.is_empty();
        if !watchers.contains(watcher) {
            watchers.push(watcher.clone());
        }
        drop(links);
        if first {
            self.queue_control(target.node, &Control::Watch { target });
        }
    }

    /// Cancels a watch on a mailbox of another node.
    pub(crate) fn unwatch_remote(&self, target: MailboxId, watcher: &Address) {
        let mut links = lock(&self.links);
        let Some(watchers) = links.watching.get_mut(&target) else {
            return;
        };
        watchers.retain(|w| w != watcher);
        if watchers.is_empty() {
            links.watching.remove(&target);
            drop(links);
            self.queue_control(target.node, &Control::Unwatch { target });
        }
    }

    /// Handles the close-watch and link messages of a peer (`Watch`,
    /// `Unwatch`, `Closed`, `Exited`, `Link`, `Unlink`, `Kill`); the
    /// answers go to `out`. Anything else is ignored.
    pub(in crate::node) fn on_link_control(
        &self,
        peer: NodeId,
        control: Control,
        out: &mut Vec<(NodeId, Control)>,
    ) -> Result<(), CloseReason> {
        match control {
            Control::Watch { target } => {
                if target.node != self.id {
                    return Err(CloseReason::Protocol(format!(
                        "asked to watch {target:?}, a mailbox of another node"
                    )));
                }
                let mut links = lock(&self.links);
                let open = self.local_mailbox(target).is_some_and(|m| !m.is_closed());
                if open {
                    links.watched_by.entry(target).or_default().insert(peer);
                } else {
                    let has_exits = links.exit_peers.contains(&peer);
                    drop(links);
                    out.push((
                        peer,
                        if has_exits {
                            Control::Exited {
                                target,
                                reason: self.exit_reason_of(target),
                            }
                        } else {
                            Control::Closed { target }
                        },
                    ));
                }
            }
            Control::Unwatch { target } => {
                let mut links = lock(&self.links);
                if let Some(nodes) = links.watched_by.get_mut(&target) {
                    nodes.remove(&peer);
                    if nodes.is_empty() {
                        links.watched_by.remove(&target);
                    }
                }
            }
            Control::Closed { target } => {
                self.remote_closed(peer, target, ExitReason::Unspecified)?
            }
            Control::Exited { target, reason } => self.remote_closed(peer, target, reason)?,
            Control::Link { from, target } => {
                Self::check_pair(peer, from, self.id, target)?;
                // A target that is gone: the peer's own watch of it hears
                // `NoMailbox`, which fires its side of the link.
                if let Some(mailbox) = self.local_mailbox(target) {
                    if mailbox.add_link_within(from, MAX_PEER_LINKS) {
                        let from = self.bind(from);
                        let target = Address::local(mailbox);
                        from.on_close_notify(&target);
                    } else if !mailbox.is_closed() {
                        tracing::debug!(
                            node = self.id.0,
                            peer = peer.0,
                            %target,
                            "a peer's link refused: the mailbox has {MAX_PEER_LINKS} links"
                        );
                    }
                }
            }
            Control::Unlink { from, target } => {
                Self::check_pair(peer, from, self.id, target)?;
                if let Some(mailbox) = self.local_mailbox(target) {
                    mailbox.take_link(from);
                    self.unwatch_remote(from, &Address::local(mailbox));
                }
            }
            Control::Kill { target } => {
                if target.node != self.id {
                    return Err(CloseReason::Protocol(format!(
                        "asked to kill {target:?}, a mailbox of another node"
                    )));
                }
                if let Some(mailbox) = self.local_mailbox(target) {
                    mailbox.close_and_notify(ExitReason::Killed);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `target`, a mailbox of `peer`, closed for `reason`: tells this
    /// node's watchers of it.
    fn remote_closed(
        &self,
        peer: NodeId,
        target: MailboxId,
        reason: ExitReason,
    ) -> Result<(), CloseReason> {
        if target.node != peer {
            return Err(CloseReason::Protocol(format!(
                "reported {target:?}, a mailbox of another node, closed"
            )));
        }
        let watchers = lock(&self.links).watching.remove(&target);
        for watcher in watchers.into_iter().flatten() {
            self.notify_closed(&watcher, target, &reason);
        }
        Ok(())
    }

    /// Checks a link message: `from` is the sender's, `target` this node's.
    fn check_pair(
        peer: NodeId,
        from: MailboxId,
        me: NodeId,
        target: MailboxId,
    ) -> Result<(), CloseReason> {
        if from.node != peer || target.node != me {
            return Err(CloseReason::Protocol(format!(
                "a link between {from:?} and {target:?}, not its mailbox and ours"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::id::Incarnation;
    use crate::node::Node;

    #[test]
    fn peer_links_stop_at_the_limit() {
        let node = Node::local(Incarnation(1));
        let (_, target) = node.new_mailbox();
        let limit = 3;
        let others: Vec<_> = (0..limit + 1).map(|_| node.new_mailbox()).collect();
        let shared = target.shared();
        // Under the limit, and at it.
        for (other, _) in &others[..limit] {
            assert!(shared.add_link_within(other.id(), limit));
        }
        // A link it already has is no new link.
        assert!(shared.add_link_within(others[0].0.id(), limit));
        // Over it.
        assert!(!shared.add_link_within(others[limit].0.id(), limit));
        assert_eq!(target.links().len(), limit);
    }
}
