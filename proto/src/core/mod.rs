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
mod lifecycle;
mod membership;
mod outside;
mod receive;
mod redial_log;
mod send;
mod timer;
mod vec_set;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rustls::time_provider::TimeProvider;

pub use crate::close::ID_IN_USE;
pub use backoff::Backoff;
pub use conn::ConnId;
use conn::{Conn, Phase};
pub use membership::{ReloadError, Reloaded};
use timer::{Timer, TimerIndex, Tracked};
use vec_set::VecSet;

use crate::close::{CloseReason, Removal, LEAVING};
use crate::codec::frame;
use crate::codec::{Frame, FRAGMENT_LEN};
use crate::control::Control;
use crate::handshake::{self, Handshake, HandshakeError, Hello, Role, Step};
use crate::id::{Incarnation, MailboxId, NodeId};
use crate::message::Message;
use crate::node::outbox::{Network, WakeSignal};
use crate::node::Node;
use crate::rng::Rng;
use crate::spec::{NodeDescriptor, ResolvedSpec, SpecError, Tuning};
use crate::tls::TlsContext;
use crate::types::{self, TypeTag};

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
        /// Why (its `Display` is the text the log line gives).
        reason: CloseReason,
    },
    /// `by` refused this node because another process with this node's id
    /// is live in the cluster (it answered a ping after this one arrived).
    /// This process should stop: two processes with one id would split
    /// the id's names, mailboxes and traffic between them.
    IdentityConflict {
        /// The node that refused.
        by: NodeId,
        /// What it said.
        reason: String,
    },
}

/// Why an inbound connection was refused at once.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcceptError {
    /// Too many connections are handshaking already.
    TooManyHandshakes {
        /// The limit.
        limit: usize,
    },
    /// Too many connections from this connection's source address are
    /// handshaking already ([`Tuning::max_handshaking_per_address`]).
    TooManyFromAddress {
        /// The source address (IP) as the core keyed it.
        address: String,
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
            AcceptError::TooManyFromAddress { address, limit } => {
                write!(
                    f,
                    "{limit} connections from {address} are handshaking already"
                )
            }
            AcceptError::ShuttingDown => write!(f, "the node is shutting down"),
            AcceptError::Tls(e) => write!(f, "TLS session refused: {e}"),
        }
    }
}

impl std::error::Error for AcceptError {}

struct Peer {
    descriptor: NodeDescriptor,
    /// Whether this node dials first (it has the lower id). The other side
    /// dials too, [`dial_grace`] later, so that a node the peer does
    /// not know of yet (a newcomer joining through a seed) still connects;
    /// a simultaneous pair resolves to one connection.
    dials_first: bool,
    up: Option<ConnId>,
    dialing: Option<ConnId>,
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// Learned from a peer or by its joining, not from the spec.
    learned: bool,
    /// The peer whose `Members` list named this member, while it has not
    /// connected to this node yet: such hearsay is capped per source and
    /// never passed on.
    hearsay_from: Option<NodeId>,
    /// The incarnation on the `up` connection.
    incarnation: Option<Incarnation>,
    /// When the peer was last seen going down (or added while down).
    down_since: Option<Instant>,
    /// The run of failed dials since it went down, for calm logs.
    dial_failures: redial_log::DialFailures,
    /// The `features` of the hello on the `up` connection (membership).
    features: u64,
}

impl Peer {
    /// When to dial this peer once it became dialable at `now`: at once if
    /// this node dials first, otherwise after [`dial_grace`].
    fn first_dial(&self, tuning: &Tuning, now: Instant) -> Instant {
        if self.dials_first {
            now
        } else {
            now + dial_grace(tuning)
        }
    }
}

/// How long the node with the higher id waits before dialling, giving the
/// lower id (which dials first) time to connect.
fn dial_grace(tuning: &Tuning) -> std::time::Duration {
    tuning.backoff_initial * 4
}

