//! The driver shared by reign's runtime adapters.
//!
//! Everything that is the same on tokio, async-std and smol lives here once:
//! the driver task that owns the Sans-IO [`Core`] and
//! polls every socket itself (reads go straight into the core, transmits
//! straight into the sockets: see `driver.rs`), a task per dial, the accept
//! loop, clean shutdown, and the runtime-generic [`Reign`] node. An
//! adapter supplies only a [`Runtime`]: spawn, sockets and a timer; its
//! [`adapter!`] call wraps `Reign` in the `Node` type applications use.

mod accept;
#[cfg(feature = "admin")]
pub mod admin;
mod dev;
mod driver;
pub mod relay;
mod runtime;
mod signal;
pub mod sockopt;
mod supervisor;
mod tunnel_io;

/// Everything an application needs besides the node type itself. Each
/// adapter re-exports this module whole, so the three share one API.
pub mod api {
    pub use reign_proto::{
        register_type, register_type_named, Address, BatchError, Capacity, ClusterSpec,
        ConnectionStatus, Exit, ExitReason, Incarnation, IncomingTunnel, Limits, Mailbox,
        MailboxClosed, MailboxId, Message, MultipleClaim, NodeId, NodeStats, PeerStats, RecvError,
        RegistryError, ReloadError, Reloaded, Request, RequestError, RequestTables, Responder,
        SendError, Target, TaskExit, Tuning, TunnelError, MAX_RECENT_EXITS, MESSAGE_COST,
    };
    pub use reign_proto::{Call, TypedAddress, TypedMailbox, TypedResponder};

    pub use crate::relay::{IrisRequest, Relay, RelayError, RelayOptions};
    pub use crate::supervisor::{
        ChildError, ChildInfo, ChildSpec, ChildState, IntoReign, Restart, Shutdown, Strategy,
        SupervisorHandle, SupervisorSpec, DEFAULT_MAX_CHILDREN, DEFAULT_MAX_RESTARTS,
        DEFAULT_NODE_SHUTDOWN_TIMEOUT, DEFAULT_PERIOD, DEFAULT_SHUTDOWN_TIMEOUT,
    };
    pub use crate::tunnel_io::TunnelIo;
    pub use crate::StartError;
}

use std::net::SocketAddr;
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reign_proto::{
    Address, ClusterSpec, ConnectionStatus, Core, CoreConfig, Incarnation, IncomingTunnel, Mailbox,
    Message, Node, NodeId, RecvError, ReloadError, Reloaded, RequestError, SpecError, Target,
    TaskExit, TunnelError,
};

use driver::{CloseReasons, Driver, DriverEvent, Failure, EVENT_BACKLOG};
use reign_proto::poison::lock;
pub use runtime::Runtime;
use signal::{race, Either, Stop};
pub use tunnel_io::TunnelIo;

/// Why a node could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The cluster spec is invalid for this node.
    Spec(SpecError),
    /// Development mode could not set up its directory.
    Dev {
        /// The dev directory.
        dir: std::path::PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The listener could not bind.
    Bind {
        /// The address from the spec.
        address: String,
        /// The OS error.
        error: std::io::Error,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Spec(e) => write!(f, "{e}"),
            StartError::Bind { address, error } => write!(f, "cannot listen on {address}: {error}"),
            StartError::Dev { dir, error } => {
                write!(f, "dev directory {}: {error}", dir.display())
            }
        }
    }
}

/// Every variant wraps its cause: the [`SpecError`], or the OS error of the
/// dev directory or the listener.
impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Spec(e) => Some(e),
            StartError::Dev { error, .. } | StartError::Bind { error, .. } => Some(error),
        }
    }
}

impl From<SpecError> for StartError {
    fn from(e: SpecError) -> StartError {
        StartError::Spec(e)
    }
}

struct Running<R: Runtime> {
    commands: async_channel::Sender<DriverEvent<R>>,
    finished: async_channel::Receiver<()>,
    local_addr: SocketAddr,
    failure: Failure,
    /// Why each peer's last connection closed (read by the admin endpoint).
    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    close_reasons: CloseReasons,
    /// A dev node's claim on its id, given up at shutdown.
    dev_claim: std::sync::Mutex<Option<dev::Claim>>,
}

