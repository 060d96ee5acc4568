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

use std::any::Any;
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

/// The default most children a supervisor holds ([`SupervisorSpec::
/// max_children`]): its report, its restart groups and its shutdown are
/// linear in its children, so a loop that adds children without end meets
/// [`ChildError::TooManyChildren`] instead of growing the supervisor
/// without bound. Ten thousand workers under one supervisor is already
/// more than a report can show usefully; a larger pool is a tree.
pub const DEFAULT_MAX_CHILDREN: usize = 10_000;

/// How many changes to its children ([`SupervisorHandle::start_child`] and
/// the rest) may wait for a supervisor that is busy (restarting, or in a
/// backoff); further callers wait for room, so the queue stays bounded.
const COMMAND_BACKLOG: usize = 64;

/// Erlang's default restart intensity: at most 3 restarts …
pub const DEFAULT_MAX_RESTARTS: u32 = 3;
/// … in 5 seconds.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(5);
/// Erlang's default per-child shutdown timeout for workers (5 s).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The default shutdown timeout of a [`ChildSpec::node`]: a node's graceful
/// shutdown drains its outbound queues for up to `Tuning::drain_timeout`
/// (5 s by default) and then gives each connection 2 s to flush its
/// goodbye; 15 s covers both with room before the node is left to finish
/// on its own.
pub const DEFAULT_NODE_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

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

/// A node handle a supervisor can run ([`ChildSpec::node`]): [`Reign`]
/// and each adapter's `Node`.
pub trait IntoReign: Send + 'static {
    /// The runtime the node runs on.
    type Runtime: Runtime;
    /// The runtime-generic node.
    fn into_reign(self) -> Reign<Self::Runtime>;
}

impl<R: Runtime> IntoReign for Reign<R> {
    type Runtime = R;

    fn into_reign(self) -> Reign<R> {
        self
    }
}

/// The body of a [`ChildSpec::node`] child: starts the node, then waits
/// for it to stop (the exit says whether with a failure) or for a
/// [`Shutdown`] (the node is shut down gracefully).
async fn run_node<N, E, Fut>(mailbox: Mailbox, starting: Fut) -> ExitReason
where
    N: IntoReign,
    E: std::fmt::Display,
    Fut: Future<Output = Result<N, E>>,
{
    let node = match starting.await {
        Ok(node) => node.into_reign(),
        Err(e) => return ExitReason::Error(format!("the node did not start: {e}")),
    };
    // A kill drops this future: the node is shut down anyway.
    let mut guard = ShutdownOnDrop(Some(node.clone()));
    let reason = loop {
        match race(mailbox.recv(), node.stopped()).await {
            Either::Left(Ok(msg)) => {
                if msg.is::<Shutdown>() {
                    node.shutdown().await;
                    break ExitReason::Normal;
                }
            }
            // Closed from outside: the task ends at its next poll and the
            // guard shuts the node down.
            Either::Left(Err(_)) => break ExitReason::Killed,
            Either::Right(()) => {
                break match node.failure() {
                    Some(failure) => ExitReason::Error(format!("the node stopped: {failure}")),
                    None => ExitReason::Normal,
                }
            }
        }
    };
    if !matches!(reason, ExitReason::Killed) {
        guard.0 = None;
    }
    reason
}

/// Shuts a supervised node down (on its own runtime) when its child's
/// future is dropped before the node stopped.
struct ShutdownOnDrop<R: Runtime>(Option<Reign<R>>);