/// The node state machine. See the [module docs](self).
pub struct Core {
    node: Node,
    me: NodeId,
    /// This node's own entry, as members are told of it.
    descriptor: NodeDescriptor,
    incarnation: Incarnation,
    tuning: Tuning,
    tls: TlsContext,
    /// Every member but this node (tracked: its redial timer follows it).
    peers: Tracked<NodeId, Peer>,
    /// Ids a spec reload removed: refused until a later spec lists them.
    removed: BTreeSet<NodeId>,
    /// Newcomers claiming the id of a live peer, held while it is checked.
    probes: BTreeMap<NodeId, membership::Probe>,
    /// Learned members that left (said goodbye), and until when gossip
    /// naming them is ignored: a peer that has not yet seen the goodbye
    /// must not bring them back. Cleared when one connects again.
    departed: BTreeMap<NodeId, Instant>,
    /// When this node next tells a random peer which members it knows.
    next_gossip: Instant,
    /// Open connections (tracked: their timers follow them).
    conns: Tracked<ConnId, Conn>,
    /// The connection and redial timers in deadline order (see [`timer`]).
    timers: TimerIndex,
    /// `sync_timers`'s lists of changed keys, kept to allocate nothing.
    conn_scratch: Vec<ConnId>,
    peer_scratch: Vec<NodeId>,
    /// `poll_timeout`s so far, for the sampled check of the index.
    timer_checks: std::cell::Cell<u32>,
    next_conn: u64,
    rng: Rng,
    outputs: VecDeque<Output>,
    /// Connections with core frames or TLS records waiting to go.
    dirty: VecSet<ConnId>,
    /// Peers whose outbox may hold user data.
    active: VecSet<NodeId>,
    ready_scratch: Vec<NodeId>,
    /// `flush`'s copies of `active` and `dirty`, kept so that a flush
    /// allocates nothing (inline transmits make flushes more frequent).
    flush_peers: Vec<NodeId>,
    flush_conns: Vec<ConnId>,
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
    budget: Option<(NodeId, Arc<crate::node::outbox::RecvBudget>)>,
    /// Connections not being read until their peer's budget frees up.
    paused: BTreeSet<ConnId>,
    /// Reused for each run of deliveries to one mailbox.
    run: Vec<Message>,
    /// Peers that said goodbye for good in the current input.
    leaving: Vec<NodeId>,
    /// Control frames the core's own handlers produced for peers while
    /// handling the current input (watch answers, registry replies, `Busy`
    /// for a mailbox this core filled): encoded into the peers' connections
    /// at the end of the input, never queued through the node's
    /// user-thread queue (which would wake this core again).
    replies: Vec<(NodeId, Control)>,
    /// [`Core::shutdown`] was called (the node may still be draining).
    shutting_down: bool,
    /// While a graceful shutdown drains the outbound queues: when it gives
    /// up and drops what is left (see [`Tuning::drain_timeout`]).
    drain_until: Option<Instant>,
    /// Inbound connections still handshaking, with their source address
    /// (the handshake pool; see [`outside`]).
    inbound: BTreeMap<ConnId, outside::Inbound>,
    /// Inbound connections refused before authentication, per cause.
    refused: crate::log_summary::LogSummary,
    /// Messages from peers dropped on arrival, per cause.
    dropped: crate::log_summary::LogSummary,
    /// Why the pre-auth connection being failed now was refused, set where
    /// the typed error is known and taken by [`fail_conn`](Core::fail_conn).
    refusal: Option<&'static str>,
}