/// A running reign node on runtime `R`, for code written once for every
/// runtime. Applications hold their adapter's `Node` (`reign_tokio::Node`,
/// …), which wraps this type and whose page lists every method.
///
/// Dereferences to the [`reign_proto::Node`] handle: `new_mailbox`,
/// `address_of`, `stats` and the rest work directly on it.
pub struct Reign<R: Runtime> {
    node: Node,
    rt: R,
    running: Option<Arc<Running<R>>>,
}

impl<R: Runtime> Clone for Reign<R> {
    fn clone(&self) -> Self {
        Reign {
            node: self.node.clone(),
            rt: self.rt.clone(),
            running: self.running.clone(),
        }
    }
}

impl<R: Runtime + Default> Reign<R> {
    /// A node with no network (Go reign's `NoClustering`): mailboxes,
    /// addresses and close notifications work locally; no socket opens.
    pub fn local() -> Reign<R> {
        Reign {
            node: Node::local(Incarnation::from_system_time(SystemTime::now())),
            rt: R::default(),
            running: None,
        }
    }

    /// Starts node `id` of the cluster `spec`: binds its listener and
    /// spawns the driver, which dials the peers this node is responsible for.
    pub async fn start(spec: &ClusterSpec, id: NodeId) -> Result<Reign<R>, StartError> {
        Reign::start_on(R::default(), spec, id).await
    }

    /// Starts a development node with no configuration: nodes started with
    /// the same `dir` on this machine form a cluster on loopback. The first
    /// makes a throw-away CA in `dir`; each takes the lowest free node id,
    /// listens on a free loopback port, records it in `dir` and connects to
    /// the others recorded there (re-read twice a second, so later nodes
    /// are found too). A clean shutdown gives the id back.
    ///
    /// **Insecure for production**: whoever can read `dir` holds the CA key
    /// and can join. The node logs this loudly.
    ///
    /// ```no_run
    /// # async fn demo<R: reign_driver::Runtime + Default>() {
    /// let node = reign_driver::Reign::<R>::start_dev("/tmp/my-dev-cluster").await.unwrap();
    /// println!("I am {}", node.id());
    /// # }
    /// ```
    pub async fn start_dev(dir: impl AsRef<std::path::Path>) -> Result<Reign<R>, StartError> {
        let dir = dir.as_ref().to_path_buf();
        let dev_error = |error| StartError::Dev {
            dir: dir.clone(),
            error,
        };
        tracing::warn!(
            dir = %dir.display(),
            "DEVELOPMENT MODE: a throw-away CA whose key sits in this directory; anyone \
             who can read it can join the cluster. Never use --dev / start_dev in production."
        );
        let ca = dev::load_or_make_ca(&dir).map_err(dev_error)?;
        // A free loopback port, held until the claim records it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").map_err(dev_error)?;
        let address = port.local_addr().map_err(dev_error)?.to_string();
        let claim = dev::claim_id(&dir, &address).map_err(dev_error)?;
        let id = claim.id;
        let members = dev::members(&dir);
        let mut spec = match dev::spec(&ca, id, &address, &members) {
            Ok(spec) => spec,
            Err(e) => {
                claim.release();
                return Err(dev_error(e));
            }
        };
        drop(port);
        let node = match Reign::start_on(R::default(), &spec, id).await {
            Ok(node) => node,
            Err(e) => {
                claim.release();
                return Err(e);
            }
        };
        tracing::warn!(node = id.0, %address, dir = %dir.display(), "development node started (insecure: see above)");
        if let Some(running) = &node.running {
            *lock(&running.dev_claim) = Some(claim);
        }
        let watcher = node.clone();
        node.rt.spawn(async move {
            let mut known = members;
            loop {
                watcher.rt.sleep(dev::RESCAN).await;
                if watcher.node.is_shut_down() {
                    return;
                }
                let now = dev::members(&dir);
                if now == known {
                    continue;
                }
                spec.nodes = dev::spec_nodes(id, &address, &now);
                if let Err(e) = watcher.reload(&spec).await {
                    tracing::warn!(node = id.0, error = %e, "dev directory reload failed");
                }
                known = now;
            }
        });
        Ok(node)
    }
}

