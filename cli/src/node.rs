//! `reign node`: one node of a cluster as an OS process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reign_proto::{ClusterSpec, NodeDescriptor, NodeId};
use reign_tokio::admin::AdminOptions;
use reign_tokio::Node;

/// Which node to run.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The cluster spec (JSON, Go reign's field names). Re-read on SIGHUP.
    #[arg(long, required_unless_present = "dev")]
    pub spec: Option<PathBuf>,
    /// This node's id in the spec.
    #[arg(long, required_unless_present = "dev")]
    pub id: Option<u16>,
    /// A running node to join through, as `ID@HOST:PORT` (repeatable): it
    /// is added to the spec's nodes, and the rest of the cluster is learned
    /// from it. The id is needed because it is the seed's TLS identity.
    #[arg(long, value_name = "ID@HOST:PORT")]
    pub join: Vec<String>,
    /// Development mode: no spec, no certificates. Nodes started with the
    /// same directory form a cluster on loopback (insecure; see the log).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["spec", "id", "join"])]
    pub dev: Option<PathBuf>,
    /// Log counters this often (seconds; 0 = never).
    #[arg(long, default_value_t = 0)]
    pub stats_every: u64,
    /// Serve the admin endpoint (JSON status, /metrics, a live dashboard)
    /// on this `IP:PORT`. Loopback only, unless --admin-public.
    #[arg(long, value_name = "IP:PORT")]
    pub admin: Option<SocketAddr>,
    /// Allow a non-loopback --admin address; it then needs a token.
    #[arg(long, requires = "admin")]
    pub admin_public: bool,
    /// The token every admin request must carry (`Authorization: Bearer`,
    /// or as the Basic password in a browser). Prefer the environment
    /// variable: other users can read command lines.
    #[arg(long, env = "REIGN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Serve an Iris relay (protocol v1.0-draft2) on this `IP:PORT`, so
    /// programs using an Iris binding use this node's cluster (Iris's port
    /// is 55555). Loopback only, unless --relay-public: the protocol has no
    /// authentication. See docs/IRIS.md.
    #[arg(long, value_name = "IP:PORT")]
    pub relay: Option<SocketAddr>,
    /// Allow a non-loopback --relay address (anyone who can reach it uses
    /// the cluster).
    #[arg(long, requires = "relay")]
    pub relay_public: bool,
    /// How log lines are written to stderr: `text` for people, `json` (one
    /// object a line, with the spans of each event) for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The format of `reign node`'s log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (ANSI colours on a terminal).
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `fields`
    /// (the message and its fields), `span` and `spans` (the connection
    /// and request the event belongs to).
    Json,
}

/// Parses `ID@HOST:PORT`.
pub fn parse_seed(text: &str) -> Result<NodeDescriptor, String> {
    let (id, address) = text
        .split_once('@')
        .ok_or_else(|| format!("--join {text:?}: expected ID@HOST:PORT"))?;
    let id = id
        .parse::<u16>()
        .map_err(|e| format!("--join {text:?}: bad node id: {e}"))?;
    Ok(NodeDescriptor {
        id,
        address: address.to_owned(),
        listen_address: String::new(),
        local_address: String::new(),
    })
}

/// The spec at `path` with the `--join` seeds added (a seed the file
/// already lists keeps the file's entry).
fn load_spec(path: &Path, seeds: &[NodeDescriptor]) -> Result<ClusterSpec, String> {
    let mut spec = ClusterSpec::load(path).map_err(|e| e.to_string())?;
    for seed in seeds {
        if !spec.nodes.iter().any(|n| n.id == seed.id) {
            spec.nodes.push(seed.clone());
        }
    }
    spec.validate_nodes().map_err(|e| e.to_string())?;
    Ok(spec)
}

