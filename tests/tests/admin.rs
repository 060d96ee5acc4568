//! The admin endpoint (feature `admin`) on a real 3-node cluster over TCP
//! and TLS, one node per runtime (tokio, async-std, smol), each serving
//! its own endpoint: the JSON read by a real HTTP client, `/metrics`
//! parsed by a Prometheus text-format parser, the token rule, and the
//! dashboard rendered by a real headless browser (Debian's `chromium`;
//! that test says so and passes when no browser is installed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reign_driver::admin::{self, AdminError, AdminHandle, AdminOptions, ClusterView, Status};
use reign_proto::{Address, Mailbox, NodeId};
use reign_tests::TestCluster;

const WAIT: Duration = Duration::from_secs(20);

/// Three nodes, one per runtime, each with an admin endpoint on loopback.
struct Cluster {
    tokio_rt: tokio::runtime::Runtime,
    n0: reign_tokio::Node,
    n1: reign_async_std::Node,
    n2: Option<reign_smol::Node>,
    admins: Vec<Option<AdminHandle>>,
}

impl Cluster {
    fn start() -> Cluster {
        let cluster = TestCluster::new(3);
        let tokio_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let n0 = tokio_rt
            .block_on(reign_tokio::Node::start(
                &cluster.spec(NodeId(0)),
                NodeId(0),
            ))
            .unwrap();
        let n1 = async_std::task::block_on(reign_async_std::Node::start(
            &cluster.spec(NodeId(1)),
            NodeId(1),
        ))
        .unwrap();
        let n2 =
            smol::block_on(reign_smol::Node::start(&cluster.spec(NodeId(2)), NodeId(2))).unwrap();
        let loopback = "127.0.0.1:0".parse().unwrap();
        let admins =
            vec![
                // tokio spawns on the ambient runtime: serve from inside it.
                Some(tokio_rt.block_on(async {
                    admin::serve(&n0, loopback, AdminOptions::default()).unwrap()
                })),
                Some(admin::serve(&n1, loopback, AdminOptions::default()).unwrap()),
                Some(admin::serve(&n2, loopback, AdminOptions::default()).unwrap()),
            ];
        Cluster {
            tokio_rt,
            n0,
            n1,
            n2: Some(n2),
            admins,
        }
    }

    fn url(&self, node: usize, path: &str) -> String {
        let admin = self.admins[node].as_ref().expect("endpoint running");
        format!("http://{}{path}", admin.local_addr())
    }

