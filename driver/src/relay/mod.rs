//! The Iris relay: programs written against an Iris binding (the Go one,
//! unmodified) attach to a running reign node over Iris's relay protocol
//! v1.0-draft2 on a loopback port, and use the cluster through it.
//!
//! Iris's model maps onto reign's existing machinery, with no protocol of
//! its own between nodes:
//!
//! - a **cluster** is a reign service group: a client that registers as a
//!   member gets a mailbox joined to the group; requests and tunnels go to
//!   the members in turn, cluster-wide (`RelayShared::pick_member`: Iris
//!   balances over the whole cluster, where reign's `Target::Service`
//!   prefers local members), and a broadcast reaches every member, its
//!   sender included;
//! - a **topic** is a reign topic (one subscriber mailbox per subscription);
//! - a **tunnel** is a reign tunnel; each Iris chunk travels as one tunnel
//!   message, so the relay never reassembles a message and the receiving
//!   binding does, as in Iris;
//! - payloads are `serde_bytes::ByteBuf` (reign's builtin `bytes` type), so
//!   reign's own members and publishers can talk to Iris clients; a request
//!   from a relay is an [`IrisRequest`], carrying the caller's original
//!   timeout, which the member's relay hands to its binding as Iris does
//!   (a reign member downcasts it; a reign caller's plain `ByteBuf`
//!   request reaches an Iris service with the time remaining).
//!
//! What the binding enforces itself (its `ServiceLimits` and `TopicLimits`:
//! handler threads, queued bytes, dropping a request queued past its
//! deadline) stays in the binding, as in Iris: the relay delivers, and a
//! request the binding drops times out at the caller's relay at the
//! caller's deadline.
//!
//! Files: `wire.rs` (encodings and the bounded decoder), `outbox.rs` (the
//! write queue and its task), `conn.rs` (one client: handshake, opcodes,
//! requests, events, close), `tunnel.rs` (tunnels and their two credit
//! windows). Every bound is a named constant below or in those files.

mod conn;
mod outbox;
mod tunnel;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use reign_proto::log_summary::LogSummary;
use reign_proto::poison::lock;
use serde::{Deserialize, Serialize};

use crate::accept::AcceptBackoff;
use crate::runtime::Runtime;
use crate::signal::{race, Either};
use crate::Reign;

pub use outbox::SOFT_CAP as OUTBOX_SOFT_CAP;
pub use tunnel::{
    CHUNK_LIMIT, FULL_GRANT_TUNNELS, MAX_TUNNELS, TUNNEL_CONFIRM_TIMEOUT, TUNNEL_GRANT,
};

/// Iris's relay port, the binding's default.
pub const DEFAULT_PORT: u16 = 55555;

/// How long a new client has to send its init packet: a connection that
/// says nothing holds a socket and a read buffer, so it may not linger.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest magic or version string read in the handshake: the real
/// ones are under 20 bytes, anything much longer is not Iris.
pub const MAX_HANDSHAKE_STRING: usize = 64;

/// The largest broadcast, request, reply or event payload a client may
/// send: Iris's default memory allowance of a binding (64 MiB), so any
/// larger message would be dropped by every default receiver anyway; it
/// also bounds what one client can make the relay hold while a packet
/// arrives.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// The longest fault string of a reply: an error message, not a payload.
pub const MAX_FAULT: usize = 64 << 10;

/// Requests one client may have waiting for replies at once; each holds a
/// task and a reply slot. Far above what the binding's benchmarks use (128
/// threads); a request over it is answered as timed out at once, and the
/// first such request of a client logs one WARN line (one per client).
pub const MAX_PENDING_REQUESTS: usize = 4096;

/// Requests delivered to a registered client and not yet answered (the
/// reign member's `max_in_flight`): the binding queues them itself under
/// its own `RequestThreads`, so this only bounds the reply slots the relay
/// holds; beyond it requests wait in reign's backlog under its byte cap.
pub const MEMBER_MAX_IN_FLIGHT: usize = 1024;

