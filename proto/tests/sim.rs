//! The simulator's own guarantees and randomised fault schedules checked
//! against the protocol's invariants.
//!
//! `SIM_SEEDS=N` sets how many random seeds run (default 12);
//! `SIM_SEED=S` replays one seed exactly. Seeds that once failed live in
//! `tests/sim_seeds.txt` and always run.

use std::time::Duration;

use reign_proto::sim::scenario::{Op, Scenario};
use reign_proto::sim::{Sim, SimConfig, TraceEvent};
use reign_proto::NodeId;

/// Runs one random schedule; a broken invariant fails with its seed.
fn run_seed(seed: u64) -> (u64, u64) {
    let nodes = 3 + (seed % 3) as u16;
    let scenario = Scenario::random(seed, nodes, 80);
    match scenario.run() {
        // A single schedule may legitimately deliver nothing (every send
        // went to a crashed or cut-off node); the caller checks that the
        // seeds together are not vacuous.
        Ok(report) => (report.sent, report.delivered),
        Err(violation) => panic!("{violation}"),
    }
}

#[test]
fn the_same_seed_replays_event_for_event() {
    let scenario = Scenario::random(424242, 4, 60);
    let a = scenario.run().expect("first run");
    let b = scenario.run().expect("second run");
    assert!(!a.trace.is_empty());
    assert_eq!(a.trace, b.trace, "one seed, two different runs");
    assert_eq!(
        (a.sent, a.delivered, a.notifications),
        (b.sent, b.delivered, b.notifications)
    );
    let c = Scenario::random(424243, 4, 60).run().expect("third run");
    assert_ne!(a.trace, c.trace, "two seeds, one run");
}

#[test]
fn random_fault_schedules_keep_every_invariant() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed = seed.parse().expect("SIM_SEED is a number");
        let (sent, delivered) = run_seed(seed);
        eprintln!("seed {seed}: {delivered} of {sent} numbered messages delivered");
        return;
    }
    let count: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let base: u64 = std::env::var("SIM_SEED_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let (mut sent, mut delivered) = (0, 0);
    for seed in base..base + count {
        let (s, d) = run_seed(seed);
        sent += s;
        delivered += d;
    }
    eprintln!("{count} seeds from {base}: {delivered} of {sent} numbered messages delivered");
    assert!(
        sent == 0 || delivered * 4 >= sent,
        "seeds {base}..{}: only {delivered} of {sent} messages delivered; the schedules are mostly vacuous",
        base + count
    );
}

#[test]
fn regression_seeds_replay() {
    let seeds = include_str!("sim_seeds.txt");
    for line in seeds
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let seed: u64 = line
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .expect("a seed");
        run_seed(seed);
    }
}

#[test]
fn a_scripted_scenario_with_every_fault() {
    let n = |i| NodeId(i);
    let ms = Duration::from_millis;
    let steps = vec![
        (
            ms(600),
            Op::Register {
                node: n(0),
                name: "a".into(),
            },
        ),
        (
            ms(610),
            Op::Watch {
                watcher: n(1),
                target: n(2),
            },
        ),
        (
            ms(620),
            Op::Send {
                from: n(0),
                to: n(1),
                count: 50,
            },
        ),
        (
            ms(630),
            Op::Request {
                from: n(1),
                count: 5,
            },
        ),
        (
            ms(640),
            Op::Publish {
                from: n(2),
                count: 5,
            },
        ),
        (
            ms(650),
            Op::TunnelWrite {
                from: n(0),
                to: n(2),
                bytes: 150_000,
            },
        ),
        (ms(700), Op::Partition(n(0), n(1))),
        (
            ms(710),
            Op::Register {
                node: n(1),
                name: "a".into(),
            },
        ),
        (ms(900), Op::Crash(n(2))),
        (ms(1500), Op::Heal),
        (ms(1600), Op::Restart(n(2))),
        (ms(1700), Op::Block(n(1), n(2))),
        (ms(1800), Op::Reset(n(0), n(2))),
        (ms(1900), Op::ClockStep(ms(2500))),
        (
            ms(2000),
            Op::Send {
                from: n(2),
                to: n(0),
                count: 20,
            },
        ),
        (ms(2100), Op::ReplaceProbe { node: n(0) }),
        (
            ms(2200),
            Op::Lookup {
                node: n(2),
                name: "a".into(),
            },
        ),
        (
            ms(2300),
            Op::Unregister {
                node: n(0),
                name: "a".into(),
            },
        ),
    ];
    let scenario = Scenario {
        config: SimConfig {
            nodes: 3,
            seed: 99,
            ..SimConfig::default()
        },
        steps,
        settle: Duration::from_secs(5),
    };
    let report = scenario.run().unwrap_or_else(|v| panic!("{v}"));
    assert!(report.delivered >= 50);
    assert!(
        report.notifications >= 1,
        "the crash was never noticed by the watcher"
    );
}

