//! `NodeInner`: the state a node's handles and its core share.
//!
//! One `NodeInner` per node, behind an `Arc` held by [`Node`](crate::Node)
//! and every clone of it, and a `Weak` held by remote addresses. User
//! threads reach it through the handles; the core (on the driver's task)
//! reaches it to deliver, to hand over control messages and to learn of
//! peers coming and going. Each concern keeps its own table and lock, in
//! its own file:
//!
//! | file | owns |
//! |---|---|
//! | this file | the struct, binding ids to addresses, remote sends, peers up and down, shutdown |
//! | `mailboxes.rs` | the sharded id → mailbox table |
//! | `links.rs` | close watches and links across nodes (the `Watch`/`Unwatch`/`Closed`/`Exited` and `Link`/`Unlink`/`Kill` protocol), which peers understand exit reasons |
//! | `registry.rs` | carrying out the pure registry's effects; registry syncs |
//! | `services.rs` | routing requests, replies, broadcasts and publications; the request tables' deadline |
//! | `tunnels.rs` | the table of tunnel ends and the routing of tunnel frames |
//! | `recent_exits.rs` | the exit reasons of the last closed mailboxes, for watches that come late |

mod links;
mod mailboxes;
mod recent_exits;
mod registry;
mod services;
mod tunnels;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;

use crate::poison::lock;

use crate::close::CloseReason;
use crate::codec::Frame;
use crate::control::Control;
use crate::error::SendError;
use crate::id::{Incarnation, MailboxId, NodeId};
use crate::node::address::Address;
use crate::node::mailbox::MailboxShared;
use crate::node::outbox::{Network, Refused};
use crate::node::services::Services;
use crate::node::tunnel::TunnelError;
use crate::registry::Registry;
use crate::stats::NodeCounters;
use crate::system::{ConnectionStatus, ExitReason};
pub(in crate::node) use links::Links;
pub(in crate::node) use mailboxes::MailboxTable;
pub use recent_exits::MAX_RECENT_EXITS;
pub(in crate::node) use registry::SyncBook;
pub use registry::SyncFuture;
pub(crate) use tunnels::TunnelTable;

/// The shared state behind a [`Node`].
pub(crate) struct NodeInner {
    pub(crate) id: NodeId,
    pub(crate) incarnation: Incarnation,
    pub(in crate::node) next_serial: AtomicU64,
    pub(in crate::node) mailboxes: MailboxTable,
    pub(crate) counters: NodeCounters,
    /// Weak self-reference, handed to addresses this node binds.
    pub(in crate::node) me: Weak<NodeInner>,
    /// Outbound queues to peers (none for a local-only node).
    pub(in crate::node) net: Network,
    pub(in crate::node) shutting_down: AtomicBool,
    /// Mailboxes told about peers connecting and disconnecting.
    pub(in crate::node) status_watchers: Mutex<Vec<Address>>,
    /// Control frames queued by user threads for the core to send: watches
    /// and unwatches ([`Address::on_close_notify`]), and what a mailbox
    /// closed or read down by its user tells peers (`Closed`, `Ready`).
    /// Frames the core produces while it handles input are returned to it
    /// instead (see [`handle_control`](NodeInner::handle_control)).
    pub(in crate::node) user_control: Mutex<Vec<(NodeId, Frame)>>,
    pub(in crate::node) registry: Mutex<Registry>,
    pub(in crate::node) links: Mutex<Links>,
    pub(in crate::node) syncs: Mutex<SyncBook>,
    /// The request tables; lock them through `services()`, which hands
    /// their next deadline to the core.
    pub(in crate::node) services: Mutex<Services>,
    /// The request tables' next deadline, for the core's timer.
    pub(in crate::node) request_deadline: services::DeadlineCell,
    pub(crate) tunnels: Mutex<TunnelTable>,
    /// Why the last closed mailboxes closed, for late watches.
    pub(in crate::node) recent_exits: Mutex<recent_exits::RecentExits>,
}

