//! Inline receive (issue 17): a thread about to wait for a message (an
//! empty mailbox, a request without its reply) first reads the sockets of
//! its node's sleeping driver itself, so a message already in a socket is
//! taken without waking the driver and then the waiting thread. The
//! receiving thread, the driver and sending threads race for the core. Over
//! real TCP and rustls mutual TLS on 127.0.0.1, on every runtime:
//!
//! - one task sending from node 1 to a mailbox of node 0 and receiving it
//!   (Go reign's one-hop shape) loses nothing and keeps order, and hops are
//!   read by the receiving thread itself (`NodeStats::inline_receives`);
//! - the same from a plain thread with the blocking receive;
//! - request/reply from one task gets every reply right;
//! - receives abandoned after a few microseconds (timeouts firing before,
//!   during or just after an inline receive fed the core) lose nothing and
//!   repeat nothing;
//! - a peer that leaves while a receiver waits is noticed (the receive
//!   times out cleanly, the link goes down), and hops resume when it comes
//!   back.

use std::time::Duration;

use reign_driver::{Reign, Runtime};
use reign_tests::{eventually, on_every_runtime, recv_on, TestCluster};
use reign_tokio::{NodeId, SendError};

/// Generous: nothing here should take more than a fraction of it.
const WAIT: Duration = Duration::from_secs(30);
/// Hops every hop test makes, whatever it sees.
const MIN_HOPS: u64 = 2_000;
/// Hops a hop test may make while waiting to see an inline receive (the
/// driver wins every race only by chance; tens of thousands of times in a
/// row does not happen).
const MAX_HOPS: u64 = 50_000;
/// Messages of the abandoned-receive test.
const STREAM: u64 = 20_000;
/// Requests of the request/reply test.
const REQUESTS: u64 = 1_000;

/// Hops from node 1 to a mailbox of node 0, received by the sending task;
/// returns how many it made. Each must come back in order.
async fn hops<R: Runtime + Default>(a: &Reign<R>, b: &Reign<R>, start: u64) -> u64 {
    let (here, inbox) = a.new_mailbox();
    let there = b.address_of(here.id());
    let before = a.stats().inline_receives;
    let mut n = 0;
    while n < MIN_HOPS || (a.stats().inline_receives == before && n < MAX_HOPS) {
        there.send(start + n).expect("the hop is sent");
        let back: u64 = recv_on::<R, u64>(&inbox, WAIT).await;
        assert_eq!(back, start + n, "hop out of order or lost");
        n += 1;
    }
    n
}

async fn hops_in_one_task_keep_order_and_go_inline<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b): (Reign<R>, Reign<R>) = cluster.pair_on::<R>(WAIT).await;
    let made = hops(&a, &b, 0).await;
    let inline = a.stats().inline_receives;
    println!("{made} hops in one task, {inline} read by the receiving thread itself");
    assert!(inline > 0, "no hop of {made} was read inline");
    assert_eq!(a.stats().dropped_full + a.stats().dropped_closed, 0);
    a.shutdown().await;
    b.shutdown().await;
}

async fn blocking_receives_go_inline_too<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b): (Reign<R>, Reign<R>) = cluster.pair_on::<R>(WAIT).await;
    let (here, inbox) = a.new_mailbox();
    let there = b.address_of(here.id());
    let stats = a.clone();
    let made = std::thread::spawn(move || {
        let mut n = 0u64;
        while n < MIN_HOPS || (stats.stats().inline_receives == 0 && n < MAX_HOPS) {
            there.send(n).expect("the hop is sent");
            let back: u64 = inbox
                .recv_blocking_timeout(WAIT)
                .expect("a hop in time")
                .downcast()
                .expect("a u64");
            assert_eq!(back, n, "hop out of order or lost");
            n += 1;
        }
        n
    })
    .join()
    .expect("the receiving thread panicked");
    let inline = a.stats().inline_receives;
    println!("{made} blocking hops, {inline} read by the receiving thread itself");
    assert!(inline > 0, "no blocking hop of {made} was read inline");
    a.shutdown().await;
    b.shutdown().await;
}

