//! The node state machine driven by hand with a virtual clock (no sockets,
//! no runtime): connection set-up, remote delivery and ordering, pings,
//! deadlines, backoff, restarts and hostile input.

use std::time::{Duration, Instant};

use reign_proto::core::AcceptError;
use reign_proto::sim::{Sim, SimConfig, TraceEvent};
use reign_proto::{
    Address, CloseReason, ClusterSpec, ConnId, Core, CoreConfig, Event, ExitReason, Incarnation,
    Input, Mailbox, MailboxClosed, NodeId, Output, Tuning,
};

/// The next message already in `mailbox`, as a `T`.
///
/// # Panics
/// If the mailbox is empty or closed, or the message is not a `T`.
fn queued<T: serde::de::DeserializeOwned + 'static>(mailbox: &Mailbox) -> T {
    let msg = mailbox.try_recv().unwrap().expect("a queued message");
    match msg.downcast::<T>() {
        Ok(value) => value,
        Err(_) => panic!("not a {}", std::any::type_name::<T>()),
    }
}

fn down_events(sim: &Sim, node: NodeId, peer: NodeId) -> Vec<Duration> {
    sim.trace()
        .iter()
        .filter_map(|e| match e {
            TraceEvent::Core {
                at,
                node: n,
                event: Event::PeerDown { node: p, .. },
            } if *n == node && *p == peer => Some(*at),
            _ => None,
        })
        .collect()
}

fn fault_time(sim: &Sim, what: &str) -> Duration {
    sim.trace()
        .iter()
        .find_map(|e| match e {
            TraceEvent::Fault { at, what: w } if w == what => Some(*at),
            _ => None,
        })
        .expect("fault in trace")
}

