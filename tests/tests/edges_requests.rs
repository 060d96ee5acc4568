//! Requests at their edges (issue 15, items 4 and 5), on tokio over real TCP
//! and mutual TLS, plus the local paths: a request whose caller has given up
//! never runs, the member can read how long its caller still waits, and
//! every way of giving up (a timeout, a dropped future, a `select!` that took
//! another branch) returns what the request held on both nodes: the pending
//! entry on the caller's node, the queue place, queued bytes and handler slot
//! on the member's node. Late replies are dropped quietly and counted.
//! The last test runs on every runtime (tokio, async-std, smol).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use reign_driver::Runtime;

use reign_tests::{capture_logs, shutdown_all, sync_all, TestCluster};
use reign_tokio::{Limits, Node, RequestError, RequestTables};

const WAIT: Duration = Duration::from_secs(10);

async fn cluster(n: u16) -> Vec<Node> {
    capture_logs();
    TestCluster::new(n).start_all(WAIT).await
}

/// What a member saw.
#[derive(Default)]
struct Seen {
    /// Requests the handler ran.
    runs: AtomicUsize,
    /// The time remaining of each request when the handler got it.
    remaining: Mutex<Vec<Duration>>,
}

/// A member of `service` with one handler slot whose handler takes `handler`
/// per request, then answers `()`.
fn slow_member(node: &Node, service: &str, handler: Duration) -> Arc<Seen> {
    let (addr, mailbox) = node.new_mailbox();
    let limits = Limits {
        max_in_flight: 1,
        max_queued_bytes: 1 << 20,
    };
    node.join_with_limits(service, &addr, limits).unwrap();
    let seen = Arc::new(Seen::default());
    let counted = seen.clone();
    tokio::spawn(async move {
        while let Ok(request) = mailbox.recv_request().await {
            counted.runs.fetch_add(1, Ordering::SeqCst);
            counted
                .remaining
                .lock()
                .unwrap()
                .push(request.time_remaining());
            tokio::time::sleep(handler).await;
            let _ = request.reply(());
        }
    });
    seen
}

