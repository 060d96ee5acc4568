//! Exit reasons, tasks tied to mailboxes and links, on the simulator's
//! virtual clock (deterministic): every reason reaches a watcher on the
//! mailbox's node and one on another node alike; links fire locally and
//! across nodes, trapped or not; tasks close their mailboxes with the
//! reason they ended for, and leave nothing behind.
#![cfg(feature = "sim")]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Waker};
use std::time::Duration;

use reign_proto::sim::Sim;
use reign_proto::{
    Exit, ExitReason, Incarnation, Mailbox, MailboxClosed, Message, Node, NodeId, Task,
};

/// Long enough for a control message to cross the simulated network and
/// its answers to come back.
const SETTLE: Duration = Duration::from_millis(50);

fn drain(mailbox: &Mailbox) -> Vec<Message> {
    std::iter::from_fn(|| mailbox.try_recv().unwrap()).collect()
}

/// The close notes `mailbox` holds.
fn notes(mailbox: &Mailbox) -> Vec<MailboxClosed> {
    drain(mailbox)
        .into_iter()
        .filter_map(|m| m.downcast::<MailboxClosed>().ok())
        .collect()
}

/// Panics with `text` (a task's body that returns `()`).
fn boom(text: String) {
    std::panic::panic_any(text)
}

/// Polls a task once; whether it finished.
fn poll(task: &mut Task) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(task).poll(&mut cx).is_ready()
}

/// A two-node simulation with a target on node 1 watched by a mailbox on
/// node 1 and one on node 0.
struct Watched {
    sim: Sim,
    local: Mailbox,
    remote: Mailbox,
}

impl Watched {
    fn new(seed: u64) -> Watched {
        let sim = Sim::connected(2, seed);
        let (_, local) = sim.node(NodeId(1)).new_mailbox();
        let (_, remote) = sim.node(NodeId(0)).new_mailbox();
        Watched { sim, local, remote }
    }

    fn n(&self, id: u16) -> &Node {
        self.sim.node(NodeId(id))
    }

    /// Watches `target` (a mailbox of node 1) from both watchers.
    fn watch(&mut self, target: &reign_proto::Address) {
        target.on_close_notify(&self.local.address());
        self.n(0)
            .address_of(target.id())
            .on_close_notify(&self.remote.address());
        self.sim.run_for(SETTLE);
    }

    /// Both watchers heard `target` close for `reason`, once each.
    fn expect(&mut self, target: &reign_proto::Address, reason: ExitReason) {
        self.sim.run_for(SETTLE);
        let want = vec![MailboxClosed {
            id: target.id(),
            reason,
        }];
        assert_eq!(notes(&self.local), want, "the watcher on the target's node");
        assert_eq!(notes(&self.remote), want, "the watcher on another node");
    }
}