async fn requests_from_one_task_get_their_replies<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b): (Reign<R>, Reign<R>) = cluster.pair_on::<R>(WAIT).await;
    let (member, requests) = b.new_mailbox();
    b.join("inline.echo", &member).expect("joined");
    R::default().spawn(async move {
        while let Ok(request) = requests.recv_request().await {
            let (msg, responder) = request.into_parts();
            let n: u64 = msg.downcast().expect("a u64");
            let _ = responder.reply(n * 2);
        }
    });
    assert!(eventually(WAIT, || a.members("inline.echo").len() == 1));
    for n in 0..REQUESTS {
        let reply = a.request("inline.echo", n, WAIT).await.expect("a reply");
        assert_eq!(reply.downcast::<u64>().expect("a u64"), n * 2);
    }
    println!(
        "{REQUESTS} requests, {} inline receives on the caller's node",
        a.stats().inline_receives
    );
    assert_eq!(a.stats().late_replies, 0);
    a.shutdown().await;
    b.shutdown().await;
}

async fn abandoned_receives_lose_nothing<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b): (Reign<R>, Reign<R>) = cluster.pair_on::<R>(WAIT).await;
    let (here, inbox) = a.new_mailbox();
    let there = b.address_of(here.id());
    let sender = std::thread::spawn(move || {
        for n in 0..STREAM {
            loop {
                match there.send(n) {
                    Ok(()) => break,
                    Err(SendError::Full) => std::thread::sleep(Duration::from_micros(100)),
                    Err(e) => panic!("send failed: {e}"),
                }
            }
            if n.is_multiple_of(64) {
                // Gaps, so the receiver finds the mailbox empty and the
                // driver asleep often.
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    });
    let rt = R::default();
    let mut next = 0u64;
    let mut abandoned = 0u64;
    let mut round = 0u64;
    while next < STREAM {
        round += 1;
        // Every other receive is polled once and dropped if it has
        // nothing (an inline receive may just have fed the core); the
        // others give up after 0 to 15 µs (a runtime's timer may round
        // that up).
        let received = if round.is_multiple_of(2) {
            futures_lite::future::poll_once(inbox.recv())
                .await
                .unwrap_or(Err(reign_tokio::RecvError::Timeout))
        } else {
            let patience = Duration::from_micros(round % 16);
            reign_driver::recv_timeout(&rt, &inbox, patience).await
        };
        match received {
            Ok(msg) => {
                let n: u64 = msg.downcast().expect("a u64");
                assert_eq!(n, next, "lost or repeated after an abandoned receive");
                next += 1;
            }
            Err(_) => abandoned += 1,
        }
    }
    sender.join().expect("the sender panicked");
    assert_eq!(inbox.message_count(), 0, "nothing is left over");
    println!(
        "{STREAM} messages, {abandoned} receives abandoned, {} inline receives",
        a.stats().inline_receives
    );
    assert!(
        abandoned > 0,
        "no receive was abandoned: the test tested nothing"
    );
    a.shutdown().await;
    b.shutdown().await;
}

async fn a_peer_leaving_while_a_receiver_waits_is_noticed<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b): (Reign<R>, Reign<R>) = cluster.pair_on::<R>(WAIT).await;
    hops(&a, &b, 0).await;
    let (_here, inbox) = a.new_mailbox();
    let rt = R::default();
    let waiting = reign_driver::recv_timeout(&rt, &inbox, Duration::from_secs(2));
    let (received, ()) = futures_lite::future::zip(waiting, b.shutdown()).await;
    assert!(received.is_err(), "nothing was sent: {received:?}");
    assert!(
        eventually(WAIT, || !a.is_connected(NodeId(1))),
        "node 0 did not notice node 1 leave"
    );
    let b: Reign<R> = cluster
        .start_on::<R>(&[1], WAIT)
        .await
        .pop()
        .expect("node 1");
    // Both ends: a hop sent before node 1 has counted the link up (it does
    // once node 0's hello arrives, just after node 0 did) is dropped as
    // unreachable, as any send to a disconnected peer.
    assert!(eventually(WAIT, || a.is_connected(NodeId(1))));
    assert!(b.wait_for_peers(&[NodeId(0)], WAIT).await);
    let made = hops(&a, &b, 1 << 32).await;
    println!("{made} hops after node 1 came back");
    a.shutdown().await;
    b.shutdown().await;
}

on_every_runtime!(
    hops_in_one_task_keep_order_and_go_inline,
    blocking_receives_go_inline_too,
    requests_from_one_task_get_their_replies,
    abandoned_receives_lose_nothing,
    a_peer_leaving_while_a_receiver_waits_is_noticed
);