impl Core {
    /// A core for the node described by `config`, and the [`Node`] handle
    /// that user code creates mailboxes and sends with.
    pub fn new(config: CoreConfig, now: Instant) -> Result<Core, SpecError> {
        let spec = config.spec;
        let me = spec.node_id;
        let tls = TlsContext::new(&spec.material, &spec.protocols, config.time_provider)?;
        let tuning = spec.tuning.clone();
        let mut network = Network::new(
            [],
            tuning.outbound_queue_bytes,
            tuning.outbound_bulk_bytes,
            tuning.max_message_len,
        );
        network.tunnel_window = tuning.tunnel_window;
        network.max_frame_len = tuning.max_frame_len;
        network.set_unread_limit(crate::node::outbox::link_pause_bound(&tuning));
        let node = Node::networked(me, config.incarnation, network);
        node.inner
            .set_registry_limits(crate::registry::RegistryLimits::from(&tuning));
        tracing::info!(
            node = me.0,
            incarnation = config.incarnation.0,
            "node core started"
        );
        let mut core = Core {
            node,
            me,
            descriptor: spec.me().clone(),
            incarnation: config.incarnation,
            tuning,
            tls,
            peers: Tracked::new(),
            removed: BTreeSet::new(),
            probes: BTreeMap::new(),
            departed: BTreeMap::new(),
            next_gossip: now + spec.tuning.gossip_interval,
            conns: Tracked::new(),
            timers: TimerIndex::default(),
            conn_scratch: Vec::new(),
            peer_scratch: Vec::new(),
            timer_checks: std::cell::Cell::new(0),
            next_conn: 1,
            rng: Rng::new(config.seed ^ u64::from(me.0)),
            outputs: VecDeque::new(),
            dirty: VecSet::new(),
            active: VecSet::new(),
            ready_scratch: Vec::new(),
            flush_peers: Vec::new(),
            flush_conns: Vec::new(),
            known_tags: HashSet::new(),
            last_tag: None,
            last_dest: None,
            deliveries: Vec::new(),
            buffers: Vec::new(),
            messages_in: 0,
            budget: None,
            paused: BTreeSet::new(),
            run: Vec::new(),
            leaving: Vec::new(),
            replies: Vec::new(),
            shutting_down: false,
            drain_until: None,
            inbound: BTreeMap::new(),
            refused: crate::log_summary::LogSummary::new(outside::REFUSED),
            dropped: crate::log_summary::LogSummary::new(outside::DROPPED),
            refusal: None,
        };
        for descriptor in spec.nodes.values().filter(|d| NodeId(d.id) != me) {
            core.add_member(now, descriptor.clone(), false);
        }
        core.sync_timers();
        Ok(core)
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

    /// The nodes currently connected, in id order.
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
            .map(|c| {
                c.reassembly_bytes + c.control_bytes.len() + c.decoder.buffered() + c.in_flight
            })
            .unwrap_or(0)
    }

    /// Bytes of buffer capacity the link to `peer` holds outside rustls:
    /// the connection's frame decoder, control and spare buffers, partial
    /// messages, and the peer's outbound queue. An idle link gives these
    /// back at its next ping (see `Tuning::ping_interval`), so this is 0
    /// for a link that stayed idle one ping interval, bar the last ping's
    /// few bytes.
    pub fn idle_buffer_bytes(&self, peer: NodeId) -> usize {
        let conn = self
            .peers
            .get(&peer)
            .and_then(|p| p.up)
            .and_then(|c| self.conns.get(&c))
            .map_or(0, |c| c.buffer_capacity());
        let outbox = self
            .node
            .inner
            .network()
            .outbox(peer)
            .map_or(0, |o| o.lock().capacity());
        conn + outbox
    }