impl<R: Runtime> Reign<R> {
    /// [`start`](Reign::start) with an explicit runtime handle.
    pub async fn start_on(rt: R, spec: &ClusterSpec, id: NodeId) -> Result<Reign<R>, StartError> {
        let resolved = spec.resolve(id, rustls::pki_types::UnixTime::now())?;
        let listen = resolved.me().listen_addr().to_owned();
        let listener = rt.bind(&listen).await.map_err(|error| StartError::Bind {
            address: listen.clone(),
            error,
        })?;
        let local_addr = R::local_addr(&listener).map_err(|error| StartError::Bind {
            address: listen.clone(),
            error,
        })?;
        let wall = SystemTime::now();
        let incarnation = Incarnation::from_system_time(wall);
        let core = Core::new(
            CoreConfig {
                spec: resolved,
                incarnation,
                seed: incarnation.0 ^ u64::from(std::process::id()).rotate_left(32),
                time_provider: reign_proto::tls::system_time(),
            },
            Instant::now(),
        )?;
        let node = core.node().clone();
        let (events_tx, events) = async_channel::bounded(EVENT_BACKLOG);
        let (guard, tasks_done) = async_channel::bounded::<()>(1);
        let stop_accept = Stop::default();
        let (finished_tx, finished) = async_channel::bounded::<()>(1);

        let accept_events = events_tx.clone();
        let accept_guard = guard.clone();
        let accept_stop = stop_accept.clone();
        let accept_rt = rt.clone();
        rt.spawn(async move {
            let _guard = accept_guard;
            let mut backoff = accept::AcceptBackoff::new(id.0);
            loop {
                match accept_stop.guard(R::accept(&listener)).await {
                    None => return,
                    Some(Ok((reader, writer, label))) => {
                        backoff.succeeded(Instant::now());
                        let event = DriverEvent::Accepted {
                            reader,
                            writer,
                            label,
                        };
                        if accept_stop.guard(accept_events.send(event)).await.is_none() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        let pause = backoff.failed(Instant::now(), &e);
                        if accept_stop.guard(accept_rt.sleep(pause)).await.is_none() {
                            return;
                        }
                    }
                }
            }
        });

        let failure = Failure::default();
        let driver = Driver::new(
            rt.clone(),
            core,
            events,
            events_tx.clone(),
            (guard, tasks_done),
            stop_accept,
            failure.clone(),
        );
        let close_reasons = driver.close_reasons.clone();
        let stop_on_panic = driver.stop_accept.clone();
        let panic_failure = failure.clone();
        let panic_node = node.clone();
        rt.spawn(async move {
            // A panic in the driver task is a failure of the node (what a
            // supervisor restarts), not a clean stop: it is recorded before
            // `stopped` returns, the listener is let go and the mailboxes
            // close.
            let run = futures_lite::FutureExt::catch_unwind(AssertUnwindSafe(driver.run()));
            if let Err(payload) = run.await {
                let text = panic_text(&*payload);
                tracing::error!(node = id.0, panic = %text, "the driver task panicked: the node stops");
                lock(&panic_failure).get_or_insert(format!("the driver task panicked: {text}"));
                stop_on_panic.stop();
                panic_node.close_all_mailboxes();
            }
            drop(finished_tx);
        });
        tracing::info!(node = id.0, %local_addr, "node started");
        Ok(Reign {
            node,
            rt,
            running: Some(Arc::new(Running {
                commands: events_tx,
                finished,
                local_addr,
                failure,
                close_reasons,
                dev_claim: std::sync::Mutex::new(None),
            })),
        })
    }

    /// The node handle (also reachable through `Deref`).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Spawns a task with its own mailbox on this node's runtime and
    /// returns the mailbox's address (see [`Node::task`] for the whole
    /// contract). The mailbox closes with the task's exit reason: the
    /// future returns (`()`/`Ok` normal, `Err` an error), panics (caught,
    /// with its message), or is ended through its address
    /// ([`Address::kill`](reign_proto::Address::kill)), a linked exit or
    /// the node's shutdown.
    ///
    /// ```no_run
    /// # async fn spawn<R: reign_driver::Runtime>(node: reign_driver::Reign<R>) {
    /// use reign_driver::api::{ExitReason, MailboxClosed};
    ///
    /// let (watcher, notes) = node.new_mailbox();
    /// let worker = node.spawn(|mailbox| async move {
    ///     let n: u32 = mailbox.recv_type().await.map_err(|e| e.to_string())?;
    ///     if n == 0 {
    ///         return Err("zero".to_string());
    ///     }
    ///     Ok(())
    /// });
    /// worker.on_close_notify(&watcher);
    /// worker.send(0u32).unwrap();
    /// let note: MailboxClosed = notes.recv_type().await.unwrap();
    /// assert_eq!(note.reason, ExitReason::Error("zero".into()));
    /// # }
    /// ```
    pub fn spawn<F, Fut>(&self, f: F) -> Address
    where
        F: FnOnce(Mailbox) -> Fut + Send + 'static,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: TaskExit,
    {
        let (address, task) = self.node.task(f);
        self.rt.spawn(task);
        address
    }