#[test]
fn every_reason_reaches_local_and_remote_watchers_alike() {
    // An explicit close, and a dropped mailbox.
    let mut w = Watched::new(1);
    let (target, mailbox) = w.n(1).new_mailbox();
    w.watch(&target);
    mailbox.close();
    w.expect(&target, ExitReason::Closed);
    let (target, mailbox) = w.n(1).new_mailbox();
    w.watch(&target);
    drop(mailbox);
    w.expect(&target, ExitReason::Closed);

    // A reason given by the owner crosses the wire as it is, a long one cut
    // to the bound.
    let (target, mailbox) = w.n(1).new_mailbox();
    w.watch(&target);
    mailbox.close_with(ExitReason::Error("disk full".into()));
    w.expect(&target, ExitReason::Error("disk full".into()));

    // Tasks: a normal return, an error, a panic (with its message).
    let (target, mut task) = w.n(1).task(|_mailbox| async {});
    w.watch(&target);
    assert!(poll(&mut task));
    w.expect(&target, ExitReason::Normal);
    let (target, mut task) = w
        .n(1)
        .task(|_mailbox| async { Err::<(), _>("bad input".to_string()) });
    w.watch(&target);
    assert!(poll(&mut task));
    w.expect(&target, ExitReason::Error("bad input".into()));
    let (target, mut task) = w
        .n(1)
        .task(|_mailbox| async { boom(format!("boom at {}", 42)) });
    w.watch(&target);
    assert!(poll(&mut task));
    w.expect(&target, ExitReason::Panic("boom at 42".into()));
    let long = "x".repeat(reign_proto::system::MAX_REASON_TEXT + 10);
    let (target, mut task) = w.n(1).task(move |_mailbox| async move { boom(long) });
    w.watch(&target);
    assert!(poll(&mut task));
    w.expect(
        &target,
        ExitReason::Panic("x".repeat(reign_proto::system::MAX_REASON_TEXT)),
    );

    // A task stuck forever, killed through its address here and from the
    // other node; one dropped by its runtime before it finished.
    let (target, mut task) = w.n(1).task(|mailbox| async move {
        let _keep = mailbox;
        std::future::pending::<()>().await
    });
    w.watch(&target);
    assert!(!poll(&mut task));
    target.kill().unwrap();
    assert!(poll(&mut task), "a killed task ends at its next poll");
    w.expect(&target, ExitReason::Killed);
    let (target, mut task) = w.n(1).task(|mailbox| async move {
        let _keep = mailbox;
        std::future::pending::<()>().await
    });
    w.watch(&target);
    assert!(!poll(&mut task));
    w.n(0).address_of(target.id()).kill().unwrap();
    w.sim.run_for(SETTLE);
    assert!(poll(&mut task));
    w.expect(&target, ExitReason::Killed);
    let (target, task) = w.n(1).task(|_mailbox| std::future::pending::<()>());
    w.watch(&target);
    drop(task);
    w.expect(&target, ExitReason::Killed);

    // Killed by a linked exit: the original reason is kept.
    let (target, mailbox) = w.n(1).new_mailbox();
    let (other, other_box) = w.n(1).new_mailbox();
    mailbox.link(&other);
    w.watch(&target);
    other_box.close_with(ExitReason::Panic("linked".into()));
    w.expect(
        &target,
        ExitReason::Linked {
            from: other.id(),
            reason: Box::new(ExitReason::Panic("linked".into())),
        },
    );
    assert!(mailbox.is_closed());

    // Watching a mailbox that is gone: the reason it closed for while it
    // is among the last closes, `NoMailbox` for one that never existed.
    let (target, mailbox) = w.n(1).new_mailbox();
    mailbox.close_with(ExitReason::Error("gone before the watch".into()));
    drop(mailbox);
    w.watch(&target);
    w.expect(&target, ExitReason::Error("gone before the watch".into()));
    let never = reign_proto::MailboxId {
        serial: u64::MAX,
        ..target.id()
    };
    let (watcher, notes_box) = w.n(1).new_mailbox();
    w.n(1).address_of(never).on_close_notify(&watcher);
    assert_eq!(
        notes(&notes_box),
        vec![MailboxClosed {
            id: never,
            reason: ExitReason::NoMailbox
        }]
    );
}

#[test]
fn node_loss_and_shutdown_reach_remote_watchers() {
    // A clean shutdown: remote watchers hear what local ones would.
    let mut sim = Sim::connected(2, 2);
    let (target, _target_box) = sim.node(NodeId(1)).new_mailbox();
    let (_, watcher) = sim.node(NodeId(0)).new_mailbox();
    sim.node(NodeId(0))
        .address_of(target.id())
        .on_close_notify(&watcher.address());
    sim.run_for(SETTLE);
    sim.shutdown(NodeId(1));
    sim.run_for(Duration::from_secs(10));
    assert_eq!(
        notes(&watcher),
        vec![MailboxClosed {
            id: target.id(),
            reason: ExitReason::NodeShutdown
        }]
    );

    // A crash: unreachable, with the connection's close reason.
    let mut sim = Sim::connected(2, 3);
    let (target, _target_box) = sim.node(NodeId(1)).new_mailbox();
    let (_, watcher) = sim.node(NodeId(0)).new_mailbox();
    sim.node(NodeId(0))
        .address_of(target.id())
        .on_close_notify(&watcher.address());
    sim.run_for(SETTLE);
    sim.crash(NodeId(1));
    sim.run_for(Duration::from_secs(1));
    let got = notes(&watcher);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        matches!(got[0].reason, ExitReason::Unreachable(Some(_))),
        "{got:?}"
    );
}

