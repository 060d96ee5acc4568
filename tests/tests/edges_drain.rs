//! A graceful shutdown delivers what `send` accepted (issue 15, item 3),
//! on every runtime: tokio, async-std and smol. Real TCP and TLS on
//! 127.0.0.1; the slow and stalled peers are made by a shaping TCP proxy
//! between the two nodes, never by touching them.
//!
//! The receiving side counts every message and checks their order, so
//! "sent − received == counted as dropped" is checked exactly wherever the
//! bytes' fate is knowable (a peer that keeps reading, however slowly).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reign_driver::{Reign, Runtime};
use reign_proto::{Address, Mailbox, NodeId, RecvError, SendError, Tuning};
use reign_tests::{capture_logs, into_pair, logged, start_connected, TestCluster};

const WAIT: Duration = Duration::from_secs(10);
/// The scenario: this many small messages, all accepted, then shutdown.
const MESSAGES: u64 = 200_000;
/// A receiver that got nothing new for this long has everything it will get.
const QUIET: Duration = Duration::from_secs(3);
/// How long the closing of a connection may flush after the drain
/// (the driver's `CLOSE_GRACE`).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Fast timers; pings that cannot end a link whose peer is slowed down on
/// purpose; room on the receiving node for everything unread.
fn tuning(drain: Duration) -> Tuning {
    Tuning {
        drain_timeout: drain,
        read_deadline: Duration::from_secs(60),
        max_ping_failures: 1_000,
        max_unread_bytes: 512 << 20,
        ..Tuning::fast()
    }
}

/// Two nodes whose link from node 0 to node 1 runs through `proxy`.
async fn proxied_pair<R: Runtime + Default>(
    cluster: &TestCluster,
    proxy: &Proxy,
) -> (Reign<R>, Reign<R>) {
    let real = cluster.address(NodeId(1)).to_owned();
    let mut spec0 = cluster.spec(NodeId(0));
    spec0.nodes[1].address = proxy.addr.to_string();
    let mut spec1 = cluster.spec(NodeId(1));
    spec1.nodes[1].address = proxy.addr.to_string();
    spec1.nodes[1].listen_address = real;
    let specs = [(NodeId(0), spec0), (NodeId(1), spec1)];
    let nodes = into_pair(start_connected::<R>(specs, WAIT).await);
    assert!(
        proxy.connections.load(Ordering::Relaxed) >= 1,
        "node 0 must reach node 1 through the proxy"
    );
    nodes
}