/// Waits until `cond` holds (at most [`WAIT`]).
async fn until(cond: impl Fn() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < WAIT, "not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until every node's request tables are back to idle.
async fn assert_idle(nodes: &[&Node]) {
    let started = Instant::now();
    loop {
        let tables: Vec<RequestTables> = nodes.iter().map(|n| n.request_tables()).collect();
        if tables.iter().all(|t| *t == RequestTables::default()) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "request tables not idle after {WAIT:?}: {tables:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Iris's case: one handler slot, a 25 ms handler, 4 requests with 1 ms
/// timeouts sent back to back from `caller` to `service` on `member`: the
/// handler runs exactly once and the other three are discarded unrun.
async fn iris(caller: &Node, member: &Node, service: &str) {
    const HANDLER: Duration = Duration::from_millis(25);
    const TIMEOUT: Duration = Duration::from_millis(1);
    let seen = slow_member(member, service, HANDLER);
    sync_all([caller, member], WAIT).await;
    // A round where even the first request timed out before it was sent (a
    // thread preempted for over 1 ms) proves nothing: try again.
    for round in 0..5 {
        let expired_before = member.stats().expired_requests;
        let late_before = caller.stats().late_replies;
        let started = Instant::now();
        let deadline = started + TIMEOUT;
        // Sent at once through the node itself, so that no scheduling delay
        // spreads them over more than one handler run.
        let pending: Vec<_> = (0..4u64)
            .map(|i| reign_proto::Node::request(caller, service, i, deadline))
            .collect();
        for p in pending {
            // A node without a core has no timer of its own: the runtime's
            // timer is the backstop, as in `Reign::request`.
            let result = tokio::time::timeout(TIMEOUT + Duration::from_millis(50), p).await;
            assert!(
                matches!(result, Err(_) | Ok(Err(RequestError::Timeout))),
                "{result:?}"
            );
        }
        // The first request's handler finishes, and nothing follows it.
        tokio::time::sleep(HANDLER * 8).await;
        assert_idle(&[caller, member]).await;
        let runs = seen.runs.swap(0, Ordering::SeqCst);
        let expired = member.stats().expired_requests - expired_before;
        println!(
            "round {round}: handler ran {runs} time(s), {expired} expired unrun, \
             {} late replies, {:?}",
            caller.stats().late_replies - late_before,
            started.elapsed()
        );
        assert!(runs <= 1, "an expired request ran: {runs} runs");
        if runs == 1 {
            assert_eq!(expired, 3, "the three queued requests are discarded");
            let remaining = seen.remaining.lock().unwrap().pop().unwrap();
            assert!(remaining <= TIMEOUT, "{remaining:?}");
            return;
        }
    }
    panic!("in 5 rounds the first request never reached the handler in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_requests_never_run_on_a_local_only_node() {
    let node = Node::local();
    iris(&node, &node, "iris-local-only").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_requests_never_run_on_the_callers_node() {
    let nodes = cluster(1).await;
    iris(&nodes[0], &nodes[0], "iris-local").await;
    nodes[0].shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_requests_never_run_across_nodes() {
    let nodes = cluster(2).await;
    iris(&nodes[0], &nodes[1], "iris-remote").await;
    assert!(nodes[0].stats().late_replies >= 1);
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_member_reads_the_time_its_caller_still_waits() {
    let nodes = cluster(2).await;
    let seen = slow_member(&nodes[1], "remaining", Duration::ZERO);
    sync_all([&nodes[0], &nodes[1]], WAIT).await;
    let timeout = Duration::from_secs(5);
    nodes[0].request("remaining", 1u64, timeout).await.unwrap();
    let remaining = seen.remaining.lock().unwrap().pop().unwrap();
    println!("remote member saw {remaining:?} of {timeout:?}");
    // Under the timeout, and most of it left (the transit was on loopback).
    assert!(
        remaining <= timeout && remaining > timeout / 2,
        "{remaining:?}"
    );
    assert_idle(&[&nodes[0], &nodes[1]]).await;
    shutdown_all(nodes).await;
}

/// A member with one slot, held by a first request for `hold`, and a second
/// request queued behind it from `caller`.
async fn queued_behind(caller: &Node, member: &Node, service: &str, hold: Duration) -> Arc<Seen> {
    let seen = slow_member(member, service, hold);
    sync_all([caller, member], WAIT).await;
    let first = caller.clone();
    let svc = service.to_owned();
    tokio::spawn(async move { first.request(svc.as_str(), 0u64, WAIT).await });
    until(|| seen.runs.load(Ordering::SeqCst) == 1).await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_abandoned_in_a_select_gives_everything_back() {
    let nodes = cluster(2).await;
    let (n0, n1) = (&nodes[0], &nodes[1]);
    let hold = Duration::from_millis(1500);
    let seen = queued_behind(n0, n1, "select", hold).await;
    tokio::select! {
        r = n0.request("select", 1u64, Duration::from_secs(60)) => panic!("answered: {r:?}"),
        () = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    // The request was queued on the member's node (the handler is busy for
    // 1.5 s); the caller's node let go of it at once, and the member's node
    // lets go long before the 60 s deadline.
    let gave_up = Instant::now();
    assert_eq!(
        n0.request_tables().pending,
        1,
        "only the held request waits"
    );
    while n1.request_tables().queued > 0 {
        assert!(gave_up.elapsed() < WAIT, "still queued after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!(
        "queue place given back {:?} after the select gave up",
        gave_up.elapsed()
    );
    assert_eq!(n1.stats().cancelled_requests, 1);
    // The held request finishes; nothing else runs; all tables are idle.
    assert_idle(&[n0, n1]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(seen.runs.load(Ordering::SeqCst), 1);
    assert_eq!(n1.stats().expired_requests, 0);
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_request_gives_everything_back_and_its_late_reply_is_counted() {
    let nodes = cluster(2).await;
    let (n0, n1) = (&nodes[0], &nodes[1]);
    // The held request itself times out: its late reply is counted.
    let seen = slow_member(n1, "timeout", Duration::from_millis(800));
    sync_all([n0, n1], WAIT).await;
    let first = n0.clone();
    let held = tokio::spawn(async move {
        first
            .request("timeout", 0u64, Duration::from_millis(200))
            .await
    });
    until(|| seen.runs.load(Ordering::SeqCst) == 1).await;
    let queued = n0.request("timeout", 1u64, Duration::from_millis(100));
    assert_eq!(queued.await.err(), Some(RequestError::Timeout));
    assert_eq!(held.await.unwrap().err(), Some(RequestError::Timeout));
    assert_idle(&[n0, n1]).await;
    assert_eq!(n1.stats().expired_requests, 1);
    assert_eq!(n1.stats().cancelled_requests, 0);
    until(|| n0.stats().late_replies == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(seen.runs.load(Ordering::SeqCst), 1);
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_local_request_gives_everything_back() {
    let nodes = cluster(1).await;
    let n0 = &nodes[0];
    let seen = queued_behind(n0, n0, "drop-local", Duration::from_millis(500)).await;
    let request = n0.request("drop-local", 1u64, Duration::from_secs(60));
    // Polled once (sent and queued), then dropped.
    assert!(tokio::time::timeout(Duration::from_millis(50), request)
        .await
        .is_err());
    let tables = n0.request_tables();
    assert_eq!((tables.queued, tables.queued_bytes), (0, 0), "{tables:?}");
    assert_eq!(n0.stats().cancelled_requests, 1);
    assert_idle(&[n0]).await;
    assert_eq!(seen.runs.load(Ordering::SeqCst), 1);
    nodes[0].shutdown().await;
}

// ----- every runtime, through `Reign::request` ----------------------------

/// The first of two futures to finish; the other is dropped (a minimal
/// `select!` that works on every runtime).
struct First<A, B>(Pin<Box<A>>, Pin<Box<B>>);

impl<A: Future, B: Future> Future for First<A, B> {
    type Output = Result<A::Output, B::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(a) = self.0.as_mut().poll(cx) {
            return Poll::Ready(Ok(a));
        }
        self.1.as_mut().poll(cx).map(Err)
    }
}

async fn until_on<R: Runtime + Default>(cond: impl Fn() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < WAIT, "not within {WAIT:?}");
        R::default().sleep(Duration::from_millis(2)).await;
    }
}

/// On runtime `R`, over TCP and mutual TLS: a member with one slot held for
/// `HOLD`; three requests with 20 ms timeouts queue behind it and expire
/// unrun; a fourth, abandoned by a race it lost, is called off at once; the
/// held one answers; every table is idle and the handler ran once.
async fn callers_that_give_up<R: Runtime + Default>() {
    const HOLD: Duration = Duration::from_millis(400);
    capture_logs();
    let nodes = TestCluster::new(2).start_on::<R>(&[0, 1], WAIT).await;
    let (n0, n1) = (&nodes[0], &nodes[1]);
    let (addr, mailbox) = n1.new_mailbox();
    let limits = Limits {
        max_in_flight: 1,
        max_queued_bytes: 1 << 20,
    };
    n1.join_with_limits("give-up", &addr, limits).unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    R::default().spawn(async move {
        while let Ok(request) = mailbox.recv_request().await {
            counted.fetch_add(1, Ordering::SeqCst);
            R::default().sleep(HOLD).await;
            let _ = request.reply(());
        }
    });
    n0.sync().await;
    let first = n0.clone();
    R::default().spawn(async move {
        let _ = first.request("give-up", 0u64, WAIT).await;
    });
    until_on::<R>(|| runs.load(Ordering::SeqCst) == 1).await;
    for i in 1..4u64 {
        let result = n0.request("give-up", i, Duration::from_millis(20)).await;
        assert_eq!(result.err(), Some(RequestError::Timeout));
    }
    let raced = First(
        Box::pin(n0.request("give-up", 4u64, Duration::from_secs(60))),
        Box::pin(R::default().sleep(Duration::from_millis(100))),
    )
    .await;
    assert!(raced.is_err(), "the sleep wins the race");
    until_on::<R>(|| n1.request_tables() == RequestTables::default()).await;
    until_on::<R>(|| n0.request_tables() == RequestTables::default()).await;
    let stats = n1.stats();
    println!(
        "expired {} cancelled {} runs {}",
        stats.expired_requests,
        stats.cancelled_requests,
        runs.load(Ordering::SeqCst)
    );
    assert_eq!(stats.expired_requests, 3);
    assert_eq!(stats.cancelled_requests, 1);
    R::default().sleep(HOLD / 2).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    for node in nodes {
        node.shutdown().await;
    }
}

reign_tests::on_every_runtime!(callers_that_give_up);
