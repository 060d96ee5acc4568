//! `reign init` as an operator runs it: refusing to overwrite, `--force`,
//! adding nodes with the cluster's CA, `--days`, and a CA rollover through
//! the command line applied to a running `reign node` process with SIGHUP.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use reign_proto::certgen::{CertAndKey, DEFAULT_NODE_CERT_DAYS};
use reign_proto::{ClusterSpec, Tuning};
use reign_tests::raw_peer::{ClientAuth, RawPeer};
use reign_tokio::{Node, NodeId};
use rustls::pki_types::UnixTime;

const WAIT: Duration = Duration::from_secs(15);

fn init(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reign"))
        .arg("init")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run reign init")
}

fn ok(output: Output) -> String {
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "reign init failed: {}{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

fn refused(output: Output) -> String {
    assert!(!output.status.success(), "reign init should have refused");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every file of the folder (and `ca/`), with its contents.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for folder in [dir.to_owned(), dir.join("ca")] {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

fn certificates_in(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

/// Every node of the spec resolves (its certificate is from a CA it trusts).
fn all_resolve(dir: &Path) -> Vec<u16> {
    let spec = ClusterSpec::load(dir.join("cluster.json")).unwrap();
    for node in &spec.nodes {
        spec.resolve(NodeId(node.id), UnixTime::now())
            .unwrap_or_else(|e| panic!("node {}: {e}", node.id));
    }
    spec.nodes.iter().map(|n| n.id).collect()
}

#[test]
fn init_refuses_to_overwrite_a_cluster_and_force_starts_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(init(d, &["--nodes", "0-2"]));
    assert!(
        out.contains("warning:") && out.contains("private key"),
        "{out}"
    );
    assert!(
        out.contains("next:") && out.contains("reign node --spec"),
        "{out}"
    );
    // The CA key sits apart from what nodes get, readable by its owner only.
    assert!(d.join("ca/ca.key").exists() && !d.join("cluster.key").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d.join("ca")), 0o700);
        assert_eq!(mode(&d.join("ca/ca.key")), 0o600);
        assert_eq!(mode(&d.join("node_0.key")), 0o600);
    }
    assert_eq!(all_resolve(d), [0, 1, 2]);
    let before = snapshot(d);

    // Again, with or without the same nodes: refused, nothing touched.
    let e = refused(init(d, &[]));
    assert!(
        e.contains("refusing to overwrite") && e.contains("--force"),
        "{e}"
    );
    let e = refused(init(d, &["--nodes", "0-2"]));
    assert!(e.contains("already in"), "{e}");
    assert_eq!(snapshot(d), before);

    // --force: a new CA, a new spec with just the nodes asked for.
    let out = ok(init(d, &["--force", "--nodes", "0-1"]));
    assert!(out.contains("--force"), "{out}");
    assert_eq!(all_resolve(d), [0, 1]);
    let was = |name: &str| {
        before
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .map(|(_, c)| c.clone())
            .unwrap()
    };
    for name in ["cluster.crt", "ca/ca.crt", "ca/ca.key", "node_0.crt"] {
        assert_ne!(file(d, name).into_bytes(), was(name), "{name} kept");
    }

    // Nothing to work on in an empty folder.
    let empty = tempfile::tempdir().unwrap();
    for flag in ["--renew", "--rollover-ca", "--drop-old-ca"] {
        assert!(refused(init(empty.path(), &[flag])).contains("holds no cluster"));
    }
    assert!(refused(init(empty.path(), &["--add-nodes", "1"])).contains("holds no cluster"));
}

#[test]
fn adding_nodes_keeps_the_ca_the_spec_and_the_other_nodes_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(init(d, &["--nodes", "0-2"]));
    // A hand edit of the spec survives additions.
    let mut spec = ClusterSpec::load(d.join("cluster.json")).unwrap();
    spec.nodes[0].address = "10.0.0.1:7000".into();
    std::fs::write(d.join("cluster.json"), spec.to_json()).unwrap();
    let before = snapshot(d);

    let out = ok(init(d, &["--add-nodes", "2"]));
    assert!(out.contains("added node(s) 3, 4"), "{out}");
    assert_eq!(all_resolve(d), [0, 1, 2, 3, 4]);
    let spec = ClusterSpec::load(d.join("cluster.json")).unwrap();
    assert_eq!(spec.nodes[0].address, "10.0.0.1:7000");
    // --nodes adds what is missing: 5 is new, 1 is kept as it is.
    ok(init(d, &["--nodes", "1,5"]));
    assert_eq!(all_resolve(d), [0, 1, 2, 3, 4, 5]);
    let after = snapshot(d);
    for (path, contents) in &before {
        if path.ends_with("cluster.json") {
            continue;
        }
        let now = after.iter().find(|(p, _)| p == path).map(|(_, c)| c);
        assert_eq!(now, Some(contents), "{} changed", path.display());
    }
    // Edges: zero nodes, and ids past the last one.
    assert!(refused(init(d, &["--add-nodes", "0"])).contains("at least 1"));
    let high = ["--base-port", "0"];
    ok(init(d, &["--nodes", "65533", high[0], high[1]]));
    let over = refused(init(d, &["--add-nodes", "3", high[0], high[1]]));
    assert!(over.contains("ids end at 65535"), "{over}");
    ok(init(d, &["--add-nodes", "2", high[0], high[1]]));
    assert!(refused(init(d, &["--add-nodes", "1", high[0], high[1]])).contains("ids end at 65535"));
    let port = refused(init(d, &["--nodes", "40000"]));
    assert!(port.contains("past 65535"), "{port}");

    // A folder of an older release: the CA key beside the node files.
    let old = tempfile::tempdir().unwrap();
    ok(init(old.path(), &[]));
    std::fs::rename(old.path().join("ca/ca.key"), old.path().join("cluster.key")).unwrap();
    let e = refused(init(old.path(), &["--add-nodes", "1"]));
    assert!(
        e.contains("move it apart first") && e.contains("mv "),
        "{e}"
    );
}