impl<R: Runtime> Drop for ShutdownOnDrop<R> {
    fn drop(&mut self) {
        if let Some(node) = self.0.take() {
            let rt = node.rt.clone();
            rt.spawn(async move { node.shutdown().await });
        }
    }
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
                    async_channel::bounded(COMMAND_BACKLOG),
                ))
            }),
            restart: Restart::Permanent,
            shutdown,
            names: Vec::new(),
            nested: Some(report),
        }
    }

    /// A whole node as a child (Go reign's `Cluster` under suture): `start`
    /// is called at each (re)start and starts the node (`Node::start(&spec,
    /// id)`, or anything that returns one). The child runs as long as the
    /// node does: a node that stops with a failure (its
    /// [`failure`](Reign::failure): another process took its id, its driver
    /// task panicked, [`Reign::fail`] was called) exits the child with
    /// [`ExitReason::Error`] and is started again; one that cannot start
    /// exits it the same way (so a port that stays taken ends in the
    /// restart intensity, not in a loop); a clean
    /// [`shutdown`](Reign::shutdown) exits it normally. Shutting the child
    /// down shuts its node down gracefully; killing it (after its timeout)
    /// lets the node finish its shutdown on its own runtime.
    ///
    /// [`Restart::Transient`] (a clean shutdown is not restarted), with a
    /// shutdown timeout of [`DEFAULT_NODE_SHUTDOWN_TIMEOUT`]. The
    /// supervisor may run on another node of any runtime, usually a local
    /// one (`Node::local()`). To reach the node of the current
    /// incarnation, `start` keeps it where the application finds it:
    ///
    /// ```no_run
    /// # async fn tree<R: reign_driver::Runtime + Default>(spec: reign_driver::api::ClusterSpec) {
    /// use std::sync::{Arc, Mutex};
    /// use reign_driver::api::{ChildSpec, NodeId, Strategy, SupervisorSpec};
    /// use reign_driver::Reign;
    ///
    /// let current: Arc<Mutex<Option<Reign<R>>>> = Arc::default();
    /// let slot = current.clone();
    /// let child = ChildSpec::node("node-1", move || {
    ///     let (spec, slot) = (spec.clone(), slot.clone());
    ///     async move {
    ///         let node = Reign::<R>::start(&spec, NodeId(1)).await?;
    ///         *slot.lock().unwrap() = Some(node.clone());
    ///         Ok::<_, reign_driver::StartError>(node)
    ///     }
    /// });
    /// let host = Reign::<R>::local();
    /// let supervisor = host.supervise("cluster", SupervisorSpec::new(Strategy::OneForOne).child(child));
    /// # let _ = supervisor;
    /// # }
    /// ```
    pub fn node<N, E, F, Fut>(name: impl Into<String>, start: F) -> ChildSpec
    where
        N: IntoReign,
        E: std::fmt::Display + Send + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<N, E>> + Send + 'static,
    {
        let start = Arc::new(start);
        ChildSpec::worker(name, move |mailbox| run_node(mailbox, start()))
            .restart(Restart::Transient)
            .shutdown_timeout(DEFAULT_NODE_SHUTDOWN_TIMEOUT)
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
    template: Option<Template>,
    max_children: usize,
}

/// Makes a child spec from a [`SupervisorHandle::start_child_with`]
/// argument; `None` when the argument is not of the template's type.
type TemplateFn = Arc<dyn Fn(Box<dyn Any + Send>) -> Option<ChildSpec> + Send + Sync>;

