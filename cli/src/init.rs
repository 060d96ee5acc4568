//! `reign init`: a cluster CA, a certificate and key per node, and a spec;
//! then, on the same folder, adding nodes, renewing node certificates and
//! rolling the CA over — never replacing anything without `--force`.
//!
//! The folder it writes (`--dir`, `reign-cluster` by default):
//!
//! ```text
//! cluster.json          the spec                          → every node
//! cluster.crt           the CA certificate(s) nodes trust  → every node
//! node_N.crt node_N.key node N's certificate and key      → node N only
//! ca/ca.crt ca/ca.key   the CA that signs (its key!)      → nowhere: keep it here
//! ca/previous.*         the old CA, during a rollover
//! ```
//!
//! The CA key lives in a folder of its own (`--ca-dir`, `<dir>/ca` by
//! default, mode 0700) so that copying the node files never takes it
//! along; every run that makes or uses it says so.
//!
//! A CA rollover is three runs, each followed by copying what changed to
//! the nodes and a reload (SIGHUP): `--rollover-ca` (nodes trust the old and
//! the new CA), `--renew` (node certificates from the new CA), and
//! `--drop-old-ca` (nodes trust only the new one). At every step two nodes
//! share a CA, so the cluster never splits (see `reign_proto::tls`).

use std::fs;
use std::path::{Path, PathBuf};

use reign_proto::certgen::{ClusterCa, DEFAULT_NODE_CERT_DAYS, MAX_NODE_CERT_DAYS};
use reign_proto::{ClusterSpec, NodeDescriptor, NodeId};

/// What `reign init` makes, and what it changes in a folder it made before.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// Folder to write into (created if missing).
    #[arg(long, default_value = "reign-cluster")]
    pub dir: PathBuf,
    /// Node ids: `0-2` or `0,1,5`. For a new cluster, its nodes (default
    /// 0-2); for an existing one, those missing from its spec are added
    /// (with --renew: the nodes whose certificates to renew).
    #[arg(long)]
    pub nodes: Option<String>,
    /// Add this many nodes to the existing cluster, with the next free ids.
    #[arg(long, value_name = "N")]
    pub add_nodes: Option<u16>,
    /// Write new nodes into the spec on 127.0.0.1 at this port plus their id.
    #[arg(long, default_value_t = 29000)]
    pub base_port: u16,
    /// Days node certificates are valid (1 to 3650).
    #[arg(long, default_value_t = DEFAULT_NODE_CERT_DAYS)]
    pub days: u32,
    /// Folder of the CA's certificate and private key (default: `<dir>/ca`).
    #[arg(long)]
    pub ca_dir: Option<PathBuf>,
    /// Start over in a folder that holds a cluster: a new CA, new
    /// certificates and a new spec (every node needs the new files).
    #[arg(long)]
    pub force: bool,
    /// Issue new certificates (from the signing CA) for the spec's nodes.
    #[arg(long)]
    pub renew: bool,
    /// Begin a CA rollover: make a new CA and write a cluster.crt that
    /// trusts the old and the new one.
    #[arg(long)]
    pub rollover_ca: bool,
    /// Finish a CA rollover: write a cluster.crt that trusts only the new
    /// CA (every node certificate must be from it: --renew first).
    #[arg(long)]
    pub drop_old_ca: bool,
    /// Older releases needed this to add nodes; adding nodes now always
    /// keeps the folder's CA, so it does nothing.
    #[arg(long, hide = true)]
    pub reuse_ca: bool,
}

impl InitArgs {
    /// The arguments of `reign init --dir DIR` with every default.
    pub fn new(dir: impl Into<PathBuf>) -> InitArgs {
        InitArgs {
            dir: dir.into(),
            nodes: None,
            add_nodes: None,
            base_port: 29000,
            days: DEFAULT_NODE_CERT_DAYS,
            ca_dir: None,
            force: false,
            renew: false,
            rollover_ca: false,
            drop_old_ca: false,
            reuse_ca: false,
        }
    }
}

/// What a run of `reign init` did: the spec it wrote or read, and what to
/// tell the operator.
#[derive(Debug)]
pub struct InitReport {
    /// The spec.
    pub spec: PathBuf,
    /// Lines to print: what was written, warnings, and the next steps.
    pub lines: Vec<String>,
}

