//! Scenarios: operations and faults scheduled at virtual times, run in the
//! simulator with the protocol's invariants checked at every step and at
//! quiescence.
//!
//! Every node runs a small application: a probe mailbox that receives
//! numbered messages, a watcher mailbox that watches other nodes' probes, an
//! echo member of the `sim.echo` service, a subscriber of `sim.topic`, and a
//! tunnel acceptor. The checker knows what was sent and verifies:
//!
//! - no message is delivered twice, to the wrong mailbox, or out of order per
//!   (sending node, target mailbox) — numbered messages and publications;
//! - every message sent over a link that stayed up is delivered;
//! - after partitions heal and the network is quiet, every node's registry
//!   view equals the union of the live nodes' claims;
//! - every watcher of a mailbox on a crashed or unreachable node receives
//!   `MailboxClosed` exactly once (and never twice for one watch), with a
//!   reason that crossed the wire (never `Unspecified`);
//! - every request ends, and a reply never reaches another request;
//! - tunnel messages arrive in order, each once;
//! - memory held per peer stays under its configured bounds.
//!
//! A violation is an `Err` naming the seed, so the run can be replayed.
//!
//! ```
//! use reign_proto::sim::scenario::Scenario;
//!
//! let scenario = Scenario::random(7, 3, 30);
//! let report = scenario.run().expect("no invariant broke");
//! assert!(report.delivered > 0);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Sim, SimConfig, TraceEvent};
use crate::address::Address;
use crate::id::{MailboxId, NodeId};
use crate::mailbox::Mailbox;
use crate::message::Message;
use crate::rng::Rng;
use crate::services::{Request, RequestFuture};
use crate::system::{ExitReason, MailboxClosed};
use crate::tunnel::{IncomingTunnel, OpeningTunnel, Tunnel};
use crate::Tuning;

/// The service every node's echo member joins.
pub const ECHO: &str = "sim.echo";
/// The topic every node's subscriber listens to.
pub const TOPIC: &str = "sim.topic";

/// A numbered message from one node to another node's probe mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The mailbox it is meant for.
    pub to: MailboxId,
    /// The sending node.
    pub from: u16,
    /// The sender's incarnation.
    pub incarnation: u64,
    /// The sender's sequence number for this target.
    pub seq: u64,
}

/// A numbered publication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    /// The publishing node.
    pub from: u16,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its sequence number.
    pub seq: u64,
}

fn register_types() {
    let _ = crate::register_type_named::<Probe>("reign.sim.Probe");
    let _ = crate::register_type_named::<Publication>("reign.sim.Publication");
}

/// One step of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `count` numbered messages from `from` to `to`'s probe mailbox.
    Send {
        /// Sender.
        from: NodeId,
        /// Receiver.
        to: NodeId,
        /// How many.
        count: u32,
    },
    /// `node` claims `name` with its probe mailbox.
    Register {
        /// Claimant's node.
        node: NodeId,
        /// Name.
        name: String,
    },
    /// `node` drops its claim of `name`.
    Unregister {
        /// Claimant's node.
        node: NodeId,
        /// Name.
        name: String,
    },
    /// `node` looks `name` up (exercises balancing; checked for sanity).
    Lookup {
        /// Who looks.
        node: NodeId,
        /// Name.
        name: String,
    },
    /// `watcher`'s watcher mailbox watches `target`'s probe mailbox.
    Watch {
        /// Watching node.
        watcher: NodeId,
        /// Watched node.
        target: NodeId,
    },
    /// `node` closes its probe mailbox and opens a new one.
    ReplaceProbe {
        /// The node.
        node: NodeId,
    },
    /// `count` requests from `from` to the echo service.
    Request {
        /// Caller.
        from: NodeId,
        /// How many.
        count: u32,
    },
    /// `count` numbered publications from `from`.
    Publish {
        /// Publisher.
        from: NodeId,
        /// How many.
        count: u32,
    },
    /// A numbered tunnel message of `bytes` bytes from `from` to `to`,
    /// opening the tunnel first if needed.
    TunnelWrite {
        /// Writer.
        from: NodeId,
        /// Reader.
        to: NodeId,
        /// Message size.
        bytes: u32,
    },
    /// Kills a node (state lost).
    Crash(NodeId),
    /// Shuts a node down cleanly (it says goodbye), then removes it; a
    /// later [`Op::Restart`] replaces it with a new incarnation.
    Leave(NodeId),
    /// Starts a crashed node again.
    Restart(NodeId),
    /// Blocks both directions between two nodes.
    Partition(NodeId, NodeId),
    /// Blocks one direction.
    Block(NodeId, NodeId),
    /// Removes every block.
    Heal,
    /// Resets the connections between two nodes.
    Reset(NodeId, NodeId),
    /// Jumps the clock.
    ClockStep(Duration),
}

