//! `reign status` against live `reign node --admin` processes (real TLS,
//! 127.0.0.1 only): the table lists every peer, `--json` is the endpoint's
//! status, a token is asked for and checked, and a non-loopback admin
//! address is refused without `--admin-public` and a token.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reign_tests::{free_ports, TestCluster};
use reign_tokio::admin::Status;
use reign_tokio::NodeId;

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "t0ken-for-tests";

mod common;
use common::{write_spec, Proc};

impl Proc {
    fn spawn(dir: &Path, cluster: &TestCluster, id: u16, extra: &[&str]) -> Proc {
        let spec = write_spec(dir, &cluster.spec(NodeId(id)), id);
        let spec = spec.to_string_lossy().into_owned();
        let mut command = common::reign_node(&["--spec", &spec, "--id", &id.to_string()]);
        command.args(extra).env("REIGN_ADMIN_TOKEN", TOKEN);
        Proc::start(command, dir.join(format!("node_{id}.log")))
    }
}

/// `reign ARGS` to completion (bounded by its own HTTP timeout).
fn reign(args: &[&str], token: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reign"));
    command.args(args).env_remove("REIGN_ADMIN_TOKEN");
    if let Some(token) = token {
        command.env("REIGN_ADMIN_TOKEN", token);
    }
    command.stdin(Stdio::null()).output().expect("run reign")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn reign_status_prints_every_peer_of_a_live_node() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::new(3);
    let admin = format!("127.0.0.1:{}", free_ports(1)[0]);
    let _nodes = [
        Proc::spawn(dir.path(), &cluster, 0, &["--admin", &admin]),
        Proc::spawn(dir.path(), &cluster, 1, &[]),
        Proc::spawn(dir.path(), &cluster, 2, &[]),
    ];

    // Until node 0 is up and sees both peers (the token comes from the
    // environment, as `reign node` took it).
    let deadline = Instant::now() + WAIT;
    let status: Status = loop {
        let output = reign(&["status", "--admin", &admin, "--json"], Some(TOKEN));
        if output.status.success() {
            let status: Status = serde_json::from_slice(&output.stdout).unwrap();
            if status.peers.iter().filter(|p| p.state == "up").count() == 2 {
                break status;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node 0 never saw its peers: {}",
            text(&output)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.node, 0);
    // The built-in service's groups are in the directory.
    assert!(status.groups.contains_key("echo"), "{:?}", status.groups);

    let output = reign(&["status", "--admin", &admin, "--token", TOKEN], None);
    assert!(output.status.success(), "{}", text(&output));
    let table = String::from_utf8(output.stdout).unwrap();
    println!("{table}");
    assert!(table.starts_with("node 0  reign "), "{table}");
    assert!(table.contains("peers 2/2 up"), "{table}");
    let header = table
        .lines()
        .find(|l| l.starts_with("PEER"))
        .expect("a header row");
    for column in [
        "STATE",
        "RTT",
        "MSGS OUT",
        "BYTES IN",
        "RECONNECTS",
        "LAST CLOSE",
    ] {
        assert!(header.contains(column), "{header}");
    }
    for peer in ["1", "2"] {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(peer))
            .unwrap_or_else(|| panic!("no row for peer {peer}: {table}"));
        assert_eq!(row.split_whitespace().nth(1), Some("up"), "{row}");
    }

    // --watch redraws until stopped.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_reign"))
        .args(["status", "--admin", &admin, "--watch", "1"])
        .env("REIGN_ADMIN_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run reign status --watch");
    std::thread::sleep(Duration::from_millis(2500));
    let _ = watch.kill();
    let output = watch.wait_with_output().unwrap();
    let screens = String::from_utf8_lossy(&output.stdout);
    assert!(screens.matches("\x1b[2J").count() >= 2, "{screens}");
    assert!(screens.matches("peers 2/2 up").count() >= 2, "{screens}");

    // Without the token, or with a wrong one: refused, and told why.
    for token in [None, Some("wrong")] {
        let output = reign(&["status", "--admin", &admin], token);
        assert!(!output.status.success());
        assert!(text(&output).contains("wants a token"), "{}", text(&output));
    }
}

#[test]
fn a_public_admin_address_needs_the_flag_and_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::new(1);
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, cluster.spec(NodeId(0)).to_json()).unwrap();
    let spec = spec.to_string_lossy().into_owned();
    let public = format!("0.0.0.0:{}", free_ports(1)[0]);
    let node = |extra: &[&str]| {
        let mut args = vec!["node", "--spec", &spec, "--id", "0", "--admin", &public];
        args.extend_from_slice(extra);
        reign(&args, None)
    };
    let output = node(&[]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("--admin-public"),
        "{}",
        text(&output)
    );
    let output = node(&["--admin-public"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("needs a token"), "{}", text(&output));
}
