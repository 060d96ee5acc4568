//! Calm logs, counted on real `reign node` processes (real TLS, 127.0.0.1
//! only), written with `--log-format json` so every line is parsed:
//!
//! - three nodes started by hand, a second apart: no WARN, no ERROR (the
//!   dials to nodes not started yet are DEBUG);
//! - one of them killed and kept down: one WARN (`connection lost`) on each
//!   survivor while the redials go on at DEBUG; back again: one INFO;
//! - a SIGHUP that changes nothing: one INFO line and nothing else;
//! - (in-process) a dialled peer that accepts and never answers: one ERROR
//!   for the run, not one per redial.
//!
//! The summaries that come while a peer stays down longer (30 s, then at
//! doubling intervals) are counted over a virtual minute and hour in the
//! simulator (`proto/tests/sim_logs.rs`).

use std::path::Path;
use std::time::{Duration, Instant};

use reign_proto::Tuning;
use reign_tests::TestCluster;
use reign_tokio::NodeId;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// The gap between two nodes' starts, as when started by hand: each node
/// dials the others before they listen.
const START_GAP: Duration = Duration::from_secs(1);

/// How long the killed node stays down: long enough for dozens of redials
/// at the test's backoff (at most 300 ms apart), short enough for CI.
const DOWN: Duration = Duration::from_secs(10);

/// The log filter: INFO, and DEBUG for the connection lifecycle so that the
/// redials can be counted.
const FILTER: &str = "info,reign_proto::core::lifecycle=debug";

mod common;
use common::Proc;

impl Proc {
    fn spawn(dir: &Path, cluster: &TestCluster, id: u16, run: u32) -> Proc {
        let spec = dir.join(format!("spec_{id}.json"));
        std::fs::write(&spec, cluster.spec(NodeId(id)).to_json()).unwrap();
        let spec = spec.to_string_lossy().into_owned();
        let mut command = common::reign_node(&[
            "--spec",
            &spec,
            "--id",
            &id.to_string(),
            "--log-format",
            "json",
        ]);
        command.env("RUST_LOG", FILTER);
        Proc::start(command, dir.join(format!("node_{id}_{run}.log")))
    }

