//! Supervisors on every runtime: a crashing child is restarted and its name
//! moves to the new address on another node (real TCP and mutual TLS on
//! 127.0.0.1); restart intensity ends a supervisor with its reason and its
//! parent restarts it; one-for-all and rest-for-one restart the right
//! siblings in order; shutdown runs in reverse start order and kills a
//! child that ignores it; restart policies.
//!
//! Time is the spec's: intensity windows, backoffs and shutdown timeouts
//! are short durations here, and every wait polls with a generous limit.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reign_driver::api::{
    ChildError, ChildSpec, ChildState, ConnectionStatus, Exit, ExitReason, MailboxClosed, NodeId,
    Restart, Shutdown, Strategy, SupervisorHandle, SupervisorSpec,
};
use reign_driver::{Reign, Runtime};
use reign_proto::{Address, Mailbox};
use reign_tests::{recv_on, TestCluster};

const WAIT: Duration = Duration::from_secs(10);

/// What the children did, in order.
type Events = Arc<Mutex<Vec<String>>>;

fn events() -> Events {
    Arc::new(Mutex::new(Vec::new()))
}

fn push(events: &Events, event: String) {
    events.lock().expect("events").push(event);
}

fn taken(events: &Events) -> Vec<String> {
    std::mem::take(&mut *events.lock().expect("events"))
}

/// Polls `cond` every 5 ms on `R`'s timer until it holds or [`WAIT`]
/// passes; whether it held.
async fn until<R: Runtime + Default>(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        R::default().sleep(Duration::from_millis(5)).await;
    }
    true
}

/// A worker that records its start, and its stop when asked to shut
/// down; it ignores everything else.
fn polite(name: &'static str, log: &Events) -> ChildSpec {
    let log = log.clone();
    ChildSpec::worker(name, move |mailbox: Mailbox| {
        push(&log, format!("start {name}"));
        let log = log.clone();
        async move {
            // A kill may end the wait with `Closed` before the future is
            // dropped: only a real shutdown is a stop.
            if mailbox.recv_type::<Shutdown>().await.is_ok() {
                push(&log, format!("stop {name}"));
            }
        }
    })
}

/// Records when it is dropped (a kill drops a task's future).
struct DropLog(Events, &'static str);

impl Drop for DropLog {
    fn drop(&mut self) {
        push(&self.0, format!("dropped {}", self.1));
    }
}

/// A worker that never answers a shutdown: it has to be killed.
fn stubborn(name: &'static str, log: &Events) -> ChildSpec {
    let log = log.clone();
    ChildSpec::worker(name, move |mailbox: Mailbox| {
        push(&log, format!("start {name}"));
        let guard = DropLog(log.clone(), name);
        async move {
            let _keep = (mailbox, guard);
            std::future::pending::<()>().await
        }
    })
}

fn child(handle: &SupervisorHandle, name: &str) -> reign_driver::api::ChildInfo {
    let children = handle.which_children();
    children
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no child {name} in {:?}", handle))
}

fn address_of(handle: &SupervisorHandle, name: &str) -> Address {
    child(handle, name).address.expect("running")
}

/// Runs `f` once the supervisor has started every child.
async fn started<R: Runtime + Default>(handle: &SupervisorHandle, n: usize) {
    assert!(
        until::<R>(|| {
            let children = handle.which_children();
            children.len() == n && children.iter().all(|c| c.state == ChildState::Running)
        })
        .await,
        "children started: {:?}",
        handle.which_children()
    );
}

/// Takes `u32`s until a zero, which makes it panic.
async fn crash_on_zero(mailbox: Mailbox) -> Result<(), String> {
    loop {
        let n: u32 = mailbox.recv_type().await.map_err(|e| e.to_string())?;
        if n == 0 {
            panic!("asked to crash");
        }
    }
}

async fn crashed_child_comes_back_under_its_name_on_another_node<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b) = cluster.pair_on::<R>(WAIT).await;
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(60))
        .child(ChildSpec::worker("echo", crash_on_zero).register("sup.echo"));
    let sup = b.supervise("top", spec);
    started::<R>(&sup, 1).await;
    b.sync().await;
    a.sync().await;
    let old = a.lookup("sup.echo").expect("the name is seen on node a");
    assert_eq!(old.id(), address_of(&sup, "echo").id());
    let (watcher, notes) = a.new_mailbox();
    old.on_close_notify(&watcher);
    a.sync().await;

    let t = Instant::now();
    old.send(0u32).expect("send the crash order");
    let note: MailboxClosed = recv_on::<R, _>(&notes, WAIT).await;
    assert_eq!(note.reason, ExitReason::Panic("asked to crash".into()));
    let noticed = t.elapsed();
    assert!(
        until::<R>(|| a.lookup("sup.echo").is_some_and(|n| n.id() != old.id())).await,
        "the name moves to the new address on node a"
    );
    let visible = t.elapsed();
    println!(
        "crash order to close notice on the other node {:?}, to the name on the new address there {:?} ({})",
        noticed,
        visible,
        std::any::type_name::<R>()
    );
    let new = a.lookup("sup.echo").expect("the name");
    assert_eq!(new.id(), address_of(&sup, "echo").id());
    assert_eq!(child(&sup, "echo").restarts, 1);
    assert_eq!(sup.restarts(), 1);
    // The old address stays dead (a late watch hears why it died, the
    // close being recent); the new one works.
    let (watcher2, notes2) = a.new_mailbox();
    a.address_of(old.id()).on_close_notify(&watcher2);
    let note: MailboxClosed = recv_on::<R, _>(&notes2, WAIT).await;
    assert_eq!(note.reason, ExitReason::Panic("asked to crash".into()));
    new.send(7u32).expect("the new incarnation takes messages");
    a.sync().await;
    assert!(until::<R>(|| child(&sup, "echo").state == ChildState::Running).await);

    sup.shutdown();
    a.shutdown().await;
    b.shutdown().await;
}

