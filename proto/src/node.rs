//! The user's handle on a node: creates mailboxes, binds addresses, and is
//! shared between user threads and the node's driver.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use serde::Serialize;

use crate::address::{with_decode_context, Address};
use crate::codec::Frame;
use crate::control::Control;
use crate::error::SendError;
use crate::id::{Incarnation, MailboxId, NodeId};
use crate::mailbox::{Capacity, Mailbox, MailboxShared};
use crate::net::{Network, PeerStats, Refused};
use crate::registry::{Effect, PeerError, Registry, RegistryDump, RegistryError, RegistryLimits};
use crate::services::{Limits, RequestFuture, Services, Target};
use crate::stats::NodeCounters;
use crate::system::{ConnectionStatus, MailboxClosed, MultipleClaim};
use crate::tunnel::{OpeningTunnel, TunnelError, TunnelTable};

/// Shards of the mailbox table; a power of two.
const SHARDS: usize = 16;

/// Mailbox serials are sequential, so the identity is a good enough hash.
#[derive(Default)]
struct SerialHasher(u64);

impl Hasher for SerialHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type SerialMap<V> = HashMap<u64, V, BuildHasherDefault<SerialHasher>>;

/// id → mailbox, the one structure that user threads and the driver share on
/// the receive path. Sharded so that creating and closing mailboxes on many
/// threads does not serialize on one lock.
struct MailboxTable {
    shards: [Mutex<SerialMap<Weak<MailboxShared>>>; SHARDS],
}

impl MailboxTable {
    fn new() -> MailboxTable {
        MailboxTable {
            shards: std::array::from_fn(|_| Mutex::new(SerialMap::default())),
        }
    }

    fn shard(&self, serial: u64) -> std::sync::MutexGuard<'_, SerialMap<Weak<MailboxShared>>> {
        self.shards[(serial as usize) & (SHARDS - 1)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, serial: u64, mailbox: Weak<MailboxShared>) {
        self.shard(serial).insert(serial, mailbox);
    }

    fn remove(&self, serial: u64) {
        self.shard(serial).remove(&serial);
    }

    fn get(&self, serial: u64) -> Option<Arc<MailboxShared>> {
        self.shard(serial).get(&serial).and_then(Weak::upgrade)
    }

