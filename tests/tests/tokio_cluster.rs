//! Clustering over real TCP and real rustls mutual TLS on 127.0.0.1, on the
//! tokio adapter: messaging, ordering, address round trips, hostile peers,
//! head-of-line blocking, peer loss and clean shutdown.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use reign_proto::codec::Frame;
use reign_proto::handshake::Hello;
use reign_tests::raw_peer::{closes_within, ClientAuth, RawPeer, SilentPeer};
use reign_tests::{
    capture_logs, eventually, logged, recv_as, shutdown_all, start_on_own_runtime, tokio_runtime,
    TestCluster,
};
use reign_tokio::{Address, MailboxExt, Node, NodeId, SendError, Tuning};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_messages_in_every_direction() {
    capture_logs();
    let cluster = TestCluster::new(3);
    let nodes = cluster.start_all(WAIT).await;
    let boxes: Vec<_> = nodes.iter().map(|n| n.new_mailbox()).collect();
    for from in &nodes {
        for (to, (addr, _)) in nodes.iter().zip(&boxes) {
            from.address_of(addr.id())
                .send(format!("{}->{}", from.id().0, to.id().0))
                .unwrap();
        }
    }
    for (to, (_, mailbox)) in nodes.iter().zip(&boxes) {
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(recv_as::<String>(mailbox, WAIT).await);
        }
        got.sort();
        let want: Vec<String> = nodes
            .iter()
            .map(|f| format!("{}->{}", f.id().0, to.id().0))
            .collect();
        assert_eq!(got, want);
    }
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_arrive_complete_and_in_order() {
    capture_logs();
    let cluster = TestCluster::new(2);
    let nodes = cluster.start_all(WAIT).await;
    let (addr, mailbox) = nodes[1].new_mailbox();
    let remote = nodes[0].address_of(addr.id());
    for i in 0..10_000u64 {
        remote.send(i).unwrap();
    }
    for i in 0..10_000u64 {
        let got = recv_as::<u64>(&mailbox, WAIT).await;
        assert_eq!(got, i);
    }
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_sent_away_and_back_reaches_its_mailbox() {
    capture_logs();
    let cluster = TestCluster::new(2);
    let nodes = cluster.start_all(WAIT).await;
    let (home, home_box) = nodes[0].new_mailbox();
    let (echo, echo_box) = nodes[1].new_mailbox();
    nodes[0].address_of(echo.id()).send(home.clone()).unwrap();
    let back: Address = recv_as(&echo_box, WAIT).await;
    assert_eq!(back, home);
    back.send(String::from("back home")).unwrap();
    let msg = home_box.recv_timeout(WAIT).await.unwrap();
    assert_eq!(msg.downcast::<String>().unwrap(), "back home");
    shutdown_all(&nodes).await;
}

/// Checks that node 0 still serves node 1 after a hostile connection.
async fn still_serving(nodes: &[Node]) {
    assert!(nodes[0].is_connected(NodeId(1)));
    let (addr, mailbox) = nodes[0].new_mailbox();
    nodes[1].address_of(addr.id()).send(1u32).unwrap();
    assert_eq!(recv_as::<u32>(&mailbox, WAIT).await, 1);
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_close_only_their_own_connection() {
    capture_logs();
    // Node 2 is in the spec but never runs: the raw peer plays it.
    let cluster = TestCluster::new(3);
    let nodes = vec![
        Node::start(&cluster.spec(NodeId(0)), NodeId(0))
            .await
            .unwrap(),
        Node::start(&cluster.spec(NodeId(1)), NodeId(1))
            .await
            .unwrap(),
    ];
    assert!(nodes[0].wait_for_peers(&[NodeId(1)], WAIT).await);
    let target = cluster.address(NodeId(0)).to_owned();
    let ca_pem = cluster.ca.cert_pem().to_owned();

    // 1. A certificate from another CA: TLS refuses it.
    let other = TestCluster::new(3);
    let (addr, ca, cert) = (target.clone(), ca_pem.clone(), other.cert(NodeId(2)));
    let result = blocking(move || {
        RawPeer::connect(&addr, NodeId(0), &ca, ClientAuth::Cert(&cert))
            .map(|mut p| p.read_until_closed(Duration::from_secs(2)).1)
    })
    .await;
    assert!(
        matches!(result, Err(_) | Ok(true)),
        "foreign certificate accepted"
    );
    // Refusals are logged at DEBUG and summarised per cause every 10 s.
    assert!(eventually(WAIT * 2, || logged(&[
        "inbound connections refused",
        "from another CA"
    ])));
    still_serving(&nodes).await;

    // 2. No client certificate at all.
    let (addr, ca) = (target.clone(), ca_pem.clone());
    let result = blocking(move || {
        RawPeer::connect(&addr, NodeId(0), &ca, ClientAuth::None)
            .map(|mut p| p.read_until_closed(Duration::from_secs(2)).1)
    })
    .await;
    assert!(
        matches!(result, Err(_) | Ok(true)),
        "anonymous client accepted"
    );
    still_serving(&nodes).await;

    // 3. A valid certificate for node 2 used by a peer claiming to be node 1.
    let (addr, ca, cert) = (target.clone(), ca_pem.clone(), cluster.cert(NodeId(2)));
    let (frames, closed) = blocking(move || {
        let mut peer = RawPeer::connect(&addr, NodeId(0), &ca, ClientAuth::Cert(&cert)).unwrap();
        peer.send_frame(&Frame::Hello(
            RawPeer::hello(NodeId(1), NodeId(0), &ca).to_frame_body(),
        ))
        .unwrap();
        peer.read_until_closed(Duration::from_secs(3))
    })
    .await;
    assert!(closed, "impostor not disconnected");
    assert!(
        matches!(frames.first(), Some(Frame::Goodbye(_))),
        "{frames:?}"
    );
    assert!(eventually(WAIT * 2, || logged(&[
        "inbound connections refused",
        "claiming a node their certificate does not name"
    ])));
    still_serving(&nodes).await;

    // 4. A protocol version mismatch.
    let (addr, ca, cert) = (target.clone(), ca_pem.clone(), cluster.cert(NodeId(2)));
    let closed = blocking(move || {
        let mut peer = RawPeer::connect(&addr, NodeId(0), &ca, ClientAuth::Cert(&cert)).unwrap();
        let hello = Hello {
            version: 999,
            ..RawPeer::hello(NodeId(2), NodeId(0), &ca)
        };
        peer.send_frame(&Frame::Hello(hello.to_frame_body()))
            .unwrap();
        peer.read_until_closed(Duration::from_secs(3)).1
    })
    .await;
    assert!(closed);
    assert!(eventually(WAIT * 2, || logged(&[
        "inbound connections refused",
        "speaking another protocol version"
    ])));
    still_serving(&nodes).await;

    // 5. Plain TCP garbage.
    let addr = target.clone();
    let closed = blocking(move || {
        let mut sock = TcpStream::connect(&addr).unwrap();
        std::io::Write::write_all(
            &mut sock,
            &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8],
        )
        .unwrap();
        std::io::Write::write_all(&mut sock, b"definitely not TLS\r\n\r\n").unwrap();
        closes_within(&mut sock, Duration::from_secs(5))
    })
    .await;
    assert!(closed, "garbage connection left open");
    still_serving(&nodes).await;

    // 6. A frame larger than the maximum, after a valid handshake.
    let (addr, ca, cert) = (target.clone(), ca_pem.clone(), cluster.cert(NodeId(2)));
    let closed = blocking(move || {
        let mut peer = RawPeer::admitted(
            &addr,
            NodeId(2),
            NodeId(0),
            &ca,
            &cert,
            Duration::from_secs(3),
        );
        peer.send_raw(&(64u32 << 20).to_le_bytes()).unwrap();
        peer.send_raw(&[4u8; 1024]).unwrap();
        peer.read_until_closed(Duration::from_secs(3)).1
    })
    .await;
    assert!(closed, "oversized frame did not close the connection");
    assert!(eventually(WAIT, || logged(&["exceeds the maximum"])));
    still_serving(&nodes).await;

    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_hits_the_outbound_bound() {
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
    // Node 1 is a raw peer (`SilentPeer`) that completes the handshake and then never reads.
    let peer = SilentPeer::admitted(&cluster);
    assert!(node.wait_for_peers(&[NodeId(1)], WAIT).await);
    let mut id = node.new_mailbox().0.id();
    id.node = NodeId(1);
    let remote = node.address_of(id);
    let payload = serde_bytes::ByteBuf::from(vec![0u8; 4000]);
    let mut full = 0;
    let mut sent = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while full < 100 && Instant::now() < deadline {
        match remote.send(payload.clone()) {
            Ok(()) => sent += 1,
            Err(SendError::Full) => {
                full += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(full >= 100, "the outbound queue never filled ({sent} sent)");
    let stats = node
        .peer_stats()
        .into_iter()
        .find(|s| s.node == NodeId(1))
        .unwrap();
    assert!(
        stats.queued_bytes as usize <= tuning.outbound_queue_bytes + 4100,
        "queue holds {} bytes",
        stats.queued_bytes
    );
    assert!(stats.dropped_full >= 100);
    drop(peer);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_does_not_block_small_ones_or_pings() {
    capture_logs();
    let cluster = TestCluster::new(2);
    let nodes = cluster.start_all(WAIT).await;
    let (big, big_box) = nodes[1].new_mailbox();
    let (small, small_box) = nodes[1].new_mailbox();
    let payload = serde_bytes::ByteBuf::from(vec![0xabu8; 64 << 20]);
    let sender = nodes[0].clone();
    let big_id = big.id();
    let small_id = small.id();
    tokio::task::spawn_blocking(move || {
        sender.address_of(big_id).send(payload).unwrap();
        sender
            .address_of(small_id)
            .send(String::from("small"))
            .unwrap();
    })
    .await
    .unwrap();
    let small_msg = small_box
        .recv_timeout(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(small_msg.downcast::<String>().unwrap(), "small");
    assert_eq!(
        big_box.message_count(),
        0,
        "the large message completed first"
    );
    let big_msg = big_box.recv_timeout(Duration::from_secs(60)).await.unwrap();
    let got: serde_bytes::ByteBuf = big_msg.downcast().unwrap();
    assert_eq!(got.len(), 64 << 20);
    assert!(got.iter().all(|&b| b == 0xab));
    // Pings flowed throughout: the connection never dropped.
    let stats = nodes[0]
        .peer_stats()
        .into_iter()
        .find(|s| s.node == NodeId(1))
        .unwrap();
    assert_eq!(stats.disconnects, 0);
    assert!(nodes[0].is_connected(NodeId(1)));
    shutdown_all(&nodes).await;
}

#[test]
fn peer_loss_is_detected_and_the_peer_reconnects_when_it_returns() {
    capture_logs();
    let cluster = TestCluster::new(3);
    let main_rt = tokio_runtime(2);
    let spec2 = cluster.spec(NodeId(2));
    let (rt2, node2) = start_on_own_runtime(&spec2, NodeId(2));
    main_rt.block_on(async {
        let n0 = Node::start(&cluster.spec(NodeId(0)), NodeId(0))
            .await
            .unwrap();
        let n1 = Node::start(&cluster.spec(NodeId(1)), NodeId(1))
            .await
            .unwrap();
        assert!(n0.wait_for_peers(&[NodeId(1), NodeId(2)], WAIT).await);
        assert!(n1.wait_for_peers(&[NodeId(0), NodeId(2)], WAIT).await);

        // Kill node 2's runtime: its tasks and sockets vanish at once.
        drop(node2);
        rt2.shutdown_background();
        let started = Instant::now();
        let detection = Tuning::fast().ping_interval * (Tuning::fast().max_ping_failures + 2);
        assert!(n0.wait_for_disconnect(NodeId(2), detection).await);
        assert!(n1.wait_for_disconnect(NodeId(2), detection).await);
        eprintln!("node 2's loss detected after {:?}", started.elapsed());
        assert!(n0.is_connected(NodeId(1)));

        // Node 2 comes back: everyone reconnects.
        let (rt2b, node2b) =
            tokio::task::spawn_blocking(move || start_on_own_runtime(&spec2, NodeId(2)))
                .await
                .unwrap();
        assert!(n0.wait_for_peers(&[NodeId(2)], WAIT).await);
        assert!(n1.wait_for_peers(&[NodeId(2)], WAIT).await);
        let (addr, mailbox) = n0.new_mailbox();
        node2b.address_of(addr.id()).send(2u8).unwrap();
        assert_eq!(recv_as::<u8>(&mailbox, WAIT).await, 2);
        n0.shutdown().await;
        n1.shutdown().await;
        let _ = tokio::task::spawn_blocking(move || {
            rt2b.block_on(node2b.shutdown());
        })
        .await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_closed_and_the_node_keeps_serving() {
    capture_logs();
    let tuning = Tuning {
        handshake_timeout: Duration::from_millis(300),
        ..Tuning::fast()
    };
    let cluster = TestCluster::with_tuning(2, tuning);
    let nodes = cluster.start_all(WAIT).await;
    let addr = cluster.address(NodeId(0)).to_owned();
    let closed = blocking(move || {
        let mut sock = TcpStream::connect(&addr).unwrap();
        // Half a TLS record header, then silence.
        std::io::Write::write_all(&mut sock, &[0x16, 0x03]).unwrap();
        let started = Instant::now();
        let closed = closes_within(&mut sock, Duration::from_secs(5));
        (closed, started.elapsed())
    })
    .await;
    assert!(closed.0, "slow loris connection left open");
    assert!(
        closed.1 < Duration::from_secs(3),
        "closed after {:?}",
        closed.1
    );
    still_serving(&nodes).await;
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_everything_and_frees_the_port() {
    capture_logs();
    let cluster = TestCluster::new(2);
    let nodes = cluster.start_all(WAIT).await;
    let (addr, mailbox) = nodes[0].new_mailbox();
    let port_addr = nodes[0].local_addr().unwrap();
    nodes[0].shutdown().await;
    nodes[0].shutdown().await; // idempotent
    assert!(mailbox.is_closed());
    assert_eq!(addr.send(1u8), Err(SendError::Closed));
    assert!(nodes[1].wait_for_disconnect(NodeId(0), WAIT).await);
    // Every task ended and dropped its socket: the port binds again.
    let rebound = tokio::net::TcpListener::bind(port_addr).await;
    assert!(rebound.is_ok(), "port still held: {rebound:?}");
    assert!(logged(&["peer said goodbye", "node shutting down"]));
    nodes[1].shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn local_only_nodes_open_no_socket() {
    let node = Node::local();
    assert!(node.local_addr().is_none());
    let (addr, mailbox) = node.new_mailbox();
    addr.send(5i64).unwrap();
    assert_eq!(recv_as::<i64>(&mailbox, WAIT).await, 5);
    assert_eq!(
        mailbox
            .recv_timeout(Duration::from_millis(20))
            .await
            .unwrap_err(),
        reign_tokio::RecvError::Timeout
    );
    node.shutdown().await;
    assert!(mailbox.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_pings_but_never_reads_is_disconnected() {
    capture_logs();
    let cluster = TestCluster::new(2);
    let node = Node::start(&cluster.spec(NodeId(0)), NodeId(0))
        .await
        .unwrap();
    let (addr, ca, cert) = (
        cluster.address(NodeId(0)).to_owned(),
        cluster.ca.cert_pem().to_owned(),
        cluster.cert(NodeId(1)),
    );
    let outcome = blocking(move || {
        let mut peer = RawPeer::admitted(
            &addr,
            NodeId(1),
            NodeId(0),
            &ca,
            &cert,
            Duration::from_secs(5),
        );
        // Ask for pongs forever, never reading one: 64k pings per write.
        let mut batch = Vec::new();
        for nonce in 0..65_536u64 {
            Frame::Ping(nonce).encode(&mut batch);
        }
        let started = Instant::now();
        let mut sent = 0usize;
        while started.elapsed() < Duration::from_secs(60) {
            if peer.send_raw(&batch).is_err() {
                return Some(sent);
            }
            sent += batch.len();
        }
        None
    })
    .await;
    let sent = outcome.expect("the node never closed a peer that does not read");
    assert!(eventually(WAIT, || logged(&["the peer does not read"])));
    eprintln!(
        "disconnected after the peer sent {} MB of pings",
        sent >> 20
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_does_not_read_pushes_back_and_loses_nothing() {
    capture_logs();
    // One slow mailbox is held to its own share (see edges_link.rs); the
    // link pauses only when many together hold the node's last-resort
    // bound: eight mailboxes, each under its 1 MiB share, reach 4 MiB.
    let tuning = Tuning {
        max_unread_bytes: 4 << 20,
        outbound_queue_bytes: 2 << 20,
        mailbox_unread_bytes: 1 << 20,
        max_message_len: 1 << 20,
        ..Tuning::fast()
    };
    reign_tokio::register_type::<(u64, serde_bytes::ByteBuf)>().unwrap();
    let cluster = TestCluster::with_tuning(2, tuning.clone());
    let nodes = cluster.start_all(WAIT).await;
    let boxes: Vec<_> = (0..8).map(|_| nodes[1].new_mailbox()).collect();
    let remotes: Vec<Address> = boxes
        .iter()
        .map(|(addr, _)| nodes[0].address_of(addr.id()))
        .collect();
    let payload = serde_bytes::ByteBuf::from(vec![3u8; 1000]);
    let (status_addr, status) = nodes[1].new_mailbox();
    nodes[1].subscribe_connection_status(&status_addr);
    // Send until the pushback reaches the sender: its queue fills.
    let mut sent = 0u64;
    let mut full = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while full < 50 && Instant::now() < deadline {
        match remotes[(sent % 8) as usize].send((sent, payload.clone())) {
            Ok(()) => sent += 1,
            Err(SendError::Full) => {
                full += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        full >= 50,
        "the sender never felt the pushback ({sent} sent)"
    );
    // The receiver holds no more than its budget (plus what was in flight).
    let unread = nodes[1]
        .peer_stats()
        .into_iter()
        .find(|s| s.node == NodeId(0))
        .unwrap()
        .unread_bytes;
    assert!(
        unread as usize <= tuning.max_unread_bytes + (2 << 20),
        "{unread} bytes unread"
    );
    // A paused reader cannot see its peer's pongs; that must not count as
    // missed pings on either side, however long the application dawdles.
    let silence = tuning.ping_interval * (tuning.max_ping_failures + 3);
    tokio::time::sleep(silence.max(tuning.read_deadline + Duration::from_millis(500))).await;
    assert!(nodes[0].is_connected(NodeId(1)));
    assert!(nodes[1].is_connected(NodeId(0)));
    assert!(
        matches!(status.try_recv(), Ok(None)),
        "a paused connection was declared down"
    );
    // Reading resumes the flow; every message arrives, in order.
    for i in 0..sent {
        let (n, _): (u64, serde_bytes::ByteBuf) = boxes[(i % 8) as usize]
            .1
            .recv_timeout(WAIT)
            .await
            .unwrap()
            .downcast()
            .unwrap();
        assert_eq!(n, i);
    }
    assert_eq!(nodes[1].stats().dropped_full, 0);
    assert_eq!(nodes[1].stats().dropped_unread_share, 0);
    shutdown_all(&nodes).await;
}
