//! The name registry and cross-node close notifications: in the simulator
//! (virtual time, real TLS), and the registry state machine alone under
//! proptest.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use proptest::prelude::*;
use reign_proto::control::Control;
use reign_proto::registry::{Effect, Registry};
use reign_proto::sim::Sim;
use reign_proto::{
    Address, ExitReason, Incarnation, Mailbox, MailboxClosed, MailboxId, MultipleClaim, NodeId,
    RegistryError,
};

/// Runs until `node`'s sync completes.
fn sync(sim: &mut Sim, node: NodeId) {
    let sync = sim.node(node).sync();
    for _ in 0..1000 {
        if sync.is_done() {
            return;
        }
        sim.run_for(Duration::from_millis(1));
    }
    panic!("sync of {node:?} never completed");
}

fn drain(mailbox: &Mailbox) -> Vec<reign_proto::Message> {
    std::iter::from_fn(|| mailbox.try_recv().unwrap()).collect()
}

#[test]
fn names_propagate_and_vanish_on_unregister_and_close() {
    let mut sim = Sim::connected(3, 1);
    let (addr, mailbox) = sim.node(NodeId(0)).new_mailbox();
    sim.node(NodeId(0)).register("greeter", &addr).unwrap();
    sync(&mut sim, NodeId(0));
    for n in [1, 2] {
        let found = sim
            .node(NodeId(n))
            .lookup("greeter")
            .expect("visible after sync");
        assert_eq!(found, addr);
        assert!(!found.is_local());
        assert_eq!(
            sim.node(NodeId(n)).seen_names(&["greeter", "nobody"]),
            vec![true, false]
        );
    }
    sim.node(NodeId(0)).unregister("greeter", &addr);
    sync(&mut sim, NodeId(0));
    for n in [1, 2] {
        assert_eq!(sim.node(NodeId(n)).lookup("greeter"), None);
    }
    sim.node(NodeId(0)).register("greeter", &addr).unwrap();
    sync(&mut sim, NodeId(0));
    assert!(sim.node(NodeId(2)).lookup("greeter").is_some());
    drop(mailbox);
    sync(&mut sim, NodeId(0));
    for n in [0, 1, 2] {
        assert_eq!(sim.node(NodeId(n)).lookup("greeter"), None, "node {n}");
    }
}

#[test]
fn only_live_local_mailboxes_can_be_registered() {
    let sim = Sim::connected(2, 2);
    let (remote_addr, _b) = sim.node(NodeId(1)).new_mailbox();
    let remote = sim.node(NodeId(0)).address_of(remote_addr.id());
    assert!(matches!(
        sim.node(NodeId(0)).register("x", &remote),
        Err(RegistryError::CantRegister { .. })
    ));
    let (closed, closed_box) = sim.node(NodeId(0)).new_mailbox();
    drop(closed_box);
    assert!(matches!(
        sim.node(NodeId(0)).register("x", &closed),
        Err(RegistryError::CantRegister { .. })
    ));
}

#[test]
fn a_name_claimed_on_two_nodes_notifies_both_and_every_node_picks_the_same_winner() {
    let mut sim = Sim::connected(3, 3);
    let (a, a_box) = sim.node(NodeId(0)).new_mailbox();
    let (b, b_box) = sim.node(NodeId(1)).new_mailbox();
    // Node 1 claims first; node 0's later claim still wins (lowest id).
    sim.node(NodeId(1)).register("svc", &b).unwrap();
    sync(&mut sim, NodeId(1));
    sim.node(NodeId(0)).register("svc", &a).unwrap();
    sync(&mut sim, NodeId(0));
    for (node, mailbox) in [(0, &a_box), (1, &b_box)] {
        let notes: Vec<MultipleClaim> = drain(mailbox)
            .into_iter()
            .filter_map(|m| m.downcast::<MultipleClaim>().ok())
            .collect();
        assert_eq!(
            notes,
            vec![MultipleClaim { name: "svc".into() }],
            "node {node}"
        );
        assert_eq!(sim.node(NodeId(node)).multiple_claim_notices(), 1);
    }
    for n in 0..3 {
        let node = sim.node(NodeId(n));
        assert_eq!(node.multiple_claim_count(), 1, "node {n}");
        assert_eq!(node.stats().name_conflicts, 1, "node {n}: seen once");
        assert_eq!(
            node.lookup_all("svc"),
            vec![a.clone(), b.clone()],
            "node {n}"
        );
        for _ in 0..10 {
            assert_eq!(node.lookup("svc").unwrap().id(), a.id(), "node {n}");
        }
    }
    // The winner lets go: every node turns to the other claimant.
    sim.node(NodeId(0)).unregister("svc", &a);
    sync(&mut sim, NodeId(0));
    for n in 0..3 {
        let node = sim.node(NodeId(n));
        assert_eq!(node.lookup("svc").unwrap().id(), b.id(), "node {n}");
        assert_eq!(node.multiple_claim_count(), 0, "node {n}");
    }
}