/// Counts (and checks the order of) the `u64`s arriving in a mailbox, in
/// a thread of its own so that no runtime is needed.
struct Counter {
    received: Arc<AtomicU64>,
    disorder: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Counter {
    fn spawn(mailbox: Mailbox) -> Counter {
        let received = Arc::new(AtomicU64::new(0));
        let disorder = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, d, s) = (received.clone(), disorder.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut next = 0u64;
            loop {
                match mailbox.recv_blocking_timeout(Duration::from_millis(50)) {
                    Ok(message) => {
                        let n = message.downcast::<u64>().expect("a u64");
                        if n != next {
                            d.fetch_add(1, Ordering::Relaxed);
                        }
                        next = n + 1;
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(RecvError::Timeout) if !s.load(Ordering::Relaxed) => {}
                    Err(_) => return,
                }
            }
        });
        Counter {
            received,
            disorder,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until `expected` messages arrived or nothing new came for
    /// [`QUIET`], then a little more (to see extras), and returns the count.
    fn settle(&self, expected: u64) -> u64 {
        let mut last = self.received();
        let mut changed = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.received();
            if now != last {
                last = now;
                changed = Instant::now();
            }
            if now == expected || changed.elapsed() > QUIET {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        self.received()
    }

    fn assert_in_order(&self) {
        assert_eq!(
            self.disorder.load(Ordering::Relaxed),
            0,
            "messages arrived out of order or twice"
        );
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the proxy does to bytes from node 0 to node 1 (the other way
/// always passes): [`FORWARD`], [`STALL`] (stop reading: TCP pushes back
/// on node 0), or any other value: at most that many bytes per second.
const FORWARD: u64 = 0;
const STALL: u64 = u64::MAX;

/// A shaping TCP proxy on 127.0.0.1, in plain threads (runtime-agnostic).
struct Proxy {
    addr: SocketAddr,
    mode: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let addr = listener.local_addr().expect("proxy address");
        let mode = Arc::new(AtomicU64::new(FORWARD));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let (m, s, c) = (mode.clone(), stop.clone(), connections.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let inbound = match listener.accept() {
                    Ok((inbound, _)) => inbound,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => return,
                };
                let Ok(outbound) = TcpStream::connect(target) else {
                    continue;
                };
                c.fetch_add(1, Ordering::Relaxed);
                let _ = inbound.set_nonblocking(false);
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (ir, ow) = (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                let (m, s2) = (m.clone(), s.clone());
                std::thread::spawn(move || pump(ir, ow, Some(m), s2));
                let s3 = s.clone();
                std::thread::spawn(move || pump(outbound, inbound, None, s3));
            }
        });
        Proxy {
            addr,
            mode,
            stop,
            connections,
        }
    }

    fn set(&self, mode: u64) {
        self.mode.store(mode, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `to` until either ends, shaped by `mode` if given;
/// an end of stream is passed on as a half-close.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    mode: Option<Arc<AtomicU64>>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while mode
            .as_ref()
            .is_some_and(|m| m.load(Ordering::Relaxed) == STALL)
        {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            let _ = from.shutdown(Shutdown::Both);
            return;
        }
        let rate = mode.as_ref().map_or(FORWARD, |m| m.load(Ordering::Relaxed));
        if rate != FORWARD && rate != STALL {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
        }
    }
}

/// Runs `a.shutdown()` in a task of its own; the flag says when it returned.
fn shutdown_in_background<R: Runtime + Default>(a: &Reign<R>) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let (node, flag) = (a.clone(), done.clone());
    R::default().spawn(async move {
        node.shutdown().await;
        flag.store(true, Ordering::Release);
    });
    done
}

async fn until<R: Runtime + Default>(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        R::default().sleep(Duration::from_millis(2)).await;
    }
    true
}

/// The scenario: 200,000 small messages, all accepted, then
/// `shutdown()`. Every one arrives, in order; nothing is counted dropped;
/// sends after it are refused with `NodeShutdown`.
async fn shutdown_delivers_everything_send_accepted<R: Runtime + Default>() {
    let cluster = TestCluster::with_tuning(2, tuning(Duration::from_secs(30)));
    let (a, b) = cluster.pair_on::<R>(WAIT).await;
    let (counter, remote) = send_counted(&a, &b, MESSAGES);
    let queued = a.peer_stats()[0].queued_bytes;
    let started = Instant::now();
    a.shutdown().await;
    let took = started.elapsed();
    let dropped = a.stats().dropped_at_shutdown;
    let received = counter.settle(MESSAGES);
    eprintln!(
        "{MESSAGES} sent, {queued} bytes queued at shutdown, shutdown took {took:?}: \
         {received} received, {dropped} counted dropped"
    );
    assert_eq!(remote.send(0u64), Err(SendError::NodeShutdown));
    assert_eq!(dropped, 0);
    assert_eq!(received, MESSAGES, "accepted messages vanished");
    counter.assert_in_order();
    assert!(b.wait_for_disconnect(NodeId(0), WAIT).await);
    b.shutdown().await;
}

/// With `drain_timeout` 0 nothing is drained: what is still queued is
/// dropped at once, and counted exactly (the link itself is healthy, so
/// everything not counted arrives).
async fn without_a_drain_what_is_dropped_is_counted_exactly<R: Runtime + Default>() {
    let cluster = TestCluster::with_tuning(2, tuning(Duration::ZERO));
    let (a, b) = cluster.pair_on::<R>(WAIT).await;
    let (counter, _remote) = send_counted(&a, &b, MESSAGES);
    let started = Instant::now();
    a.shutdown().await;
    let took = started.elapsed();
    let dropped = a.stats().dropped_at_shutdown;
    let received = counter.settle(MESSAGES - dropped);
    eprintln!(
        "no drain: {MESSAGES} sent, shutdown took {took:?}: {received} received, \
         {dropped} counted dropped"
    );
    assert_eq!(MESSAGES - received, dropped, "the drop count is not exact");
    // Whatever was dropped was the tail of the queue: what arrived is a prefix.
    counter.assert_in_order();
    b.shutdown().await;
}

/// A peer that reads slowly: the drain delivers what it can within its
/// timeout, the rest is dropped and counted exactly, sends during the
/// drain are refused, and local mailboxes stay open until it ends.
async fn a_slow_peer_gets_what_fits_and_the_rest_is_counted_exactly<R: Runtime + Default>() {
    capture_logs();
    let drain = Duration::from_secs(1);
    let mut t = tuning(drain);
    // Room for a backlog much larger than the sockets on the way hold.
    t.outbound_queue_bytes = 64 << 20;
    // Little ciphertext in the driver, so that closing flushes it quickly.
    t.write_window = 256 << 10;
    let cluster = TestCluster::with_tuning(2, t);
    let real: SocketAddr = cluster.address(NodeId(1)).parse().unwrap();
    let proxy = Proxy::start(real);
    let (a, b) = proxied_pair::<R>(&cluster, &proxy).await;
    let (local, local_box) = a.new_mailbox();
    proxy.set(2 << 20);
    let sent = 1_000_000u64;
    let (counter, remote) = send_counted(&a, &b, sent);
    let started = Instant::now();
    let done = shutdown_in_background(&a);
    assert!(until::<R>(WAIT, || a.is_shut_down()).await);
    // Draining: new sends are refused with a clear error; local mailboxes
    // still work.
    let refused = remote.send(0u64).unwrap_err();
    assert_eq!(refused, SendError::NodeShutdown);
    assert!(refused.to_string().contains("shutting down"), "{refused}");
    if started.elapsed() < drain {
        // (Checked only while the drain cannot have timed out yet.)
        assert!(!done.load(Ordering::Acquire), "the drain ended too early");
        assert!(
            !local_box.is_closed(),
            "mailboxes close only after the drain"
        );
    }
    // The drain ends by its timeout (the backlog cannot pass in time);
    // then the link may go full speed: everything left in the sockets
    // arrives, everything counted dropped does not.
    assert!(until::<R>(WAIT, || a.stats().dropped_at_shutdown > 0).await);
    let drained_for = started.elapsed();
    proxy.set(FORWARD);
    assert!(until::<R>(WAIT * 3, || done.load(Ordering::Acquire)).await);
    let took = started.elapsed();
    assert!(local_box.is_closed());
    assert!(local.send(1u8).is_err());
    let dropped = a.stats().dropped_at_shutdown;
    let received = counter.settle(sent - dropped);
    eprintln!(
        "slow peer (2 MiB/s), drain {drain:?}: {sent} sent; drain ended after {drained_for:?}, \
         shutdown took {took:?}; {received} received, {dropped} counted dropped"
    );
    assert!(drained_for >= drain, "the drain gave up before its timeout");
    assert_eq!(sent - received, dropped, "the drop count is not exact");
    assert!(
        logged(&["shutdown dropped", &format!("dropped={dropped}")]),
        "the drop was not logged with its count"
    );
    counter.assert_in_order();
    b.shutdown().await;
}

/// Node `a` sends `count` numbered messages, each accepted at once, to a new
/// mailbox on node `b` whose arrivals a [`Counter`] counts.
fn send_counted<R: Runtime>(a: &Reign<R>, b: &Reign<R>, count: u64) -> (Counter, Address) {
    let (addr, mailbox) = b.new_mailbox();
    let counter = Counter::spawn(mailbox);
    let remote = a.address_of(addr.id());
    for i in 0..count {
        remote
            .send(i)
            .expect("the queue has room for every message");
    }
    (counter, remote)
}

/// Node 0 (`a`) with a million messages queued for node 1 (`b`) behind a
/// stalled proxy, and a counter of what reaches node 1: where the
/// stalled-peer tests start.
struct Backlog<R: Runtime> {
    proxy: Proxy,
    a: Reign<R>,
    b: Reign<R>,
    counter: Counter,
    /// Node 1's counted mailbox, as node 0 addresses it.
    remote: Address,
    /// How many messages were queued.
    sent: u64,
}

/// Sets up a [`Backlog`] with nodes whose drain timeout is `drain`.
async fn stalled_backlog<R: Runtime + Default>(drain: Duration) -> Backlog<R> {
    let mut t = tuning(drain);
    t.outbound_queue_bytes = 64 << 20;
    let cluster = TestCluster::with_tuning(2, t);
    let real: SocketAddr = cluster.address(NodeId(1)).parse().unwrap();
    let proxy = Proxy::start(real);
    let (a, b) = proxied_pair::<R>(&cluster, &proxy).await;
    proxy.set(STALL);
    let sent = 1_000_000u64;
    let (counter, remote) = send_counted(&a, &b, sent);
    Backlog {
        proxy,
        a,
        b,
        counter,
        remote,
        sent,
    }
}

/// A peer whose socket stalls (it stops reading) cannot hold a shutdown
/// past the drain timeout plus the close grace; what was still queued is
/// counted, and never more than was really lost.
async fn a_stalled_peer_cannot_hold_shutdown_past_the_drain_timeout<R: Runtime + Default>() {
    let drain = Duration::from_secs(1);
    let Backlog {
        proxy,
        a,
        b,
        counter,
        sent,
        ..
    } = stalled_backlog::<R>(drain).await;
    let started = Instant::now();
    let done = shutdown_in_background(&a);
    let bound = drain + CLOSE_GRACE;
    let finished = until::<R>(bound + WAIT, || done.load(Ordering::Acquire)).await;
    let took = started.elapsed();
    assert!(finished, "shutdown hung on a stalled peer");
    let dropped = a.stats().dropped_at_shutdown;
    // Let whatever the sockets still hold through, then count.
    proxy.set(FORWARD);
    let received = counter.settle(sent - dropped);
    eprintln!(
        "stalled peer, drain {drain:?}: shutdown took {took:?} (bound {bound:?}); {sent} sent, \
         {received} received, {dropped} counted dropped, {} lost in socket buffers",
        sent - received - dropped.min(sent - received)
    );
    assert!(took >= drain, "the drain gave up before its timeout");
    assert!(
        took < bound + Duration::from_secs(5),
        "shutdown took {took:?}"
    );
    assert!(dropped > 0, "a stalled peer cannot have taken everything");
    assert!(
        dropped <= sent - received,
        "counted {dropped} dropped but only {} were missing",
        sent - received
    );
    counter.assert_in_order();
    b.shutdown().await;
}

/// A link lost with a backlog (here: the peer shuts down while its socket
/// is stalled): every message still queued for it counts as
/// `dropped_unreachable`, on the node and on the peer, once each.
async fn a_link_lost_with_a_backlog_counts_each_queued_message<R: Runtime + Default>() {
    let Backlog {
        proxy,
        a,
        b,
        counter,
        remote,
        sent,
    } = stalled_backlog::<R>(Duration::from_secs(1)).await;
    b.shutdown().await;
    assert!(a.wait_for_disconnect(NodeId(1), WAIT).await);
    let lost = a.stats().dropped_unreachable;
    let peer = a
        .peer_stats()
        .into_iter()
        .find(|p| p.node == NodeId(1))
        .unwrap();
    let received = counter.received();
    eprintln!(
        "link lost with a backlog: {sent} sent, {received} received, {lost} counted unreachable"
    );
    assert!(lost > 0, "the backlog was not counted");
    assert_eq!(
        peer.dropped_unreachable, lost,
        "node and peer counters disagree"
    );
    assert!(lost <= sent - received, "counted more than was missing");
    assert_eq!(a.stats().dropped_at_shutdown, 0);
    // Later sends to the gone node are counted one by one.
    remote.send(0u64).unwrap();
    assert_eq!(a.stats().dropped_unreachable, lost + 1);
    proxy.set(FORWARD);
    a.shutdown().await;
}

reign_tests::on_every_runtime!(
    shutdown_delivers_everything_send_accepted,
    without_a_drain_what_is_dropped_is_counted_exactly,
    a_slow_peer_gets_what_fits_and_the_rest_is_counted_exactly,
    a_link_lost_with_a_backlog_counts_each_queued_message,
    a_stalled_peer_cannot_hold_shutdown_past_the_drain_timeout,
);
