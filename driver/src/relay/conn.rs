//! One Iris client attached to a relay: its handshake, the packets it
//! sends, what the cluster delivers to it, and its end.
//!
//! The reading task decodes one packet at a time and acts on it without
//! waiting (requests and tunnel opens get tasks of their own, chunks go to
//! their tunnel's queue), so packets are handled in the order they were
//! sent and a slow operation never stalls the others. What the cluster
//! delivers — requests and broadcasts to a registered client (its member
//! mailbox), events (a mailbox per subscription), replies, tunnel chunks —
//! goes out through the client's [`Outbox`].
//!
//! A client ends in one of three ways: it closes (`opClose`: the relay
//! leaves its cluster and topics, closes its tunnels and echoes `opClose("")`),
//! it goes away (end of stream or a socket error: the same clean-up, no
//! echo), or it is dropped (a protocol violation, an unconfirmed tunnel,
//! the node shutting down, the relay stopping: `opClose(reason)` and one
//! WARN line). Every task a client starts ends with it: each races its
//! work against the client's `closing` channel, closed at the end.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use reign_proto::poison::lock;
use reign_proto::{
    Address, IncomingTunnel, Limits, Mailbox, Message, Request, RequestError, Responder,
};
use serde_bytes::ByteBuf;

use super::outbox::Outbox;
use super::tunnel::{Tunnels, CHUNK_LIMIT, TUNNEL_CONFIRM_TIMEOUT};
use super::wire::{self, Packet, Reader, WireError};
use super::{
    ClientLoad, IrisRequest, RelayShared, HANDSHAKE_TIMEOUT, MAX_FAULT, MAX_HANDSHAKE_STRING,
    MAX_PAYLOAD, MAX_PENDING_REQUESTS, MAX_SUBSCRIPTIONS, MEMBER_MAX_IN_FLIGHT,
    MEMBER_MAX_QUEUED_BYTES, NO_MEMBER_RETRY,
};
use crate::runtime::Runtime;
use crate::signal::{race, Either};
use crate::Reign;

/// The longest cluster or topic name read from a client. Names longer
/// than the node's `max_name_len` (255 bytes by default) are refused by
/// the directory with its own error; this only bounds the read.
pub const MAX_NAME_FIELD: usize = 4 << 10;

/// A request's outcome, as the caller's binding gets it.
enum Outcome {
    Reply(Vec<u8>),
    Fault(String),
    Timeout,
}

/// How a client's connection ended.
enum End {
    /// It sent `opClose`: echo `opClose("")`.
    Graceful,
    /// It went away: nothing to send.
    Gone(String),
    /// The relay drops it: `opClose(reason)`.
    Dropped(String),
}

/// Requests delivered to a registered client that wait for its reply, by
/// the relay's request id, with their deadlines.
#[derive(Default)]
struct Replies {
    next: u64,
    waiting: HashMap<u64, Responder>,
    deadlines: BTreeSet<(Instant, u64)>,
}

impl Replies {
    fn insert(&mut self, responder: Responder) -> u64 {
        let id = self.next;
        self.next += 1;
        self.deadlines.insert((responder.deadline(), id));
        self.waiting.insert(id, responder);
        id
    }

    fn take(&mut self, id: u64) -> Option<Responder> {
        let responder = self.waiting.remove(&id)?;
        self.deadlines.remove(&(responder.deadline(), id));
        Some(responder)
    }

    /// Drops the reply slots whose deadline has passed (the caller has
    /// its timeout; the member's handler slot comes back).
    fn purge(&mut self, now: Instant) -> Vec<Responder> {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.remove(&(deadline, id));
            expired.extend(self.waiting.remove(&id));
        }
        expired
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }
}

/// A subscription: its mailbox's address and the stop of its task.
struct Sub {
    address: Address,
    stop: async_channel::Sender<()>,
}

/// One attached client.
pub(crate) struct Client<R: Runtime> {
    pub(crate) node: Reign<R>,
    pub(crate) relay: Arc<RelayShared>,
    pub(crate) id: u64,
    peer: String,
    pub(crate) out: Arc<Outbox>,
    kill_tx: async_channel::Sender<String>,
    kill_rx: async_channel::Receiver<String>,
    closing_tx: Mutex<Option<async_channel::Sender<()>>>,
    closing_rx: async_channel::Receiver<()>,
    pub(crate) tunnels: Mutex<Tunnels<R>>,
    pending: AtomicUsize,
    overload_logged: AtomicBool,
    replies: Mutex<Replies>,
    subs: Mutex<HashMap<String, Sub>>,
    member: Mutex<Option<(String, Address)>>,
}