    /// [`spawn`](Reign::spawn), with the task's mailbox linked to `to`
    /// before the task starts (Erlang's `spawn_link`; see
    /// [`Mailbox::link`]).
    pub fn spawn_linked<F, Fut>(&self, to: &Address, f: F) -> Address
    where
        F: FnOnce(Mailbox) -> Fut + Send + 'static,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: TaskExit,
    {
        let (address, task) = self.node.task_linked(to, f);
        self.rt.spawn(task);
        address
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().map(|r| r.local_addr)
    }

    /// Shuts the node down gracefully and returns once every task is gone.
    /// New sends fail with [`SendError::NodeShutdown`](reign_proto::SendError::NodeShutdown)
    /// from the start; what `send` already accepted is delivered first, for
    /// at most [`Tuning::drain_timeout`](reign_proto::Tuning::drain_timeout)
    /// (what is left then is dropped, counted in
    /// `NodeStats::dropped_at_shutdown` and logged); then every connection
    /// gets a goodbye and closes (each may flush for 2 s more), and every
    /// mailbox closes. Idempotent; other clones of this handle see the node
    /// shut down.
    pub async fn shutdown(&self) {
        match &self.running {
            Some(running) => {
                let _ = running.commands.send(DriverEvent::Shutdown).await;
                let _ = running.finished.recv().await;
                let claim = lock(&running.dev_claim).take();
                if let Some(claim) = claim {
                    claim.release();
                }
            }
            None => self.node.close_all_mailboxes(),
        }
    }

    /// Stops the node with a failure: what the node does by itself when
    /// another process holds its id, here for the application's own reason
    /// (a failed health check; Go reign's `Cluster` panics so that suture
    /// restarts it). The node shuts down as [`shutdown`](Reign::shutdown)
    /// does, and [`failure`](Reign::failure) returns `reason` from then on
    /// (the first failure wins), so a supervisor running it as a
    /// [`ChildSpec::node`](crate::api::ChildSpec::node) starts it again,
    /// where a clean shutdown would leave it stopped. Returns once the node
    /// has stopped. A local node has nothing to restart: it closes its
    /// mailboxes and records nothing.
    pub async fn fail(&self, reason: impl Into<String>) {
        if let Some(running) = &self.running {
            let reason = reason.into();
            tracing::error!(node = self.node.id().0, %reason, "node failed: stopping");
            lock(&running.failure).get_or_insert(reason);
        }
        self.shutdown().await;
    }

    /// Re-reads membership from `spec` while the node runs (what `reign
    /// node` does on SIGHUP): nodes it adds are connected, nodes it no
    /// longer lists are told goodbye and refused from then on, and changed
    /// addresses are used for the next dial. Renewed TLS material (a node
    /// certificate and key, a CA bundle during a rollover) is used for new
    /// connections, while links that are up keep theirs. An invalid spec,
    /// one for another node, or one sharing no CA with this node's, is
    /// refused with the reason and the node keeps its old view and
    /// material; tuning keeps its values from the start. Members learned
    /// from peers (in none of this node's
    /// specs) are not removed by being absent; see
    /// [`Core::reload`](reign_proto::Core::reload).
    ///
    /// ```no_run
    /// # async fn demo(node: reign_driver::Reign<impl reign_driver::Runtime>) {
    /// let spec = reign_proto::ClusterSpec::load("cluster.json").unwrap();
    /// match node.reload(&spec).await {
    ///     Ok(changes) => println!("added {:?}, removed {:?}", changes.added, changes.removed),
    ///     Err(e) => eprintln!("kept the old spec: {e}"),
    /// }
    /// # }
    /// ```
    pub async fn reload(&self, spec: &ClusterSpec) -> Result<Reloaded, ReloadError> {
        let Some(running) = &self.running else {
            return Err(ReloadError::ShuttingDown);
        };
        let resolved = spec.resolve(self.node.id(), rustls::pki_types::UnixTime::now())?;
        let (reply, outcome) = async_channel::bounded(1);
        let command = DriverEvent::Reload {
            spec: Box::new(resolved),
            reply,
        };
        if running.commands.send(command).await.is_err() {
            return Err(ReloadError::ShuttingDown);
        }
        outcome
            .recv()
            .await
            .unwrap_or(Err(ReloadError::ShuttingDown))
    }