/// A supervisor's template for children started with an argument.
#[derive(Clone)]
struct Template {
    make: TemplateFn,
    argument: &'static str,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Template(fn({}) -> ChildSpec)", self.argument)
    }
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
            template: None,
            max_children: DEFAULT_MAX_CHILDREN,
        }
    }

    /// Erlang's `simple_one_for_one`: a supervisor with no children of its
    /// own whose children are all made from `template`, one per
    /// [`SupervisorHandle::start_child_with`] argument, and restarted one
    /// for one. It is [`new`](SupervisorSpec::new)`(Strategy::OneForOne)`
    /// with [`template`](SupervisorSpec::template): children of other
    /// kinds may still be added, and the template's children have names
    /// (from the spec it makes) by which they are terminated or deleted.
    ///
    /// ```no_run
    /// # async fn pool<R: reign_driver::Runtime>(node: reign_driver::Reign<R>) {
    /// use reign_driver::api::{ChildSpec, SupervisorSpec};
    ///
    /// let spec = SupervisorSpec::simple_one_for_one(|n: u32| {
    ///     ChildSpec::worker(format!("conn-{n}"), move |mailbox| async move {
    ///         while let Ok(msg) = mailbox.recv().await {
    ///             let _ = (n, msg);
    ///         }
    ///     })
    /// })
    /// .max_children(100);
    /// let pool = node.supervise("connections", spec);
    /// let conn = pool.start_child_with(7u32).await.unwrap();
    /// pool.terminate_child("conn-7").await.unwrap();
    /// pool.delete_child("conn-7").await.unwrap();
    /// # let _ = conn;
    /// # }
    /// ```
    pub fn simple_one_for_one<A, F>(template: F) -> SupervisorSpec
    where
        A: Any + Send,
        F: Fn(A) -> ChildSpec + Send + Sync + 'static,
    {
        SupervisorSpec::new(Strategy::OneForOne).template(template)
    }

    /// The template [`SupervisorHandle::start_child_with`] makes children
    /// from: called with the argument, it returns the child's spec (its
    /// name must differ from the other children's). The children it makes
    /// are added after the others, in the order they are started, and
    /// restarted by the supervisor's strategy like any child.
    pub fn template<A, F>(mut self, template: F) -> SupervisorSpec
    where
        A: Any + Send,
        F: Fn(A) -> ChildSpec + Send + Sync + 'static,
    {
        self.template = Some(Template {
            make: Arc::new(move |argument: Box<dyn Any + Send>| {
                argument.downcast::<A>().ok().map(|a| template(*a))
            }),
            argument: std::any::type_name::<A>(),
        });
        self
    }

    /// At most `max` children, those of the spec included (default
    /// [`DEFAULT_MAX_CHILDREN`]): adding one more at run time fails with
    /// [`ChildError::TooManyChildren`]. A stopped child counts until it is
    /// deleted.
    pub fn max_children(mut self, max: usize) -> SupervisorSpec {
        self.max_children = max;
        self
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

/// Why a change to a running supervisor's children was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildError {
    /// A child of that name is running, at this address (Erlang's
    /// `already_started`).
    AlreadyStarted(Address),
    /// A child of that name is stopped and its spec kept (Erlang's
    /// `already_present`): restart or delete it.
    AlreadyPresent,
    /// No child of that name (`not_found`).
    NotFound,
    /// The child is running (`running`): terminate it first.
    Running,
    /// The supervisor holds its [`max_children`](SupervisorSpec::max_children)
    /// already.
    TooManyChildren(usize),
    /// The supervisor has no [`template`](SupervisorSpec::template).
    NoTemplate,
    /// The argument is not of the type the template takes (named here).
    WrongArgument(&'static str),
    /// The supervisor has exited, or exited before it answered.
    SupervisorGone,
}

impl std::fmt::Display for ChildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChildError::AlreadyStarted(address) => {
                write!(f, "a child of that name is running at {}", address.id())
            }
            ChildError::AlreadyPresent => write!(f, "a stopped child of that name is kept"),
            ChildError::NotFound => write!(f, "no child of that name"),
            ChildError::Running => write!(f, "the child is running"),
            ChildError::TooManyChildren(max) => {
                write!(f, "the supervisor holds its {max} children already")
            }
            ChildError::NoTemplate => write!(f, "the supervisor has no template"),
            ChildError::WrongArgument(expected) => {
                write!(f, "the template takes a {expected}")
            }
            ChildError::SupervisorGone => write!(f, "the supervisor has exited"),
        }
    }
}

impl std::error::Error for ChildError {}

/// A change to a running supervisor's children, with where its outcome
/// goes.
enum Command {
    Start(ChildSpec, Reply<Address>),
    StartWith(Box<dyn Any + Send>, Reply<Address>),
    Terminate(String, Reply<()>),
    Restart(String, Reply<Address>),
    Delete(String, Reply<()>),
}

