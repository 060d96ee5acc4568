//! The Iris relay's per-client and per-relay caps at their edges, over real
//! sockets with a raw Iris client: `MAX_PENDING_REQUESTS`,
//! `MAX_SUBSCRIPTIONS`, `MAX_TUNNELS` and `max_clients` (`MAX_CLIENTS` by
//! default). For each: just under and at the cap the client is served
//! normally; over it, the documented answer (a request answered as timed
//! out, the client dropped with the reason, a tunnel open refused or an
//! offer rejected, a connection closed before its handshake); another
//! client of the same relay keeps working; once the capped client is gone
//! the relay holds nothing of it ([`RelayStats`], the node's own counts) and
//! a new client gets the whole cap again; and the over-cap path costs at
//! most one log line per client (the refused connections, one summary line
//! per interval). A client flooding operations the relay refuses while
//! reading nothing makes the relay hold at most the outbox's soft cap of
//! answers, then stop reading from it. Each test prints the time and memory
//! (the process's, both ends of every socket) it took to reach its cap.
//!
//! The relay runs on a one-thread tokio runtime of its own, on a thread
//! whose log lines are captured ([`capture_thread_logs`]); the test drives
//! its clients from the test's thread with blocking sockets.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reign_driver::relay::{
    IrisRequest, Relay, RelayOptions, RelayStats, MAX_CLIENTS, MAX_PENDING_REQUESTS,
    MAX_SUBSCRIPTIONS, MAX_TUNNELS, OUTBOX_SOFT_CAP,
};
use reign_proto::log_summary::SUMMARY_INTERVAL;
use reign_proto::sim::scale::rss_kb;
use reign_proto::{IncomingTunnel, Mailbox, NodeId};
use reign_tests::iris::{
    init, request_packet, subscribe_packet, tunnel_init_packet, varint, FromRelay, Raw,
};
use reign_tests::{capture_thread_logs, eventually, Lines, TestCluster};
use reign_tokio::Node;

/// How long a condition may take to come true on a slow machine.
const WAIT: Duration = Duration::from_secs(15);

/// The timeout of requests and tunnel opens meant to wait: far past the
/// test's end.
const LONG_MS: u64 = 60_000;