/// Bytes that may wait for one registered client or subscription in reign
/// (the member's `max_queued_bytes`): Iris's default memory allowance.
pub const MEMBER_MAX_QUEUED_BYTES: usize = 64 << 20;

/// Topics one client may be subscribed to at once; each costs a mailbox,
/// a task and a directory entry (nodes hold at most 8192 by default). A
/// subscription over it drops the client (`opClose` with the reason and
/// the one WARN line of a dropped client); subscribing again to a topic
/// it has is a no-op, even at the cap.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

/// Clients attached to one relay at once by default
/// ([`RelayOptions::max_clients`]); each costs a read buffer
/// ([`wire::READ_BUFFER`]) and a few tasks. Past it a new connection is
/// closed at once, before its handshake, and counted in
/// [`RelayStats::refused_clients`]; the refusals cost one summary line per
/// [`SUMMARY_INTERVAL`](reign_proto::log_summary::SUMMARY_INTERVAL) while
/// they last, none per connection.
pub const MAX_CLIENTS: usize = 8192;

/// The pause between two looks for a member when a request or tunnel
/// finds its cluster empty: a member registered through another node's
/// relay may not have reached this node's directory yet. Iris drops such a
/// request and lets it time out; reign keeps looking until the deadline.
pub const NO_MEMBER_RETRY: Duration = Duration::from_millis(10);

/// How long the close of a client may take to flush what is queued for
/// it, before its socket is shut anyway.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A request sent through a relay: its payload and the caller's original
/// timeout, which the member's relay gives its binding as Iris does (reign
/// members read the deadline itself, [`Request::time_remaining`](reign_proto::Request::time_remaining)).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IrisRequest {
    /// The caller's timeout, in milliseconds.
    pub timeout_ms: u64,
    /// The request's bytes.
    pub payload: serde_bytes::ByteBuf,
}

/// The wire name of [`IrisRequest`]; every node serving a relay registers it.
pub const IRIS_REQUEST_TYPE: &str = "reign.iris.Request";

/// How a relay may be served.
#[derive(Clone, Copy, Debug)]
pub struct RelayOptions {
    /// Allow a non-loopback address. Iris relays listen on loopback only:
    /// the protocol has no authentication and no encryption.
    pub allow_public: bool,
    /// Clients attached at once; past it a new connection is closed at
    /// once. [`MAX_CLIENTS`] by default; lower it to bound what a relay
    /// may cost (each client holds a socket, a read buffer and a few
    /// tasks), or for tests.
    pub max_clients: usize,
}

impl Default for RelayOptions {
    /// Loopback only, at most [`MAX_CLIENTS`] clients.
    fn default() -> RelayOptions {
        RelayOptions {
            allow_public: false,
            max_clients: MAX_CLIENTS,
        }
    }
}

/// A snapshot of what a relay holds for its clients ([`Relay::stats`]):
/// every per-client bound summed over the clients, to watch a relay's
/// load and to check that a client's end gives everything back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Clients attached (or in their handshake) now.
    pub clients: usize,
    /// Client states still in memory: the attached clients and those
    /// whose tasks are still ending. Equal to `clients` once every task of
    /// a closed client has ended; more for long would be a leak.
    pub client_states: usize,
    /// Requests of the clients waiting for their replies (at most
    /// [`MAX_PENDING_REQUESTS`] per client).
    pub pending_requests: usize,
    /// Topics the clients are subscribed to (at most [`MAX_SUBSCRIPTIONS`]
    /// per client).
    pub subscriptions: usize,
    /// Tunnels of the clients, open or opening, both directions (at most
    /// [`MAX_TUNNELS`] per client).
    pub tunnels: usize,
    /// Bytes queued for the clients' sockets, not yet handed to them (the
    /// producers of bulk wait at [`OUTBOX_SOFT_CAP`] per client; control
    /// packets and answers to refused operations wait too, from the
    /// client's reading, so a client that does not read holds back itself).
    pub queued_bytes: usize,
    /// Clients dropped for breaking the protocol (or by the relay's or
    /// the node's end) since the relay started.
    pub dropped_clients: u64,
    /// Connections closed at once since the relay started because
    /// [`RelayOptions::max_clients`] clients were attached.
    pub refused_clients: u64,
}