#[test]
fn multiple_claim_count_walks_like_go_reign() {
    // Go reign's TestMultipleClaimCount: 0 -> 1 -> 2 -> 1 -> 1 -> 0. Here a
    // node holds one claimant per name, so the claims come from 3 nodes.
    let mut sim = Sim::connected(3, 8);
    let boxes: Vec<(Address, Mailbox)> =
        (0..3).map(|n| sim.node(NodeId(n)).new_mailbox()).collect();
    let counts = |sim: &mut Sim| -> Vec<usize> {
        for n in 0..3 {
            sync(sim, NodeId(n));
        }
        (0..3)
            .map(|n| sim.node(NodeId(n)).multiple_claim_count())
            .collect()
    };
    assert_eq!(counts(&mut sim), [0, 0, 0]);
    sim.node(NodeId(0)).register("foo", &boxes[0].0).unwrap();
    sim.node(NodeId(1)).register("foo", &boxes[1].0).unwrap();
    assert_eq!(counts(&mut sim), [1, 1, 1]);
    for n in 0..3 {
        sim.node(NodeId(n))
            .register("bar", &boxes[n as usize].0)
            .unwrap();
    }
    assert_eq!(counts(&mut sim), [2, 2, 2]);
    sim.node(NodeId(1)).unregister("foo", &boxes[1].0);
    assert_eq!(counts(&mut sim), [1, 1, 1]);
    sim.node(NodeId(0)).unregister("bar", &boxes[0].0);
    assert_eq!(counts(&mut sim), [1, 1, 1], "bar still has two claimants");
    sim.node(NodeId(2)).unregister("bar", &boxes[2].0);
    assert_eq!(counts(&mut sim), [0, 0, 0]);
    // The notices only grew. Node 0's claimants always won (told once per
    // name), node 2's always lost (told once); node 1's claimant of bar is
    // told again if it won against node 2 before node 0's claim arrived.
    let notices: Vec<u64> = (0..3)
        .map(|n| sim.node(NodeId(n)).stats().multiple_claim_notices)
        .collect();
    assert_eq!((notices[0], notices[2]), (2, 1), "{notices:?}");
    assert!((2..=3).contains(&notices[1]), "{notices:?}");
}

#[test]
fn conflicts_found_when_a_partition_heals_notify_every_claimant() {
    let mut sim = Sim::connected(2, 4);
    sim.partition(NodeId(0), NodeId(1));
    sim.run_for(Duration::from_secs(2));
    assert!(!sim.fully_connected());
    let (a, a_box) = sim.node(NodeId(0)).new_mailbox();
    let (b, b_box) = sim.node(NodeId(1)).new_mailbox();
    sim.node(NodeId(0)).register("leader", &a).unwrap();
    sim.node(NodeId(1)).register("leader", &b).unwrap();
    assert_eq!(sim.node(NodeId(1)).lookup("leader"), Some(b.clone()));
    sim.heal();
    sim.run_for(Duration::from_secs(2));
    assert!(sim.fully_connected());
    for mailbox in [&a_box, &b_box] {
        assert!(drain(mailbox).iter().any(|m| m.is::<MultipleClaim>()));
    }
    for n in 0..2 {
        let node = sim.node(NodeId(n));
        assert_eq!(node.lookup_all("leader").len(), 2);
        assert_eq!(node.lookup("leader").unwrap().id(), a.id(), "node {n}");
        assert_eq!(node.stats().name_conflicts, 1, "node {n}");
        assert_eq!(node.multiple_claim_count(), 1, "node {n}");
    }
}

#[test]
fn node_loss_removes_its_names_and_closes_watches_exactly_once() {
    let mut sim = Sim::connected(3, 5);
    let (target, _target_box) = sim.node(NodeId(2)).new_mailbox();
    sim.node(NodeId(2)).register("worker", &target).unwrap();
    sync(&mut sim, NodeId(2));
    let mut watchers = Vec::new();
    for n in [0, 1] {
        let (w, w_box) = sim.node(NodeId(n)).new_mailbox();
        sim.node(NodeId(n))
            .address_of(target.id())
            .on_close_notify(&w);
        watchers.push(w_box);
    }
    sim.run_for(Duration::from_millis(20));
    sim.crash(NodeId(2));
    sim.run_for(Duration::from_secs(2));
    for (n, w_box) in watchers.iter().enumerate() {
        assert_eq!(sim.node(NodeId(n as u16)).lookup("worker"), None);
        let notes: Vec<MailboxClosed> = drain(w_box)
            .into_iter()
            .filter_map(|m| m.downcast::<MailboxClosed>().ok())
            .collect();
        assert_eq!(notes.len(), 1, "node {n}: exactly once: {notes:?}");
        assert_eq!(notes[0].id, target.id());
        assert!(
            matches!(notes[0].reason, ExitReason::Unreachable(Some(_))),
            "node {n}: {:?}",
            notes[0].reason
        );
    }
    sim.restart(NodeId(2));
    sim.run_for(Duration::from_secs(2));
    assert!(sim.fully_connected());
    let (again, _again_box) = sim.node(NodeId(2)).new_mailbox();
    sim.node(NodeId(2)).register("worker", &again).unwrap();
    sync(&mut sim, NodeId(2));
    assert_eq!(sim.node(NodeId(0)).lookup("worker"), Some(again));
    // No second notification arrived later.
    for w_box in &watchers {
        assert!(drain(w_box).iter().all(|m| !m.is::<MailboxClosed>()));
    }
}