#[test]
fn local_links() {
    let node = Node::local(Incarnation(1));
    let before = node.mailbox_count();

    // A normal exit leaves the other side open and the link gone.
    let (a, a_box) = node.new_mailbox();
    let (_b, b_box) = node.new_mailbox();
    a_box.link(&b_box.address());
    assert_eq!(a_box.links(), vec![b_box.id()]);
    assert_eq!(b_box.links(), vec![a_box.id()]);
    b_box.close();
    assert!(!a_box.is_closed());
    assert!(a_box.links().is_empty());
    assert!(drain(&a_box).is_empty(), "a link is not a watch");

    // An abnormal exit closes the other side, with the original reason,
    // through a chain.
    let (c, c_box) = node.new_mailbox();
    let (d, d_box) = node.new_mailbox();
    let (_, watcher) = node.new_mailbox();
    a_box.link(&c);
    c_box.link(&d);
    a.on_close_notify(&watcher.address());
    d_box.close_with(ExitReason::Panic("deep".into()));
    assert!(c_box.is_closed() && a_box.is_closed());
    assert_eq!(
        notes(&watcher),
        vec![MailboxClosed {
            id: a.id(),
            reason: ExitReason::Linked {
                from: c.id(),
                reason: Box::new(ExitReason::Panic("deep".into())),
            },
        }]
    );
    drop((a_box, b_box, c_box, d_box, watcher));

    // Trapping exits: a message for every exit, normal ones too, and the
    // trapper stays open.
    let (_, trapper) = node.new_mailbox();
    trapper.trap_exits(true);
    let (e, e_box) = node.new_mailbox();
    let (f, f_box) = node.new_mailbox();
    trapper.link(&e);
    trapper.link(&f);
    e_box.close();
    f_box.close_with(ExitReason::Error("f failed".into()));
    let exits: Vec<Exit> = drain(&trapper)
        .into_iter()
        .map(|m| m.downcast::<Exit>().unwrap())
        .collect();
    assert_eq!(
        exits,
        vec![
            Exit {
                from: e.id(),
                reason: ExitReason::Closed
            },
            Exit {
                from: f.id(),
                reason: ExitReason::Error("f failed".into())
            },
        ]
    );
    assert!(!trapper.is_closed() && trapper.links().is_empty());

    // Unlinked: nothing fires. Linked to a gone mailbox: an exit at once,
    // with the reason it closed for (still known). Linked to itself:
    // nothing.
    let (g, g_box) = node.new_mailbox();
    trapper.link(&g);
    trapper.unlink(&g);
    assert!(g_box.links().is_empty());
    g_box.close_with(ExitReason::Killed);
    assert!(drain(&trapper).is_empty());
    trapper.link(&g);
    assert_eq!(
        drain(&trapper)
            .into_iter()
            .map(|m| m.downcast::<Exit>().unwrap())
            .collect::<Vec<_>>(),
        vec![Exit {
            from: g.id(),
            reason: ExitReason::Killed
        }]
    );
    trapper.link(&trapper.address());
    assert!(trapper.links().is_empty());
    drop(trapper);
    assert_eq!(node.mailbox_count(), before, "every mailbox is gone");
}