#[test]
fn joins_leaves_and_replacements_under_partitions_converge_to_one_membership_view() {
    let n = NodeId;
    let ms = Duration::from_millis;
    let send = |from: u16, to: u16| Op::Send {
        from: n(from),
        to: n(to),
        count: 10,
    };
    // Every spec lists node 0 and the node itself: nodes 1..5 join through
    // node 0 and learn each other from it.
    let steps = vec![
        (ms(600), send(1, 4)),
        (
            ms(610),
            Op::Register {
                node: n(4),
                name: "four".into(),
            },
        ),
        (ms(700), Op::Partition(n(1), n(2))),
        (ms(720), Op::Leave(n(3))),
        (
            ms(800),
            Op::Watch {
                watcher: n(1),
                target: n(4),
            },
        ),
        (ms(900), Op::Crash(n(0))),
        (ms(1000), send(2, 4)),
        (ms(1500), Op::Restart(n(3))),
        (ms(2000), Op::Leave(n(4))),
        (ms(2100), Op::Partition(n(0), n(3))),
        (ms(2600), Op::Restart(n(0))),
        (ms(3000), Op::Restart(n(4))),
        (ms(3100), Op::Heal),
        (ms(3200), send(3, 1)),
        (
            ms(3300),
            Op::Lookup {
                node: n(1),
                name: "four".into(),
            },
        ),
    ];
    let scenario = Scenario {
        config: SimConfig {
            nodes: 5,
            seed: 1105,
            seeds: vec![n(0)],
            ..SimConfig::default()
        },
        steps,
        settle: Duration::from_secs(8),
    };
    // Quiescence checks one membership view and full connectivity.
    let report = scenario.run().unwrap_or_else(|v| panic!("{v}"));
    assert!(report.delivered >= 10, "{report:?}");
    assert!(report.notifications >= 1, "node 4's leave was not noticed");
    let up = |at: u16, peer: u16| {
        report.trace.iter().any(|e| {
            matches!(e, TraceEvent::Core { node, event: reign_proto::Event::PeerUp { node: p, .. }, .. }
                if *node == n(at) && *p == n(peer))
        })
    };
    assert!(up(1, 4) && up(2, 3), "non-seed nodes never met");
}

#[test]
fn sixty_four_nodes_converge_after_a_full_partition_heals() {
    let report = reign_proto::sim::scale::partition_heal(SimConfig {
        nodes: 64,
        seed: 64,
        ..SimConfig::default()
    });
    eprintln!("{report:?}");
    // The reconnection backoff (up to 500 ms here) dominates convergence.
    assert!(report.converged_after < Duration::from_secs(10));
}

