//! The user's handle on a node: creates mailboxes, binds addresses, and is
//! shared between user threads and the node's driver. Also the remote half
//! of raw byte sends ([`Address::send_bytes`] and its batch), which queue
//! their payloads as they are, with no serde pass.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::node::SyncFuture;
use crate::poison::lock;

use crate::error::{BatchError, SendError};
use crate::id::{Incarnation, MailboxId, NodeId};
use crate::node::address::{with_decode_context, Address};
use crate::node::mailbox::{Capacity, Mailbox, MailboxShared};
use crate::node::message::RAW_BYTES_TAG;
use crate::node::outbox::{Network, PeerStats, Refused};
use crate::node::services::{Limits, RequestFuture, RequestTables, Target};
use crate::node::tunnel::OpeningTunnel;
use crate::node::NodeInner;
use crate::registry::{RegistryDump, RegistryError};

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
        // No peers and no outbound queues; tunnels between its own
        // mailboxes still take messages up to the default maximum.
        let max_message_len = crate::spec::Tuning::default().max_message_len;
        Node::networked(id, incarnation, Network::new([], 0, 0, max_message_len))
    }

    pub(crate) fn networked(id: NodeId, incarnation: Incarnation, net: Network) -> Node {
        let inner = NodeInner::new(id, incarnation, net);
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

    /// A new unbounded mailbox for `T`s and its typed address (see
    /// [`typed`](crate::typed)): the compiler checks what is sent to it.
    pub fn new_typed_mailbox<T: crate::typed::Payload>(
        &self,
    ) -> (crate::TypedAddress<T>, crate::TypedMailbox<T>) {
        let (address, mailbox) = self.new_mailbox();
        (
            crate::TypedAddress::new(address),
            crate::TypedMailbox::new(mailbox),
        )
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

    /// Closes every mailbox of this node with [`ExitReason::NodeShutdown`](crate::ExitReason::NodeShutdown)
    /// (their watchers are notified, their tasks end), as a shutdown does.
    pub fn close_all_mailboxes(&self) {
        self.inner.close_all_mailboxes();
    }

    /// Mailboxes currently open on this node.
    pub fn mailbox_count(&self) -> usize {
        self.inner.mailboxes.len()
    }

    /// Sends [`ConnectionStatus`](crate::system::ConnectionStatus) to `watcher` whenever a peer connects or
    /// disconnects (reign's `AddConnectionStatusCallback`). The watch ends
    /// when the watcher's mailbox closes.
    pub fn subscribe_connection_status(&self, watcher: &Address) {
        lock(&self.inner.status_watchers).push(watcher.clone());
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
    /// [`MultipleClaim`](crate::system::MultipleClaim) and every node logs the conflict once at WARN.
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
        let id = self.inner.check_own_live(address)?;
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
    ///
    /// What it waits for: one round trip to each peer connected at the
    /// call, all at once, so the slowest of them. The node sends each a
    /// sync request on the same ordered link as its claims, and the peer
    /// answers once it has applied everything before it. So after `sync`,
    /// a [`lookup`](Node::lookup) on any of those peers sees this node's
    /// registrations and unregistrations (group joins and subscriptions
    /// too). It does not wait for nodes that are not connected (they get
    /// this node's claims in the snapshot when they connect), nor for other
    /// nodes' changes to reach this one. With no peer connected it
    /// completes at once.
    pub fn sync(&self) -> SyncFuture {
        self.inner.start_sync()
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

    /// A typed [`request`](Node::request): sends a `Q` and completes with
    /// its [`Call::Reply`](crate::Call::Reply), or
    /// [`RequestError::UnexpectedReply`](crate::RequestError::UnexpectedReply)
    /// if the member answered with another type. The runtime adapters'
    /// `call` takes a timeout instead of a deadline.
    pub fn call<'a, Q: crate::Call>(
        &self,
        target: impl Into<Target<'a>>,
        request: Q,
        deadline: std::time::Instant,
    ) -> impl std::future::Future<Output = Result<Q::Reply, crate::RequestError>> + Send + 'static
    {
        let reply = self.request(target, request, deadline);
        async move { crate::typed::reply_as::<Q::Reply>(reply.await?) }
    }

    /// Delivers `value` to every member of service `group` on every node:
    /// encoded once, one copy per node on the wire, fanned out there. Order
    /// holds per (sender, receiver). Members over their byte cap miss it
    /// (counted in [`NodeStats::dropped_events`](crate::NodeStats::dropped_events)).
    /// The sender's own mailbox gets it too if it is a member. Takes the
    /// value like [`Address::send`](crate::Address::send) does (see the
    /// crate docs' *One call style*).
    pub fn broadcast<T: std::any::Any + Serialize>(
        &self,
        group: &str,
        value: T,
    ) -> Result<(), SendError> {
        self.inner
            .publish(crate::codec::frame::PublishScope::Group, group, &value)
    }

    /// Delivers `value` to every subscriber of `topic` on every node, like
    /// [`broadcast`](Node::broadcast) (one copy per interested node, order
    /// per publisher and subscriber, self-delivery included).
    pub fn publish<T: std::any::Any + Serialize>(
        &self,
        topic: &str,
        value: T,
    ) -> Result<(), SendError> {
        self.inner
            .publish(crate::codec::frame::PublishScope::Topic, topic, &value)
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

    /// Every service group and its members, as this node sees them.
    pub fn group_view(&self) -> BTreeMap<String, BTreeSet<MailboxId>> {
        lock(&self.inner.registry).group_view()
    }

    /// Which nodes (this one included) have subscribers, per topic.
    pub fn topic_view(&self) -> BTreeMap<String, BTreeSet<NodeId>> {
        lock(&self.inner.registry).topic_view()
    }

    /// The `n` open mailboxes of this node with the most queued bytes
    /// (then messages), as (id, messages, bytes), largest first.
    pub fn largest_mailboxes(&self, n: usize) -> Vec<(MailboxId, usize, usize)> {
        self.inner.mailboxes.largest(n)
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

    /// Counts a child restarted by a supervisor running on this node, in
    /// [`NodeStats::supervisor_restarts`](crate::NodeStats::supervisor_restarts).
    /// The driver's supervisors call it at each restart; a supervisor
    /// written by hand may too.
    pub fn count_supervisor_restart(&self) {
        self.inner
            .counters
            .supervisor_restarts
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an inline receive that fed the core input, in
    /// [`NodeStats::inline_receives`](crate::NodeStats::inline_receives).
    /// The driver calls it.
    pub fn count_inline_receive(&self) {
        self.inner
            .counters
            .inline_receives
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a supervisor of this node that exceeded its restart
    /// intensity and gave up, in
    /// [`NodeStats::supervisor_escalations`](crate::NodeStats::supervisor_escalations).
    pub fn count_supervisor_escalation(&self) {
        self.inner
            .counters
            .supervisor_escalations
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The sizes of this node's request tables: replies it waits for,
    /// requests queued for its members' handler slots, slots in use. All
    /// zero on an idle node, however its callers gave up.
    pub fn request_tables(&self) -> RequestTables {
        self.inner.services().tables()
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

impl NodeInner {
    /// Sends raw payloads to a mailbox of another node, in order: checks
    /// each length against the maximum message size, then queues the
    /// prefix that fits under one lock of the peer's queue and wakes the
    /// core (or transmits inline) once. Errors as
    /// [`send_remote`](NodeInner::send_remote), with how many were taken.
    pub(crate) fn send_bytes_remote(
        &self,
        dest: MailboxId,
        batch: &[Bytes],
    ) -> Result<(), BatchError> {
        let fail = |sent, error| Err(BatchError { sent, error });
        if self.shutting_down.load(Ordering::Relaxed) {
            return fail(0, SendError::NodeShutdown);
        }
        let max = self.net.max_message_len;
        let fits = batch
            .iter()
            .position(|b| b.len() > max)
            .unwrap_or(batch.len());
        let too_large = |sent: usize| match batch.get(sent) {
            Some(over) => fail(
                sent,
                SendError::TooLarge {
                    len: over.len(),
                    max,
                },
            ),
            None => Ok(()),
        };
        let count = |n: usize| n as u64;
        let Some(outbox) = self.net.outbox(dest.node) else {
            self.counters
                .dropped_unreachable
                .fetch_add(count(fits), Ordering::Relaxed);
            return too_large(fits);
        };
        let (taken, refused) = if fits == 0 {
            (0, None)
        } else {
            self.net
                .push_raw_batch(outbox, dest, RAW_BYTES_TAG, &batch[..fits])
        };
        if taken > 0 {
            self.counters
                .remote_sent
                .fetch_add(count(taken), Ordering::Relaxed);
            outbox
                .counters
                .messages_out
                .fetch_add(count(taken), Ordering::Relaxed);
        }
        match refused {
            None => too_large(fits),
            // The node began shutting down while this send was under way,
            // and its link is already closed: not accepted.
            Some(Refused::Unreachable) if self.shutting_down.load(Ordering::Relaxed) => {
                fail(taken, SendError::NodeShutdown)
            }
            Some(Refused::Unreachable) => {
                // Dropped as a send to a down node is: at most once, `Ok`.
                let dropped = count(fits - taken);
                self.counters
                    .dropped_unreachable
                    .fetch_add(dropped, Ordering::Relaxed);
                outbox
                    .counters
                    .dropped_unreachable
                    .fetch_add(dropped, Ordering::Relaxed);
                too_large(fits)
            }
            Some(Refused::Full) => {
                self.counters
                    .dropped_outbound_full
                    .fetch_add(1, Ordering::Relaxed);
                outbox.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                fail(taken, SendError::Full)
            }
        }
    }
}