/// Parses `0-2` or `0,1,5` (or a mix) into node ids.
pub fn parse_nodes(text: &str) -> Result<Vec<NodeId>, String> {
    let mut ids = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parse = |s: &str| {
            s.trim()
                .parse::<u16>()
                .map_err(|e| format!("bad node id {s:?}: {e}"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse(a)?, parse(b)?);
                if a > b {
                    return Err(format!("bad range {part:?}"));
                }
                ids.extend((a..=b).map(NodeId));
            }
            None => ids.push(NodeId(parse(part)?)),
        }
    }
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Err("no node ids given".into());
    }
    Ok(ids)
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), String> {
    fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
    }
    let _ = private;
    Ok(())
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The files of one cluster folder.
struct Layout {
    dir: PathBuf,
    spec: PathBuf,
    bundle: PathBuf,
    ca_dir: PathBuf,
    ca_cert: PathBuf,
    ca_key: PathBuf,
    previous_cert: PathBuf,
    previous_key: PathBuf,
}

impl Layout {
    fn new(args: &InitArgs) -> Layout {
        let dir = args.dir.clone();
        let ca_dir = args.ca_dir.clone().unwrap_or_else(|| dir.join("ca"));
        Layout {
            spec: dir.join("cluster.json"),
            bundle: dir.join("cluster.crt"),
            ca_cert: ca_dir.join("ca.crt"),
            ca_key: ca_dir.join("ca.key"),
            previous_cert: ca_dir.join("previous.crt"),
            previous_key: ca_dir.join("previous.key"),
            ca_dir,
            dir,
        }
    }

    fn node_files(&self, id: NodeId) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("node_{}.crt", id.0)),
            self.dir.join(format!("node_{}.key", id.0)),
        )
    }

    /// Whether the folder already holds (part of) a cluster.
    fn holds_cluster(&self) -> bool {
        self.spec.exists()
            || self.bundle.exists()
            || self.ca_key.exists()
            || self.dir.join("cluster.key").exists()
    }

    fn make_ca_dir(&self) -> Result<(), String> {
        fs::create_dir_all(&self.ca_dir)
            .map_err(|e| format!("cannot create {}: {e}", self.ca_dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&self.ca_dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot restrict {}: {e}", self.ca_dir.display()))?;
        }
        Ok(())
    }

    /// The signing CA of an existing cluster.
    fn load_ca(&self) -> Result<ClusterCa, String> {
        if !self.ca_key.exists() {
            let old = self.dir.join("cluster.key");
            if old.exists() {
                return Err(format!(
                    "the CA key is at {} (the layout of older releases, beside the node files); \
                     move it apart first: mkdir -m 700 {ca} && mv {} {ca}/ca.key && cp {} {ca}/ca.crt",
                    old.display(),
                    old.display(),
                    self.bundle.display(),
                    ca = self.ca_dir.display(),
                ));
            }
            return Err(format!(
                "no CA key at {} (--ca-dir names the folder it is in)",
                self.ca_key.display()
            ));
        }
        ClusterCa::from_pem(&read(&self.ca_cert)?, &read(&self.ca_key)?)
            .map_err(|e| format!("cannot load the CA from {}: {e}", self.ca_dir.display()))
    }

    /// The CA certificates in cluster.crt, each as PEM.
    fn bundle_certs(&self) -> Result<Vec<String>, String> {
        Ok(split_pem(&read(&self.bundle)?))
    }

    fn write_bundle(&self, certs: &[&str]) -> Result<(), String> {
        let text: String = certs
            .iter()
            .map(|c| c.trim_end().to_owned() + "\n")
            .collect();
        write(&self.bundle, &text, false)
    }
}

/// The PEM certificates of a file, in order.
fn split_pem(text: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let stop = start + end + END.len();
        certs.push(format!("{}\n", &rest[start..stop]));
        rest = &rest[stop..];
    }
    certs
}

fn issue(
    layout: &Layout,
    ca: &ClusterCa,
    ids: &[NodeId],
    days: u32,
    lines: &mut Vec<String>,
) -> Result<(), String> {
    for &id in ids {
        let pair = ca
            .node_cert_for_days(id, days)
            .map_err(|e| format!("cannot issue a certificate: {e}"))?;
        let (cert, key) = layout.node_files(id);
        write(&cert, &pair.cert_pem, false)?;
        write(&key, &pair.key_pem, true)?;
    }
    let list: Vec<String> = ids.iter().map(|id| id.0.to_string()).collect();
    lines.push(format!(
        "wrote certificates valid for {days} days for node(s) {} (node_N.crt, node_N.key)",
        list.join(", ")
    ));
    Ok(())
}

fn ca_warning(layout: &Layout) -> String {
    format!(
        "warning: {} holds the CA's private key: keep it on this machine, off the nodes \
         (a node needs only cluster.json, cluster.crt and its own node_N.crt and node_N.key)",
        layout.ca_dir.display()
    )
}

