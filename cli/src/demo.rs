//! `reign demo`: a throw-away cluster on loopback, walked through its
//! capabilities, with a short report of what was observed.

use std::time::{Duration, Instant};

use reign_proto::certgen::ClusterCa;
use reign_proto::{Address, ClusterSpec, NodeId};
use reign_tokio::{MailboxExt, Node};

/// Demo options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Messages in the throughput step.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
}

const WAIT: Duration = Duration::from_secs(10);

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn specs(n: u16) -> Result<Vec<ClusterSpec>, String> {
    let ca = ClusterCa::generate().map_err(|e| e.to_string())?;
    let mut addresses = Vec::new();
    for i in 0..n {
        addresses.push((NodeId(i), format!("127.0.0.1:{}", free_port()?)));
    }
    (0..n)
        .map(|i| {
            ca.inline_spec(NodeId(i), &addresses)
                .map_err(|e| e.to_string())
        })
        .collect()
}

fn step(name: &str) {
    println!("-- {name}");
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> Result<(), String> {
    let started = Instant::now();
    println!("reign demo: a 3-node cluster on 127.0.0.1 with mutual TLS");
    let specs = specs(3)?;
    let mut nodes = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        nodes.push(
            Node::start(spec, NodeId(i as u16))
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    for node in &nodes {
        let others: Vec<NodeId> = (0..3).map(NodeId).filter(|&n| n != node.id()).collect();
        if !node.wait_for_peers(&others, WAIT).await {
            return Err(format!("{:?} did not connect", node.id()));
        }
    }
    step("cluster connected: every node has a TLS 1.3 connection to every other");

    step("remote send: node 0 -> a mailbox on node 2");
    let (addr, mailbox) = nodes[2].new_mailbox();
    nodes[0]
        .address_of(addr.id())
        .send(String::from("hello from node 0"))
        .map_err(|e| e.to_string())?;
    let msg = mailbox
        .recv_timeout(WAIT)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "   node 2 received {:?}",
        msg.downcast::<String>().map_err(|_| "wrong type")?
    );

    step("addresses travel: node 1 sends its address to node 2, which replies to it");
    let (reply_to, reply_box) = nodes[1].new_mailbox();
    nodes[1]
        .address_of(addr.id())
        .send(reply_to)
        .map_err(|e| e.to_string())?;
    let back: Address = mailbox
        .recv_timeout(WAIT)
        .await
        .map_err(|e| e.to_string())?
        .downcast()
        .map_err(|_| "wrong type")?;
    back.send(String::from("reply from node 2"))
        .map_err(|e| e.to_string())?;
    let reply = reply_box
        .recv_timeout(WAIT)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "   node 1 received {:?}",
        reply.downcast::<String>().map_err(|_| "wrong type")?
    );

    step("round trip latency: 2,000 ping-pongs between node 0 and node 1");
    let (pong_addr, pong_box) = nodes[1].new_mailbox();
    let (ping_addr, ping_box) = nodes[0].new_mailbox();
    let ponger = tokio::spawn(async move {
        while let Ok(msg) = pong_box.recv().await {
            if let Ok(reply) = msg.downcast::<Address>() {
                if reply.send(1u8).is_err() {
                    break;
                }
            }
        }
    });
    let remote_pong = nodes[0].address_of(pong_addr.id());
    let mut rtts = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let t = Instant::now();
        remote_pong
            .send(ping_addr.clone())
            .map_err(|e| e.to_string())?;
        ping_box
            .recv_timeout(WAIT)
            .await
            .map_err(|e| e.to_string())?;
        rtts.push(t.elapsed());
    }
    rtts.sort();
    let p50 = rtts[rtts.len() / 2];
    let p99 = rtts[rtts.len() * 99 / 100];
    println!(
        "   p50 {:.0} µs, p99 {:.0} µs",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );

    step(&format!(
        "throughput: {} messages of 64 bytes, node 0 -> node 1",
        args.messages
    ));
    let (sink, sink_box) = nodes[1].new_mailbox();
    let remote_sink = nodes[0].address_of(sink.id());
    let payload = reign_proto::types::register_type_named::<Payload64>("demo.Payload64")
        .map(|_| Payload64([7; 64]));
    let payload = payload.map_err(|e| e.to_string())?;
    let t = Instant::now();
    let n = args.messages;
    let sender = tokio::task::spawn_blocking(move || {
        let mut i = 0;
        while i < n {
            match remote_sink.send(payload.clone()) {
                Ok(()) => i += 1,
                Err(reign_proto::SendError::Full) => std::thread::yield_now(),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    });
    for _ in 0..n {
        sink_box
            .recv_timeout(WAIT)
            .await
            .map_err(|e| e.to_string())?;
    }
    sender.await.map_err(|e| e.to_string())??;
    let elapsed = t.elapsed();
    println!(
        "   {:.0} messages/s ({:.1} MB/s of payload)",
        n as f64 / elapsed.as_secs_f64(),
        n as f64 * 64.0 / elapsed.as_secs_f64() / 1e6
    );

    ponger.abort();
    for node in &nodes {
        node.shutdown().await;
    }
    println!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Payload64(#[serde(with = "serde_bytes")] [u8; 64]);
