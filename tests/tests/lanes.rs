//! The outbound queue's lanes (issue 17, latency under load), on tokio over
//! real TCP and mutual TLS: sends and requests to one mailbox keep their
//! order however they interleave with traffic to others; a request to one
//! mailbox leaves ahead of a flood queued for another (checked by position
//! on the receiving node, not by the clock); and what a sender sees at the
//! whole queue's bound and its reserve for idle mailboxes, against a peer
//! that never reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::poll_once;
use reign_tests::raw_peer::SilentPeer;
use reign_tests::{capture_logs, shutdown_all, TestCluster};
use reign_tokio::{Address, Message, Node, NodeId, Request, RequestError, SendError, Tuning};

const WAIT: Duration = Duration::from_secs(30);

/// Sends `value`, waiting a little while the queue is full.
async fn send_waiting(to: &Address, value: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        match to.send(value) {
            Ok(()) => return,
            Err(SendError::Full) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_micros(200)).await
            }
            Err(e) => panic!("send {value}: {e}"),
        }
    }
}

/// A message's sequence number, whether it came as a send or a request
/// (a request is answered with its own number).
fn sequence(message: Message) -> (bool, u64) {
    match message.take::<Request>() {
        Ok(request) => {
            let (message, responder) = request.into_parts();
            let seq: u64 = message.downcast::<u64>().expect("a u64");
            responder.reply(seq).expect("reply");
            (true, seq)
        }
        Err(message) => (false, message.downcast::<u64>().expect("a u64")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_and_requests_to_one_mailbox_arrive_in_order_among_other_traffic() {
    capture_logs();
    let nodes = TestCluster::new(2).start_all(Duration::from_secs(10)).await;
    let (m, inbox) = nodes[1].new_mailbox();
    let (other, other_box) = nodes[1].new_mailbox();
    let (m, other) = (nodes[0].address_of(m.id()), nodes[0].address_of(other.id()));
    const N: u64 = 3_000;
    // Another mailbox on the same link is flooded the whole time, so the
    // lanes are busy and take turns.
    let flood = {
        let other = other.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            let deadline = Instant::now() + WAIT;
            while sent < 200_000 && Instant::now() < deadline {
                match other.send(sent) {
                    Ok(()) => sent += 1,
                    Err(SendError::Full) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            sent
        })
    };
    let flood_reader = tokio::spawn(async move {
        let mut next = 0u64;
        while let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_secs(5), other_box.recv()).await
        {
            assert_eq!(
                message.downcast::<u64>().expect("a u64"),
                next,
                "flood reordered"
            );
            next += 1;
        }
        next
    });
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < 2 * N as usize {
            let message = tokio::time::timeout(WAIT, inbox.recv())
                .await
                .expect("in time")
                .unwrap();
            seen.push(sequence(message));
        }
        seen
    });
    // A send, then a request, to the same mailbox, in turn. The request
    // is queued when its future is first polled, before the next send (a
    // reply may even be back within that poll: the caller's thread reads
    // its node's socket before it waits).
    let mut replies = Vec::new();
    for seq in 0..N {
        send_waiting(&m, seq).await;
        let mut reply = Box::pin(nodes[0].request(&m, seq, WAIT));
        let first = poll_once(&mut reply).await;
        replies.push(async move {
            match first {
                Some(answered) => answered,
                None => reply.await,
            }
        });
    }
    for (seq, reply) in replies.into_iter().enumerate() {
        let answer = reply.await.expect("a reply");
        assert_eq!(answer.downcast::<u64>().expect("a u64"), seq as u64);
    }
    let seen = reader.await.unwrap();
    let expected: Vec<(bool, u64)> = (0..N).flat_map(|s| [(false, s), (true, s)]).collect();
    assert_eq!(
        seen, expected,
        "a send and a request to one mailbox reordered"
    );
    let sent = flood.join().unwrap();
    assert_eq!(flood_reader.await.unwrap(), sent, "flood messages lost");
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_one_mailbox_overtakes_a_flood_queued_for_another() {
    capture_logs();
    // A queue bound large enough that, without lanes, the request would
    // wait behind far more than the flood sends after it.
    let tuning = Tuning {
        outbound_queue_bytes: 64 << 20,
        ..Tuning::fast()
    };
    let nodes = TestCluster::with_tuning(2, tuning)
        .start_all(Duration::from_secs(10))
        .await;
    let (a, a_box) = nodes[1].new_mailbox();
    let (b, b_box) = nodes[1].new_mailbox();
    let (a, b) = (nodes[0].address_of(a.id()), nodes[0].address_of(b.id()));
    // Node 1 counts the flood as it reads it; B's handler notes that
    // count when the request reaches it.
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let flood_reader = tokio::spawn(async move {
        let mut next = 0u64;
        while let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(5), a_box.recv()).await
        {
            assert_eq!(
                message.downcast::<u64>().expect("a u64"),
                next,
                "flood reordered"
            );
            next += 1;
            counter.store(next, Ordering::Release);
        }
        next
    });
    let seen_at = Arc::new(AtomicU64::new(u64::MAX));
    let noted = seen_at.clone();
    let counter = received.clone();
    tokio::spawn(async move {
        if let Ok(request) = b_box.recv_request().await {
            noted.store(counter.load(Ordering::Acquire), Ordering::Release);
            let _ = request.reply(());
        }
    });
    // Flood A until its queue pushes back (a lane's worth waits), for at
    // least a little while so that the link's rate is measured.
    // Then, in the flood's own thread, the moment A's lane refuses a send
    // (it is at its bound), a request to B is queued, and AFTER more
    // flood messages behind it.
    const AFTER: u64 = 20_000;
    let flood = {
        let (a, b, n0) = (a.clone(), b.clone(), nodes[0].clone());
        let runtime = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            let _entered = runtime.enter();
            let mut sent = 0u64;
            let mut full = 0u32;
            let started = Instant::now();
            loop {
                match a.send(sent) {
                    Ok(()) => sent += 1,
                    Err(SendError::Full)
                        if full >= 100 && started.elapsed() >= Duration::from_millis(200) =>
                    {
                        break
                    }
                    Err(SendError::Full) => {
                        full += 1;
                        std::thread::yield_now()
                    }
                    Err(e) => panic!("{e}"),
                }
                assert!(started.elapsed() < WAIT, "the queue never pushed back");
            }
            let queued = n0
                .peer_stats()
                .into_iter()
                .find(|s| s.node == NodeId(1))
                .unwrap()
                .queued_bytes;
            let mut reply = Box::pin(n0.request(&b, (), WAIT));
            assert!(futures_lite::future::block_on(poll_once(&mut reply)).is_none());
            let last = sent + AFTER;
            while sent < last {
                match a.send(sent) {
                    Ok(()) => sent += 1,
                    Err(SendError::Full) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            futures_lite::future::block_on(reply).expect("a reply");
            (sent, queued)
        })
    };
    let (total, queued) = tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    assert_eq!(flood_reader.await.unwrap(), total, "flood messages lost");
    let at = seen_at.load(Ordering::Acquire);
    println!(
        "the request reached its mailbox after {at} of {total} flood messages \
         ({queued} bytes were queued when it was sent, {AFTER} sent after it)"
    );
    assert!(
        at + AFTER <= total,
        "the request waited behind the flood: reached after {at} of {total}"
    );
    shutdown_all(&nodes).await;
}

