//! A deterministic cluster simulator: many [`Core`]s in one thread, a
//! virtual clock, and a simulated network with latency, jitter, resets,
//! partitions, crashes and restarts — every choice drawn from one seed.
//!
//! Real rustls runs inside every node; only sockets and time are simulated.
//! The same seed gives the same run, event for event ([`Sim::trace`]).
//!
//! ```
//! use std::time::Duration;
//! use reign_proto::sim::{Sim, SimConfig};
//! use reign_proto::NodeId;
//!
//! let mut sim = Sim::new(SimConfig { nodes: 3, seed: 42, ..SimConfig::default() });
//! sim.run_for(Duration::from_secs(1));
//! assert!(sim.fully_connected());
//!
//! let (addr, mailbox) = sim.node(NodeId(2)).new_mailbox();
//! let remote = sim.node(NodeId(0)).address_of(addr.id());
//! remote.send(7u64).unwrap();
//! sim.run_for(Duration::from_millis(50));
//! assert_eq!(mailbox.try_recv().unwrap().unwrap().downcast::<u64>().unwrap(), 7);
//! ```

pub mod scale;
pub mod scenario;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::UnixTime;

use crate::certgen::ClusterCa;
use crate::core::{ConnId, Core, CoreConfig, Event, Input, Output};
use crate::id::{Incarnation, NodeId};
use crate::node::Node;
use crate::rng::Rng;
use crate::spec::{ClusterSpec, Tuning};

/// How a simulation is set up.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Nodes, numbered from [`first_id`](SimConfig::first_id).
    pub nodes: u16,
    /// The id of the first node; the others follow it. Any value whose
    /// last node still fits in 16 bits works: nothing in a node is sized
    /// for 256 peers or indexed by the low byte of an id.
    pub first_id: u16,
    /// Seed of every random choice.
    pub seed: u64,
    /// One-way latency of every link.
    pub latency: Duration,
    /// Extra random latency, uniform in `0..=jitter` (order per connection
    /// is kept, as TCP keeps it).
    pub jitter: Duration,
    /// Bytes per second each direction of a connection carries; a transmit
    /// is reported written once it has been serialized at this rate.
    pub bandwidth: u64,
    /// Protocol timers and limits of every node.
    pub tuning: Tuning,
    /// Empty: every node's spec lists the whole cluster. Otherwise each
    /// node's spec lists only itself and these seeds, and the rest of the
    /// cluster is learned by joining through them.
    pub seeds: Vec<NodeId>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            nodes: 3,
            first_id: 0,
            seed: 1,
            latency: Duration::from_micros(200),
            jitter: Duration::from_micros(100),
            bandwidth: 1_000_000_000,
            tuning: Tuning::fast(),
            seeds: Vec::new(),
        }
    }
}

/// One end of a simulated connection.
type End = (NodeId, ConnId);

#[derive(Debug, Clone)]
enum Delivery {
    Connected,
    ConnectFailed,
    Bytes(Vec<u8>),
    Written(usize),
    Closed,
}

#[derive(Debug)]
struct Scheduled {
    at: Instant,
    seq: u64,
    to: End,
    /// The connection epoch of `to` this delivery belongs to; stale
    /// deliveries (after a crash) are dropped.
    incarnation: Incarnation,
    what: Delivery,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Something that happened, for the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// A node's core reported an event.
    Core {
        /// When, since the start.
        at: Duration,
        /// Which node.
        node: NodeId,
        /// What.
        event: Event,
    },
    /// A node dialled another.
    Dial {
        /// When, since the start.
        at: Duration,
        /// The dialler.
        from: NodeId,
        /// The address dialled.
        address: String,
    },
    /// A fault was injected.
    Fault {
        /// When, since the start.
        at: Duration,
        /// What.
        what: String,
    },
}

struct SimNode {
    core: Option<Core>,
    spec: ClusterSpec,
    incarnation: Incarnation,
    starts: u64,
    /// The [`Sim::clock_epoch`] this node's services last showed.
    seen_epoch: u64,
}

