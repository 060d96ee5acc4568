//! The edges of tunnels (issue 15, items 1 and 4) between two nodes over
//! real TCP and mutual TLS (tokio): messages of every size around the credit
//! window and `max_message_len` pass (or fail at once), and every tunnel
//! operation a caller abandons (a send, a receive, an open; by a timeout or
//! by dropping its future inside a `select!`) gives back everything it held:
//! credit, buffered bytes, and the tunnel table entries on both nodes. A
//! raw peer that sends beyond its credit loses its tunnel, not its link.

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reign_proto::codec::frame::{TunnelOp, TUNNEL_LAST};
use reign_proto::codec::Frame;
use reign_tests::raw_peer::RawPeer;
use reign_tests::{capture_logs, shutdown_all, start_connected, sync_all, TestCluster};
use reign_tokio::{Mailbox, Node, NodeId, Tuning, Tunnel, TunnelError};

/// Generous: nothing here should take more than a fraction of it.
const WAIT: Duration = Duration::from_secs(60);

/// Two nodes with `tuning`, node 1 with `max_message_len` overridden when
/// given (a node may differ from its peer).
async fn pair_of_nodes(tuning: Tuning, node1_max: Option<usize>) -> Vec<Node> {
    capture_logs();
    let cluster = TestCluster::with_tuning(2, tuning);
    let specs = (0..2).map(|i| {
        let mut spec = cluster.spec(NodeId(i));
        if let (1, Some(max)) = (i, node1_max) {
            spec.tuning.max_message_len = max;
        }
        (NodeId(i), spec)
    });
    let nodes = start_connected::<reign_tokio::Tokio>(specs, WAIT).await;
    nodes.into_iter().map(Node::from).collect()
}

/// Node 1 gets a member of "svc"; returns its mailbox once node 0 sees it.
async fn member(nodes: &[Node]) -> Mailbox {
    let (m, m_box) = nodes[1].new_mailbox();
    nodes[1].join("svc", &m).unwrap();
    sync_all(nodes, WAIT).await;
    m_box
}

/// An open tunnel from node 0 (client) to the member on node 1 (server).
async fn open(nodes: &[Node]) -> (Tunnel, Tunnel, Mailbox) {
    let m_box = member(nodes).await;
    let (client, server) = accepted(nodes, &m_box).await;
    (client, server, m_box)
}

/// Node 0 opens a tunnel to "svc" while the member on node 1 accepts it.
async fn accepted(nodes: &[Node], m_box: &Mailbox) -> (Tunnel, Tunnel) {
    let accept = async {
        let incoming = m_box.recv_tunnel().await.unwrap();
        nodes[1].accept_tunnel(incoming).unwrap()
    };
    let (client, server) = tokio::join!(nodes[0].tunnel("svc", WAIT), accept);
    (client.unwrap(), server)
}

/// Polls `cond` every 5 ms until it holds or `WAIT` passes.
async fn until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

/// A message whose bytes depend on its length and position, so a piece lost,
/// doubled or taken from another message shows.
fn message(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ len) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Sends `len` bytes from `from` while `to` receives; checks the bytes and
/// returns how long it took.
async fn through(from: &Tunnel, to: &Tunnel, len: usize) -> Duration {
    let sent = message(len);
    let start = Instant::now();
    let (send, received) = tokio::join!(from.send(sent.clone(), WAIT), to.recv(WAIT));
    send.unwrap_or_else(|e| panic!("sending {len} bytes: {e}"));
    let received = received.unwrap_or_else(|e| panic!("receiving {len} bytes: {e}"));
    let took = start.elapsed();
    assert_eq!(received.len(), len);
    assert!(received == sent, "{len} bytes arrived changed");
    took
}

