//! Supervisors: Erlang's `supervisor` (and suture's) on top of tasks tied
//! to mailboxes and links, the same on every runtime.
//!
//! A supervisor is a task ([`Reign::spawn`]) whose mailbox traps exits. It
//! starts its children in order (a child's start closure has run before
//! the next child's is called), each with [`Node::task_linked`] so the
//! link exists before the child runs, registers the names its spec lists
//! for the child's address before the child is spawned, and then waits for
//! [`Exit`] messages: a child's exit is restarted or not by its
//! [`Restart`] policy, with its siblings as the [`Strategy`] says, within a
//! restart intensity (at most `max_restarts` in `period`); past it the
//! supervisor shuts its children down and exits with an error reason, which
//! its own link hands to its parent (a supervisor is a child like any
//! other: [`ChildSpec::supervisor`]). Children are shut down in reverse
//! start order: each is sent [`Shutdown`], and killed
//! ([`Address::kill`]) if it has not exited within its timeout.
//!
//! What a supervisor does is visible without messages: its
//! [`SupervisorHandle`] reads a report the supervisor keeps up to date
//! (each child's name, address, restart count and state, nested
//! supervisors' children too), restarts are logged at INFO and an intensity
//! exceeded at ERROR.
//!
//! Time is the caller's: the intensity window, the backoff and the
//! shutdown timeouts are durations in the spec, so tests use short ones.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use reign_proto::poison::lock;
use reign_proto::{
    Address, Exit, ExitReason, Mailbox, MailboxClosed, MailboxId, Message, TaskExit,
};
use serde::{Deserialize, Serialize};

use crate::signal::{race, Either};
use crate::{Reign, Runtime};

/// The wire name of [`Shutdown`] (stable across releases).
const SHUTDOWN_TYPE: &str = "reign.supervisor.Shutdown";

/// How long a supervisor waits for a killed child's close notice: a kill
/// ends a task at its next poll, so this only bounds a runtime that never
/// polls it again (a child blocking its thread), after which the
/// supervisor goes on without the notice rather than hang.
const KILL_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a supervisor waits for a child's start closure to run before
/// it starts the next child anyway: the closure runs at the task's first
/// poll, so this only bounds a runtime too busy to poll it; a start is never
/// refused for it.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Erlang's default restart intensity: at most 3 restarts …
pub const DEFAULT_MAX_RESTARTS: u32 = 3;
/// … in 5 seconds.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(5);
/// Erlang's default per-child shutdown timeout for workers (5 s).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks a supervised child (or a supervisor) to stop. A supervisor sends it
/// to each child it shuts down; a child that wants to clean up receives it
/// (`mailbox.recv_type::<Shutdown>()`, or `recv_match`) and returns. A
/// child that ignores it is killed after its shutdown timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shutdown;

fn register_types() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = reign_proto::register_type_named::<Shutdown>(SHUTDOWN_TYPE) {
            tracing::error!(error = %e, "cannot register the supervisor's Shutdown message");
        }
    });
}

/// Which children a supervisor restarts when one of them exits and is to
/// be restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Only the child that exited (Erlang's `one_for_one`, suture's only
    /// strategy).
    OneForOne,
    /// Every child: the others are shut down in reverse start order, then
    /// all are started again in order (`one_for_all`).
    OneForAll,
    /// The child that exited and every child started after it: those are
    /// shut down in reverse order, then started again in order
    /// (`rest_for_one`).
    RestForOne,
}

/// When a child is restarted after it exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Always, whatever its exit (Erlang's `permanent`).
    Permanent,
    /// Only after an abnormal exit ([`ExitReason::is_normal`] false).
    Transient,
    /// Never; its exit changes nothing for its siblings either.
    Temporary,
}

/// What a child is now, in a [`ChildInfo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChildState {
    /// Not started yet (the supervisor is starting its children in order).
    NotStarted,
    /// Running at [`ChildInfo::address`] (its start closure has run).
    Running,
    /// Exited and waiting for its restart (during a backoff).
    Restarting,
    /// Exited and not to be restarted (its policy said so, or the
    /// supervisor stopped), with its last exit reason.
    Stopped(ExitReason),
}

