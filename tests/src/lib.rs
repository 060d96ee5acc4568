//! Support for reign's cross-crate tests: clusters on loopback with fresh
//! certificates, started and connected in one call on any runtime, a
//! captured log, and a raw TLS peer for hostile-input tests.

pub mod iris;
pub mod proxy;
pub mod raw_peer;

#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

use std::future::Future;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reign_driver::{Reign, Runtime};
use reign_proto::certgen::{CertAndKey, ClusterCa};
use reign_proto::{ClusterSpec, Mailbox, NodeDescriptor, NodeId, Tuning};
use reign_tokio::Node;

/// Free TCP ports on 127.0.0.1 (bound and released; a small race is accepted).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// A cluster's certificates and per-node specs, all on 127.0.0.1.
pub struct TestCluster {
    /// The cluster CA.
    pub ca: ClusterCa,
    /// Node ids and their addresses.
    pub addresses: Vec<(NodeId, String)>,
    /// Protocol tuning every spec gets.
    pub tuning: Tuning,
}

impl TestCluster {
    /// `n` nodes, ids 0..n, with fast timers.
    pub fn new(n: u16) -> TestCluster {
        TestCluster::with_tuning(n, Tuning::fast())
    }

    /// `n` nodes with the given tuning.
    pub fn with_tuning(n: u16, tuning: Tuning) -> TestCluster {
        let ports = free_ports(n as usize);
        TestCluster {
            ca: ClusterCa::generate().expect("CA"),
            addresses: ports
                .iter()
                .enumerate()
                .map(|(i, port)| (NodeId(i as u16), format!("127.0.0.1:{port}")))
                .collect(),
            tuning,
        }
    }

    /// The spec node `id` starts from (its own certificate inlined).
    pub fn spec(&self, id: NodeId) -> ClusterSpec {
        let mut spec = self.ca.inline_spec(id, &self.addresses).expect("node cert");
        spec.tuning = self.tuning.clone();
        spec
    }

    /// The address of node `id`.
    pub fn address(&self, id: NodeId) -> &str {
        &self
            .addresses
            .iter()
            .find(|(n, _)| *n == id)
            .expect("node in cluster")
            .1
    }

    /// A certificate for `id` from this cluster's CA.
    pub fn cert(&self, id: NodeId) -> CertAndKey {
        self.ca.node_cert(id).expect("node cert")
    }

    /// The node descriptors, for building specs by hand.
    pub fn descriptors(&self) -> Vec<NodeDescriptor> {
        self.addresses
            .iter()
            .map(|(id, address)| NodeDescriptor {
                id: id.0,
                address: address.clone(),
                listen_address: String::new(),
                local_address: String::new(),
            })
            .collect()
    }
}

impl TestCluster {
    /// Starts nodes `ids` of this cluster on runtime `R` and waits at most
    /// `wait` until each is connected to all the others.
    pub async fn start_on<R: Runtime + Default>(
        &self,
        ids: &[u16],
        wait: Duration,
    ) -> Vec<Reign<R>> {
        let specs = ids.iter().map(|&i| (NodeId(i), self.spec(NodeId(i))));
        start_connected(specs, wait).await
    }

    /// [`start_on`](TestCluster::start_on) on tokio, as its [`Node`]s.
    pub async fn start(&self, ids: &[u16], wait: Duration) -> Vec<Node> {
        let nodes = self.start_on::<reign_tokio::Tokio>(ids, wait).await;
        nodes.into_iter().map(Node::from).collect()
    }

    /// Every node of this cluster on tokio, connected all to all.
    pub async fn start_all(&self, wait: Duration) -> Vec<Node> {
        let ids: Vec<u16> = self.addresses.iter().map(|(id, _)| id.0).collect();
        self.start(&ids, wait).await
    }

    /// Nodes 0 and 1 of this cluster on runtime `R`, connected to each
    /// other.
    pub async fn pair_on<R: Runtime + Default>(&self, wait: Duration) -> (Reign<R>, Reign<R>) {
        into_pair(self.start_on::<R>(&[0, 1], wait).await)
    }

    /// [`pair_on`](TestCluster::pair_on) on tokio, as its [`Node`]s.
    pub async fn start_pair(&self, wait: Duration) -> (Node, Node) {
        into_pair(self.start(&[0, 1], wait).await)
    }
}

/// The two nodes of a pair, in order.
///
/// # Panics
/// If there are not exactly two.
pub fn into_pair<T>(nodes: Vec<T>) -> (T, T) {
    let count = nodes.len();
    let mut nodes = nodes.into_iter();
    match (nodes.next(), nodes.next(), nodes.next()) {
        (Some(a), Some(b), None) => (a, b),
        _ => panic!("a pair, not {count} nodes"),
    }
}

/// Starts a node on runtime `R` from each `(id, spec)`, then waits at most
/// `wait` until each is connected to all the others.
///
/// # Panics
/// If a node does not start, or is not connected to the others in time.
pub async fn start_connected<R: Runtime + Default>(
    specs: impl IntoIterator<Item = (NodeId, ClusterSpec)>,
    wait: Duration,
) -> Vec<Reign<R>> {
    let mut nodes = Vec::new();
    for (id, spec) in specs {
        let node = Reign::<R>::start(&spec, id).await;
        nodes.push(node.unwrap_or_else(|e| panic!("node {} starts: {e}", id.0)));
    }
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.id()).collect();
    for node in &nodes {
        let others: Vec<NodeId> = ids.iter().copied().filter(|&i| i != node.id()).collect();
        assert!(
            node.wait_for_peers(&others, wait).await,
            "node {} did not connect to {others:?}",
            node.id().0
        );
    }
    nodes
}