impl<R: Runtime> Client<R> {
    pub(crate) fn new(
        node: Reign<R>,
        relay: Arc<RelayShared>,
        id: u64,
        peer: String,
    ) -> Arc<Client<R>> {
        let (kill_tx, kill_rx) = async_channel::bounded(1);
        let (closing_tx, closing_rx) = async_channel::bounded(1);
        let client = Arc::new(Client {
            node,
            relay,
            id,
            peer,
            out: Outbox::new(),
            kill_tx,
            kill_rx,
            closing_tx: Mutex::new(Some(closing_tx)),
            closing_rx,
            tunnels: Mutex::new(Tunnels::default()),
            pending: AtomicUsize::new(0),
            overload_logged: AtomicBool::new(false),
            replies: Mutex::new(Replies::default()),
            subs: Mutex::new(HashMap::new()),
            member: Mutex::new(None),
        });
        let state: Weak<dyn ClientLoad> = Arc::downgrade(&client) as Weak<dyn ClientLoad>;
        lock(&client.relay.states).insert(id, state);
        client
    }

    /// Completes when the client's connection has ended.
    pub(crate) async fn closing(&self) {
        let _ = self.closing_rx.recv().await;
    }

    /// Drops the client with `reason` (the first reason wins).
    pub(crate) fn kill(&self, reason: String) {
        let _ = self.kill_tx.try_send(reason);
    }

    /// Queues a packet for the client.
    pub(crate) fn push(&self, packet: &[u8]) {
        self.out.push(packet);
    }

    /// Serves the client until its connection ends.
    pub(crate) async fn serve(self: Arc<Self>, reader: R::Reader, writer: R::Writer) {
        let rt = self.node.rt.clone();
        self.node
            .rt
            .spawn(self.out.clone().run_writer::<R>(writer, rt));
        let mut rd = Reader::<R>::new(reader);
        let handshake = race(
            Self::handshake(&mut rd),
            self.node.rt.sleep(HANDSHAKE_TIMEOUT),
        )
        .await;
        let cluster = match handshake {
            Either::Left(Ok(Ok(cluster))) => cluster,
            Either::Left(Ok(Err(deny))) => {
                tracing::info!(client = self.id, peer = %self.peer, "Iris client refused: {deny}");
                self.out.finish(Some(
                    &Packet::new(wire::OP_DENY)
                        .string(wire::RELAY_MAGIC)
                        .string(&deny)
                        .finish(),
                ));
                return;
            }
            Either::Left(Err(e)) => {
                self.drop_line(&format!("handshake failed: {e}"));
                self.out.finish(None);
                return;
            }
            Either::Right(()) => {
                self.drop_line(&format!("no handshake within {HANDSHAKE_TIMEOUT:?}"));
                self.out.finish(None);
                return;
            }
        };
        let mut inbox = None;
        if !cluster.is_empty() {
            let (address, mailbox) = self.node.new_mailbox();
            let limits = Limits {
                max_in_flight: MEMBER_MAX_IN_FLIGHT,
                max_queued_bytes: MEMBER_MAX_QUEUED_BYTES,
            };
            if let Err(e) = self.node.join_with_limits(&cluster, &address, limits) {
                let deny = format!("cannot register as a member of {cluster:?}: {e}");
                tracing::info!(client = self.id, peer = %self.peer, "Iris client refused: {deny}");
                self.out.finish(Some(
                    &Packet::new(wire::OP_DENY)
                        .string(wire::RELAY_MAGIC)
                        .string(&deny)
                        .finish(),
                ));
                return;
            }
            *lock(&self.member) = Some((cluster.clone(), address));
            inbox = Some(mailbox);
        }
        self.push(
            &Packet::new(wire::OP_INIT)
                .string(wire::RELAY_MAGIC)
                .string(wire::PROTOCOL_VERSION)
                .finish(),
        );
        tracing::debug!(client = self.id, peer = %self.peer, cluster, "Iris client attached");
        if let Some(mailbox) = inbox {
            let client = self.clone();
            self.node.rt.spawn(async move {
                let _ = race(client.inbox(mailbox), client.closing()).await;
            });
        }
        let end = loop {
            let stop = race(
                self.kill_rx.recv(),
                race(self.relay.stopped.recv(), self.node.stopped()),
            );
            match race(self.read_packet(&mut rd), stop).await {
                Either::Left(Ok(true)) => continue,
                Either::Left(Ok(false)) => break End::Graceful,
                Either::Left(Err(WireError::Eof)) => break End::Gone("end of stream".into()),
                Either::Left(Err(WireError::Io(e))) => break End::Gone(e.to_string()),
                Either::Left(Err(WireError::Violation(why))) => {
                    break End::Dropped(format!("protocol violation: {why}"))
                }
                Either::Right(Either::Left(Ok(reason))) => break End::Dropped(reason),
                Either::Right(Either::Right(Either::Right(()))) => {
                    break End::Dropped("the node is shutting down".into())
                }
                Either::Right(_) => break End::Dropped("the relay stopped".into()),
            }
        };
        self.clean_up();
        match end {
            End::Graceful => {
                tracing::debug!(client = self.id, "Iris client detached");
                self.out
                    .finish(Some(&Packet::new(wire::OP_CLOSE).string("").finish()));
            }
            End::Gone(why) => {
                tracing::debug!(client = self.id, why, "Iris client went away");
                self.out.finish(None);
            }
            End::Dropped(reason) => {
                self.drop_line(&reason);
                self.out
                    .finish(Some(&Packet::new(wire::OP_CLOSE).string(&reason).finish()));
            }
        }
    }