#[test]
fn links_across_nodes() {
    let mut sim = Sim::connected(2, 4);
    let n0 = sim.node(NodeId(0)).clone();
    let n1 = sim.node(NodeId(1)).clone();

    // Either side's abnormal exit closes the other.
    let (_, a) = n0.new_mailbox();
    let (b, b_box) = n1.new_mailbox();
    a.link(&n0.address_of(b.id()));
    sim.run_for(SETTLE);
    assert_eq!(b_box.links(), vec![a.id()], "node 1 linked back");
    b_box.close_with(ExitReason::Panic("far".into()));
    sim.run_for(SETTLE);
    assert!(a.is_closed());
    let (a, a_box) = n0.new_mailbox();
    let (_, b_box) = n1.new_mailbox();
    b_box.link(&n1.address_of(a.id()));
    sim.run_for(SETTLE);
    a_box.close_with(ExitReason::Killed);
    sim.run_for(SETTLE);
    assert!(b_box.is_closed());

    // A normal exit is quiet; the link is gone on both nodes.
    let (_, a) = n0.new_mailbox();
    let (b, b_box) = n1.new_mailbox();
    a.link(&n0.address_of(b.id()));
    sim.run_for(SETTLE);
    drop(b_box);
    sim.run_for(SETTLE);
    assert!(!a.is_closed() && a.links().is_empty());
    assert!(drain(&a).is_empty());

    // Trapped across nodes, and unlinked across nodes.
    let (b, b_box) = n1.new_mailbox();
    let (c, c_box) = n1.new_mailbox();
    a.trap_exits(true);
    a.link(&n0.address_of(b.id()));
    a.link(&n0.address_of(c.id()));
    sim.run_for(SETTLE);
    a.unlink(&n0.address_of(c.id()));
    sim.run_for(SETTLE);
    assert!(c_box.links().is_empty(), "node 1 unlinked too");
    b_box.close_with(ExitReason::Error("far error".into()));
    c_box.close_with(ExitReason::Error("not linked".into()));
    sim.run_for(SETTLE);
    assert_eq!(
        drain(&a)
            .into_iter()
            .map(|m| m.downcast::<Exit>().unwrap())
            .collect::<Vec<_>>(),
        vec![Exit {
            from: b.id(),
            reason: ExitReason::Error("far error".into())
        }]
    );

    // Losing the node: every linked mailbox gets the exit at once on a
    // reset, trapped as a message or closing the rest.
    let (b, _b_box) = n1.new_mailbox();
    let (_, plain) = n0.new_mailbox();
    a.link(&n0.address_of(b.id()));
    plain.link(&n0.address_of(b.id()));
    sim.run_for(SETTLE);
    sim.crash(NodeId(1));
    sim.run_for(Duration::from_millis(100));
    let exits: Vec<Exit> = drain(&a)
        .into_iter()
        .map(|m| m.downcast::<Exit>().unwrap())
        .collect();
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0].from, b.id());
    assert!(
        matches!(exits[0].reason, ExitReason::Unreachable(Some(_))),
        "{exits:?}"
    );
    assert!(plain.is_closed());
}

#[test]
fn a_silent_node_loss_reaches_links_within_the_ping_deadline() {
    let mut sim = Sim::connected(2, 5);
    let n0 = sim.node(NodeId(0)).clone();
    let (b, _b_box) = sim.node(NodeId(1)).new_mailbox();
    let (_, a) = n0.new_mailbox();
    a.trap_exits(true);
    a.link(&n0.address_of(b.id()));
    sim.run_for(SETTLE);
    let cut = sim.now();
    sim.power_off(NodeId(1));
    let tuning = reign_proto::Tuning::fast();
    // Whichever deadline finds the silence first, and two pings to spare.
    let deadline = (tuning.ping_interval * tuning.max_ping_failures).max(tuning.read_deadline)
        + tuning.ping_interval * 2;
    let mut heard = None;
    while sim.now() < cut + deadline {
        sim.run_for(Duration::from_millis(10));
        if let Some(msg) = a.try_recv().unwrap() {
            heard = Some((sim.now() - cut, msg.downcast::<Exit>().unwrap()));
            break;
        }
    }
    let (after, exit) = heard.expect("the exit arrived within the ping deadline");
    eprintln!("exit after {after:?} of silence (deadline {deadline:?})");
    assert!(matches!(exit.reason, ExitReason::Unreachable(Some(_))));
}

#[test]
fn linked_tasks_leave_nothing_behind() {
    let node = Node::local(Incarnation(1));
    let (_, supervisor) = node.new_mailbox();
    supervisor.trap_exits(true);
    let before = node.mailbox_count();
    const TASKS: usize = 100;
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let (_, task) = node.task_linked(&supervisor.address(), move |_mailbox| async move {
            if i % 2 == 0 {
                Ok(())
            } else {
                Err(format!("task {i}"))
            }
        });
        tasks.push(task);
    }
    assert_eq!(supervisor.links().len(), TASKS);
    for task in &mut tasks {
        assert!(poll(task));
    }
    let exits: Vec<Exit> = drain(&supervisor)
        .into_iter()
        .map(|m| m.downcast::<Exit>().unwrap())
        .collect();
    assert_eq!(exits.len(), TASKS);
    assert_eq!(
        exits
            .iter()
            .filter(|e| e.reason == ExitReason::Normal)
            .count(),
        TASKS / 2
    );
    assert!(supervisor.links().is_empty());
    drop(tasks);
    assert_eq!(node.mailbox_count(), before);

    // A task linked to a mailbox that is gone never starts.
    let (gone, gone_box) = node.new_mailbox();
    drop(gone_box);
    let (addr, mut task) =
        node.task_linked(&gone, |_mailbox| async { boom("never runs".to_string()) });
    assert!(poll(&mut task));
    assert!(addr.send(1u8).is_err());
}