    fn all(&self) -> Vec<Arc<MailboxShared>> {
        self.shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .filter_map(Weak::upgrade)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// The shared state behind a [`Node`].
pub(crate) struct NodeInner {
    pub(crate) id: NodeId,
    pub(crate) incarnation: Incarnation,
    next_serial: AtomicU64,
    mailboxes: MailboxTable,
    pub(crate) counters: NodeCounters,
    /// Weak self-reference, handed to addresses this node binds.
    me: Weak<NodeInner>,
    /// Outbound queues to peers (none for a local-only node).
    net: Network,
    shutting_down: AtomicBool,
    /// Mailboxes told about peers connecting and disconnecting.
    status_watchers: Mutex<Vec<Address>>,
    /// Control frames queued by user threads for the core to send.
    control_out: Mutex<Vec<(NodeId, Frame)>>,
    registry: Mutex<Registry>,
    links: Mutex<Links>,
    syncs: Mutex<SyncBook>,
    pub(crate) services: Mutex<Services>,
    pub(crate) tunnels: Mutex<TunnelTable>,
}

/// Close notifications that cross nodes.
#[derive(Default)]
struct Links {
    /// Mailboxes of other nodes watched from here, with their local watchers.
    watching: BTreeMap<MailboxId, Vec<Address>>,
    /// Mailboxes of this node watched by other nodes.
    watched_by: BTreeMap<MailboxId, BTreeSet<NodeId>>,
}

/// Completed registry syncs and the tasks waiting for them.
#[derive(Default)]
struct SyncBook {
    done: BTreeSet<u64>,
    waiting: BTreeMap<u64, Waker>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// Each thread's encoding buffer for remote sends, so encoding a small
    /// message allocates nothing.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Scratch buffers that grew past this are released after use.
const SCRATCH_KEEP: usize = 1 << 20;

impl NodeInner {
    /// Binds an id to this node: a live local mailbox, a gone one, or a
    /// remote one reached through this node.
    pub(crate) fn bind(&self, id: MailboxId) -> Address {
        if id.node != self.id {
            return Address::remote(id, self.me.clone());
        }
        if id.incarnation != self.incarnation {
            return Address::gone(id);
        }
        match self.mailboxes.get(id.serial) {
            Some(mailbox) => Address::local(mailbox),
            None => Address::gone(id),
        }
    }

    /// A local mailbox by id, for delivering messages from the wire.
    pub(crate) fn local_mailbox(&self, id: MailboxId) -> Option<Arc<MailboxShared>> {
        if id.node != self.id || id.incarnation != self.incarnation {
            return None;
        }
        self.mailboxes.get(id.serial)
    }

    /// Called once when a local mailbox closes.
    pub(crate) fn mailbox_closed(&self, id: MailboxId, watchers: Vec<Address>) {
        self.mailboxes.remove(id.serial);
        self.counters
            .mailboxes_closed
            .fetch_add(1, Ordering::Relaxed);
        for watcher in watchers {
            self.notify_closed(&watcher, id);
        }
        let watching_nodes = lock(&self.links).watched_by.remove(&id);
        for node in watching_nodes.into_iter().flatten() {
            self.queue_control(node, &Control::Closed { target: id });
        }
        let effects = lock(&self.registry).mailbox_closed(id);
        self.apply(effects);
        self.drop_gate(id);
    }

    fn notify_closed(&self, watcher: &Address, target: MailboxId) {
        if watcher.send(MailboxClosed(target)).is_ok() {
            self.counters
                .close_notifications_sent
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Carries out what the registry asked for.
    fn apply(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send(peer, control) => self.queue_control(peer, &control),
                Effect::MultipleClaim { name, claimant } => {
                    self.counters
                        .multiple_claim_notices
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = self.bind(claimant).send(MultipleClaim { name });
                }
                Effect::NameConflict { name, claimants } => {
                    self.counters.name_conflicts.fetch_add(1, Ordering::Relaxed);
                    let winner = claimants[0];
                    let others = &claimants[1..];
                    tracing::warn!(
                        node = self.id.0,
                        name = %name.escape_debug(),
                        winner = %winner,
                        others = ?others,
                        "a name is claimed by more than one mailbox: every node resolves it to the lowest id"
                    );
                }
                Effect::SyncDone(seq) => {
                    let mut book = lock(&self.syncs);
                    book.done.insert(seq);
                    if let Some(waker) = book.waiting.remove(&seq) {
                        drop(book);
                        waker.wake();
                    }
                }
            }
        }
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// Sets the registry caps (from the node's `Tuning`).
    pub(crate) fn set_registry_limits(&self, limits: RegistryLimits) {
        lock(&self.registry).set_limits(limits);
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

    /// Queues a control frame for a peer and wakes the core.
    pub(crate) fn queue_control(&self, peer: NodeId, control: &Control) {
        let frame = Frame::Control(control.encode());
        self.control_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((peer, frame));
        self.net.wake.notify();
    }

    /// Control frames queued by user threads, for the core.
    pub(crate) fn take_control_outbox(&self) -> Vec<(NodeId, Frame)> {
        std::mem::take(&mut *self.control_out.lock().unwrap_or_else(|e| e.into_inner()))
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

    /// Handles a control message from a connected peer. `Err` closes the
    /// connection (the peer broke the protocol).
    pub(crate) fn handle_control(&self, peer: NodeId, control: Control) -> Result<(), String> {
        match control {
            Control::Watch { target } => {
                if target.node != self.id {
                    return Err(format!(
                        "asked to watch {target:?}, a mailbox of another node"
                    ));
                }
                let mut links = lock(&self.links);
                let open = self.local_mailbox(target).is_some_and(|m| !m.is_closed());
                if open {
                    links.watched_by.entry(target).or_default().insert(peer);
                } else {
                    drop(links);
                    self.queue_control(peer, &Control::Closed { target });
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
                    return Err(format!(
                        "reported {target:?}, a mailbox of another node, closed"
                    ));
                }
                let watchers = lock(&self.links).watching.remove(&target);
                for watcher in watchers.into_iter().flatten() {
                    self.notify_closed(&watcher, target);
                }
            }
            registry_message => {
                let result = lock(&self.registry).on_control(peer, registry_message);
                match result {
                    Ok(effects) => self.apply(effects),
                    Err(PeerError::Rejected(e)) => {
                        // The claim is ignored; the connection carries on.
                        self.counters
                            .rejected_claims
                            .fetch_add(1, Ordering::Relaxed);
                        // DEBUG: a peer can repeat this at will; the core
                        // logs a summary per interval.
                        tracing::debug!(node = self.id.0, peer = peer.0, error = %e, "rejected a registry message");
                    }
                    Err(PeerError::OverLimit(e)) => {
                        // Cut off: the core closes the link with this reason
                        // (its one log line), and `peer_down` drops
                        // everything the peer held here.
                        self.counters
                            .registry_cutoffs
                            .fetch_add(1, Ordering::Relaxed);
                        return Err(format!("cut off for going over a registry cap: {e}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// A peer connected: tell status watchers; return the frames that open
    /// the conversation with it.
    pub(crate) fn peer_up(&self, peer: NodeId, _incarnation: Incarnation) -> Vec<Frame> {
        let snapshot = lock(&self.registry).peer_up(peer);
        self.notify_status(peer, true);
        snapshot
            .iter()
            .map(|control| Frame::Control(control.encode()))
            .collect()
    }

    /// A peer was lost: its claims vanish, watchers of its mailboxes are
    /// told (exactly once: each watch is removed as it fires), and nothing
    /// queued for it survives into its next connection.
    pub(crate) fn peer_down(&self, peer: NodeId) {
        lock(&self.control_out).retain(|(p, _)| *p != peer);
        let effects = lock(&self.registry).peer_down(peer);
        self.apply(effects);
        self.requests_peer_down(peer);
        self.end_tunnels(Some(peer), TunnelError::Unreachable);
        let lost: Vec<(MailboxId, Vec<Address>)> = {
            let mut links = lock(&self.links);
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
        for (target, watchers) in lost {
            for watcher in watchers {
                self.notify_closed(&watcher, target);
            }
        }
        self.notify_status(peer, false);
    }

    fn notify_status(&self, peer: NodeId, connected: bool) {
        let mut watchers = self
            .status_watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        watchers.retain(|w| {
            w.send(ConnectionStatus {
                node: peer,
                connected,
            }) != Err(SendError::Closed)
        });
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        lock(&self.services).shutdown();
        self.end_tunnels(None, TunnelError::Closed);
    }

    pub(crate) fn close_all_mailboxes(&self) {
        for mailbox in self.mailboxes.all() {
            mailbox.close_and_notify();
        }
    }
}

/// A node: the factory of mailboxes and the context addresses bind to.
///
/// Cheap to clone; every clone is the same node. [`Node::local`] makes a node
/// with no network (Go reign's `NoClustering`): mailboxes, addresses and close
/// notifications work, and nothing is ever sent anywhere. The runtime adapters
/// build networked nodes.
///
/// ```
/// use reign_proto::{Incarnation, Node};
///
/// let node = Node::local(Incarnation(1));
/// let (addr, mailbox) = node.new_mailbox();
/// addr.send(String::from("hi")).unwrap();
/// assert_eq!(mailbox.message_count(), 1);
/// ```
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

impl Node {
    /// A node with no network, as node 0.
    pub fn local(incarnation: Incarnation) -> Node {
        Node::new(NodeId(0), incarnation)
    }

    fn new(id: NodeId, incarnation: Incarnation) -> Node {
        Node::networked(id, incarnation, Network::new([], 0, 0, 0))
    }

    pub(crate) fn networked(id: NodeId, incarnation: Incarnation, net: Network) -> Node {
        let inner = Arc::new_cyclic(|me| NodeInner {
            id,
            incarnation,
            next_serial: AtomicU64::new(1),
            mailboxes: MailboxTable::new(),
            counters: NodeCounters::default(),
            me: me.clone(),
            net,
            shutting_down: AtomicBool::new(false),
            status_watchers: Mutex::new(Vec::new()),
            control_out: Mutex::new(Vec::new()),
            registry: Mutex::new(Registry::new(id)),
            links: Mutex::new(Links::default()),
            syncs: Mutex::new(SyncBook::default()),
            services: Mutex::new(Services::default()),
            tunnels: Mutex::new(TunnelTable::default()),
        });
        Node { inner }
    }

    pub(crate) fn network(&self) -> &Network {
        &self.inner.net
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// This start of the node.
    pub fn incarnation(&self) -> Incarnation {
        self.inner.incarnation
    }

    /// A new unbounded mailbox and its address.
    pub fn new_mailbox(&self) -> (Address, Mailbox) {
        self.new_mailbox_with_capacity(Capacity::UNBOUNDED)
    }

    /// A new mailbox with bounds (see [`Capacity`] for the overflow policy).
    pub fn new_mailbox_with_capacity(&self, capacity: Capacity) -> (Address, Mailbox) {
        // fetch_add makes concurrent creation race-free: every caller gets a
        // distinct serial, and serials never repeat within an incarnation.
        let serial = self.inner.next_serial.fetch_add(1, Ordering::Relaxed);
        let id = MailboxId {
            node: self.inner.id,
            incarnation: self.inner.incarnation,
            serial,
        };
        let shared = Arc::new(MailboxShared::new(
            id,
            Arc::downgrade(&self.inner),
            capacity,
        ));
        self.inner.mailboxes.insert(serial, Arc::downgrade(&shared));
        self.inner
            .counters
            .mailboxes_created
            .fetch_add(1, Ordering::Relaxed);
        (Address::local(shared.clone()), Mailbox::new(shared))
    }

    /// The address of a mailbox id, bound to this node.
    pub fn address_of(&self, id: MailboxId) -> Address {
        self.inner.bind(id)
    }

    /// Runs `f` so that addresses deserialized inside it (from JSON, a file,
    /// …) bind to this node. Messages received from other nodes do this by
    /// themselves.
    ///
    /// ```
    /// use reign_proto::{Address, Incarnation, Node};
    ///
    /// let node = Node::local(Incarnation(1));
    /// let (addr, mailbox) = node.new_mailbox();
    /// let json = serde_json::to_string(&addr).unwrap();
    /// let back: Address = node.bind_scope(|| serde_json::from_str(&json).unwrap());
    /// back.send(1u8).unwrap();
    /// assert_eq!(mailbox.message_count(), 1);
    /// ```
    pub fn bind_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        with_decode_context(&Arc::downgrade(&self.inner), f)
    }

    /// Closes every mailbox of this node (their watchers are notified).
    pub fn close_all_mailboxes(&self) {
        self.inner.close_all_mailboxes();
    }

    /// Mailboxes currently open on this node.
    pub fn mailbox_count(&self) -> usize {
        self.inner.mailboxes.len()
    }

    /// Sends [`ConnectionStatus`] to `watcher` whenever a peer connects or
    /// disconnects (reign's `AddConnectionStatusCallback`). The watch ends
    /// when the watcher's mailbox closes.
    pub fn subscribe_connection_status(&self, watcher: &Address) {
        self.inner
            .status_watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(watcher.clone());
    }

    /// Claims `name` for a mailbox of this node, replacing this node's
    /// previous claimant of the name. Other nodes learn of it as soon as the
    /// claim reaches them ([`sync`](Node::sync) waits for that). Only live
    /// local mailboxes can be registered, with names up to `Tuning::max_name_len`
    /// bytes and at most `Tuning::max_names_per_node` names: anything else is
    /// [`RegistryError::CantRegister`].
    ///
    /// If another node claims the name too, every node resolves the conflict
    /// alike: the claimant with the lowest id (node, incarnation, serial)
    /// wins every lookup, the others wait their turn; every claimant gets a
    /// [`MultipleClaim`] and every node logs the conflict once at WARN.
    ///
    /// ```
    /// use reign_proto::{Incarnation, Node};
    ///
    /// let node = Node::local(Incarnation(1));
    /// let (addr, _mailbox) = node.new_mailbox();
    /// node.register("greeter", &addr).unwrap();
    /// assert_eq!(node.lookup("greeter"), Some(addr.clone()));
    /// node.unregister("greeter", &addr);
    /// assert_eq!(node.lookup("greeter"), None);
    /// ```
    pub fn register(&self, name: &str, address: &Address) -> Result<(), RegistryError> {
        let id = address.id();
        let live = self.inner.local_mailbox(id).is_some_and(|m| !m.is_closed());
        if !live {
            return Err(RegistryError::CantRegister {
                reason: if id.node == self.inner.id {
                    "the mailbox is closed or from an earlier start of this node"
                } else {
                    "the mailbox belongs to another node"
                },
            });
        }
        let effects = lock(&self.inner.registry).register(name, id)?;
        self.inner.apply(effects);
        Ok(())
    }

    /// Drops this node's claim of `name` if `address` holds it; ignored if
    /// it does not.
    pub fn unregister(&self, name: &str, address: &Address) {
        let effects = lock(&self.inner.registry).unregister(name, address.id());
        self.inner.apply(effects);
    }

    /// The claimant of `name`. When several mailboxes (on different nodes)
    /// claim it, the one with the lowest id (node, incarnation, serial), so
    /// every node that sees the same claims sends to the same mailbox.
    pub fn lookup(&self, name: &str) -> Option<Address> {
        let id = lock(&self.inner.registry).lookup(name)?;
        Some(self.inner.bind(id))
    }

    /// Every claimant of `name`, the winner (what [`lookup`](Node::lookup)
    /// returns) first, then by id.
    pub fn lookup_all(&self, name: &str) -> Vec<Address> {
        let ids = lock(&self.inner.registry).lookup_all(name);
        ids.into_iter().map(|id| self.inner.bind(id)).collect()
    }

    /// For each name, whether it has any claimant.
    pub fn seen_names(&self, names: &[&str]) -> Vec<bool> {
        lock(&self.inner.registry).seen_names(names)
    }

    /// Completes once every connected peer has applied this node's registry
    /// changes made before the call (a peer that goes down meanwhile no
    /// longer counts).
    pub fn sync(&self) -> SyncFuture {
        let (seq, effects) = lock(&self.inner.registry).start_sync();
        self.inner.apply(effects);
        SyncFuture {
            node: self.inner.clone(),
            seq,
        }
    }

    /// Makes a mailbox of this node a member of service `group`, with the
    /// default [`Limits`]. Members on every node share the group's requests
    /// (local first, then in turn) and each receives every broadcast.
    pub fn join(&self, group: &str, member: &Address) -> Result<(), RegistryError> {
        self.join_with_limits(group, member, Limits::default())
    }

    /// [`join`](Node::join) with explicit limits for this member.
    pub fn join_with_limits(
        &self,
        group: &str,
        member: &Address,
        limits: Limits,
    ) -> Result<(), RegistryError> {
        let id = self.inner.check_own_live(member)?;
        self.inner.set_gate(id, limits);
        let effects = lock(&self.inner.registry).join(group, id)?;
        self.inner.apply(effects);
        Ok(())
    }

    /// Removes a member from service `group` (a typed error if it is not one).
    pub fn leave(&self, group: &str, member: &Address) -> Result<(), RegistryError> {
        let effects = lock(&self.inner.registry).leave(group, member.id())?;
        self.inner.apply(effects);
        Ok(())
    }

    /// Every member of service `group` this node knows of, local first.
    pub fn members(&self, group: &str) -> Vec<Address> {
        let ids = lock(&self.inner.registry).members(group);
        ids.into_iter().map(|id| self.inner.bind(id)).collect()
    }

    /// Subscribes a mailbox of this node to `topic`, with the default
    /// [`Limits`] (only the byte cap applies to events).
    pub fn subscribe(&self, topic: &str, subscriber: &Address) -> Result<(), RegistryError> {
        self.subscribe_with_limits(topic, subscriber, Limits::default())
    }

    /// [`subscribe`](Node::subscribe) with explicit limits.
    pub fn subscribe_with_limits(
        &self,
        topic: &str,
        subscriber: &Address,
        limits: Limits,
    ) -> Result<(), RegistryError> {
        let id = self.inner.check_own_live(subscriber)?;
        self.inner.set_gate(id, limits);
        let effects = lock(&self.inner.registry).subscribe(topic, id)?;
        self.inner.apply(effects);
        Ok(())
    }

    /// Ends a subscription; [`RegistryError::NotSubscribed`] if there was
    /// none (a mistake on this one call, nothing else is affected).
    pub fn unsubscribe(&self, topic: &str, subscriber: &Address) -> Result<(), RegistryError> {
        let effects = lock(&self.inner.registry).unsubscribe(topic, subscriber.id())?;
        self.inner.apply(effects);
        Ok(())
    }

    /// Sends a request to one member of a service group (a local member if
    /// there is one, otherwise the remote members in turn) or to an address,
    /// and completes with its reply or a [`RequestError`](crate::RequestError).
    /// The core fails it with `Timeout` at `deadline` (at once if it has
    /// passed); the runtime adapters' `request` takes a timeout instead.
    /// The deadline travels with the request: the member reads it
    /// ([`Request::time_remaining`](crate::Request::time_remaining)), and a
    /// request still waiting for a handler slot when it passes never runs.
    /// Dropping the future calls the request off wherever it still waits.
    pub fn request<'a, T>(
        &self,
        target: impl Into<Target<'a>>,
        value: T,
        deadline: std::time::Instant,
    ) -> RequestFuture
    where
        T: std::any::Any + Send + Serialize,
    {
        self.inner.request(target.into(), value, deadline)
    }

    /// Delivers `value` to every member of service `group` on every node:
    /// encoded once, one copy per node on the wire, fanned out there. Order
    /// holds per (sender, receiver). Members over their byte cap miss it
    /// (counted in [`NodeStats::dropped_events`](crate::NodeStats::dropped_events)).
    /// The sender's own mailbox gets it too if it is a member.
    pub fn broadcast<T: std::any::Any + Serialize>(
        &self,
        group: &str,
        value: &T,
    ) -> Result<(), SendError> {
        self.inner
            .publish(crate::codec::frame::PublishScope::Group, group, value)
    }

    /// Delivers `value` to every subscriber of `topic` on every node, like
    /// [`broadcast`](Node::broadcast) (one copy per interested node, order
    /// per publisher and subscriber, self-delivery included).
    pub fn publish<T: std::any::Any + Serialize>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<(), SendError> {
        self.inner
            .publish(crate::codec::frame::PublishScope::Topic, topic, value)
    }

    /// Opens a tunnel to one member of a service group (or to an address);
    /// completes when the member accepts. Drop the future to give up.
    pub fn open_tunnel<'a>(&self, target: impl Into<Target<'a>>) -> OpeningTunnel {
        self.inner.open_tunnel(target.into())
    }

    /// Tunnel ends open on this node.
    pub fn tunnel_count(&self) -> usize {
        self.inner.tunnel_count()
    }

    /// Names claimed more than once right now, as this node sees the
    /// cluster (Go reign's `MultipleClaimCount`: it rises as conflicting
    /// claims appear and falls as they are dropped).
    pub fn multiple_claim_count(&self) -> usize {
        lock(&self.inner.registry).multiple_claim_count()
    }

    /// What `peer` holds in this node's directory, as (names, service group
    /// memberships, topics): each stays within its `Tuning` cap
    /// (`max_names_per_node`, `max_group_members_per_node`,
    /// `max_topics_per_node`), or the peer is cut off.
    pub fn registry_peer_load(&self, peer: NodeId) -> (usize, usize, usize) {
        lock(&self.inner.registry).peer_load(peer)
    }

    /// `MultipleClaim` notices this node has sent its own claimants so far
    /// (only grows; also `stats().multiple_claim_notices`).
    pub fn multiple_claim_notices(&self) -> u64 {
        lock(&self.inner.registry).multiple_claim_notices()
    }

    /// This node's view of the registry (reign's `NamesDebugger`).
    pub fn registry_dump(&self) -> RegistryDump {
        lock(&self.inner.registry).dump()
    }

    /// [`registry_dump`](Node::registry_dump) as pretty JSON.
    pub fn dump_json(&self) -> String {
        serde_json::to_string_pretty(&self.registry_dump()).unwrap_or_default()
    }

    /// Every name and its claimants, as this node sees them.
    pub fn registry_view(&self) -> BTreeMap<String, BTreeSet<MailboxId>> {
        lock(&self.inner.registry).view()
    }

    /// This node's own claims.
    pub fn local_claims(&self) -> BTreeMap<String, MailboxId> {
        lock(&self.inner.registry).local_claims()
    }

    /// Counters and queue depth of every member.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        self.inner.net.outboxes().map(|o| o.stats()).collect()
    }

    /// The other nodes this node counts as cluster members (from its spec,
    /// from a reload, or learned from peers), in id order, connected or not.
    pub fn cluster_members(&self) -> Vec<NodeId> {
        self.inner.net.outboxes().map(|o| o.peer).collect()
    }

    /// Whether a connection to `peer` is up.
    pub fn is_connected(&self, peer: NodeId) -> bool {
        self.inner
            .net
            .outbox(peer)
            .is_some_and(|o| o.lock().connected)
    }

    /// Whether the node has begun shutting down.
    pub fn is_shut_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    /// A snapshot of this node's counters.
    pub fn stats(&self) -> crate::stats::NodeStats {
        self.inner.counters.snapshot()
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .field("incarnation", &self.inner.incarnation)
            .finish()
    }
}

/// The future of [`Node::sync`].
#[must_use = "futures do nothing unless polled"]
pub struct SyncFuture {
    node: Arc<NodeInner>,
    seq: u64,
}

impl SyncFuture {
    /// Whether the sync has completed (for callers that poll by hand, such
    /// as simulations).
    pub fn is_done(&self) -> bool {
        lock(&self.node.syncs).done.contains(&self.seq)
    }
}

impl Future for SyncFuture {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut book = lock(&self.node.syncs);
        if book.done.remove(&self.seq) {
            return Poll::Ready(());
        }
        book.waiting.insert(self.seq, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SyncFuture {
    fn drop(&mut self) {
        let mut book = lock(&self.node.syncs);
        book.done.remove(&self.seq);
        book.waiting.remove(&self.seq);
    }
}