type StartFn =
    Arc<dyn Fn(Mailbox) -> Pin<Box<dyn Future<Output = ExitReason> + Send>> + Send + Sync>;

/// One child of a supervisor: how to start it, under which name it
/// appears in reports and logs, when to restart it, how long it has to
/// shut down, and the registry names its address takes at each start.
#[derive(Clone)]
pub struct ChildSpec {
    name: String,
    start: StartFn,
    restart: Restart,
    shutdown: Duration,
    names: Vec<String>,
    nested: Option<Arc<Mutex<Report>>>,
}

impl ChildSpec {
    /// A worker: `start` is called at each (re)start with the new mailbox
    /// and returns the child's future; the mailbox closes with its exit
    /// (see [`Reign::spawn`]). Permanent, with a shutdown timeout of
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`] and no names.
    pub fn worker<F, Fut>(name: impl Into<String>, start: F) -> ChildSpec
    where
        F: Fn(Mailbox) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: TaskExit,
    {
        ChildSpec {
            name: name.into(),
            start: Arc::new(move |mailbox| {
                let future = start(mailbox);
                Box::pin(async move { future.await.into_exit_reason() })
            }),
            restart: Restart::Permanent,
            shutdown: DEFAULT_SHUTDOWN_TIMEOUT,
            names: Vec::new(),
            nested: None,
        }
    }

    /// A supervisor as a child (a nested tree) running on `node`: it is
    /// restarted by its parent like a worker, with its own children
    /// started anew. Permanent; its shutdown timeout is the sum of its
    /// children's plus a second, so its own shutdown has time to run. The
    /// nested report its parent's
    /// [`which_children`](SupervisorHandle::which_children) shows is shared
    /// by clones of the returned spec: give each place in a tree its own.
    pub fn supervisor<R: Runtime>(
        name: impl Into<String>,
        node: &Reign<R>,
        spec: SupervisorSpec,
    ) -> ChildSpec {
        let name = name.into();
        let report = Arc::new(Mutex::new(Report::new(&name, &spec)));
        let shutdown = spec
            .children
            .iter()
            .map(|c| c.shutdown)
            .fold(Duration::from_secs(1), |a, b| a.saturating_add(b));
        let node = node.clone();
        let shared = report.clone();
        let sup_name = name.clone();
        ChildSpec {
            name,
            start: Arc::new(move |mailbox| {
                Box::pin(run(
                    node.clone(),
                    mailbox,
                    sup_name.clone(),
                    spec.clone(),
                    shared.clone(),
                ))
            }),
            restart: Restart::Permanent,
            shutdown,
            names: Vec::new(),
            nested: Some(report),
        }
    }

    /// The restart policy (default [`Restart::Permanent`]).
    pub fn restart(mut self, restart: Restart) -> ChildSpec {
        self.restart = restart;
        self
    }

    /// How long the child has to exit after [`Shutdown`] before it is
    /// killed; `Duration::ZERO` kills it at once (Erlang's
    /// `brutal_kill`).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> ChildSpec {
        self.shutdown = timeout;
        self
    }

    /// A registry name for the child's address: the supervisor registers
    /// it at every start, before the child runs, so after a restart the
    /// name resolves to the new address (on other nodes once the registry
    /// change has spread: `node.sync()` waits for it). The old address's
    /// claim goes when its mailbox closes.
    pub fn register(mut self, name: impl Into<String>) -> ChildSpec {
        self.names.push(name.into());
        self
    }

    /// The child's name in reports and logs.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("names", &self.names)
            .field("supervisor", &self.nested.is_some())
            .finish()
    }
}

/// A supervisor's strategy, restart intensity, backoff and children (in
/// start order).
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    strategy: Strategy,
    max_restarts: u32,
    period: Duration,
    backoff: Duration,
    children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// A supervisor with `strategy`, no children yet, Erlang's default
    /// intensity ([`DEFAULT_MAX_RESTARTS`] in [`DEFAULT_PERIOD`]) and no
    /// backoff.
    pub fn new(strategy: Strategy) -> SupervisorSpec {
        SupervisorSpec {
            strategy,
            max_restarts: DEFAULT_MAX_RESTARTS,
            period: DEFAULT_PERIOD,
            backoff: Duration::ZERO,
            children: Vec::new(),
        }
    }

    /// At most `max_restarts` restarts in any `period`: the one more
    /// makes the supervisor shut its children down and exit with
    /// [`ExitReason::Error`] ("restart intensity exceeded …"). `0`
    /// restarts means any exit to be restarted ends the supervisor.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> SupervisorSpec {
        self.max_restarts = max_restarts;
        self.period = period;
        self
    }

    /// A pause before each restart (suture's `FailureBackoff`, applied to
    /// every restart): a child that fails at once then does not spin.
    /// Messages to the supervisor wait during it.
    pub fn backoff(mut self, backoff: Duration) -> SupervisorSpec {
        self.backoff = backoff;
        self
    }

    /// Adds a child, started after those added before it.
    pub fn child(mut self, child: ChildSpec) -> SupervisorSpec {
        self.children.push(child);
        self
    }
}

/// What a supervisor reports about one child.
#[derive(Clone, Debug)]
pub struct ChildInfo {
    /// The child's name from its spec.
    pub name: String,
    /// Its current address, from its start (`None` when it is not
    /// running).
    pub address: Option<Address>,
    /// How many times it has been restarted.
    pub restarts: u32,
    /// What it is now.
    pub state: ChildState,
    /// A nested supervisor's own children (empty for a worker).
    pub children: Vec<ChildInfo>,
}

/// The supervisor's report, kept up to date by its task and read by its
/// handle (and by its parent's report, for a nested one).
struct Report {
    name: String,
    address: Option<Address>,
    children: Vec<ChildInfo>,
    nested: Vec<Option<Arc<Mutex<Report>>>>,
    restarts: u64,
    exit: Option<ExitReason>,
}

impl Report {
    fn new(name: &str, spec: &SupervisorSpec) -> Report {
        Report {
            name: name.to_string(),
            address: None,
            children: spec
                .children
                .iter()
                .map(|c| ChildInfo {
                    name: c.name.clone(),
                    address: None,
                    restarts: 0,
                    state: ChildState::NotStarted,
                    children: Vec::new(),
                })
                .collect(),
            nested: spec.children.iter().map(|c| c.nested.clone()).collect(),
            restarts: 0,
            exit: None,
        }
    }

    fn children(&self) -> Vec<ChildInfo> {
        let mut children = self.children.clone();
        for (child, nested) in children.iter_mut().zip(&self.nested) {
            if let Some(nested) = nested {
                child.children = lock(nested).children();
            }
        }
        children
    }
}

/// A running supervisor, to ask what it does and to stop it. Cloning gives
/// another handle to the same supervisor; dropping every handle leaves it
/// running.
#[derive(Clone)]
pub struct SupervisorHandle {
    address: Address,
    report: Arc<Mutex<Report>>,
}

impl SupervisorHandle {
    /// The supervisor's address: link to it or watch it; killing it kills
    /// its children through their links.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Each child in start order: name, address, restart count, state, and
    /// for a nested supervisor its children (Erlang's `which_children`).
    pub fn which_children(&self) -> Vec<ChildInfo> {
        lock(&self.report).children()
    }

    /// How many restarts this supervisor has made (each child restarted
    /// counts once).
    pub fn restarts(&self) -> u64 {
        lock(&self.report).restarts
    }

    /// Why the supervisor exited, once it has.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        lock(&self.report).exit.clone()
    }

    /// Asks the supervisor to shut its children down in reverse start
    /// order (each within its timeout) and exit normally. Returns at once;
    /// watch [`address`](SupervisorHandle::address) to know when it is
    /// done.
    pub fn shutdown(&self) {
        let _ = self.address.send(Shutdown);
    }
}

impl std::fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let report = lock(&self.report);
        f.debug_struct("SupervisorHandle")
            .field("name", &report.name)
            .field("address", &self.address)
            .field("restarts", &report.restarts)
            .finish()
    }
}

impl<R: Runtime> Reign<R> {
    /// Starts a supervisor named `name` (in logs) running `spec` as a task
    /// of this node, and returns its handle.
    ///
    /// ```no_run
    /// # async fn tree<R: reign_driver::Runtime>(node: reign_driver::Reign<R>) {
    /// use std::time::Duration;
    /// use reign_driver::api::{ChildSpec, Restart, Strategy, SupervisorSpec};
    ///
    /// let spec = SupervisorSpec::new(Strategy::OneForOne)
    ///     .intensity(3, Duration::from_secs(5))
    ///     .child(
    ///         ChildSpec::worker("echo", |mailbox| async move {
    ///             while let Ok(msg) = mailbox.recv().await {
    ///                 let _ = msg;
    ///             }
    ///         })
    ///         .register("echo"),
    ///     )
    ///     .child(ChildSpec::worker("once", |_| async {}).restart(Restart::Transient));
    /// let supervisor = node.supervise("top", spec);
    /// for child in supervisor.which_children() {
    ///     println!("{} {:?} restarted {}", child.name, child.state, child.restarts);
    /// }
    /// # }
    /// ```
    pub fn supervise(&self, name: impl Into<String>, spec: SupervisorSpec) -> SupervisorHandle {
        self.start_supervisor(None, name.into(), spec)
    }