    /// The one log line of a dropped client.
    fn drop_line(&self, reason: &str) {
        self.relay.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            node = self.node.id().0,
            client = self.id,
            peer = %self.peer,
            "Iris client dropped: {reason}"
        );
    }

    /// Reads the init packet: `Ok(Ok(cluster))` to accept, `Ok(Err(text))`
    /// to deny (another protocol version), `Err` to drop.
    async fn handshake(rd: &mut Reader<R>) -> Result<Result<String, String>, WireError> {
        let op = rd.byte().await?;
        if op != wire::OP_INIT {
            return Err(WireError::Violation(format!(
                "the first packet is opcode {op:#04x}, not init"
            )));
        }
        let magic = rd.string(MAX_HANDSHAKE_STRING, "magic string").await?;
        if magic != wire::CLIENT_MAGIC {
            return Err(WireError::Violation(format!("bad magic string {magic:?}")));
        }
        let version = rd.string(MAX_HANDSHAKE_STRING, "protocol version").await?;
        if version != wire::PROTOCOL_VERSION {
            return Ok(Err(format!(
                "Unsupported protocol. Client: {version}. Iris: {}.",
                wire::PROTOCOL_VERSION
            )));
        }
        let cluster = rd.string(MAX_NAME_FIELD, "cluster name").await?;
        Ok(Ok(cluster))
    }

    /// Reads and acts on one packet; `false` after `opClose`.
    async fn read_packet(self: &Arc<Self>, rd: &mut Reader<R>) -> Result<bool, WireError> {
        let op = rd.byte().await?;
        match op {
            wire::OP_CLOSE => return Ok(false),
            wire::OP_BROADCAST => {
                let cluster = rd.string(MAX_NAME_FIELD, "cluster name").await?;
                let message = rd.binary(MAX_PAYLOAD, "broadcast").await?;
                if let Err(e) = self.node.broadcast(&cluster, ByteBuf::from(message)) {
                    tracing::debug!(client = self.id, error = %e, "broadcast not sent");
                }
            }
            wire::OP_REQUEST => {
                let id = rd.varint().await?;
                let cluster = rd.string(MAX_NAME_FIELD, "cluster name").await?;
                let request = rd.binary(MAX_PAYLOAD, "request").await?;
                let timeout_ms = rd.varint().await?;
                if !self.request(id, cluster, request, timeout_ms) {
                    // Over the cap: answered at once, after waiting for
                    // room like any other reply, so a client that floods
                    // requests and reads nothing stalls its own reading
                    // instead of growing its outbox.
                    if self.out.room().await {
                        self.push(&reply_packet(id, Outcome::Timeout));
                    }
                }
            }
            wire::OP_REPLY => {
                let id = rd.varint().await?;
                let result = if rd.bool().await? {
                    Ok(rd.binary(MAX_PAYLOAD, "reply").await?)
                } else {
                    Err(rd.string(MAX_FAULT, "reply fault").await?)
                };
                let responder = lock(&self.replies).take(id);
                // Unknown: answered already or past its deadline (dropped).
                if let Some(responder) = responder {
                    let _ = match result {
                        Ok(reply) => responder.reply(ByteBuf::from(reply)),
                        Err(fault) => responder.reply_error(fault),
                    };
                }
            }
            wire::OP_SUBSCRIBE => {
                let topic = rd.string(MAX_NAME_FIELD, "topic name").await?;
                self.subscribe(topic);
            }
            wire::OP_UNSUBSCRIBE => {
                let topic = rd.string(MAX_NAME_FIELD, "topic name").await?;
                self.unsubscribe(&topic);
            }
            wire::OP_PUBLISH => {
                let topic = rd.string(MAX_NAME_FIELD, "topic name").await?;
                let event = rd.binary(MAX_PAYLOAD, "event").await?;
                if let Err(e) = self.node.publish(&topic, ByteBuf::from(event)) {
                    tracing::debug!(client = self.id, error = %e, "event not published");
                }
            }
            wire::OP_TUN_INIT => {
                let id = rd.varint().await?;
                let cluster = rd.string(MAX_NAME_FIELD, "cluster name").await?;
                let timeout_ms = rd.varint().await?;
                if !self.tunnel_init(id, cluster, capped_millis(timeout_ms)) {
                    // Over the cap: refused at once (Iris reports every
                    // failed open as a timeout), after waiting for room as
                    // an over-cap request's answer does.
                    if self.out.room().await {
                        self.push(
                            &Packet::new(wire::OP_TUN_CONFIRM)
                                .varint(id)
                                .bool(true)
                                .finish(),
                        );
                    }
                }
            }
            wire::OP_TUN_CONFIRM => {
                let build = rd.varint().await?;
                let id = rd.varint().await?;
                self.tunnel_confirm(build, id);
            }
            wire::OP_TUN_ALLOW => {
                let id = rd.varint().await?;
                let space = rd.varint().await?;
                self.tunnel_allow(id, space);
            }
            wire::OP_TUN_TRANSFER => {
                let id = rd.varint().await?;
                let size_or_cont = rd.varint().await?;
                let chunk = rd.binary(CHUNK_LIMIT, "tunnel chunk").await?;
                self.tunnel_transfer(id, size_or_cont, &chunk);
            }
            wire::OP_TUN_CLOSE => {
                let id = rd.varint().await?;
                self.tunnel_close(id);
            }
            op => {
                return Err(WireError::Violation(format!("unknown opcode {op:#04x}")));
            }
        }
        Ok(true)
    }

    /// A request from the client: sent to a member of `cluster`, answered
    /// with the reply, the member's error, or a timeout at the deadline.
    /// `false` when the client has [`MAX_PENDING_REQUESTS`] waiting already:
    /// the caller answers it as timed out at once.
    fn request(
        self: &Arc<Self>,
        id: u64,
        cluster: String,
        payload: Vec<u8>,
        timeout_ms: u64,
    ) -> bool {
        if self.pending.fetch_add(1, Ordering::Relaxed) >= MAX_PENDING_REQUESTS {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            if !self.overload_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    node = self.node.id().0,
                    client = self.id,
                    peer = %self.peer,
                    "Iris client has {MAX_PENDING_REQUESTS} requests waiting; \
                     further ones are answered as timed out (logged once per client)"
                );
            }
            return false;
        }
        let client = self.clone();
        self.node.rt.spawn(async move {
            let outcome = race(client.call(&cluster, payload, timeout_ms), client.closing()).await;
            client.pending.fetch_sub(1, Ordering::Relaxed);
            if let Either::Left(outcome) = outcome {
                if client.out.room().await {
                    client.push(&reply_packet(id, outcome));
                }
            }
        });
        true
    }

    async fn call(&self, cluster: &str, payload: Vec<u8>, timeout_ms: u64) -> Outcome {
        let deadline = Instant::now() + capped_millis(timeout_ms);
        let request = IrisRequest {
            timeout_ms,
            payload: ByteBuf::from(payload),
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Outcome::Timeout;
            }
            let Some(member) = self.relay.pick_member(&self.node, cluster) else {
                // Perhaps a member registered on another node that this
                // node's directory has not heard of yet.
                self.node.rt.sleep(left.min(NO_MEMBER_RETRY)).await;
                continue;
            };
            match self.node.request(&member, request.clone(), left).await {
                Ok(reply) => return reply_outcome(reply),
                Err(RequestError::Remote(fault)) if fault.is_empty() => {
                    // An empty fault reads as a timeout in Iris bindings.
                    return Outcome::Fault("remote error".into());
                }
                Err(RequestError::Remote(fault)) => return Outcome::Fault(fault),
                Err(RequestError::Timeout) => return Outcome::Timeout,
                Err(RequestError::NoMember) => {
                    // The member left since the directory listed it.
                    self.node.rt.sleep(left.min(NO_MEMBER_RETRY)).await;
                }
                Err(e) => {
                    // Iris drops what it cannot deliver; the caller learns
                    // of it at its deadline.
                    tracing::debug!(client = self.id, error = %e, "request failed");
                    self.node.rt.sleep_until(deadline).await;
                    return Outcome::Timeout;
                }
            }
        }
    }

    /// Delivers what the cluster sends a registered client: requests,
    /// broadcasts, offered tunnels.
    async fn inbox(self: &Arc<Self>, mailbox: Mailbox) {
        loop {
            let next = lock(&self.replies).next_deadline();
            let rt = self.node.rt.clone();
            let expiry = async move {
                match next {
                    Some(at) => rt.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            match race(mailbox.recv(), expiry).await {
                Either::Right(()) => {
                    let expired = lock(&self.replies).purge(Instant::now());
                    drop(expired);
                }
                Either::Left(Err(_)) => {
                    self.kill("the node is shutting down".into());
                    return;
                }
                Either::Left(Ok(message)) => self.deliver(message).await,
            }
        }
    }

    async fn deliver(self: &Arc<Self>, message: Message) {
        if message.is::<Request>() {
            let Ok(request) = message.take::<Request>() else {
                return;
            };
            let remaining = request.time_remaining();
            let (payload, responder) = request.into_parts();
            let (bytes, timeout_ms) = match payload.downcast::<IrisRequest>() {
                Ok(r) => (r.payload.into_vec(), r.timeout_ms),
                Err(payload) => match payload.downcast::<ByteBuf>() {
                    // A reign caller: its deadline is what remains.
                    Ok(b) => (b.into_vec(), ceil_millis(remaining)),
                    Err(other) => {
                        let _ = responder.reply_error(format!(
                            "an Iris service takes bytes, not {}",
                            other.type_name().unwrap_or("this type")
                        ));
                        return;
                    }
                },
            };
            if !self.out.room().await {
                return;
            }
            let id = lock(&self.replies).insert(responder);
            self.push(
                &Packet::new(wire::OP_REQUEST)
                    .varint(id)
                    .binary(&bytes)
                    .varint(timeout_ms)
                    .finish(),
            );
        } else if message.is::<IncomingTunnel>() {
            let Ok(incoming) = message.take::<IncomingTunnel>() else {
                return;
            };
            let build = {
                let mut tunnels = lock(&self.tunnels);
                if !tunnels.has_room() {
                    drop(tunnels);
                    incoming.reject("the Iris client has too many tunnels");
                    return;
                }
                tunnels.offer(incoming)
            };
            self.push(
                &Packet::new(wire::OP_TUN_INIT)
                    .varint(build)
                    .varint(CHUNK_LIMIT as u64)
                    .finish(),
            );
            let client = self.clone();
            self.node.rt.spawn(async move {
                let timer = client.node.rt.sleep(TUNNEL_CONFIRM_TIMEOUT);
                if let Either::Left(()) = race(timer, client.closing()).await {
                    if lock(&client.tunnels).building.contains_key(&build) {
                        client.kill(format!(
                            "an inbound tunnel was not confirmed within {TUNNEL_CONFIRM_TIMEOUT:?}"
                        ));
                    }
                }
            });
        } else {
            match message.downcast::<ByteBuf>() {
                Ok(broadcast) => {
                    if self.out.room().await {
                        self.push(&Packet::new(wire::OP_BROADCAST).binary(&broadcast).finish());
                    }
                }
                Err(other) => tracing::debug!(
                    client = self.id,
                    kind = other.type_name().unwrap_or("unknown"),
                    "a message an Iris service cannot take was ignored"
                ),
            }
        }
    }

    fn subscribe(self: &Arc<Self>, topic: String) {
        let mut subs = lock(&self.subs);
        if subs.contains_key(&topic) {
            return;
        }
        if subs.len() >= MAX_SUBSCRIPTIONS {
            drop(subs);
            self.kill(format!("over {MAX_SUBSCRIPTIONS} subscriptions"));
            return;
        }
        let (address, mailbox) = self.node.new_mailbox();
        let limits = Limits {
            max_in_flight: 1,
            max_queued_bytes: MEMBER_MAX_QUEUED_BYTES,
        };
        if let Err(e) = self.node.subscribe_with_limits(&topic, &address, limits) {
            drop(subs);
            self.kill(format!("cannot subscribe to {topic:?}: {e}"));
            return;
        }
        let (stop, stopped) = async_channel::bounded::<()>(1);
        subs.insert(topic.clone(), Sub { address, stop });
        drop(subs);
        let client = self.clone();
        self.node.rt.spawn(async move {
            let forward = async {
                while let Ok(message) = mailbox.recv().await {
                    let Ok(event) = message.downcast::<ByteBuf>() else {
                        continue;
                    };
                    if !client.out.room().await {
                        return;
                    }
                    client.push(
                        &Packet::new(wire::OP_PUBLISH)
                            .string(&topic)
                            .binary(&event)
                            .finish(),
                    );
                }
            };
            let _ = race(forward, race(stopped.recv(), client.closing())).await;
        });
    }

    fn unsubscribe(&self, topic: &str) {
        let sub = lock(&self.subs).remove(topic);
        match sub {
            Some(sub) => {
                let _ = self.node.unsubscribe(topic, &sub.address);
                sub.stop.close();
            }
            // Iris drops a client whose unsubscription fails.
            None => self.kill(format!(
                "unsubscribe from {topic:?}, which it is not subscribed to"
            )),
        }
    }

    /// Leaves the cluster and the topics, and ends every task of the client.
    fn clean_up(&self) {
        if let Some((cluster, address)) = lock(&self.member).take() {
            let _ = self.node.leave(&cluster, &address);
        }
        let subs: Vec<(String, Sub)> = lock(&self.subs).drain().collect();
        for (topic, sub) in subs {
            let _ = self.node.unsubscribe(&topic, &sub.address);
            sub.stop.close();
        }
        lock(&self.closing_tx).take();
        let tunnels = std::mem::take(&mut *lock(&self.tunnels));
        drop(tunnels);
        let replies = std::mem::take(&mut *lock(&self.replies));
        drop(replies);
    }
}

impl<R: Runtime> ClientLoad for Client<R> {
    fn add_to(&self, stats: &mut super::RelayStats) {
        stats.pending_requests += self.pending.load(Ordering::Relaxed);
        stats.subscriptions += lock(&self.subs).len();
        stats.tunnels += lock(&self.tunnels).count();
        stats.queued_bytes += self.out.queued();
    }
}

impl<R: Runtime> Drop for Client<R> {
    /// The client's state is freed: it leaves the relay's count.
    fn drop(&mut self) {
        lock(&self.relay.states).remove(&self.id);
    }
}

/// The `opReply` packet of an outcome.
fn reply_packet(id: u64, outcome: Outcome) -> Vec<u8> {
    let packet = Packet::new(wire::OP_REPLY).varint(id);
    match outcome {
        Outcome::Timeout => packet.bool(true),
        Outcome::Reply(bytes) => packet.bool(false).bool(true).binary(&bytes),
        Outcome::Fault(fault) => packet.bool(false).bool(false).string(&fault),
    }
    .finish()
}

/// A member's reply as an Iris outcome: bytes, or a string (reign members
/// may answer with either); other types are a fault.
fn reply_outcome(reply: Message) -> Outcome {
    match reply.downcast::<ByteBuf>() {
        Ok(bytes) => Outcome::Reply(bytes.into_vec()),
        Err(reply) => match reply.downcast::<String>() {
            Ok(text) => Outcome::Reply(text.into_bytes()),
            Err(other) => Outcome::Fault(format!(
                "the member replied with {}, not bytes",
                other.type_name().unwrap_or("an unknown type")
            )),
        },
    }
}

/// A client's millisecond timeout, capped at reign's longest.
fn capped_millis(ms: u64) -> Duration {
    Duration::from_millis(ms).min(reign_proto::services::MAX_REQUEST_TIMEOUT)
}

/// A time remaining in whole milliseconds, rounded up (at least 1: Iris
/// bindings refuse less).
fn ceil_millis(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}
