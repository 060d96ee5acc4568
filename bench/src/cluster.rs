//! A benchmark cluster: node 0 in this process, nodes 1.. as child
//! processes of this binary (`reign-bench serve`) running the built-in
//! service of `reign node`. Children exit when their stdin closes, so none
//! outlives the benchmark.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reign_cli::protocol::{self, NodeReport, StatsQuery};
use reign_proto::certgen::ClusterCa;
use reign_proto::{ClusterSpec, NodeId};
use reign_tokio::Node;

/// How long setup steps may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Node 0 (here) and its child nodes.
pub struct Cluster {
    pub node: Node,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl Cluster {
    /// Starts `1 + children` nodes and waits until all are connected and
    /// every child's control name is visible here.
    pub async fn start(children: u16) -> Result<Cluster, String> {
        protocol::register();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let ca = ClusterCa::generate().map_err(|e| e.to_string())?;
        let mut addresses = Vec::new();
        for i in 0..=children {
            addresses.push((NodeId(i), format!("127.0.0.1:{}", free_port()?)));
        }
        let spec_of = |id: u16| -> Result<ClusterSpec, String> {
            ca.inline_spec(NodeId(id), &addresses)
                .map_err(|e| e.to_string())
        };
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut spawned = Vec::new();
        for id in 1..=children {
            let path = dir.path().join(format!("spec_{id}.json"));
            std::fs::write(&path, spec_of(id)?.to_json()).map_err(|e| e.to_string())?;
            // `REIGN_BENCH_CHILD_PREFIX="heaptrack -o /tmp/child"` (or
            // `perf record -g --`) runs each child under a profiler.
            let prefix = std::env::var("REIGN_BENCH_CHILD_PREFIX").unwrap_or_default();
            let mut words = prefix.split_whitespace();
            let mut command = match words.next() {
                Some(tool) => {
                    let mut command = Command::new(tool);
                    command.args(words).arg(&exe);
                    command
                }
                None => Command::new(&exe),
            };
            let child = command
                .args(["serve", "--spec"])
                .arg(&path)
                .args(["--id", &id.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("cannot start node {id}: {e}"))?;
            spawned.push(child);
        }
        let node = Node::start(&spec_of(0)?, NodeId(0))
            .await
            .map_err(|e| e.to_string())?;
        let peers: Vec<NodeId> = (1..=children).map(NodeId).collect();
        if !node.wait_for_peers(&peers, WAIT).await {
            return Err("the child nodes did not connect".into());
        }
        let names: Vec<String> = (1..=children).map(protocol::control_name).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let deadline = Instant::now() + WAIT;
        while !node.seen_names(&refs).iter().all(|&b| b) {
            if Instant::now() > deadline {
                return Err("the child nodes never registered".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Cluster {
            node,
            children: spawned,
            _dir: dir,
        })
    }

    /// The stats of child node `of`.
    pub async fn stats(&self, of: u16) -> Result<NodeReport, String> {
        let target = self
            .node
            .lookup(&protocol::control_name(of))
            .ok_or("a child is not registered")?;
        // Right after a flood the queue to the child may still be full: a
        // request that cannot be queued yet is retried, not a failure.
        let deadline = std::time::Instant::now() + WAIT;
        let reply = loop {
            match self.node.request(&target, StatsQuery, WAIT).await {
                Err(reign_proto::RequestError::Send(reign_proto::SendError::Full))
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                other => break other.map_err(|e| e.to_string())?,
            }
        };
        reply
            .downcast()
            .map_err(|_| "a stats reply of the wrong type".into())
    }

    /// Shuts node 0 down and reaps the children.
    pub async fn stop(mut self) {
        self.node.shutdown().await;
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        for child in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `reign-bench serve`: a child node until its stdin closes.
pub fn serve(spec: &Path, id: u16) -> Result<(), String> {
    let spec = ClusterSpec::load(spec).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let node = Node::start(&spec, NodeId(id))
            .await
            .map_err(|e| e.to_string())?;
        reign_cli::service::start(&node)?;
        tokio::task::spawn_blocking(|| {
            let mut sink = [0u8; 64];
            while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        })
        .await
        .map_err(|e| e.to_string())?;
        node.shutdown().await;
        Ok(())
    })
}

/// A tokio runtime for node 0.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}