    /// [`supervise`](Reign::supervise), linked to `parent` before it
    /// starts: when the supervisor gives up (intensity exceeded) `parent`
    /// gets the exit, and when `parent` exits abnormally the supervisor
    /// shuts its children down and exits too.
    pub fn supervise_linked(
        &self,
        parent: &Address,
        name: impl Into<String>,
        spec: SupervisorSpec,
    ) -> SupervisorHandle {
        self.start_supervisor(Some(parent), name.into(), spec)
    }

    /// A supervisor running `spec` on this node, as a child of another
    /// supervisor (a nested tree): [`ChildSpec::supervisor`] as a method.
    pub fn child_supervisor(&self, name: impl Into<String>, spec: SupervisorSpec) -> ChildSpec {
        ChildSpec::supervisor(name, self, spec)
    }

    fn start_supervisor(
        &self,
        parent: Option<&Address>,
        name: String,
        spec: SupervisorSpec,
    ) -> SupervisorHandle {
        register_types();
        let report = Arc::new(Mutex::new(Report::new(&name, &spec)));
        let node = self.clone();
        let shared = report.clone();
        let body = move |mailbox| run(node, mailbox, name, spec, shared);
        let address = match parent {
            Some(parent) => self.spawn_linked(parent, body),
            None => self.spawn(body),
        };
        SupervisorHandle { address, report }
    }
}

