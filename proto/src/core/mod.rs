//! The Sans-IO node state machine.
//!
//! [`Core`] owns every connection of a node: the rustls session, the frame
//! decoder, the handshake, pings and deadlines, reconnection backoff, and the
//! draining of outbound queues. It never touches a socket or a clock: the
//! driver feeds it [`Input`]s with the current time and carries out the
//! [`Output`]s it polls, sleeping until [`Core::poll_timeout`].
//!
//! ```text
//! driver                              core
//!   | accept(now, label) -----------> |  new inbound connection
//!   | handle_input(now, Received) --> |  ciphertext from a socket
//!   | handle_input(now, Timeout) ---> |  pings, deadlines, redials
//!   | poll_output(now) <------------- |  Transmit / Connect / Close / Event
//!   | poll_timeout() <--------------- |  when to call again
//! ```

mod backoff;
mod conn;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::time_provider::TimeProvider;

pub use backoff::Backoff;
pub use conn::ConnId;
use conn::{Conn, Phase};

use crate::codec::frame::{self, FrameError};
use crate::codec::{Frame, FRAGMENT_LEN};
use crate::handshake::{self, Handshake, Hello, Role, Step};
use crate::id::{Incarnation, MailboxId, NodeId};
use crate::message::Message;
use crate::net::{Network, WakeSignal};
use crate::node::Node;
use crate::rng::Rng;
use crate::spec::{NodeDescriptor, ResolvedSpec, SpecError, Tuning};
use crate::tls::TlsContext;
use crate::types::{self, TypeTag};

/// How closes the peer asked for begin (not protocol errors).
const GOODBYE: &str = "peer said goodbye";
/// The reason a redundant connection closes.
const DUPLICATE: &str = "duplicate connection";

/// Core-generated frames (pongs, sync replies, …) that may wait for a peer
/// that does not read before its connection is closed.
const MAX_CONTROL_BACKLOG: usize = 8 << 20;

/// Transmit buffers kept for reuse, and the largest kept.
const MAX_SPARE_BUFFERS: usize = 16;
const MAX_SPARE_CAPACITY: usize = 2 << 20;

/// Decoded messages pushed to mailboxes at once, at most.
const DELIVERY_BATCH: usize = 1024;

/// Plaintext drained into one transmit at most; bigger backlogs leave over
/// several, interleaved with other connections.
const TRANSMIT_BUDGET: usize = 256 * 1024;

/// What starts a core.
pub struct CoreConfig {
    /// The resolved cluster spec of this node.
    pub spec: ResolvedSpec,
    /// This start of the node (see [`Incarnation::from_system_time`]).
    pub incarnation: Incarnation,
    /// Seed of every random choice the core makes.
    pub seed: u64,
    /// Wall clock for certificate validity checks.
    pub time_provider: Arc<dyn TimeProvider>,
}

/// Something that happened to the driver or the network.
#[derive(Debug)]
pub enum Input<'a> {
    /// A dial requested by [`Output::Connect`] connected its socket.
    Connected {
        /// The connection.
        conn: ConnId,
    },
    /// A dial requested by [`Output::Connect`] failed.
    ConnectFailed {
        /// The connection.
        conn: ConnId,
        /// Why, for the log.
        error: &'a str,
    },
    /// Bytes read from a connection's socket.
    Received {
        /// The connection.
        conn: ConnId,
        /// The bytes, as read.
        bytes: &'a [u8],
    },
    /// The driver wrote this many bytes of earlier transmits to the socket.
    Written {
        /// The connection.
        conn: ConnId,
        /// Bytes written.
        bytes: usize,
    },
    /// The socket closed or failed.
    Closed {
        /// The connection.
        conn: ConnId,
        /// The error, if it was not a clean end of stream.
        error: Option<&'a str>,
    },
    /// The time from [`Core::poll_timeout`] has come.
    Timeout,
}

/// What the driver should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Dial `address` and report [`Input::Connected`] or [`Input::ConnectFailed`].
    Connect {
        /// The connection this dial is for.
        conn: ConnId,
        /// The node being dialled.
        node: NodeId,
        /// Where to dial.
        address: String,
        /// Where to dial from, if the spec says.
        local_address: Option<String>,
    },
    /// Write these bytes to the connection's socket, then report
    /// [`Input::Written`].
    Transmit {
        /// The connection.
        conn: ConnId,
        /// Ciphertext.
        data: Vec<u8>,
    },
    /// Close the connection's socket once earlier transmits are written.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Stop reading from the connection's socket: the peer's messages
    /// already hold [`Tuning::max_unread_bytes`] on this node, unreceived.
    /// TCP then pushes back on the peer. Bytes already read may still be
    /// passed in.
    PauseReading {
        /// The connection.
        conn: ConnId,
    },
    /// Read from the connection's socket again.
    ResumeReading {
        /// The connection.
        conn: ConnId,
    },
    /// Something the application may want to know.
    Event(Event),
}

/// Notable changes, also logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A connection to `node` completed its handshake.
    PeerUp {
        /// The peer.
        node: NodeId,
        /// Its current start.
        incarnation: Incarnation,
    },
    /// The connection to `node` was lost or refused.
    PeerDown {
        /// The peer.
        node: NodeId,
        /// Why.
        reason: String,
    },
}

