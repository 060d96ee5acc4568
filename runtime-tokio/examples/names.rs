//! How long 10,000 names registered on one node take to be visible on two
//! others, over mutual TLS on 127.0.0.1.
//!
//! ```sh
//! cargo run --release -p reign-tokio --example names -- 10000
//! ```

use std::time::{Duration, Instant};

use reign_proto::certgen::ClusterCa;
use reign_tokio::{Node, NodeId};

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let ca = ClusterCa::generate().unwrap();
        let addrs: Vec<(NodeId, String)> = (0..3)
            .map(|i| {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                (NodeId(i), format!("127.0.0.1:{port}"))
            })
            .collect();
        let mut nodes = Vec::new();
        for i in 0..3 {
            nodes.push(
                Node::start(&ca.inline_spec(NodeId(i), &addrs).unwrap(), NodeId(i))
                    .await
                    .unwrap(),
            );
        }
        for node in &nodes {
            let others: Vec<NodeId> = (0..3).map(NodeId).filter(|&n| n != node.id()).collect();
            assert!(node.wait_for_peers(&others, Duration::from_secs(10)).await);
        }
        let mailboxes: Vec<_> = (0..count).map(|_| nodes[0].new_mailbox()).collect();
        let names: Vec<String> = (0..count).map(|i| format!("name-{i}")).collect();
        let started = Instant::now();
        for (name, (addr, _)) in names.iter().zip(&mailboxes) {
            nodes[0].register(name, addr).unwrap();
        }
        let registered = started.elapsed();
        let last = names.last().unwrap().as_str();
        for node in &nodes[1..] {
            // Claims apply in order: once the last is seen, all are.
            while !node.seen_names(&[last])[0] {
                tokio::task::yield_now().await;
            }
        }
        let visible = started.elapsed();
        println!(
            "{count} names: registered in {:.1} ms, visible on both peers after {:.1} ms",
            registered.as_secs_f64() * 1e3,
            visible.as_secs_f64() * 1e3
        );
        for node in &nodes {
            node.shutdown().await;
        }
    });
}