/// Fills `to`'s lane: sends until `Full` stays (while the socket and the
/// write window still take bytes, the queue drains a little); how many
/// were taken.
async fn fill(to: &Address, payload: &serde_bytes::ByteBuf) -> u64 {
    let mut sent = 0u64;
    let mut full = 0;
    let deadline = Instant::now() + WAIT;
    while full < 20 {
        match to.send(payload.clone()) {
            Ok(()) => {
                sent += 1;
                full = 0;
            }
            Err(SendError::Full) => {
                full += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "never full");
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_sees_full_at_the_whole_bound_and_idle_mailboxes_get_the_reserve() {
    capture_logs();
    let tuning = Tuning {
        outbound_queue_bytes: 2 << 20,
        ping_interval: Duration::from_secs(30),
        read_deadline: Duration::from_secs(60),
        ..Tuning::fast()
    };
    let cluster = TestCluster::with_tuning(2, tuning.clone());
    let node = Node::start(&cluster.spec(NodeId(0)), NodeId(0))
        .await
        .unwrap();
    // Node 1 is a raw peer (`SilentPeer`) that completes the handshake and never reads:
    // once the socket and the write window are full, the queue only grows.
    let peer = SilentPeer::admitted(&cluster);
    assert!(
        node.wait_for_peers(&[NodeId(1)], Duration::from_secs(10))
            .await
    );
    let template = node.new_mailbox().0.id();
    let remote = |serial: u64| {
        let mut id = template;
        id.node = NodeId(1);
        id.serial = serial;
        node.address_of(id)
    };
    let queued = || {
        node.peer_stats()
            .into_iter()
            .find(|s| s.node == NodeId(1))
            .unwrap()
            .queued_bytes as usize
    };
    let payload = serde_bytes::ByteBuf::from(vec![0u8; 1000]);
    let framed = 1000 + 64;
    // The queue's reserve past its bound for frames to idle mailboxes
    // (`LANE_RESERVE` in the outbound queue).
    let reserve = 16 * 1024;
    // One mailbox alone may use the whole queue, as before lanes: it is
    // refused just over the bound. (Each lane's own bound, which holds
    // while other lanes wait too, is tested where the queue is.)
    let a = remote(1_000_001);
    fill(&a, &payload).await;
    let alone = queued();
    assert!(alone <= tuning.outbound_queue_bytes, "{alone} bytes queued");
    assert!(
        alone + framed > tuning.outbound_queue_bytes,
        "{alone} bytes: not at the bound"
    );
    assert!(matches!(a.send(payload.clone()), Err(SendError::Full)));
    // A request to that mailbox (the same payload: a longer frame than
    // the send's) is refused at once, as the send was.
    let refused = node
        .request(&a, payload.clone(), Duration::from_secs(5))
        .await;
    assert!(
        matches!(refused, Err(RequestError::Send(SendError::Full))),
        "{refused:?}"
    );
    // A frame to an idle mailbox is taken past the bound, within the
    // reserve: a few of them, then a fresh mailbox is refused too.
    let mut taken = 0;
    let mut serial = 1_000_002;
    loop {
        match remote(serial).send(payload.clone()) {
            Ok(()) => taken += 1,
            Err(SendError::Full) => break,
            Err(e) => panic!("{e}"),
        }
        serial += 1;
        assert!(taken <= reserve / 1000, "the reserve has no end");
    }
    assert!(
        taken >= 1,
        "no frame to an idle mailbox was taken past the bound"
    );
    let all = queued();
    assert!(
        all <= tuning.outbound_queue_bytes + reserve,
        "{all} bytes queued"
    );
    let fresh = remote(serial + 1);
    let refused = node
        .request(&fresh, payload.clone(), Duration::from_secs(5))
        .await;
    assert!(
        matches!(refused, Err(RequestError::Send(SendError::Full))),
        "{refused:?}"
    );
    println!(
        "one mailbox alone queued {alone} of {} bytes; {taken} frames to idle mailboxes then, {all} in all",
        tuning.outbound_queue_bytes
    );
    drop(peer);
    node.shutdown().await;
}
