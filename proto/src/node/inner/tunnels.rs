//! The node's side of tunnels: the table of tunnel ends and the routing of
//! tunnel frames between the wire and those ends.

use std::sync::{Arc, MutexGuard};

use bytes::Bytes;

use crate::codec::frame::TunnelOp;
use crate::error::SendError;
use crate::id::NodeId;

use super::NodeInner;
use crate::node::tunnel::*;

use std::collections::HashMap;

use crate::codec::Frame;
use crate::message::Message;
use crate::node::outbox::Refused;
use crate::poison::lock;
use crate::services::Target;

/// Every tunnel end on one node.
#[derive(Default)]
pub(crate) struct TunnelTable {
    next_id: u64,
    ends: HashMap<TunnelKey, Arc<TunnelShared>>,
    /// Tunnels each peer has opened to this node.
    offered_by: HashMap<NodeId, usize>,
}

impl TunnelTable {
    fn insert(&mut self, key: TunnelKey, end: Arc<TunnelShared>) {
        if self.ends.insert(key, end).is_none() && !key.opened_here {
            *self.offered_by.entry(key.peer).or_default() += 1;
        }
    }

    fn remove(&mut self, key: &TunnelKey) -> Option<Arc<TunnelShared>> {
        let end = self.ends.remove(key)?;
        if !key.opened_here {
            if let Some(n) = self.offered_by.get_mut(&key.peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.offered_by.remove(&key.peer);
                }
            }
        }
        Some(end)
    }
}

