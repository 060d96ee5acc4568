//! The registry and cross-node close notifications over real TCP and TLS
//! (tokio adapter): propagation, conflicts, node loss and restart, and a
//! peer that claims another node's mailbox.

use std::time::Duration;

use reign_proto::codec::Frame;
use reign_proto::control::Control;
use reign_tests::raw_peer::RawPeer;
use reign_tests::{
    capture_logs, eventually, logged, shutdown_all, start_on_own_runtime, sync_all, tokio_runtime,
    TestCluster,
};
use reign_tokio::{MailboxClosed, MailboxExt, MultipleClaim, Node, NodeId};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_propagate_across_three_nodes() {
    capture_logs();
    let cluster = TestCluster::new(3);
    let nodes = cluster.start(&[0, 1, 2], WAIT).await;
    let (addr, mailbox) = nodes[0].new_mailbox();
    nodes[0].register("greeter", &addr).unwrap();
    sync_all([&nodes[0]], WAIT).await;
    for node in &nodes[1..] {
        let found = node.lookup("greeter").expect("visible after sync");
        found.send(format!("hi from {}", node.id().0)).unwrap();
    }
    for _ in 0..2 {
        assert!(mailbox.recv_timeout(WAIT).await.unwrap().is::<String>());
    }
    nodes[0].unregister("greeter", &addr);
    sync_all([&nodes[0]], WAIT).await;
    assert!(nodes[1].lookup("greeter").is_none() && nodes[2].lookup("greeter").is_none());
    nodes[0].register("greeter", &addr).unwrap();
    sync_all([&nodes[0]], WAIT).await;
    assert!(nodes[2].lookup("greeter").is_some());
    mailbox.close();
    sync_all([&nodes[0]], WAIT).await;
    assert!(nodes[1].lookup("greeter").is_none() && nodes[2].lookup("greeter").is_none());
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_on_two_nodes_is_a_multiple_claim_and_lookups_agree() {
    capture_logs();
    let cluster = TestCluster::new(3);
    let nodes = cluster.start(&[0, 1, 2], WAIT).await;
    let (a, a_box) = nodes[0].new_mailbox();
    let (b, b_box) = nodes[1].new_mailbox();
    nodes[0].register("svc", &a).unwrap();
    nodes[1].register("svc", &b).unwrap();
    sync_all([&nodes[0]], WAIT).await;
    sync_all([&nodes[1]], WAIT).await;
    for mailbox in [&a_box, &b_box] {
        let note: MultipleClaim = mailbox.recv_type().await.unwrap();
        assert_eq!(note.name, "svc");
    }
    assert_eq!(nodes[2].lookup_all("svc").len(), 2);
    // Every node, node 1 included, sends to the lowest id: node 0's.
    for node in &nodes {
        for _ in 0..100 {
            assert_eq!(node.lookup("svc").unwrap().id(), a.id());
        }
    }
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiple_claim_count_walks_0_1_2_1_1_0_as_in_go_reign() {
    capture_logs();
    let cluster = TestCluster::new(3);
    let nodes = cluster.start(&[0, 1, 2], WAIT).await;
    let boxes: Vec<_> = nodes.iter().map(|n| n.new_mailbox()).collect();
    let counts = |nodes: &[Node]| {
        nodes
            .iter()
            .map(|n| n.multiple_claim_count())
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&nodes), [0, 0, 0]);
    nodes[0].register("foo", &boxes[0].0).unwrap();
    nodes[1].register("foo", &boxes[1].0).unwrap();
    sync_all(&nodes, WAIT).await;
    assert_eq!(counts(&nodes), [1, 1, 1]);
    for (node, (addr, _)) in nodes.iter().zip(&boxes) {
        node.register("bar", addr).unwrap();
    }
    sync_all(&nodes, WAIT).await;
    assert_eq!(counts(&nodes), [2, 2, 2]);
    nodes[1].unregister("foo", &boxes[1].0);
    sync_all(&nodes, WAIT).await;
    assert_eq!(counts(&nodes), [1, 1, 1]);
    nodes[0].unregister("bar", &boxes[0].0);
    sync_all(&nodes, WAIT).await;
    assert_eq!(counts(&nodes), [1, 1, 1], "bar still has two claimants");
    nodes[2].unregister("bar", &boxes[2].0);
    sync_all(&nodes, WAIT).await;
    assert_eq!(counts(&nodes), [0, 0, 0]);
    // The notices are counted apart, and only grow.
    assert!(nodes.iter().all(|n| n.stats().multiple_claim_notices >= 1));
    shutdown_all(&nodes).await;
}

#[test]
fn a_lost_node_loses_its_names_and_its_watchers_are_told_once() {
    capture_logs();
    let cluster = TestCluster::new(3);
    let rt = tokio_runtime(2);
    let spec2 = cluster.spec(NodeId(2));
    let (rt2, node2) = start_on_own_runtime(&spec2, NodeId(2));
    rt.block_on(async {
        let mut nodes = cluster.start(&[0, 1], WAIT).await;
        assert!(nodes[0].wait_for_peers(&[NodeId(2)], WAIT).await);
        assert!(nodes[1].wait_for_peers(&[NodeId(2)], WAIT).await);
        let (target, target_box) = node2.new_mailbox();
        node2.register("worker", &target).unwrap();
        sync_all([&node2], WAIT).await;
        let mut watcher_boxes = Vec::new();
        for node in &nodes {
            assert!(node.lookup("worker").is_some());
            let (w, w_box) = node.new_mailbox();
            node.address_of(target.id()).on_close_notify(&w);
            watcher_boxes.push(w_box);
        }
        // Let the watches reach node 2, then kill its runtime. The mailbox
        // stays open until the node is gone, so the watchers can only hear
        // of the node's loss (closing it first would race a `Closed`).
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(node2);
        rt2.shutdown_background();
        drop(target_box);
        for (node, w_box) in nodes.iter().zip(&watcher_boxes) {
            assert!(node.wait_for_disconnect(NodeId(2), WAIT).await);
            assert!(node.lookup("worker").is_none());
            let note: MailboxClosed = w_box.recv_type().await.unwrap();
            assert_eq!(note.id, target.id());
            assert!(
                matches!(note.reason, reign_tokio::ExitReason::Unreachable(Some(_))),
                "{:?}",
                note.reason
            );
        }
        let (rt2b, node2b) =
            tokio::task::spawn_blocking(move || start_on_own_runtime(&spec2, NodeId(2)))
                .await
                .unwrap();
        assert!(nodes[0].wait_for_peers(&[NodeId(2)], WAIT).await);
        let (again, _again_box) = node2b.new_mailbox();
        node2b.register("worker", &again).unwrap();
        sync_all([&node2b], WAIT).await;
        assert_eq!(nodes[0].lookup("worker"), Some(again.clone()));
        for w_box in &watcher_boxes {
            assert!(
                w_box
                    .recv_timeout(Duration::from_millis(200))
                    .await
                    .is_err(),
                "a second MailboxClosed arrived"
            );
        }
        for node in nodes.drain(..) {
            node.shutdown().await;
        }
        tokio::task::spawn_blocking(move || rt2b.block_on(node2b.shutdown()))
            .await
            .unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_for_another_nodes_mailbox_is_rejected_and_logged() {
    capture_logs();
    let cluster = TestCluster::new(3);
    let nodes = cluster.start(&[0, 1], WAIT).await;
    let (victim, _victim_box) = nodes[1].new_mailbox();
    let victim_id = victim.id();
    let (addr, ca, cert) = (
        cluster.address(NodeId(0)).to_owned(),
        cluster.ca.cert_pem().to_owned(),
        cluster.cert(NodeId(2)),
    );
    // The raw peer is node 2 and claims a name for node 1's mailbox.
    tokio::task::spawn_blocking(move || {
        let mut peer = RawPeer::admitted(&addr, NodeId(2), NodeId(0), &ca, &cert, WAIT);
        let claim = Control::Claim {
            name: "stolen".into(),
            id: victim_id,
        };
        peer.send_frame(&Frame::Control(claim.encode())).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    })
    .await
    .unwrap();
    // Logged at DEBUG per message (a peer can repeat it at will) and
    // summarised once per interval at WARN.
    assert!(eventually(Duration::from_secs(25), || logged(&[
        "messages from peers dropped",
        "1 as registry messages that break the rules"
    ])));
    assert!(nodes[0].lookup("stolen").is_none());
    assert_eq!(nodes[0].stats().rejected_claims, 1);
    assert!(nodes[0].is_connected(NodeId(1)));
    shutdown_all(&nodes).await;
}
