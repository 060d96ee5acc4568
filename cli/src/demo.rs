//! `reign demo`: a throw-away 3-node cluster on 127.0.0.1 — this process is
//! node 0, nodes 1 and 2 are child `reign node` processes — walked through
//! every capability, then a short report of what was observed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reign_proto::certgen::ClusterCa;
use reign_proto::{ClusterSpec, MailboxClosed, NodeDescriptor, NodeId, RequestError, Tuning};
use reign_tokio::{MailboxExt, Node};

use crate::protocol::{self, Count, Echoed, Event, NodeReport, Ping, Pong, StatsQuery};

/// Demo options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Messages in the one-way throughput step.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Round trips in the latency step.
    #[arg(long, default_value_t = 5_000)]
    pub round_trips: usize,
    /// MiB streamed through the tunnel.
    #[arg(long, default_value_t = 64)]
    pub tunnel_mib: usize,
}

const WAIT: Duration = Duration::from_secs(10);

/// Child node processes, killed and reaped however the demo ends.
struct Children {
    procs: Vec<(u16, Child)>,
    dir: PathBuf,
}

impl Children {
    fn spawn(&mut self, spec: &Path, id: u16) -> Result<(), String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the reign binary: {e}"))?;
        let log = std::fs::File::create(self.dir.join(format!("node_{id}.log")))
            .map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .args(["node", "--spec"])
            .arg(spec)
            .args(["--id", &id.to_string()])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot start node {id}: {e}"))?;
        self.procs.push((id, child));
        Ok(())
    }

    fn take(&mut self, id: u16) -> Option<Child> {
        let i = self.procs.iter().position(|(n, _)| *n == id)?;
        Some(self.procs.remove(i).1)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Writes a CA, three node certificates and a spec into `dir`.
fn write_cluster(dir: &Path) -> Result<(ClusterSpec, PathBuf), String> {
    let ca = ClusterCa::generate().map_err(|e| e.to_string())?;
    let write =
        |name: &str, text: &str| std::fs::write(dir.join(name), text).map_err(|e| e.to_string());
    write("cluster.crt", ca.cert_pem())?;
    let mut nodes = Vec::new();
    for id in 0..3u16 {
        let pair = ca.node_cert(NodeId(id)).map_err(|e| e.to_string())?;
        write(&format!("node_{id}.crt"), &pair.cert_pem)?;
        write(&format!("node_{id}.key"), &pair.key_pem)?;
        nodes.push(NodeDescriptor {
            id,
            address: format!("127.0.0.1:{}", free_port()?),
            listen_address: String::new(),
            local_address: String::new(),
        });
    }
    let spec = ClusterSpec {
        nodes,
        node_cert_path: "node_%d.crt".into(),
        node_key_path: "node_%d.key".into(),
        cluster_cert_path: "cluster.crt".into(),
        // Quick failure detection for the demo: a lost node is noticed
        // within about a second even if its sockets stay open.
        tuning: Tuning {
            ping_interval: Duration::from_millis(200),
            ..Tuning::default()
        },
        ..ClusterSpec::default()
    };
    let path = dir.join("cluster.json");
    write("cluster.json", &spec.to_json())?;
    let spec = ClusterSpec::load(&path).map_err(|e| e.to_string())?;
    Ok((spec, path))
}

fn step(n: u32, name: &str) {
    println!("\n[{n}] {name}");
}

async fn stats(node: &Node, of: u16) -> Result<NodeReport, String> {
    let target = node
        .lookup(&protocol::control_name(of))
        .ok_or_else(|| format!("node-{of} is not registered"))?;
    let reply = node
        .request(&target, StatsQuery, WAIT)
        .await
        .map_err(|e| e.to_string())?;
    reply
        .downcast::<NodeReport>()
        .map_err(|_| "a stats reply of the wrong type".into())
}

struct Figures {
    rtt_p50_us: f64,
    rtt_p99_us: f64,
    req_p50_us: f64,
    oneway_msgs_per_s: f64,
    tunnel_mb_per_s: f64,
    detection_ms: f64,
    restart_ms: f64,
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("reign-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut children = Children {
        procs: Vec::new(),
        dir: dir.clone(),
    };
    let result = rt.block_on(demo(&args, &dir, &mut children));
    drop(children);
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(_) => eprintln!("node logs kept in {}", dir.display()),
    }
    result
}