/// Operations and faults at virtual times, on a simulated cluster.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The cluster.
    pub config: SimConfig,
    /// `(time since start, operation)`, in time order.
    pub steps: Vec<(Duration, Op)>,
    /// Quiet time after the last step (and after healing and restarting
    /// everything) before the quiescence checks.
    pub settle: Duration,
}

/// What a run observed.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Everything that happened.
    pub trace: Vec<TraceEvent>,
    /// Numbered messages sent and delivered.
    pub sent: u64,
    /// Numbered messages delivered.
    pub delivered: u64,
    /// Requests answered / failed with a typed error.
    pub requests_ok: u64,
    /// Requests failed.
    pub requests_failed: u64,
    /// `MailboxClosed` notifications seen.
    pub notifications: u64,
    /// Virtual time the run took.
    pub virtual_time: Duration,
}

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The seed to replay.
    pub seed: u64,
    /// Virtual time it was found.
    pub at: Duration,
    /// What broke.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: at {:?}: {} (replay with SIM_SEED={})",
            self.seed, self.at, self.what, self.seed
        )
    }
}

impl std::error::Error for Violation {}

impl Scenario {
    /// A random scenario of `steps` operations and faults on `nodes`
    /// nodes, every choice drawn from `seed`.
    pub fn random(seed: u64, nodes: u16, steps: usize) -> Scenario {
        let mut rng = Rng::new(seed ^ 0x5eed_5eed);
        let node = |rng: &mut Rng| NodeId(rng.below(u64::from(nodes)) as u16);
        let mut at = Duration::from_millis(600);
        let mut out = Vec::with_capacity(steps);
        for _ in 0..steps {
            at += Duration::from_millis(1 + rng.below(60));
            let roll = rng.below(100);
            let op = match roll {
                0..=29 => Op::Send {
                    from: node(&mut rng),
                    to: node(&mut rng),
                    count: 1 + rng.below(40) as u32,
                },
                30..=39 => Op::Register {
                    node: node(&mut rng),
                    name: format!("n{}", rng.below(6)),
                },
                40..=43 => Op::Unregister {
                    node: node(&mut rng),
                    name: format!("n{}", rng.below(6)),
                },
                44..=46 => Op::Lookup {
                    node: node(&mut rng),
                    name: format!("n{}", rng.below(6)),
                },
                47..=53 => Op::Watch {
                    watcher: node(&mut rng),
                    target: node(&mut rng),
                },
                54..=56 => Op::ReplaceProbe {
                    node: node(&mut rng),
                },
                57..=63 => Op::Request {
                    from: node(&mut rng),
                    count: 1 + rng.below(5) as u32,
                },
                64..=69 => Op::Publish {
                    from: node(&mut rng),
                    count: 1 + rng.below(10) as u32,
                },
                70..=77 => Op::TunnelWrite {
                    from: node(&mut rng),
                    to: node(&mut rng),
                    bytes: rng.below(200_000) as u32,
                },
                78..=79 => Op::Crash(node(&mut rng)),
                80..=81 => Op::Leave(node(&mut rng)),
                82..=86 => Op::Restart(node(&mut rng)),
                87..=89 => Op::Partition(node(&mut rng), node(&mut rng)),
                90..=91 => Op::Block(node(&mut rng), node(&mut rng)),
                92..=95 => Op::Heal,
                96..=98 => Op::Reset(node(&mut rng), node(&mut rng)),
                _ => Op::ClockStep(Duration::from_millis(rng.below(3000))),
            };
            out.push((at, op));
        }
        // Odd seeds run a cluster whose specs list only node 0: every
        // other node joins through it (and rejoins after every restart).
        let seeds = if seed % 2 == 1 {
            vec![NodeId(0)]
        } else {
            Vec::new()
        };
        Scenario {
            config: SimConfig {
                nodes,
                seed,
                seeds,
                ..SimConfig::default()
            },
            steps: out,
            settle: Duration::from_secs(5),
        }
    }