#[test]
fn traces_record_faults_and_peer_events() {
    let mut sim = Sim::new(SimConfig::default());
    sim.run_for(Duration::from_millis(500));
    sim.crash(NodeId(1));
    sim.run_for(Duration::from_secs(1));
    let faults = sim
        .trace()
        .iter()
        .filter(|e| matches!(e, TraceEvent::Fault { .. }))
        .count();
    let downs = sim
        .trace()
        .iter()
        .filter(|e| {
            matches!(
                e,
                TraceEvent::Core {
                    event: reign_proto::Event::PeerDown { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(faults, 1);
    assert!(downs >= 2, "both survivors saw node 1 go");
}

/// The simulator's tuning with pings every second: a big mesh pings every
/// link ten times a second under `Tuning::fast()`, which is most of what
/// such a run costs and nothing these tests look at.
fn slow_pings() -> reign_proto::Tuning {
    reign_proto::Tuning {
        ping_interval: Duration::from_secs(1),
        read_deadline: Duration::from_secs(5),
        ..reign_proto::Tuning::fast()
    }
}

#[test]
fn over_256_members_with_ids_past_255_connect_and_deliver() {
    // 260 members, the last of them id 65535: more members than one page
    // of 256, ids whose high byte is not 0, and the highest id there is.
    // Every member's spec lists all 260; 38 of them run (a full mesh of
    // 260 takes minutes of CPU: `sim_scale -- 260 idle 65276` runs one),
    // the others stay down and are dialled with backoff, so every table
    // of a running node holds 260 members.
    let nodes: u16 = 260;
    let first_id = u16::MAX - (nodes - 1);
    let wall = std::time::Instant::now();
    let mut sim = Sim::new(SimConfig {
        nodes,
        first_id,
        seed: 22,
        tuning: slow_pings(),
        ..SimConfig::default()
    });
    let all = sim.running();
    assert_eq!(all.len(), usize::from(nodes));
    assert_eq!(all.first(), Some(&NodeId(first_id)));
    assert_eq!(all.last(), Some(&NodeId(u16::MAX)));
    // Every 7th member runs, and the last (id 65535); the ids that run
    // span the id 65280 where the table's page changes.
    for (i, &id) in all.iter().enumerate() {
        if i % 7 != 0 && id != NodeId(u16::MAX) {
            sim.crash(id);
        }
    }
    let ids = sim.running();
    assert_eq!(ids.len(), 38);
    let connected_after = reign_proto::sim::scale::connect(&mut sim);
    for &id in &ids {
        let members = sim.core(id).unwrap().members();
        assert_eq!(members.len(), usize::from(nodes), "node {}", id.0);
    }
    // Around the ring and back: every node sends to the next and to the
    // previous one.
    let mut mailboxes = Vec::new();
    for &id in &ids {
        mailboxes.push(sim.node(id).new_mailbox());
    }
    let n = ids.len();
    for (i, &from) in ids.iter().enumerate() {
        for j in [(i + 1) % n, (i + n - 1) % n] {
            let to = sim.node(from).address_of(mailboxes[j].0.id());
            to.send(u64::from(from.0)).expect("send over an up link");
        }
    }
    sim.run_for(Duration::from_millis(100));
    for (j, (_, mailbox)) in mailboxes.iter().enumerate() {
        let mut from: Vec<u64> = std::iter::from_fn(|| mailbox.try_recv().unwrap())
            .map(|m| m.downcast::<u64>().unwrap())
            .collect();
        from.sort_unstable();
        let mut expected = vec![
            u64::from(ids[(j + 1) % n].0),
            u64::from(ids[(j + n - 1) % n].0),
        ];
        expected.sort_unstable();
        assert_eq!(from, expected, "node {} got {from:?}", ids[j].0);
    }
    // Idle for over two ping intervals: every link gave its buffers back
    // (what stays is at most the last ping's and pong's few bytes each),
    // and the members that never ran are still members.
    sim.run_for(Duration::from_millis(2500));
    let core = sim.core(NodeId(u16::MAX)).unwrap();
    assert_eq!(core.members().len(), usize::from(nodes));
    let peers = core.connected_peers();
    assert_eq!(peers.len(), n - 1);
    let held: usize = peers.iter().map(|&p| core.idle_buffer_bytes(p)).sum();
    let per_link = held / peers.len();
    eprintln!(
        "{n} of {nodes} members: connected after {connected_after:?} (virtual), {:.1} s wall, {per_link} B of buffers per idle link",
        wall.elapsed().as_secs_f64()
    );
    assert!(per_link <= 600, "{per_link} bytes of buffers per idle link");
}

#[test]
fn a_link_gives_its_buffers_back_once_idle_and_keeps_them_while_busy() {
    let mut sim = Sim::new(SimConfig {
        nodes: 2,
        seed: 7,
        ..SimConfig::default()
    });
    sim.run_for(Duration::from_millis(500));
    assert!(sim.fully_connected());
    let (a, b) = (NodeId(0), NodeId(1));
    let (addr, mailbox) = sim.node(b).new_mailbox();
    let to_b = sim.node(a).address_of(addr.id());
    // Traffic both ways fills the sender's queue, the receiver's decoder
    // and, for the large message, its reassembly.
    for _ in 0..200 {
        to_b.send(serde_bytes::ByteBuf::from(vec![3u8; 2000]))
            .unwrap();
    }
    to_b.send(serde_bytes::ByteBuf::from(vec![4u8; 300_000]))
        .unwrap();
    let busy = sim.core(a).unwrap().idle_buffer_bytes(b);
    assert!(busy > 0, "a queue with messages holds memory");
    // The most the receiving end held while the traffic arrived.
    let mut receiving = 0;
    for _ in 0..100 {
        sim.run_for(Duration::from_millis(1));
        receiving = receiving.max(sim.core(b).unwrap().idle_buffer_bytes(a));
    }
    let mut got = 0;
    while let Ok(Some(_)) = mailbox.try_recv() {
        got += 1;
    }
    assert_eq!(got, 201);
    // Two ping intervals of quiet: both ends gave everything back but the
    // last ping's and pong's bytes.
    sim.run_for(Duration::from_millis(250));
    let idle_a = sim.core(a).unwrap().idle_buffer_bytes(b);
    let idle_b = sim.core(b).unwrap().idle_buffer_bytes(a);
    eprintln!("busy sender {busy} B, receiving {receiving} B, idle {idle_a} B and {idle_b} B");
    assert!(
        receiving > 16 * 1024,
        "the receiver's buffers grew with the traffic"
    );
    assert!(
        idle_a <= 600 && idle_b <= 600,
        "idle links hold {idle_a} and {idle_b} bytes"
    );
    // And the link works as before.
    to_b.send(serde_bytes::ByteBuf::from(vec![5u8; 100]))
        .unwrap();
    sim.run_for(Duration::from_millis(50));
    assert!(mailbox.try_recv().unwrap().is_some());
}