    /// Why the node stopped with a failure, if it did: another process with
    /// its id was live in the cluster (see `Event::IdentityConflict`), its
    /// driver task panicked, or [`fail`](Reign::fail) was called. `None`
    /// after a clean [`shutdown`](Reign::shutdown).
    pub fn failure(&self) -> Option<String> {
        let running = self.running.as_ref()?;
        let failure = lock(&running.failure);
        failure.clone()
    }

    /// Waits until the node has stopped (after [`shutdown`](Reign::shutdown)
    /// or by itself, see [`failure`](Reign::failure)).
    pub async fn stopped(&self) {
        if let Some(running) = &self.running {
            let _ = running.finished.recv().await;
        }
    }

    /// Waits until every node in `peers` is connected, or the timeout passes.
    /// Returns whether they all are.
    pub async fn wait_for_peers(&self, peers: &[NodeId], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (watcher, statuses) = self.node.new_mailbox();
        self.node.subscribe_connection_status(&watcher);
        loop {
            if peers.iter().all(|&p| self.node.is_connected(p)) {
                return true;
            }
            if recv_until(&self.rt, &statuses, deadline).await.is_err() {
                return peers.iter().all(|&p| self.node.is_connected(p));
            }
        }
    }

    /// Waits until `peer` is disconnected, or the timeout passes.
    pub async fn wait_for_disconnect(&self, peer: NodeId, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (watcher, statuses) = self.node.new_mailbox();
        self.node.subscribe_connection_status(&watcher);
        loop {
            if !self.node.is_connected(peer) {
                return true;
            }
            match recv_until(&self.rt, &statuses, deadline).await {
                Ok(msg) => {
                    if msg
                        .downcast::<ConnectionStatus>()
                        .is_ok_and(|s| s.node == peer && !s.connected)
                    {
                        return true;
                    }
                }
                Err(_) => return !self.node.is_connected(peer),
            }
        }
    }