    /// Runs the scenario, checking every invariant.
    pub fn run(&self) -> Result<Report, Violation> {
        register_types();
        let mut world = World::new(self.config.clone());
        let start = world.sim.now();
        world.sim.run_for(Duration::from_millis(500));
        world.refresh_all();
        for (at, op) in &self.steps {
            let until = start + *at;
            world.sim.run_until(until);
            world.step()?;
            world.apply(op)?;
            world.step()?;
        }
        // Quiescence: heal, bring everyone back, let the network go quiet.
        world.apply(&Op::Heal)?;
        for id in 0..self.config.nodes {
            world.apply(&Op::Restart(NodeId(id)))?;
        }
        let settle_step = Duration::from_millis(100);
        let mut waited = Duration::ZERO;
        while waited < self.settle {
            world.sim.run_for(settle_step);
            world.step()?;
            waited += settle_step;
        }
        world.quiescent()?;
        Ok(world.report())
    }
}

/// A node's application mailboxes.
struct App {
    incarnation: u64,
    probe: (Address, Mailbox),
    watcher: (Address, Mailbox),
    member: (Address, Mailbox),
    subscriber: (Address, Mailbox),
    acceptor: (Address, Mailbox),
    /// Tunnels this node accepted, each with a key unique in the run.
    accepted: Vec<(u64, Tunnel)>,
}

/// A watch placed by a watcher mailbox on a target mailbox.
struct WatchRecord {
    watcher: MailboxId,
    target: MailboxId,
    fired: u32,
    /// The target's node crashed, or the target closed, since the watch.
    must_fire: bool,
}

/// What a sender sent to one target mailbox.
#[derive(Default)]
struct SentLog {
    next: u64,
    /// Sequence numbers that must arrive: sent while the link was up, and
    /// no fault has touched the link since.
    required: BTreeMap<u64, u64>,
}

struct PendingRequest {
    from: NodeId,
    value: u64,
    future: RequestFuture,
}

/// A tunnel this node opened to another, and the messages sent on it.
struct OpenTunnel {
    opening: Option<std::pin::Pin<Box<OpeningTunnel>>>,
    tunnel: Option<Tunnel>,
    next_seq: u32,
}

struct World {
    sim: Sim,
    apps: BTreeMap<NodeId, App>,
    /// Link disturbance counters per unordered pair of nodes.
    epochs: BTreeMap<(NodeId, NodeId), u64>,
    sent: BTreeMap<(u16, u64, MailboxId), SentLog>,
    received: BTreeMap<(u16, u64, MailboxId), u64>,
    publications_sent: BTreeMap<(u16, u64), u64>,
    publications_seen: BTreeMap<(u16, u64, MailboxId), u64>,
    watches: Vec<WatchRecord>,
    requests: Vec<PendingRequest>,
    next_request: u64,
    tunnels: BTreeMap<(NodeId, NodeId), OpenTunnel>,
    tunnel_seen: BTreeMap<u64, u32>,
    tunnel_keys: u64,
    /// Trace entries already looked at for connection losses.
    trace_seen: usize,
    report: Report,
    seed: u64,
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl World {
    fn new(config: SimConfig) -> World {
        let seed = config.seed;
        World {
            sim: Sim::new(config),
            apps: BTreeMap::new(),
            epochs: BTreeMap::new(),
            sent: BTreeMap::new(),
            received: BTreeMap::new(),
            publications_sent: BTreeMap::new(),
            publications_seen: BTreeMap::new(),
            watches: Vec::new(),
            requests: Vec::new(),
            next_request: 0,
            tunnels: BTreeMap::new(),
            tunnel_seen: BTreeMap::new(),
            tunnel_keys: 0,
            trace_seen: 0,
            report: Report {
                seed,
                trace: Vec::new(),
                sent: 0,
                delivered: 0,
                requests_ok: 0,
                requests_failed: 0,
                notifications: 0,
                virtual_time: Duration::ZERO,
            },
            seed,
        }
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            seed: self.seed,
            at: self.sim.elapsed(),
            what,
        }
    }

    fn epoch(&self, a: NodeId, b: NodeId) -> u64 {
        self.epochs.get(&pair(a, b)).copied().unwrap_or(0)
    }