/// One child as the running supervisor sees it.
struct Child {
    spec: ChildSpec,
    address: Option<Address>,
}

/// A running supervisor's state.
struct Supervisor<R: Runtime> {
    node: Reign<R>,
    mailbox: Mailbox,
    me: Address,
    name: String,
    strategy: Strategy,
    max_restarts: u32,
    period: Duration,
    backoff: Duration,
    children: Vec<Child>,
    /// When each restart within the current window happened.
    recent: VecDeque<Instant>,
    report: Arc<Mutex<Report>>,
}

/// The supervisor's task body.
async fn run<R: Runtime>(
    node: Reign<R>,
    mailbox: Mailbox,
    name: String,
    spec: SupervisorSpec,
    report: Arc<Mutex<Report>>,
) -> ExitReason {
    register_types();
    mailbox.trap_exits(true);
    let me = mailbox.address();
    *lock(&report) = Report::new(&name, &spec);
    lock(&report).address = Some(me.clone());
    let mut sup = Supervisor {
        node,
        mailbox,
        me,
        name,
        strategy: spec.strategy,
        max_restarts: spec.max_restarts,
        period: spec.period,
        backoff: spec.backoff,
        children: spec
            .children
            .into_iter()
            .map(|spec| Child {
                spec,
                address: None,
            })
            .collect(),
        recent: VecDeque::new(),
        report,
    };
    let reason = sup.supervise().await;
    lock(&sup.report).exit = Some(reason.clone());
    reason
}