    /// A new inbound connection. `label` (the remote socket address, say)
    /// only appears in logs.
    pub fn accept(&mut self, now: Instant, label: &str) -> Result<ConnId, AcceptError> {
        if self.shutting_down {
            return Err(AcceptError::ShuttingDown);
        }
        let source = outside::source_of(label);
        self.admit_handshake(now, label, &source)?;
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
            self.tls.cluster_id.clone(),
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
        self.inbound.insert(
            id,
            outside::Inbound {
                source,
                heard: false,
            },
        );
        self.sync_timers();
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
            self.tls.cluster_id.clone(),
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
            cluster: self.tls.cluster_id.to_bytes(),
            target: self.me,
            features: crate::handshake::FEATURES,
        };
        let _ = conn
            .handshake
            .on_frame(Frame::Hello(hello.to_frame_body()), |_| true, |_| true);
        self.establish(now, &mut conn, hello, None).ok()?;
        self.conns.insert(id, conn);
        self.sync_timers();
        Some(id)
    }

    /// The span of connection `id` (none if it is gone).
    fn conn_span(&self, id: ConnId) -> tracing::Span {
        self.conns
            .get(&id)
            .map_or_else(tracing::Span::none, |c| c.span.clone())
    }

    fn new_conn_id(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        id
    }

    /// Feeds one input.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        // What happens for a connection is logged inside its span (its
        // id and peer); writes log nothing and skip the cost.
        let span = match &input {
            Input::Connected { conn }
            | Input::ConnectFailed { conn, .. }
            | Input::Received { conn, .. }
            | Input::Closed { conn, .. } => self.conn_span(*conn),
            Input::Written { .. } | Input::Timeout => tracing::Span::none(),
        };
        let entered = span.enter();
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
                if self.conns.contains_key(&conn) {
                    // Logged (DEBUG, and a summary at growing intervals)
                    // as a failed dial by `drop_conn`.
                    self.drop_conn(now, conn, CloseReason::DialFailed(error.to_owned()), false);
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
                if self.is_inbound_handshake(conn) {
                    self.note_refusal(conn, outside::CLOSED, &error.unwrap_or("end of stream"));
                }
                if self.conns.contains_key(&conn) {
                    let reason = match error {
                        Some(e) => CloseReason::ConnectionError(e.to_owned()),
                        None => CloseReason::ClosedByPeer,
                    };
                    self.drop_conn(now, conn, reason, false);
                }
            }
            Input::Timeout => self.run_timers(now),
        }
        drop(entered);
        self.send_replies();
        self.tick_summaries(now);
        self.sync_timers();
    }

    /// The next thing for the driver to do, if any. Call until `None` after
    /// every input and whenever the [`wake_signal`](Core::wake_signal) fires.
    pub fn poll_output(&mut self, now: Instant) -> Option<Output> {
        if let Some(out) = self.outputs.pop_front() {
            return Some(out);
        }
        self.flush(now);
        if self.drain_until.is_some() {
            self.check_drain(now);
        }
        self.sync_timers();
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
    ///
    /// O(log N) in the connections: the connection and redial timers come
    /// from a deadline-ordered index (see the `timer` module).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.conns.pending() || self.peers.pending() {
            // Changed outside an input (a reload): the rules, scanned.
            return self.scanned_timeout();
        }
        let indexed = self.indexed_timeout();
        if self.check_timers_now() {
            // Exact: every indexed connection and redial deadline, and the
            // peers that make gossip wake the core, against the rules. The
            // global timers need no check (both paths read their rules),
            // and comparing this answer with `scanned_timeout` would be
            // racy: a user thread may start or drop a request, moving the
            // request deadline, between the two reads. (That comparison
            // failed once in CI, 5 s apart: a request's timeout.)
            self.check_timers();
        }
        indexed
    }

    /// Shuts the node down gracefully. New sends are refused at once
    /// ([`SendError::NodeShutdown`](crate::SendError::NodeShutdown)); what
    /// `send` already accepted for connected peers is still written out, for
    /// at most [`Tuning::drain_timeout`] (the core keeps reading, pinging and
    /// answering meanwhile, but dials and accepts nothing new). Then every
    /// peer gets a goodbye and every connection and mailbox closes; what was
    /// still queued is counted in `NodeStats::dropped_at_shutdown` and
    /// logged in one line. Keep feeding inputs and polling outputs until the
    /// connections are closed: [`is_draining`](Core::is_draining) says
    /// whether the drain still runs, [`poll_timeout`](Core::poll_timeout)
    /// includes its deadline.
    pub fn shutdown(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.node.inner.begin_shutdown();
        for peer in self.peers.values_mut() {
            peer.retry_at = None;
        }
        // Connections not up yet carry nothing to drain.
        let unfinished: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer().is_none())
            .map(|(&id, _)| id)
            .collect();
        for id in unfinished {
            self.drop_conn(now, id, CloseReason::ShuttingDown, true);
        }
        let queued: usize = self
            .node
            .inner
            .network()
            .outboxes()
            .map(|o| o.lock().queued())
            .sum();
        let timeout = self.tuning.drain_timeout;
        if timeout.is_zero() || self.drained() {
            tracing::info!(
                node = self.me.0,
                queued_bytes = queued,
                "node shutting down"
            );
            self.finish_shutdown(now);
        } else {
            tracing::info!(
                node = self.me.0,
                queued_bytes = queued,
                drain_timeout = ?timeout,
                "node shutting down: delivering queued messages first"
            );
            self.drain_until = Some(now + timeout);
        }
        self.sync_timers();
    }

    /// Whether every connected peer has been handed everything queued for
    /// it: its outbox is empty and the driver wrote all ciphertext.
    fn drained(&self) -> bool {
        let network = self.node.inner.network();
        self.conns.values().all(|c| match c.peer() {
            Some(peer) => {
                c.in_flight == 0
                    && c.control_bytes.is_empty()
                    && network.outbox(peer).is_none_or(|o| o.lock().queued() == 0)
            }
            None => true,
        })
    }

    /// Ends the drain once everything left or its deadline passed.
    fn check_drain(&mut self, now: Instant) {
        if self.drain_until.is_none() {
            return;
        }
        if self.drained() {
            tracing::debug!(node = self.me.0, "outbound queues drained");
            self.finish_shutdown(now);
        } else if self.is_due(Timer::Drain, now) {
            self.finish_shutdown(now);
        }
    }

    /// Drops (and counts) what is still queued, says goodbye to every peer
    /// and closes every connection and mailbox.
    fn finish_shutdown(&mut self, now: Instant) {
        self.drain_until = None;
        let mut dropped = 0u64;
        let mut peers = 0usize;
        for outbox in self.node.inner.network().outboxes() {
            let lost = {
                let mut state = outbox.lock();
                let lost = lifecycle::queued_messages(&state);
                state.clear();
                // From here a send that passed the shutdown check before it
                // was set is refused (`NodeShutdown`) instead of queued for
                // a link about to close.
                state.connected = false;
                lost
            };
            if lost > 0 {
                dropped += lost;
                peers += 1;
            }
        }
        if dropped > 0 {
            self.node
                .inner
                .counters
                .dropped_at_shutdown
                .fetch_add(dropped, Ordering::Relaxed);
            tracing::warn!(
                node = self.me.0,
                dropped,
                peers,
                drain_timeout = ?self.tuning.drain_timeout,
                "shutdown dropped {dropped} accepted messages that were still queued for {peers} peer(s) when the drain ended"
            );
        }
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                if c.peer().is_some() {
                    c.queue_frame(&Frame::Goodbye(handshake::goodbye_body(LEAVING)));
                }
                c.flush_control();
                c.tls.send_close_notify();
                send::transmit(&mut self.buffers, &mut self.outputs, id, c);
            }
            self.drop_conn(now, id, CloseReason::ShuttingDown, true);
        }
        self.node.inner.close_all_mailboxes();
    }

    /// Whether a graceful shutdown is still delivering queued messages
    /// (see [`shutdown`](Core::shutdown)).
    pub fn is_draining(&self) -> bool {
        self.drain_until.is_some()
    }

    /// When a draining shutdown gives up on what is still queued, while it
    /// drains.
    pub fn drain_deadline(&self) -> Option<Instant> {
        self.drain_until
    }

    /// Whether [`shutdown`](Core::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.shutting_down
    }
}
