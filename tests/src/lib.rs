//! Support for reign's cross-crate tests: clusters on loopback with fresh
//! certificates, a captured log, and a raw TLS peer for hostile-input tests.

pub mod proxy;
pub mod raw_peer;

#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

use reign_proto::certgen::{CertAndKey, ClusterCa};
use reign_proto::{ClusterSpec, NodeDescriptor, NodeId, Tuning};

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

fn log_lines() -> &'static Mutex<Vec<String>> {
    static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LINES.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf).into_owned();
        log_lines()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
            .with_writer(|| Capture)
            .try_init();
    });
}

/// Whether a captured log line contains every one of `parts`.
pub fn logged(parts: &[&str]) -> bool {
    log_lines()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|line| parts.iter().all(|p| line.contains(p)))
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