async fn a_parent_on_another_node_gets_the_escalation<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b) = cluster.pair_on::<R>(WAIT).await;
    let (_, parent) = a.new_mailbox();
    parent.trap_exits(true);
    let gate = Arc::new(AtomicU32::new(0));
    let open = gate.clone();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(1, Duration::from_secs(60))
        .child(ChildSpec::worker("crash", move |mailbox: Mailbox| {
            let open = open.clone();
            async move {
                // Crash only once the link to the other node is in place.
                while open.load(Ordering::SeqCst) == 0 {
                    let _ = mailbox.recv_type::<u32>().await;
                }
                Err::<(), _>("remote trouble")
            }
        }));
    let sup = b.supervise_linked(&b.address_of(parent.id()), "remote-child", spec);
    started::<R>(&sup, 1).await;
    // The link's other half reaches node a before a later sync round trip.
    b.sync().await;
    assert!(
        until::<R>(|| parent.links().contains(&sup.address().id())).await,
        "node a holds the link"
    );
    gate.store(1, Ordering::SeqCst);
    address_of(&sup, "crash")
        .send(1u32)
        .expect("wake the child");
    let exit: Exit = recv_on::<R, _>(&parent, WAIT).await;
    assert_eq!(exit.from, sup.address().id());
    let ExitReason::Error(text) = &exit.reason else {
        panic!("an error reason across the nodes, not {:?}", exit.reason);
    };
    assert!(text.starts_with("restart intensity exceeded"), "{text}");
    assert_eq!(sup.restarts(), 1);
    a.shutdown().await;
    b.shutdown().await;
}

