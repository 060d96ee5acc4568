//! Development clusters with no configuration: every node started with the
//! same directory shares a throw-away CA kept there, takes the lowest free
//! node id, writes its loopback address into the directory, and learns the
//! others' from it (re-read every [`RESCAN`]; a node whose process is gone
//! drops out, as its lock on its file went with it).
//!
//! Not for production: anyone who can read the directory holds the CA key
//! and can join the cluster. The node says so in its log at start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reign_proto::certgen::ClusterCa;
use reign_proto::{ClusterSpec, NodeDescriptor, NodeId, Tuning};

/// How often a dev node re-reads the directory for members.
pub(crate) const RESCAN: Duration = Duration::from_millis(500);

/// The CA certificate and key, one PEM file, shared by the directory's nodes.
const CA_FILE: &str = "dev-ca.pem";
/// One file per node, `<id>.addr`, holding its address.
const NODES_DIR: &str = "nodes";
/// Locked while a node picks its id.
const CLAIMS_LOCK: &str = "claims.lock";

/// A node's claim on an id in a dev directory: the file naming its
/// address, locked for as long as the node runs. The lock is the liveness
/// test: the OS drops it when the process ends, however it ends.
#[derive(Debug)]
pub(crate) struct Claim {
    pub(crate) id: NodeId,
    pub(crate) file: PathBuf,
    pub(crate) address: String,
    /// Holds the lock on `file`.
    _lock: File,
}

impl Claim {
    /// Gives the id back (at a clean shutdown).
    pub(crate) fn release(self) {
        if fs::read_to_string(&self.file).is_ok_and(|a| a == self.address) {
            let _ = fs::remove_file(&self.file);
        }
    }
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

/// Takes the lowest id that no running node of the directory holds,
/// recording `address` for it. The id of a node that died (its lock gone
/// with it) is taken over.
pub(crate) fn claim_id(dir: &Path, address: &str) -> io::Result<Claim> {
    let nodes = dir.join(NODES_DIR);
    // One claimant at a time, so that "this id is free, take it" is atomic.
    let guard = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(CLAIMS_LOCK))?;
    guard.lock()?;
    for id in 0..=u16::MAX {
        let file = nodes.join(format!("{id}.addr"));
        if held(&file) {
            continue;
        }
        if file.exists() {
            tracing::warn!(id, file = %file.display(), "taking over the id of a dev node that is gone");
        }
        // Written and locked under another name, then renamed into place:
        // readers never see a half-written address, and the lock is on the
        // file that ends up at `file`.
        let tmp = nodes.join(format!(".{id}.{}.tmp", std::process::id()));
        let mut lock = File::create(&tmp)?;
        lock.write_all(address.as_bytes())?;
        lock.try_lock().map_err(io::Error::other)?;
        fs::rename(&tmp, &file)?;
        return Ok(Claim {
            id: NodeId(id),
            file,
            address: address.to_owned(),
            _lock: lock,
        });
    }
    Err(io::Error::other("every node id is taken"))
}

/// Whether a running node holds the claim in `file`.
fn held(file: &Path) -> bool {
    let Ok(f) = File::open(file) else {
        return false;
    };
    match f.try_lock() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(_) => true,
    }
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
            if !held(&e.path()) {
                return None;
            }
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
