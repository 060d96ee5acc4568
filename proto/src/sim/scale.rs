//! Large clusters in the simulator: how long a registry takes to converge
//! after a full partition heals, how long a cluster takes to form when every
//! node knows only one seed, and what it costs.

use std::time::{Duration, Instant};

use super::{Sim, SimConfig};
use crate::id::NodeId;

/// What a [`partition_heal`] run measured.
#[derive(Clone, Debug)]
pub struct ScaleReport {
    /// Nodes in the full mesh.
    pub nodes: u16,
    /// Wall-clock time the whole run took.
    pub wall: Duration,
    /// Virtual time until the full mesh was connected.
    pub connected_after: Duration,
    /// Virtual time from healing until every registry view agreed.
    pub converged_after: Duration,
    /// The largest protocol buffers one node held across its peers, bytes.
    pub max_node_buffered: usize,
    /// Dials from the heal until the views agreed: the reconnection storm
    /// (every pair cut apart dials again; both ends of a pair may).
    pub heal_dials: usize,
    /// Ciphertext bytes all nodes sent from the heal until the views
    /// agreed: handshakes, registry syncs, membership, pings.
    pub heal_bytes: u64,
    /// Resident memory of this process at the end, KiB (0 where unknown).
    pub rss_kb: u64,
}

