//! Cluster certificates, generated once per process (key generation is far
//! slower than one fuzz iteration), and the node specs built from them.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reign_proto::certgen::{CertAndKey, ClusterCa};
use reign_proto::spec::{ClusterSpec, NodeDescriptor, ResolvedSpec};
use reign_proto::NodeId;
use rustls::pki_types::UnixTime;
use rustls::time_provider::TimeProvider;

/// Nodes that have a certificate: 0, 1 and 2.
pub const NODES: u16 = 3;

/// The wall time every certificate check sees.
pub fn wall_time() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000))
}

/// A clock stopped at [`wall_time`], for rustls.
#[derive(Debug)]
pub struct FixedTime;

impl TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(wall_time())
    }
}

/// The time provider cores are built with.
pub fn time_provider() -> Arc<dyn TimeProvider> {
    Arc::new(FixedTime)
}

/// The process-wide test cluster material.
pub struct Material {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// Certificate and key of nodes 0, 1 and 2.
    pub nodes: Vec<CertAndKey>,
    /// Resolved specs: `resolved[size - 2][node]` for a cluster of nodes
    /// `0..size` (size 2 or 3).
    pub resolved: Vec<Vec<ResolvedSpec>>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material").finish_non_exhaustive()
    }
}

/// The address node `id` listens on in the test cluster.
pub fn address(id: u16) -> String {
    format!("127.0.0.1:{}", 21000 + id)
}

/// A spec of nodes `0..size` with `node`'s PEMs inlined.
pub fn spec_for(material: &Material, size: u16, node: u16) -> ClusterSpec {
    let pems = &material.nodes[node as usize];
    ClusterSpec {
        nodes: (0..size)
            .map(|id| NodeDescriptor {
                id,
                address: address(id),
                listen_address: String::new(),
                local_address: String::new(),
            })
            .collect(),
        node_cert_pem: pems.cert_pem.clone(),
        node_key_pem: pems.key_pem.clone(),
        cluster_cert_pem: material.ca_pem.clone(),
        ..ClusterSpec::default()
    }
}

/// The material, generated on first use.
pub fn material() -> &'static Material {
    static MATERIAL: OnceLock<Material> = OnceLock::new();
    MATERIAL.get_or_init(|| {
        let ca = ClusterCa::generate().expect("generate a CA");
        let nodes: Vec<CertAndKey> = (0..NODES)
            .map(|id| ca.node_cert(NodeId(id)).expect("issue a node certificate"))
            .collect();
        let mut material = Material {
            ca_pem: ca.cert_pem().to_owned(),
            nodes,
            resolved: Vec::new(),
        };
        for size in 2..=NODES {
            let specs = (0..size)
                .map(|node| {
                    spec_for(&material, size, node)
                        .resolve(NodeId(node), wall_time())
                        .expect("resolve a generated spec")
                })
                .collect();
            material.resolved.push(specs);
        }
        material
    })
}

/// A resolved spec for `node` of a cluster of nodes `0..size`, with `tuning`.
pub fn resolved(size: u16, node: u16, tuning: reign_proto::Tuning) -> ResolvedSpec {
    let mut spec = material().resolved[size as usize - 2][node as usize].clone();
    spec.tuning = tuning;
    spec
}

/// The node ids of a test cluster of `size` nodes, by id.
pub fn descriptors(size: u16) -> BTreeMap<NodeId, NodeDescriptor> {
    material().resolved[size as usize - 2][0].nodes.clone()
}