    fn disturb(&mut self, a: NodeId, b: NodeId) {
        *self.epochs.entry(pair(a, b)).or_default() += 1;
    }

    fn disturb_node(&mut self, n: NodeId) {
        for other in 0..self.sim.config.nodes {
            self.disturb(n, NodeId(other));
        }
    }

    /// Sets up the application of every running node that has none (new
    /// or restarted).
    fn refresh_all(&mut self) {
        for id in self.sim.running() {
            let incarnation = self.sim.core(id).map(|c| c.node().incarnation().0);
            let stale = self
                .apps
                .get(&id)
                .is_none_or(|a| Some(a.incarnation) != incarnation);
            if stale {
                self.start_app(id);
            }
        }
    }

    fn start_app(&mut self, id: NodeId) {
        let node = self.sim.node(id).clone();
        let member = node.new_mailbox();
        let _ = node.join(ECHO, &member.0);
        let subscriber = node.new_mailbox();
        let _ = node.subscribe(TOPIC, &subscriber.0);
        let app = App {
            incarnation: node.incarnation().0,
            probe: node.new_mailbox(),
            watcher: node.new_mailbox(),
            member,
            subscriber,
            acceptor: node.new_mailbox(),
            accepted: Vec::new(),
        };
        self.apps.insert(id, app);
    }