async fn intensity_exceeded_escalates_to_the_parent<R: Runtime + Default>() {
    let node = Reign::<R>::local();
    // A bare parent that traps exits sees the supervisor's reason.
    let (_, parent) = node.new_mailbox();
    parent.trap_exits(true);
    let crashing = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(2, Duration::from_secs(60))
        .backoff(Duration::from_millis(1))
        .child(ChildSpec::worker("crash", |_: Mailbox| async {
            Err::<(), _>("always")
        }));
    reign_tests::capture_logs();
    let name = format!("fragile-{}", std::any::type_name::<R>());
    let sup = node.supervise_linked(&parent.address(), name.clone(), crashing);
    let exit: Exit = recv_on::<R, _>(&parent, WAIT).await;
    assert_eq!(exit.from, sup.address().id());
    let ExitReason::Error(text) = &exit.reason else {
        panic!("an error reason, not {:?}", exit.reason);
    };
    assert!(text.starts_with("restart intensity exceeded"), "{text}");
    assert_eq!(sup.exit_reason(), Some(exit.reason.clone()));
    assert_eq!(sup.restarts(), 2, "two restarts, the third is refused");
    // Restarts at INFO, the escalation at ERROR, each naming the supervisor.
    let me = format!("supervisor={name}");
    assert!(reign_tests::logged(&["INFO", "restarting child", &me]));
    assert!(reign_tests::logged(&[
        "ERROR",
        "restart intensity exceeded",
        &me
    ]));

    // Nested: the inner supervisor gives up, the outer restarts it, and the
    // new inner tree runs (the worker stops crashing after three starts).
    let starts = Arc::new(AtomicU32::new(0));
    let counted = starts.clone();
    let inner = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(2, Duration::from_secs(60))
        .child(ChildSpec::worker("flaky", move |mailbox: Mailbox| {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n <= 3 {
                    return Err(format!("start {n} fails"));
                }
                let _ = mailbox.recv_type::<Shutdown>().await;
                Ok(())
            }
        }));
    let outer = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(3, Duration::from_secs(60))
        .child(ChildSpec::supervisor("inner", &node, inner));
    let top = node.supervise("outer", outer);
    assert!(
        until::<R>(|| {
            let inner = child(&top, "inner");
            inner.restarts == 1
                && inner.state == ChildState::Running
                && inner.children.len() == 1
                && inner.children[0].state == ChildState::Running
        })
        .await,
        "the outer supervisor restarted the inner one: {:?}",
        top.which_children()
    );
    assert_eq!(starts.load(Ordering::SeqCst), 4);
    assert_eq!(top.restarts(), 1);
    assert_eq!(
        child(&top, "inner").children[0].restarts,
        0,
        "a new inner incarnation"
    );

    // Shutting the outer one down takes the whole tree down, normally.
    let (watcher, notes) = node.new_mailbox();
    top.address().on_close_notify(&watcher);
    top.shutdown();
    let note: MailboxClosed = recv_on::<R, _>(&notes, WAIT).await;
    assert_eq!(note.reason, ExitReason::Normal);
    let inner = child(&top, "inner");
    assert_eq!(inner.state, ChildState::Stopped(ExitReason::Normal));
    assert_eq!(
        inner.children[0].state,
        ChildState::Stopped(ExitReason::Normal)
    );
    node.shutdown().await;
}

async fn restart_siblings<R: Runtime + Default>(
    node: &Reign<R>,
    strategy: Strategy,
    expected: &[&str],
) {
    let log = events();
    let spec = SupervisorSpec::new(strategy)
        .child(polite("a", &log))
        .child(polite("b", &log))
        .child(polite("c", &log));
    let sup = node.supervise(format!("{strategy:?}"), spec);
    started::<R>(&sup, 3).await;
    assert!(until::<R>(|| log.lock().expect("log").len() == 3).await);
    assert_eq!(
        taken(&log),
        ["start a", "start b", "start c"],
        "ordered start"
    );
    let before: Vec<_> = sup
        .which_children()
        .iter()
        .map(|c| c.address.clone().expect("running").id())
        .collect();
    address_of(&sup, "b").kill().expect("kill b");
    assert!(
        until::<R>(|| log.lock().expect("log").len() >= expected.len()
            && sup
                .which_children()
                .iter()
                .all(|c| c.state == ChildState::Running))
        .await,
        "{strategy:?}: {:?}",
        log.lock().expect("log")
    );
    assert_eq!(taken(&log), expected, "{strategy:?}");
    let children = sup.which_children();
    for (i, c) in children.iter().enumerate() {
        let moved = c.address.as_ref().expect("running").id() != before[i];
        let restarted = expected.contains(&format!("start {}", c.name).as_str());
        assert_eq!(moved, restarted, "{strategy:?}: {}", c.name);
        assert_eq!(c.restarts, u32::from(restarted), "{strategy:?}: {}", c.name);
    }
    sup.shutdown();
}

async fn strategies_restart_the_right_siblings_in_order<R: Runtime + Default>() {
    let node = Reign::<R>::local();
    restart_siblings(&node, Strategy::OneForOne, &["start b"]).await;
    restart_siblings(
        &node,
        Strategy::RestForOne,
        &["stop c", "start b", "start c"],
    )
    .await;
    restart_siblings(
        &node,
        Strategy::OneForAll,
        &["stop c", "stop a", "start a", "start b", "start c"],
    )
    .await;
    node.shutdown().await;
}