/// Connects `nodes` nodes in a full mesh, cuts it in two halves, registers
/// a name per node plus one shared name on every node, heals, and measures
/// how long (in virtual time) until every node's registry view agrees.
///
/// # Panics
/// If the mesh never connects or the views never agree (within a minute of
/// virtual time each).
pub fn partition_heal(config: SimConfig) -> ScaleReport {
    let wall = Instant::now();
    let nodes = config.nodes;
    let mut sim = Sim::new(config);
    let connected_after = connect(&mut sim);
    let ids = sim.running();
    let (left, right) = ids.split_at(ids.len() / 2);
    for &a in left {
        for &b in right {
            sim.partition(a, b);
        }
    }
    sim.run_for(Duration::from_secs(2));
    let mut mailboxes = Vec::new();
    for &id in &ids {
        let node = sim.node(id).clone();
        let (addr, mailbox) = node.new_mailbox();
        node.register(&format!("name-{}", id.0), &addr)
            .expect("register");
        node.register("shared", &addr).expect("register");
        mailboxes.push(mailbox);
    }
    sim.run_for(Duration::from_millis(500));
    sim.heal();
    let healed = sim.elapsed();
    let (dials_before, bytes_before) = (sim.dials(), sim.bytes_transmitted());
    let claims = 2 * nodes as usize;
    let converged_after = loop {
        sim.run_for(Duration::from_millis(10));
        let agreed = sim.running().iter().all(|&id| {
            let view = sim.node(id).registry_view();
            view.values().map(|s| s.len()).sum::<usize>() == claims
        });
        if agreed {
            break sim.elapsed() - healed;
        }
        assert!(
            sim.elapsed() - healed < Duration::from_secs(60),
            "never converged"
        );
    };
    let heal_dials = sim.dials() - dials_before;
    let heal_bytes = sim.bytes_transmitted() - bytes_before;
    let max_node_buffered = ids
        .iter()
        .filter_map(|&id| sim.core(id))
        .map(|core| {
            core.connected_peers()
                .into_iter()
                .map(|p| core.peer_buffered_bytes(p))
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0);
    drop(mailboxes);
    let rss_kb = rss_kb();
    ScaleReport {
        nodes,
        wall: wall.elapsed(),
        connected_after,
        converged_after,
        max_node_buffered,
        heal_dials,
        heal_bytes,
        rss_kb,
    }
}

/// What a [`join_through_seed`] run measured.
#[derive(Clone, Debug)]
pub struct JoinReport {
    /// Nodes, all started at once.
    pub nodes: u16,
    /// Wall-clock time the whole run took.
    pub wall: Duration,
    /// Virtual time until every node was connected to every other and
    /// counted the same members.
    pub converged_after: Duration,
}

/// Starts `config.nodes` nodes at once whose specs list only the first
/// node (and themselves) and measures, in virtual time, how long until
/// they form one full mesh with one membership view. `config.seeds` is
/// replaced by the first node.
///
/// # Panics
/// If that takes over a minute of virtual time.
pub fn join_through_seed(config: SimConfig) -> JoinReport {
    let wall = Instant::now();
    let nodes = config.nodes;
    let mut sim = Sim::new(SimConfig {
        seeds: vec![NodeId(config.first_id)],
        ..config
    });
    while !(sim.fully_connected() && sim.one_membership_view()) {
        sim.run_for(Duration::from_millis(10));
        assert!(
            sim.elapsed() < Duration::from_secs(60),
            "{nodes} nodes joining through one seed never formed a mesh"
        );
    }
    JoinReport {
        nodes,
        wall: wall.elapsed(),
        converged_after: sim.elapsed(),
    }
}

/// With `SIM_PROGRESS` set, prints how far a long run got to stderr, so a
/// run stopped early (out of time or memory) still says where it was.
fn progress(line: impl FnOnce() -> String) {
    if std::env::var_os("SIM_PROGRESS").is_some() {
        eprintln!("{}", line());
    }
}

/// Runs the simulation until every node is connected to every other;
/// returns the virtual time that took.
///
/// # Panics
/// If the mesh does not form within a minute of virtual time.
pub fn connect(sim: &mut Sim) -> Duration {
    let wall = Instant::now();
    while !sim.fully_connected() {
        sim.run_for(Duration::from_millis(50));
        progress(|| {
            let links: usize = sim
                .running()
                .iter()
                .filter_map(|&id| sim.core(id))
                .map(|c| c.connected_peers().len())
                .sum();
            format!(
                "connecting: {links} link ends up after {:?} virtual, {:.1} s wall",
                sim.elapsed(),
                wall.elapsed().as_secs_f64()
            )
        });
        assert!(
            sim.elapsed() < Duration::from_secs(60),
            "{} nodes never connected",
            sim.running().len()
        );
    }
    sim.elapsed()
}

/// Resident memory of this process, KiB (0 where unknown).
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// What an [`idle_mesh`] run measured.
#[derive(Clone, Debug)]
pub struct IdleReport {
    /// Nodes in the full mesh.
    pub nodes: u16,
    /// Wall-clock time until the mesh was connected.
    pub wall_connect: Duration,
    /// Wall-clock time the whole run took.
    pub wall: Duration,
    /// Virtual time until the full mesh was connected.
    pub connected_after: Duration,
    /// The most buffer capacity one node held for its idle links at the
    /// end (see [`Core::idle_buffer_bytes`](crate::Core::idle_buffer_bytes)).
    pub max_node_buffers: usize,
    /// Ciphertext bytes all nodes sent per second of virtual time while
    /// idle: pings and membership gossip.
    pub idle_bytes_per_sec: u64,
    /// Ciphertext bytes the cluster sent to replicate one name registered
    /// on one node to every other (over the idle traffic of as long; the
    /// mean of ten names registered at once on ten nodes).
    pub registry_bytes_per_name: u64,
    /// Resident memory of this process at the end, KiB (0 where unknown).
    pub rss_kb: u64,
}

/// Connects a full mesh, sends one message each way over every link (so
/// every buffer a link uses has been used), registers one name (and
/// measures what replicating it costs), lets the mesh idle for `idle` of
/// virtual time and measures what the idle mesh holds. The simulation is
/// handed back with the report, for the caller to measure more before it
/// drops.
///
/// # Panics
/// If the mesh never connects, or a message is not delivered.
pub fn idle_mesh(config: SimConfig, idle: Duration) -> (IdleReport, Sim) {
    let wall = Instant::now();
    let nodes = config.nodes;
    let ping_interval = config.tuning.ping_interval;
    let mut sim = Sim::new(config);
    let connected_after = connect(&mut sim);
    let wall_connect = wall.elapsed();
    progress(|| {
        format!("idle mesh: {nodes} nodes connected after {connected_after:?} virtual, {:.1} s wall, rss {} kB", wall_connect.as_secs_f64(), rss_kb())
    });
    let ids = sim.running();
    let mut mailboxes = Vec::new();
    for &id in &ids {
        let (addr, mailbox) = sim.node(id).new_mailbox();
        mailboxes.push((addr, mailbox));
    }
    for (i, &from) in ids.iter().enumerate() {
        for (j, (addr, _)) in mailboxes.iter().enumerate() {
            if i != j {
                sim.node(from)
                    .address_of(addr.id())
                    .send(serde_bytes::ByteBuf::from(vec![0u8; 64]))
                    .expect("send over an up link");
            }
        }
    }
    sim.run_for(Duration::from_millis(100));
    progress(|| {
        format!(
            "idle mesh: one message over every link sent, {:.1} s wall, rss {} kB",
            wall.elapsed().as_secs_f64(),
            rss_kb()
        )
    });
    for (_, mailbox) in &mailboxes {
        let mut got = 0;
        while let Ok(Some(_)) = mailbox.try_recv() {
            got += 1;
        }
        assert_eq!(got, ids.len() - 1, "a message was lost");
    }
    // Names: what replicating one costs, over the idle traffic of a window
    // as long. A window of one ping interval holds one ping each way on
    // every link whatever its phase, so the two windows differ by the
    // registrations (and gossip's random picks) only.
    const NAMES: usize = 10;
    let window = ping_interval;
    let before = sim.bytes_transmitted();
    sim.run_for(window);
    let quiet = sim.bytes_transmitted() - before;
    let mut named = Vec::new();
    for (i, &id) in ids.iter().cycle().take(NAMES).enumerate() {
        let (addr, mailbox) = sim.node(id).new_mailbox();
        sim.node(id)
            .register(&format!("scale.name-{i}"), &addr)
            .expect("register");
        named.push(mailbox);
    }
    let before = sim.bytes_transmitted();
    sim.run_for(window);
    let registry_bytes_per_name =
        (sim.bytes_transmitted() - before).saturating_sub(quiet) / NAMES as u64;
    assert!(
        ids.iter().all(|&id| {
            let view = sim.node(id).registry_view();
            (0..NAMES).all(|i| view.contains_key(&format!("scale.name-{i}")))
        }),
        "a name did not reach every node"
    );
    let before = sim.bytes_transmitted();
    progress(|| {
        format!(
            "idle mesh: names registered everywhere, {:.1} s wall",
            wall.elapsed().as_secs_f64()
        )
    });
    sim.run_for(idle);
    progress(|| {
        format!(
            "idle mesh: idled {idle:?}, {:.1} s wall, rss {} kB",
            wall.elapsed().as_secs_f64(),
            rss_kb()
        )
    });
    let idle_bytes = sim.bytes_transmitted() - before;
    let idle_bytes_per_sec = (idle_bytes as f64 / idle.as_secs_f64().max(1e-9)) as u64;
    let max_node_buffers = ids
        .iter()
        .filter_map(|&id| sim.core(id))
        .map(|core| {
            core.connected_peers()
                .into_iter()
                .map(|p| core.idle_buffer_bytes(p))
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0);
    drop(mailboxes);
    let report = IdleReport {
        nodes,
        wall_connect,
        wall: wall.elapsed(),
        connected_after,
        max_node_buffers,
        idle_bytes_per_sec,
        registry_bytes_per_name,
        rss_kb: rss_kb(),
    };
    (report, sim)
}
