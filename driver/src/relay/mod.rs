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

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
/// threads); a request over it is answered as timed out at once.
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
/// a task and a directory entry (nodes hold at most 8192 by default).
pub const MAX_SUBSCRIPTIONS: usize = 1024;

/// Clients attached to one relay at once; each costs a read buffer
/// ([`wire::READ_BUFFER`]) and a few tasks. Past it a new client is
/// closed at once (one summary line a minute).
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
#[derive(Clone, Copy, Debug, Default)]
pub struct RelayOptions {
    /// Allow a non-loopback address. Iris relays listen on loopback only:
    /// the protocol has no authentication and no encryption.
    pub allow_public: bool,
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
    let refused = reign_proto::log_summary::LogSummary::new("relay clients refused");
    loop {
        let stop = race(shared.stopped.recv(), node.stopped());
        let accepted = match race(R::accept(&listener), stop).await {
            Either::Left(result) => result,
            Either::Right(_) => break,
        };
        match accepted {
            Ok((reader, writer, peer)) => {
                backoff.succeeded(Instant::now());
                if shared.clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
                    refused.record("over MAX_CLIENTS clients");
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