/// Runs the node until SIGINT or SIGTERM, then shuts it down gracefully:
/// messages it already accepted are delivered first (for at most the
/// spec's `tuning.drain_timeout`; what is left is counted and logged),
/// then every peer gets a goodbye. SIGHUP re-reads the spec; an invalid
/// one is logged and ignored.
pub fn run(args: NodeArgs) -> Result<(), String> {
    let seeds = args
        .join
        .iter()
        .map(|s| parse_seed(s))
        .collect::<Result<Vec<_>, _>>()?;
    let spec = match &args.spec {
        Some(path) => Some(load_spec(path, &seeds)?),
        None => None,
    };
    let admin_options = AdminOptions {
        token: args.admin_token.clone(),
        allow_public: args.admin_public,
    };
    if let Some(bind) = args.admin {
        reign_tokio::admin::check_bind(bind, &admin_options).map_err(|e| e.to_string())?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    rt.block_on(async move {
        let node = match (&args.dev, &spec, args.id) {
            (Some(dir), _, _) => Node::start_dev(dir).await,
            (None, Some(spec), Some(id)) => Node::start(spec, NodeId(id)).await,
            _ => return Err("--spec and --id are required without --dev".to_owned()),
        }
        .map_err(|e| e.to_string())?;
        let id = node.id().0;
        crate::service::start(&node)?;
        tracing::info!(node = id, "serving echo, broadcast, news and sink");
        let admin = match args.admin {
            Some(bind) => Some(
                reign_tokio::admin::serve(&node, bind, admin_options).map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let relay = match args.relay {
            Some(bind) => {
                let options = reign_tokio::RelayOptions {
                    allow_public: args.relay_public,
                    ..Default::default()
                };
                Some(
                    node.serve_relay(bind, options)
                        .await
                        .map_err(|e| e.to_string())?,
                )
            }
            None => None,
        };
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
        let reloads = {
            let node = node.clone();
            let path = args.spec.clone();
            tokio::spawn(async move {
                reload_on_hangup(&node, path.as_deref(), &seeds).await;
            })
        };
        tokio::select! {
            _ = wait_for_signal() => {
                tracing::info!(node = id, "signal received; shutting down");
            }
            _ = node.stopped() => {}
        }
        stats.abort();
        reloads.abort();
        drop(relay);
        node.shutdown().await;
        drop(admin);
        match node.failure() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    })
}

/// Re-reads the spec on every SIGHUP and applies it. Without a spec
/// (`--dev`, which re-reads its directory all the time) SIGHUP is only
/// logged, rather than ending the process as it would by default.
async fn reload_on_hangup(node: &Node, path: Option<&Path>, seeds: &[NodeDescriptor]) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot catch SIGHUP; spec reloads are off");
            return;
        };
        while hangups.recv().await.is_some() {
            let Some(path) = path else {
                tracing::info!("SIGHUP ignored: a --dev node re-reads its directory by itself");
                continue;
            };
            // The one INFO of a reload that changes nothing; the core logs
            // what changed, if anything (INFO), so the outcome is DEBUG here.
            tracing::info!(spec = %path.display(), "SIGHUP: re-reading the cluster spec");
            let spec = match load_spec(path, seeds) {
                Ok(spec) => spec,
                Err(e) => {
                    tracing::warn!(spec = %path.display(), error = e, "invalid spec; keeping the old one");
                    continue;
                }
            };
            match node.reload(&spec).await {
                Ok(changes) => tracing::debug!(
                    added = ?changes.added,
                    removed = ?changes.removed,
                    readdressed = ?changes.readdressed,
                    "spec reloaded"
                ),
                Err(e) => tracing::warn!(error = %e, "spec reload refused; keeping the old one"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (node, path, seeds);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_and_bad_ones_say_what_is_wrong() {
        let seed = parse_seed("3@127.0.0.1:29003").unwrap();
        assert_eq!((seed.id, seed.address.as_str()), (3, "127.0.0.1:29003"));
        let no_at = parse_seed("127.0.0.1:29003").unwrap_err();
        assert!(no_at.contains("expected ID@HOST:PORT"), "{no_at}");
        let bad_id = parse_seed("x@127.0.0.1:1").unwrap_err();
        assert!(bad_id.contains("bad node id"), "{bad_id}");
    }

    #[test]
    fn a_seed_with_a_bad_address_is_refused_with_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.json");
        std::fs::write(
            &path,
            r#"{"nodes": [{"id": 1, "address": "127.0.0.1:29001"}]}"#,
        )
        .unwrap();
        let error = load_spec(&path, &[parse_seed("0@nowhere").unwrap()]).unwrap_err();
        assert!(error.contains("nowhere"), "{error}");
        let spec = load_spec(&path, &[parse_seed("0@127.0.0.1:29000").unwrap()]).unwrap();
        assert_eq!(spec.nodes.len(), 2);
    }
}