    fn apply(&mut self, op: &Op) -> Result<(), Violation> {
        let running: BTreeSet<NodeId> = self.sim.running().into_iter().collect();
        match op {
            Op::Send { from, to, count } => {
                let (Some(sender), Some(target)) = (self.apps.get(from), self.apps.get(to)) else {
                    return Ok(());
                };
                if !running.contains(from) {
                    return Ok(());
                }
                let target_id = target.probe.0.id();
                let blocked = self.sim.blocked.contains(&(*from, *to))
                    || self.sim.blocked.contains(&(*to, *from));
                let connected = from == to || (self.sim.node(*from).is_connected(*to) && !blocked);
                let epoch = self.epoch(*from, *to);
                let addr = self.sim.node(*from).address_of(target_id);
                let key = (from.0, sender.incarnation, target_id);
                for _ in 0..*count {
                    let log = self.sent.entry(key).or_default();
                    let seq = log.next;
                    let probe = Probe {
                        to: target_id,
                        from: from.0,
                        incarnation: key.1,
                        seq,
                    };
                    if addr.send(probe).is_ok() {
                        log.next += 1;
                        self.report.sent += 1;
                        if connected {
                            log.required.insert(seq, epoch);
                        }
                    }
                }
            }
            Op::Register { node, name } => {
                if let (true, Some(app)) = (running.contains(node), self.apps.get(node)) {
                    let _ = self.sim.node(*node).register(name, &app.probe.0);
                }
            }
            Op::Unregister { node, name } => {
                if let (true, Some(app)) = (running.contains(node), self.apps.get(node)) {
                    self.sim.node(*node).unregister(name, &app.probe.0);
                }
            }
            Op::Lookup { node, name } => {
                if running.contains(node) {
                    if let Some(found) = self.sim.node(*node).lookup(name) {
                        let view = self.sim.node(*node).registry_view();
                        if !view.get(name).is_some_and(|ids| ids.contains(&found.id())) {
                            return Err(self.violation(format!(
                                "lookup of {name} on {node} gave a non-claimant"
                            )));
                        }
                        // Contested names resolve to the lowest claimant.
                        if view.get(name).and_then(|ids| ids.first()) != Some(&found.id()) {
                            return Err(self.violation(format!(
                                "lookup of {name} on {node} gave {:?}, not the lowest claimant",
                                found.id()
                            )));
                        }
                    }
                }
            }
            Op::Watch { watcher, target } => {
                let (Some(w), Some(t)) = (self.apps.get(watcher), self.apps.get(target)) else {
                    return Ok(());
                };
                if !running.contains(watcher) || watcher == target {
                    return Ok(());
                }
                let target_id = t.probe.0.id();
                let watcher_addr = w.watcher.0.clone();
                self.sim
                    .node(*watcher)
                    .address_of(target_id)
                    .on_close_notify(&watcher_addr);
                let target_gone =
                    !running.contains(target) || t.incarnation != target_id.incarnation.0;
                // Watching again before the watch fired is the same watch.
                let pending = self.watches.iter_mut().find(|w| {
                    w.watcher == watcher_addr.id() && w.target == target_id && w.fired == 0
                });
                if let Some(existing) = pending {
                    existing.must_fire |= target_gone;
                    return Ok(());
                }
                self.watches.push(WatchRecord {
                    watcher: watcher_addr.id(),
                    target: target_id,
                    fired: 0,
                    must_fire: target_gone,
                });
            }
            Op::ReplaceProbe { node } => {
                if !running.contains(node) {
                    return Ok(());
                }
                let fresh = self.sim.node(*node).new_mailbox();
                if let Some(app) = self.apps.get_mut(node) {
                    let old = std::mem::replace(&mut app.probe, fresh);
                    let old_id = old.0.id();
                    // Its claims and watches go with it.
                    drop(old);
                    for w in &mut self.watches {
                        if w.target == old_id {
                            w.must_fire = true;
                        }
                    }
                    // Messages still in flight to the old probe are lost.
                    for ((_, _, target), log) in &mut self.sent {
                        if *target == old_id {
                            log.required.clear();
                        }
                    }
                }
            }
            Op::Request { from, count } => {
                if !running.contains(from) {
                    return Ok(());
                }
                let deadline = self.sim.now() + Duration::from_secs(2);
                for _ in 0..*count {
                    self.next_request += 1;
                    let value = self.next_request;
                    let future = self.sim.node(*from).request(ECHO, value, deadline);
                    self.requests.push(PendingRequest {
                        from: *from,
                        value,
                        future,
                    });
                }
            }
            Op::Publish { from, count } => {
                let Some(app) = self.apps.get(from) else {
                    return Ok(());
                };
                if !running.contains(from) {
                    return Ok(());
                }
                let key = (from.0, app.incarnation);
                for _ in 0..*count {
                    let seq = self.publications_sent.entry(key).or_default();
                    let publication = Publication {
                        from: from.0,
                        incarnation: key.1,
                        seq: *seq,
                    };
                    if self.sim.node(*from).publish(TOPIC, publication).is_ok() {
                        *seq += 1;
                    }
                }
            }
            Op::TunnelWrite { from, to, bytes } => {
                if !running.contains(from) || from == to {
                    return Ok(());
                }
                let Some(acceptor) = self.apps.get(to).map(|a| a.acceptor.0.id()) else {
                    return Ok(());
                };
                let entry = self
                    .tunnels
                    .entry((*from, *to))
                    .or_insert_with(|| OpenTunnel {
                        opening: None,
                        tunnel: None,
                        next_seq: 0,
                    });
                if entry.tunnel.as_ref().is_none_or(Tunnel::is_closed) && entry.opening.is_none() {
                    entry.tunnel = None;
                    let target = self.sim.node(*from).address_of(acceptor);
                    entry.opening = Some(Box::pin(self.sim.node(*from).open_tunnel(&target)));
                }
                if let Some(tunnel) = &entry.tunnel {
                    // Each message starts with its tunnel-local sequence number.
                    let mut message = vec![0u8; (*bytes as usize).max(4)];
                    message[..4].copy_from_slice(&entry.next_seq.to_le_bytes());
                    entry.next_seq += 1;
                    let mut send = std::pin::pin!(tunnel.send(message));
                    let waker = std::task::Waker::noop();
                    let _ = send
                        .as_mut()
                        .poll(&mut std::task::Context::from_waker(waker));
                    // Pending (no credit yet) sends are dropped mid-way: the
                    // receiver must discard the partial message.
                }
            }
            Op::Crash(n) => {
                if running.contains(n) {
                    self.sim.crash(*n);
                    self.disturb_node(*n);
                    self.node_lost(*n);
                }
            }
            Op::Leave(n) => {
                if running.contains(n) {
                    self.sim.shutdown(*n);
                    // Let the goodbyes go out before the process is gone.
                    self.sim.run_for(Duration::from_millis(5));
                    self.sim.crash(*n);
                    self.disturb_node(*n);
                    self.node_lost(*n);
                }
            }
            Op::Restart(n) => {
                if !running.contains(n) {
                    self.sim.restart(*n);
                    self.disturb_node(*n);
                    self.sim.run_for(Duration::from_millis(1));
                    self.refresh_all();
                }
            }
            Op::Partition(a, b) => {
                if a != b {
                    self.sim.partition(*a, *b);
                    self.disturb(*a, *b);
                }
            }
            Op::Block(a, b) => {
                if a != b {
                    self.sim.block(*a, *b);
                    self.disturb(*a, *b);
                }
            }
            Op::Heal => {
                self.sim.heal();
            }
            Op::Reset(a, b) => {
                if a != b {
                    self.sim.reset_links(*a, *b);
                    self.disturb(*a, *b);
                }
            }
            Op::ClockStep(by) => {
                self.sim.step_clock(*by);
                for a in 0..self.sim.config.nodes {
                    self.disturb_node(NodeId(a));
                }
            }
        }
        Ok(())
    }

