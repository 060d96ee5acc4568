//! `reign init`: a cluster CA, a certificate and key per node, and a spec.

use std::fs;
use std::path::{Path, PathBuf};

use reign_proto::certgen::ClusterCa;
use reign_proto::{ClusterSpec, NodeDescriptor, NodeId};

/// What `reign init` makes.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Folder to write into (created if missing).
    #[arg(long, default_value = "reign-cluster")]
    pub dir: PathBuf,
    /// Node ids to issue certificates for: `0-2` or `0,1,5`.
    #[arg(long, default_value = "0-2")]
    pub nodes: String,
    /// Write a spec with every node on 127.0.0.1 from this port up.
    #[arg(long, default_value_t = 29000)]
    pub base_port: u16,
    /// Reuse the CA already in `dir` (to add nodes) instead of making one.
    #[arg(long)]
    pub reuse_ca: bool,
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

/// Runs `reign init`; returns the path of the spec it wrote.
pub fn run(args: &InitArgs) -> Result<PathBuf, String> {
    let ids = parse_nodes(&args.nodes)?;
    fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    let ca_cert_path = args.dir.join("cluster.crt");
    let ca_key_path = args.dir.join("cluster.key");
    let ca = if args.reuse_ca {
        let cert = fs::read_to_string(&ca_cert_path)
            .map_err(|e| format!("cannot read {}: {e}", ca_cert_path.display()))?;
        let key = fs::read_to_string(&ca_key_path)
            .map_err(|e| format!("cannot read {}: {e}", ca_key_path.display()))?;
        ClusterCa::from_pem(&cert, &key).map_err(|e| format!("cannot load the CA: {e}"))?
    } else {
        let ca = ClusterCa::generate().map_err(|e| format!("cannot generate a CA: {e}"))?;
        write(&ca_cert_path, ca.cert_pem(), false)?;
        // Only `reign init --reuse-ca` needs this key; keep it off the nodes.
        write(&ca_key_path, ca.key_pem(), true)?;
        ca
    };
    for &id in &ids {
        let pair = ca
            .node_cert(id)
            .map_err(|e| format!("cannot issue a certificate: {e}"))?;
        write(
            &args.dir.join(format!("node_{}.crt", id.0)),
            &pair.cert_pem,
            false,
        )?;
        write(
            &args.dir.join(format!("node_{}.key", id.0)),
            &pair.key_pem,
            true,
        )?;
    }
    let spec_path = args.dir.join("cluster.json");
    let descriptor = |id: &NodeId| NodeDescriptor {
        id: id.0,
        address: format!("127.0.0.1:{}", u32::from(args.base_port) + u32::from(id.0)),
        listen_address: String::new(),
        local_address: String::new(),
    };
    let spec = match ClusterSpec::load(&spec_path) {
        // Adding nodes to an existing cluster: keep its spec, add the new ones.
        Ok(mut spec) if args.reuse_ca => {
            for id in &ids {
                if !spec.nodes.iter().any(|n| n.id == id.0) {
                    spec.nodes.push(descriptor(id));
                }
            }
            spec
        }
        _ => ClusterSpec {
            nodes: ids.iter().map(descriptor).collect(),
            node_cert_path: "node_%d.crt".into(),
            node_key_path: "node_%d.key".into(),
            cluster_cert_path: "cluster.crt".into(),
            ..ClusterSpec::default()
        },
    };
    write(&spec_path, &spec.to_json(), false)?;
    Ok(spec_path)
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
    fn init_writes_a_spec_every_node_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let args = InitArgs {
            dir: dir.path().to_owned(),
            nodes: "0-2".into(),
            base_port: 31000,
            reuse_ca: false,
        };
        let spec_path = run(&args).unwrap();
        let spec = ClusterSpec::load(&spec_path).unwrap();
        let now = rustls_now();
        for id in 0..3 {
            spec.resolve(NodeId(id), now).unwrap();
        }
        // Adding a node later with the same CA yields a certificate the
        // cluster accepts.
        run(&InitArgs {
            nodes: "3".into(),
            reuse_ca: true,
            ..args
        })
        .unwrap();
        let spec = ClusterSpec::load(&spec_path).unwrap();
        assert_eq!(spec.nodes.len(), 4);
        for id in 0..4 {
            spec.resolve(NodeId(id), now).unwrap();
        }
    }

    fn rustls_now() -> rustls::pki_types::UnixTime {
        rustls::pki_types::UnixTime::now()
    }
}
