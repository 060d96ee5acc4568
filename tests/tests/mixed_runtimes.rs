//! One cluster, three runtimes: node 0 on tokio, node 1 on async-std,
//! node 2 on smol, in one process, exchanging messages and close
//! notifications in every direction over real TCP and TLS.

use std::time::Duration;

use reign_proto::{Address, ExitReason, Mailbox, MailboxClosed, MailboxId, Node, NodeId};
use reign_tests::TestCluster;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn tokio_async_std_and_smol_nodes_form_one_cluster() {
    let cluster = TestCluster::new(3);
    let all = [NodeId(0), NodeId(1), NodeId(2)];
    let others = |me: NodeId| all.iter().copied().filter(|&n| n != me).collect::<Vec<_>>();

    // Each node is started, and its cluster awaited, on its own runtime; the
    // runtimes keep driving them in the background.
    let tokio_rt = reign_tests::tokio_runtime(1);
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
    let n2 = smol::block_on(reign_smol::Node::start(&cluster.spec(NodeId(2)), NodeId(2))).unwrap();
    assert!(tokio_rt.block_on(n0.wait_for_peers(&others(NodeId(0)), WAIT)));
    assert!(async_std::task::block_on(
        n1.wait_for_peers(&others(NodeId(1)), WAIT)
    ));
    assert!(smol::block_on(n2.wait_for_peers(&others(NodeId(2)), WAIT)));

    let nodes: [&Node; 3] = [n0.node(), n1.node(), n2.node()];
    let boxes: Vec<(Address, Mailbox)> = nodes.iter().map(|n| n.new_mailbox()).collect();

    // Messages in every direction (receiving is runtime-agnostic: block).
    for from in &nodes {
        for (addr, _) in &boxes {
            from.address_of(addr.id())
                .send(format!("{} -> {}", from.id().0, addr.id().node.0))
                .unwrap();
        }
    }
    for (to, (_, mailbox)) in nodes.iter().zip(&boxes) {
        let mut got: Vec<String> = (0..3)
            .map(|_| {
                mailbox
                    .recv_blocking_timeout(WAIT)
                    .unwrap()
                    .downcast()
                    .unwrap()
            })
            .collect();
        got.sort();
        let want: Vec<String> = nodes
            .iter()
            .map(|f| format!("{} -> {}", f.id().0, to.id().0))
            .collect();
        assert_eq!(got, want);
    }

    // Close notifications in every direction: every node watches every
    // other node's mailbox, then each mailbox closes in turn.
    let watchers: Vec<(Address, Mailbox)> = nodes.iter().map(|n| n.new_mailbox()).collect();
    for (watcher_node, (watcher, _)) in nodes.iter().zip(&watchers) {
        for (target, _) in &boxes {
            if target.id().node != watcher_node.id() {
                watcher_node
                    .address_of(target.id())
                    .on_close_notify(watcher);
            }
        }
    }
    // No pause: a watch that reaches its node after the close notifies too.
    let targets: Vec<Address> = boxes.iter().map(|(a, _)| a.clone()).collect();
    drop(boxes);
    for (watcher_node, (_, watcher_box)) in nodes.iter().zip(&watchers) {
        let mut notes: Vec<MailboxClosed> = (0..2)
            .map(|_| {
                watcher_box
                    .recv_blocking_timeout(WAIT)
                    .unwrap()
                    .downcast()
                    .unwrap()
            })
            .collect();
        notes.sort_by_key(|n| n.id);
        let want: Vec<MailboxId> = targets
            .iter()
            .filter(|t| t.id().node != watcher_node.id())
            .map(|t| t.id())
            .collect();
        let ids: Vec<MailboxId> = notes.iter().map(|n| n.id).collect();
        assert_eq!(ids, want, "watchers on node {}", watcher_node.id().0);
        // The close's reason, or `NoMailbox` for a watch that came after.
        assert!(
            notes
                .iter()
                .all(|n| matches!(n.reason, ExitReason::Closed | ExitReason::NoMailbox)),
            "{notes:?}"
        );
    }

    // A node going away is noticed by the others, whatever their runtime:
    // each node shuts down in turn, and every remaining node sees the
    // disconnect and a MailboxClosed for each of its mailboxes it watched.
    let lasting: Vec<(Address, Mailbox)> = nodes.iter().map(|n| n.new_mailbox()).collect();
    for (watcher_node, (watcher, _)) in nodes.iter().zip(&watchers) {
        for (target, _) in &lasting {
            if target.id().node != watcher_node.id() {
                watcher_node
                    .address_of(target.id())
                    .on_close_notify(watcher);
            }
        }
    }
    let expect_gone = |watcher_node: &Node, watcher_box: &Mailbox, gone: &Address| {
        let note: MailboxClosed = watcher_box
            .recv_blocking_timeout(WAIT)
            .unwrap()
            .downcast()
            .unwrap();
        assert_eq!(
            note,
            MailboxClosed {
                id: gone.id(),
                reason: ExitReason::NodeShutdown
            },
            "watcher on node {}",
            watcher_node.id().0
        );
    };

    smol::block_on(n2.shutdown());
    assert!(tokio_rt.block_on(n0.wait_for_disconnect(NodeId(2), WAIT)));
    assert!(async_std::task::block_on(
        n1.wait_for_disconnect(NodeId(2), WAIT)
    ));
    for i in [0, 1] {
        expect_gone(nodes[i], &watchers[i].1, &lasting[2].0);
    }

    async_std::task::block_on(n1.shutdown());
    assert!(tokio_rt.block_on(n0.wait_for_disconnect(NodeId(1), WAIT)));
    expect_gone(nodes[0], &watchers[0].1, &lasting[1].0);

    // One note per watch, no duplicates.
    assert_eq!(watchers[0].1.message_count(), 0);
    tokio_rt.block_on(n0.shutdown());
}