/// Node `id` on 127.0.0.1 at `--base-port` plus its id.
fn descriptor(args: &InitArgs, id: NodeId) -> Result<NodeDescriptor, String> {
    let port = u32::from(args.base_port) + u32::from(id.0);
    if port > u32::from(u16::MAX) {
        return Err(format!(
            "node {}'s port would be {} + {} = {port}, past 65535; pass a smaller --base-port",
            id.0, args.base_port, id.0
        ));
    }
    Ok(NodeDescriptor {
        id: id.0,
        address: format!("127.0.0.1:{port}"),
        listen_address: String::new(),
        local_address: String::new(),
    })
}

/// Runs `reign init`; returns the spec's path and what to print.
pub fn run(args: &InitArgs) -> Result<InitReport, String> {
    if args.days == 0 || args.days > MAX_NODE_CERT_DAYS {
        return Err(format!(
            "--days {} is out of range: 1 to {MAX_NODE_CERT_DAYS}",
            args.days
        ));
    }
    let modes = [
        args.force,
        args.renew,
        args.rollover_ca,
        args.drop_old_ca,
        args.add_nodes.is_some(),
    ];
    if modes.iter().filter(|m| **m).count() > 1 {
        return Err(
            "choose one of --force, --renew, --rollover-ca, --drop-old-ca and --add-nodes".into(),
        );
    }
    if args.add_nodes.is_some() && args.nodes.is_some() {
        return Err("choose --add-nodes N or --nodes LIST, not both".into());
    }
    let layout = Layout::new(args);
    let exists = layout.holds_cluster();
    if exists && !args.force {
        if args.renew {
            return renew(args, &layout);
        }
        if args.rollover_ca {
            return rollover(&layout);
        }
        if args.drop_old_ca {
            return drop_old(&layout);
        }
        return add(args, &layout);
    }
    if args.renew || args.rollover_ca || args.drop_old_ca || args.add_nodes.is_some() {
        return Err(format!(
            "{} holds no cluster; run `reign init --dir {}` first",
            args.dir.display(),
            args.dir.display()
        ));
    }
    create(args, &layout)
}

/// A new cluster (or, with `--force`, a new one in place of the old).
fn create(args: &InitArgs, layout: &Layout) -> Result<InitReport, String> {
    let ids = parse_nodes(args.nodes.as_deref().unwrap_or("0-2"))?;
    let nodes = ids
        .iter()
        .map(|&id| descriptor(args, id))
        .collect::<Result<Vec<_>, _>>()?;
    fs::create_dir_all(&layout.dir)
        .map_err(|e| format!("cannot create {}: {e}", layout.dir.display()))?;
    layout.make_ca_dir()?;
    let mut lines = Vec::new();
    if args.force {
        for stale in [&layout.previous_cert, &layout.previous_key] {
            let _ = fs::remove_file(stale);
        }
        lines.push(
            "--force: replaced the cluster's CA; nodes with the old files no longer talk to \
             nodes with the new ones"
                .into(),
        );
    }
    let ca = ClusterCa::generate_dated().map_err(|e| format!("cannot generate a CA: {e}"))?;
    write(&layout.ca_cert, ca.cert_pem(), false)?;
    write(&layout.ca_key, ca.key_pem(), true)?;
    layout.write_bundle(&[ca.cert_pem()])?;
    lines.push(format!(
        "wrote a new cluster CA: {} (certificate for the nodes), {} (private)",
        layout.bundle.display(),
        layout.ca_key.display()
    ));
    issue(layout, &ca, &ids, args.days, &mut lines)?;
    let spec = ClusterSpec {
        nodes,
        node_cert_path: "node_%d.crt".into(),
        node_key_path: "node_%d.key".into(),
        cluster_cert_path: "cluster.crt".into(),
        ..ClusterSpec::default()
    };
    write(&layout.spec, &spec.to_json(), false)?;
    lines.push(format!("wrote {}", layout.spec.display()));
    lines.push(ca_warning(layout));
    lines.push("next:".into());
    lines.push(format!(
        "  edit the node addresses in {} if the nodes do not all run on this machine",
        layout.spec.display()
    ));
    lines.push(
        "  copy cluster.json, cluster.crt, node_N.crt and node_N.key to node N's machine".into(),
    );
    lines.push(format!(
        "  start each node: reign node --spec {} --id N",
        layout.spec.display()
    ));
    Ok(InitReport {
        spec: layout.spec.clone(),
        lines,
    })
}