async fn shutdown_is_reverse_order_and_kills_after_the_timeout<R: Runtime + Default>() {
    let node = Reign::<R>::local();
    let before = node.mailbox_count();
    let log = events();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(polite("a", &log))
        .child(polite("b", &log))
        .child(stubborn("c", &log).shutdown_timeout(Duration::from_millis(100)))
        .child(stubborn("d", &log).shutdown_timeout(Duration::ZERO));
    let sup = node.supervise("stopper", spec);
    started::<R>(&sup, 4).await;
    assert!(until::<R>(|| log.lock().expect("log").len() == 4).await);
    taken(&log);
    let (watcher, notes) = node.new_mailbox();
    sup.address().on_close_notify(&watcher);
    let t = Instant::now();
    sup.shutdown();
    let note: MailboxClosed = recv_on::<R, _>(&notes, WAIT).await;
    assert_eq!(note.reason, ExitReason::Normal);
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "c had its timeout"
    );
    // A kill drops the future at the task's next poll: wait for both.
    assert!(until::<R>(|| log.lock().expect("log").len() == 4).await);
    let (stops, mut dropped): (Vec<String>, Vec<String>) =
        taken(&log).into_iter().partition(|e| e.starts_with("stop"));
    assert_eq!(stops, ["stop b", "stop a"], "reverse start order");
    dropped.sort();
    assert_eq!(dropped, ["dropped c", "dropped d"]);
    let states: Vec<_> = sup.which_children().into_iter().map(|c| c.state).collect();
    assert_eq!(
        states,
        [
            ChildState::Stopped(ExitReason::Normal),
            ChildState::Stopped(ExitReason::Normal),
            ChildState::Stopped(ExitReason::Killed),
            ChildState::Stopped(ExitReason::Killed),
        ]
    );
    // Nothing is left behind but the watcher's mailbox.
    assert!(
        until::<R>(|| node.mailbox_count() == before + 1).await,
        "{} mailboxes, {before} before",
        node.mailbox_count()
    );
    node.shutdown().await;
}

async fn intensity_counts_restarts_within_the_period<R: Runtime + Default>() {
    let node = Reign::<R>::local();
    // At the limit: no restart allowed, the first exit ends the supervisor.
    let (_, parent) = node.new_mailbox();
    parent.trap_exits(true);
    let none = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(0, Duration::from_secs(60))
        .child(ChildSpec::worker("crash", |_: Mailbox| async {
            Err::<(), _>("once")
        }));
    let sup = node.supervise_linked(&parent.address(), "strict", none);
    let exit: Exit = recv_on::<R, _>(&parent, WAIT).await;
    assert_eq!(exit.from, sup.address().id());
    assert!(
        matches!(exit.reason, ExitReason::Error(_)),
        "{:?}",
        exit.reason
    );
    assert_eq!(sup.restarts(), 0);
    assert_eq!(
        child(&sup, "crash").state,
        ChildState::Stopped(ExitReason::Error("once".into()))
    );

    // Under it: one restart per period allowed, and the backoff spaces the
    // restarts wider than the period, so four failures in a row never
    // exceed it (only lower bounds of sleeps are relied on).
    let starts = Arc::new(AtomicU32::new(0));
    let counted = starts.clone();
    let spaced = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(1, Duration::from_millis(20))
        .backoff(Duration::from_millis(60))
        .child(ChildSpec::worker("flaky", move |mailbox: Mailbox| {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n <= 4 {
                    return Err(format!("start {n} fails"));
                }
                let _ = mailbox.recv_type::<Shutdown>().await;
                Ok(())
            }
        }));
    let sup = node.supervise("spaced", spaced);
    assert!(
        until::<R>(|| child(&sup, "flaky").restarts == 4
            && child(&sup, "flaky").state == ChildState::Running)
        .await,
        "{:?}",
        sup.which_children()
    );
    assert_eq!(sup.exit_reason(), None, "still running");
    assert_eq!(starts.load(Ordering::SeqCst), 5);
    sup.shutdown();
    node.shutdown().await;
}