impl<R: Runtime> Supervisor<R> {
    async fn supervise(&mut self) -> ExitReason {
        for i in 0..self.children.len() {
            self.start_child(i).await;
        }
        loop {
            let Ok(msg) = self.mailbox.recv().await else {
                // Closed from outside: the task ends at its next poll.
                return ExitReason::Killed;
            };
            if msg.is::<Shutdown>() {
                tracing::info!(supervisor = %self.name, "supervisor shutting down");
                self.stop_all(0).await;
                return ExitReason::Normal;
            }
            let Ok(exit) = msg.downcast::<Exit>() else {
                // A stale close notice of a child already shut down, or
                // anything else: nothing to do.
                continue;
            };
            let Some(i) = self.child_index(exit.from) else {
                if exit.reason.is_normal() {
                    continue;
                }
                // The parent (or another linked mailbox) exited abnormally.
                tracing::info!(supervisor = %self.name, reason = %exit.reason, "linked exit: shutting down");
                self.stop_all(0).await;
                return exit.reason.linked(exit.from);
            };
            if let Some(reason) = self.child_exited(i, exit.reason).await {
                return reason;
            }
        }
    }

    fn child_index(&self, id: MailboxId) -> Option<usize> {
        self.children
            .iter()
            .position(|c| c.address.as_ref().is_some_and(|a| a.id() == id))
    }

    fn set_state(&self, i: usize, state: ChildState, address: Option<Address>) {
        let mut report = lock(&self.report);
        if let Some(info) = report.children.get_mut(i) {
            info.state = state;
            info.address = address;
        }
    }

    /// Starts child `i`: its mailbox linked to this supervisor and its
    /// names registered before it runs; returns once its start closure has
    /// run (on the runtime, at the task's first poll), so children start in
    /// order.
    async fn start_child(&mut self, i: usize) {
        let child = &mut self.children[i];
        let start = child.spec.start.clone();
        let (started, has_started) = async_channel::bounded::<()>(1);
        let (address, task) = self.node.node.task_linked(&self.me, move |mailbox| {
            let future = start(mailbox);
            let _ = started.try_send(());
            future
        });
        // Reported before its names can lead anyone to it.
        if let Some(info) = lock(&self.report).children.get_mut(i) {
            info.address = Some(address.clone());
        }
        for name in &child.spec.names {
            if let Err(e) = self.node.register(name, &address) {
                tracing::warn!(supervisor = %self.name, child = %child.spec.name, %name, error = %e, "cannot register the child's name");
            }
        }
        self.node.rt.spawn(task);
        child.address = Some(address.clone());
        // Err when the task ended before its start (killed at once): go on.
        let _ = race(has_started.recv(), self.node.rt.sleep(START_TIMEOUT)).await;
        self.set_state(i, ChildState::Running, Some(address));
    }