thread_local! {
    /// Each thread's encoding buffer for remote sends, so encoding a small
    /// message allocates nothing.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Scratch buffers that grew past this are released after use.
const SCRATCH_KEEP: usize = 1 << 20;

impl NodeInner {
    /// A node's shared state, with `net` as its network (empty for a
    /// local node).
    pub(crate) fn new(id: NodeId, incarnation: Incarnation, net: Network) -> Arc<NodeInner> {
        Arc::new_cyclic(|me| NodeInner {
            id,
            incarnation,
            next_serial: AtomicU64::new(1),
            mailboxes: MailboxTable::new(),
            counters: NodeCounters::default(),
            me: me.clone(),
            net,
            shutting_down: AtomicBool::new(false),
            status_watchers: Mutex::new(Vec::new()),
            user_control: Mutex::new(Vec::new()),
            registry: Mutex::new(Registry::new(id)),
            links: Mutex::new(Links::default()),
            syncs: Mutex::new(SyncBook::default()),
            services: Mutex::new(Services::default()),
            request_deadline: services::DeadlineCell::new(),
            tunnels: Mutex::new(TunnelTable::default()),
            recent_exits: Mutex::new(recent_exits::RecentExits::default()),
        })
    }

    /// Binds an id to this node: a live local mailbox, a gone one, or a
    /// remote one reached through this node.
    pub(crate) fn bind(&self, id: MailboxId) -> Address {
        if id.node != self.id {
            return Address::remote(id, self.me.clone());
        }
        if id.incarnation != self.incarnation {
            return Address::gone(id, self.me.clone());
        }
        match self.mailboxes.get(id.serial) {
            Some(mailbox) => Address::local(mailbox),
            None => Address::gone(id, self.me.clone()),
        }
    }

    /// A local mailbox by id, for delivering messages from the wire.
    pub(crate) fn local_mailbox(&self, id: MailboxId) -> Option<Arc<MailboxShared>> {
        if id.node != self.id || id.incarnation != self.incarnation {
            return None;
        }
        self.mailboxes.get(id.serial)
    }

    /// Called once when a local mailbox closes for `reason`: tells its
    /// watchers (local, and remote through their nodes) and drops the
    /// watches it held on the mailboxes it was linked to.
    pub(crate) fn mailbox_closed(
        &self,
        id: MailboxId,
        reason: &ExitReason,
        watchers: Vec<Address>,
        links: Vec<MailboxId>,
    ) {
        // Kept before the mailbox leaves the table: a watch finds either
        // the mailbox (and its reason) or this.
        lock(&self.recent_exits).record(id, reason);
        self.mailboxes.remove(id.serial);
        self.counters
            .mailboxes_closed
            .fetch_add(1, Ordering::Relaxed);
        self.unwatch_links(id, links);
        for watcher in watchers {
            self.notify_closed(&watcher, id, reason);
        }
        let watching_nodes = lock(&self.links).watched_by.remove(&id);
        for node in watching_nodes.into_iter().flatten() {
            let control = self.closed_control(node, id, reason.clone());
            self.queue_control(node, &control);
        }
        let effects = lock(&self.registry).mailbox_closed(id);
        self.apply(effects);
        self.drop_gate(id);
    }

    /// Why local mailbox `id` closed, if it did recently: its own reason
    /// while it is in the table, else the recent exits' (see
    /// [`MAX_RECENT_EXITS`]); `NoMailbox` when neither knows (never
    /// existed, or closed too long ago).
    pub(crate) fn exit_reason_of(&self, id: MailboxId) -> ExitReason {
        if let Some(reason) = self.local_mailbox(id).and_then(|m| m.exit_reason()) {
            return reason;
        }
        lock(&self.recent_exits)
            .get(id)
            .unwrap_or(ExitReason::NoMailbox)
    }

    fn notify_closed(&self, watcher: &Address, target: MailboxId, reason: &ExitReason) {
        if watcher.deliver_close(target, reason) {
            self.counters
                .close_notifications_sent
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    pub(crate) fn weak(&self) -> Weak<NodeInner> {
        self.me.clone()
    }

    pub(crate) fn network(&self) -> &Network {
        &self.net
    }

    /// Sends to a mailbox of another node: encodes here, in the caller's
    /// thread, and queues the frame for the core.
    pub(crate) fn send_remote<T: Serialize + 'static>(
        &self,
        dest: MailboxId,
        value: &T,
    ) -> Result<(), SendError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(SendError::NodeShutdown);
        }
        let tag = crate::types::tag_for::<T>()?;
        let Some(outbox) = self.net.outbox(dest.node) else {
            self.counters
                .dropped_unreachable
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let result = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            crate::codec::payload::encode(value, &mut scratch).map_err(SendError::Encode)?;
            if scratch.len() > self.net.max_message_len {
                let len = scratch.len();
                if scratch.capacity() > SCRATCH_KEEP {
                    *scratch = Vec::new();
                }
                return Err(SendError::TooLarge {
                    len,
                    max: self.net.max_message_len,
                });
            }
            let pushed = self.net.push_message(outbox, dest, tag, &mut scratch);
            if scratch.capacity() > SCRATCH_KEEP {
                *scratch = Vec::new();
            }
            Ok(pushed)
        })?;
        match result {
            Ok(()) => {
                self.counters.remote_sent.fetch_add(1, Ordering::Relaxed);
                outbox.counters.messages_out.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(Refused::Unreachable) if self.shutting_down.load(Ordering::Relaxed) => {
                // The node began shutting down while this send was under
                // way, and its link is already closed: not accepted.
                Err(SendError::NodeShutdown)
            }
            Err(Refused::Unreachable) => {
                self.counters
                    .dropped_unreachable
                    .fetch_add(1, Ordering::Relaxed);
                outbox
                    .counters
                    .dropped_unreachable
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(Refused::Full) => {
                self.counters
                    .dropped_outbound_full
                    .fetch_add(1, Ordering::Relaxed);
                outbox.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                Err(SendError::Full)
            }
        }
    }

    /// Queues a control frame for a peer and wakes the core. For user
    /// threads only: the core's own handlers return their frames.
    pub(crate) fn queue_control(&self, peer: NodeId, control: &Control) {
        let frame = Frame::Control(control.encode());
        lock(&self.user_control).push((peer, frame));
        self.net.wake.notify();
    }

    /// Control frames queued by user threads, for the core.
    pub(crate) fn take_user_control(&self) -> Vec<(NodeId, Frame)> {
        std::mem::take(&mut *lock(&self.user_control))
    }

    /// Handles a control message from a connected peer (called by the
    /// core). The frames it answers with (`Closed` for a watch of a closed
    /// mailbox, registry replies) are pushed to `out`, for the core to
    /// send. `Err` closes the connection (the peer broke the protocol).
    pub(crate) fn handle_control(
        &self,
        peer: NodeId,
        control: Control,
        out: &mut Vec<(NodeId, Control)>,
    ) -> Result<(), CloseReason> {
        match control {
            Control::Watch { .. }
            | Control::Unwatch { .. }
            | Control::Closed { .. }
            | Control::Exited { .. }
            | Control::Link { .. }
            | Control::Unlink { .. }
            | Control::Kill { .. } => {
                self.on_link_control(peer, control, out)?;
            }
            registry_message => self.on_registry_control(peer, registry_message, out)?,
        }
        Ok(())
    }

    /// A peer connected: note what it understands (its hello's
    /// `features`), tell status watchers; return the frames that open the
    /// conversation with it.
    pub(crate) fn peer_up(
        &self,
        peer: NodeId,
        _incarnation: Incarnation,
        features: u64,
    ) -> Vec<Frame> {
        self.set_peer_features(peer, features);
        let snapshot = lock(&self.registry).peer_up(peer);
        self.notify_status(peer, None);
        snapshot
            .iter()
            .map(|control| Frame::Control(control.encode()))
            .collect()
    }

    /// A peer was lost, first step: the names, groups and topics it held
    /// vanish. The core takes this step before it marks the peer
    /// disconnected, so whoever sees the peer gone (`Node::is_connected`,
    /// `wait_for_disconnect`) sees its names gone too.
    pub(crate) fn forget_peer_claims(&self, peer: NodeId, out: &mut Vec<(NodeId, Control)>) {
        let effects = lock(&self.registry).peer_down(peer);
        self.apply_into(effects, out);
    }

    /// A peer was lost (called by the core, after `forget_peer_claims` and
    /// after marking the peer disconnected): watchers of its mailboxes are
    /// told (exactly once: each watch is removed as it fires), and nothing
    /// queued for it survives into its next connection. Status watchers
    /// are told `reason`.
    pub(crate) fn peer_down(&self, peer: NodeId, reason: &CloseReason) {
        lock(&self.user_control).retain(|(p, _)| *p != peer);
        self.requests_peer_down(peer);
        self.end_tunnels(Some(peer), TunnelError::Unreachable);
        let lost: Vec<(MailboxId, Vec<Address>)> = {
            let mut links = lock(&self.links);
            links.exit_peers.remove(&peer);
            for nodes in links.watched_by.values_mut() {
                nodes.remove(&peer);
            }
            links.watched_by.retain(|_, nodes| !nodes.is_empty());
            let targets: Vec<MailboxId> = links
                .watching
                .keys()
                .filter(|t| t.node == peer)
                .copied()
                .collect();
            targets
                .into_iter()
                .filter_map(|t| links.watching.remove(&t).map(|w| (t, w)))
                .collect()
        };
        // A peer that said goodbye because it is shutting down closed its
        // mailboxes for that reason too (`close_all_mailboxes`): watchers
        // here hear what watchers there heard.
        let exit = match reason {
            CloseReason::PeerLeaving => ExitReason::NodeShutdown,
            other => ExitReason::Unreachable(Some(other.clone())),
        };
        for (target, watchers) in lost {
            for watcher in watchers {
                self.notify_closed(&watcher, target, &exit);
            }
        }
        self.notify_status(peer, Some(reason));
    }

    /// Tells status watchers that `peer` connected (no reason) or
    /// disconnected for `reason`.
    fn notify_status(&self, peer: NodeId, reason: Option<&CloseReason>) {
        let mut watchers = lock(&self.status_watchers);
        watchers.retain(|w| {
            w.send(ConnectionStatus {
                node: peer,
                connected: reason.is_none(),
                reason: reason.cloned(),
            }) != Err(SendError::Closed)
        });
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        self.services().shutdown();
        self.end_tunnels(None, TunnelError::Closed);
    }

    pub(crate) fn close_all_mailboxes(&self) {
        for mailbox in self.mailboxes.all() {
            mailbox.close_and_notify(ExitReason::NodeShutdown);
        }
    }
}