/// A worker that exits with `outcome` the first time it is told to, then
/// waits for its shutdown.
fn exits_once<T, F>(name: &'static str, starts: &Arc<AtomicU32>, outcome: F) -> ChildSpec
where
    F: Fn() -> T + Send + Sync + Clone + 'static,
    T: Future<Output = Result<(), String>> + Send + 'static,
{
    let starts = starts.clone();
    ChildSpec::worker(name, move |mailbox: Mailbox| {
        let n = starts.fetch_add(1, Ordering::SeqCst);
        let outcome = outcome.clone();
        async move {
            if n == 0 {
                let _: u32 = mailbox.recv_type().await.map_err(|e| e.to_string())?;
                return outcome().await;
            }
            let _ = mailbox.recv_type::<Shutdown>().await;
            Ok(())
        }
    })
}

async fn restart_policies<R: Runtime + Default>() {
    let node = Reign::<R>::local();
    let counts: Vec<Arc<AtomicU32>> = (0..5).map(|_| Arc::new(AtomicU32::new(0))).collect();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(exits_once("permanent-normal", &counts[0], || async {
            Ok(())
        }))
        .child(
            exits_once("transient-normal", &counts[1], || async { Ok(()) })
                .restart(Restart::Transient),
        )
        .child(
            exits_once("transient-error", &counts[2], || async {
                Err("bad".to_string())
            })
            .restart(Restart::Transient),
        )
        .child(
            exits_once("temporary-error", &counts[3], || async {
                Err("bad".to_string())
            })
            .restart(Restart::Temporary),
        )
        .child(
            exits_once("transient-panic", &counts[4], || async {
                if true {
                    panic!("oops");
                }
                Ok(())
            })
            .restart(Restart::Transient),
        );
    let sup = node.supervise("policies", spec);
    started::<R>(&sup, 5).await;
    for c in sup.which_children() {
        c.address.expect("running").send(1u32).expect("trigger");
    }
    let want = [
        ("permanent-normal", 1, None),
        ("transient-normal", 0, Some(ExitReason::Normal)),
        ("transient-error", 1, None),
        ("temporary-error", 0, Some(ExitReason::Error("bad".into()))),
        ("transient-panic", 1, None),
    ];
    let matches = || {
        sup.which_children()
            .iter()
            .zip(&want)
            .all(|(c, (name, restarts, stopped))| {
                c.name == *name
                    && c.restarts == *restarts
                    && match stopped {
                        Some(reason) => c.state == ChildState::Stopped(reason.clone()),
                        None => c.state == ChildState::Running,
                    }
            })
    };
    assert!(until::<R>(matches).await, "{:?}", sup.which_children());
    let started: Vec<u32> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(started, [2, 1, 2, 1, 2]);
    assert_eq!(sup.restarts(), 3);
    sup.shutdown();
    node.shutdown().await;
}

async fn a_parent_exit_takes_the_tree_down<R: Runtime + Default>() {
    let node = Reign::<R>::local();
    let log = events();
    let (_, parent) = node.new_mailbox();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(polite("a", &log))
        .child(polite("b", &log));
    let sup = node.supervise_linked(&parent.address(), "child-tree", spec);
    started::<R>(&sup, 2).await;
    let (watcher, notes) = node.new_mailbox();
    sup.address().on_close_notify(&watcher);
    parent.close_with(ExitReason::Error("parent failed".into()));
    let note: MailboxClosed = recv_on::<R, _>(&notes, WAIT).await;
    assert_eq!(
        note.reason,
        ExitReason::Error("parent failed".into()).linked(parent.id())
    );
    assert_eq!(taken(&log)[2..], ["stop b", "stop a"]);
    node.shutdown().await;
}

/// Starts node 1 of `cluster` at each call, with a task named `svc`
/// (echoing `u32`s back to the sender's address in the message), and keeps
/// the node in `slot`.
fn node_one<R: Runtime + Default>(
    cluster: &TestCluster,
    slot: &Arc<Mutex<Option<Reign<R>>>>,
    starts: &Arc<AtomicU32>,
) -> ChildSpec {
    let spec = cluster.spec(NodeId(1));
    let (slot, starts) = (slot.clone(), starts.clone());
    ChildSpec::node("node-1", move || {
        let (spec, slot, starts) = (spec.clone(), slot.clone(), starts.clone());
        async move {
            let node = Reign::<R>::start(&spec, NodeId(1))
                .await
                .map_err(|e| e.to_string())?;
            let svc = node.spawn(|mailbox: Mailbox| async move {
                while let Ok(msg) = mailbox.recv().await {
                    let _ = msg;
                }
            });
            node.register("svc", &svc).map_err(|e| e.to_string())?;
            starts.fetch_add(1, Ordering::SeqCst);
            *slot.lock().expect("slot") = Some(node.clone());
            Ok::<_, String>(node)
        }
    })
}

fn current<R: Runtime>(slot: &Arc<Mutex<Option<Reign<R>>>>) -> Reign<R> {
    slot.lock().expect("slot").clone().expect("a node started")
}

/// Waits for `ConnectionStatus` of node 1 on `notes` until one says
/// `connected`.
async fn status_of_one<R: Runtime + Default>(notes: &Mailbox, connected: bool) {
    loop {
        let status: ConnectionStatus = recv_on::<R, _>(notes, WAIT).await;
        if status.node == NodeId(1) && status.connected == connected {
            return;
        }
    }
}

async fn a_failed_node_is_restarted_and_rejoins<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let a = cluster.start_on::<R>(&[0], WAIT).await.remove(0);
    let host = Reign::<R>::local();
    let slot = Arc::new(Mutex::new(None));
    let starts = Arc::new(AtomicU32::new(0));
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(3, Duration::from_secs(60))
        .child(node_one::<R>(&cluster, &slot, &starts));
    let sup = host.supervise("cluster", spec);
    assert!(a.wait_for_peers(&[NodeId(1)], WAIT).await, "node 1 joins");
    started::<R>(&sup, 1).await;
    let first = current(&slot);
    first.sync().await;
    a.sync().await;
    let old_svc = a.lookup("svc").expect("node 1's name seen on node 0");
    let (_, statuses) = a.new_mailbox();
    a.subscribe_connection_status(&statuses.address());
    let (watcher, notes) = host.new_mailbox();
    address_of(&sup, "node-1").on_close_notify(&watcher);

    // A failure: the node stops, the supervisor starts it again, and node
    // 0 sees it leave and come back with a new incarnation and its name.
    let t = Instant::now();
    first.fail("health check failed").await;
    let note: MailboxClosed = recv_on::<R, _>(&notes, WAIT).await;
    assert_eq!(
        note.reason,
        ExitReason::Error("the node stopped: health check failed".into())
    );
    assert_eq!(first.failure().as_deref(), Some("health check failed"));
    status_of_one::<R>(&statuses, false).await;
    status_of_one::<R>(&statuses, true).await;
    let rejoined = t.elapsed();
    assert!(
        until::<R>(|| a.lookup("svc").is_some_and(|s| s.id() != old_svc.id())).await,
        "node 1's name comes back with the new incarnation"
    );
    let visible = t.elapsed();
    let second = current(&slot);
    assert_ne!(second.incarnation(), first.incarnation());
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    assert_eq!(child(&sup, "node-1").restarts, 1);
    assert_eq!(sup.restarts(), 1);
    assert!(until::<R>(|| child(&sup, "node-1").state == ChildState::Running).await);
    a.lookup("svc")
        .expect("the name")
        .send(1u32)
        .expect("the new incarnation takes messages");
    println!(
        "node failure to peer reconnected {rejoined:?}, to its name on the new incarnation {visible:?} ({})",
        std::any::type_name::<R>()
    );

    // Shutting the supervisor down shuts the node down, cleanly.
    sup.shutdown();
    status_of_one::<R>(&statuses, false).await;
    assert!(
        until::<R>(|| child(&sup, "node-1").state == ChildState::Stopped(ExitReason::Normal)).await
    );
    assert_eq!(second.failure(), None);
    assert_eq!(sup.restarts(), 1);

    // A clean shutdown of the node itself is not restarted.
    let sup = host.supervise(
        "cluster-again",
        SupervisorSpec::new(Strategy::OneForOne).child(node_one::<R>(&cluster, &slot, &starts)),
    );
    status_of_one::<R>(&statuses, true).await;
    started::<R>(&sup, 1).await;
    current(&slot).shutdown().await;
    assert!(
        until::<R>(|| child(&sup, "node-1").state == ChildState::Stopped(ExitReason::Normal)).await
    );
    assert_eq!(sup.restarts(), 0);
    assert_eq!(starts.load(Ordering::SeqCst), 3);
    sup.shutdown();
    a.shutdown().await;
}