fn load_spec(layout: &Layout) -> Result<ClusterSpec, String> {
    ClusterSpec::load(&layout.spec).map_err(|e| format!("cannot read the cluster's spec: {e}"))
}

/// Adds the nodes of `--nodes` that the spec lacks, or `--add-nodes N`
/// new ones, with the cluster's CA; nothing that exists is rewritten.
fn add(args: &InitArgs, layout: &Layout) -> Result<InitReport, String> {
    let refuse = || {
        format!(
            "{} already holds a cluster; refusing to overwrite it. Add nodes with --add-nodes N \
             or --nodes LIST (the missing ones are added), renew certificates with --renew, roll \
             the CA over with --rollover-ca, or start over with --force (a new CA: every node \
             needs the new files)",
            args.dir.display()
        )
    };
    let mut spec = load_spec(layout).map_err(|e| format!("{}; {e}", refuse()))?;
    let wanted: Vec<NodeId> = match (args.add_nodes, &args.nodes) {
        (Some(0), _) => return Err("--add-nodes needs at least 1".into()),
        (Some(count), _) => {
            let next = spec
                .nodes
                .iter()
                .map(|n| u32::from(n.id) + 1)
                .max()
                .unwrap_or(0);
            let last = next + u32::from(count) - 1;
            if last > u32::from(u16::MAX) {
                return Err(format!(
                    "cannot add {count} nodes after id {}: ids end at {}",
                    next - 1,
                    u16::MAX
                ));
            }
            (next..=last).map(|id| NodeId(id as u16)).collect()
        }
        (None, Some(list)) => parse_nodes(list)?,
        (None, None) => return Err(refuse()),
    };
    let missing: Vec<NodeId> = wanted
        .iter()
        .copied()
        .filter(|id| !spec.nodes.iter().any(|n| n.id == id.0))
        .collect();
    if missing.is_empty() {
        return Err(format!(
            "every node asked for is already in {}; nothing written. --renew reissues their \
             certificates; --force starts a new cluster",
            layout.spec.display()
        ));
    }
    for &id in &missing {
        spec.nodes.push(descriptor(args, id)?);
    }
    let ca = layout.load_ca()?;
    let mut lines = Vec::new();
    issue(layout, &ca, &missing, args.days, &mut lines)?;
    write(&layout.spec, &spec.to_json(), false)?;
    let list: Vec<String> = missing.iter().map(|id| id.0.to_string()).collect();
    lines.push(format!(
        "added node(s) {} to {} (addresses on 127.0.0.1 from port {}); the CA and the other \
         nodes' files are unchanged",
        list.join(", "),
        layout.spec.display(),
        args.base_port
    ));
    lines.push(ca_warning(layout));
    lines.push("next:".into());
    lines.push(format!(
        "  edit the new nodes' addresses in {} if needed, and copy it to every node",
        layout.spec.display()
    ));
    lines.push("  copy cluster.crt and node_N.crt, node_N.key to each new node N; start it".into());
    lines.push(
        "  reload the running nodes (kill -HUP <pid>), or let them learn of the new ones".into(),
    );
    Ok(InitReport {
        spec: layout.spec.clone(),
        lines,
    })
}

/// `--renew`: new certificates for the spec's nodes (or `--nodes`).
fn renew(args: &InitArgs, layout: &Layout) -> Result<InitReport, String> {
    let spec = load_spec(layout)?;
    let ids: Vec<NodeId> = match &args.nodes {
        Some(list) => {
            let ids = parse_nodes(list)?;
            if let Some(absent) = ids
                .iter()
                .find(|id| !spec.nodes.iter().any(|n| n.id == id.0))
            {
                return Err(format!(
                    "node {} is not in {}; add it without --renew",
                    absent.0,
                    layout.spec.display()
                ));
            }
            ids
        }
        None => spec.nodes.iter().map(|n| NodeId(n.id)).collect(),
    };
    let ca = layout.load_ca()?;
    let mut lines = Vec::new();
    issue(layout, &ca, &ids, args.days, &mut lines)?;
    lines.push(ca_warning(layout));
    lines.push("next:".into());
    lines.push(
        "  copy node_N.crt and node_N.key to each node N, then reload it: kill -HUP <pid> \
         (or Node::reload); links stay up, new connections use the new certificate"
            .into(),
    );
    if layout.previous_cert.exists() {
        lines.push(format!(
            "  then, once every node runs its new certificate: reign init --dir {} --drop-old-ca",
            layout.dir.display()
        ));
    }
    Ok(InitReport {
        spec: layout.spec.clone(),
        lines,
    })
}