type Reply<T> = async_channel::Sender<Result<T, ChildError>>;

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
    commands: async_channel::Sender<Command>,
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

    /// Adds `child` after the others and starts it (Erlang's
    /// `start_child`); returns its address once its start closure has run.
    /// From then on it is a child like those of the spec: restarted by its
    /// policy and the strategy (a one-for-all restart includes it, a
    /// rest-for-one restart of an earlier child too), shut down first
    /// (it is the last started). Refused when a child has its name
    /// ([`ChildError::AlreadyStarted`], [`ChildError::AlreadyPresent`]) or
    /// the supervisor is full ([`ChildError::TooManyChildren`]). A
    /// supervisor busy restarting answers when it is done.
    pub async fn start_child(&self, child: ChildSpec) -> Result<Address, ChildError> {
        self.ask(|reply| Command::Start(child, reply)).await
    }

    /// Starts a child made by the supervisor's
    /// [`template`](SupervisorSpec::template) from `argument` (Erlang's
    /// `start_child` of a `simple_one_for_one`), as
    /// [`start_child`](SupervisorHandle::start_child) does.
    pub async fn start_child_with<A: Any + Send>(
        &self,
        argument: A,
    ) -> Result<Address, ChildError> {
        self.ask(|reply| Command::StartWith(Box::new(argument), reply))
            .await
    }

    /// Shuts the child named `name` down as the supervisor's own shutdown
    /// does ([`Shutdown`], then a kill after its timeout) and keeps its
    /// spec, stopped: it is not restarted, not even with its siblings,
    /// until [`restart_child`](SupervisorHandle::restart_child). Its names
    /// go with its mailbox. `Ok` if it was not running.
    pub async fn terminate_child(&self, name: &str) -> Result<(), ChildError> {
        let name = name.to_string();
        self.ask(|reply| Command::Terminate(name, reply)).await
    }

    /// Starts a stopped child again, in its place in the start order
    /// (Erlang's `restart_child`); [`ChildError::Running`] if it runs.
    pub async fn restart_child(&self, name: &str) -> Result<Address, ChildError> {
        let name = name.to_string();
        self.ask(|reply| Command::Restart(name, reply)).await
    }

    /// Forgets a stopped child's spec (Erlang's `delete_child`):
    /// [`ChildError::Running`] if it runs (terminate it first).
    pub async fn delete_child(&self, name: &str) -> Result<(), ChildError> {
        let name = name.to_string();
        self.ask(|reply| Command::Delete(name, reply)).await
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, ChildError> {
        let (reply, outcome) = async_channel::bounded(1);
        if self.commands.send(command(reply)).await.is_err() {
            return Err(ChildError::SupervisorGone);
        }
        outcome
            .recv()
            .await
            .unwrap_or(Err(ChildError::SupervisorGone))
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
        let (commands, inbox) = async_channel::bounded(COMMAND_BACKLOG);
        let queue = (commands.clone(), inbox);
        let body = move |mailbox| run(node, mailbox, name, spec, shared, queue);
        let address = match parent {
            Some(parent) => self.spawn_linked(parent, body),
            None => self.spawn(body),
        };
        SupervisorHandle {
            address,
            report,
            commands,
        }
    }
}

/// One child as the running supervisor sees it.
struct Child {
    spec: ChildSpec,
    address: Option<Address>,
    /// Stopped by [`SupervisorHandle::terminate_child`]: not restarted
    /// with its siblings until it is restarted by name.
    terminated: bool,
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
    template: Option<Template>,
    max_children: usize,
    /// Changes to the children from the handles; the sender is kept so
    /// the queue never reads as closed while the supervisor runs.
    commands: (
        async_channel::Sender<Command>,
        async_channel::Receiver<Command>,
    ),
}