/// What one client holds, read for [`Relay::stats`].
pub(crate) trait ClientLoad: Send + Sync {
    /// Adds its pending requests, subscriptions, tunnels and queued bytes
    /// to `stats`.
    fn add_to(&self, stats: &mut RelayStats);
}

/// Why a relay could not start.
#[derive(Debug)]
pub enum RelayError {
    /// A non-loopback address without [`RelayOptions::allow_public`].
    NotLoopback(SocketAddr),
    /// The node is a local one (no runtime to serve from) or shut down.
    NotRunning,
    /// The listener could not bind.
    Bind(std::io::Error),
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayError::NotLoopback(a) => write!(
                f,
                "relay address {a} is not loopback (the Iris relay protocol has no \
                 authentication; allow it explicitly to serve it elsewhere)"
            ),
            RelayError::NotRunning => write!(f, "the node is not running"),
            RelayError::Bind(e) => write!(f, "cannot listen for relay clients: {e}"),
        }
    }
}

impl std::error::Error for RelayError {}

/// What a relay's clients share: counters and the stop signal.
pub(crate) struct RelayShared {
    pub(crate) clients: AtomicUsize,
    pub(crate) next_client: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// Connections closed at once for being over `max_clients`.
    pub(crate) refused: AtomicU64,
    pub(crate) max_clients: usize,
    /// Every client state in memory, by id: added when a client is
    /// created, removed when it is freed (`Client`'s `Drop`).
    pub(crate) states: Mutex<HashMap<u64, Weak<dyn ClientLoad>>>,
    /// Closed (never sent on) when the relay stops.
    pub(crate) stopped: async_channel::Receiver<()>,
    /// Turns of the members' rotation.
    pub(crate) turn: AtomicU64,
}

impl RelayShared {
    /// The member of `cluster` the next request or tunnel goes to: the
    /// members this node knows of on every node, in turn (Iris balances
    /// over the whole cluster; reign's own `Target::Service` prefers local
    /// members). `None` when the cluster has no member.
    pub(crate) fn pick_member<R: Runtime>(
        &self,
        node: &Reign<R>,
        cluster: &str,
    ) -> Option<reign_proto::Address> {
        let mut members = node.members(cluster);
        if members.is_empty() {
            return None;
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let at = (turn % members.len() as u64) as usize;
        Some(members.swap_remove(at))
    }
}

/// A relay serving Iris clients from a node. Dropping it (or
/// [`stop`](Relay::stop)) closes the listener and every client (each gets
/// a close notice with the reason).
pub struct Relay {
    local_addr: SocketAddr,
    stop: async_channel::Sender<()>,
    shared: Arc<RelayShared>,
}

impl Relay {
    /// The address the relay listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Clients attached right now.
    pub fn clients(&self) -> usize {
        self.shared.clients.load(Ordering::Relaxed)
    }