#[test]
fn remote_watches_fire_on_close_and_can_be_cancelled() {
    let mut sim = Sim::connected(2, 6);
    let (target, target_box) = sim.node(NodeId(1)).new_mailbox();
    let (kept, kept_box) = sim.node(NodeId(0)).new_mailbox();
    let (cancelled, cancelled_box) = sim.node(NodeId(0)).new_mailbox();
    let remote = sim.node(NodeId(0)).address_of(target.id());
    remote.on_close_notify(&kept);
    remote.on_close_notify(&cancelled);
    sim.run_for(Duration::from_millis(20));
    remote.remove_notify(&cancelled);
    sim.run_for(Duration::from_millis(20));
    target_box.close();
    sim.run_for(Duration::from_millis(20));
    assert_eq!(
        drain(&kept_box)
            .into_iter()
            .map(|m| m.downcast::<MailboxClosed>().unwrap())
            .collect::<Vec<_>>(),
        vec![MailboxClosed {
            id: target.id(),
            reason: ExitReason::Closed
        }]
    );
    assert!(drain(&cancelled_box).is_empty());
    // Watching a remote mailbox that is already closed reports at once.
    remote.on_close_notify(&kept);
    sim.run_for(Duration::from_millis(20));
    assert_eq!(drain(&kept_box).len(), 1);
    // Losing the node later adds nothing: every watch already fired.
    sim.crash(NodeId(1));
    sim.run_for(Duration::from_secs(1));
    assert!(drain(&kept_box).is_empty());
}

#[test]
fn registry_dump_describes_the_view() {
    let mut sim = Sim::connected(2, 7);
    let (a, _a_box) = sim.node(NodeId(0)).new_mailbox();
    sim.node(NodeId(0)).register("one", &a).unwrap();
    sim.node(NodeId(0)).register("two", &a).unwrap();
    sync(&mut sim, NodeId(0));
    let dump = sim.node(NodeId(1)).registry_dump();
    assert_eq!(dump.name_count, 2);
    assert_eq!(dump.address_count, 1);
    assert_eq!(dump.claims_per_node.get(&0), Some(&2));
    let json: serde_json::Value = serde_json::from_str(&sim.node(NodeId(1)).dump_json()).unwrap();
    assert_eq!(json["name_count"], 2);
}

// ----- the registry state machine alone -------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Register { node: u16, name: u8, serial: u64 },
    Unregister { node: u16, name: u8, serial: u64 },
    Close { node: u16, serial: u64 },
    Connect { a: u16, b: u16 },
    Disconnect { a: u16, b: u16 },
    Deliver { from: u16, to: u16, count: u8 },
}

fn op(nodes: u16) -> impl Strategy<Value = Op> {
    let n = 0..nodes;
    prop_oneof![
        3 => (n.clone(), 0..4u8, 1..4u64).prop_map(|(node, name, serial)| Op::Register { node, name, serial }),
        1 => (n.clone(), 0..4u8, 1..4u64).prop_map(|(node, name, serial)| Op::Unregister { node, name, serial }),
        1 => (n.clone(), 1..4u64).prop_map(|(node, serial)| Op::Close { node, serial }),
        2 => (n.clone(), n.clone()).prop_map(|(a, b)| Op::Connect { a, b }),
        1 => (n.clone(), n.clone()).prop_map(|(a, b)| Op::Disconnect { a, b }),
        4 => (n.clone(), n, 1..8u8).prop_map(|(from, to, count)| Op::Deliver { from, to, count }),
    ]
}

fn mid(node: u16, serial: u64) -> MailboxId {
    MailboxId {
        node: NodeId(node),
        incarnation: Incarnation(1),
        serial,
    }
}

struct World {
    registries: Vec<Registry>,
    /// In-flight control messages per direction, in order.
    links: BTreeMap<(u16, u16), VecDeque<Control>>,
    closed: BTreeSet<MailboxId>,
    /// `MultipleClaim` notices handed out, as (name, claimant).
    told: BTreeSet<(String, MailboxId)>,
}