    /// A node crashed: its mailboxes are gone, watches on them must fire,
    /// and the watches its own watcher held vanish with it.
    fn node_lost(&mut self, n: NodeId) {
        if let Some(app) = self.apps.remove(&n) {
            let watcher = app.watcher.0.id();
            self.watches.retain(|w| w.watcher != watcher);
            for w in &mut self.watches {
                if w.target.node == n {
                    w.must_fire = true;
                }
            }
        }
        self.tunnels.retain(|(from, to), _| *from != n && *to != n);
        // A crashed caller has no requests left to finish.
        self.requests.retain(|r| r.from != n);
    }

    /// Counts every connection loss since the last look as a disturbance
    /// of that pair's link: messages sent before it need not arrive.
    fn update_epochs(&mut self) {
        let trace = self.sim.trace();
        let fresh: Vec<(NodeId, NodeId)> = trace[self.trace_seen..]
            .iter()
            .filter_map(|e| match e {
                TraceEvent::Core {
                    node,
                    event: crate::core::Event::PeerDown { node: peer, .. },
                    ..
                } => Some((*node, *peer)),
                _ => None,
            })
            .collect();
        self.trace_seen = trace.len();
        for (a, b) in fresh {
            self.disturb(a, b);
        }
    }

    /// Reads every application mailbox and checks what arrived.
    fn step(&mut self) -> Result<(), Violation> {
        self.refresh_all();
        self.update_epochs();
        let ids: Vec<NodeId> = self.apps.keys().copied().collect();
        for id in ids {
            self.drain_probe(id)?;
            self.drain_watcher(id)?;
            self.answer_requests(id);
            self.drain_subscriber(id)?;
            self.accept_and_read_tunnels(id)?;
        }
        self.finish_requests()?;
        self.poll_openings();
        self.check_memory()
    }

    fn drain_probe(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(app) = self.apps.get(&id) else {
            return Ok(());
        };
        let me = app.probe.0.id();
        let messages: Vec<Message> =
            std::iter::from_fn(|| app.probe.1.try_recv().ok().flatten()).collect();
        for msg in messages {
            let Ok(probe) = msg.downcast::<Probe>() else {
                continue;
            };
            if probe.to != me {
                return Err(self.violation(format!("a probe for {:?} reached {me:?}", probe.to)));
            }
            let key = (probe.from, probe.incarnation, me);
            let last = self.received.get(&key).copied();
            if last.is_some_and(|l| probe.seq <= l) {
                return Err(self.violation(format!(
                    "probe {} from node {} to {me:?} after {} (duplicate or out of order)",
                    probe.seq,
                    probe.from,
                    last.unwrap_or_default()
                )));
            }
            self.received.insert(key, probe.seq);
            self.report.delivered += 1;
            if let Some(log) = self.sent.get_mut(&key) {
                // Everything required before this one should have come first.
                let skipped: Vec<u64> = log.required.range(..probe.seq).map(|(&s, _)| s).collect();
                let from = NodeId(probe.from);
                for seq in skipped {
                    let epoch = log.required.remove(&seq).unwrap_or_default();
                    if epoch == self.epochs.get(&pair(from, id)).copied().unwrap_or(0) {
                        return Err(self.violation(format!(
                            "probe {seq} from node {} to {me:?} was lost on a link that stayed up",
                            probe.from
                        )));
                    }
                }
                log.required.remove(&probe.seq);
            }
        }
        Ok(())
    }