    /// Kills node 2 (a graceful shutdown: its peers see it go).
    fn stop_node_2(&mut self) {
        self.admins[2] = None;
        if let Some(n2) = self.n2.take() {
            smol::block_on(n2.shutdown());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.admins.clear();
        if let Some(n2) = self.n2.take() {
            smol::block_on(n2.shutdown());
        }
        async_std::task::block_on(self.n1.shutdown());
        self.tokio_rt.block_on(self.n0.shutdown());
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// GETs `url` with an optional `Authorization` value: (status, body).
fn get_with(url: &str, authorization: Option<&str>) -> (u16, String) {
    let mut request = agent().get(url);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

fn get(url: &str) -> String {
    let (status, body) = get_with(url, None);
    assert_eq!(status, 200, "GET {url}: {body}");
    body
}

fn status_of(url: &str) -> Status {
    serde_json::from_str(&get(url)).unwrap()
}

fn cluster_of(url: &str) -> ClusterView {
    serde_json::from_str(&get(url)).unwrap()
}

/// Polls `probe` until it returns something, or panics after [`WAIT`]
/// with the last thing it saw.
fn poll<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: never happened; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn scrape(url: &str) -> prometheus_parse::Scrape {
    let text = get(url);
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of `metric` (with `peer` if given) in a scrape.
fn sample(scrape: &prometheus_parse::Scrape, metric: &str, peer: Option<&str>) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && peer.is_none_or(|p| s.labels.get("peer") == Some(p)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// Mean time and size of `n` GETs of `url`.
fn measure(url: &str, n: u32) -> (Duration, usize) {
    let started = Instant::now();
    let mut size = 0;
    for _ in 0..n {
        size = get(url).len();
    }
    (started.elapsed() / n, size)
}

#[test]
fn status_and_metrics_of_a_real_three_node_cluster() {
    let mut cluster = Cluster::start();
    // Something to see: a name on node 1, a group member on node 2, a
    // topic on node 0, 25 messages from node 0 to node 1, and a queue of
    // 3 unread messages on node 0.
    let (greeter, greeter_box): (Address, Mailbox) = cluster.n1.new_mailbox();
    cluster.n1.register("greeter", &greeter).unwrap();
    let (member, _member_box) = cluster.n2.as_ref().unwrap().new_mailbox();
    cluster.n2.as_ref().unwrap().join("echo", &member).unwrap();
    let (subscriber, _news) = cluster.n0.new_mailbox();
    cluster.n0.subscribe("news", &subscriber).unwrap();
    let (backlog, backlog_box) = cluster.n0.new_mailbox();
    for i in 0..3u64 {
        backlog.send(i).unwrap();
    }
    poll("every node connected", || {
        let s = status_of(&cluster.url(0, "/status"));
        let up = s.peers.iter().filter(|p| p.state == "up").count();
        (up == 2).then_some(()).ok_or(format!("{up} up"))
    });
    let to_greeter = cluster.n0.address_of(greeter.id());
    for i in 0..25u64 {
        to_greeter.send(i).unwrap();
    }
    for _ in 0..25 {
        greeter_box.recv_blocking_timeout(WAIT).unwrap();
    }

    let status = poll("names, groups, topics and round trips known", || {
        let s = status_of(&cluster.url(0, "/status"));
        let ready = s.peers.len() == 2
            && s.peers.iter().all(|p| p.rtt_us.is_some())
            && s.names.contains_key("greeter")
            && s.groups.contains_key("echo")
            && s.topics.contains_key("news");
        if ready {
            Ok(s)
        } else {
            Err(serde_json::to_string(&s).unwrap())
        }
    });
    assert_eq!(status.node, 0);
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(status.incarnation, cluster.n0.incarnation().0);
    assert!(status.uptime_secs > 0.0 && status.uptime_secs < 600.0);
    assert_eq!(
        status.listen,
        cluster.n0.local_addr().map(|a| a.to_string())
    );
    assert_eq!(status.names["greeter"][0].node, 1);
    assert_eq!(status.names["greeter"][0].mailbox, greeter.id().to_string());
    assert_eq!(status.groups["echo"][0].node, 2);
    assert_eq!(status.topics["news"], vec![0]);
    let to_1 = &status.peers[0];
    assert_eq!((to_1.node, to_1.state.as_str()), (1, "up"));
    assert!(to_1.messages_out >= 25 && to_1.bytes_out > 0, "{to_1:?}");
    assert_eq!((to_1.connects, to_1.reconnects), (1, 0));
    assert_eq!(to_1.last_close_reason, None);
    assert!(status.counters["remote_sent"] >= 25);
    for counter in [
        "dropped_unreachable",
        "dropped_full",
        "dropped_at_shutdown",
        "busy_notices",
        "supervisor_restarts",
        "supervisor_escalations",
        "inline_receives",
    ] {
        assert!(status.counters.contains_key(counter), "{counter} missing");
    }
    assert!(status.requests.contains_key("pending"));
    assert!(status.mailboxes.count >= 3);
    assert_eq!(
        status.mailboxes.largest[0].mailbox,
        backlog.id().to_string()
    );
    assert_eq!(status.mailboxes.largest[0].messages, 3);
    assert_eq!(backlog_box.message_count(), 3);

    // The same figures in the Prometheus text format.
    let metrics = scrape(&cluster.url(0, "/metrics"));
    assert!(sample(&metrics, "reign_remote_sent_total", None).unwrap() >= 25.0);
    assert_eq!(
        sample(&metrics, "reign_dropped_unreachable_total", None),
        Some(0.0)
    );
    assert_eq!(sample(&metrics, "reign_peers_up", None), Some(2.0));
    assert_eq!(
        sample(&metrics, "reign_supervisor_restarts_total", None),
        Some(0.0)
    );
    assert_eq!(sample(&metrics, "reign_peer_up", Some("1")), Some(1.0));
    assert_eq!(sample(&metrics, "reign_peer_up", Some("2")), Some(1.0));
    assert!(sample(&metrics, "reign_peer_messages_sent_total", Some("1")).unwrap() >= 25.0);
    assert!(sample(&metrics, "reign_peer_rtt_seconds", Some("2")).unwrap() > 0.0);
    assert!(sample(&metrics, "reign_mailboxes", None).unwrap() >= 3.0);
    assert!(sample(&metrics, "reign_uptime_seconds", None).unwrap() > 0.0);
    assert!(
        metrics.docs.contains_key("reign_remote_sent"),
        "{:?}",
        metrics.docs
    );

    // The picture: three nodes, three links, each peer's links reported
    // by the peer itself (over the cluster, from its own endpoint).
    let view = poll("three links up", || {
        let v = cluster_of(&cluster.url(0, "/cluster"));
        let up = v.links.iter().filter(|l| l.state == "up").count();
        (up == 3).then_some(v.clone()).ok_or(format!("{v:?}"))
    });
    assert_eq!(
        view.nodes.iter().map(|n| n.id).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(view.nodes.iter().all(|n| n.reported));
    assert_eq!(view.nodes[1].names, ["greeter"]);
    let link_1_2 = view.links.iter().find(|l| (l.a, l.b) == (1, 2)).unwrap();
    assert_eq!(link_1_2.reported_by, 1);

    let (code, body) = get_with(&cluster.url(0, "/nowhere"), None);
    assert_eq!(code, 404, "{body}");

    // Cheap figures for the docs: mean time and size of each page.
    for path in ["/status", "/metrics", "/cluster", "/"] {
        let (time, size) = measure(&cluster.url(0, path), 20);
        println!("admin {path}: {size} bytes, {time:?} per request (mean of 20)");
    }

    // Node 2 goes: node 0 sees it down with the reason, and node 1 reports
    // its own link to it down.
    cluster.stop_node_2();
    let status = poll("node 2 down", || {
        let s = status_of(&cluster.url(0, "/status"));
        let gone = s.peers[1].state == "down" && s.peers[1].last_close_reason.is_some();
        gone.then_some(s.clone()).ok_or(format!("{:?}", s.peers))
    });
    assert_eq!(status.peers[1].disconnects, 1);
    println!("last close reason: {:?}", status.peers[1].last_close_reason);
    let metrics = scrape(&cluster.url(0, "/metrics"));
    assert_eq!(sample(&metrics, "reign_peer_up", Some("2")), Some(0.0));
    assert_eq!(sample(&metrics, "reign_peers_up", None), Some(1.0));
    poll("links to node 2 down in the picture", || {
        let v = cluster_of(&cluster.url(0, "/cluster"));
        let down: Vec<(u16, u16)> = v
            .links
            .iter()
            .filter(|l| l.state == "down")
            .map(|l| (l.a, l.b))
            .collect();
        let node_2 = v.nodes.iter().find(|n| n.id == 2).map(|n| n.state.clone());
        (down == [(0, 2), (1, 2)] && node_2.as_deref() == Some("down"))
            .then_some(())
            .ok_or(format!("{v:?}"))
    });
}

#[test]
fn a_token_guards_every_path_and_public_binds_need_one() {
    let node = reign_async_std::Node::local();
    let options = AdminOptions {
        token: Some("s3cret".into()),
        allow_public: false,
    };
    let endpoint = admin::serve(&node, "127.0.0.1:0".parse().unwrap(), options).unwrap();
    let base = format!("http://{}", endpoint.local_addr());
    for path in ["/", "/status", "/cluster", "/metrics"] {
        let url = format!("{base}{path}");
        assert_eq!(get_with(&url, None).0, 401, "{path}");
        assert_eq!(get_with(&url, Some("Bearer wrong")).0, 401, "{path}");
        assert_eq!(get_with(&url, Some("Bearer s3cret")).0, 200, "{path}");
        // A browser's Basic authentication: any user, the token as password
        // ("admin:s3cret" in base64).
        assert_eq!(
            get_with(&url, Some("Basic YWRtaW46czNjcmV0")).0,
            200,
            "{path}"
        );
    }
    let response = agent().get(&format!("{base}/status")).call().unwrap();
    assert!(response
        .headers()
        .get("www-authenticate")
        .is_some_and(|v| v.to_str().unwrap().starts_with("Basic")));
    let (_, body) = get_with(&format!("{base}/status"), Some("Bearer s3cret"));
    let status: Status = serde_json::from_str(&body).unwrap();
    assert!(status.peers.is_empty());
    drop(endpoint);

    let public = "0.0.0.0:0".parse().unwrap();
    match admin::serve(&node, public, AdminOptions::default()) {
        Err(AdminError::NotLoopback(_)) => {}
        other => panic!("a public bind without the flag: {other:?}"),
    }
    let flag_only = AdminOptions {
        token: None,
        allow_public: true,
    };
    match admin::serve(&node, public, flag_only) {
        Err(e @ AdminError::TokenRequired(_)) => assert!(e.to_string().contains("token")),
        other => panic!("a public bind without a token: {other:?}"),
    }
}

/// A chromium binary, if one is installed.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Runs headless chromium on `url` with `args`, at most a minute; its stdout.
fn browse(browser: &Path, profile: &Path, url: &str, args: &[&str]) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    out
}

/// The `data-state` of every element of `class` in a dumped DOM, keyed by
/// its `data-id` (nodes) or `data-a-data-b` (links).
fn drawn(dom: &str, class: &str) -> Vec<(String, String)> {
    let attribute = |tag: &str, name: &str| {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        Some(tag[start..].split('"').next()?.to_owned())
    };
    dom.match_indices(&format!("class=\"{class}\""))
        .filter_map(|(at, _)| {
            let tag = &dom[at..at + dom[at..].find('>')?];
            let key = match attribute(tag, "data-id") {
                Some(id) => id,
                None => format!(
                    "{}-{}",
                    attribute(tag, "data-a")?,
                    attribute(tag, "data-b")?
                ),
            };
            Some((key, attribute(tag, "data-state")?))
        })
        .collect()
}

#[test]
fn the_dashboard_draws_the_cluster_in_a_headless_browser() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("REIGN_REQUIRE_CHROMIUM").is_none(),
            "REIGN_REQUIRE_CHROMIUM is set and no chromium binary is on PATH"
        );
        println!("SKIPPED: no chromium binary on PATH (CI installs Debian's chromium)");
        return;
    };
    let mut cluster = Cluster::start();
    let (greeter, _greeter_box) = cluster.n1.new_mailbox();
    cluster.n1.register("greeter", &greeter).unwrap();
    let (counter, _counter_box) = cluster.n0.new_mailbox();
    cluster.n0.register("counter", &counter).unwrap();
    let (store, _store_box) = cluster.n2.as_ref().unwrap().new_mailbox();
    cluster
        .n2
        .as_ref()
        .unwrap()
        .register("store", &store)
        .unwrap();
    poll("three links up, as node 0 sees them", || {
        let v = cluster_of(&cluster.url(0, "/cluster"));
        let up = v.links.iter().filter(|l| l.state == "up").count();
        let names = v.nodes.iter().filter(|n| !n.names.is_empty()).count();
        (up == 3 && names == 3)
            .then_some(())
            .ok_or(format!("{v:?}"))
    });
    // Traffic while the browser looks, so the links have rates: two
    // senders, a message each per millisecond, for at most 30 s.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let to_greeter = cluster.n0.address_of(greeter.id());
        let to_store = cluster.n1.address_of(store.id());
        let stop = stop.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(30);
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                let _ = to_greeter.send(i);
                let _ = to_store.send(i);
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    let profile = tempfile::tempdir().unwrap();
    let page = cluster.url(0, "/");
    let dom = browse(
        &browser,
        profile.path(),
        &page,
        &["--virtual-time-budget=3000", "--dump-dom"],
    );
    let nodes = drawn(&dom, "node");
    let links = drawn(&dom, "link");
    assert_eq!(
        nodes,
        [("0", "self"), ("1", "up"), ("2", "up")].map(|(a, b)| (a.to_owned(), b.to_owned())),
        "{dom}"
    );
    assert_eq!(
        links,
        [("0-1", "up"), ("0-2", "up"), ("1-2", "up")].map(|(a, b)| (a.to_owned(), b.to_owned())),
        "{dom}"
    );
    assert!(dom.contains("3 nodes (3 up), 3 links (3 up)"), "{dom}");
    for name in ["greeter", "counter", "store"] {
        assert!(dom.contains(name), "{name} not drawn: {dom}");
    }

    let shot_dir = tempfile::tempdir().unwrap();
    let shot = std::env::var_os("REIGN_DASHBOARD_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| shot_dir.path().join("dashboard.png"));
    let shot_arg = format!("--screenshot={}", shot.display());
    browse(
        &browser,
        profile.path(),
        &page,
        &[
            "--virtual-time-budget=3000",
            "--window-size=1200,800",
            &shot_arg,
        ],
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.join().unwrap();

    // Node 2 goes: the page shows it down, with both of its links.
    cluster.stop_node_2();
    poll("node 2 down in node 0's picture", || {
        let v = cluster_of(&cluster.url(0, "/cluster"));
        let down = v.links.iter().filter(|l| l.state == "down").count();
        (down == 2).then_some(()).ok_or(format!("{v:?}"))
    });
    let dom = browse(
        &browser,
        profile.path(),
        &page,
        &["--virtual-time-budget=3000", "--dump-dom"],
    );
    assert_eq!(
        drawn(&dom, "node"),
        [("0", "self"), ("1", "up"), ("2", "down")].map(|(a, b)| (a.to_owned(), b.to_owned())),
        "{dom}"
    );
    assert_eq!(
        drawn(&dom, "link"),
        [("0-1", "up"), ("0-2", "down"), ("1-2", "down")]
            .map(|(a, b)| (a.to_owned(), b.to_owned())),
        "{dom}"
    );
    assert!(dom.contains("3 nodes (2 up), 3 links (1 up)"), "{dom}");
}
