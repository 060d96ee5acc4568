//! One conformance suite, written once, run on every runtime: tokio,
//! async-std and smol. Real TCP and TLS on 127.0.0.1.

use std::time::Duration;

use reign_driver::{recv_timeout, Reign, Runtime};
use reign_proto::{Address, ExitReason, MailboxClosed, Message, NodeId, SendError};
use reign_tests::{recv_on, TestCluster};

const WAIT: Duration = Duration::from_secs(10);

async fn local_messaging<R: Runtime + Default>() {
    let node = Reign::<R>::local();
    let (addr, mailbox) = node.new_mailbox();
    addr.send(String::from("first")).unwrap();
    addr.send(7u32).unwrap();
    // Selective receive leaves the string queued.
    let n = mailbox.recv_match(Message::is::<u32>).await.unwrap();
    assert_eq!(n.downcast::<u32>().unwrap(), 7);
    assert_eq!(recv_on::<R, String>(&mailbox, WAIT).await, "first");
    assert!(
        recv_timeout(&R::default(), &mailbox, Duration::from_millis(20))
            .await
            .is_err()
    );
    // Close notification.
    let (watcher, watcher_box) = node.new_mailbox();
    addr.on_close_notify(&watcher);
    mailbox.close();
    assert_eq!(
        recv_on::<R, MailboxClosed>(&watcher_box, WAIT).await,
        MailboxClosed {
            id: addr.id(),
            reason: ExitReason::Closed
        }
    );
    assert_eq!(addr.send(1u8), Err(SendError::Closed));
    node.shutdown().await;
}

async fn remote_send_keeps_order<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b) = cluster.pair_on::<R>(WAIT).await;
    let (addr, mailbox) = b.new_mailbox();
    let remote = a.address_of(addr.id());
    for i in 0..2_000u64 {
        remote.send(i).unwrap();
    }
    for i in 0..2_000u64 {
        assert_eq!(recv_on::<R, u64>(&mailbox, WAIT).await, i);
    }
    a.shutdown().await;
    b.shutdown().await;
}

async fn addresses_round_trip<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b) = cluster.pair_on::<R>(WAIT).await;
    let (home, home_box) = a.new_mailbox();
    let (echo, echo_box) = b.new_mailbox();
    a.address_of(echo.id()).send(home.clone()).unwrap();
    let back: Address = recv_on::<R, _>(&echo_box, WAIT).await;
    assert_eq!(back, home);
    back.send(String::from("home")).unwrap();
    assert_eq!(recv_on::<R, String>(&home_box, WAIT).await, "home");
    // A remote close notification too. No pause: the watch may reach the
    // other node before or after the close, and both must notify: with
    // the close's reason, or `NoMailbox` for a watch that came after.
    let (watcher, watcher_box) = a.new_mailbox();
    a.address_of(echo.id()).on_close_notify(&watcher);
    echo_box.close();
    let note = recv_on::<R, MailboxClosed>(&watcher_box, WAIT).await;
    assert_eq!(note.id, echo.id());
    assert!(
        matches!(note.reason, ExitReason::Closed | ExitReason::NoMailbox),
        "{:?}",
        note.reason
    );
    a.shutdown().await;
    b.shutdown().await;
}

async fn peer_loss_and_reconnection<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b) = cluster.pair_on::<R>(WAIT).await;
    b.shutdown().await;
    assert!(a.wait_for_disconnect(NodeId(1), WAIT).await);
    // The same spec again: a new incarnation of node 1.
    let b = Reign::<R>::start(&cluster.spec(NodeId(1)), NodeId(1))
        .await
        .expect("node starts");
    assert!(a.wait_for_peers(&[NodeId(1)], WAIT).await);
    assert!(b.wait_for_peers(&[NodeId(0)], WAIT).await);
    let (to_b, b_box) = b.new_mailbox();
    let (to_a, a_box) = a.new_mailbox();
    a.address_of(to_b.id()).send(5u8).unwrap();
    b.address_of(to_a.id()).send(6u8).unwrap();
    assert_eq!(recv_on::<R, u8>(&b_box, WAIT).await, 5);
    assert_eq!(recv_on::<R, u8>(&a_box, WAIT).await, 6);
    a.shutdown().await;
    b.shutdown().await;
}

async fn shutdown_leaves_nothing_behind<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b) = cluster.pair_on::<R>(WAIT).await;
    let (addr, mailbox) = a.new_mailbox();
    // A watcher on the peer hears of the mailbox when its node goes away.
    let (watcher, watcher_box) = b.new_mailbox();
    b.address_of(addr.id()).on_close_notify(&watcher);
    let port = a.local_addr().unwrap();
    a.shutdown().await;
    assert!(mailbox.is_closed());
    assert_eq!(addr.send(1u8), Err(SendError::Closed));
    assert!(b.wait_for_disconnect(NodeId(0), WAIT).await);
    assert_eq!(
        recv_on::<R, MailboxClosed>(&watcher_box, WAIT).await,
        MailboxClosed {
            id: addr.id(),
            reason: ExitReason::NodeShutdown
        }
    );
    // Every task ended and dropped its socket: the port binds again.
    assert!(
        std::net::TcpListener::bind(port).is_ok(),
        "port {port} still held"
    );
    b.shutdown().await;
}

/// Joining through a seed, a reload that removes a member, and a dev
/// cluster: the membership API behaves the same on every runtime.
async fn membership<R: Runtime + Default>() {
    let cluster = TestCluster::new(3);
    let seeded = |id: u16| {
        let mut spec = cluster.spec(NodeId(id));
        spec.nodes.retain(|n| n.id == id || n.id == 0);
        spec
    };
    let mut nodes = Vec::new();
    for id in 0..3 {
        nodes.push(
            Reign::<R>::start(&seeded(id), NodeId(id))
                .await
                .expect("node starts"),
        );
    }
    for node in &nodes {
        let others: Vec<NodeId> = (0..3).map(NodeId).filter(|&n| n != node.id()).collect();
        assert!(node.wait_for_peers(&others, WAIT).await, "{}", node.id());
    }
    // Node 0 takes the whole cluster into its spec (nodes it had learned
    // become spec members), then drops node 2: they part, the others stay.
    let changes = nodes[0]
        .reload(&cluster.spec(NodeId(0)))
        .await
        .expect("reload");
    assert!(changes.added.is_empty() && changes.removed.is_empty());
    let mut spec = cluster.spec(NodeId(0));
    spec.nodes.retain(|n| n.id != 2);
    let changes = nodes[0].reload(&spec).await.expect("reload");
    assert_eq!(changes.removed, [NodeId(2)]);
    assert!(nodes[2].wait_for_disconnect(NodeId(0), WAIT).await);
    assert!(nodes[0].is_connected(NodeId(1)) && nodes[1].is_connected(NodeId(2)));
    for node in &nodes {
        node.shutdown().await;
    }

    let dir = tempfile::tempdir().expect("a temporary directory");
    let a = Reign::<R>::start_dev(dir.path()).await.expect("dev node");
    let b = Reign::<R>::start_dev(dir.path()).await.expect("dev node");
    assert_ne!(a.id(), b.id());
    assert!(a.wait_for_peers(&[b.id()], WAIT).await);
    b.shutdown().await;
    assert!(a.wait_for_disconnect(b.id(), WAIT).await);
    a.shutdown().await;
}

reign_tests::on_every_runtime!(
    local_messaging,
    remote_send_keeps_order,
    addresses_round_trip,
    peer_loss_and_reconnection,
    shutdown_leaves_nothing_behind,
    membership,
);
