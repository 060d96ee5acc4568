//! Development clusters with no configuration: every node started with the
//! same directory shares a throw-away CA kept there, takes the lowest free
//! node id, writes its loopback address into the directory, and learns the
//! others' from it (re-read every [`RESCAN`]).
//!
//! Not for production: anyone who can read the directory holds the CA key
//! and can join the cluster. The node says so in its log at start.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reign_proto::certgen::ClusterCa;
use reign_proto::{ClusterSpec, NodeDescriptor, NodeId, Tuning};

/// How often a dev node re-reads the directory for members.
pub(crate) const RESCAN: Duration = Duration::from_millis(500);

/// A claim younger than this is never taken over.
const FRESH_CLAIM: Duration = Duration::from_secs(10);

/// The CA certificate and key, one PEM file, shared by the directory's nodes.
const CA_FILE: &str = "dev-ca.pem";
/// One file per node, `<id>.addr`, holding its address.
const NODES_DIR: &str = "nodes";

/// A node's claim on an id in a dev directory; the file goes when the
/// node shuts down cleanly.
#[derive(Debug)]
pub(crate) struct Claim {
    pub(crate) id: NodeId,
    pub(crate) file: PathBuf,
}

/// The directory's CA, made by whichever node comes first.
pub(crate) fn load_or_make_ca(dir: &Path) -> io::Result<ClusterCa> {
    fs::create_dir_all(dir.join(NODES_DIR))?;
    let path = dir.join(CA_FILE);
    if !path.exists() {
        let ca = ClusterCa::generate().map_err(io::Error::other)?;
        let tmp = dir.join(format!("{CA_FILE}.{}", std::process::id()));
        write_private(&tmp, &format!("{}{}", ca.cert_pem(), ca.key_pem()))?;
        // A hard link never replaces an existing file: of nodes racing to
        // make the CA, exactly one's lands and every node uses that one.
        match fs::hard_link(&tmp, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        let _ = fs::remove_file(&tmp);
    }
    let text = fs::read_to_string(&path)?;
    let split = text
        .find("-----BEGIN PRIVATE KEY-----")
        .ok_or_else(|| io::Error::other(format!("{} holds no private key", path.display())))?;
    let (cert, key) = text.split_at(split);
    ClusterCa::from_pem(cert, key).map_err(io::Error::other)
}

fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
}

/// Takes the lowest id that no live node of the directory holds, recording
/// `address` for it. An id whose node no longer answers on its address
/// (killed without cleaning up) is taken over.
pub(crate) fn claim_id(dir: &Path, address: &str) -> io::Result<Claim> {
    let nodes = dir.join(NODES_DIR);
    for id in 0..=u16::MAX {
        let file = nodes.join(format!("{id}.addr"));
        for _attempt in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&file) {
                Ok(mut f) => {
                    f.write_all(address.as_bytes())?;
                    return Ok(Claim {
                        id: NodeId(id),
                        file,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !answers(&file) {
                        tracing::warn!(id, file = %file.display(), "taking over the id of a dev node that no longer answers");
                        let _ = fs::remove_file(&file);
                        continue;
                    }
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Err(io::Error::other("every node id is taken"))
}

/// Whether the node recorded in `file` may still be live: it accepts
/// connections, or its claim is too fresh to judge (it may be between
/// claiming the id and listening).
fn answers(file: &Path) -> bool {
    let fresh = fs::metadata(file)
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().unwrap_or_default() < FRESH_CLAIM)
        .unwrap_or(true);
    if fresh {
        return true;
    }
    let Ok(text) = fs::read_to_string(file) else {
        // Being written right now by its node.
        return true;
    };
    let Ok(address) = text.trim().parse::<SocketAddr>() else {
        return text.trim().is_empty();
    };
    TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
}

/// Every node recorded in the directory, by id.
pub(crate) fn members(dir: &Path) -> Vec<(NodeId, String)> {
    let Ok(entries) = fs::read_dir(dir.join(NODES_DIR)) else {
        return Vec::new();
    };
    let mut members: Vec<(NodeId, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".addr")?.parse::<u16>().ok()?;
            let address = fs::read_to_string(e.path()).ok()?.trim().to_owned();
            address
                .parse::<SocketAddr>()
                .ok()
                .map(|_| (NodeId(id), address))
        })
        .collect();
    members.sort();
    members
}

/// The spec's node list: the directory's members, with `id` at `address`
/// whatever the directory says.
pub(crate) fn spec_nodes(
    id: NodeId,
    address: &str,
    members: &[(NodeId, String)],
) -> Vec<NodeDescriptor> {
    let descriptor = |id: NodeId, address: &str| NodeDescriptor {
        id: id.0,
        address: address.to_owned(),
        listen_address: String::new(),
        local_address: String::new(),
    };
    let mut nodes: Vec<NodeDescriptor> = members
        .iter()
        .filter(|(n, _)| *n != id)
        .map(|(n, a)| descriptor(*n, a))
        .collect();
    nodes.push(descriptor(id, address));
    nodes
}

/// The spec of dev node `id`: the directory's members (itself included),
/// a fresh certificate from the directory's CA, timers for loopback.
pub(crate) fn spec(
    ca: &ClusterCa,
    id: NodeId,
    address: &str,
    members: &[(NodeId, String)],
) -> io::Result<ClusterSpec> {
    let mut spec = ca.inline_spec(id, &[]).map_err(io::Error::other)?;
    spec.nodes = spec_nodes(id, address, members);
    spec.tuning = Tuning {
        backoff_max: Duration::from_secs(2),
        gossip_interval: Duration::from_secs(2),
        ..Tuning::default()
    };
    Ok(spec)
}
