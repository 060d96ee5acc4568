//! Tasks tied to mailboxes and links, on every runtime, between two nodes
//! over real TCP and mutual TLS on 127.0.0.1: each way a task ends closes
//! its mailbox with the matching reason, seen alike by a watcher on its
//! node and one on the other; links across the nodes fire, trapped or
//! not; nothing is left behind.

use std::time::{Duration, Instant};

use reign_driver::{Reign, Runtime};
use reign_proto::{Address, Exit, ExitReason, Mailbox, MailboxClosed, NodeId};
use reign_tests::{eventually, recv_on, TestCluster};

const WAIT: Duration = Duration::from_secs(10);

/// A task body that never ends by itself.
async fn stuck(mailbox: Mailbox) {
    let _keep = mailbox;
    std::future::pending::<()>().await
}

/// Waits for one note on each watcher and checks both say `target`
/// closed for `reason`.
async fn expect_both<R: Runtime + Default>(
    local: &Mailbox,
    remote: &Mailbox,
    target: &Address,
    reason: ExitReason,
) {
    let want = MailboxClosed {
        id: target.id(),
        reason,
    };
    assert_eq!(
        recv_on::<R, MailboxClosed>(local, WAIT).await,
        want,
        "local"
    );
    assert_eq!(
        recv_on::<R, MailboxClosed>(remote, WAIT).await,
        want,
        "remote"
    );
}

/// Watches `target` (on `b`) from `local` (on `b`) and `remote` (on `a`),
/// and waits until `b` holds the remote watch (a `Watch` reaches `b`
/// before any later frame from `a`: a sync round trip orders them).
async fn watch<R: Runtime + Default>(
    a: &Reign<R>,
    target: &Address,
    local: &Mailbox,
    remote: &Mailbox,
) {
    target.on_close_notify(&local.address());
    a.address_of(target.id()).on_close_notify(&remote.address());
    a.sync().await;
}

async fn spawned_tasks_close_with_their_reason<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b) = cluster.pair_on::<R>(WAIT).await;
    let before = b.mailbox_count();
    let (_, local) = b.new_mailbox();
    let (_, remote) = a.new_mailbox();

    // Returns normally once told to.
    let t = Instant::now();
    let task = b.spawn(|mailbox| async move {
        let _: u32 = mailbox.recv_type().await.unwrap_or(0);
    });
    watch(&a, &task, &local, &remote).await;
    a.address_of(task.id()).send(1u32).unwrap();
    expect_both::<R>(&local, &remote, &task, ExitReason::Normal).await;

    // Returns an error.
    let task = b.spawn(|mailbox| async move {
        let n: u32 = mailbox.recv_type().await.map_err(|e| e.to_string())?;
        Err::<(), _>(format!("refused {n}"))
    });
    watch(&a, &task, &local, &remote).await;
    task.send(7u32).unwrap();
    expect_both::<R>(
        &local,
        &remote,
        &task,
        ExitReason::Error("refused 7".into()),
    )
    .await;

    // Panics: caught, with its message.
    let task = b.spawn(|mailbox| async move {
        let n: u32 = mailbox.recv_type().await.unwrap_or(0);
        assert!(n == 0, "task got {n}");
    });
    watch(&a, &task, &local, &remote).await;
    task.send(3u32).unwrap();
    expect_both::<R>(
        &local,
        &remote,
        &task,
        ExitReason::Panic("task got 3".into()),
    )
    .await;

    // Stuck forever: killed through its address, here and from the other
    // node.
    let task = b.spawn(stuck);
    watch(&a, &task, &local, &remote).await;
    task.kill().unwrap();
    expect_both::<R>(&local, &remote, &task, ExitReason::Killed).await;
    let task = b.spawn(stuck);
    watch(&a, &task, &local, &remote).await;
    a.address_of(task.id()).kill().unwrap();
    expect_both::<R>(&local, &remote, &task, ExitReason::Killed).await;

    // Closing its own mailbox ends a task too.
    let task = b.spawn(|mailbox| async move {
        let _: u32 = mailbox.recv_type().await.unwrap_or(0);
        mailbox.close_with(ExitReason::Error("gave up".into()));
        std::future::pending::<()>().await
    });
    watch(&a, &task, &local, &remote).await;
    task.send(1u32).unwrap();
    expect_both::<R>(&local, &remote, &task, ExitReason::Error("gave up".into())).await;
    eprintln!("six task exits seen on both nodes in {:?}", t.elapsed());

    drop((local, remote));
    assert!(
        eventually(WAIT, || b.mailbox_count() == before),
        "every task's mailbox is gone: {} left, {before} before",
        b.mailbox_count()
    );
    a.shutdown().await;
    b.shutdown().await;
}

