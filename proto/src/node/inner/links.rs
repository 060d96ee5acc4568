//! Close notifications that cross nodes: which remote mailboxes this node
//! watches for its local watchers, and which nodes watch its own mailboxes.

use std::collections::{BTreeMap, BTreeSet};

use crate::poison::lock;

use crate::close::CloseReason;
use crate::control::Control;
use crate::id::{MailboxId, NodeId};
use crate::node::address::Address;
use crate::node::NodeInner;

/// Close notifications that cross nodes.
#[derive(Default)]
pub(in crate::node) struct Links {
    /// Mailboxes of other nodes watched from here, with their local watchers.
    pub(in crate::node) watching: BTreeMap<MailboxId, Vec<Address>>,
    /// Mailboxes of this node watched by other nodes.
    pub(in crate::node) watched_by: BTreeMap<MailboxId, BTreeSet<NodeId>>,
}

impl NodeInner {
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
            self.notify_closed(watcher, target);
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

    /// Handles the close-watch messages of a peer (`Watch`, `Unwatch`,
    /// `Closed`); the answers go to `out`. Anything else is ignored.
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
                    drop(links);
                    out.push((peer, Control::Closed { target }));
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
                if target.node != peer {
                    return Err(CloseReason::Protocol(format!(
                        "reported {target:?}, a mailbox of another node, closed"
                    )));
                }
                let watchers = lock(&self.links).watching.remove(&target);
                for watcher in watchers.into_iter().flatten() {
                    self.notify_closed(&watcher, target);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