    /// Sends a request to one member of a service group (or to an address)
    /// and waits at most `timeout` (capped at
    /// [`MAX_REQUEST_TIMEOUT`](reign_proto::services::MAX_REQUEST_TIMEOUT))
    /// for its reply. The member sees the time remaining
    /// ([`Request::time_remaining`](reign_proto::Request::time_remaining));
    /// if the request still waits for a handler slot when it runs out, it is
    /// discarded there and never runs. Dropping the future (a `select!` that
    /// took another branch) gives everything back the same way. See
    /// [`Node::request`](reign_proto::Node::request) for the errors.
    pub async fn request<'a, T>(
        &self,
        target: impl Into<Target<'a>>,
        value: T,
        timeout: Duration,
    ) -> Result<Message, RequestError>
    where
        T: std::any::Any + Send + serde::Serialize,
    {
        // The deadline travels with the request; dropping `reply` when the
        // backstop fires calls the request off wherever it still waits.
        let timeout = timeout.min(reign_proto::services::MAX_REQUEST_TIMEOUT);
        let deadline = Instant::now() + timeout;
        // Whatever the request logs, here and in the node, is logged in
        // its span (DEBUG: a span per request costs too much at INFO).
        let span = tracing::debug_span!("request", node = self.node.id().0, ?timeout);
        let reply = span.in_scope(|| self.node.request(target, value, deadline));
        // The core times requests out itself; the runtime's timer is the
        // backstop for nodes without a core (local-only).
        let outcome = match race(
            tracing::Instrument::instrument(reply, span.clone()),
            self.rt.sleep_until(deadline + Duration::from_millis(5)),
        )
        .await
        {
            Either::Left(result) => result,
            Either::Right(()) => Err(RequestError::Timeout),
        };
        if let Err(e) = &outcome {
            span.in_scope(|| tracing::debug!(error = %e, "request failed"));
        }
        outcome
    }

    /// A typed [`request`](Reign::request): sends a `Q`, waits at most
    /// `timeout`, and returns its [`Call::Reply`](reign_proto::Call::Reply)
    /// (see [`reign_proto::typed`]); a reply of another type is
    /// [`RequestError::UnexpectedReply`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use reign_driver::api::Call;
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Double(u64);
    /// impl Call for Double {
    ///     type Reply = u64;
    /// }
    ///
    /// # async fn demo<R: reign_driver::Runtime>(node: reign_driver::Reign<R>) {
    /// let reply: u64 = node
    ///     .call("doubler", Double(21), Duration::from_secs(1))
    ///     .await
    ///     .unwrap();
    /// # }
    /// ```
    pub async fn call<'a, Q: reign_proto::Call>(
        &self,
        target: impl Into<Target<'a>>,
        request: Q,
        timeout: Duration,
    ) -> Result<Q::Reply, RequestError> {
        let reply = self.request(target, request, timeout).await?;
        reign_proto::typed::reply_as::<Q::Reply>(reply)
    }

    /// Opens a tunnel to one member of a service group (or an address),
    /// waiting at most `timeout` for the member to accept. On a timeout (or
    /// if this future is dropped) the half-open tunnel is closed: its entry
    /// goes on both nodes, and a member that accepts afterwards gets an error
    /// (or, if its accept crossed the close, a tunnel that reports it closed).
    pub async fn tunnel<'a>(
        &self,
        target: impl Into<Target<'a>>,
        timeout: Duration,
    ) -> Result<Tunnel<R>, TunnelError> {
        let opening = self.node.open_tunnel(target);
        match race(opening, self.rt.sleep(timeout)).await {
            Either::Left(result) => result.map(|inner| Tunnel {
                inner,
                rt: self.rt.clone(),
            }),
            Either::Right(()) => Err(TunnelError::Timeout),
        }
    }

    /// Accepts a tunnel offered to one of this node's mailboxes.
    pub fn accept_tunnel(&self, incoming: IncomingTunnel) -> Result<Tunnel<R>, TunnelError> {
        incoming.accept().map(|inner| Tunnel {
            inner,
            rt: self.rt.clone(),
        })
    }

    /// Receives from `mailbox`, giving up after `timeout`.
    pub async fn recv_timeout(
        &self,
        mailbox: &Mailbox,
        timeout: Duration,
    ) -> Result<Message, RecvError> {
        recv_timeout(&self.rt, mailbox, timeout).await
    }
}

impl<R: Runtime> Deref for Reign<R> {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.node
    }
}

impl<R: Runtime> std::fmt::Debug for Reign<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reign")
            .field("node", &self.node)
            .field("local_addr", &self.local_addr())
            .finish()
    }
}

/// A tunnel end on runtime `R`: [`reign_proto::Tunnel`] with timeouts.
/// Dropping it closes the tunnel.
pub struct Tunnel<R: Runtime> {
    inner: reign_proto::Tunnel,
    rt: R,
}

impl<R: Runtime> Tunnel<R> {
    /// Sends one message (any size up to `max_message_len`, whatever the
    /// credit window), waiting at most `timeout` for credit. A message over
    /// `max_message_len` fails at once with [`TunnelError::TooLarge`]. A
    /// timeout (or dropping this future) part way through a message discards
    /// it at the other end, which gives its credit back; the tunnel stays
    /// usable.
    pub async fn send(
        &self,
        message: impl Into<bytes::Bytes>,
        timeout: Duration,
    ) -> Result<(), TunnelError> {
        match race(self.inner.send(message), self.rt.sleep(timeout)).await {
            Either::Left(result) => result,
            Either::Right(()) => Err(TunnelError::Timeout),
        }
    }

    /// Receives the next message, waiting at most `timeout`. A timeout (or
    /// dropping this future) loses nothing: the next receive gets the message.
    pub async fn recv(&self, timeout: Duration) -> Result<bytes::Bytes, TunnelError> {
        match race(self.inner.recv(), self.rt.sleep(timeout)).await {
            Either::Left(result) => result,
            Either::Right(()) => Err(TunnelError::Timeout),
        }
    }

    /// Closes the tunnel; the other end sees [`TunnelError::Closed`].
    pub fn close(&self) {
        self.inner.close();
    }

    /// The tunnel without timeouts.
    pub fn inner(&self) -> &reign_proto::Tunnel {
        &self.inner
    }