async fn links_across_tls<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b) = cluster.pair_on::<R>(WAIT).await;
    let before = a.mailbox_count();

    // A task on `a` linked to a mailbox on `b`: `b`'s abnormal exit kills
    // it.
    let (far, far_box) = b.new_mailbox();
    let (_, watcher) = a.new_mailbox();
    let task = a.spawn_linked(&a.address_of(far.id()), stuck);
    task.on_close_notify(&watcher.address());
    a.sync().await;
    assert!(
        eventually(WAIT, || far_box.links() == vec![task.id()]),
        "b linked back"
    );
    let t = Instant::now();
    far_box.close_with(ExitReason::Panic("far".into()));
    assert_eq!(
        recv_on::<R, MailboxClosed>(&watcher, WAIT).await,
        MailboxClosed {
            id: task.id(),
            reason: ExitReason::Linked {
                from: far.id(),
                reason: Box::new(ExitReason::Panic("far".into())),
            },
        }
    );
    eprintln!("a linked exit crossed the link in {:?}", t.elapsed());

    // The other way round: the task's panic on `a` closes `b`'s mailbox.
    let (far, far_box) = b.new_mailbox();
    let task = a.spawn_linked(&a.address_of(far.id()), |mailbox| async move {
        let n: u32 = mailbox.recv_type().await.unwrap_or(0);
        assert!(n == 0, "task failed");
    });
    a.sync().await;
    assert!(eventually(WAIT, || far_box.links() == vec![task.id()]));
    task.send(1u32).unwrap();
    assert!(eventually(WAIT, || far_box.is_closed()));

    // Trapping: the task gets the exit as a message, and reports it.
    let (far, far_box) = b.new_mailbox();
    let (report, report_box) = a.new_mailbox();
    let (ready, ready_box) = a.new_mailbox();
    let task = a.spawn(move |mailbox| async move {
        mailbox.trap_exits(true);
        let target: Address = mailbox.recv_type().await.map_err(|e| e.to_string())?;
        mailbox.link(&target);
        ready.send(()).map_err(|e| e.to_string())?;
        let exit: Exit = mailbox.recv_type().await.map_err(|e| e.to_string())?;
        report.send(exit).map_err(|e| e.to_string())
    });
    task.on_close_notify(&watcher.address());
    task.send(a.address_of(far.id())).unwrap();
    recv_on::<R, ()>(&ready_box, WAIT).await;
    a.sync().await;
    assert!(eventually(WAIT, || far_box.links() == vec![task.id()]));
    far_box.close_with(ExitReason::Error("far error".into()));
    assert_eq!(
        recv_on::<R, Exit>(&report_box, WAIT).await,
        Exit {
            from: far.id(),
            reason: ExitReason::Error("far error".into())
        }
    );
    assert_eq!(
        recv_on::<R, MailboxClosed>(&watcher, WAIT).await,
        MailboxClosed {
            id: task.id(),
            reason: ExitReason::Normal
        }
    );

    drop((watcher, report_box, ready_box));
    assert!(
        eventually(WAIT, || a.mailbox_count() == before),
        "every task's mailbox is gone"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Node loss reaches linked tasks: a graceful shutdown of the other node
/// as `NodeShutdown`, trapped or not. (An abrupt loss — kill -9 of a
/// `reign node` process — is `cli/tests/multiprocess.rs`
/// `kill_9_reaches_linked_tasks`.)
async fn node_shutdown_reaches_linked_tasks<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b) = cluster.pair_on::<R>(WAIT).await;
    let (far, _far_box) = b.new_mailbox();
    let (_, watcher) = a.new_mailbox();
    let plain = a.spawn_linked(&a.address_of(far.id()), stuck);
    plain.on_close_notify(&watcher.address());
    let (_, trapper) = a.new_mailbox();
    trapper.trap_exits(true);
    trapper.link(&a.address_of(far.id()));
    a.sync().await;
    b.shutdown().await;
    assert!(a.wait_for_disconnect(NodeId(1), WAIT).await);
    assert_eq!(
        recv_on::<R, MailboxClosed>(&watcher, WAIT).await,
        MailboxClosed {
            id: plain.id(),
            reason: ExitReason::Linked {
                from: far.id(),
                reason: Box::new(ExitReason::NodeShutdown),
            },
        }
    );
    assert_eq!(
        recv_on::<R, Exit>(&trapper, WAIT).await,
        Exit {
            from: far.id(),
            reason: ExitReason::NodeShutdown
        }
    );
    a.shutdown().await;
}