#[test]
fn three_nodes_exchange_messages_in_every_direction() {
    let mut sim = Sim::connected(3, 1);
    let ids = [NodeId(0), NodeId(1), NodeId(2)];
    let boxes: Vec<_> = ids.iter().map(|&id| sim.node(id).new_mailbox()).collect();
    for &from in &ids {
        for (to, (addr, _)) in ids.iter().zip(&boxes) {
            let remote = sim.node(from).address_of(addr.id());
            assert_eq!(remote.is_local(), from == *to);
            remote.send(format!("{}->{}", from.0, to.0)).unwrap();
        }
    }
    sim.run_for(Duration::from_millis(50));
    for (to, (_, mailbox)) in ids.iter().zip(&boxes) {
        let mut got: Vec<String> = std::iter::from_fn(|| mailbox.try_recv().unwrap())
            .map(|m| m.downcast::<String>().unwrap())
            .collect();
        got.sort();
        let want: Vec<String> = ids.iter().map(|f| format!("{}->{}", f.0, to.0)).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn ten_thousand_messages_arrive_complete_and_in_order() {
    let mut sim = Sim::connected(2, 2);
    let (addr, mailbox) = sim.node(NodeId(1)).new_mailbox();
    let remote = sim.node(NodeId(0)).address_of(addr.id());
    for i in 0..10_000u64 {
        remote.send(i).unwrap();
    }
    sim.run_for(Duration::from_millis(100));
    assert_eq!(mailbox.message_count(), 10_000);
    for i in 0..10_000u64 {
        assert_eq!(queued::<u64>(&mailbox), i);
    }
    let stats = sim.node(NodeId(1)).stats();
    assert_eq!(stats.remote_delivered, 10_000);
}

#[test]
fn an_address_sent_away_and_back_reaches_its_mailbox() {
    let mut sim = Sim::connected(2, 3);
    let (home, home_box) = sim.node(NodeId(0)).new_mailbox();
    let (echo, echo_box) = sim.node(NodeId(1)).new_mailbox();
    sim.node(NodeId(0))
        .address_of(echo.id())
        .send(home.clone())
        .unwrap();
    sim.run_for(Duration::from_millis(20));
    let back: Address = echo_box.try_recv().unwrap().unwrap().downcast().unwrap();
    assert!(!back.is_local());
    assert_eq!(back, home);
    back.send(String::from("returned")).unwrap();
    sim.run_for(Duration::from_millis(20));
    let msg = home_box.try_recv().unwrap().unwrap();
    assert!(msg.is_remote());
    assert_eq!(msg.downcast::<String>().unwrap(), "returned");
}

#[test]
fn missed_pings_declare_a_peer_down_then_it_reconnects() {
    let tuning = Tuning::fast();
    let mut sim = Sim::connected(2, 4);
    // One-way: node 1 hears nothing more from node 0.
    sim.block(NodeId(0), NodeId(1));
    sim.run_for(Duration::from_secs(3));
    let blocked_at = fault_time(&sim, "block 0->1");
    let downs = down_events(&sim, NodeId(1), NodeId(0));
    assert!(!downs.is_empty(), "node 1 never declared node 0 down");
    let detection = downs[0] - blocked_at;
    let expected = tuning.ping_interval * tuning.max_ping_failures;
    assert!(
        detection >= expected - tuning.ping_interval
            && detection <= expected + tuning.ping_interval * 2,
        "detected after {detection:?}, expected about {expected:?}"
    );
    sim.heal();
    sim.run_for(Duration::from_secs(2));
    assert!(sim.fully_connected(), "reconnected after healing");
}

#[test]
fn silence_past_the_read_deadline_declares_a_peer_down() {
    let tuning = Tuning {
        max_ping_failures: 1_000,
        read_deadline: Duration::from_millis(800),
        ..Tuning::fast()
    };
    let mut sim = Sim::new(SimConfig {
        nodes: 2,
        seed: 5,
        tuning: tuning.clone(),
        ..SimConfig::default()
    });
    sim.run_for(Duration::from_millis(300));
    assert!(sim.fully_connected());
    sim.block(NodeId(0), NodeId(1));
    sim.run_for(Duration::from_secs(2));
    let detection = down_events(&sim, NodeId(1), NodeId(0))[0] - fault_time(&sim, "block 0->1");
    assert!(
        detection >= tuning.read_deadline - tuning.ping_interval
            && detection <= tuning.read_deadline + tuning.ping_interval,
        "detected after {detection:?}"
    );
}

#[test]
fn redials_back_off_exponentially_with_jitter_up_to_the_cap() {
    let tuning = Tuning::fast();
    let mut sim = Sim::connected(2, 6);
    sim.crash(NodeId(1));
    sim.run_for(Duration::from_secs(6));
    let crashed_at = fault_time(&sim, "crash 1");
    let dials: Vec<Duration> = sim
        .trace()
        .iter()
        .filter_map(|e| match e {
            TraceEvent::Dial { at, from, .. } if *from == NodeId(0) && *at > crashed_at => {
                Some(*at)
            }
            _ => None,
        })
        .collect();
    assert!(dials.len() >= 8, "only {} redials", dials.len());
    let gaps: Vec<Duration> = dials.windows(2).map(|w| w[1] - w[0]).collect();
    // Each gap is the jittered delay plus the simulated failed-dial time.
    let dial_time = Duration::from_millis(5);
    for (i, gap) in gaps.iter().enumerate() {
        let base = (tuning.backoff_initial * 2u32.pow(i as u32 + 1)).min(tuning.backoff_max);
        assert!(
            *gap >= base / 2 && *gap <= base + dial_time,
            "gap {i} is {gap:?}, base {base:?}: {gaps:?}"
        );
    }
    let capped = &gaps[gaps.len() - 3..];
    assert!(capped.iter().all(|g| *g <= tuning.backoff_max + dial_time));
    assert!(
        capped.windows(2).any(|w| w[0] != w[1]),
        "jitter varies the delays"
    );

    sim.restart(NodeId(1));
    sim.run_for(tuning.backoff_max * 2);
    assert!(sim.fully_connected());
}

#[test]
fn a_restarted_node_is_a_new_incarnation_and_old_addresses_stay_dead() {
    let mut sim = Sim::connected(2, 7);
    let (old, _old_box) = sim.node(NodeId(1)).new_mailbox();
    let (watcher, watcher_box) = sim.node(NodeId(0)).new_mailbox();
    let old_remote = sim.node(NodeId(0)).address_of(old.id());
    sim.crash(NodeId(1));
    sim.restart(NodeId(1));
    sim.run_for(Duration::from_secs(2));
    assert!(sim.fully_connected());
    let ups: Vec<Incarnation> = sim
        .trace()
        .iter()
        .filter_map(|e| match e {
            TraceEvent::Core {
                node: NodeId(0),
                event: Event::PeerUp { incarnation, .. },
                ..
            } => Some(*incarnation),
            _ => None,
        })
        .collect();
    assert_eq!(ups.len(), 2);
    assert!(ups[1] > ups[0]);
    // The restarted node has a mailbox with the same serial; the old address
    // must not reach it.
    let (new, new_box) = sim.node(NodeId(1)).new_mailbox();
    assert_eq!(new.id().serial, old.id().serial);
    old_remote.send(1u8).unwrap();
    sim.run_for(Duration::from_millis(20));
    assert_eq!(new_box.message_count(), 0);
    assert_eq!(sim.node(NodeId(1)).stats().dropped_closed, 1);
    drop(watcher);
    drop(watcher_box);
}

#[test]
fn sends_to_a_down_node_succeed_and_are_counted() {
    let mut sim = Sim::connected(2, 8);
    let (addr, _b) = sim.node(NodeId(1)).new_mailbox();
    let remote = sim.node(NodeId(0)).address_of(addr.id());
    sim.crash(NodeId(1));
    sim.run_for(Duration::from_millis(50));
    remote.send(1u32).unwrap();
    assert_eq!(sim.node(NodeId(0)).stats().dropped_unreachable, 1);
}

#[test]
fn a_large_message_does_not_hold_up_a_small_one() {
    let mut sim = Sim::connected(2, 9);
    let (big, big_box) = sim.node(NodeId(1)).new_mailbox();
    let (small, small_box) = sim.node(NodeId(1)).new_mailbox();
    let n0 = sim.node(NodeId(0)).clone();
    let payload = serde_bytes::ByteBuf::from(vec![7u8; 8 << 20]);
    n0.address_of(big.id()).send(payload).unwrap();
    n0.address_of(small.id()).send(1u8).unwrap();
    let mut small_first = false;
    for _ in 0..2_000 {
        sim.run_for(Duration::from_micros(500));
        if small_box.message_count() == 1 {
            small_first = big_box.message_count() == 0;
            break;
        }
    }
    assert!(small_first, "the small message waited for the large one");
    sim.run_for(Duration::from_millis(500));
    let got: serde_bytes::ByteBuf = big_box.try_recv().unwrap().unwrap().downcast().unwrap();
    assert_eq!(got.len(), 8 << 20);
    assert!(got.iter().all(|&b| b == 7));
}

#[test]
fn order_holds_per_mailbox_behind_a_fragmented_message() {
    let mut sim = Sim::connected(2, 10);
    let (addr, mailbox) = sim.node(NodeId(1)).new_mailbox();
    let remote = sim.node(NodeId(0)).address_of(addr.id());
    remote.send(0u64).unwrap();
    remote
        .send(serde_bytes::ByteBuf::from(vec![1u8; 300_000]))
        .unwrap();
    for i in 1..100u64 {
        remote.send(i).unwrap();
    }
    sim.run_for(Duration::from_millis(200));
    assert_eq!(queued::<u64>(&mailbox), 0);
    assert!(mailbox
        .try_recv()
        .unwrap()
        .unwrap()
        .is::<serde_bytes::ByteBuf>());
    for i in 1..100u64 {
        assert_eq!(queued::<u64>(&mailbox), i);
    }
}

#[test]
fn connection_status_is_reported_to_subscribers() {
    let mut sim = Sim::connected(2, 11);
    let (watcher, watcher_box) = sim.node(NodeId(0)).new_mailbox();
    sim.node(NodeId(0)).subscribe_connection_status(&watcher);
    sim.crash(NodeId(1));
    sim.run_for(Duration::from_millis(50));
    sim.restart(NodeId(1));
    sim.run_for(Duration::from_secs(2));
    let statuses: Vec<bool> = std::iter::from_fn(|| watcher_box.try_recv().unwrap())
        .map(|m| {
            m.downcast::<reign_proto::ConnectionStatus>()
                .unwrap()
                .connected
        })
        .collect();
    assert_eq!(statuses, [false, true]);
}

#[test]
fn a_peer_that_shuts_down_is_reported_down_for_leaving() {
    let mut sim = Sim::connected(2, 12);
    let (watcher, watcher_box) = sim.node(NodeId(0)).new_mailbox();
    sim.node(NodeId(0)).subscribe_connection_status(&watcher);
    sim.shutdown(NodeId(1));
    sim.run_for(Duration::from_millis(200));
    let reasons: Vec<CloseReason> = sim
        .trace()
        .iter()
        .filter_map(|e| match e {
            TraceEvent::Core {
                node: NodeId(0),
                event: Event::PeerDown { reason, .. },
                ..
            } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, [CloseReason::PeerLeaving]);
    assert_eq!(
        reasons[0].to_string(),
        "peer said goodbye: node shutting down"
    );
    let status = watcher_box
        .try_recv()
        .unwrap()
        .expect("a status")
        .downcast::<reign_proto::ConnectionStatus>()
        .unwrap();
    assert!(!status.connected);
    assert_eq!(status.reason, Some(CloseReason::PeerLeaving));
}

#[test]
fn a_restarted_node_whose_old_connection_lingers_is_let_in_once_it_times_out() {
    let mut sim = Sim::new(SimConfig {
        nodes: 2,
        seed: 11,
        ..SimConfig::default()
    });
    sim.run_for(Duration::from_secs(1));
    assert!(sim.fully_connected());
    // Node 1 dies without a close reaching node 0, and starts again at once.
    sim.power_off(NodeId(1));
    sim.restart(NodeId(1));
    sim.run_for(Duration::from_millis(500));
    let new_up = |sim: &Sim| {
        sim.trace().iter().any(|e| {
            matches!(e, TraceEvent::Core { node: NodeId(0), event: Event::PeerUp { node: NodeId(1), incarnation }, .. }
                if *incarnation == Incarnation(2))
        })
    };
    // Node 0 still holds the old connection: the newcomer waits while the
    // old one is pinged, and nobody answers.
    assert!(
        !new_up(&sim),
        "the new incarnation replaced a connection not yet known dead"
    );
    sim.run_for(Duration::from_secs(4));
    assert!(
        new_up(&sim),
        "the new incarnation was never let in: {:?}",
        sim.trace()
    );
    assert!(sim.fully_connected());
    assert!(!sim.trace().iter().any(|e| matches!(
        e,
        TraceEvent::Core {
            event: Event::IdentityConflict { .. },
            ..
        }
    )));
}

// ----- one core by hand ----------------------------------------------------

/// A core for node `id` of `spec`, started as `incarnation` at `now`.
fn start_core(
    spec: &ClusterSpec,
    id: u16,
    incarnation: u64,
    now: Instant,
) -> Result<Core, reign_proto::SpecError> {
    let config = CoreConfig {
        spec: spec
            .resolve(NodeId(id), rustls::pki_types::UnixTime::now())
            .unwrap(),
        incarnation: Incarnation(incarnation),
        seed: incarnation,
        time_provider: reign_proto::tls::system_time(),
    };
    Core::new(config, now)
}

/// Node 1's spec of a two-node cluster.
fn two_node_spec(ca: &reign_proto::certgen::ClusterCa) -> ClusterSpec {
    let addrs = vec![
        (NodeId(0), "127.0.0.1:1".to_string()),
        (NodeId(1), "127.0.0.1:2".to_string()),
    ];
    ca.inline_spec(NodeId(1), &addrs).unwrap()
}

fn lone_core(tuning: Tuning) -> (Core, Instant) {
    let ca = reign_proto::certgen::ClusterCa::generate().unwrap();
    let mut spec = two_node_spec(&ca);
    spec.tuning = tuning;
    let now = Instant::now();
    (start_core(&spec, 1, 1, now).unwrap(), now)
}

fn drain(core: &mut Core, now: Instant) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output(now)).collect()
}

#[test]
fn a_stalled_handshake_is_closed_at_its_deadline() {
    let tuning = Tuning::fast();
    let (mut core, now) = lone_core(tuning.clone());
    let conn = core.accept(now, "slow loris").unwrap();
    assert!(
        drain(&mut core, now).is_empty(),
        "node 1 gives node 0 (the lower id) time to dial first"
    );
    let dial_at = core.poll_timeout().unwrap();
    assert_eq!(dial_at, now + tuning.backoff_initial * 4);
    core.handle_input(dial_at, Input::Timeout);
    let outputs = drain(&mut core, dial_at);
    assert!(
        matches!(
            outputs.as_slice(),
            [Output::Connect {
                node: NodeId(0),
                ..
            }]
        ),
        "{outputs:?}"
    );
    let deadline = core.poll_timeout().unwrap();
    assert_eq!(deadline, now + tuning.handshake_timeout);
    core.handle_input(deadline, Input::Timeout);
    assert_eq!(drain(&mut core, deadline), vec![Output::Close { conn }]);
    assert_eq!(core.connection_count(), 1, "only the dial is left");
}

#[test]
fn garbage_closes_only_that_connection() {
    let (mut core, now) = lone_core(Tuning::fast());
    let good = core.accept(now, "quiet").unwrap();
    let bad = core.accept(now, "garbage").unwrap();
    core.handle_input(
        now,
        Input::Received {
            conn: bad,
            bytes: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        },
    );
    let outputs = drain(&mut core, now);
    assert!(
        outputs.contains(&Output::Close { conn: bad }),
        "{outputs:?}"
    );
    assert!(!outputs.contains(&Output::Close { conn: good }));
    assert_eq!(core.connection_count(), 1);
}

#[test]
fn handshake_slots_are_capped() {
    let tuning = Tuning {
        max_handshaking: 3,
        ..Tuning::fast()
    };
    let (mut core, now) = lone_core(tuning);
    for _ in 0..3 {
        core.accept(now, "flood").unwrap();
    }
    assert_eq!(
        core.accept(now, "flood"),
        Err(AcceptError::TooManyHandshakes { limit: 3 })
    );
}

#[test]
fn close_notifications_reach_local_watchers_of_remote_nodes_unreachable() {
    // A watch on a mailbox of a node that is not connected fires at once.
    let (core, _) = lone_core(Tuning::fast());
    let node = core.node().clone();
    let (watcher, watcher_box) = node.new_mailbox();
    let mut far = watcher.id();
    far.node = NodeId(0);
    node.address_of(far).on_close_notify(&watcher);
    assert_eq!(
        queued::<MailboxClosed>(&watcher_box),
        MailboxClosed {
            id: far,
            reason: ExitReason::Unreachable(None)
        }
    );
}

#[test]
fn an_empty_or_overlong_protocol_name_is_a_typed_spec_error() {
    let ca = reign_proto::certgen::ClusterCa::generate().unwrap();
    for bad in [String::new(), "x".repeat(256)] {
        let mut spec = two_node_spec(&ca);
        spec.permitted_protocols = vec!["reign".into(), bad.clone()];
        match start_core(&spec, 1, 1, Instant::now()) {
            Err(reign_proto::SpecError::Tls { error }) => {
                assert!(error.contains("1 to 255 bytes"), "{error}")
            }
            Err(other) => panic!("{} bytes: another error: {other}", bad.len()),
            Ok(_) => panic!("a {}-byte protocol name was accepted", bad.len()),
        }
    }
}

// ----- cores wired by hand: two processes with one id ----------------------

/// Cores joined by in-memory wires. Bytes from an end in `muted` are held
/// back (a link that has gone quiet one way) until [`Wires::unmute`].
struct Wires {
    cores: Vec<Core>,
    /// Each connection end and its other end: (core index, connection).
    links: Vec<((usize, ConnId), (usize, ConnId))>,
    muted: Vec<(usize, ConnId)>,
    held: Vec<((usize, ConnId), Vec<u8>)>,
    /// Everything but transmits, per core.
    seen: Vec<Vec<Output>>,
    now: Instant,
}

impl Wires {
    fn peer_of(&self, end: (usize, ConnId)) -> Option<(usize, ConnId)> {
        self.links.iter().find_map(|&(a, b)| {
            if a == end {
                Some(b)
            } else if b == end {
                Some(a)
            } else {
                None
            }
        })
    }

    /// Moves bytes until every core is quiet. A dial from core `i` is
    /// answered by the core `route(i)` names.
    fn pump(&mut self, route: &dyn Fn(usize) -> usize) {
        loop {
            let mut moved = false;
            for i in 0..self.cores.len() {
                while let Some(out) = self.cores[i].poll_output(self.now) {
                    moved = true;
                    match out {
                        Output::Transmit { conn, data } => {
                            let now = self.now;
                            self.cores[i].handle_input(
                                now,
                                Input::Written {
                                    conn,
                                    bytes: data.len(),
                                },
                            );
                            if self.muted.contains(&(i, conn)) {
                                self.held.push(((i, conn), data));
                                continue;
                            }
                            if let Some((j, other)) = self.peer_of((i, conn)) {
                                self.cores[j].handle_input(
                                    now,
                                    Input::Received {
                                        conn: other,
                                        bytes: &data,
                                    },
                                );
                            }
                        }
                        Output::Connect { conn, .. } => {
                            let j = route(i);
                            let now = self.now;
                            let accepted = self.cores[j].accept(now, "wire").unwrap();
                            self.links.push(((i, conn), (j, accepted)));
                            self.cores[i].handle_input(now, Input::Connected { conn });
                        }
                        other => self.seen[i].push(other),
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Delivers what muted ends held back, in order, and mutes nothing.
    fn unmute(&mut self) {
        self.muted.clear();
        for (end, data) in std::mem::take(&mut self.held) {
            if let Some((j, other)) = self.peer_of(end) {
                let now = self.now;
                self.cores[j].handle_input(
                    now,
                    Input::Received {
                        conn: other,
                        bytes: &data,
                    },
                );
            }
        }
    }

    /// Advances to the earliest timer and fires it everywhere.
    fn tick(&mut self, route: &dyn Fn(usize) -> usize) {
        let next = self
            .cores
            .iter()
            .filter_map(|c| c.poll_timeout())
            .min()
            .unwrap();
        self.now = self.now.max(next);
        for core in &mut self.cores {
            if core.poll_timeout().is_some_and(|t| t <= self.now) {
                core.handle_input(self.now, Input::Timeout);
            }
        }
        self.pump(route);
    }

    fn ran_until(&mut self, route: &dyn Fn(usize) -> usize, mut done: impl FnMut(&Wires) -> bool) {
        for _ in 0..10_000 {
            if done(self) {
                return;
            }
            self.tick(route);
        }
        panic!("never got there");
    }
}

fn core_of(ca: &reign_proto::certgen::ClusterCa, id: u16, incarnation: u64, now: Instant) -> Core {
    // Node 0 lists itself alone; node 1 lists node 0 as its seed.
    let mut addrs = vec![(NodeId(0), "127.0.0.1:1".to_string())];
    if id != 0 {
        addrs.push((NodeId(id), format!("127.0.0.1:{}", 10 + incarnation)));
    }
    let mut spec: ClusterSpec = ca.inline_spec(NodeId(id), &addrs).unwrap();
    spec.tuning = Tuning::fast();
    start_core(&spec, id, incarnation, now).unwrap()
}

/// Node 0 (core 0), node 1 as incarnation 1 (core 1, the live one) and a
/// second process claiming node 1 as incarnation 2 (core 2). Every dial
/// goes to node 0. Returns once the live node 1 is up and the second one
/// is held by node 0.
fn live_node_and_impostor() -> Wires {
    let ca = reign_proto::certgen::ClusterCa::generate().unwrap();
    let now = Instant::now();
    let mut wires = Wires {
        cores: vec![core_of(&ca, 0, 1, now), core_of(&ca, 1, 1, now)],
        links: Vec::new(),
        muted: Vec::new(),
        held: Vec::new(),
        seen: (0..3).map(|_| Vec::new()).collect(),
        now,
    };
    wires.ran_until(&|_| 0, |w| w.cores[0].connected_peers() == [NodeId(1)]);
    // Node 0's link to the live node 1 goes quiet towards it, so its
    // liveness ping stays unanswered for now.
    let live_link = wires.links[0].1;
    wires.muted.push(live_link);
    wires.cores.push(core_of(&ca, 1, 2, wires.now));
    let held = wires.links.len();
    wires.ran_until(&|_| 0, |w| w.links.len() > held);
    wires.pump(&|_| 0);
    assert!(only_the_live_one_is_up(&wires));
    wires
}

/// Node 0 still has exactly the live incarnation up, and never saw the
/// second one come up.
fn only_the_live_one_is_up(wires: &Wires) -> bool {
    wires.cores[0].connected_peers() == [NodeId(1)]
        && !wires.seen[0].iter().any(|o| {
            matches!(o, Output::Event(Event::PeerUp { incarnation, .. }) if *incarnation == Incarnation(2))
        })
}

fn told_conflict(wires: &Wires) -> bool {
    wires.seen[2].iter().any(|o| {
        matches!(
            o,
            Output::Event(Event::IdentityConflict { by: NodeId(0), .. })
        )
    })
}

#[test]
fn a_second_process_is_refused_once_the_live_one_answers_the_ping() {
    let mut wires = live_node_and_impostor();
    assert!(
        !told_conflict(&wires),
        "refused before the live node answered"
    );
    wires.unmute();
    wires.ran_until(&|_| 0, told_conflict);
    assert!(only_the_live_one_is_up(&wires));
}

#[test]
fn a_second_process_is_refused_when_the_live_one_reconnects_while_it_is_held() {
    let mut wires = live_node_and_impostor();
    // The live node 1 drops its end and dials again, as itself: replacing
    // node 0's old link must not let the held second process in.
    let live_end = wires.links[0].0;
    let now = wires.now;
    wires.cores[1].handle_input(
        now,
        Input::Closed {
            conn: live_end.1,
            error: None,
        },
    );
    wires.held.clear();
    wires.muted.clear();
    wires.ran_until(&|_| 0, told_conflict);
    wires.ran_until(&|_| 0, |w| w.cores[1].connected_peers() == [NodeId(0)]);
    assert!(only_the_live_one_is_up(&wires));
}

// ----- answers the core produces itself ------------------------------------

/// Polls every output of `core`, reporting transmits written at once;
/// returns the transmits.
fn transmits(core: &mut Core, now: Instant) -> Vec<(ConnId, Vec<u8>)> {
    let mut sent = Vec::new();
    while let Some(out) = core.poll_output(now) {
        if let Output::Transmit { conn, data } = out {
            core.handle_input(
                now,
                Input::Written {
                    conn,
                    bytes: data.len(),
                },
            );
            sent.push((conn, data));
        }
    }
    sent
}

/// Feeds transmits of core `from` to the other ends of their wires.
fn carry(wires: &mut Wires, from: usize, sent: Vec<(ConnId, Vec<u8>)>) {
    let now = wires.now;
    for (conn, data) in sent {
        let (j, other) = wires.peer_of((from, conn)).expect("a wired connection");
        wires.cores[j].handle_input(
            now,
            Input::Received {
                conn: other,
                bytes: &data,
            },
        );
    }
}

/// Two connected cores joined by wires, quiet.
fn two_wired_cores() -> Wires {
    let ca = reign_proto::certgen::ClusterCa::generate().unwrap();
    let now = Instant::now();
    let mut wires = Wires {
        cores: vec![core_of(&ca, 0, 1, now), core_of(&ca, 1, 1, now)],
        links: Vec::new(),
        muted: Vec::new(),
        held: Vec::new(),
        seen: (0..2).map(|_| Vec::new()).collect(),
        now,
    };
    wires.ran_until(&|_| 0, |w| {
        w.cores[0].connected_peers() == [NodeId(1)] && w.cores[1].connected_peers() == [NodeId(0)]
    });
    wires.pump(&|_| 0);
    wires
}

/// A watch of a mailbox that is already closed and a registry sync are
/// answered by the core that handles them within that one input: the
/// answers go straight into the connection, the core never queues them
/// for itself through the node's user-thread queue (whose every frame
/// raises the wake signal), so its wake signal stays quiet, and the
/// answers are in the very next transmit.
#[test]
fn the_core_answers_within_the_input_without_waking_itself() {
    let mut wires = two_wired_cores();
    let now = wires.now;
    let (gone, gone_box) = wires.cores[1].node().new_mailbox();
    drop(gone_box);
    let (watcher, watcher_box) = wires.cores[0].node().new_mailbox();
    wires.cores[0]
        .node()
        .address_of(gone.id())
        .on_close_notify(&watcher);
    let sync = wires.cores[0].node().sync();
    let asked = transmits(&mut wires.cores[0], now);
    assert!(!asked.is_empty(), "node 0 sent its watch and its sync");

    let wake = wires.cores[1].wake_signal();
    wake.take();
    carry(&mut wires, 0, asked);
    assert!(!wake.take(), "node 1 woke itself to send its answers");
    let answers = transmits(&mut wires.cores[1], now);
    assert!(!answers.is_empty(), "node 1 answered in the same turn");

    carry(&mut wires, 1, answers);
    let closed = watcher_box
        .try_recv()
        .unwrap()
        .expect("the watch was answered")
        .downcast::<MailboxClosed>()
        .unwrap();
    assert_eq!(
        closed,
        MailboxClosed {
            id: gone.id(),
            // A recent close: its reason is still known.
            reason: ExitReason::Closed
        }
    );
    assert!(sync.is_done(), "the sync was answered");
}

/// A mailbox that the core fills past its share has the sender told
/// `Busy` by the core within that input, without a wake-up; the `Ready`
/// its user's reads produce later is queued for the core by that user
/// thread, which wakes it.
#[test]
fn busy_leaves_with_the_input_and_ready_wakes_the_core() {
    let mut wires = two_wired_cores();
    let now = wires.now;
    let (target, target_box) = wires.cores[1].node().new_mailbox();
    let remote = wires.cores[0].node().address_of(target.id());
    let share = Tuning::fast().mailbox_unread_bytes;
    let chunk = "x".repeat(1 << 20);
    let wake = wires.cores[1].wake_signal();
    wake.take();
    for _ in 0..=share / chunk.len() {
        remote.send(chunk.clone()).unwrap();
        let sent = transmits(&mut wires.cores[0], now);
        carry(&mut wires, 0, sent);
    }
    assert!(target_box.message_count() > share / chunk.len());
    assert!(!wake.take(), "node 1 woke itself to send Busy");
    let answers = transmits(&mut wires.cores[1], now);
    carry(&mut wires, 1, answers);
    assert_eq!(
        remote.send(chunk.clone()),
        Err(reign_proto::SendError::Full),
        "node 0 was told Busy"
    );
    while target_box.try_recv().unwrap().is_some() {}
    assert!(wake.take(), "the reader's Ready woke node 1");
    let answers = transmits(&mut wires.cores[1], now);
    carry(&mut wires, 1, answers);
    assert_eq!(remote.send(chunk), Ok(()), "node 0 was told Ready");
}

// ----- both ends dial at once ----------------------------------------------

/// Two cores that dial each other at the same moment, over in-memory
/// connections whose bytes keep their order per direction while which
/// pending step happens next (an accept, a dialer told `Connected`, the
/// next chunk one way, a close arriving) is drawn from a seeded
/// generator: every interleaving a real network can produce.
struct Race {
    cores: Vec<Core>,
    now: Instant,
    rng: u64,
    /// Dials whose connection has not been accepted yet.
    dials: Vec<(usize, ConnId)>,
    /// Accepted dials whose dialer has not been told `Connected` yet.
    connecting: Vec<(usize, ConnId)>,
    /// One per direction of each connection: from one end to the other,
    /// the chunks on their way (`None`: the sender closed).
    pipes: Vec<Pipe>,
    /// Ends whose core closed them or was told they closed.
    closed: Vec<(usize, ConnId)>,
    events: Vec<Vec<Event>>,
    /// A core whose dials are never answered (a network that reaches the
    /// other node one way only): they hang until their handshake timeout.
    unanswered: Option<usize>,
}

struct Pipe {
    from: (usize, ConnId),
    to: (usize, ConnId),
    queue: std::collections::VecDeque<Option<Vec<u8>>>,
}

impl Race {
    fn new(seed: u64) -> Race {
        let ca = reign_proto::certgen::ClusterCa::generate().unwrap();
        let now = Instant::now();
        let addrs = vec![
            (NodeId(0), "127.0.0.1:1".to_string()),
            (NodeId(1), "127.0.0.1:2".to_string()),
        ];
        let cores = (0..2u16)
            .map(|id| {
                let mut spec = ca.inline_spec(NodeId(id), &addrs).unwrap();
                spec.tuning = Tuning::fast();
                start_core(&spec, id, 1, now).unwrap()
            })
            .collect();
        Race {
            cores,
            now,
            rng: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            dials: Vec::new(),
            connecting: Vec::new(),
            pipes: Vec::new(),
            closed: Vec::new(),
            events: vec![Vec::new(), Vec::new()],
            unanswered: None,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        // xorshift64*: enough for drawing interleavings.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    /// Takes every output of both cores into the pipes and lists.
    fn collect(&mut self) {
        for i in 0..2 {
            while let Some(out) = self.cores[i].poll_output(self.now) {
                match out {
                    Output::Transmit { conn, data } => {
                        let now = self.now;
                        let bytes = data.len();
                        self.cores[i].handle_input(now, Input::Written { conn, bytes });
                        let pipe = self
                            .pipes
                            .iter_mut()
                            .find(|p| p.from == (i, conn))
                            .expect("a transmit on a connected end");
                        pipe.queue.push_back(Some(data));
                    }
                    Output::Close { conn } => {
                        self.closed.push((i, conn));
                        self.dials.retain(|&d| d != (i, conn));
                        if let Some(pipe) = self.pipes.iter_mut().find(|p| p.from == (i, conn)) {
                            pipe.queue.push_back(None);
                        }
                    }
                    Output::Connect { .. } if self.unanswered == Some(i) => {}
                    Output::Connect { conn, .. } => self.dials.push((i, conn)),
                    Output::Event(e) => self.events[i].push(e),
                    _ => {}
                }
            }
        }
    }

    /// Takes one pending step, drawn at random; false when none is left.
    fn step(&mut self) -> bool {
        self.collect();
        let busy: Vec<usize> = (0..self.pipes.len())
            .filter(|&p| !self.pipes[p].queue.is_empty())
            .collect();
        let choices = self.dials.len() + self.connecting.len() + busy.len();
        if choices == 0 {
            return false;
        }
        let pick = self.below(choices);
        let now = self.now;
        let (dials, connecting) = (self.dials.len(), self.connecting.len());
        if pick < dials {
            let (i, conn) = self.dials.remove(pick);
            let j = 1 - i;
            let accepted = self.cores[j].accept(now, "wire").unwrap();
            for (from, to) in [((i, conn), (j, accepted)), ((j, accepted), (i, conn))] {
                self.pipes.push(Pipe {
                    from,
                    to,
                    queue: Default::default(),
                });
            }
            self.connecting.push((i, conn));
        } else if pick < dials + connecting {
            let (i, conn) = self.connecting.remove(pick - dials);
            self.cores[i].handle_input(now, Input::Connected { conn });
        } else {
            let p = busy[pick - dials - connecting];
            let to = self.pipes[p].to;
            let chunk = self.pipes[p].queue.pop_front().expect("a busy pipe");
            if !self.closed.contains(&to) {
                let (j, conn) = to;
                match chunk {
                    Some(bytes) => self.cores[j].handle_input(
                        now,
                        Input::Received {
                            conn,
                            bytes: &bytes,
                        },
                    ),
                    None => {
                        self.closed.push(to);
                        self.cores[j].handle_input(now, Input::Closed { conn, error: None });
                    }
                }
            }
        }
        self.collect();
        true
    }

    /// Moves the clock to the earliest timer of either core, if it is due
    /// by `until`, and fires every timer due then; whether one was.
    fn fire_next_timer(&mut self, until: Instant) -> bool {
        let next = self.cores.iter().filter_map(|c| c.poll_timeout()).min();
        let Some(next) = next.filter(|&t| t <= until) else {
            return false;
        };
        self.now = self.now.max(next);
        for core in &mut self.cores {
            if core.poll_timeout().is_some_and(|t| t <= self.now) {
                core.handle_input(self.now, Input::Timeout);
            }
        }
        true
    }

    /// Fires every timer due by `until`, taking every step in between.
    fn run_until(&mut self, until: Instant) {
        loop {
            while self.step() {}
            if !self.fire_next_timer(until) {
                self.now = until;
                return;
            }
        }
    }

    fn downs(&self) -> usize {
        self.events
            .iter()
            .flatten()
            .filter(|e| matches!(e, Event::PeerDown { .. }))
            .count()
    }
}

/// Both nodes dial each other within the same instant, on 500 drawn
/// interleavings: one connection stays, neither side ever reports the
/// other down (no `PeerDown`, nothing queued for it dropped), and every
/// message sent once the sender saw the link up arrives once, in order.
#[test]
fn simultaneous_dials_settle_on_one_connection_without_a_peer_down() {
    const SEEDS: u64 = 500;
    const MESSAGES: u64 = 40;
    for seed in 1..=SEEDS {
        let mut race = Race::new(seed);
        // Run the clock until both have dialled, and hold the dials.
        let limit = race.now + Duration::from_secs(5);
        while race.dials.len() < 2 {
            assert!(race.fire_next_timer(limit), "seed {seed}: no dial");
            // The first dial waits for the second: accept nothing yet.
            race.collect();
        }
        let boxes: Vec<_> = (0..2).map(|i| race.cores[i].node().new_mailbox()).collect();
        let targets: Vec<Address> = (0..2)
            .map(|i| race.cores[i].node().address_of(boxes[1 - i].0.id()))
            .collect();
        let mut sent = [0u64; 2];
        while race.step() {
            for i in 0..2 {
                if sent[i] < MESSAGES && race.cores[i].connected_peers() == [NodeId(1 - i as u16)] {
                    targets[i].send(sent[i]).unwrap();
                    sent[i] += 1;
                }
            }
        }
        let until = race.now + Duration::from_secs(3);
        race.run_until(until);
        for i in 0..2 {
            while sent[i] < MESSAGES {
                targets[i].send(sent[i]).unwrap();
                sent[i] += 1;
            }
        }
        let until = race.now + Duration::from_millis(500);
        race.run_until(until);
        assert_eq!(
            race.downs(),
            0,
            "seed {seed}: a peer was reported down: {:?}",
            race.events
        );
        for (i, (_, mailbox)) in boxes.iter().enumerate() {
            assert_eq!(
                race.cores[i].connected_peers(),
                [NodeId(1 - i as u16)],
                "seed {seed}: node {i} is not connected"
            );
            assert_eq!(
                race.cores[i].connection_count(),
                1,
                "seed {seed}: node {i} kept more than one connection"
            );
            let got: Vec<u64> = std::iter::from_fn(|| mailbox.try_recv().unwrap())
                .map(|m| m.downcast::<u64>().unwrap())
                .collect();
            let want: Vec<u64> = (0..MESSAGES).collect();
            assert_eq!(
                got, want,
                "seed {seed}: node {i} lost or reordered messages"
            );
        }
    }
}

/// The refusal above must not lock a node out when the preferred dialer's
/// dials never arrive (a network that reaches node 1 from node 0 only one
/// way, SYNs dropped): node 0 refuses node 1's dials only while one of its
/// own hangs, and node 1's get in while node 0 waits out its backoff. Then
/// the link stays, and node 0 stops dialling. Virtual time, fast tuning
/// (2 s handshake timeout, backoff 20 ms to 500 ms).
#[test]
fn a_preferred_dialer_whose_dials_hang_still_gets_linked_by_the_other_end() {
    const SEEDS: u64 = 50;
    let mut slowest = Duration::ZERO;
    for seed in 1..=SEEDS {
        let mut race = Race::new(seed);
        race.unanswered = Some(0);
        let start = race.now;
        let limit = start + Duration::from_secs(120);
        while race.now < limit && race.cores[1].connected_peers() != [NodeId(0)] {
            let until = race.now + Duration::from_millis(10);
            race.run_until(until);
        }
        let took = race.now - start;
        assert!(
            race.cores.iter().all(|c| c.connected_peers().len() == 1),
            "seed {seed}: not linked after {took:?}"
        );
        slowest = slowest.max(took);
        // The link stays: nothing goes down, node 0 dials no more.
        let until = race.now + Duration::from_secs(10);
        race.run_until(until);
        assert_eq!(race.downs(), 0, "seed {seed}: {:?}", race.events);
        assert!(race.cores.iter().all(|c| c.connection_count() == 1));
    }
    println!("linked through the other end's dial within {slowest:?} (worst of {SEEDS} seeds)");
}