/// A node serving a relay on a one-thread tokio runtime of its own, on a
/// thread whose log lines (INFO and above) are captured.
struct Relayed {
    node: Node,
    relay: Option<Relay>,
    port: u16,
    lines: Lines,
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relayed {
    fn start(options: RelayOptions) -> Relayed {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let (lines, _guard) = capture_thread_logs();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let cluster = TestCluster::new(1);
            rt.block_on(async move {
                let node = Node::start(&cluster.spec(NodeId(0)), NodeId(0))
                    .await
                    .expect("the node starts");
                let relay = node
                    .serve_relay("127.0.0.1:0".parse().unwrap(), options)
                    .await
                    .expect("the relay starts");
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let handle = tokio::runtime::Handle::current();
                tx.send((node.clone(), relay, lines, handle, stop)).unwrap();
                let _ = stopped.await;
                node.shutdown().await;
            });
        });
        let (node, relay, lines, handle, stop) = rx.recv().expect("the relay's thread starts");
        Relayed {
            node,
            port: relay.local_addr().port(),
            relay: Some(relay),
            lines,
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn stats(&self) -> RelayStats {
        self.relay.as_ref().expect("serving").stats()
    }

    fn attach(&self, cluster: &str) -> Raw {
        Raw::attach(self.port, cluster)
    }

    /// Waits until `cond` holds of the relay's stats.
    fn wait_stats(&self, what: &str, cond: impl Fn(&RelayStats) -> bool) {
        let ok = eventually(WAIT, || cond(&self.stats()));
        assert!(ok, "{what}: {:?}", self.stats());
    }

    /// The relay's WARN lines so far.
    fn warnings(&self) -> Vec<String> {
        self.lines.matching(&["WARN"])
    }

    /// A reign member of `cluster` answering each request with its bytes.
    fn echo(&self, cluster: &str) {
        let (address, mailbox) = self.node.new_mailbox();
        self.node.join(cluster, &address).unwrap();
        self.handle.spawn(async move {
            while let Ok(request) = mailbox.recv_request().await {
                let (message, responder) = request.into_parts();
                let asked: IrisRequest = message.downcast().expect("an Iris request");
                let _ = responder.reply(asked.payload);
            }
        });
    }

    /// A reign member of `cluster` that never reads: requests to it wait.
    fn hold(&self, cluster: &str) -> Mailbox {
        let (address, mailbox) = self.node.new_mailbox();
        self.node.join(cluster, &address).unwrap();
        mailbox
    }

    /// A reign member of `cluster` accepting every tunnel and sending each
    /// message back until the tunnel closes.
    fn tunnel_echo(&self, cluster: &str) {
        let (address, mailbox) = self.node.new_mailbox();
        self.node.join(cluster, &address).unwrap();
        let node = self.node.clone();
        self.handle.spawn(async move {
            while let Ok(message) = mailbox.recv().await {
                let Ok(incoming) = message.take::<IncomingTunnel>() else {
                    continue;
                };
                let Ok(tunnel) = node.accept_tunnel(incoming) else {
                    continue;
                };
                tokio::spawn(async move {
                    while let Ok(message) = tunnel.inner().recv().await {
                        if tunnel.inner().send(message).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        drop(self.relay.take());
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Milliseconds since `t0`, and the process's resident memory growth
/// since `rss0` (KiB, 0 if it shrank), for the figures.
fn cost(t0: Instant, rss0: u64) -> (u128, u64) {
    (t0.elapsed().as_millis(), rss_kb().saturating_sub(rss0))
}

/// Expects `Reply(id)` with `body`.
fn expect_echo(raw: &mut Raw, id: u64, body: &[u8]) {
    assert_eq!(
        raw.expect_reply(id),
        Some(Ok(body.to_vec())),
        "request {id}"
    );
}

/// `count` requests to `cluster` from id `first` on, in one write.
fn requests(first: u64, count: u64, cluster: &str) -> Vec<u8> {
    (first..first + count)
        .flat_map(|id| request_packet(id, cluster, b"held", LONG_MS))
        .collect()
}

/// MAX_PENDING_REQUESTS: a client's requests waiting for replies. Under and
/// at the cap they go to the cluster; over it, each is answered as timed
/// out at once and the client's first logs one WARN line.
#[test]
fn pending_requests_under_at_and_over_the_cap() {
    let max = MAX_PENDING_REQUESTS as u64;
    let h = Relayed::start(RelayOptions::default());
    h.echo("echo");
    let _held = h.hold("hold");
    let mut a = h.attach("");

    // Just under: max - 1 requests wait.
    let (rss0, t0) = (rss_kb(), Instant::now());
    a.send(&requests(0, max - 1, "hold"));
    h.wait_stats("max - 1 pending", |s| {
        s.pending_requests == max as usize - 1
    });
    // At: the max-th is served normally.
    a.request(max - 1, "echo", b"the last one", LONG_MS);
    expect_echo(&mut a, max - 1, b"the last one");
    a.send(&requests(max, 1, "hold"));
    h.wait_stats("max pending", |s| s.pending_requests == max as usize);
    let (ms, kib) = cost(t0, rss0);
    eprintln!("{max} pending requests: {ms} ms, process RSS +{kib} KiB");
    assert_eq!(h.node.request_tables().pending, max as usize);

    // Over: answered as timed out at once, however many; one WARN line.
    let over = Instant::now();
    let first_over = max + 1;
    let refused: Vec<u8> = (first_over..first_over + 100)
        .flat_map(|id| request_packet(id, "echo", b"over", LONG_MS))
        .collect();
    a.send(&refused);
    for id in first_over..first_over + 100 {
        assert_eq!(a.expect_reply(id), None, "request {id} over the cap");
    }
    assert!(
        over.elapsed() < Duration::from_secs(10),
        "{:?}",
        over.elapsed()
    );
    assert_eq!(h.stats().pending_requests, max as usize);
    let overload = ["WARN", "requests waiting", "logged once per client"];
    assert_eq!(h.lines.matching(&overload).len(), 1, "{:?}", h.lines.all());
    assert_eq!(h.warnings().len(), 1, "{:?}", h.warnings());

    // Another client of the relay is served meanwhile.
    let mut b = h.attach("");
    b.request(0, "echo", b"from b", LONG_MS);
    expect_echo(&mut b, 0, b"from b");

    // The capped client leaves: its requests are gone from the relay and
    // the node (the caller's side and the member's queue).
    a.close();
    assert_eq!(a.until_closed(), "");
    h.wait_stats("a's requests gone", |s| {
        s.pending_requests == 0 && s.clients == 1 && s.client_states == 1
    });
    assert!(eventually(WAIT, || {
        let t = h.node.request_tables();
        t.pending == 0 && t.queued == 0
    }));

    // A new client gets the whole cap again, and its own log line.
    let mut c = h.attach("");
    c.send(&requests(0, max, "hold"));
    h.wait_stats("c at the cap", |s| s.pending_requests == max as usize);
    c.request(max, "echo", b"over", LONG_MS);
    assert_eq!(c.expect_reply(max), None);
    assert_eq!(h.lines.matching(&overload).len(), 2);
    b.request(1, "echo", b"still", LONG_MS);
    expect_echo(&mut b, 1, b"still");
    drop((b, c));
    h.wait_stats("all gone", |s| {
        s.clients == 0 && s.client_states == 0 && s.pending_requests == 0
    });
}

/// Floods the relay from `a`, at one of its caps, with a million
/// operations the relay refuses (`packet(id)`, each answered at once with
/// `[answer_op, id, timed out]`) while reading nothing: the relay holds at
/// most the outbox's soft cap of answers for it, then stops reading from
/// it, so the client holds back itself (the relay's memory does not grow
/// with the flood). Once it reads, every answer arrives, in order.
fn flood_unread(h: &Relayed, a: &mut Raw, what: &str, packet: fn(u64) -> Vec<u8>, answer_op: u8) {
    // Ids of nine varint bytes: every packet has the same length, and so
    // has every answer. The answers (11 MB) are more than the kernel's
    // socket buffers take for a client that does not read (the relay's
    // send buffer grows to 4 MiB on Linux by default).
    const FIRST: u64 = 1 << 56;
    const FLOOD: u64 = 1_000_000;
    const ANSWER: usize = 11;
    let flood: Vec<u8> = (FIRST..FIRST + FLOOD).flat_map(packet).collect();
    let mut writer = a.stream.try_clone().unwrap();
    let (rss0, t0) = (rss_kb(), Instant::now());
    let flooding = std::thread::spawn(move || writer.write_all(&flood).is_ok());

    // Watch what the relay queues for the client while it reads nothing,
    // until that stays the same for a second.
    let mut most_queued = 0;
    let mut still_since = Instant::now();
    let mut last = h.stats().queued_bytes;
    while still_since.elapsed() < Duration::from_secs(1) && t0.elapsed() < WAIT {
        let queued = h.stats().queued_bytes;
        most_queued = most_queued.max(queued);
        if queued != last || !flooding.is_finished() && queued < OUTBOX_SOFT_CAP {
            still_since = Instant::now();
        }
        last = queued;
        std::thread::sleep(Duration::from_millis(2));
    }
    let blocked = !flooding.is_finished();
    let (ms, kib) = cost(t0, rss0);
    eprintln!(
        "{FLOOD} refused {what} unread: at most {} KiB queued for the client, \
         its writes {} after {ms} ms, process RSS +{kib} KiB",
        most_queued >> 10,
        if blocked { "held back" } else { "all taken" }
    );
    assert!(
        most_queued <= OUTBOX_SOFT_CAP + ANSWER,
        "{most_queued} bytes queued for a client that does not read"
    );

    // Reading now: every answer, in order.
    let mut answers = vec![0; FLOOD as usize * ANSWER];
    a.stream.read_exact(&mut answers).unwrap();
    for (i, answer) in answers.chunks(ANSWER).enumerate() {
        let mut expected = vec![answer_op];
        varint(&mut expected, FIRST + i as u64);
        expected.push(1);
        assert_eq!(answer, expected, "answer {i}");
    }
    assert!(flooding.join().unwrap(), "the flood was written");
}

/// [`flood_unread`] with requests over MAX_PENDING_REQUESTS: one WARN line.
#[test]
fn a_client_flooding_refused_requests_without_reading_holds_back_itself() {
    let max = MAX_PENDING_REQUESTS as u64;
    let h = Relayed::start(RelayOptions::default());
    let _held = h.hold("hold");
    let mut a = h.attach("");
    a.send(&requests(0, max, "hold"));
    h.wait_stats("at the cap", |s| s.pending_requests == max as usize);
    flood_unread(
        &h,
        &mut a,
        "requests",
        |id| request_packet(id, "", b"", 0),
        0x05,
    );
    a.close();
    assert_eq!(a.until_closed(), "");
    assert_eq!(h.warnings().len(), 1, "{:?}", h.warnings());
    h.wait_stats("gone", |s| s.client_states == 0 && s.queued_bytes == 0);
}

/// [`flood_unread`] with tunnel opens over MAX_TUNNELS: no log line.
#[test]
fn a_client_flooding_refused_tunnel_opens_without_reading_holds_back_itself() {
    let h = Relayed::start(RelayOptions::default());
    h.tunnel_echo("tun");
    let mut a = h.attach("");
    open_tunnels(&mut a, 0..MAX_TUNNELS as u64, "tun");
    flood_unread(
        &h,
        &mut a,
        "tunnel opens",
        |id| tunnel_init_packet(id, "", 0),
        0x0a,
    );
    a.close();
    assert_eq!(a.until_closed(), "");
    assert!(h.warnings().is_empty(), "{:?}", h.warnings());
    h.wait_stats("gone", |s| s.client_states == 0 && s.tunnels == 0);
    assert!(eventually(WAIT, || h.node.tunnel_count() == 0));
}

/// MAX_SUBSCRIPTIONS: a client's topics. Under and at the cap events
/// arrive; subscribing again to a topic it has is a no-op even at the cap;
/// one more topic drops the client with the reason (one WARN line however
/// many it sends).
#[test]
fn subscriptions_under_at_and_over_the_cap() {
    let max = MAX_SUBSCRIPTIONS;
    let h = Relayed::start(RelayOptions::default());
    let mut a = h.attach("");
    let mut b = h.attach("");
    let mailboxes = h.node.mailbox_count();
    let topic = |i: usize| format!("t{i}");

    // Just under.
    let (rss0, t0) = (rss_kb(), Instant::now());
    let under: Vec<u8> = (0..max - 1)
        .flat_map(|i| subscribe_packet(&topic(i)))
        .collect();
    a.send(&under);
    h.wait_stats("max - 1 subscriptions", |s| s.subscriptions == max - 1);
    b.publish("t0", b"under");
    assert_eq!(a.next_packet(), publish("t0", b"under"));
    // At.
    a.subscribe(&topic(max - 1));
    h.wait_stats("max subscriptions", |s| s.subscriptions == max);
    let (ms, kib) = cost(t0, rss0);
    eprintln!("{max} subscriptions: {ms} ms, process RSS +{kib} KiB");
    let last = topic(max - 1);
    b.publish(&last, b"at");
    assert_eq!(a.next_packet(), publish(&last, b"at"));
    assert_eq!(h.node.mailbox_count(), mailboxes + max);
    // Again to a topic it has: nothing changes (its own publication,
    // read after the subscription, still reaches it).
    a.subscribe("t5");
    a.publish("t5", b"again");
    assert_eq!(a.next_packet(), publish("t5", b"again"));
    assert_eq!(h.stats().subscriptions, max);

    // Over, fifty times in one write: dropped once, one line.
    let over: Vec<u8> = (max..max + 50)
        .flat_map(|i| subscribe_packet(&topic(i)))
        .collect();
    a.send(&over);
    let reason = format!("over {max} subscriptions");
    assert_eq!(a.until_closed(), reason);
    let dropped = h.lines.matching(&["WARN", "Iris client dropped", &reason]);
    assert_eq!(dropped.len(), 1, "{:?}", h.lines.all());
    assert_eq!(h.warnings().len(), 1, "{:?}", h.warnings());

    // The other client is served.
    b.subscribe("b's");
    b.publish("b's", b"own");
    assert_eq!(b.next_packet(), publish("b's", b"own"));

    // Nothing of the dropped client is left: its subscriptions, their
    // mailboxes, the node's interest in its topics.
    h.wait_stats("a's subscriptions gone", |s| {
        s.subscriptions == 1 && s.clients == 1 && s.client_states == 1
    });
    assert!(eventually(WAIT, || h.node.mailbox_count() == mailboxes + 1));
    let topics = h.node.topic_view();
    assert!(!topics.contains_key("t0") && !topics.contains_key(&last));
    assert_eq!(h.stats().dropped_clients, 1);

    // A new client gets the whole cap again.
    let mut c = h.attach("");
    let all: Vec<u8> = (0..max).flat_map(|i| subscribe_packet(&topic(i))).collect();
    c.send(&all);
    h.wait_stats("c at the cap", |s| s.subscriptions == max + 1);
    c.publish(&last, b"c");
    assert_eq!(c.next_packet(), publish(&last, b"c"));
    c.subscribe(&topic(max));
    assert_eq!(c.until_closed(), reason);
    assert_eq!(h.lines.matching(&["Iris client dropped", &reason]).len(), 2);
    drop(b);
    h.wait_stats("all gone", |s| {
        s.clients == 0 && s.client_states == 0 && s.subscriptions == 0
    });
    assert!(eventually(WAIT, || h.node.mailbox_count() == mailboxes));
}

fn publish(topic: &str, event: &[u8]) -> FromRelay {
    FromRelay::Publish {
        topic: topic.to_owned(),
        event: event.to_vec(),
    }
}

/// Opens tunnels `ids` to `cluster` in one write and expects each to open
/// (a confirm with the chunk limit and a credit grant, in any order
/// between tunnels).
fn open_tunnels(raw: &mut Raw, ids: std::ops::Range<u64>, cluster: &str) {
    let opens: Vec<u8> = ids
        .clone()
        .flat_map(|id| tunnel_init_packet(id, cluster, LONG_MS))
        .collect();
    raw.send(&opens);
    let (mut confirmed, mut allowed) = (BTreeSet::new(), BTreeSet::new());
    let want = ids.clone().count();
    while confirmed.len() < want || allowed.len() < want {
        match raw.next_packet() {
            FromRelay::TunnelConfirm {
                id,
                chunk_limit: Some(_),
            } => assert!(confirmed.insert(id), "tunnel {id} confirmed twice"),
            FromRelay::TunnelAllow { id, .. } => {
                assert!(confirmed.contains(&id), "credit before the confirm");
                assert!(allowed.insert(id), "tunnel {id} granted twice");
            }
            other => panic!("{other:?} while tunnels open"),
        }
    }
    assert_eq!(confirmed, ids.collect());
}

/// Sends a message on tunnel `id` and expects it back from the echoing
/// member (and the relay's credit for it).
fn tunnel_round_trip(raw: &mut Raw, id: u64, body: &[u8]) {
    raw.tunnel_allow(id, 1 << 20);
    raw.tunnel_transfer(id, body.len() as u64, body);
    let mut echoed = false;
    let mut regranted = false;
    while !(echoed && regranted) {
        match raw.next_packet() {
            FromRelay::TunnelTransfer {
                id: got,
                size_or_cont,
                chunk,
            } => {
                assert_eq!(
                    (got, size_or_cont, &chunk[..]),
                    (id, body.len() as u64, body)
                );
                echoed = true;
            }
            FromRelay::TunnelAllow { id: got, space } => {
                assert_eq!((got, space), (id, body.len() as u64));
                regranted = true;
            }
            other => panic!("{other:?} on a tunnel round trip"),
        }
    }
}

/// MAX_TUNNELS: a client's tunnels, both directions. Under and at the cap
/// they open and carry messages; over it an open is answered as timed out
/// at once and a tunnel offered to the client is rejected; neither logs.
#[test]
fn tunnels_under_at_and_over_the_cap() {
    let max = MAX_TUNNELS as u64;
    let h = Relayed::start(RelayOptions::default());
    h.tunnel_echo("tun");
    // A is also a member, to be offered tunnels.
    let mut a = h.attach("a-svc");

    // Just under.
    let (rss0, t0) = (rss_kb(), Instant::now());
    open_tunnels(&mut a, 0..max - 1, "tun");
    assert_eq!(h.stats().tunnels, max as usize - 1);
    tunnel_round_trip(&mut a, 0, b"under");
    // At.
    open_tunnels(&mut a, max - 1..max, "tun");
    let (ms, kib) = cost(t0, rss0);
    eprintln!("{max} tunnels: {ms} ms, process RSS +{kib} KiB");
    tunnel_round_trip(&mut a, max - 1, b"at the cap");
    assert_eq!(h.stats().tunnels, max as usize);
    assert_eq!(h.node.tunnel_count(), 2 * max as usize, "both ends here");

    // Over, outbound: refused at once.
    let over = Instant::now();
    a.tunnel_init(max, "tun", LONG_MS);
    assert_eq!(
        a.next_packet(),
        FromRelay::TunnelConfirm {
            id: max,
            chunk_limit: None
        }
    );
    assert!(over.elapsed() < Duration::from_secs(10));
    // Over, inbound: a tunnel offered to the client is rejected.
    let node = h.node.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    h.handle.spawn(async move {
        let offered = node.tunnel("a-svc", Duration::from_secs(10)).await;
        let _ = tx.send(offered.map(drop));
    });
    let offered = rx.recv_timeout(WAIT).expect("the offer's outcome");
    let err = offered.expect_err("no room for an offered tunnel");
    assert!(err.to_string().contains("too many tunnels"), "{err}");
    assert_eq!(h.stats().tunnels, max as usize);
    assert!(h.warnings().is_empty(), "{:?}", h.warnings());

    // Another client opens a tunnel and uses it.
    let mut b = h.attach("");
    open_tunnels(&mut b, 0..1, "tun");
    tunnel_round_trip(&mut b, 0, b"from b");
    b.tunnel_close(0);
    assert_eq!(
        b.next_packet(),
        FromRelay::TunnelClose {
            id: 0,
            reason: String::new()
        }
    );

    // The capped client leaves: its tunnels close, both ends.
    a.close();
    assert_eq!(a.until_closed(), "");
    h.wait_stats("a's tunnels gone", |s| {
        s.tunnels == 0 && s.clients == 1 && s.client_states == 1
    });
    assert!(
        eventually(WAIT, || h.node.tunnel_count() == 0),
        "{} tunnel ends left",
        h.node.tunnel_count()
    );

    // A new client gets the whole cap again.
    let mut c = h.attach("");
    open_tunnels(&mut c, 0..max, "tun");
    c.tunnel_init(max, "tun", LONG_MS);
    assert_eq!(
        c.next_packet(),
        FromRelay::TunnelConfirm {
            id: max,
            chunk_limit: None
        }
    );
    assert!(h.warnings().is_empty(), "{:?}", h.warnings());
    drop((b, c));
    h.wait_stats("all gone", |s| {
        s.clients == 0 && s.client_states == 0 && s.tunnels == 0
    });
    assert!(eventually(WAIT, || h.node.tunnel_count() == 0));
}

/// Whether a connection to the relay is closed before its handshake: the
/// init packet gets no acceptance, only the end of the stream (or a reset).
fn refused_at_once(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let _ = stream.write_all(&init("iris-client-magic", "v1.0-draft2", ""));
    let mut byte = [0];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    }
}

/// Attaches `n` clients, as fast as the relay takes them.
fn attach_many(h: &Relayed, n: usize) -> Vec<Raw> {
    (0..n).map(|_| h.attach("")).collect()
}

/// The client cap, lowered: under and at it clients attach and are
/// served; over it a connection is closed before its handshake, counted,
/// and summarised in one line per interval (none per connection); a
/// client leaving frees its place.
#[test]
fn clients_under_at_and_over_a_lowered_cap() {
    const CAP: usize = 32;
    const OVER: usize = 20;
    let h = Relayed::start(RelayOptions {
        max_clients: CAP,
        ..RelayOptions::default()
    });
    h.echo("echo");
    let mut clients = attach_many(&h, CAP - 1);
    assert_eq!(h.stats().clients, CAP - 1);
    let mut at = h.attach("");
    at.request(0, "echo", b"at", LONG_MS);
    expect_echo(&mut at, 0, b"at");
    clients.push(at);
    assert_eq!(h.stats().clients, CAP);

    let first_refusal = Instant::now();
    for i in 0..OVER {
        assert!(refused_at_once(h.port), "connection {i} over the cap");
    }
    let stats = h.stats();
    assert_eq!((stats.clients, stats.refused_clients), (CAP, OVER as u64));
    clients[0].request(1, "echo", b"still", LONG_MS);
    expect_echo(&mut clients[0], 1, b"still");
    assert!(h.warnings().is_empty(), "{:?}", h.warnings());

    // A client leaving frees its place.
    let mut gone = clients.pop().unwrap();
    gone.close();
    assert_eq!(gone.until_closed(), "");
    h.wait_stats("one place free", |s| {
        s.clients == CAP - 1 && s.client_states == CAP - 1
    });
    let mut again = h.attach("");
    again.request(0, "echo", b"again", LONG_MS);
    expect_echo(&mut again, 0, b"again");
    clients.push(again);
    assert!(refused_at_once(h.port));
    let burst = first_refusal.elapsed();

    // One summary line for the burst, when due even though no connection
    // comes after it.
    let summary = ["WARN", "relay clients refused", "over max_clients clients"];
    let logged = eventually(SUMMARY_INTERVAL + WAIT, || {
        !h.lines.matching(&summary).is_empty()
    });
    assert!(logged, "{:?}", h.lines.all());
    assert!(first_refusal.elapsed() >= SUMMARY_INTERVAL);
    let lines = h.lines.matching(&summary);
    if burst < SUMMARY_INTERVAL {
        assert_eq!(lines.len(), 1, "{lines:?}");
        let count = format!("{} relay clients refused", OVER + 1);
        assert!(lines[0].contains(&count), "{lines:?}");
        assert_eq!(h.warnings().len(), 1, "{:?}", h.warnings());
    } else {
        eprintln!("the burst of refusals took {burst:?}: its summary may take two lines");
    }
    assert!(h
        .lines
        .matching(&["Iris client"])
        .iter()
        .all(|l| !l.contains("WARN")));

    drop(clients);
    h.wait_stats("all gone", |s| s.clients == 0 && s.client_states == 0);
}

/// Open files this test needs for `clients` clients in one process: each
/// client's socket and the relay's end, and a margin for the rest.
fn files_for(clients: usize) -> u64 {
    2 * clients as u64 + 1024
}

/// Raises the open-file soft limit towards `wanted`, up to the hard limit;
/// returns the soft limit then in force.
#[cfg(unix)]
fn raise_open_files(wanted: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= wanted {
        return soft;
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    limit.current = Some(wanted.min(hard));
    if setrlimit(Resource::Nofile, limit).is_err() {
        return soft;
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

#[cfg(not(unix))]
fn raise_open_files(_wanted: u64) -> u64 {
    0
}

/// MAX_CLIENTS itself, the default: MAX_CLIENTS clients attach (the
/// open-file limit raised as far as allowed; the test says so and stops if
/// the hard limit is too low, the lowered cap's test covering the edges
/// then), the last is served, the next connection is refused, and all of
/// it is given back when they leave.
#[test]
fn clients_under_at_and_over_the_default_cap() {
    let wanted = files_for(MAX_CLIENTS);
    let limit = raise_open_files(wanted);
    if limit < wanted {
        eprintln!(
            "skipped: {MAX_CLIENTS} clients need {wanted} open files, the limit is {limit} \
             (the hard limit is too low); the lowered cap's test covers the edges"
        );
        return;
    }
    let h = Relayed::start(RelayOptions::default());
    h.echo("echo");
    let (rss0, t0) = (rss_kb(), Instant::now());
    let mut clients = attach_many(&h, MAX_CLIENTS - 1);
    assert_eq!(h.stats().clients, MAX_CLIENTS - 1);
    let mut at = h.attach("");
    at.request(0, "echo", b"at", LONG_MS);
    expect_echo(&mut at, 0, b"at");
    clients.push(at);
    let (ms, kib) = cost(t0, rss0);
    eprintln!(
        "{MAX_CLIENTS} clients: {ms} ms, process RSS +{kib} KiB ({} bytes a client, \
         both ends in this process)",
        (kib << 10) / MAX_CLIENTS as u64
    );
    assert_eq!(h.stats().clients, MAX_CLIENTS);

    for i in 0..3 {
        assert!(refused_at_once(h.port), "connection {i} over the cap");
    }
    assert_eq!(h.stats().refused_clients, 3);
    clients[0].request(1, "echo", b"still", LONG_MS);
    expect_echo(&mut clients[0], 1, b"still");

    drop(clients.pop());
    h.wait_stats("one place free", |s| s.clients == MAX_CLIENTS - 1);
    let mut again = h.attach("");
    again.request(0, "echo", b"again", LONG_MS);
    expect_echo(&mut again, 0, b"again");
    clients.push(again);

    let t1 = Instant::now();
    drop(clients);
    h.wait_stats("all gone", |s| s.clients == 0 && s.client_states == 0);
    eprintln!(
        "{MAX_CLIENTS} clients gone in {} ms",
        t1.elapsed().as_millis()
    );
    let per_client = h.lines.matching(&["WARN", "Iris client"]);
    assert!(per_client.is_empty(), "{per_client:?}");
}