async fn demo(args: &DemoArgs, dir: &Path, children: &mut Children) -> Result<(), String> {
    let started = Instant::now();
    protocol::register();
    println!("reign demo: 3 nodes on 127.0.0.1 with mutual TLS 1.3");
    println!("  node 0 is this process; nodes 1 and 2 are `reign node` child processes");
    let (spec, spec_path) = write_cluster(dir)?;
    children.spawn(&spec_path, 1)?;
    children.spawn(&spec_path, 2)?;
    let node = Node::start(&spec, NodeId(0))
        .await
        .map_err(|e| e.to_string())?;
    let n0 = &node;

    step(1, "the cluster connects");
    if !n0
        .wait_for_peers(&[NodeId(1), NodeId(2)], Duration::from_secs(20))
        .await
    {
        return Err("nodes 1 and 2 did not connect (see their logs)".into());
    }
    // Each child registers its names once up; wait until node 0 sees them.
    let deadline = Instant::now() + WAIT;
    while !n0.seen_names(&["node-1", "node-2"]).iter().all(|&b| b) {
        if Instant::now() > deadline {
            return Err("nodes 1 and 2 never registered their names".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("  connected to nodes 1 and 2; names node-1 and node-2 are registered cluster-wide");

    step(
        2,
        "names and remote send: look up node-1, send it a ping, get a pong",
    );
    let node1 = n0.lookup("node-1").ok_or("node-1 vanished")?;
    let (me, inbox) = n0.new_mailbox();
    n0.register("node-0.demo", &me).map_err(|e| e.to_string())?;
    node1
        .send(Ping {
            reply_to: me.clone(),
        })
        .map_err(|e| e.to_string())?;
    let pong: Pong = inbox
        .recv_timeout(WAIT)
        .await
        .map_err(|e| e.to_string())?
        .downcast()
        .map_err(|_| "not a pong")?;
    println!(
        "  node {} answered; the address travelled inside the message and back",
        pong.node
    );
    let dump = n0.registry_dump();
    println!(
        "  node 0 sees {} names on {} mailboxes",
        dump.name_count, dump.address_count
    );

    step(
        3,
        &format!(
            "round trips: {} ping-pongs node 0 <-> node 1",
            args.round_trips
        ),
    );
    let mut rtts = Vec::with_capacity(args.round_trips);
    for _ in 0..args.round_trips {
        let t = Instant::now();
        node1
            .send(Ping {
                reply_to: me.clone(),
            })
            .map_err(|e| e.to_string())?;
        inbox.recv_timeout(WAIT).await.map_err(|e| e.to_string())?;
        rtts.push(t.elapsed());
    }
    let (rtt_p50, rtt_p99) = percentiles(&mut rtts);
    println!("  p50 {rtt_p50:.0} µs, p99 {rtt_p99:.0} µs");

    step(
        4,
        "request/reply: 1,000 echo requests load balanced over nodes 1 and 2",
    );
    let mut by_node = [0u32; 3];
    let mut latencies = Vec::new();
    for i in 0..1000u32 {
        let t = Instant::now();
        let reply = n0
            .request(
                protocol::ECHO,
                serde_bytes::ByteBuf::from(i.to_le_bytes().to_vec()),
                WAIT,
            )
            .await
            .map_err(|e| e.to_string())?;
        latencies.push(t.elapsed());
        let echoed: Echoed = reply.downcast().map_err(|_| "not an echo")?;
        if echoed.payload.as_ref() != i.to_le_bytes() {
            return Err("an echo came back changed".into());
        }
        by_node[echoed.node as usize] += 1;
    }
    let (req_p50, req_p99) = percentiles(&mut latencies);
    println!(
        "  node 1 answered {}, node 2 answered {}; p50 {req_p50:.0} µs, p99 {req_p99:.0} µs",
        by_node[1], by_node[2]
    );
    match n0.request("no.such.service", 1u8, WAIT).await {
        Err(RequestError::NoMember) => {
            println!("  a request to an empty service fails at once with NoMember")
        }
        other => return Err(format!("expected NoMember, got {other:?}")),
    }

    step(5, "broadcast and publish/subscribe: 100 events each");
    for seq in 0..100 {
        n0.broadcast(protocol::BROADCAST, Event { seq })
            .map_err(|e| e.to_string())?;
        n0.publish(protocol::NEWS, Event { seq })
            .map_err(|e| e.to_string())?;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let (r1, r2) = (stats(n0, 1).await?, stats(n0, 2).await?);
        if [&r1, &r2]
            .iter()
            .all(|r| r.broadcasts == 100 && r.publications == 100)
        {
            println!("  every member got 100 broadcasts and every subscriber 100 publications, one wire copy per node");
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "events missing: node 1 {}/{}, node 2 {}/{}",
                r1.broadcasts, r1.publications, r2.broadcasts, r2.publications
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    step(
        6,
        &format!(
            "a tunnel: {} MiB streamed to the sink service, flow controlled",
            args.tunnel_mib
        ),
    );
    let sunk = crate::service::stream_to_sink(n0, args.tunnel_mib, WAIT).await?;
    let tunnel_mb_s = sunk.mb_per_s();
    println!(
        "  the sink counted {} bytes: {tunnel_mb_s:.0} MB/s",
        sunk.bytes
    );

    step(
        7,
        &format!(
            "one-way throughput: {} messages of 64 bytes to node 1",
            args.messages
        ),
    );
    let remote = node1.clone();
    let n = args.messages;
    let t = Instant::now();
    let sender = tokio::task::spawn_blocking(move || {
        let mut seq = 0;
        while seq < n {
            match remote.send(Count {
                from: 0,
                seq,
                pad: [0; 48],
            }) {
                Ok(()) => seq += 1,
                Err(reign_proto::SendError::Full) => std::thread::yield_now(),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    });
    sender.await.map_err(|e| e.to_string())??;
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let report = stats(n0, 1).await?;
        let state = report.counted.get(&0).copied().unwrap_or_default();
        if state.received >= n || Instant::now() > deadline {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let secs = t.elapsed().as_secs_f64();
    if state.received != n || state.gaps != 0 || state.duplicates != 0 {
        return Err(format!("counted {state:?} of {n}"));
    }
    let msgs_per_s = n as f64 / secs;
    println!("  node 1 counted all {n}, none lost or repeated: {msgs_per_s:.0} messages/s");

    step(
        8,
        "supervision: kill a supervised service, node 1 reaches its new incarnation by name",
    );
    let restart = supervised_restart(n0, &node1).await?;
    println!(
        "  restarted under the same name; node 1 reached the new incarnation {:.1} ms after the kill",
        restart.as_secs_f64() * 1e3
    );

    step(
        9,
        "a close notification: watch node 2, then kill -9 its process",
    );
    let node2 = n0.lookup("node-2").ok_or("node-2 vanished")?;
    let (watcher, watcher_box) = n0.new_mailbox();
    node2.on_close_notify(&watcher);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut victim = children.take(2).ok_or("node 2 is not running")?;
    let killed = Instant::now();
    let _ = victim.kill();
    let _ = victim.wait();
    let note: MailboxClosed = watcher_box
        .recv_timeout(WAIT)
        .await
        .map_err(|e| e.to_string())?
        .downcast()
        .map_err(|_| "not a MailboxClosed")?;
    let detection = killed.elapsed();
    if note.id != node2.id() {
        return Err("MailboxClosed named another mailbox".into());
    }
    if !n0.wait_for_disconnect(NodeId(2), WAIT).await {
        return Err("node 2's loss was not detected".into());
    }
    println!(
        "  MailboxClosed({:?}: {}) after {:.0} ms; node-2 is gone from the registry: {}",
        note.id,
        note.reason,
        detection.as_secs_f64() * 1e3,
        n0.lookup("node-2").is_none()
    );

    step(
        10,
        "shutdown: node 1 gets SIGTERM and says goodbye, then node 0 shuts down",
    );
    if let Some(mut child) = children.take(1) {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().map_err(|e| e.to_string())?;
        println!("  node 1 exited: {status}");
    }
    node.shutdown().await;

    let figures = Figures {
        rtt_p50_us: rtt_p50,
        rtt_p99_us: rtt_p99,
        req_p50_us: req_p50,
        oneway_msgs_per_s: msgs_per_s,
        tunnel_mb_per_s: tunnel_mb_s,
        detection_ms: detection.as_secs_f64() * 1e3,
        restart_ms: restart.as_secs_f64() * 1e3,
    };
    report(&figures, started.elapsed());
    Ok(())
}

/// The registry name of the demo's supervised service.
const SUPERVISED: &str = "demo.supervised";

/// Runs a one-for-one supervisor on node 0 whose child is registered as
/// [`SUPERVISED`] and reports each [`Count`] from node 1 with its serial; kills the child,
/// waits for its restart under the same name, and has node 1 send to that
/// name: the time from the kill to the new incarnation's first message
/// from node 1.
async fn supervised_restart(n0: &Node, node1: &reign_proto::Address) -> Result<Duration, String> {
    use reign_tokio::{ChildSpec, Strategy, SupervisorSpec};

    let (reports, heard) = n0.new_mailbox();
    let spec = SupervisorSpec::new(Strategy::OneForOne).child(
        ChildSpec::worker("service", move |mailbox| {
            let reports = reports.clone();
            async move {
                while let Ok(count) = mailbox.recv_type::<Count>().await {
                    if count.from == 1 {
                        let _ = reports.send(mailbox.id().serial);
                    }
                }
            }
        })
        .register(SUPERVISED),
    );
    let supervisor = n0.supervise("demo", spec);
    let deadline = Instant::now() + WAIT;
    let first = loop {
        if let Some(address) = supervisor.which_children()[0].address.clone() {
            break address;
        }
        if Instant::now() > deadline {
            return Err("the supervised service did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let killed = Instant::now();
    first.kill().map_err(|e| e.to_string())?;
    // The name moves on node 0 at the restart; a sync puts it on node 1.
    while n0.lookup(SUPERVISED).is_none_or(|a| a.id() == first.id()) {
        if Instant::now() > deadline {
            return Err("the supervised service was not restarted".into());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    n0.sync().await;
    node1
        .send(protocol::StartLoad {
            target: SUPERVISED.into(),
            count: 1,
        })
        .map_err(|e| e.to_string())?;
    let serial: u64 = heard
        .recv_timeout(WAIT)
        .await
        .map_err(|e| format!("node 1 did not reach the new incarnation: {e}"))?
        .downcast()
        .map_err(|_| "not a report")?;
    let took = killed.elapsed();
    if serial == first.id().serial {
        return Err("the message did not come from node 1 to the new incarnation".into());
    }
    supervisor.shutdown();
    Ok(took)
}

fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)].as_secs_f64() * 1e6
    };
    (at(0.5), at(0.99))
}

fn report(f: &Figures, elapsed: Duration) {
    println!("\nreport");
    println!(
        "  one-way 64 B messages      {:>12.0} msg/s",
        f.oneway_msgs_per_s
    );
    println!(
        "  round trip p50 / p99       {:>7.0} / {:.0} µs",
        f.rtt_p50_us, f.rtt_p99_us
    );
    println!("  request/reply p50          {:>12.0} µs", f.req_p50_us);
    println!(
        "  tunnel                     {:>12.0} MB/s",
        f.tunnel_mb_per_s
    );
    println!("  kill -9 noticed after      {:>12.0} ms", f.detection_ms);
    println!("  supervised restart seen    {:>12.1} ms", f.restart_ms);
    println!(
        "  demo finished in {:.1} s; every child process has exited",
        elapsed.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_samples() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        assert_eq!(percentiles(&mut samples), (51.0, 100.0));
    }

    #[test]
    fn the_written_cluster_resolves_for_every_node() {
        let dir = tempfile::tempdir().unwrap();
        let (spec, _) = write_cluster(dir.path()).unwrap();
        for id in 0..3 {
            spec.resolve(NodeId(id), rustls::pki_types::UnixTime::now())
                .unwrap();
        }
    }
}
