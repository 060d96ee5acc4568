//! What the examples share: a throw-away cluster of `n` nodes on 127.0.0.1,
//! each with a certificate from a fresh cluster CA, started in this process
//! and connected all to all. A real deployment runs one node per process
//! from a spec written by `reign init`; the calls after the start are the
//! same.

use std::time::Duration;

use reign_proto::certgen::ClusterCa;
use reign_tokio::{Node, NodeId};

/// How long the nodes may take to connect: generous, loopback takes
/// milliseconds.
pub const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// Starts nodes 0..n on ephemeral loopback ports and waits until each is
/// connected to every other.
pub async fn cluster(n: u16) -> Vec<Node> {
    let ca = ClusterCa::generate().expect("a cluster CA");
    let addresses: Vec<(NodeId, String)> = (0..n)
        .map(|i| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            (NodeId(i), format!("127.0.0.1:{port}"))
        })
        .collect();
    let mut nodes = Vec::new();
    for &(id, _) in &addresses {
        let spec = ca.inline_spec(id, &addresses).expect("a node certificate");
        nodes.push(Node::start(&spec, id).await.expect("the node starts"));
    }
    for node in &nodes {
        let others: Vec<NodeId> = addresses
            .iter()
            .map(|&(id, _)| id)
            .filter(|&id| id != node.id())
            .collect();
        assert!(
            node.wait_for_peers(&others, CONNECT_WAIT).await,
            "node {} did not connect to its peers",
            node.id().0
        );
    }
    nodes
}
