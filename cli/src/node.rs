//! `reign node`: one node of a cluster as an OS process.

use std::path::PathBuf;
use std::time::Duration;

use reign_proto::{ClusterSpec, NodeId};
use reign_tokio::Node;

/// Which node to run.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The cluster spec (JSON, Go reign's field names).
    #[arg(long)]
    pub spec: PathBuf,
    /// This node's id in the spec.
    #[arg(long)]
    pub id: u16,
    /// Log counters this often (seconds; 0 = never).
    #[arg(long, default_value_t = 0)]
    pub stats_every: u64,
}

/// Runs the node until SIGINT or SIGTERM, then shuts it down cleanly.
pub fn run(args: NodeArgs) -> Result<(), String> {
    let spec = ClusterSpec::load(&args.spec).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    rt.block_on(async move {
        let node = Node::start(&spec, NodeId(args.id))
            .await
            .map_err(|e| e.to_string())?;
        crate::service::start(&node)?;
        tracing::info!(node = args.id, "serving echo, broadcast, news and sink");
        let stats = {
            let node = node.clone();
            let every = args.stats_every;
            tokio::spawn(async move {
                if every == 0 {
                    return;
                }
                loop {
                    tokio::time::sleep(Duration::from_secs(every)).await;
                    let s = node.stats();
                    tracing::info!(
                        sent = s.remote_sent,
                        delivered = s.remote_delivered,
                        dropped_unreachable = s.dropped_unreachable,
                        "counters"
                    );
                }
            })
        };
        wait_for_signal().await;
        tracing::info!(node = args.id, "signal received; shutting down");
        stats.abort();
        node.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