#[test]
fn init_writes_only_the_tuning_that_differs_from_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(init(d, &["--nodes", "0-1"]));
    let text = file(d, "cluster.json");
    assert!(
        !text.contains("tuning"),
        "a new spec leaves every default out: {text}"
    );
    // A hand edit in human units (and one value set to its default)...
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["tuning"] = serde_json::json!({
        "ping_interval": "5s",
        "drain_timeout": "5s",
        "accept_joins": false
    });
    std::fs::write(d.join("cluster.json"), value.to_string()).unwrap();
    let spec = ClusterSpec::load(d.join("cluster.json")).unwrap();
    assert_eq!(spec.tuning.ping_interval, std::time::Duration::from_secs(5));
    // ... is kept by a rewrite, which writes only what differs.
    ok(init(d, &["--add-nodes", "1"]));
    let value: serde_json::Value = serde_json::from_str(&file(d, "cluster.json")).unwrap();
    assert_eq!(
        value["tuning"],
        serde_json::json!({"ping_interval": 5000, "accept_joins": false})
    );
    // A bad unit is refused with the units the spec takes.
    let mut value = value;
    value["tuning"]["ping_interval"] = serde_json::json!("5 sec");
    std::fs::write(d.join("cluster.json"), value.to_string()).unwrap();
    let e = ClusterSpec::load(d.join("cluster.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ms, s, m or h"), "{e}");
}

/// Days from now to the certificate's notAfter.
fn days_valid(pem: &str) -> f64 {
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let not_after = cert.validity().not_after.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (not_after - now) as f64 / 86_400.0
}

use rustls::pki_types::pem::PemObject;

#[test]
fn days_sets_how_long_node_certificates_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(init(d, &["--nodes", "0"]));
    let default = days_valid(&file(d, "node_0.crt"));
    assert!(
        (default - f64::from(DEFAULT_NODE_CERT_DAYS)).abs() < 0.01,
        "{default}"
    );
    for days in [1u32, 30, 3650] {
        ok(init(d, &["--renew", "--days", &days.to_string()]));
        let valid = days_valid(&file(d, "node_0.crt"));
        assert!(
            (valid - f64::from(days)).abs() < 0.01,
            "--days {days}: {valid}"
        );
        all_resolve(d);
    }
    for days in ["0", "3651"] {
        assert!(refused(init(d, &["--renew", "--days", days])).contains("out of range"));
    }
    // The CA is dated too: ten years, not until the year 4096.
    let ca = days_valid(&file(d, "ca/ca.crt"));
    assert!((ca - 3650.0).abs() < 0.01, "{ca}");
}

mod common;
use common::Proc;

/// The certificate node 0 presents to a new connection that trusts `ca_pem`,
/// or the TLS error.
async fn presented(address: &str, ca_pem: &str, client: &CertAndKey) -> Result<Vec<u8>, String> {
    let (address, ca_pem, client) = (address.to_owned(), ca_pem.to_owned(), client.clone());
    tokio::task::spawn_blocking(move || {
        RawPeer::connect(&address, NodeId(0), &ca_pem, ClientAuth::Cert(&client))
            .map(|peer| peer.peer_certificate().unwrap_or_default())
    })
    .await
    .unwrap()
}

/// Whether node 0 refuses a client presenting `client` (TLS 1.3: the
/// client may finish its side first and then see the connection close).
async fn refuses(address: &str, ca_pem: &str, client: &CertAndKey) -> bool {
    let (address, ca_pem, client) = (address.to_owned(), ca_pem.to_owned(), client.clone());
    tokio::task::spawn_blocking(move || {
        match RawPeer::connect(&address, NodeId(0), &ca_pem, ClientAuth::Cert(&client)) {
            Err(_) => true,
            Ok(mut peer) => peer.read_until_closed(Duration::from_secs(5)).1,
        }
    })
    .await
    .unwrap()
}