/// `--rollover-ca`, step 1 of 3: a new signing CA, trusted beside the old.
fn rollover(layout: &Layout) -> Result<InitReport, String> {
    let bundle = layout.bundle_certs()?;
    if layout.previous_cert.exists() || bundle.len() > 1 {
        return Err(format!(
            "a CA rollover is already under way ({} trusts {} CAs); finish it with \
             `reign init --renew` then `reign init --drop-old-ca`",
            layout.bundle.display(),
            bundle.len()
        ));
    }
    let old = layout.load_ca()?;
    let new = ClusterCa::generate_dated().map_err(|e| format!("cannot generate a CA: {e}"))?;
    layout.make_ca_dir()?;
    write(&layout.previous_cert, old.cert_pem(), false)?;
    write(&layout.previous_key, old.key_pem(), true)?;
    write(&layout.ca_cert, new.cert_pem(), false)?;
    write(&layout.ca_key, new.key_pem(), true)?;
    let mut certs: Vec<&str> = bundle.iter().map(String::as_str).collect();
    certs.push(new.cert_pem());
    layout.write_bundle(&certs)?;
    let lines = vec![
        format!(
            "CA rollover, step 1 of 3: made a new CA ({}); {} now trusts the old and the new one; \
             node certificates are unchanged",
            layout.ca_cert.display(),
            layout.bundle.display()
        ),
        ca_warning(layout),
        "next:".into(),
        "  1. copy cluster.crt to every node and reload each (kill -HUP <pid>)".into(),
        format!(
            "  2. when every node has it: reign init --dir {} --renew, copy each node its \
             node_N.crt and node_N.key, reload each",
            layout.dir.display()
        ),
        format!(
            "  3. when every node runs its new certificate: reign init --dir {} --drop-old-ca, \
             copy cluster.crt to every node, reload each",
            layout.dir.display()
        ),
    ];
    Ok(InitReport {
        spec: layout.spec.clone(),
        lines,
    })
}

/// `--drop-old-ca`, step 3 of 3: trust only the new CA.
fn drop_old(layout: &Layout) -> Result<InitReport, String> {
    let bundle = layout.bundle_certs()?;
    if !layout.previous_cert.exists() && bundle.len() <= 1 {
        return Err(format!(
            "no CA rollover is under way ({} trusts one CA); begin one with --rollover-ca",
            layout.bundle.display()
        ));
    }
    let ca = layout.load_ca()?;
    // Every node's certificate must already come from the new CA, or the
    // nodes that drop the old one would refuse it.
    let mut spec = load_spec(layout)?;
    spec.cluster_cert_path = String::new();
    spec.cluster_cert_pem = ca.cert_pem().to_owned();
    let now = rustls::pki_types::UnixTime::now();
    for node in spec.nodes.clone() {
        if let Err(e) = spec.resolve(NodeId(node.id), now) {
            return Err(format!(
                "node {}'s certificate is not from the new CA ({e}); run `reign init --renew`, \
                 deploy and reload first",
                node.id
            ));
        }
    }
    layout.write_bundle(&[ca.cert_pem()])?;
    for old in [&layout.previous_cert, &layout.previous_key] {
        fs::remove_file(old).map_err(|e| format!("cannot remove {}: {e}", old.display()))?;
    }
    let lines = vec![
        format!(
            "CA rollover, step 3 of 3: {} trusts only the new CA; removed the old CA's files",
            layout.bundle.display()
        ),
        ca_warning(layout),
        "next:".into(),
        "  copy cluster.crt to every node and reload each (kill -HUP <pid>); a node still \
         holding only the old CA's files is refused from then on"
            .into(),
    ];
    Ok(InitReport {
        spec: layout.spec.clone(),
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_parse() {
        assert_eq!(
            parse_nodes("0-2").unwrap(),
            vec![NodeId(0), NodeId(1), NodeId(2)]
        );
        assert_eq!(parse_nodes("5, 1,1").unwrap(), vec![NodeId(1), NodeId(5)]);
        assert!(parse_nodes("2-1").is_err());
        assert!(parse_nodes("x").is_err());
        assert!(parse_nodes("").is_err());
    }

    #[test]
    fn pem_bundles_split_in_order() {
        let a = ClusterCa::generate().unwrap();
        let b = ClusterCa::generate().unwrap();
        let both = format!("{}{}", a.cert_pem(), b.cert_pem());
        let parts = split_pem(&both);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].trim(), a.cert_pem().trim());
        assert_eq!(parts[1].trim(), b.cert_pem().trim());
        assert!(split_pem("junk").is_empty());
    }
}