impl NodeInner {
    fn tunnels(&self) -> MutexGuard<'_, TunnelTable> {
        lock(&self.tunnels)
    }

    pub(crate) fn forget_tunnel(&self, key: TunnelKey) {
        self.tunnels().remove(&key);
    }

    /// Open tunnel ends on this node.
    pub(crate) fn tunnel_count(&self) -> usize {
        self.tunnels().ends.len()
    }

    /// Sends a tunnel operation to the other end: to the peer's node, or
    /// straight to the other end when both ends live on this node.
    pub(crate) fn send_tunnel_op(&self, key: TunnelKey, op: TunnelOp) -> Result<(), SendError> {
        if key.peer == self.id {
            self.on_tunnel_op(self.id, key.id, key.opened_here, op);
            return Ok(());
        }
        let Some(outbox) = self.network().outbox(key.peer) else {
            return Err(SendError::Closed);
        };
        // Tunnel frames skip the outbound bound: credit windows bound them.
        // Refusals answer the peer's own opens, so they are bounded instead:
        // a peer that floods opens and reads nothing cannot grow the queue.
        let bounded = matches!(op, TunnelOp::Reject { .. });
        let frame = Frame::Tunnel {
            id: key.id,
            from_opener: key.opened_here,
            op,
        };
        match self
            .network()
            .push_frame(outbox, 0, bounded, false, |out| frame.encode(out))
        {
            Ok(()) => Ok(()),
            // A refusal that finds the queue full is dropped, and leaves the
            // tunnel table alone (the id may be another, open tunnel's).
            Err(Refused::Full) if bounded => Err(SendError::Full),
            Err(Refused::Unreachable | Refused::Full) => {
                let end = self.tunnels().remove(&key);
                if let Some(end) = end {
                    end.finish(Some(TunnelError::Unreachable));
                }
                Err(SendError::Closed)
            }
        }
    }

    /// A tunnel operation from `peer` (or from this node's other end).
    pub(crate) fn on_tunnel_op(&self, peer: NodeId, id: u64, from_opener: bool, op: TunnelOp) {
        let key = TunnelKey {
            peer,
            id,
            opened_here: !from_opener,
        };
        if let TunnelOp::Open { dest, credit } = op {
            self.offer_tunnel(key, dest, credit);
            return;
        }
        let Some(end) = self.tunnels().ends.get(&key).cloned() else {
            // Operations racing a close are normal; nothing to do.
            return;
        };
        let ends_it = matches!(op, TunnelOp::Close { .. } | TunnelOp::Reject { .. });
        match end.on_op(op) {
            Ok(grant) => {
                if ends_it {
                    self.forget_tunnel(key);
                }
                end.grant(grant);
            }
            Err(e) => {
                tracing::warn!(node = self.id.0, peer = peer.0, tunnel = id, error = %e, "closing a tunnel");
                end.finish(Some(TunnelError::Protocol(e.clone())));
                self.forget_tunnel(key);
                let _ = self.send_tunnel_op(
                    key,
                    TunnelOp::Close {
                        reason: Bytes::from(format!("protocol violation: {e}")),
                    },
                );
            }
        }
    }

    fn offer_tunnel(&self, key: TunnelKey, dest: crate::id::MailboxId, credit: u32) {
        if key.opened_here {
            return;
        }
        let reject = |why: &str| {
            let _ = self.send_tunnel_op(
                key,
                TunnelOp::Reject {
                    reason: Bytes::copy_from_slice(why.as_bytes()),
                },
            );
        };
        let Some(mailbox) = self.local_mailbox(dest) else {
            reject("no such mailbox");
            return;
        };
        let end = Arc::new(TunnelShared::new(
            key,
            self.weak(),
            self.network().tunnel_window,
            self.network().max_message_len,
            credit as usize,
        ));
        {
            let mut table = self.tunnels();
            if table.ends.contains_key(&key) {
                drop(table);
                reject("a tunnel with that id is already open");
                return;
            }
            if table.offered_by.get(&key.peer).copied().unwrap_or(0) >= MAX_TUNNELS_PER_PEER {
                drop(table);
                tracing::debug!(
                    node = self.id.0,
                    peer = key.peer.0,
                    "refusing a tunnel: too many open"
                );
                self.network()
                    .tunnels_refused
                    .record("with too many open from their node");
                reject("too many tunnels open from your node");
                return;
            }
            table.insert(key, end.clone());
        }
        // If the push fails, the dropped IncomingTunnel rejects the offer.
        let _ = mailbox.push(Message::local(IncomingTunnel::new(end)));
    }

    /// Opens a tunnel; see [`Node::open_tunnel`](crate::Node::open_tunnel).
    pub(crate) fn open_tunnel(&self, target: Target<'_>) -> OpeningTunnel {
        let failed = |error| OpeningTunnel {
            shared: None,
            error: Some(error),
        };
        if self.is_shutting_down() {
            return failed(TunnelError::Closed);
        }
        let dest = match target {
            Target::Address(address) => address.id(),
            Target::Service(service) => match self.registry().pick_member(service) {
                Some(id) => id,
                None => return failed(TunnelError::NoMember),
            },
        };
        let window = self.network().tunnel_window;
        let key = {
            let mut table = self.tunnels();
            table.next_id += 1;
            TunnelKey {
                peer: dest.node,
                id: table.next_id,
                opened_here: true,
            }
        };
        let end = Arc::new(TunnelShared::new(
            key,
            self.weak(),
            window,
            self.network().max_message_len,
            0,
        ));
        self.tunnels().insert(key, end.clone());
        if self
            .send_tunnel_op(
                key,
                TunnelOp::Open {
                    dest,
                    credit: end.window as u32,
                },
            )
            .is_err()
        {
            self.forget_tunnel(key);
            return failed(TunnelError::Unreachable);
        }
        OpeningTunnel {
            shared: Some(end),
            error: None,
        }
    }

    /// Ends every tunnel to `peer` (its node is gone) or every tunnel.
    pub(crate) fn end_tunnels(&self, peer: Option<NodeId>, error: TunnelError) {
        let ends: Vec<Arc<TunnelShared>> = {
            let mut table = self.tunnels();
            let keys: Vec<TunnelKey> = table
                .ends
                .keys()
                .filter(|k| peer.is_none_or(|p| k.peer == p))
                .copied()
                .collect();
            keys.iter().filter_map(|k| table.remove(k)).collect()
        };
        for end in ends {
            end.finish(Some(error.clone()));
        }
    }
}