    fn drain_watcher(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(app) = self.apps.get(&id) else {
            return Ok(());
        };
        let me = app.watcher.0.id();
        let notes: Vec<MailboxClosed> =
            std::iter::from_fn(|| app.watcher.1.try_recv().ok().flatten())
                .filter_map(|m| m.downcast::<MailboxClosed>().ok())
                .collect();
        for MailboxClosed { id: target, reason } in notes {
            self.report.notifications += 1;
            // Every simulated node speaks this version: a reason always
            // crosses the wire, and a node's own mailboxes are never
            // reported unreachable.
            if reason == ExitReason::Unspecified
                || (target.node == me.node && matches!(reason, ExitReason::Unreachable(_)))
            {
                return Err(self.violation(format!(
                    "{me:?} told {target:?} closed with reason {reason:?}"
                )));
            }
            let mut matched = false;
            // The oldest watch that has not fired yet takes the notification.
            let pending = self
                .watches
                .iter()
                .position(|w| w.watcher == me && w.target == target && w.fired == 0);
            let record = pending.or_else(|| {
                self.watches
                    .iter()
                    .position(|w| w.watcher == me && w.target == target)
            });
            if let Some(w) = record.map(|i| &mut self.watches[i]) {
                w.fired += 1;
                matched = true;
                if w.fired > 1 {
                    return Err(Violation {
                        seed: self.seed,
                        at: self.sim.elapsed(),
                        what: format!("watch of {target:?} by {me:?} fired twice"),
                    });
                }
            }
            if !matched
                && !self
                    .watches
                    .iter()
                    .any(|w| w.watcher == me && w.target == target)
            {
                return Err(self.violation(format!(
                    "{me:?} told of {target:?} closing, which it never watched"
                )));
            }
        }
        Ok(())
    }

    fn answer_requests(&mut self, id: NodeId) {
        let Some(app) = self.apps.get(&id) else {
            return;
        };
        while let Ok(Some(msg)) = app.member.1.try_recv() {
            if let Ok(request) = msg.take::<Request>() {
                let (payload, responder) = request.into_parts();
                if let Ok(value) = payload.downcast::<u64>() {
                    let _ = responder.reply(value);
                }
            }
        }
    }

    fn finish_requests(&mut self) -> Result<(), Violation> {
        let mut still = Vec::new();
        for pending in std::mem::take(&mut self.requests) {
            match pending.future.try_result() {
                None => still.push(pending),
                Some(Ok(reply)) => match reply.downcast::<u64>() {
                    Ok(v) if v == pending.value => self.report.requests_ok += 1,
                    Ok(v) => {
                        return Err(self.violation(format!(
                            "request {} got the reply to request {v}",
                            pending.value
                        )))
                    }
                    Err(_) => return Err(self.violation("a reply of the wrong type".into())),
                },
                Some(Err(_)) => self.report.requests_failed += 1,
            }
        }
        self.requests = still;
        Ok(())
    }

    fn drain_subscriber(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(app) = self.apps.get(&id) else {
            return Ok(());
        };
        let me = app.subscriber.0.id();
        let publications: Vec<Publication> =
            std::iter::from_fn(|| app.subscriber.1.try_recv().ok().flatten())
                .filter_map(|m| m.downcast::<Publication>().ok())
                .collect();
        for p in publications {
            let key = (p.from, p.incarnation, me);
            if let Some(&last) = self.publications_seen.get(&key) {
                if p.seq <= last {
                    return Err(self.violation(format!(
                        "publication {} of node {} reached {me:?} after {last}",
                        p.seq, p.from
                    )));
                }
            }
            self.publications_seen.insert(key, p.seq);
        }
        Ok(())
    }

    fn accept_and_read_tunnels(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(app) = self.apps.get_mut(&id) else {
            return Ok(());
        };
        while let Ok(Some(msg)) = app.acceptor.1.try_recv() {
            if let Ok(incoming) = msg.take::<IncomingTunnel>() {
                if let Ok(tunnel) = incoming.accept() {
                    self.tunnel_keys += 1;
                    app.accepted.push((self.tunnel_keys, tunnel));
                }
            }
        }
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut seen = Vec::new();
        for (key, tunnel) in &app.accepted {
            loop {
                let mut recv = std::pin::pin!(tunnel.recv());
                match recv.as_mut().poll(&mut cx) {
                    std::task::Poll::Ready(Ok(message)) => {
                        let mut head = [0u8; 4];
                        let n = message.len().min(4);
                        head[..n].copy_from_slice(&message[..n]);
                        seen.push((*key, u32::from_le_bytes(head)));
                    }
                    _ => break,
                }
            }
        }
        app.accepted
            .retain(|(_, t)| !t.is_closed() || t.buffered_bytes() > 0);
        for (tunnel, seq) in seen {
            if let Some(&last) = self.tunnel_seen.get(&tunnel) {
                if seq <= last {
                    return Err(self.violation(format!("tunnel message {seq} after {last}")));
                }
            }
            self.tunnel_seen.insert(tunnel, seq);
        }
        Ok(())
    }