/// A node's shutdown ends its own tasks, with `NodeShutdown`.
async fn shutdown_ends_tasks<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b) = cluster.pair_on::<R>(WAIT).await;
    let (_, remote) = a.new_mailbox();
    let task = b.spawn(stuck);
    a.address_of(task.id()).on_close_notify(&remote.address());
    a.sync().await;
    b.shutdown().await;
    assert_eq!(
        recv_on::<R, MailboxClosed>(&remote, WAIT).await,
        MailboxClosed {
            id: task.id(),
            reason: ExitReason::NodeShutdown
        }
    );
    assert_eq!(b.mailbox_count(), 0);
    a.shutdown().await;
}

reign_tests::on_every_runtime!(
    spawned_tasks_close_with_their_reason,
    links_across_tls,
    node_shutdown_reaches_linked_tasks,
    shutdown_ends_tasks,
);

/// A peer that predates exit reasons (a hello without `FEATURE_EXITS`, as
/// the raw peer sends) is sent only what it understands: `Closed` without
/// a reason, never `Exited`, `Link` or `Kill`; its own reasonless `Closed`
/// reads as `Unspecified` here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_exit_reasons_gets_the_old_messages() {
    use reign_proto::codec::Frame;
    use reign_proto::control::Control;
    use reign_proto::{MailboxId, SendError};
    use reign_tests::raw_peer::RawPeer;

    // Default timers: the raw peer does not answer pings.
    let cluster = TestCluster::with_tuning(3, reign_proto::Tuning::default());
    let node = reign_tokio::Node::start(&cluster.spec(NodeId(1)), NodeId(1))
        .await
        .expect("node 1 starts");
    let (target, target_box) = node.new_mailbox();
    let (_, linker) = node.new_mailbox();
    let (watcher, watcher_box) = node.new_mailbox();
    let address = cluster.address(NodeId(1)).to_owned();
    let ca = cluster.ca.cert_pem().to_owned();
    let cert = cluster.cert(NodeId(2));
    let mut peer = tokio::task::spawn_blocking(move || {
        RawPeer::admitted(&address, NodeId(2), NodeId(1), &ca, &cert, WAIT)
    })
    .await
    .unwrap();
    assert!(eventually(WAIT, || node.is_connected(NodeId(2))));
    let far = MailboxId {
        node: NodeId(2),
        incarnation: reign_proto::Incarnation(1),
        serial: 1,
    };
    let far_addr = node.address_of(far);
    assert_eq!(far_addr.kill(), Err(SendError::Unsupported));
    linker.link(&far_addr);
    far_addr.on_close_notify(&watcher);
    let target_id = target.id();
    let seen = tokio::task::spawn_blocking(move || {
        peer.send_frame(&Frame::Control(
            Control::Watch { target: target_id }.encode(),
        ))
        .unwrap();
        // Waits for the watch of `far` (from the link and the watch).
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(Frame::Control(body)) = peer.next_frame(Duration::from_millis(200)) {
                let control = Control::decode(&body).expect("a control this version reads");
                let done = matches!(control, Control::Watch { .. });
                seen.push(control);
                if done {
                    break;
                }
            }
        }
        (peer, seen)
    })
    .await
    .unwrap();
    let (mut peer, mut seen) = seen;
    target_box.close_with(ExitReason::Panic("old peer".into()));
    let (peer, more) = tokio::task::spawn_blocking(move || {
        let mut more = Vec::new();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(Frame::Control(body)) = peer.next_frame(Duration::from_millis(200)) {
                let control = Control::decode(&body).unwrap();
                let done = matches!(control, Control::Closed { .. });
                more.push(control);
                if done {
                    break;
                }
            }
        }
        peer.send_frame(&Frame::Control(Control::Closed { target: far }.encode()))
            .unwrap();
        (peer, more)
    })
    .await
    .unwrap();
    seen.extend(more);
    assert!(seen.contains(&Control::Watch { target: far }), "{seen:?}");
    assert!(
        seen.contains(&Control::Closed { target: target_id }),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|c| matches!(
            c,
            Control::Exited { .. } | Control::Link { .. } | Control::Kill { .. }
        )),
        "{seen:?}"
    );
    assert_eq!(
        recv_on::<reign_tokio::Tokio, MailboxClosed>(&watcher_box, WAIT).await,
        MailboxClosed {
            id: far,
            reason: ExitReason::Unspecified
        }
    );
    // The link is one way with such a peer, and its unspecified exit is
    // abnormal.
    assert!(eventually(WAIT, || linker.is_closed()));
    drop(peer);
    node.shutdown().await;
}