    /// This tunnel as a byte stream, message boundaries dropped: a
    /// [`TunnelIo`] implements `tokio::io::{AsyncRead, AsyncWrite}` and the
    /// `futures::io` traits, for `tokio::io::copy`, codecs or a TLS session
    /// inside the tunnel. Its reads and writes have no timeout of their own;
    /// wrap them in the runtime's.
    pub fn into_io(self) -> TunnelIo {
        TunnelIo::new(self.inner)
    }
}

impl<R: Runtime> std::fmt::Debug for Tunnel<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

/// The text of a panic's payload (a `&str` or a `String`, as `panic!`
/// makes them).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-text payload".to_string())
}

async fn recv_until<R: Runtime>(
    rt: &R,
    mailbox: &Mailbox,
    deadline: Instant,
) -> Result<Message, RecvError> {
    match race(mailbox.recv(), rt.sleep_until(deadline)).await {
        Either::Left(result) => result,
        Either::Right(()) => Err(RecvError::Timeout),
    }
}

/// Receives from `mailbox` with a timeout on runtime `R`'s timer.
pub async fn recv_timeout<R: Runtime>(
    rt: &R,
    mailbox: &Mailbox,
    timeout: Duration,
) -> Result<Message, RecvError> {
    recv_until(rt, mailbox, Instant::now() + timeout).await
}