/// The supervisor's task body.
async fn run<R: Runtime>(
    node: Reign<R>,
    mailbox: Mailbox,
    name: String,
    spec: SupervisorSpec,
    report: Arc<Mutex<Report>>,
    commands: (
        async_channel::Sender<Command>,
        async_channel::Receiver<Command>,
    ),
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
                terminated: false,
            })
            .collect(),
        recent: VecDeque::new(),
        report,
        template: spec.template,
        max_children: spec.max_children,
        commands,
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
            let msg = match race(self.mailbox.recv(), self.commands.1.recv()).await {
                Either::Left(Ok(msg)) => msg,
                // Closed from outside: the task ends at its next poll.
                Either::Left(Err(_)) => return ExitReason::Killed,
                Either::Right(Ok(command)) => {
                    self.command(command).await;
                    continue;
                }
                // Never: the supervisor holds a sender.
                Either::Right(Err(_)) => continue,
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

    /// Carries out a change to the children and answers it.
    async fn command(&mut self, command: Command) {
        match command {
            Command::Start(spec, reply) => {
                let outcome = self.add_child(spec).await;
                let _ = reply.try_send(outcome);
            }
            Command::StartWith(argument, reply) => {
                let outcome = match &self.template {
                    None => Err(ChildError::NoTemplate),
                    Some(template) => match (template.make)(argument) {
                        None => Err(ChildError::WrongArgument(template.argument)),
                        Some(spec) => self.add_child(spec).await,
                    },
                };
                let _ = reply.try_send(outcome);
            }
            Command::Terminate(name, reply) => {
                let outcome = match self.named(&name) {
                    None => Err(ChildError::NotFound),
                    Some(i) => {
                        tracing::info!(supervisor = %self.name, child = %name, "terminating child");
                        self.children[i].terminated = true;
                        self.stop_child(i).await;
                        Ok(())
                    }
                };
                let _ = reply.try_send(outcome);
            }
            Command::Restart(name, reply) => {
                let outcome = match self.named(&name) {
                    None => Err(ChildError::NotFound),
                    Some(i) if self.children[i].address.is_some() => Err(ChildError::Running),
                    Some(i) => {
                        self.children[i].terminated = false;
                        Ok(self.start_child(i).await)
                    }
                };
                let _ = reply.try_send(outcome);
            }
            Command::Delete(name, reply) => {
                let outcome = match self.named(&name) {
                    None => Err(ChildError::NotFound),
                    Some(i) if self.children[i].address.is_some() => Err(ChildError::Running),
                    Some(i) => {
                        self.children.remove(i);
                        let mut report = lock(&self.report);
                        report.children.remove(i);
                        report.nested.remove(i);
                        Ok(())
                    }
                };
                let _ = reply.try_send(outcome);
            }
        }
    }

    /// Adds `spec` after the other children and starts it.
    async fn add_child(&mut self, spec: ChildSpec) -> Result<Address, ChildError> {
        if let Some(i) = self.named(&spec.name) {
            return Err(match &self.children[i].address {
                Some(address) => ChildError::AlreadyStarted(address.clone()),
                None => ChildError::AlreadyPresent,
            });
        }
        if self.children.len() >= self.max_children {
            return Err(ChildError::TooManyChildren(self.max_children));
        }
        {
            let mut report = lock(&self.report);
            report.children.push(ChildInfo {
                name: spec.name.clone(),
                address: None,
                restarts: 0,
                state: ChildState::NotStarted,
                children: Vec::new(),
            });
            report.nested.push(spec.nested.clone());
        }
        tracing::debug!(supervisor = %self.name, child = %spec.name, "adding a child");
        self.children.push(Child {
            spec,
            address: None,
            terminated: false,
        });
        Ok(self.start_child(self.children.len() - 1).await)
    }

    fn named(&self, name: &str) -> Option<usize> {
        self.children.iter().position(|c| c.spec.name == name)
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
    async fn start_child(&mut self, i: usize) -> Address {
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
        self.set_state(i, ChildState::Running, Some(address.clone()));
        address
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
            self.node.count_supervisor_escalation();
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
            let comes_back =
                j == i || (spec.restart != Restart::Temporary && !self.children[j].terminated);
            if !comes_back {
                continue;
            }
            let restarts = {
                let mut report = lock(&self.report);
                report.restarts += 1;
                self.node.count_supervisor_restart();
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