/// The simulator. See the [module docs](self).
pub struct Sim {
    start: Instant,
    now: Instant,
    /// The instant the nodes' virtual clocks last showed.
    clock_shown: Option<Instant>,
    /// Counts the changes of `clock_shown`. A node is shown the new time
    /// when it is next touched (`show_clock`), not all at once: that would
    /// cost O(N) per event.
    clock_epoch: u64,
    config: SimConfig,
    rng: Rng,
    nodes: BTreeMap<NodeId, SimNode>,
    /// Each end's other end.
    links: BTreeMap<End, End>,
    /// Last delivery time per direction, so reordering never happens
    /// within a connection.
    last_delivery: BTreeMap<End, Instant>,
    /// When each sending end finishes serializing what it was given.
    busy_until: BTreeMap<End, Instant>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    /// Blocked directions (from, to).
    blocked: BTreeSet<(NodeId, NodeId)>,
    trace: Vec<TraceEvent>,
    addresses: BTreeMap<String, NodeId>,
    /// Nodes with input since they were last polled.
    dirty: BTreeSet<NodeId>,
    /// Each running node's next timeout, as of its last poll.
    timeouts: BTreeMap<NodeId, Instant>,
    /// The same, in time order, so the next one is found without a scan.
    timeout_order: BTreeSet<(Instant, NodeId)>,
    /// Ciphertext bytes every node handed to the network, all together.
    transmitted: u64,
}

impl Sim {
    /// A cluster of `config.nodes` nodes, each started at virtual time zero.
    pub fn new(config: SimConfig) -> Sim {
        let ca = ClusterCa::generate().expect("generate a CA");
        assert!(
            u32::from(config.first_id) + u32::from(config.nodes) <= 1 << 16,
            "node ids are 16 bits: {} nodes from id {} do not fit",
            config.nodes,
            config.first_id
        );
        let addresses: Vec<(NodeId, String)> = (0..config.nodes)
            .map(|i| {
                let port = 20000 + u32::from(i);
                (NodeId(config.first_id + i), format!("127.0.0.1:{port}"))
            })
            .collect();
        let start = Instant::now();
        let mut sim = Sim {
            start,
            now: start,
            clock_shown: None,
            clock_epoch: 0,
            rng: Rng::new(config.seed),
            nodes: BTreeMap::new(),
            links: BTreeMap::new(),
            last_delivery: BTreeMap::new(),
            busy_until: BTreeMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            blocked: BTreeSet::new(),
            trace: Vec::new(),
            addresses: addresses.iter().map(|(id, a)| (a.clone(), *id)).collect(),
            dirty: BTreeSet::new(),
            timeouts: BTreeMap::new(),
            timeout_order: BTreeSet::new(),
            transmitted: 0,
            config,
        };
        for (id, _) in &addresses {
            let listed: Vec<(NodeId, String)> = addresses
                .iter()
                .filter(|(n, _)| {
                    sim.config.seeds.is_empty() || n == id || sim.config.seeds.contains(n)
                })
                .cloned()
                .collect();
            let mut spec = ca
                .inline_spec(*id, &listed)
                .expect("issue a node certificate");
            spec.tuning = sim.config.tuning.clone();
            sim.nodes.insert(
                *id,
                SimNode {
                    core: None,
                    spec,
                    incarnation: Incarnation(0),
                    starts: 0,
                    seen_epoch: 0,
                },
            );
            sim.start_node(*id);
        }
        sim
    }

    /// The usual start of a test: `nodes` nodes with default settings and
    /// `seed`, run for 500 ms of virtual time, by then fully connected.
    ///
    /// # Panics
    /// If the cluster is not fully connected by then (the message names
    /// the seed, to replay it).
    pub fn connected(nodes: u16, seed: u64) -> Sim {
        let mut sim = Sim::new(SimConfig {
            nodes,
            seed,
            ..SimConfig::default()
        });
        sim.run_for(Duration::from_millis(500));
        assert!(
            sim.fully_connected(),
            "seed {seed}: the cluster did not connect"
        );
        sim
    }