/// Defines an adapter's public names over its runtime type: `Node`,
/// `Tunnel` and the `MailboxExt` trait (receive with a timeout on that
/// runtime's timer). Written once here, so the adapters cannot drift apart.
///
/// `Node` is a struct wrapping [`Reign`], not an alias of it: rustdoc gives
/// an alias a page listing none of the methods that reach it through
/// `Deref`, and `Node` is the type a user reads first.
#[macro_export]
macro_rules! adapter {
    ($runtime:ty, $name:literal) => {
        #[doc = concat!("A reign node running on ", $name, ": the type an application holds.")]
        ///
        /// Cloning it is cheap and gives another handle to the same node.
        /// Every method below works on it; they come in three groups:
        ///
        /// - **Starting**: [`start`](Node::start), [`start_dev`](Node::start_dev),
        ///   [`local`](Node::local) and [`start_on`](Node::start_on), defined here.
        /// - **Waiting on this runtime** — `shutdown`, `stopped`, `reload`,
        ///   `request` and `tunnel` with timeouts, `accept_tunnel`,
        ///   `wait_for_peers`, `recv_timeout`, `local_addr`, `failure` — from the
        ///   runtime-generic node [`reign_driver::Reign`], reached through
        ///   `Deref` (listed below under *Methods from `Deref<Target = Reign<…>>`*).
        /// - **The node itself**, which needs no runtime — `new_mailbox`,
        ///   `address_of`, `register`, `lookup`, `sync`, `join`, `broadcast`,
        ///   `subscribe`, `publish`, `stats`, `is_connected`, … — from the Sans-IO
        ///   handle [`reign_proto::Node`], reached through `Reign`'s own `Deref`
        ///   (listed below under *Methods from `Deref<Target = Node>`*).
        ///
        /// Code written once for every runtime takes
        /// [`Reign<R>`](reign_driver::Reign) instead; `From` converts both ways.
        #[derive(Clone)]
        pub struct Node($crate::Reign<$runtime>);

        impl Node {
            /// A node with no network (Go reign's `NoClustering`): see
            /// [`Reign::local`](reign_driver::Reign::local).
            pub fn local() -> Node {
                Node($crate::Reign::local())
            }

            /// Starts node `id` of the cluster `spec`: see
            /// [`Reign::start`](reign_driver::Reign::start).
            pub async fn start(
                spec: &$crate::api::ClusterSpec,
                id: $crate::api::NodeId,
            ) -> Result<Node, $crate::StartError> {
                $crate::Reign::start(spec, id).await.map(Node)
            }

            /// Starts a development node with no configuration (**insecure
            /// for production**): see [`Reign::start_dev`](reign_driver::Reign::start_dev).
            pub async fn start_dev(
                dir: impl AsRef<std::path::Path>,
            ) -> Result<Node, $crate::StartError> {
                $crate::Reign::start_dev(dir).await.map(Node)
            }

            /// [`start`](Node::start) with an explicit runtime handle: see
            /// [`Reign::start_on`](reign_driver::Reign::start_on).
            pub async fn start_on(
                rt: $runtime,
                spec: &$crate::api::ClusterSpec,
                id: $crate::api::NodeId,
            ) -> Result<Node, $crate::StartError> {
                $crate::Reign::start_on(rt, spec, id).await.map(Node)
            }
        }

        impl std::ops::Deref for Node {
            type Target = $crate::Reign<$runtime>;

            fn deref(&self) -> &$crate::Reign<$runtime> {
                &self.0
            }
        }

        impl From<$crate::Reign<$runtime>> for Node {
            fn from(node: $crate::Reign<$runtime>) -> Node {
                Node(node)
            }
        }

        impl From<Node> for $crate::Reign<$runtime> {
            fn from(node: Node) -> $crate::Reign<$runtime> {
                node.0
            }
        }

        impl $crate::api::IntoReign for Node {
            type Runtime = $runtime;

            fn into_reign(self) -> $crate::Reign<$runtime> {
                self.0
            }
        }

        impl std::fmt::Debug for Node {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        #[doc = concat!("A tunnel end with ", $name, " timeouts.")]
        pub type Tunnel = $crate::Tunnel<$runtime>;

        /// Receiving with a timeout, on this runtime's timer.
        pub trait MailboxExt {
            /// Waits for the next message at most `timeout`
            /// ([`RecvError::Timeout`](reign_proto::RecvError::Timeout) after).
            fn recv_timeout(
                &self,
                timeout: std::time::Duration,
            ) -> impl std::future::Future<
                Output = Result<reign_proto::Message, reign_proto::RecvError>,
            > + Send;
        }

        impl MailboxExt for reign_proto::Mailbox {
            fn recv_timeout(
                &self,
                timeout: std::time::Duration,
            ) -> impl std::future::Future<
                Output = Result<reign_proto::Message, reign_proto::RecvError>,
            > + Send {
                async move { $crate::recv_timeout(&<$runtime>::default(), self, timeout).await }
            }
        }
    };
}

/// Implements [`Runtime`] for a runtime whose TCP types speak futures-io
/// and whose streams clone into reading and writing halves (async-std and
/// smol): the adapter supplies only how to spawn and how to sleep.
#[macro_export]
macro_rules! futures_io_runtime {
    (
        $runtime:ty,
        listener: $listener:ty,
        stream: $stream:ty,
        spawn: |$future:ident| $spawn:expr,
        sleep_until: |$deadline:ident| $sleep:expr $(,)?
    ) => {
        impl $crate::Runtime for $runtime {
            type Reader = $stream;
            type Writer = $stream;
            type Listener = $listener;

            fn spawn<F>(&self, $future: F)
            where
                F: std::future::Future<Output = ()> + Send + 'static,
            {
                $spawn
            }

            fn sleep_until(
                &self,
                $deadline: std::time::Instant,
            ) -> impl std::future::Future<Output = ()> + Send + 'static {
                $sleep
            }

            async fn bind(&self, address: &str) -> std::io::Result<$listener> {
                <$listener>::bind(address).await
            }

            fn local_addr(listener: &$listener) -> std::io::Result<std::net::SocketAddr> {
                listener.local_addr()
            }

            async fn accept(listener: &$listener) -> std::io::Result<($stream, $stream, String)> {
                let (stream, remote) = listener.accept().await?;
                $crate::sockopt::tune_node_socket(&stream);
                Ok((stream.clone(), stream, remote.to_string()))
            }

            async fn connect(&self, address: &str) -> std::io::Result<($stream, $stream)> {
                let stream = <$stream>::connect(address).await?;
                $crate::sockopt::tune_node_socket(&stream);
                Ok((stream.clone(), stream))
            }

            fn poll_read(
                reader: &mut $stream,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                $crate::__private::futures_lite::AsyncRead::poll_read(
                    std::pin::Pin::new(reader),
                    cx,
                    buf,
                )
            }

            fn poll_write(
                writer: &mut $stream,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                $crate::__private::futures_lite::AsyncWrite::poll_write(
                    std::pin::Pin::new(writer),
                    cx,
                    buf,
                )
            }

            fn poll_close(
                writer: &mut $stream,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                // Only the write direction: the stream's clone still reads.
                std::task::Poll::Ready(writer.shutdown(std::net::Shutdown::Write))
            }
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use futures_lite;
}