/// Waits until `sup` has `n` children and all run.
async fn all_running<R: Runtime + Default>(sup: &SupervisorHandle, n: usize) -> bool {
    until::<R>(|| {
        let children = sup.which_children();
        children.len() == n && children.iter().all(|c| c.state == ChildState::Running)
    })
    .await
}

async fn restarts_and_escalations_are_counted_in_node_stats<R: Runtime + Default>() {
    let node = Reign::<R>::local();
    let log = events();
    let spec = SupervisorSpec::new(Strategy::OneForAll)
        .intensity(2, Duration::from_secs(60))
        .child(polite("a", &log))
        .child(polite("b", &log))
        .child(polite("c", &log));
    let (_, parent) = node.new_mailbox();
    parent.trap_exits(true);
    let sup = node.supervise_linked(&parent.address(), "counted", spec);
    started::<R>(&sup, 3).await;
    let before = node.stats();
    assert_eq!(
        (before.supervisor_restarts, before.supervisor_escalations),
        (0, 0)
    );
    // Each child started again counts once: a one-for-all restart of three
    // counts three; the intensity allows two such restarts.
    for round in 1..=2u64 {
        address_of(&sup, "b").kill().expect("kill b");
        assert!(
            until::<R>(|| sup.restarts() == 3 * round).await && all_running::<R>(&sup, 3).await
        );
        let stats = node.stats();
        assert_eq!(stats.supervisor_restarts, 3 * round);
        assert_eq!(stats.supervisor_escalations, 0);
    }
    // The third exceeds it: one escalation, no more restarts.
    address_of(&sup, "b").kill().expect("kill b");
    let exit: Exit = recv_on::<R, _>(&parent, WAIT).await;
    assert!(matches!(exit.reason, ExitReason::Error(_)), "{exit:?}");
    let stats = node.stats();
    assert_eq!(stats.supervisor_restarts, 6);
    assert_eq!(stats.supervisor_escalations, 1);
    node.shutdown().await;
}