/// Why an inbound connection was refused at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptError {
    /// Too many connections are handshaking already.
    TooManyHandshakes {
        /// The limit.
        limit: usize,
    },
    /// The node is shutting down.
    ShuttingDown,
    /// rustls could not make a session.
    Tls(String),
}

impl std::fmt::Display for AcceptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcceptError::TooManyHandshakes { limit } => {
                write!(f, "{limit} connections are handshaking already")
            }
            AcceptError::ShuttingDown => write!(f, "the node is shutting down"),
            AcceptError::Tls(e) => write!(f, "TLS session refused: {e}"),
        }
    }
}

impl std::error::Error for AcceptError {}

struct Peer {
    descriptor: NodeDescriptor,
    we_dial: bool,
    up: Option<ConnId>,
    dialing: Option<ConnId>,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

/// The node state machine. See the [module docs](self).
pub struct Core {
    node: Node,
    me: NodeId,
    incarnation: Incarnation,
    tuning: Tuning,
    tls: TlsContext,
    peers: BTreeMap<NodeId, Peer>,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: u64,
    rng: Rng,
    outputs: VecDeque<Output>,
    /// Connections with core frames or TLS records waiting to go.
    dirty: BTreeSet<ConnId>,
    /// Peers whose outbox may hold user data.
    active: BTreeSet<NodeId>,
    ready_scratch: Vec<NodeId>,
    known_tags: HashSet<TypeTag>,
    last_tag: Option<TypeTag>,
    /// The mailbox the last message was delivered to.
    last_dest: Option<(MailboxId, Arc<crate::mailbox::MailboxShared>)>,
    /// Messages decoded but not yet pushed to their mailboxes.
    deliveries: Vec<(Arc<crate::mailbox::MailboxShared>, Message)>,
    /// Transmit buffers the driver gave back, for reuse.
    buffers: Vec<Vec<u8>>,
    /// User messages received in the current input, counted once per input.
    messages_in: u64,
    /// The receive budget of the peer whose input is being handled.
    budget: Option<(NodeId, Arc<crate::net::RecvBudget>)>,
    /// Connections not being read until their peer's budget frees up.
    paused: BTreeSet<ConnId>,
    /// Reused for each run of deliveries to one mailbox.
    run: Vec<Message>,
    shutting_down: bool,
}

impl Core {
    /// A core for the node described by `config`, and the [`Node`] handle
    /// that user code creates mailboxes and sends with.
    pub fn new(config: CoreConfig, now: Instant) -> Result<Core, SpecError> {
        let spec = config.spec;
        let me = spec.node_id;
        let tls = TlsContext::new(&spec, config.time_provider)?;
        let tuning = spec.tuning.clone();
        let peer_ids: Vec<NodeId> = spec.nodes.keys().copied().filter(|&id| id != me).collect();
        let mut network = Network::new(
            peer_ids.iter().copied(),
            tuning.outbound_queue_bytes,
            tuning.outbound_bulk_bytes,
            tuning.max_message_len,
        );
        network.tunnel_window = tuning.tunnel_window;
        network.max_frame_len = tuning.max_frame_len;
        network.set_unread_limit(tuning.max_unread_bytes);
        let node = Node::networked(me, config.incarnation, network);
        let peers = spec
            .nodes
            .iter()
            .filter(|(&id, _)| id != me)
            .map(|(&id, descriptor)| {
                (
                    id,
                    Peer {
                        descriptor: descriptor.clone(),
                        we_dial: me < id,
                        up: None,
                        dialing: None,
                        retry_at: (me < id).then_some(now),
                        backoff: Backoff::new(tuning.backoff_initial, tuning.backoff_max),
                    },
                )
            })
            .collect();
        tracing::info!(
            node = me.0,
            incarnation = config.incarnation.0,
            "node core started"
        );
        Ok(Core {
            node,
            me,
            incarnation: config.incarnation,
            tuning,
            tls,
            peers,
            conns: BTreeMap::new(),
            next_conn: 1,
            rng: Rng::new(config.seed ^ u64::from(me.0)),
            outputs: VecDeque::new(),
            dirty: BTreeSet::new(),
            active: BTreeSet::new(),
            ready_scratch: Vec::new(),
            known_tags: HashSet::new(),
            last_tag: None,
            last_dest: None,
            deliveries: Vec::new(),
            buffers: Vec::new(),
            messages_in: 0,
            budget: None,
            paused: BTreeSet::new(),
            run: Vec::new(),
            shutting_down: false,
        })
    }