impl World {
    fn new(n: u16) -> World {
        World {
            registries: (0..n).map(|i| Registry::new(NodeId(i))).collect(),
            links: BTreeMap::new(),
            closed: BTreeSet::new(),
            told: BTreeSet::new(),
        }
    }

    fn connected(&self, a: u16, b: u16) -> bool {
        self.links.contains_key(&(a, b))
    }

    fn effects(&mut self, from: u16, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send(to, control) => {
                    let queue = self
                        .links
                        .get_mut(&(from, to.0))
                        .expect("registries only send to connected peers");
                    queue.push_back(control);
                }
                Effect::MultipleClaim { name, claimant } => {
                    assert_eq!(claimant.node.0, from, "told another node's claimant");
                    self.told.insert((name, claimant));
                }
                Effect::NameConflict { .. } | Effect::SyncDone(_) => {}
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Register { node, name, serial } => {
                let id = mid(node, serial);
                if !self.closed.contains(&id) {
                    let effects = self.registries[node as usize]
                        .register(&format!("n{name}"), id)
                        .unwrap();
                    self.effects(node, effects);
                }
            }
            Op::Unregister { node, name, serial } => {
                let effects = self.registries[node as usize]
                    .unregister(&format!("n{name}"), mid(node, serial));
                self.effects(node, effects);
            }
            Op::Close { node, serial } => {
                let id = mid(node, serial);
                if self.closed.insert(id) {
                    let effects = self.registries[node as usize].mailbox_closed(id);
                    self.effects(node, effects);
                }
            }
            Op::Connect { a, b } => {
                if a != b && !self.connected(a, b) {
                    self.links.insert((a, b), VecDeque::new());
                    self.links.insert((b, a), VecDeque::new());
                    let to_b = self.registries[a as usize].peer_up(NodeId(b));
                    let to_a = self.registries[b as usize].peer_up(NodeId(a));
                    self.links.get_mut(&(a, b)).unwrap().extend(to_b);
                    self.links.get_mut(&(b, a)).unwrap().extend(to_a);
                }
            }
            Op::Disconnect { a, b } => {
                if a != b && self.connected(a, b) {
                    self.links.remove(&(a, b));
                    self.links.remove(&(b, a));
                    let ea = self.registries[a as usize].peer_down(NodeId(b));
                    let eb = self.registries[b as usize].peer_down(NodeId(a));
                    self.effects(a, ea);
                    self.effects(b, eb);
                }
            }
            Op::Deliver { from, to, count } => {
                for _ in 0..count {
                    let Some(control) = self
                        .links
                        .get_mut(&(from, to))
                        .and_then(VecDeque::pop_front)
                    else {
                        break;
                    };
                    let effects = self.registries[to as usize]
                        .on_control(NodeId(from), control)
                        .unwrap();
                    self.effects(to, effects);
                }
            }
        }
    }

    fn quiesce(&mut self) {
        let n = self.registries.len() as u16;
        for a in 0..n {
            for b in 0..n {
                self.apply(&Op::Connect { a, b });
            }
        }
        while let Some((&(from, to), _)) = self.links.iter().find(|(_, q)| !q.is_empty()) {
            self.apply(&Op::Deliver {
                from,
                to,
                count: u8::MAX,
            });
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_view_converges_to_the_union_of_live_claims(
        (nodes, ops) in (2u16..=5).prop_flat_map(|n| (Just(n), proptest::collection::vec(op(n), 0..60)))
    ) {
        let mut world = World::new(nodes);
        for op in &ops {
            world.apply(op);
        }
        world.quiesce();
        let mut union: BTreeMap<String, BTreeSet<MailboxId>> = BTreeMap::new();
        for registry in &world.registries {
            for (name, id) in registry.local_claims() {
                prop_assert!(!world.closed.contains(&id), "a closed mailbox still holds {name}");
                union.entry(name).or_default().insert(id);
            }
        }
        let contested = union.values().filter(|ids| ids.len() > 1).count();
        for (i, registry) in world.registries.iter().enumerate() {
            prop_assert_eq!(&registry.view(), &union, "node {} diverged after {:?}", i, ops);
            prop_assert_eq!(registry.multiple_claim_count(), contested, "node {}", i);
            for (name, ids) in &union {
                // Every node resolves every name to the same winner.
                prop_assert_eq!(registry.lookup(name), ids.first().copied(), "node {} on {}", i, name);
            }
        }
        // Every claimant party to a conflict was told at least once.
        for registry in &world.registries {
            for (name, id) in registry.local_claims() {
                if union[&name].len() > 1 {
                    prop_assert!(world.told.contains(&(name.clone(), id)), "{:?} never told about {}", id, name);
                }
            }
        }
    }
}