    /// Every complete line so far, parsed (a line that is not JSON fails).
    fn lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// Waits until `count` lines from `from` on say `message`.
    fn wait_for(&self, from: usize, message: &str, count: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.lines();
            if with_message(&lines[from.min(lines.len())..], message).len() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never logged {message:?} {count} times: {lines:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

fn with_message<'a>(lines: &'a [Value], text: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| message(l).contains(text)).collect()
}

/// Lines per level: (ERROR, WARN, INFO, DEBUG).
fn levels(lines: &[Value]) -> (usize, usize, usize, usize) {
    let n = |level: &str| lines.iter().filter(|l| l["level"] == level).count();
    (n("ERROR"), n("WARN"), n("INFO"), n("DEBUG"))
}

#[test]
fn a_three_node_start_a_peer_down_and_a_reload_log_calmly() {
    let dir = tempfile::tempdir().unwrap();
    // Default timers (a loaded machine never misses a 30 s ping), fast
    // redials so that many happen while the peer is down. The node with
    // the higher id waits 4 x `backoff_initial` (80 ms) before it dials one
    // with a lower id, shorter than the lower one's longest backoff
    // (300 ms): both ends often dial within the same few ms, and the core
    // must settle such a pair without a WARN or a second "connection
    // established" (it once replaced the first connection with a full
    // peer-down; see "Simultaneous dials" in core/lifecycle.rs).
    let tuning = Tuning {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(300),
        ..Tuning::default()
    };
    let cluster = TestCluster::with_tuning(3, tuning);
    let mut nodes = Vec::new();
    for id in 0..3 {
        if id > 0 {
            std::thread::sleep(START_GAP);
        }
        nodes.push(Proc::spawn(dir.path(), &cluster, id, 0));
    }
    for node in &nodes {
        node.wait_for(0, "connection established", 2);
    }
    // Whatever a start logs late (a gossip round, a duplicate dial) too.
    std::thread::sleep(Duration::from_secs(1));

    // 1. The start.
    for (id, node) in nodes.iter().enumerate() {
        let lines = node.lines();
        let (error, warn, info, debug) = levels(&lines);
        println!(
            "start, node {id}: {error} ERROR, {warn} WARN, {info} INFO, {debug} DEBUG ({} dials failed)",
            with_message(&lines, "dial failed").len()
        );
        let loud: Vec<&Value> = lines
            .iter()
            .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
            .collect();
        assert!(loud.is_empty(), "node {id}: {loud:#?}");
        assert!(info <= 10, "node {id}: {info} INFO lines: {lines:#?}");
        // Each connection's lines carry its span: connection id and peer.
        for up in with_message(&lines, "connection established") {
            assert_eq!(up["span"]["name"], "conn", "{up}");
            assert!(up["span"]["id"].as_str().unwrap().starts_with("conn#"));
            assert_eq!(up["span"]["peer"], up["fields"]["peer"], "{up}");
        }
    }
    // Node 0 dialled nodes 1 and 2 before they listened.
    assert!(!with_message(&nodes[0].lines(), "dial failed").is_empty());

    // 2. Node 2 killed and kept down.
    let marks: Vec<usize> = nodes.iter().map(|n| n.lines().len()).collect();
    let mut killed = nodes.pop().unwrap();
    killed.kill9();
    let down = Instant::now();
    std::thread::sleep(DOWN);
    for (id, node) in nodes.iter().enumerate() {
        let lines = node.lines();
        let since = &lines[marks[id]..];
        let (error, warn, info, debug) = levels(since);
        let redials = with_message(since, "dial failed").len();
        println!(
            "node 2 down {:.1?}, node {id}: {error} ERROR, {warn} WARN, {info} INFO, {debug} DEBUG \
             ({redials} dials failed)",
            down.elapsed()
        );
        let warns: Vec<&Value> = since.iter().filter(|l| l["level"] == "WARN").collect();
        assert_eq!(warns.len(), 1, "node {id}: one WARN: {warns:#?}");
        assert_eq!(message(warns[0]), "connection lost");
        assert_eq!(warns[0]["fields"]["peer"], 2);
        assert_eq!((error, info), (0, 0), "node {id}: {since:#?}");
        assert!(redials >= 10, "node {id}: only {redials} redials");
    }

    // 3. Node 2 back: one INFO on each survivor, saying for how long.
    let marks: Vec<usize> = nodes.iter().map(|n| n.lines().len()).collect();
    let back = Proc::spawn(dir.path(), &cluster, 2, 1);
    for (id, node) in nodes.iter().enumerate() {
        node.wait_for(marks[id], "connection established", 1);
    }
    back.wait_for(0, "connection established", 2);
    std::thread::sleep(Duration::from_millis(500));
    for (id, node) in nodes.iter().enumerate() {
        let lines = node.lines();
        let since = &lines[marks[id]..];
        let (error, warn, info, _) = levels(since);
        assert_eq!((error, warn, info), (0, 0, 1), "node {id}: {since:#?}");
        let up = with_message(since, "connection established")[0];
        println!("node {id} found node 2 again: {}", up["fields"]);
        assert!(up["fields"]["failed_dials"].as_u64().unwrap() >= 10, "{up}");
        assert!(up["fields"]["unreachable_for"].is_string(), "{up}");
    }
    let (error, warn, ..) = levels(&back.lines());
    assert_eq!((error, warn), (0, 0), "{:#?}", back.lines());

    // 4. A reload that changes nothing: one INFO line.
    let mark = nodes[0].lines().len();
    nodes[0].signal("HUP");
    nodes[0].wait_for(mark, "SIGHUP", 1);
    std::thread::sleep(Duration::from_millis(500));
    let lines = nodes[0].lines();
    let since = &lines[mark..];
    let (error, warn, info, _) = levels(since);
    println!("no-op reload: {error} ERROR, {warn} WARN, {info} INFO");
    assert_eq!((error, warn, info), (0, 0, 1), "{since:#?}");
}

/// A dialled peer that accepts and never answers (a wrong port, another
/// service): the first handshake timeout of the run is one ERROR (it needs
/// a human), the ones after it are DEBUG while the redials go on.
#[tokio::test]
async fn a_peer_that_never_answers_is_one_error_not_one_per_redial() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let (lines, _guard) = reign_tests::capture_thread_logs();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    silent.set_nonblocking(true).unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let holder = {
        let (stop, accepted) = (stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match silent.accept() {
                    Ok((stream, _)) => {
                        held.push(stream);
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    };
    let tuning = Tuning {
        handshake_timeout: Duration::from_millis(300),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..Tuning::default()
    };
    let mut cluster = TestCluster::with_tuning(2, tuning);
    cluster.addresses[1].1 = silent_addr.clone();
    let node = reign_tokio::Node::start(&cluster.spec(NodeId(0)), NodeId(0))
        .await
        .expect("node starts");
    // At least four timed-out handshakes, each a dial.
    let deadline = Instant::now() + WAIT;
    while accepted.load(Ordering::Relaxed) < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let dials = accepted.load(Ordering::Relaxed);
    let errors = lines.matching(&["ERROR"]);
    let warns = lines.matching(&["WARN"]);
    println!(
        "{dials} dials to a silent peer: {} ERROR, {} WARN",
        errors.len(),
        warns.len()
    );
    node.shutdown().await;
    stop.store(true, Ordering::Relaxed);
    holder.join().unwrap();
    assert!(dials >= 5, "only {dials} dials");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("handshake with a dialled peer timed out"));
    assert!(
        errors[0].contains(&format!("to={silent_addr}")),
        "{}",
        errors[0]
    );
    assert!(warns.is_empty(), "{warns:#?}");
}
