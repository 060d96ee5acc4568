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
pub fn partition_heal(nodes: u16, seed: u64) -> ScaleReport {
    let wall = Instant::now();
    let mut sim = Sim::new(SimConfig {
        nodes,
        seed,
        ..SimConfig::default()
    });
    while !sim.fully_connected() {
        sim.run_for(Duration::from_millis(50));
        assert!(
            sim.elapsed() < Duration::from_secs(60),
            "{nodes} nodes never connected"
        );
    }
    let connected_after = sim.elapsed();
    let half = nodes / 2;
    for a in 0..half {
        for b in half..nodes {
            sim.partition(NodeId(a), NodeId(b));
        }
    }
    sim.run_for(Duration::from_secs(2));
    let mut mailboxes = Vec::new();
    for i in 0..nodes {
        let node = sim.node(NodeId(i)).clone();
        let (addr, mailbox) = node.new_mailbox();
        node.register(&format!("name-{i}"), &addr)
            .expect("register");
        node.register("shared", &addr).expect("register");
        mailboxes.push(mailbox);
    }
    sim.run_for(Duration::from_millis(500));
    sim.heal();
    let healed = sim.elapsed();
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
    let max_node_buffered = (0..nodes)
        .filter_map(|i| sim.core(NodeId(i)))
        .map(|core| {
            core.connected_peers()
                .into_iter()
                .map(|p| core.peer_buffered_bytes(p))
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0);
    drop(mailboxes);
    let rss_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    ScaleReport {
        nodes,
        wall: wall.elapsed(),
        connected_after,
        converged_after,
        max_node_buffered,
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

/// Starts `nodes` nodes at once whose specs list only node 0 (and
/// themselves) and measures, in virtual time, how long until they form one
/// full mesh with one membership view.
///
/// # Panics
/// If that takes over a minute of virtual time.
pub fn join_through_seed(nodes: u16, seed: u64) -> JoinReport {
    let wall = Instant::now();
    let mut sim = Sim::new(SimConfig {
        nodes,
        seed,
        seeds: vec![NodeId(0)],
        ..SimConfig::default()
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