/// A worker that records its start and its stop when asked to shut
/// down, and panics on any `u32`.
fn crashy(name: String, log: &Events) -> ChildSpec {
    let log = log.clone();
    ChildSpec::worker(name.clone(), move |mailbox: Mailbox| {
        push(&log, format!("start {name}"));
        let (log, name) = (log.clone(), name.clone());
        async move {
            while let Ok(msg) = mailbox.recv().await {
                if msg.is::<Shutdown>() {
                    push(&log, format!("stop {name}"));
                    return;
                }
                if msg.is::<u32>() {
                    panic!("{name} asked to crash");
                }
            }
        }
    })
}

async fn simple_one_for_one_starts_children_from_a_template<R: Runtime + Default>() {
    let node = Reign::<R>::local();
    let log = events();
    let made = log.clone();
    let spec = SupervisorSpec::simple_one_for_one(move |n: u32| {
        crashy(format!("w{n}"), &made).register(format!("pool.w{n}"))
    })
    .intensity(10, Duration::from_secs(60))
    .max_children(3);
    let sup = node.supervise("pool", spec);
    assert_eq!(sup.which_children().len(), 0, "no children of its own");
    // Up to the limit, in order; a name taken is refused; over the limit.
    let mut addresses = Vec::new();
    for n in 1..=3u32 {
        let address = sup
            .start_child_with(n)
            .await
            .expect("a child from the template");
        assert_eq!(node.lookup(&format!("pool.w{n}")), Some(address.clone()));
        addresses.push(address);
    }
    assert_eq!(taken(&log), ["start w1", "start w2", "start w3"]);
    assert_eq!(
        sup.start_child_with(1u32).await,
        Err(ChildError::AlreadyStarted(addresses[0].clone()))
    );
    assert_eq!(
        sup.start_child_with(4u32).await,
        Err(ChildError::TooManyChildren(3))
    );
    assert_eq!(
        sup.start_child_with("w4").await,
        Err(ChildError::WrongArgument("u32"))
    );
    // A crash restarts that child only, under its name.
    addresses[1].send(0u32).expect("crash w2");
    assert!(until::<R>(|| child(&sup, "w2").restarts == 1).await);
    assert!(all_running::<R>(&sup, 3).await);
    assert_eq!(taken(&log), ["start w2"]);
    assert_eq!(child(&sup, "w1").restarts + child(&sup, "w3").restarts, 0);
    // Terminated: stopped, kept, counted, not restarted; deleted: gone.
    assert_eq!(sup.delete_child("w1").await, Err(ChildError::Running));
    sup.terminate_child("w1").await.expect("terminate w1");
    assert_eq!(taken(&log), ["stop w1"]);
    assert_eq!(
        child(&sup, "w1").state,
        ChildState::Stopped(ExitReason::Normal)
    );
    assert!(until::<R>(|| node.lookup("pool.w1").is_none()).await);
    assert_eq!(
        sup.start_child_with(1u32).await,
        Err(ChildError::AlreadyPresent)
    );
    assert_eq!(
        sup.start_child_with(4u32).await,
        Err(ChildError::TooManyChildren(3))
    );
    sup.terminate_child("w1")
        .await
        .expect("terminating a stopped child is ok");
    sup.delete_child("w1").await.expect("delete w1");
    assert_eq!(sup.delete_child("w1").await, Err(ChildError::NotFound));
    assert_eq!(sup.terminate_child("w1").await, Err(ChildError::NotFound));
    assert_eq!(sup.restart_child("w1").await, Err(ChildError::NotFound));
    let w4 = sup.start_child_with(4u32).await.expect("room again");
    let names: Vec<String> = sup.which_children().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["w2", "w3", "w4"]);
    assert_eq!(sup.restart_child("w4").await, Err(ChildError::Running));
    // Restarted by name: a new address under its name.
    sup.terminate_child("w4").await.expect("terminate w4");
    let w4_again = sup.restart_child("w4").await.expect("restart w4");
    assert_ne!(w4_again.id(), w4.id());
    assert_eq!(node.lookup("pool.w4"), Some(w4_again));
    assert_eq!(
        sup.start_child(polite("plain", &log)).await,
        Err(ChildError::TooManyChildren(3))
    );
    // Without a template, and once the supervisor is gone.
    let plain = node.supervise("plain", SupervisorSpec::new(Strategy::OneForOne));
    assert_eq!(
        plain.start_child_with(1u32).await,
        Err(ChildError::NoTemplate)
    );
    let (watcher, notes) = node.new_mailbox();
    sup.address().on_close_notify(&watcher);
    sup.shutdown();
    let _: MailboxClosed = recv_on::<R, _>(&notes, WAIT).await;
    assert_eq!(
        sup.start_child_with(5u32).await,
        Err(ChildError::SupervisorGone)
    );
    assert_eq!(
        sup.terminate_child("w2").await,
        Err(ChildError::SupervisorGone)
    );
    plain.shutdown();
    node.shutdown().await;
}