/// Both nodes pick up what `reign init` just wrote: node 0 (a process) by
/// SIGHUP, node 1 (in this process) by `Node::reload`.
async fn reload_both(n0: &Proc, n1: &Node, spec_path: &Path, reloads: usize) {
    n0.signal("HUP");
    let changes = n1
        .reload(&ClusterSpec::load(spec_path).unwrap())
        .await
        .unwrap();
    assert!(changes.tls_renewed);
    n0.wait_for_log_times("TLS material renewed", reloads);
}

fn der(pem: &str) -> Vec<u8> {
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rollover_from_the_command_line_reaches_a_running_node_by_sighup() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(init(d, &["--nodes", "0-1"]));
    let spec_path = d.join("cluster.json");
    let mut spec = ClusterSpec::load(&spec_path).unwrap();
    for (node, port) in spec.nodes.iter_mut().zip(reign_tests::free_ports(2)) {
        node.address = format!("127.0.0.1:{port}");
    }
    spec.tuning = Tuning::fast();
    std::fs::write(&spec_path, spec.to_json()).unwrap();
    let address = spec.nodes[0].address.clone();

    let spec_arg = spec_path.to_string_lossy().into_owned();
    let n0 = Proc::start(
        common::reign_node(&["--id", "0", "--spec", &spec_arg]),
        d.join("node_0.log"),
    );
    let n1 = Node::start(&ClusterSpec::load(&spec_path).unwrap(), NodeId(1))
        .await
        .unwrap();
    assert!(n1.wait_for_peers(&[NodeId(0)], WAIT).await);
    let connects = || {
        n1.peer_stats()
            .iter()
            .find(|p| p.node == NodeId(0))
            .map(|p| (p.connects, p.disconnects))
    };
    let links = connects();
    let mut reloads = 0;

    // A renewal alone: new connections get the new certificate.
    ok(init(d, &["--renew"]));
    reloads += 1;
    reload_both(&n0, &n1, &spec_path, reloads).await;
    let ca_pem = file(d, "cluster.crt");
    let client =
        reign_proto::certgen::ClusterCa::from_pem(&file(d, "ca/ca.crt"), &file(d, "ca/ca.key"))
            .unwrap()
            .node_cert(NodeId(9))
            .unwrap();
    assert_eq!(
        presented(&address, &ca_pem, &client).await,
        Ok(der(&file(d, "node_0.crt")))
    );

    // The rollover, step by step, as the output of each step says.
    let out = ok(init(d, &["--rollover-ca"]));
    assert!(
        out.contains("step 1 of 3") && out.contains("--drop-old-ca"),
        "{out}"
    );
    assert_eq!(certificates_in(&file(d, "cluster.crt")), 2);
    assert!(refused(init(d, &["--rollover-ca"])).contains("already under way"));
    assert!(refused(init(d, &["--drop-old-ca"])).contains("--renew"));
    reloads += 1;
    reload_both(&n0, &n1, &spec_path, reloads).await;
    let new_ca = file(d, "ca/ca.crt");
    let new_client = reign_proto::certgen::ClusterCa::from_pem(&new_ca, &file(d, "ca/ca.key"))
        .unwrap()
        .node_cert(NodeId(9))
        .unwrap();
    assert!(
        presented(&address, &new_ca, &new_client).await.is_err(),
        "not renewed yet"
    );

    ok(init(d, &["--renew"]));
    reloads += 1;
    reload_both(&n0, &n1, &spec_path, reloads).await;
    assert_eq!(
        presented(&address, &new_ca, &new_client).await,
        Ok(der(&file(d, "node_0.crt")))
    );

    let out = ok(init(d, &["--drop-old-ca"]));
    assert!(out.contains("step 3 of 3"), "{out}");
    assert_eq!(file(d, "cluster.crt").trim(), new_ca.trim());
    assert!(!d.join("ca/previous.key").exists());
    assert!(refused(init(d, &["--drop-old-ca"])).contains("no CA rollover"));
    reloads += 1;
    reload_both(&n0, &n1, &spec_path, reloads).await;
    // The old CA's client certificate is refused now.
    assert!(refuses(&address, &new_ca, &client).await);
    assert_eq!(all_resolve(d), [0, 1]);
    assert_eq!(connects(), links, "the link between the nodes went down");
    assert!(n1.is_connected(NodeId(0)));
    println!("CLI rollover with SIGHUP: {:?}", started.elapsed());
    n1.shutdown().await;
    drop(n0);
}