/// Sizes around `window` and well over it, both ways, through a window of
/// `window` bytes, then a small message to show the tunnel still works.
async fn sizes_around(window: usize, over: usize) {
    let tuning = Tuning {
        tunnel_window: window,
        ..Tuning::fast()
    };
    let nodes = pair_of_nodes(tuning, None).await;
    let (client, server, _m_box) = open(&nodes).await;
    assert_eq!(client.inner().window(), window);
    for len in [0, 1, window - 1, window, window + 1, over] {
        let there = through(&client, &server, len).await;
        let back = through(&server, &client, len).await;
        println!("window {window}: {len} bytes there in {there:?}, back in {back:?}");
        assert!(client.inner().unacknowledged_bytes() <= window);
        assert!(server.inner().unacknowledged_bytes() <= window);
    }
    through(&client, &server, 8).await;
    assert_eq!(server.inner().buffered_bytes(), 0);
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_around_the_default_window_pass_both_ways() {
    sizes_around(1 << 20, 3 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_around_a_64_kib_window_pass_both_ways() {
    sizes_around(64 << 10, 1 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_smaller_than_a_piece_still_carries_large_messages() {
    sizes_around(1000, 200_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_through_the_default_window() {
    let nodes = pair_of_nodes(Tuning::fast(), None).await;
    let (client, server, _m_box) = open(&nodes).await;
    assert_eq!(client.inner().window(), 1 << 20);
    let took = through(&client, &server, 16 << 20).await;
    println!("16 MiB through a 1 MiB window: {took:?}");
    // A small message right behind it still arrives.
    through(&client, &server, 8).await;
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_through_a_64_kib_window() {
    let tuning = Tuning {
        tunnel_window: 64 << 10,
        ..Tuning::fast()
    };
    let nodes = pair_of_nodes(tuning, None).await;
    let (client, server, _m_box) = open(&nodes).await;
    let took = through(&client, &server, 10 << 20).await;
    println!("10 MiB through a 64 KiB window: {took:?}");
    shutdown_all(nodes).await;
}

/// Exactly `max_message_len` passes through the default 1 MiB window; one
/// byte more fails at once (first poll, no credit needed) with `TooLarge`,
/// sends nothing, and leaves the tunnel usable.
async fn exactly_max_and_one_more(max: usize) {
    let tuning = Tuning {
        max_message_len: max,
        ..Tuning::fast()
    };
    let nodes = pair_of_nodes(tuning, None).await;
    let (client, server, _m_box) = open(&nodes).await;
    let took = through(&client, &server, max).await;
    println!("max_message_len ({max} bytes) through a 1 MiB window: {took:?}");

    let over = message(max + 1);
    let mut send = std::pin::pin!(client.inner().send(over.clone()));
    assert_eq!(
        send.as_mut().poll(&mut Context::from_waker(Waker::noop())),
        Poll::Ready(Err(TunnelError::TooLarge { len: max + 1, max }))
    );
    let start = Instant::now();
    let err = client.send(over, WAIT).await.unwrap_err();
    assert_eq!(err, TunnelError::TooLarge { len: max + 1, max });
    assert!(
        start.elapsed() < WAIT / 2,
        "TooLarge took {:?}",
        start.elapsed()
    );
    println!("max_message_len + 1 refused in {:?}", start.elapsed());
    // Nothing of it travelled: the next message is the next one received.
    through(&client, &server, 8).await;
    through(&server, &client, max).await;
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_a_small_max_message_len_passes_and_one_byte_more_fails_at_once() {
    exactly_max_and_one_more(3 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_default_max_message_len_passes_and_one_byte_more_fails_at_once() {
    exactly_max_and_one_more(Tuning::default().max_message_len).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_receivers_max_closes_the_tunnel_as_a_protocol_violation() {
    // Node 1 accepts at most 2 MiB, node 0 sends up to 128 MiB.
    let nodes = pair_of_nodes(Tuning::fast(), Some(2 << 20)).await;
    let (client, server, _m_box) = open(&nodes).await;
    through(&client, &server, 2 << 20).await;
    let (send, received) = tokio::join!(client.send(message(3 << 20), WAIT), server.recv(WAIT));
    let err = received.unwrap_err();
    assert!(
        matches!(&err, TunnelError::Protocol(e) if e.contains("more than 2097152 bytes")),
        "{err}"
    );
    // The sender learns it from the close, whether or not its send finished.
    let send_err = match send {
        Err(e) => e,
        Ok(()) => client.recv(WAIT).await.unwrap_err(),
    };
    assert!(
        matches!(&send_err, TunnelError::Remote(e) if e.contains("protocol violation")),
        "{send_err}"
    );
    assert!(until(|| nodes[0].tunnel_count() == 0 && nodes[1].tunnel_count() == 0).await);
    shutdown_all(nodes).await;
}

/// After a send is abandoned part way, every byte of credit comes back to
/// the sender and nothing stays buffered at the receiver.
async fn credit_all_back(client: &Tunnel, server: &Tunnel) {
    assert!(
        until(|| client.inner().unacknowledged_bytes() == 0).await,
        "{} bytes of credit never came back",
        client.inner().unacknowledged_bytes()
    );
    assert!(until(|| server.inner().buffered_bytes() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_64_mib_sends_abandoned_by_a_10_ms_timeout_leave_the_tunnel_usable() {
    let nodes = pair_of_nodes(Tuning::fast(), None).await;
    let (client, server, _m_box) = open(&nodes).await;
    let big = message(64 << 20);
    for _ in 0..10 {
        let err = client
            .send(big.clone(), Duration::from_millis(10))
            .await
            .unwrap_err();
        assert_eq!(err, TunnelError::Timeout);
    }
    let start = Instant::now();
    client.send(&b"8 bytes!"[..], WAIT).await.unwrap();
    println!(
        "8-byte send after ten abandoned ones: {:?}",
        start.elapsed()
    );
    // The receiver got none of the abandoned pieces: the 8 bytes come first.
    assert_eq!(&server.recv(WAIT).await.unwrap()[..], b"8 bytes!");
    assert_eq!(server.inner().buffered_bytes(), 0);
    // Every abandoned byte was credited back: only the 8 bytes (less than
    // a lump of a quarter window) may still be charged.
    assert!(until(|| client.inner().unacknowledged_bytes() <= 8).await);
    // And the whole window is there again: a full window and more passes.
    through(&client, &server, (1 << 20) + 1).await;
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_dropped_inside_select_gives_its_credit_back() {
    let nodes = pair_of_nodes(Tuning::fast(), None).await;
    let (client, server, _m_box) = open(&nodes).await;
    let big = message(32 << 20);
    for _ in 0..5 {
        tokio::select! {
            biased;
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            result = client.inner().send(big.clone()) => {
                panic!("32 MiB with nobody reading finished in 5 ms: {result:?}")
            }
        }
    }
    credit_all_back(&client, &server).await;
    through(&client, &server, 3 << 20).await;
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_dropped_while_waiting_for_credit_gives_it_back() {
    let tuning = Tuning {
        tunnel_window: 64 << 10,
        ..Tuning::fast()
    };
    let nodes = pair_of_nodes(tuning, None).await;
    let (client, server, _m_box) = open(&nodes).await;
    // Fill the receiver: two complete messages nobody reads hold the window.
    client.send(message(40 << 10), WAIT).await.unwrap();
    client.send(message(24 << 10), WAIT).await.unwrap();
    // No credit left: this one waits, then gives up before sending a byte.
    let err = client
        .send(message(1 << 20), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err, TunnelError::Timeout);
    assert_eq!(server.recv(WAIT).await.unwrap(), message(40 << 10));
    assert_eq!(server.recv(WAIT).await.unwrap(), message(24 << 10));
    assert!(until(|| client.inner().unacknowledged_bytes() < (64 << 10) / 4).await);
    assert_eq!(server.inner().buffered_bytes(), 0);
    through(&client, &server, 1 << 20).await;
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_receives_lose_nothing_and_hold_nothing() {
    let nodes = pair_of_nodes(Tuning::fast(), None).await;
    let (client, server, _m_box) = open(&nodes).await;
    // Timed out with nothing sent.
    assert_eq!(
        server.recv(Duration::from_millis(10)).await.unwrap_err(),
        TunnelError::Timeout
    );
    // Dropped inside a select! again and again while a 6 MiB message (six
    // windows) is half received, then a small one behind it.
    let big = message(6 << 20);
    let sender = async {
        client.send(big.clone(), WAIT).await.unwrap();
        client.send(&b"after"[..], WAIT).await.unwrap();
    };
    let receiver = async {
        let mut dropped = 0;
        loop {
            tokio::select! {
                biased;
                received = server.inner().recv() => return (received.unwrap(), dropped),
                _ = tokio::time::sleep(Duration::from_micros(200)) => dropped += 1,
            }
        }
    };
    let ((), (received, dropped)) = tokio::join!(sender, receiver);
    println!("{dropped} receives dropped while 6 MiB arrived");
    assert!(received == big);
    assert_eq!(&server.recv(WAIT).await.unwrap()[..], b"after");
    assert_eq!(server.inner().buffered_bytes(), 0);
    // What is not credited back is less than one lump (a quarter window).
    assert!(until(|| client.inner().unacknowledged_bytes() < (1 << 20) / 4).await);
    assert!(until(|| nodes[0].tunnel_count() == 1 && nodes[1].tunnel_count() == 1).await);
    shutdown_all(nodes).await;
}

/// The open given up on left no entry on either node, and the offer still
/// in the member's mailbox can no longer be accepted.
async fn open_given_up(nodes: &[Node], m_box: &Mailbox) {
    assert!(
        until(|| nodes[0].tunnel_count() == 0 && nodes[1].tunnel_count() == 0).await,
        "tunnel entries left: {} on node 0, {} on node 1",
        nodes[0].tunnel_count(),
        nodes[1].tunnel_count()
    );
    let incoming = tokio::time::timeout(WAIT, m_box.recv_tunnel())
        .await
        .unwrap()
        .unwrap();
    let err = nodes[1].accept_tunnel(incoming).unwrap_err();
    assert!(
        matches!(&err, TunnelError::Remote(e) if e.contains("stopped waiting")),
        "{err}"
    );
    assert_eq!(nodes[0].tunnel_count(), 0);
    assert_eq!(nodes[1].tunnel_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_timed_out_before_the_member_accepts_leaves_nothing_behind() {
    let nodes = pair_of_nodes(Tuning::fast(), None).await;
    let m_box = member(&nodes).await;
    let err = nodes[0]
        .tunnel("svc", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err, TunnelError::Timeout);
    open_given_up(&nodes, &m_box).await;
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_dropped_inside_select_leaves_nothing_behind() {
    let nodes = pair_of_nodes(Tuning::fast(), None).await;
    let m_box = member(&nodes).await;
    tokio::select! {
        biased;
        result = nodes[0].open_tunnel("svc") => panic!("nobody accepted: {result:?}"),
        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
    }
    open_given_up(&nodes, &m_box).await;
    // The member is fine: the next open is accepted.
    let (client, server) = accepted(&nodes, &m_box).await;
    through(&client, &server, 8).await;
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_dropped_after_the_member_accepted_closes_both_ends() {
    let nodes = pair_of_nodes(Tuning::fast(), None).await;
    let m_box = member(&nodes).await;
    let mut opening = Box::pin(nodes[0].open_tunnel("svc"));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(opening.as_mut().poll(&mut cx).is_pending());
    // The member accepts; the opener is told, but never looks again.
    let incoming = tokio::time::timeout(WAIT, m_box.recv_tunnel())
        .await
        .unwrap()
        .unwrap();
    let server = nodes[1].accept_tunnel(incoming).unwrap();
    server.send(&b"for nobody"[..], WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(opening);
    let err = server.recv(WAIT).await.unwrap_err();
    assert!(
        matches!(&err, TunnelError::Remote(e) if e.contains("stopped waiting")),
        "{err}"
    );
    assert!(
        until(|| nodes[0].tunnel_count() == 0 && nodes[1].tunnel_count() == 0).await,
        "tunnel entries left: {} on node 0, {} on node 1",
        nodes[0].tunnel_count(),
        nodes[1].tunnel_count()
    );
    assert!(server.send(&b"late"[..], WAIT).await.is_err());
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_beyond_its_credit_loses_the_tunnel_not_the_link() {
    capture_logs();
    let cluster = TestCluster::new(2);
    let node = Node::start(&cluster.spec(NodeId(0)), NodeId(0))
        .await
        .unwrap();
    let (m, m_box) = node.new_mailbox();
    let dest = m.id();
    let (addr, ca, cert) = (
        cluster.address(NodeId(0)).to_owned(),
        cluster.ca.cert_pem().to_owned(),
        cluster.cert(NodeId(1)),
    );
    // The raw peer is node 1: it opens a tunnel to the member, sends one
    // small message (which the member leaves unread, so no credit comes
    // back) and then more than its window of a second message.
    let peer = tokio::task::spawn_blocking(move || {
        let mut peer = RawPeer::admitted(&addr, NodeId(1), NodeId(0), &ca, &cert, WAIT);
        let tunnel = |op| Frame::Tunnel {
            id: 1,
            from_opener: true,
            op,
        };
        peer.send_frame(&tunnel(TunnelOp::Open {
            dest,
            credit: 1 << 20,
        }))
        .unwrap();
        let window = loop {
            match peer.next_frame(WAIT).expect("an answer to the open") {
                Frame::Tunnel {
                    op: TunnelOp::Accept { credit },
                    ..
                } => break credit as usize,
                _ => continue,
            }
        };
        peer.send_frame(&tunnel(TunnelOp::Data {
            flags: TUNNEL_LAST,
            chunk: Bytes::from(vec![1u8; 1000]),
        }))
        .unwrap();
        for _ in 0..window.div_ceil(64 << 10) {
            peer.send_frame(&tunnel(TunnelOp::Data {
                flags: 0,
                chunk: Bytes::from(vec![2u8; 64 << 10]),
            }))
            .unwrap();
        }
        // The node answers over the same, still open, connection.
        loop {
            match peer.next_frame(WAIT).expect("the tunnel's close") {
                Frame::Tunnel {
                    op: TunnelOp::Close { reason },
                    ..
                } => return String::from_utf8_lossy(&reason).into_owned(),
                Frame::Tunnel {
                    op: TunnelOp::Credit { bytes },
                    ..
                } => panic!("{bytes} bytes credited with a message unread"),
                _ => continue,
            }
        }
    });
    let incoming = tokio::time::timeout(WAIT, m_box.recv_tunnel())
        .await
        .unwrap()
        .unwrap();
    let server = node.accept_tunnel(incoming).unwrap();
    let reason = peer.await.unwrap();
    assert!(
        reason.contains("protocol violation: data beyond the 1048576 byte credit window"),
        "{reason}"
    );
    // What arrived within the credit is still delivered, then the error.
    assert_eq!(server.recv(WAIT).await.unwrap(), vec![1u8; 1000]);
    let err = server.recv(WAIT).await.unwrap_err();
    assert!(
        matches!(&err, TunnelError::Protocol(e) if e.contains("beyond")),
        "{err}"
    );
    assert_eq!(server.inner().buffered_bytes(), 0);
    assert_eq!(node.tunnel_count(), 0);
    node.shutdown().await;
}