    fn poll_openings(&mut self) {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        for open in self.tunnels.values_mut() {
            if let Some(opening) = open.opening.as_mut() {
                if let std::task::Poll::Ready(result) = opening.as_mut().poll(&mut cx) {
                    open.opening = None;
                    open.tunnel = result.ok();
                    open.next_seq = 0;
                }
            }
        }
    }

    fn check_memory(&self) -> Result<(), Violation> {
        let tuning: &Tuning = &self.sim.config.tuning;
        let buffered_bound = tuning.max_message_len * 2
            + tuning.max_frame_len
            + (8 << 20)
            + tuning.write_window
            + (1 << 20);
        let queued_bound = tuning.outbound_queue_bytes
            + tuning.outbound_bulk_bytes
            + tuning.max_message_len
            + (1 << 20);
        for id in self.sim.running() {
            let Some(core) = self.sim.core(id) else {
                continue;
            };
            for stats in core.node().peer_stats() {
                let buffered = core.peer_buffered_bytes(stats.node);
                if buffered > buffered_bound {
                    return Err(self.violation(format!(
                        "node {} holds {buffered} bytes for peer {}, over {buffered_bound}",
                        id.0, stats.node.0
                    )));
                }
                if stats.queued_bytes as usize > queued_bound {
                    return Err(self.violation(format!(
                        "node {} queues {} bytes for peer {}, over {queued_bound}",
                        id.0, stats.queued_bytes, stats.node.0
                    )));
                }
            }
        }
        Ok(())
    }

    /// The checks that hold once everything is up and quiet.
    fn quiescent(&mut self) -> Result<(), Violation> {
        if !self.sim.fully_connected() {
            return Err(self.violation("the cluster did not reconnect after healing".into()));
        }
        if !self.sim.one_membership_view() {
            let views: Vec<(u16, Vec<u16>)> = self
                .sim
                .running()
                .into_iter()
                .filter_map(|id| {
                    let core = self.sim.core(id)?;
                    Some((id.0, core.members().iter().map(|d| d.id).collect()))
                })
                .collect();
            return Err(self.violation(format!("the membership views did not converge: {views:?}")));
        }
        // Messages that had to arrive did.
        for ((from, _, target), log) in &self.sent {
            for (&seq, &epoch) in &log.required {
                let to = target.node;
                let same_epoch = epoch
                    == self
                        .epochs
                        .get(&pair(NodeId(*from), to))
                        .copied()
                        .unwrap_or(0);
                let target_alive = self
                    .apps
                    .get(&to)
                    .is_some_and(|a| a.probe.0.id() == *target);
                if same_epoch && target_alive {
                    return Err(self.violation(format!(
                        "probe {seq} from node {from} to {target:?} never arrived over a link that stayed up"
                    )));
                }
            }
        }
        // Registry views equal the union of live claims.
        let mut union: BTreeMap<String, BTreeSet<MailboxId>> = BTreeMap::new();
        for id in self.sim.running() {
            for (name, claimant) in self.sim.node(id).local_claims() {
                union.entry(name).or_default().insert(claimant);
            }
        }
        for id in self.sim.running() {
            let view = self.sim.node(id).registry_view();
            if view != union {
                return Err(self.violation(format!(
                    "node {} sees the registry as {view:?}, the live claims are {union:?}",
                    id.0
                )));
            }
        }
        // Watches on lost targets fired exactly once.
        for w in &self.watches {
            if w.must_fire && w.fired != 1 {
                return Err(self.violation(format!(
                    "watch of {:?} by {:?} fired {} times after its target went away",
                    w.target, w.watcher, w.fired
                )));
            }
        }
        // Every request ended.
        if !self.requests.is_empty() {
            return Err(self.violation(format!("{} requests never ended", self.requests.len())));
        }
        Ok(())
    }

    fn report(&mut self) -> Report {
        let mut report = self.report.clone();
        report.trace = self.sim.trace().to_vec();
        report.virtual_time = self.sim.elapsed();
        report
    }
}