/// Children added at run time, under `strategy`: static `a` and `b`,
/// then `c` and `d` added, `d` terminated; `b` crashes.
async fn dynamic_children_under<R: Runtime + Default>(
    node: &Reign<R>,
    strategy: Strategy,
    expected: &[&str],
) {
    let log = events();
    let spec = SupervisorSpec::new(strategy)
        .intensity(10, Duration::from_secs(60))
        .child(crashy("a".into(), &log))
        .child(crashy("b".into(), &log));
    let sup = node.supervise(format!("dynamic {strategy:?}"), spec);
    started::<R>(&sup, 2).await;
    sup.start_child(crashy("c".into(), &log))
        .await
        .expect("add c");
    sup.start_child(crashy("d".into(), &log))
        .await
        .expect("add d");
    sup.terminate_child("d").await.expect("terminate d");
    assert_eq!(
        taken(&log),
        ["start a", "start b", "start c", "start d", "stop d"]
    );
    address_of(&sup, "b").send(0u32).expect("crash b");
    assert!(
        until::<R>(|| child(&sup, "b").restarts == 1
            && ["a", "b", "c"]
                .iter()
                .all(|n| child(&sup, n).state == ChildState::Running))
        .await,
        "{strategy:?}: {:?}",
        sup.which_children()
    );
    assert!(until::<R>(|| log.lock().expect("log").len() >= expected.len()).await);
    assert_eq!(taken(&log), expected, "{strategy:?}");
    // The terminated child stays stopped whatever the strategy.
    assert_eq!(
        child(&sup, "d").state,
        ChildState::Stopped(ExitReason::Normal),
        "{strategy:?}"
    );
    // Shutdown: reverse start order, the added children first.
    let (watcher, notes) = node.new_mailbox();
    sup.address().on_close_notify(&watcher);
    sup.shutdown();
    let _: MailboxClosed = recv_on::<R, _>(&notes, WAIT).await;
    assert_eq!(taken(&log), ["stop c", "stop b", "stop a"], "{strategy:?}");
}

async fn dynamic_children_follow_each_strategy<R: Runtime + Default>() {
    let node = Reign::<R>::local();
    dynamic_children_under(&node, Strategy::OneForOne, &["start b"]).await;
    dynamic_children_under(
        &node,
        Strategy::RestForOne,
        &["stop c", "start b", "start c"],
    )
    .await;
    dynamic_children_under(
        &node,
        Strategy::OneForAll,
        &["stop c", "stop a", "start a", "start b", "start c"],
    )
    .await;
    node.shutdown().await;
}

reign_tests::on_every_runtime!(
    restarts_and_escalations_are_counted_in_node_stats,
    simple_one_for_one_starts_children_from_a_template,
    dynamic_children_follow_each_strategy,
    a_failed_node_is_restarted_and_rejoins,
    crashed_child_comes_back_under_its_name_on_another_node,
    intensity_exceeded_escalates_to_the_parent,
    a_parent_on_another_node_gets_the_escalation,
    strategies_restart_the_right_siblings_in_order,
    shutdown_is_reverse_order_and_kills_after_the_timeout,
    restart_policies,
    intensity_counts_restarts_within_the_period,
    a_parent_exit_takes_the_tree_down,
);