    /// The node handle, shared with user code.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The signal user threads raise when they queue work for this core; a
    /// driver waits on it beside its sockets and timer.
    pub fn wake_signal(&self) -> Arc<WakeSignal> {
        self.node.network().wake.clone()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// The nodes currently connected.
    pub fn connected_peers(&self) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.up.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    /// Open connections, handshaking or up.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Bytes held for partial inbound messages and unsent core frames on
    /// the connection to `peer` (for memory-bound checks).
    pub fn peer_buffered_bytes(&self, peer: NodeId) -> usize {
        self.peers
            .get(&peer)
            .and_then(|p| p.up)
            .and_then(|c| self.conns.get(&c))
            .map(|c| c.reassembly_bytes + c.control_out.len() + c.decoder.buffered() + c.in_flight)
            .unwrap_or(0)
    }

    /// A new inbound connection. `label` (the remote socket address, say)
    /// only appears in logs.
    pub fn accept(&mut self, now: Instant, label: &str) -> Result<ConnId, AcceptError> {
        if self.shutting_down {
            return Err(AcceptError::ShuttingDown);
        }
        let handshaking = self
            .conns
            .values()
            .filter(|c| c.dialed.is_none() && c.peer().is_none())
            .count();
        if handshaking >= self.tuning.max_handshaking {
            tracing::warn!(
                node = self.me.0,
                from = label,
                limit = self.tuning.max_handshaking,
                "refusing connection: too many handshakes in progress"
            );
            return Err(AcceptError::TooManyHandshakes {
                limit: self.tuning.max_handshaking,
            });
        }
        let mut tls = self
            .tls
            .server()
            .map_err(|e| AcceptError::Tls(e.to_string()))?;
        tls.set_buffer_limit(None);
        let id = self.new_conn_id();
        let handshake = Handshake::new(
            Role::Acceptor,
            self.me,
            self.incarnation,
            self.tls.cluster_id,
        );
        let conn = Conn::new(
            id,
            label.to_owned(),
            rustls::Connection::from(tls).into(),
            handshake,
            self.tuning.max_frame_len,
            None,
            now,
        );
        tracing::debug!(node = self.me.0, %id, from = label, "accepted connection");
        self.conns.insert(id, conn);
        Ok(id)
    }

    /// Fuzzing only: a connection from `peer` that skips TLS and the
    /// hello, so fuzzers can feed arbitrary frames to an authenticated link.
    #[cfg(fuzzing)]
    pub fn fuzz_connect_peer(&mut self, now: Instant, peer: NodeId) -> Option<ConnId> {
        let id = self.new_conn_id();
        let handshake = Handshake::new(
            Role::Acceptor,
            self.me,
            self.incarnation,
            self.tls.cluster_id,
        );
        let mut conn = Conn::new(
            id,
            format!("fuzz peer {}", peer.0),
            conn::Transport::Plain { out: Vec::new() },
            handshake,
            self.tuning.max_frame_len,
            None,
            now,
        );
        let hello = Hello {
            version: crate::codec::PROTOCOL_VERSION,
            node: peer,
            incarnation: Incarnation(1),
            cluster: self.tls.cluster_id.to_vec(),
            target: self.me,
        };
        let _ = conn
            .handshake
            .on_frame(Frame::Hello(hello.to_frame_body()), |_| true, |_| true);
        self.establish(now, &mut conn, hello).ok()?;
        self.conns.insert(id, conn);
        Some(id)
    }

    fn new_conn_id(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        id
    }

    /// Feeds one input.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Connected { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    if c.phase == Phase::Dialing {
                        c.phase = Phase::Handshaking;
                        self.dirty.insert(conn);
                    }
                }
            }
            Input::ConnectFailed { conn, error } => {
                if let Some(c) = self.conns.get(&conn) {
                    tracing::warn!(
                        node = self.me.0,
                        peer = c.dialed.map(|n| n.0),
                        error,
                        "dial failed"
                    );
                    self.drop_conn(now, conn, format!("dial failed: {error}"), false);
                }
            }
            Input::Received { conn, bytes } => self.on_received(now, conn, bytes),
            Input::Written { conn, bytes } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.in_flight = c.in_flight.saturating_sub(bytes);
                    if let Some(peer) = c.peer() {
                        self.active.insert(peer);
                    }
                }
            }
            Input::Closed { conn, error } => {
                if self.conns.contains_key(&conn) {
                    let reason = match error {
                        Some(e) => format!("connection error: {e}"),
                        None => "connection closed by peer".to_owned(),
                    };
                    self.drop_conn(now, conn, reason, false);
                }
            }
            Input::Timeout => self.run_timers(now),
        }
    }

    /// The next thing for the driver to do, if any. Call until `None` after
    /// every input and whenever the [`wake_signal`](Core::wake_signal) fires.
    pub fn poll_output(&mut self, now: Instant) -> Option<Output> {
        if let Some(out) = self.outputs.pop_front() {
            return Some(out);
        }
        self.flush(now);
        self.outputs.pop_front()
    }

    /// Gives a transmitted buffer back for reuse, so steady-state traffic
    /// does not allocate a buffer per transmit. Optional.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        if self.buffers.len() < MAX_SPARE_BUFFERS && buffer.capacity() <= MAX_SPARE_CAPACITY {
            buffer.clear();
            self.buffers.push(buffer);
        }
    }

    /// When the core next needs [`Input::Timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        let mut consider = |t: Instant| {
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
        };
        for conn in self.conns.values() {
            match conn.phase {
                Phase::Up { .. } => {
                    consider(conn.next_ping);
                    consider(conn.last_recv + self.tuning.read_deadline);
                }
                Phase::Dialing | Phase::Handshaking => {
                    consider(conn.opened_at + self.tuning.handshake_timeout)
                }
            }
        }
        if !self.shutting_down {
            for peer in self.peers.values() {
                if let Some(t) = peer.retry_at {
                    consider(t);
                }
            }
        }
        if let Some(t) = self.node.inner.next_request_deadline() {
            consider(t);
        }
        earliest
    }

    /// Says goodbye to every peer and closes every connection and mailbox.
    /// Poll outputs afterwards to send the goodbyes.
    pub fn shutdown(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        tracing::info!(node = self.me.0, "node shutting down");
        self.node.inner.begin_shutdown();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                if c.peer().is_some() {
                    c.queue_frame(&Frame::Goodbye(handshake::goodbye_body(
                        "node shutting down",
                    )));
                }
                c.flush_control();
                c.tls.send_close_notify();
                let buf = self.buffers.pop().unwrap_or_default();
                match c.take_ciphertext(buf) {
                    Ok(data) => self.outputs.push_back(Output::Transmit { conn: id, data }),
                    Err(buf) => self.buffers.push(buf),
                }
            }
            self.drop_conn(now, id, "node shutting down".into(), true);
        }
        for peer in self.peers.values_mut() {
            peer.retry_at = None;
        }
        self.node.inner.close_all_mailboxes();
    }

    /// Whether [`shutdown`](Core::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.shutting_down
    }

    // ----- receiving -------------------------------------------------------

    fn on_received(&mut self, now: Instant, id: ConnId, bytes: &[u8]) {
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        conn.last_recv = now;
        let mut failure: Option<String> = None;
        let result = conn.receive(bytes, |conn| loop {
            match conn.decoder.next_frame() {
                Ok(Some(frame)) => {
                    if let Err(reason) = self.on_frame(now, conn, frame) {
                        failure = Some(reason);
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(e) => {
                    failure = Some(frame_error(&e));
                    return false;
                }
            }
        });
        if let Some(peer) = conn.peer() {
            if let Some(outbox) = self.node.network().outbox(peer) {
                outbox
                    .counters
                    .bytes_in
                    .fetch_add(std::mem::take(&mut conn.plaintext_in), Ordering::Relaxed);
                outbox
                    .counters
                    .messages_in
                    .fetch_add(std::mem::take(&mut self.messages_in), Ordering::Relaxed);
            }
        }
        let failure = match (result, failure) {
            (Err(tls_error), _) => Some(format!("TLS error: {tls_error}")),
            (Ok(()), f) => f,
        };
        self.flush_deliveries();
        self.conns.insert(id, conn);
        self.dirty.insert(id);
        self.pause_if_over(id);
        if let Some(reason) = failure {
            self.fail_conn(now, id, reason);
        }
    }

    /// Handles one frame; `Err` closes the connection with that reason.
    fn on_frame(&mut self, now: Instant, conn: &mut Conn, frame: Frame) -> Result<(), String> {
        let Some(peer) = conn.peer() else {
            return self.on_handshake_frame(now, conn, frame);
        };
        if !matches!(
            frame,
            Frame::Data { .. }
                | Frame::FragmentStart { .. }
                | Frame::FragmentCont { .. }
                | Frame::Ping(_)
                | Frame::Pong(_)
        ) {
            // Whatever else the peer sent comes after its earlier messages:
            // deliver those first (a close notice must not overtake them).
            self.flush_deliveries();
        }
        match frame {
            Frame::Ping(nonce) => conn.queue_frame(&Frame::Pong(nonce)),
            Frame::Pong(nonce) => {
                if nonce == conn.ping_nonce {
                    conn.ping_outstanding = false;
                }
            }
            Frame::Data { dest, tag, payload } => {
                if conn.reassembly.contains_key(&dest) {
                    return Err(format!(
                        "a whole message to {dest:?} arrived amid its fragments"
                    ));
                }
                self.deliver(peer, dest, tag, payload);
            }
            Frame::FragmentStart {
                dest,
                tag,
                total_len,
                chunk,
            } => {
                if let Some((tag, payload)) = conn.reassemble(
                    dest,
                    Some((tag, total_len)),
                    chunk,
                    self.tuning.max_message_len,
                    self.tuning.max_message_len.saturating_mul(2),
                )? {
                    self.deliver(peer, dest, tag, payload);
                }
            }
            Frame::FragmentCont { dest, chunk } => {
                if let Some((tag, payload)) = conn.reassemble(
                    dest,
                    None,
                    chunk,
                    self.tuning.max_message_len,
                    self.tuning.max_message_len.saturating_mul(2),
                )? {
                    self.deliver(peer, dest, tag, payload);
                }
            }
            Frame::Control(body) => self.on_control(now, peer, conn, body)?,
            Frame::Request {
                dest,
                corr,
                tag,
                payload,
            } => {
                let charge = self.charge(peer, payload.len());
                self.node
                    .inner
                    .on_request_frame(peer, dest, corr, tag, payload, charge)
            }
            Frame::Reply {
                corr,
                status,
                tag,
                payload,
            } => self
                .node
                .inner
                .on_reply_frame(peer, corr, status, tag, payload),
            Frame::Publish {
                scope,
                tag,
                name,
                payload,
            } => {
                self.charge(peer, 0);
                let budget = self.budget.as_ref().map(|(_, b)| b.clone());
                self.node
                    .inner
                    .on_publish_frame(peer, scope, &name, tag, payload, budget)
            }
            Frame::Tunnel {
                id,
                from_opener,
                op,
            } => self.node.inner.on_tunnel_op(peer, id, from_opener, op),
            Frame::Goodbye(body) => {
                let reason: String = crate::codec::payload::decode(&body)
                    .unwrap_or_else(|_| "<unreadable reason>".into());
                return Err(format!("{GOODBYE}: {reason}"));
            }
            Frame::Hello(_) => return Err("a hello after the handshake".into()),
        }
        Ok(())
    }

    fn on_handshake_frame(
        &mut self,
        now: Instant,
        conn: &mut Conn,
        frame: Frame,
    ) -> Result<(), String> {
        let peers = &self.peers;
        let tls = &conn.tls;
        let step = conn.handshake.on_frame(
            frame,
            |n| peers.contains_key(&n),
            |n| conn::cert_names(tls, n),
        );
        match step {
            Ok(Step::Waiting) => Ok(()),
            Ok(Step::Done { peer, reply }) => {
                if let Some(reply) = reply {
                    conn.queue_frame(&Frame::Hello(reply.to_frame_body()));
                }
                self.establish(now, conn, peer)
            }
            Err(e) => {
                tracing::error!(
                    node = self.me.0,
                    conn = %conn.id,
                    from = %conn.label,
                    error = %e,
                    "handshake failed; closing the connection"
                );
                conn.queue_frame(&Frame::Goodbye(handshake::goodbye_body(&e.to_string())));
                Err(format!("handshake failed: {e}"))
            }
        }
    }

    fn deliver(&mut self, peer: NodeId, dest: MailboxId, tag: TypeTag, payload: Bytes) {
        let node = &self.node.inner;
        self.messages_in += 1;
        if self.last_tag != Some(tag) {
            if !self.known_tags.contains(&tag) {
                if !types::is_registered_tag(tag) {
                    node.counters
                        .dropped_unknown_type
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        node = self.me.0,
                        from = peer.0,
                        tag = format_args!("{:#018x}", tag.0),
                        "dropping a message of a type not registered on this node"
                    );
                    return;
                }
                self.known_tags.insert(tag);
            }
            self.last_tag = Some(tag);
        }
        // Consecutive messages mostly go to the same mailbox: skip the table.
        let mailbox = match &self.last_dest {
            Some((id, mailbox)) if *id == dest => mailbox.clone(),
            _ => match node.local_mailbox(dest) {
                Some(mailbox) => {
                    self.last_dest = Some((dest, mailbox.clone()));
                    mailbox
                }
                None => {
                    node.counters.dropped_closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        };
        let weak = node.weak();
        let charge = self.charge(peer, payload.len());
        self.deliveries
            .push((mailbox, Message::remote(tag, payload, weak).charged(charge)));
        if self.deliveries.len() >= DELIVERY_BATCH {
            self.flush_deliveries();
        }
    }

    /// The receive budget of `peer`, charged `bytes` for a new message.
    fn charge(&mut self, peer: NodeId, bytes: usize) -> Option<crate::net::Charge> {
        if self.budget.as_ref().is_none_or(|(p, _)| *p != peer) {
            let budget = self.node.inner.network().outbox(peer)?.unread.clone();
            self.budget = Some((peer, budget));
        }
        self.budget.as_ref().map(|(_, b)| b.charge(bytes))
    }

    /// Stops reading from `id` while its peer's unread messages are over
    /// budget.
    fn pause_if_over(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let Some(peer) = conn.peer() else {
            return;
        };
        let Some(outbox) = self.node.inner.network().outbox(peer) else {
            return;
        };
        if outbox.unread.over() && self.paused.insert(id) {
            outbox.unread.set_paused(true);
            tracing::debug!(
                node = self.me.0,
                peer = peer.0,
                unread = outbox.unread.used(),
                "pausing reads"
            );
            self.outputs.push_back(Output::PauseReading { conn: id });
        }
    }

    /// Resumes reading from paused connections whose budget freed up.
    fn resume_if_under(&mut self) {
        let paused: Vec<ConnId> = self.paused.iter().copied().collect();
        for id in paused {
            let budget = self
                .conns
                .get(&id)
                .and_then(Conn::peer)
                .and_then(|peer| self.node.inner.network().outbox(peer))
                .map(|o| o.unread.clone());
            match budget {
                Some(budget) if !budget.can_resume() => {}
                Some(budget) => {
                    budget.set_paused(false);
                    self.paused.remove(&id);
                    self.outputs.push_back(Output::ResumeReading { conn: id });
                }
                None => {
                    self.paused.remove(&id);
                }
            }
        }
    }

    /// Pushes the batched deliveries, one lock and one wake-up per run of
    /// messages to the same mailbox, in arrival order.
    fn flush_deliveries(&mut self) {
        if self.deliveries.is_empty() {
            return;
        }
        let counters = &self.node.inner.counters;
        let mut batch = std::mem::take(&mut self.deliveries);
        let mut run = std::mem::take(&mut self.run);
        let mut drain = batch.drain(..).peekable();
        while let Some((mailbox, first)) = drain.next() {
            run.push(first);
            while let Some((_, msg)) = drain.next_if(|(m, _)| Arc::ptr_eq(m, &mailbox)) {
                run.push(msg);
            }
            let pushed = mailbox.push_many(run.drain(..));
            counters
                .remote_delivered
                .fetch_add(pushed.delivered, Ordering::Relaxed);
            counters
                .dropped_full
                .fetch_add(pushed.full, Ordering::Relaxed);
            counters
                .dropped_closed
                .fetch_add(pushed.closed, Ordering::Relaxed);
            if pushed.closed > 0
                && self
                    .last_dest
                    .as_ref()
                    .is_some_and(|(_, m)| Arc::ptr_eq(m, &mailbox))
            {
                self.last_dest = None;
            }
        }
        self.run = run;
        drop(drain);
        self.deliveries = batch;
    }

    fn on_control(
        &mut self,
        now: Instant,
        peer: NodeId,
        conn: &mut Conn,
        body: Bytes,
    ) -> Result<(), String> {
        let _ = (now, conn);
        match crate::control::Control::decode(&body) {
            Ok(msg) => self.node.inner.handle_control(peer, msg),
            Err(e) => Err(format!("malformed control message: {e}")),
        }
    }

    // ----- connection life cycle ------------------------------------------

    fn establish(&mut self, now: Instant, conn: &mut Conn, hello: Hello) -> Result<(), String> {
        let peer_id = hello.node;
        let dialer_of = |c: &Conn| if c.dialed.is_some() { self.me } else { peer_id };
        let preferred_dialer = self.me.min(peer_id);
        let existing = self.peers.get(&peer_id).and_then(|p| p.up);
        if let Some(old_id) = existing {
            let old_preferred = self
                .conns
                .get(&old_id)
                .is_some_and(|old| dialer_of(old) == preferred_dialer);
            let new_preferred = dialer_of(conn) == preferred_dialer;
            if old_preferred && !new_preferred {
                tracing::info!(
                    node = self.me.0,
                    peer = peer_id.0,
                    "closing a duplicate connection"
                );
                conn.queue_frame(&Frame::Goodbye(handshake::goodbye_body(
                    "duplicate connection",
                )));
                return Err(DUPLICATE.into());
            }
            self.drop_conn(now, old_id, "replaced by a newer connection".into(), true);
        }
        conn.phase = Phase::Up { peer: peer_id };
        conn.next_ping = now + self.tuning.ping_interval;
        conn.ping_outstanding = false;
        conn.ping_failures = 0;
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return Err(format!("node {} is not a peer", peer_id.0));
        };
        peer.up = Some(conn.id);
        if peer.dialing == Some(conn.id) {
            peer.dialing = None;
        }
        peer.retry_at = None;
        peer.backoff.reset();
        let node = &self.node.inner;
        if let Some(outbox) = node.network().outbox(peer_id) {
            outbox.lock().connected = true;
            outbox.counters.connects.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(
            node = self.me.0,
            peer = peer_id.0,
            conn = %conn.id,
            peer_incarnation = hello.incarnation.0,
            "connection established"
        );
        for frame in node.peer_up(peer_id, hello.incarnation) {
            frame.encode(&mut conn.control_out);
        }
        self.outputs.push_back(Output::Event(Event::PeerUp {
            node: peer_id,
            incarnation: hello.incarnation,
        }));
        Ok(())
    }

    /// Closes a connection for a protocol or TLS failure, sending what is
    /// queued (a goodbye or an alert) first.
    fn fail_conn(&mut self, now: Instant, id: ConnId, reason: String) {
        if let Some(c) = self.conns.get_mut(&id) {
            let orderly = reason.starts_with(GOODBYE) || reason == DUPLICATE;
            if orderly {
                // Logged as a lost connection by `peer_down`, at warn level.
            } else if c.peer().is_some() {
                tracing::error!(node = self.me.0, conn = %id, from = %c.label, reason, "closing connection");
            } else if !reason.starts_with("handshake failed") {
                tracing::error!(
                    node = self.me.0,
                    conn = %id,
                    from = %c.label,
                    reason,
                    "connection refused during handshake"
                );
            }
            c.flush_control();
            let buf = self.buffers.pop().unwrap_or_default();
            match c.take_ciphertext(buf) {
                Ok(data) => self.outputs.push_back(Output::Transmit { conn: id, data }),
                Err(buf) => self.buffers.push(buf),
            }
        }
        self.drop_conn(now, id, reason, true);
    }

    /// Forgets a connection; if it was a peer's link, the peer goes down.
    fn drop_conn(&mut self, now: Instant, id: ConnId, reason: String, tell_driver: bool) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        self.dirty.remove(&id);
        if self.paused.remove(&id) {
            if let Some(outbox) = conn
                .peer()
                .and_then(|p| self.node.inner.network().outbox(p))
            {
                outbox.unread.set_paused(false);
            }
        }
        if tell_driver {
            self.outputs.push_back(Output::Close { conn: id });
        }
        if let Some(peer_id) = conn.peer() {
            self.peer_down(now, peer_id, reason);
        } else if let Some(peer_id) = conn.dialed {
            if let Some(peer) = self.peers.get_mut(&peer_id) {
                if peer.dialing == Some(id) {
                    peer.dialing = None;
                    self.schedule_redial(now, peer_id);
                }
            }
        }
    }

    fn peer_down(&mut self, now: Instant, peer_id: NodeId, reason: String) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        peer.up = None;
        let node = &self.node.inner;
        if let Some(outbox) = node.network().outbox(peer_id) {
            let dropped = {
                let mut state = outbox.lock();
                state.connected = false;
                state.clear()
            };
            outbox.counters.disconnects.fetch_add(1, Ordering::Relaxed);
            if dropped > 0 {
                outbox
                    .counters
                    .dropped_unreachable
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        self.active.remove(&peer_id);
        if self.shutting_down {
            tracing::info!(
                node = self.me.0,
                peer = peer_id.0,
                "connection closed for shutdown"
            );
        } else {
            tracing::warn!(
                node = self.me.0,
                peer = peer_id.0,
                reason,
                "connection lost"
            );
        }
        node.peer_down(peer_id);
        self.outputs.push_back(Output::Event(Event::PeerDown {
            node: peer_id,
            reason,
        }));
        self.schedule_redial(now, peer_id);
    }

    fn schedule_redial(&mut self, now: Instant, peer_id: NodeId) {
        if self.shutting_down {
            return;
        }
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            if peer.we_dial && peer.up.is_none() && peer.dialing.is_none() {
                let delay = peer.backoff.next_delay(&mut self.rng);
                peer.retry_at = Some(now + delay);
                tracing::debug!(
                    node = self.me.0,
                    peer = peer_id.0,
                    ?delay,
                    "redial scheduled"
                );
            }
        }
    }

    fn dial(&mut self, now: Instant, peer_id: NodeId) {
        let id = self.new_conn_id();
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        peer.retry_at = None;
        let mut tls = match self.tls.client(peer_id) {
            Ok(tls) => tls,
            Err(e) => {
                tracing::error!(node = self.me.0, peer = peer_id.0, error = %e, "cannot make a TLS session");
                let delay = peer.backoff.next_delay(&mut self.rng);
                peer.retry_at = Some(now + delay);
                return;
            }
        };
        tls.set_buffer_limit(None);
        peer.dialing = Some(id);
        let address = peer.descriptor.address.clone();
        let local_address = Some(peer.descriptor.local_address.clone()).filter(|a| !a.is_empty());
        let handshake = Handshake::new(
            Role::Dialer { target: peer_id },
            self.me,
            self.incarnation,
            self.tls.cluster_id,
        );
        let conn = Conn::new(
            id,
            address.clone(),
            rustls::Connection::from(tls).into(),
            handshake,
            self.tuning.max_frame_len,
            Some(peer_id),
            now,
        );
        self.conns.insert(id, conn);
        tracing::debug!(node = self.me.0, peer = peer_id.0, %id, address, "dialling");
        self.outputs.push_back(Output::Connect {
            conn: id,
            node: peer_id,
            address,
            local_address,
        });
    }

    fn run_timers(&mut self, now: Instant) {
        self.node.inner.expire_requests(now);
        let mut failures = Vec::new();
        for (&id, conn) in self.conns.iter_mut() {
            match conn.phase {
                Phase::Dialing | Phase::Handshaking => {
                    if now >= conn.opened_at + self.tuning.handshake_timeout {
                        failures.push((
                            id,
                            format!(
                                "handshake not finished within {:?}",
                                self.tuning.handshake_timeout
                            ),
                        ));
                    }
                }
                Phase::Up { .. } => {
                    if now >= conn.last_recv + self.tuning.read_deadline {
                        failures.push((
                            id,
                            format!("nothing received for {:?}", self.tuning.read_deadline),
                        ));
                        continue;
                    }
                    if now >= conn.next_ping {
                        if conn.ping_outstanding && now > conn.last_recv + self.tuning.ping_interval
                        {
                            conn.ping_failures += 1;
                        } else {
                            conn.ping_failures = 0;
                        }
                        if conn.ping_failures >= self.tuning.max_ping_failures {
                            failures.push((
                                id,
                                format!("{} pings in a row went unanswered", conn.ping_failures),
                            ));
                            continue;
                        }
                        conn.ping_nonce = conn.ping_nonce.wrapping_add(1);
                        conn.ping_outstanding = true;
                        let nonce = conn.ping_nonce;
                        conn.queue_frame(&Frame::Ping(nonce));
                        conn.next_ping = now + self.tuning.ping_interval;
                        self.dirty.insert(id);
                    }
                }
            }
        }
        for (id, reason) in failures {
            if let Some(c) = self.conns.get(&id) {
                if c.peer().is_none() {
                    tracing::error!(node = self.me.0, conn = %id, from = %c.label, reason, "handshake timed out");
                }
            }
            self.drop_conn(now, id, reason, true);
        }
        if self.shutting_down {
            return;
        }
        let due: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.retry_at.is_some_and(|t| t <= now) && p.up.is_none() && p.dialing.is_none()
            })
            .map(|(&id, _)| id)
            .collect();
        for peer in due {
            self.dial(now, peer);
        }
    }

    // ----- sending ---------------------------------------------------------

    fn flush(&mut self, now: Instant) {
        if !self.paused.is_empty() {
            self.resume_if_under();
        }
        let network = self.node.network();
        network.take_ready(&mut self.ready_scratch);
        for peer in self.ready_scratch.drain(..) {
            self.active.insert(peer);
        }
        for frame_peer in self.node.inner.take_control_outbox() {
            let (peer, frame) = frame_peer;
            if let Some(conn_id) = self.peers.get(&peer).and_then(|p| p.up) {
                if let Some(conn) = self.conns.get_mut(&conn_id) {
                    frame.encode(&mut conn.control_out);
                    self.dirty.insert(conn_id);
                }
            }
        }
        let active: Vec<NodeId> = self.active.iter().copied().collect();
        for peer in active {
            match self.peers.get(&peer).and_then(|p| p.up) {
                Some(conn) => {
                    self.dirty.insert(conn);
                }
                None => {
                    self.active.remove(&peer);
                }
            }
        }
        let dirty: Vec<ConnId> = std::mem::take(&mut self.dirty).into_iter().collect();
        for id in dirty {
            self.flush_conn(now, id);
        }
    }

    fn flush_conn(&mut self, now: Instant, id: ConnId) {
        let window = self.tuning.write_window;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.phase == Phase::Dialing {
            return;
        }
        if conn.in_flight >= window {
            // The driver has not written what it has; it reports Written and
            // the peer becomes active again.
            if conn.control_out.len() > MAX_CONTROL_BACKLOG {
                // A peer that keeps asking (pings, syncs) but never reads
                // would grow this without end: it loses its connection.
                let reason = format!(
                    "the peer does not read: {} bytes of replies are waiting",
                    conn.control_out.len()
                );
                self.fail_conn(now, id, reason);
                return;
            }
            if conn.peer().is_none() {
                self.dirty.insert(id);
            }
            return;
        }
        if conn.tls.is_handshaking() {
            let buf = self.buffers.pop().unwrap_or_default();
            match conn.take_ciphertext(buf) {
                Ok(data) => {
                    conn.in_flight += data.len();
                    self.outputs.push_back(Output::Transmit { conn: id, data });
                }
                Err(buf) => self.buffers.push(buf),
            }
            return;
        }
        send_opening_once(conn);
        conn.flush_control();
        if let Some(peer) = conn.peer() {
            let outbox = self.node.inner.network().outbox(peer);
            if let Some(outbox) = outbox {
                let drained = drain_outbox(conn, outbox);
                if drained.more {
                    self.active.insert(peer);
                } else {
                    self.active.remove(&peer);
                }
                outbox
                    .counters
                    .bytes_out
                    .fetch_add(drained.bytes as u64, Ordering::Relaxed);
            }
        }
        let buf = self.buffers.pop().unwrap_or_default();
        match conn.take_ciphertext(buf) {
            Ok(data) => {
                conn.in_flight += data.len();
                self.outputs.push_back(Output::Transmit { conn: id, data });
            }
            Err(buf) => self.buffers.push(buf),
        }
    }
}