    fn start_node(&mut self, id: NodeId) {
        let now = self.now;
        let seed = self.rng.next_u64();
        let node = self.nodes.get_mut(&id).expect("known node");
        node.starts += 1;
        // Incarnations grow with every start, like the wall-clock ones.
        node.incarnation = Incarnation(node.starts);
        let spec = node
            .spec
            .resolve(
                id,
                UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
            )
            .expect("resolve the spec");
        let config = CoreConfig {
            spec,
            incarnation: node.incarnation,
            seed,
            time_provider: Arc::new(FixedTime),
        };
        let core = Core::new(config, now).expect("start a core");
        core.node().inner.set_manual_now(now);
        node.core = Some(core);
        node.seen_epoch = self.clock_epoch;
        self.dirty.insert(id);
    }

    /// The node handle of a running node.
    ///
    /// # Panics
    /// If the node is crashed.
    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes[&id]
            .core
            .as_ref()
            .expect("node is running")
            .node()
    }

    /// The core of a running node, if it runs.
    pub fn core(&self, id: NodeId) -> Option<&Core> {
        self.nodes.get(&id).and_then(|n| n.core.as_ref())
    }

    /// Ids of the running nodes.
    pub fn running(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.core.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The current virtual instant.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Ciphertext bytes all nodes together handed to the network so far
    /// (TLS handshakes, pings, gossip and messages alike).
    pub fn bytes_transmitted(&self) -> u64 {
        self.transmitted
    }

    /// Dials made so far, by all nodes together.
    pub fn dials(&self) -> usize {
        self.trace
            .iter()
            .filter(|e| matches!(e, TraceEvent::Dial { .. }))
            .count()
    }

    /// Everything that happened so far.
    pub fn trace(&self) -> &[TraceEvent] {
        &self.trace
    }

    /// Whether every running node counts exactly the running nodes (and
    /// itself) as members: one membership view across the cluster.
    pub fn one_membership_view(&self) -> bool {
        let running = self.running();
        running.iter().all(|&a| {
            self.core(a).is_some_and(|c| {
                let members: Vec<NodeId> = c.members().iter().map(|d| NodeId(d.id)).collect();
                members == running
            })
        })
    }

    /// Whether every running node is connected to every other running node.
    pub fn fully_connected(&self) -> bool {
        let running = self.running();
        running.iter().all(|&a| {
            let peers = self
                .core(a)
                .map(|c| c.connected_peers())
                .unwrap_or_default();
            // Sorted (a map's order): a search, not a scan, per pair.
            running
                .iter()
                .all(|b| *b == a || peers.binary_search(b).is_ok())
        })
    }

    fn fault(&mut self, what: String) {
        self.trace.push(TraceEvent::Fault {
            at: self.elapsed(),
            what,
        });
    }

    /// Kills a node: its state is lost, its connections reset.
    pub fn crash(&mut self, id: NodeId) {
        self.fault(format!("crash {}", id.0));
        self.kill(id, true);
    }

    /// Kills a node so that nobody notices: its state is lost and its
    /// connections go silent without closing (a machine that lost power,
    /// a cable pulled). Peers find out only by their ping deadlines.
    pub fn power_off(&mut self, id: NodeId) {
        self.fault(format!("power off {}", id.0));
        self.kill(id, false);
    }

    fn kill(&mut self, id: NodeId, reset_links: bool) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.core = None;
        }
        self.forget_timeout(id);
        self.dirty.remove(&id);
        let ends: Vec<End> = self
            .links
            .keys()
            .filter(|(n, _)| *n == id)
            .copied()
            .collect();
        for end in ends {
            if let Some(other) = self.links.remove(&end) {
                self.links.remove(&other);
                if reset_links {
                    self.schedule(other, Delivery::Closed, Duration::ZERO);
                }
            }
        }
    }

    /// Shuts a node down cleanly (goodbyes, mailboxes closed); its core
    /// stays until [`crash`](Sim::crash) removes it.
    pub fn shutdown(&mut self, id: NodeId) {
        self.fault(format!("shutdown {}", id.0));
        let now = self.now;
        if let Some(core) = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) {
            core.shutdown(now);
        }
    }

    /// Polls `future` between steps of `step` virtual time until it
    /// completes, at most `limit` of virtual time; `None` if it never did.
    pub fn drive<F: std::future::Future>(
        &mut self,
        future: F,
        step: Duration,
        limit: Duration,
    ) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let deadline = self.now + limit;
        loop {
            if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return Some(out);
            }
            if self.now >= deadline {
                return None;
            }
            self.run_for(step);
        }
    }

    /// Starts a crashed node again, with a new incarnation.
    pub fn restart(&mut self, id: NodeId) {
        self.fault(format!("restart {}", id.0));
        if self.nodes.get(&id).is_some_and(|n| n.core.is_none()) {
            self.start_node(id);
        }
    }

    /// Resets every connection between `a` and `b` (both see it close).
    pub fn reset_links(&mut self, a: NodeId, b: NodeId) {
        self.fault(format!("reset {}<->{}", a.0, b.0));
        let ends: Vec<(End, End)> = self
            .links
            .iter()
            .filter(|((n, _), (m, _))| (*n == a && *m == b) || (*n == b && *m == a))
            .map(|(x, y)| (*x, *y))
            .collect();
        for (x, y) in ends {
            if self.links.remove(&x).is_some() {
                self.links.remove(&y);
                self.schedule(x, Delivery::Closed, Duration::ZERO);
                self.schedule(y, Delivery::Closed, Duration::ZERO);
            }
        }
    }

    /// Drops everything sent from `from` to `to` until healed (one-way).
    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.fault(format!("block {}->{}", from.0, to.0));
        self.blocked.insert((from, to));
    }

    /// Blocks both directions between `a` and `b`.
    pub fn partition(&mut self, a: NodeId, b: NodeId) {
        self.block(a, b);
        self.block(b, a);
    }

    /// Removes every block.
    pub fn heal(&mut self) {
        self.fault("heal".into());
        self.blocked.clear();
    }

    /// Jumps the virtual clock forward (a paused VM, a clock step).
    pub fn step_clock(&mut self, by: Duration) {
        self.fault(format!("clock step {by:?}"));
        self.now += by;
        self.dirty.extend(self.running());
    }

    fn schedule(&mut self, to: End, what: Delivery, delay: Duration) {
        let at = self.now + delay;
        let at = match self.last_delivery.get(&to) {
            Some(&last) if last > at => last,
            _ => at,
        };
        self.last_delivery.insert(to, at);
        self.seq += 1;
        let incarnation = self
            .nodes
            .get(&to.0)
            .map(|n| n.incarnation)
            .unwrap_or(Incarnation(0));
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            to,
            incarnation,
            what,
        }));
    }

    fn link_delay(&mut self) -> Duration {
        let jitter = self.rng.below(self.config.jitter.as_micros() as u64 + 1);
        self.config.latency + Duration::from_micros(jitter)
    }

    /// Shows node `id`'s services the virtual clock of the last pump, if
    /// they have not seen it yet. Services read the virtual clock
    /// (deadlines of queued requests).
    fn show_clock(&mut self, id: NodeId) {
        let (epoch, shown) = (self.clock_epoch, self.clock_shown);
        if let Some(node) = self.nodes.get_mut(&id) {
            if node.seen_epoch != epoch {
                node.seen_epoch = epoch;
                if let (Some(core), Some(now)) = (&node.core, shown) {
                    core.node().inner.set_manual_now(now);
                }
            }
        }
    }

    /// Carries out every output of every running node until all are quiet.
    ///
    /// A node's wake signal can be raised only by its own core or by user
    /// code, which runs between [`run_until`](Sim::run_until)s (and that
    /// marks every node dirty), so only the node being pumped needs its
    /// signal checked: the rest are in `dirty` already. Looking at every
    /// node's signal per event made the simulator O(N) per event.
    fn pump(&mut self) {
        if self.clock_shown != Some(self.now) {
            self.clock_shown = Some(self.now);
            self.clock_epoch += 1;
        }
        loop {
            let Some(id) = self.dirty.pop_first() else {
                return;
            };
            self.show_clock(id);
            if let Some(core) = self.nodes.get(&id).and_then(|n| n.core.as_ref()) {
                core.wake_signal().take();
            }
            while let Some(out) = self
                .nodes
                .get_mut(&id)
                .and_then(|n| n.core.as_mut())
                .and_then(|c| c.poll_output(self.now))
            {
                self.carry_out(id, out);
            }
            self.note_timeout(id);
            // Work its own core (or an accept) queued meanwhile.
            if self
                .nodes
                .get(&id)
                .and_then(|n| n.core.as_ref())
                .is_some_and(|c| c.wake_signal().take())
            {
                self.dirty.insert(id);
            }
        }
    }

    /// Forgets node `id`'s next timeout.
    fn forget_timeout(&mut self, id: NodeId) {
        if let Some(t) = self.timeouts.remove(&id) {
            self.timeout_order.remove(&(t, id));
        }
    }

    /// Remembers when `id` next needs a timeout.
    fn note_timeout(&mut self, id: NodeId) {
        match self
            .nodes
            .get(&id)
            .and_then(|n| n.core.as_ref())
            .and_then(Core::poll_timeout)
        {
            Some(t) => {
                if let Some(old) = self.timeouts.insert(id, t) {
                    self.timeout_order.remove(&(old, id));
                }
                self.timeout_order.insert((t, id));
            }
            None => self.forget_timeout(id),
        }
    }

    fn carry_out(&mut self, id: NodeId, out: Output) {
        match out {
            Output::Connect { conn, address, .. } => {
                self.trace.push(TraceEvent::Dial {
                    at: self.elapsed(),
                    from: id,
                    address: address.clone(),
                });
                let delay = self.link_delay();
                let target = self.addresses.get(&address).copied();
                let reachable = target.is_some_and(|t| {
                    self.nodes[&t].core.is_some() && !self.blocked.contains(&(id, t))
                });
                match (target, reachable) {
                    (Some(t), true) => {
                        self.show_clock(t);
                        let now = self.now;
                        let accepted = self
                            .nodes
                            .get_mut(&t)
                            .and_then(|n| n.core.as_mut())
                            .map(|c| c.accept(now, &format!("sim node {}", id.0)));
                        self.dirty.insert(t);
                        match accepted {
                            Some(Ok(remote)) => {
                                self.links.insert((id, conn), (t, remote));
                                self.links.insert((t, remote), (id, conn));
                                self.schedule((id, conn), Delivery::Connected, delay);
                            }
                            _ => self.schedule((id, conn), Delivery::ConnectFailed, delay),
                        }
                    }
                    _ => {
                        // A dial into a partition times out like a SYN would.
                        let wait = if target.is_some() { delay * 10 } else { delay };
                        self.schedule((id, conn), Delivery::ConnectFailed, wait)
                    }
                }
            }
            Output::Transmit { conn, data } => {
                let len = data.len();
                self.transmitted += len as u64;
                let start = self
                    .busy_until
                    .get(&(id, conn))
                    .copied()
                    .unwrap_or(self.now)
                    .max(self.now);
                let serialize = Duration::from_nanos(
                    (len as u128 * 1_000_000_000 / self.config.bandwidth.max(1) as u128) as u64,
                );
                let done = start + serialize;
                self.busy_until.insert((id, conn), done);
                let after = done - self.now;
                if let Some(&other) = self.links.get(&(id, conn)) {
                    if !self.blocked.contains(&(id, other.0)) {
                        let delay = self.link_delay();
                        self.schedule(other, Delivery::Bytes(data), after + delay);
                    }
                }
                self.schedule((id, conn), Delivery::Written(len), after);
            }
            Output::Close { conn } => {
                if let Some(other) = self.links.remove(&(id, conn)) {
                    self.links.remove(&other);
                    let delay = self.link_delay();
                    self.schedule(other, Delivery::Closed, delay);
                }
            }
            // The simulated network has no socket buffers to fill: reading
            // on regardless only lets the budget overshoot in simulation.
            Output::PauseReading { .. } | Output::ResumeReading { .. } => {}
            Output::Event(event) => self.trace.push(TraceEvent::Core {
                at: self.now - self.start,
                node: id,
                event,
            }),
        }
    }

    /// Runs the simulation for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs the simulation until the virtual instant `until`.
    pub fn run_until(&mut self, until: Instant) {
        // User code may have touched any node since the last run.
        self.dirty.extend(self.running());
        loop {
            self.pump();
            let next_delivery = self.queue.peek().map(|Reverse(s)| s.at);
            let next_timer = self.timeout_order.first().map(|&(t, _)| t);
            let next = [next_delivery, next_timer].into_iter().flatten().min();
            let Some(next) = next.filter(|&t| t <= until) else {
                self.now = self.now.max(until);
                self.pump();
                // User code runs next, on any node: show every one the time.
                let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                for id in ids {
                    self.show_clock(id);
                }
                return;
            };
            self.now = self.now.max(next);
            if next_delivery == Some(next) {
                let Reverse(item) = self.queue.pop().expect("peeked");
                self.deliver(item);
            } else {
                let now = self.now;
                let mut due: Vec<NodeId> = self
                    .timeout_order
                    .iter()
                    .take_while(|&&(t, _)| t <= now)
                    .map(|&(_, id)| id)
                    .collect();
                due.sort_unstable();
                for id in due {
                    self.forget_timeout(id);
                    self.show_clock(id);
                    if let Some(core) = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) {
                        core.handle_input(now, Input::Timeout);
                    }
                    self.dirty.insert(id);
                }
            }
        }
    }

    fn deliver(&mut self, item: Scheduled) {
        let (id, conn) = item.to;
        let now = self.now;
        if self
            .nodes
            .get(&id)
            .is_none_or(|node| node.incarnation != item.incarnation)
        {
            return;
        }
        self.show_clock(id);
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(core) = node.core.as_mut() else {
            return;
        };
        self.dirty.insert(id);
        match item.what {
            Delivery::Connected => core.handle_input(now, Input::Connected { conn }),
            Delivery::ConnectFailed => core.handle_input(
                now,
                Input::ConnectFailed {
                    conn,
                    error: "connection refused (simulated)",
                },
            ),
            Delivery::Bytes(bytes) => core.handle_input(
                now,
                Input::Received {
                    conn,
                    bytes: &bytes,
                },
            ),
            Delivery::Written(bytes) => core.handle_input(now, Input::Written { conn, bytes }),
            Delivery::Closed => core.handle_input(now, Input::Closed { conn, error: None }),
        }
    }

    /// Injects raw bytes into a node as if a connected peer sent them.
    pub fn inject(&mut self, node: NodeId, conn: ConnId, bytes: &[u8]) {
        let now = self.now;
        if let Some(core) = self.nodes.get_mut(&node).and_then(|n| n.core.as_mut()) {
            core.handle_input(now, Input::Received { conn, bytes });
        }
    }
}

/// Certificates are checked against a fixed wall time, so runs replay.
#[derive(Debug)]
struct FixedTime;

impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(
            1_800_000_000,
        )))
    }
}