/// Shuts every node down, one after another (`nodes` or `&nodes`).
pub async fn shutdown_all(nodes: impl IntoIterator<Item = impl std::borrow::Borrow<Node>>) {
    for node in nodes {
        node.borrow().shutdown().await;
    }
}

/// Waits for each node's registry sync (`nodes` or `&nodes`), at most
/// `wait` each: by then every connected peer has applied the registry
/// changes each node made before.
///
/// # Panics
/// If a sync does not complete in time.
pub async fn sync_all(
    nodes: impl IntoIterator<Item = impl std::borrow::Borrow<Node>>,
    wait: Duration,
) {
    for node in nodes {
        let node = node.borrow();
        tokio::time::timeout(wait, node.sync())
            .await
            .unwrap_or_else(|_| panic!("node {} did not sync in time", node.id().0));
    }
}

/// The next message of `mailbox` as a `T`, waiting at most `wait` on
/// runtime `R`'s timer.
///
/// # Panics
/// If none arrives in time, or it is not a `T`.
pub async fn recv_on<R, T>(mailbox: &Mailbox, wait: Duration) -> T
where
    R: Runtime + Default,
    T: serde::de::DeserializeOwned + 'static,
{
    let msg = reign_driver::recv_timeout(&R::default(), mailbox, wait)
        .await
        .expect("a message in time");
    match msg.downcast::<T>() {
        Ok(value) => value,
        Err(_) => panic!("not a {}", std::any::type_name::<T>()),
    }
}

/// [`recv_on`] on tokio.
pub async fn recv_as<T: serde::de::DeserializeOwned + 'static>(
    mailbox: &Mailbox,
    wait: Duration,
) -> T {
    recv_on::<reign_tokio::Tokio, T>(mailbox, wait).await
}

/// A multi-thread tokio runtime with `workers` threads, timers and sockets.
pub fn tokio_runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Runs `future` to completion on a fresh two-thread tokio runtime (for
/// tests that run the same body on every runtime).
pub fn tokio_block_on<F: Future>(future: F) -> F::Output {
    tokio_runtime(2).block_on(future)
}

/// Starts node `id` from `spec` on a one-thread tokio runtime of its own:
/// shutting that runtime down kills the node at once (its tasks and
/// sockets vanish, no goodbye), as a crash would. Call it outside any
/// runtime (in `spawn_blocking` from inside one).
pub fn start_on_own_runtime(spec: &ClusterSpec, id: NodeId) -> (tokio::runtime::Runtime, Node) {
    let rt = tokio_runtime(1);
    let node = rt.block_on(Node::start(spec, id)).expect("node starts");
    (rt, node)
}

/// Log lines a capture wrote, one a write (a formatted event).
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every line so far.
    pub fn all(&self) -> Vec<String> {
        self.lock().clone()
    }

    /// How many lines so far.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// The lines containing every one of `parts`.
    pub fn matching(&self, parts: &[&str]) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|line| parts.iter().all(|p| line.contains(p)))
            .cloned()
            .collect()
    }

    /// A writer appending to these lines, for a tracing subscriber.
    fn writer(&self) -> LineWriter {
        LineWriter(self.clone())
    }
}

struct LineWriter(Lines);

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf).into_owned();
        self.0.lock().push(line);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The lines [`capture_logs`] collects.
fn process_lines() -> &'static Lines {
    static LINES: OnceLock<Lines> = OnceLock::new();
    LINES.get_or_init(Lines::default)
}

/// Captures every log line of this test process (idempotent).
pub fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_ansi(false)
            .with_writer(|| process_lines().writer())
            .try_init();
    });
}

/// Whether a line [`capture_logs`] collected contains every one of `parts`.
pub fn logged(parts: &[&str]) -> bool {
    !process_lines().matching(parts).is_empty()
}

/// Captures this thread's INFO-and-above log lines, apart from the
/// process's, while the guard lives.
pub fn capture_thread_logs() -> (Lines, tracing::subscriber::DefaultGuard) {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.writer())
        .finish();
    (lines, tracing::subscriber::set_default(subscriber))
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn eventually(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Makes each listed `async fn name<R: Runtime + Default>()` of the calling
/// test file a test on every runtime: modules `on_tokio`, `on_async_std`
/// and `on_smol`, each with one `#[test] fn name` running it there.
#[macro_export]
macro_rules! on_every_runtime {
    ($($test:ident),+ $(,)?) => {
        $crate::on_every_runtime!(@on on_tokio, $crate::runtimes::Tokio, $crate::tokio_block_on; $($test),+);
        $crate::on_every_runtime!(@on on_async_std, $crate::runtimes::AsyncStd, $crate::runtimes::async_std_block_on; $($test),+);
        $crate::on_every_runtime!(@on on_smol, $crate::runtimes::Smol, $crate::runtimes::smol_block_on; $($test),+);
    };
    (@on $module:ident, $runtime:ty, $block_on:path; $($test:ident),+) => {
        mod $module {
            $(
                #[test]
                fn $test() {
                    $block_on(super::$test::<$runtime>());
                }
            )+
        }
    };
}

/// The runtimes [`on_every_runtime!`] runs tests on, and how it blocks on
/// each.
#[doc(hidden)]
pub mod runtimes {
    pub use async_std::task::block_on as async_std_block_on;
    pub use reign_async_std::AsyncStd;
    pub use reign_smol::Smol;
    pub use reign_tokio::Tokio;
    pub use smol::block_on as smol_block_on;
}