/// Sends the dialer's hello once TLS is up (called from the flush path).
fn send_opening_once(conn: &mut Conn) {
    if conn.phase == Phase::Handshaking && !conn.tls.is_handshaking() && !conn.handshake.is_done() {
        if let Some(hello) = conn.handshake.opening() {
            if !conn.hello_sent {
                conn.queue_frame(&Frame::Hello(hello.to_frame_body()));
                conn.hello_sent = true;
            }
        }
    }
}

struct Drained {
    bytes: usize,
    more: bool,
}

/// Moves queued user frames from a peer's outbox into the TLS session: all
/// small frames, then fragments of large messages round-robin by mailbox,
/// up to the transmit budget.
fn drain_outbox(conn: &mut Conn, outbox: &crate::net::Outbox) -> Drained {
    let mut budget = TRANSMIT_BUDGET;
    let mut written = 0;
    let mut pieces: Vec<(Vec<u8>, Bytes)> = Vec::new();
    let mut chunks = std::mem::take(&mut conn.spare_chunks);
    let more;
    {
        let mut state = outbox.lock();
        // Chunks written last time go back for the senders to reuse.
        for mut chunk in chunks.drain(..) {
            if state.spare_chunks.len() < 4 {
                chunk.clear();
                state.spare_chunks.push(chunk);
            }
        }
        // Small frames first, a whole chunk at a time, up to the budget.
        while budget > 0 {
            let Some(chunk) = state.small.pop_front() else {
                break;
            };
            state.queued_small -= chunk.len();
            budget = budget.saturating_sub(chunk.len());
            chunks.push(chunk);
        }
        while budget > 0 && !state.lanes.is_empty() {
            let mut lane = state.lanes.pop_front().expect("not empty");
            let item = lane.items.front_mut().expect("lanes are never empty");
            let total = item.payload.len();
            let start = item.sent;
            let end = (start + FRAGMENT_LEN).min(total);
            let chunk = item.payload.slice(start..end);
            let mut header = Vec::with_capacity(frame::DATA_HEADER_LEN + 8);
            if start == 0 && end == total {
                frame::put_data_header(&mut header, lane.dest, item.tag, total);
            } else if start == 0 {
                frame::put_fragment_start_header(
                    &mut header,
                    lane.dest,
                    item.tag,
                    total as u64,
                    chunk.len(),
                );
            } else {
                frame::put_fragment_cont_header(&mut header, lane.dest, chunk.len());
            }
            item.sent = end;
            budget = budget.saturating_sub(chunk.len() + header.len());
            if end == total {
                lane.items.pop_front();
                state.queued_bulk -= total + frame::DATA_HEADER_LEN;
            }
            pieces.push((header, chunk));
            if !lane.items.is_empty() {
                state.lanes.push_back(lane);
            }
        }
        more = state.queued() > 0;
        if !more {
            Network::unlist(&mut state);
        }
    }
    for chunk in &chunks {
        conn.write_plaintext(chunk);
        written += chunk.len();
    }
    conn.spare_chunks = chunks;
    for (header, chunk) in pieces {
        conn.write_plaintext(&header);
        conn.write_plaintext(&chunk);
        written += header.len() + chunk.len();
    }
    Drained {
        bytes: written,
        more,
    }
}

fn frame_error(e: &FrameError) -> String {
    format!("malformed frame: {e}")
}

/// Short timers suited to tests and simulations, exported for drivers' tests.
pub fn test_tuning() -> Tuning {
    Tuning::fast()
}

impl Core {
    /// The interval between pings (for drivers that want to log it).
    pub fn ping_interval(&self) -> Duration {
        self.tuning.ping_interval
    }
}