    /// Child `i` exited with `reason`: restarts what the policy and the
    /// strategy say, or returns the supervisor's own exit reason when the
    /// restart intensity is exceeded.
    async fn child_exited(&mut self, i: usize, reason: ExitReason) -> Option<ExitReason> {
        self.children[i].address = None;
        let restart = match self.children[i].spec.restart {
            Restart::Permanent => true,
            Restart::Transient => !reason.is_normal(),
            Restart::Temporary => false,
        };
        if !restart {
            tracing::debug!(supervisor = %self.name, child = %self.children[i].spec.name, %reason, "child exited, not restarted");
            self.set_state(i, ChildState::Stopped(reason), None);
            return None;
        }
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= self.period)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        if self.recent.len() > self.max_restarts as usize {
            let why = format!(
                "restart intensity exceeded: more than {} restarts in {:?} (child {} exited: {reason})",
                self.max_restarts, self.period, self.children[i].spec.name
            );
            tracing::error!(supervisor = %self.name, child = %self.children[i].spec.name, %reason, max_restarts = self.max_restarts, period = ?self.period, "restart intensity exceeded: the supervisor shuts its children down and exits");
            self.set_state(i, ChildState::Stopped(reason), None);
            self.stop_all(0).await;
            return Some(ExitReason::Error(why));
        }
        self.set_state(i, ChildState::Restarting, None);
        // The siblings that go down and come back with it, in start order.
        let group: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![i],
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (i..self.children.len()).collect(),
        };
        for &j in group.iter().rev() {
            if j != i {
                self.stop_child(j).await;
            }
        }
        if !self.backoff.is_zero() {
            self.node.rt.sleep(self.backoff).await;
        }
        for &j in &group {
            let spec = &self.children[j].spec;
            let comes_back = j == i || spec.restart != Restart::Temporary;
            if !comes_back {
                continue;
            }
            let restarts = {
                let mut report = lock(&self.report);
                report.restarts += 1;
                let info = &mut report.children[j];
                info.restarts += 1;
                info.restarts
            };
            tracing::info!(supervisor = %self.name, child = %spec.name, cause = %self.children[i].spec.name, %reason, restarts, "restarting child");
            self.start_child(j).await;
        }
        None
    }

    /// Shuts down every running child from the last started to the
    /// `from`-th.
    async fn stop_all(&mut self, from: usize) {
        for j in (from..self.children.len()).rev() {
            self.stop_child(j).await;
        }
    }

    /// Shuts child `j` down: unlinks it, sends [`Shutdown`], waits its
    /// timeout for it to exit, kills it if it has not.
    async fn stop_child(&mut self, j: usize) {
        let Some(address) = self.children[j].address.take() else {
            return;
        };
        let id = address.id();
        self.mailbox.unlink(&address);
        address.on_close_notify(&self.me);
        let timeout = self.children[j].spec.shutdown;
        let mut reason = None;
        let asked = !timeout.is_zero() && address.send(Shutdown).is_ok();
        if asked {
            reason = self.wait_closed(id, timeout).await;
        }
        let reason = match reason {
            Some(reason) => reason,
            None => {
                if asked {
                    tracing::warn!(supervisor = %self.name, child = %self.children[j].spec.name, ?timeout, "child ignored its shutdown: killed");
                }
                let _ = address.kill();
                self.wait_closed(id, KILL_CONFIRM_TIMEOUT)
                    .await
                    .unwrap_or(ExitReason::Killed)
            }
        };
        // An exit the child sent before the unlink is stale now.
        self.purge(id);
        self.set_state(j, ChildState::Stopped(reason), None);
    }

    /// Waits at most `timeout` for the close notice of `id`.
    async fn wait_closed(&self, id: MailboxId, timeout: Duration) -> Option<ExitReason> {
        let pred = move |m: &Message| {
            m.downcast_ref::<MailboxClosed>()
                .is_some_and(|c| c.id == id)
                || m.downcast_ref::<Exit>().is_some_and(|e| e.from == id)
        };
        match race(self.mailbox.recv_match(pred), self.node.rt.sleep(timeout)).await {
            Either::Left(Ok(msg)) => Some(close_reason(msg)),
            Either::Left(Err(_)) | Either::Right(()) => None,
        }
    }

    /// Drops queued notices about `id` (its exit crossed the unlink).
    fn purge(&self, id: MailboxId) {
        let pred = move |m: &Message| {
            m.downcast_ref::<MailboxClosed>()
                .is_some_and(|c| c.id == id)
                || m.downcast_ref::<Exit>().is_some_and(|e| e.from == id)
        };
        loop {
            let mut recv = std::pin::pin!(self.mailbox.recv_match(pred));
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            match recv.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(Ok(_)) => continue,
                _ => return,
            }
        }
    }
}

/// The exit reason in a close notice or an exit message.
fn close_reason(msg: Message) -> ExitReason {
    match msg.downcast::<MailboxClosed>() {
        Ok(closed) => closed.reason,
        Err(msg) => msg
            .downcast::<Exit>()
            .map(|e| e.reason)
            .unwrap_or(ExitReason::Unspecified),
    }
}
