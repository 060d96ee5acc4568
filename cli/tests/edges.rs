//! Real `reign node` processes at the edges of what the OS gives them
//! (issue 15 item 10): out of file descriptors, the accept loop backs off
//! and logs a line per burst instead of spinning, and recovers when
//! descriptors free up. Children are killed and reaped whatever happens.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reign_proto::{ClusterSpec, Tuning};
use reign_tests::TestCluster;
use reign_tokio::{Node, NodeId};

mod common;
use common::{write_spec, Proc, WAIT};

impl Proc {
    /// `reign node` for `id`, under `ulimit -n nofile`, logging at INFO.
    fn spawn_limited(dir: &Path, spec: &ClusterSpec, id: u16, nofile: u32) -> Proc {
        let spec_path = write_spec(dir, spec, id);
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_reign"))
            .args(["node", "--spec"])
            .arg(&spec_path)
            .args(["--id", &id.to_string()])
            .env("RUST_LOG", "info");
        Proc::start(command, dir.join(format!("node_{id}.log")))
    }
}

/// Issue 15 item 10: `reign node` under `ulimit -n 40` gets 80 connections
/// that never speak. Accepts fail with EMFILE while they are held; the
/// node must not spin (main: full CPU, 4.7 million WARN lines in 14 s)
/// but pause, log a line per burst, and take connections again once the
/// silent ones are closed: a real peer joins afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_accept_loop_backs_off_and_recovers() {
    const NOFILE: u32 = 40;
    const CONNECTIONS: usize = 80;
    const HOLD: Duration = Duration::from_secs(8);
    let dir = tempfile::tempdir().unwrap();
    let tuning = Tuning {
        ping_interval: Duration::from_millis(100),
        read_deadline: Duration::from_secs(3),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(300),
        // Hold every silent connection for a while, more than the limit
        // lets the node have: the pool and the per-address share would
        // otherwise refuse (and close) them before descriptors run out.
        handshake_timeout: Duration::from_secs(4),
        first_bytes_timeout: Duration::from_secs(3),
        max_handshaking: 256,
        max_handshaking_per_address: 256,
        ..Tuning::default()
    };
    let cluster = TestCluster::with_tuning(2, tuning);
    // Node 0 lists only itself; node 1 joins it afterwards.
    let only_0: Vec<(NodeId, String)> = cluster.addresses[..1].to_vec();
    let mut spec0 = cluster.ca.inline_spec(NodeId(0), &only_0).unwrap();
    spec0.tuning = cluster.tuning.clone();
    let n0 = Proc::spawn_limited(dir.path(), &spec0, 0, NOFILE);
    n0.wait_for_log("node started");
    let target = cluster.address(NodeId(0)).to_owned();
    let cpu_before = n0.cpu_time();
    let lines_before = n0.log().lines().count();
    let started = Instant::now();

    let t = target.clone();
    let held = tokio::task::spawn_blocking(move || {
        let socks: Vec<TcpStream> = (0..CONNECTIONS)
            .filter_map(|_| TcpStream::connect(&t).ok())
            .collect();
        let opened = socks.len();
        std::thread::sleep(HOLD);
        drop(socks);
        opened
    })
    .await
    .unwrap();
    let held_for = started.elapsed();
    let cpu_used = match (cpu_before, n0.cpu_time()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => Duration::ZERO,
    };
    let log = n0.log();
    let new_lines: Vec<&str> = log.lines().skip(lines_before).collect();
    let accept_lines: Vec<&&str> = new_lines.iter().filter(|l| l.contains("accept")).collect();
    println!(
        "ulimit -n {NOFILE}, {held} connections held {held_for:.1?}: node CPU {cpu_used:.2?}, \
         {} log lines ({} about accept):\n{}",
        new_lines.len(),
        accept_lines.len(),
        new_lines.join("\n")
    );
    assert!(held >= CONNECTIONS / 2, "only {held} connections opened");
    assert!(
        log.contains("accept failed; pausing accepts"),
        "descriptors ran out and accept failed (else the test proves nothing):\n{log}"
    );
    // One line when a burst begins, one when it ends, a summary per 10 s:
    // a handful, where main wrote hundreds of thousands.
    assert!(
        accept_lines.len() <= 24,
        "{} accept lines in {held_for:.1?}",
        accept_lines.len()
    );
    assert!(
        new_lines.len() <= 60,
        "{} log lines in {held_for:.1?}",
        new_lines.len()
    );
    // Main spun at full CPU; backing off costs next to nothing. Generous.
    assert!(
        cpu_used < held_for / 2,
        "node used {cpu_used:?} CPU in {held_for:?}"
    );

    // Descriptors are free again: a real peer joins.
    let spec1 = cluster.spec(NodeId(1));
    let n1 = Node::start(&spec1, NodeId(1)).await.expect("node 1 starts");
    let joined = n1.wait_for_peers(&[NodeId(0)], WAIT).await;
    assert!(
        joined,
        "node 1 could not join after descriptors freed up:\n{}",
        n0.log()
    );
    n1.shutdown().await;
}
