//! One-way flood between two nodes in one process, over mutual TLS on
//! 127.0.0.1: the quickest way to profile the remote send path.
//!
//! ```sh
//! cargo run --release -p reign-tokio --example flood -- 2000000 64
//! ```

use std::time::{Duration, Instant};

use reign_proto::certgen::ClusterCa;
use reign_tokio::{Node, NodeId, SendError};

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Payload(serde_bytes::ByteBuf);

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    reign_tokio::register_type_named::<Payload>("flood.Payload").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let ca = ClusterCa::generate().unwrap();
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let addrs = vec![
            (NodeId(0), format!("127.0.0.1:{}", ports[0])),
            (NodeId(1), format!("127.0.0.1:{}", ports[1])),
        ];
        let a = Node::start(&ca.inline_spec(NodeId(0), &addrs).unwrap(), NodeId(0))
            .await
            .unwrap();
        let b = Node::start(&ca.inline_spec(NodeId(1), &addrs).unwrap(), NodeId(1))
            .await
            .unwrap();
        assert!(
            a.wait_for_peers(&[NodeId(1)], Duration::from_secs(10))
                .await
        );
        let (sink, sink_box) = b.new_mailbox();
        let remote = a.address_of(sink.id());
        let payload = Payload(serde_bytes::ByteBuf::from(vec![
            7u8;
            size.saturating_sub(8)
        ]));
        let started = Instant::now();
        let sender = std::thread::spawn(move || {
            let mut sent = 0;
            while sent < count {
                match remote.send(payload.clone()) {
                    Ok(()) => sent += 1,
                    Err(SendError::Full) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
        });
        for _ in 0..count {
            sink_box.recv().await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        sender.join().unwrap();
        println!(
            "{count} messages of {size} bytes: {:.0} msg/s, {:.1} MB/s",
            count as f64 / secs,
            count as f64 * size as f64 / secs / 1e6
        );
        a.shutdown().await;
        b.shutdown().await;
    });
}