    /// Clients dropped for breaking the protocol since the relay started.
    pub fn dropped_clients(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// What the relay holds for its clients right now, and its counters.
    /// Walks every client (for monitoring and tests, not a hot path).
    pub fn stats(&self) -> RelayStats {
        let shared = &self.shared;
        let states: Vec<Weak<dyn ClientLoad>> = lock(&shared.states).values().cloned().collect();
        let mut stats = RelayStats {
            clients: shared.clients.load(Ordering::Relaxed),
            client_states: states.len(),
            dropped_clients: shared.dropped.load(Ordering::Relaxed),
            refused_clients: shared.refused.load(Ordering::Relaxed),
            ..RelayStats::default()
        };
        for state in states.iter().filter_map(Weak::upgrade) {
            state.add_to(&mut stats);
        }
        stats
    }

    /// Stops the relay: no new clients, and every client is closed.
    pub fn stop(&self) {
        self.stop.close();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.close();
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("local_addr", &self.local_addr)
            .field("clients", &self.clients())
            .finish()
    }
}

impl<R: Runtime> Reign<R> {
    /// Serves an Iris relay (protocol v1.0-draft2) on `address`, so
    /// programs using an Iris binding can use this node's cluster: clusters
    /// are service groups, topics are topics, tunnels are tunnels (see the
    /// `relay` module's notes in ARCHITECTURE.md and docs/IRIS.md). Loopback
    /// only unless `options.allow_public`. Works on every runtime; the relay
    /// stops when the returned handle is dropped or the node shuts down.
    pub async fn serve_relay(
        &self,
        address: SocketAddr,
        options: RelayOptions,
    ) -> Result<Relay, RelayError> {
        if !address.ip().is_loopback() && !options.allow_public {
            return Err(RelayError::NotLoopback(address));
        }
        if self.running.is_none() || self.node.is_shut_down() {
            return Err(RelayError::NotRunning);
        }
        // Idempotent; failing only if another type took the name.
        let _ = reign_proto::register_type_named::<IrisRequest>(IRIS_REQUEST_TYPE);
        let listener = self
            .rt
            .bind(&address.to_string())
            .await
            .map_err(RelayError::Bind)?;
        let local_addr = R::local_addr(&listener).map_err(RelayError::Bind)?;
        let (stop, stopped) = async_channel::bounded(1);
        let shared = Arc::new(RelayShared {
            clients: AtomicUsize::new(0),
            next_client: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            max_clients: options.max_clients,
            states: Mutex::new(HashMap::new()),
            stopped,
            turn: AtomicU64::new(0),
        });
        tracing::info!(node = self.node.id().0, %local_addr, "Iris relay listening");
        let node = self.clone();
        let accept_shared = shared.clone();
        self.rt
            .spawn(async move { accept_loop(node, listener, accept_shared).await });
        Ok(Relay {
            local_addr,
            stop,
            shared,
        })
    }
}

async fn accept_loop<R: Runtime>(node: Reign<R>, listener: R::Listener, shared: Arc<RelayShared>) {
    let mut backoff = AcceptBackoff::new(node.id().0);
    let refused = LogSummary::new("relay clients refused");
    loop {
        let stop = race(shared.stopped.recv(), node.stopped());
        // The refusals' summary is written when due even if no connection
        // comes after the burst (accepting is cancel-safe on every runtime).
        let due = refused.due();
        let rt = node.rt.clone();
        let summary_due = async move {
            match due {
                Some(at) => rt.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let accepted = match race(race(R::accept(&listener), summary_due), stop).await {
            Either::Left(Either::Left(result)) => result,
            Either::Left(Either::Right(())) => {
                refused.tick(Instant::now(), node.id().0);
                continue;
            }
            Either::Right(_) => break,
        };
        match accepted {
            Ok((reader, writer, peer)) => {
                backoff.succeeded(Instant::now());
                if shared.clients.load(Ordering::Relaxed) >= shared.max_clients {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(node = node.id().0, %peer, "relay client refused: over max_clients");
                    refused.record("over max_clients clients");
                    refused.tick(Instant::now(), node.id().0);
                    drop((reader, writer));
                    continue;
                }
                shared.clients.fetch_add(1, Ordering::Relaxed);
                let id = shared.next_client.fetch_add(1, Ordering::Relaxed);
                let client = conn::Client::new(node.clone(), shared.clone(), id, peer);
                let count = shared.clone();
                node.rt.spawn(async move {
                    client.serve(reader, writer).await;
                    count.clients.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(e) => {
                let pause = backoff.failed(Instant::now(), &e);
                if let Either::Right(_) = race(node.rt.sleep(pause), shared.stopped.recv()).await {
                    break;
                }
            }
        }
    }
    tracing::info!(node = node.id().0, "Iris relay stopped");
}
