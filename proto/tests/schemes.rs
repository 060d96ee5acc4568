//! The messaging schemes in the simulator: request/reply, broadcast,
//! publish/subscribe, tunnels and limits.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use reign_proto::sim::{Sim, SimConfig};
use reign_proto::{
    Limits, Mailbox, Message, NodeId, RegistryError, Request, RequestError, TunnelError,
};

const STEP: Duration = Duration::from_millis(1);
const LIMIT: Duration = Duration::from_secs(10);

/// [`Sim::connected`], with the members' `(u64, u16)` replies registered.
fn sim(nodes: u16, seed: u64) -> Sim {
    reign_proto::register_type::<(u64, u16)>().unwrap();
    Sim::connected(nodes, seed)
}

fn sync_all(sim: &mut Sim) {
    for id in sim.running() {
        let sync = sim.node(id).sync();
        sim.drive(sync, STEP, LIMIT).expect("sync completes");
    }
}

/// The error of a finished request, if it failed.
fn err(result: Option<Result<Message, RequestError>>) -> Option<RequestError> {
    result.and_then(Result::err)
}

fn requests(mailbox: &Mailbox) -> Vec<Request> {
    std::iter::from_fn(|| mailbox.try_recv().unwrap())
        .filter_map(|m| m.take::<Request>().ok())
        .collect()
}

/// Answers every queued request with `n + 1` and the answering node's id.
fn answer_all(mailbox: &Mailbox, node: u16) -> usize {
    let reqs = requests(mailbox);
    let n = reqs.len();
    for req in reqs {
        let (msg, responder) = req.into_parts();
        let x: u64 = msg.downcast().unwrap();
        responder.reply((x + 1, node)).unwrap();
    }
    n
}

#[test]
fn requests_are_answered_and_spread_over_members() {
    let mut sim = sim(3, 1);
    let (m1, m1_box) = sim.node(NodeId(1)).new_mailbox();
    let (m2, m2_box) = sim.node(NodeId(2)).new_mailbox();
    sim.node(NodeId(1)).join("echo", &m1).unwrap();
    sim.node(NodeId(2)).join("echo", &m2).unwrap();
    sync_all(&mut sim);
    let deadline = sim.now() + Duration::from_secs(5);
    let pending: Vec<_> = (0..1000u64)
        .map(|i| sim.node(NodeId(0)).request("echo", i, deadline))
        .collect();
    let mut answered = BTreeMap::new();
    for _ in 0..100 {
        sim.run_for(STEP);
        answer_all(&m1_box, 1);
        answer_all(&m2_box, 2);
    }
    for (i, p) in pending.iter().enumerate() {
        let reply = p.try_result().expect("answered").expect("ok");
        let (x, by): (u64, u16) = reply.downcast().unwrap();
        assert_eq!(x, i as u64 + 1);
        *answered.entry(by).or_insert(0) += 1;
    }
    assert_eq!(answered, BTreeMap::from([(1, 500), (2, 500)]));
}

#[test]
fn a_local_member_is_preferred_and_answers_directly() {
    let mut sim = sim(2, 2);
    let (local, local_box) = sim.node(NodeId(0)).new_mailbox();
    let (remote, _remote_box) = sim.node(NodeId(1)).new_mailbox();
    sim.node(NodeId(0)).join("svc", &local).unwrap();
    sim.node(NodeId(1)).join("svc", &remote).unwrap();
    sync_all(&mut sim);
    let deadline = sim.now() + Duration::from_secs(1);
    let reply = sim.node(NodeId(0)).request("svc", 41u64, deadline);
    assert_eq!(answer_all(&local_box, 0), 1);
    let (x, by): (u64, u16) = reply.try_result().unwrap().unwrap().downcast().unwrap();
    assert_eq!((x, by), (42, 0));
    // An empty payload is a valid message, not a timeout.
    let reply = sim.node(NodeId(0)).request(&local, (), deadline);
    let (msg, responder) = requests(&local_box).pop().unwrap().into_parts();
    assert!(msg.is::<()>());
    responder.reply(()).unwrap();
    assert!(reply.try_result().unwrap().unwrap().is::<()>());
}

#[test]
fn every_failure_has_its_own_error() {
    let mut sim = sim(3, 3);
    let n0 = sim.node(NodeId(0)).clone();
    // No member at all.
    let deadline = sim.now() + Duration::from_millis(300);
    assert_eq!(
        err(n0.request("nobody", 1u8, deadline).try_result()),
        Some(RequestError::NoMember)
    );

    let (m, m_box) = sim.node(NodeId(1)).new_mailbox();
    sim.node(NodeId(1)).join("svc", &m).unwrap();
    sync_all(&mut sim);

    // An application error.
    let deadline = sim.now() + Duration::from_secs(1);
    let p = n0.request("svc", 1u64, deadline);
    sim.run_for(Duration::from_millis(10));
    requests(&m_box)
        .pop()
        .unwrap()
        .reply_error("bad input")
        .unwrap();
    sim.run_for(Duration::from_millis(10));
    assert_eq!(
        err(p.try_result()),
        Some(RequestError::Remote("bad input".into()))
    );

    // Dropped without an answer.
    let p = n0.request("svc", 1u64, deadline);
    sim.run_for(Duration::from_millis(10));
    drop(requests(&m_box));
    sim.run_for(Duration::from_millis(10));
    assert_eq!(err(p.try_result()), Some(RequestError::Abandoned));

    // No answer in time; the late answer is dropped and counted.
    let deadline = sim.now() + Duration::from_millis(100);
    let p = n0.request("svc", 1u64, deadline);
    sim.run_for(Duration::from_millis(10));
    let held = requests(&m_box).pop().unwrap();
    let timed_out = sim.drive(p, STEP, LIMIT).unwrap();
    assert_eq!(timed_out.err(), Some(RequestError::Timeout));
    held.reply(7u64).unwrap();
    sim.run_for(Duration::from_millis(10));
    assert_eq!(n0.stats().late_replies, 1);

    // The member's node goes away.
    let deadline = sim.now() + Duration::from_secs(5);
    let p = n0.request("svc", 1u64, deadline);
    sim.run_for(Duration::from_millis(10));
    sim.crash(NodeId(1));
    let lost = sim.drive(p, STEP, LIMIT).unwrap();
    assert_eq!(lost.err(), Some(RequestError::Unreachable));

    // The caller's node shuts down.
    let (m2, m2_box) = sim.node(NodeId(2)).new_mailbox();
    sim.node(NodeId(2)).join("svc2", &m2).unwrap();
    sync_all(&mut sim);
    let p = n0.request("svc2", 1u64, sim.now() + Duration::from_secs(5));
    sim.run_for(Duration::from_millis(10));
    sim.shutdown(NodeId(0));
    assert_eq!(err(p.try_result()), Some(RequestError::Closed));
    drop(m2_box);
}

#[test]
fn a_busy_member_queues_then_refuses_at_once() {
    let mut sim = sim(2, 4);
    let (m, m_box) = sim.node(NodeId(1)).new_mailbox();
    let limits = Limits {
        max_in_flight: 2,
        max_queued_bytes: 350,
    };
    sim.node(NodeId(1))
        .join_with_limits("slow", &m, limits)
        .unwrap();
    sync_all(&mut sim);
    let deadline = sim.now() + Duration::from_secs(5);
    let n0 = sim.node(NodeId(0)).clone();
    let payload = serde_bytes::ByteBuf::from(vec![7u8; 100]);
    let pending: Vec<_> = (0..5)
        .map(|_| n0.request("slow", payload.clone(), deadline))
        .collect();
    sim.run_for(Duration::from_millis(20));
    // Two in the mailbox (its handlers), one waiting, two over the byte cap.
    assert_eq!(m_box.message_count(), 2);
    let outcomes: Vec<Option<RequestError>> = pending.iter().map(|p| err(p.try_result())).collect();
    assert!(
        matches!(outcomes[3], Some(RequestError::Refused(_))),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[4], Some(RequestError::Refused(_))),
        "{outcomes:?}"
    );
    assert_eq!(sim.node(NodeId(1)).stats().refused_requests, 2);
    // Answering one moves the waiting request into the mailbox.
    let first = requests(&m_box);
    assert_eq!(first.len(), 2);
    drop(first);
    sim.run_for(Duration::from_millis(20));
    let third = requests(&m_box);
    assert_eq!(third.len(), 1);
    third.into_iter().for_each(|r| r.reply(1u8).unwrap());
    sim.run_for(Duration::from_millis(20));
    assert!(pending[2].try_result().unwrap().is_ok());
    assert_eq!(err(pending[0].try_result()), Some(RequestError::Abandoned));
}

fn received<T: serde::de::DeserializeOwned + 'static>(mailbox: &Mailbox) -> Vec<T> {
    std::iter::from_fn(|| mailbox.try_recv().unwrap())
        .map(|m: Message| m.downcast::<T>().unwrap())
        .collect()
}

#[test]
fn broadcasts_reach_every_member_once_in_order() {
    let mut sim = sim(3, 5);
    let mut boxes = Vec::new();
    for n in 0..3 {
        for _ in 0..2 {
            let (m, m_box) = sim.node(NodeId(n)).new_mailbox();
            sim.node(NodeId(n)).join("all", &m).unwrap();
            boxes.push(m_box);
        }
    }
    sync_all(&mut sim);
    for i in 0..20u32 {
        sim.node(NodeId(1)).broadcast("all", i).unwrap();
    }
    sim.run_for(Duration::from_millis(50));
    for m_box in &boxes {
        assert_eq!(received::<u32>(m_box), (0..20).collect::<Vec<_>>());
    }
}

#[test]
fn publications_reach_every_subscriber_once_until_unsubscribed() {
    let mut sim = sim(3, 6);
    let mut subs = Vec::new();
    for n in 0..3 {
        let (s, s_box) = sim.node(NodeId(n)).new_mailbox();
        sim.node(NodeId(n)).subscribe("news", &s).unwrap();
        subs.push((n, s, s_box));
    }
    sync_all(&mut sim);
    for i in 0..10u32 {
        sim.node(NodeId(0)).publish("news", i).unwrap();
    }
    sim.run_for(Duration::from_millis(50));
    for (_, _, s_box) in &subs {
        assert_eq!(received::<u32>(s_box), (0..10).collect::<Vec<_>>());
    }
    let (n, s, s_box) = &subs[2];
    sim.node(NodeId(*n)).unsubscribe("news", s).unwrap();
    assert_eq!(
        sim.node(NodeId(*n)).unsubscribe("news", s),
        Err(RegistryError::NotSubscribed {
            topic: "news".into()
        })
    );
    assert!(sim
        .node(NodeId(*n))
        .unsubscribe("no such topic", s)
        .is_err());
    sync_all(&mut sim);
    sim.node(NodeId(0)).publish("news", 99u32).unwrap();
    sim.run_for(Duration::from_millis(50));
    assert!(received::<u32>(s_box).is_empty());
    assert_eq!(received::<u32>(&subs[1].2), vec![99]);
}

#[test]
fn a_subscriber_over_its_byte_cap_misses_events_and_they_are_counted() {
    let mut sim = sim(2, 7);
    let (s, s_box) = sim.node(NodeId(1)).new_mailbox();
    let limits = Limits {
        max_in_flight: 1,
        max_queued_bytes: 100,
    };
    sim.node(NodeId(1))
        .subscribe_with_limits("flood", &s, limits)
        .unwrap();
    sync_all(&mut sim);
    for _ in 0..10 {
        sim.node(NodeId(0))
            .publish("flood", serde_bytes::ByteBuf::from(vec![0u8; 30]))
            .unwrap();
    }
    sim.run_for(Duration::from_millis(50));
    let got = s_box.message_count();
    assert!(got > 0 && got < 10, "{got} delivered");
    assert_eq!(sim.node(NodeId(1)).stats().dropped_events, 10 - got as u64);
}

#[test]
fn a_tunnel_streams_in_order_under_credit_and_closes_at_both_ends() {
    let mut sim = sim(2, 8);
    let (m, m_box) = sim.node(NodeId(1)).new_mailbox();
    sim.node(NodeId(1)).join("files", &m).unwrap();
    sync_all(&mut sim);
    let opening = sim.node(NodeId(0)).open_tunnel("files");
    sim.run_for(Duration::from_millis(10));
    let incoming = m_box
        .try_recv()
        .unwrap()
        .unwrap()
        .take::<reign_proto::IncomingTunnel>()
        .unwrap();
    let server = incoming.accept().unwrap();
    let client = sim.drive(opening, STEP, LIMIT).unwrap().unwrap();
    let window = client.window();

    // 8 MiB in 100 KiB messages (each cut into pieces), read slowly.
    let messages: Vec<Vec<u8>> = (0..80u32)
        .map(|i| vec![i as u8; 100 * 1024 + i as usize])
        .collect();
    let mut sent = 0;
    let mut got = Vec::new();
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut sending = None;
    for _ in 0..20_000 {
        if sending.is_none() && sent < messages.len() {
            sending = Some(Box::pin(client.send(messages[sent].clone())));
        }
        if let Some(fut) = sending.as_mut() {
            if let std::task::Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
                r.unwrap();
                sending = None;
                sent += 1;
            }
        }
        assert!(
            client.unacknowledged_bytes() <= window,
            "sender over its credit"
        );
        assert!(
            server.buffered_bytes() <= window,
            "receiver buffered over the window"
        );
        sim.run_for(Duration::from_micros(200));
        // A slow reader: one message at most every few steps.
        if got.len() < messages.len() && sim.elapsed().as_micros() % 1000 < 200 {
            let mut recv = Box::pin(server.recv());
            if let std::task::Poll::Ready(r) = recv.as_mut().poll(&mut cx) {
                got.push(r.unwrap());
            }
        }
        if got.len() == messages.len() {
            break;
        }
    }
    assert_eq!(got.len(), messages.len());
    for (a, b) in got.iter().zip(&messages) {
        assert_eq!(&a[..], &b[..]);
    }

    // Replies flow the other way; an empty message is a message.
    sim.drive(server.send(Vec::new()), STEP, LIMIT)
        .unwrap()
        .unwrap();
    assert_eq!(
        sim.drive(client.recv(), STEP, LIMIT)
            .unwrap()
            .unwrap()
            .len(),
        0
    );

    // Close from the server: the client sees it.
    server.close();
    assert_eq!(
        sim.drive(client.recv(), STEP, LIMIT).unwrap(),
        Err(TunnelError::Closed)
    );
    assert_eq!(
        sim.drive(client.send(vec![1u8]), STEP, LIMIT).unwrap(),
        Err(TunnelError::Closed)
    );
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.node(NodeId(0)).tunnel_count(), 0);
    assert_eq!(sim.node(NodeId(1)).tunnel_count(), 0);
}

#[test]
fn node_loss_closes_a_tunnel_with_an_error_at_both_ends() {
    let mut sim = sim(3, 9);
    let (m, m_box) = sim.node(NodeId(1)).new_mailbox();
    sim.node(NodeId(1)).join("svc", &m).unwrap();
    sync_all(&mut sim);
    let opening = sim.node(NodeId(0)).open_tunnel("svc");
    sim.run_for(Duration::from_millis(10));
    let server = m_box
        .try_recv()
        .unwrap()
        .unwrap()
        .take::<reign_proto::IncomingTunnel>()
        .unwrap()
        .accept()
        .unwrap();
    let client = sim.drive(opening, STEP, LIMIT).unwrap().unwrap();
    sim.partition(NodeId(0), NodeId(1));
    assert_eq!(
        sim.drive(client.recv(), STEP, LIMIT).unwrap(),
        Err(TunnelError::Unreachable)
    );
    assert_eq!(
        sim.drive(server.recv(), STEP, LIMIT).unwrap(),
        Err(TunnelError::Unreachable)
    );
}

#[test]
fn a_tunnel_nobody_accepts_is_refused_and_a_missing_member_is_typed() {
    let mut sim = sim(2, 10);
    assert!(matches!(
        sim.drive(sim.node(NodeId(0)).open_tunnel("nobody"), STEP, LIMIT)
            .unwrap(),
        Err(TunnelError::NoMember)
    ));
    let (m, m_box) = sim.node(NodeId(1)).new_mailbox();
    let opening = sim
        .node(NodeId(0))
        .open_tunnel(&sim.node(NodeId(0)).address_of(m.id()));
    sim.run_for(Duration::from_millis(10));
    drop(m_box); // the member closes without accepting
    assert!(matches!(
        sim.drive(opening, STEP, LIMIT).unwrap(),
        Err(TunnelError::Remote(_))
    ));
    assert_eq!(sim.node(NodeId(1)).tunnel_count(), 0);
}

#[test]
fn ten_thousand_idle_tunnels_between_two_nodes() {
    let mut sim = sim(2, 11);
    let (m, m_box) = sim.node(NodeId(1)).new_mailbox();
    sim.node(NodeId(1)).join("idle", &m).unwrap();
    sync_all(&mut sim);
    let openings: Vec<_> = (0..10_000)
        .map(|_| sim.node(NodeId(0)).open_tunnel("idle"))
        .collect();
    sim.run_for(Duration::from_millis(50));
    let servers: Vec<_> = std::iter::from_fn(|| m_box.try_recv().unwrap())
        .map(|m| {
            m.take::<reign_proto::IncomingTunnel>()
                .unwrap()
                .accept()
                .unwrap()
        })
        .collect();
    assert_eq!(servers.len(), 10_000);
    sim.run_for(Duration::from_millis(50));
    let mut clients = Vec::new();
    for opening in openings {
        clients.push(sim.drive(opening, STEP, LIMIT).unwrap().unwrap());
    }
    assert_eq!(sim.node(NodeId(0)).tunnel_count(), 10_000);
    assert_eq!(sim.node(NodeId(1)).tunnel_count(), 10_000);
    // Idle tunnels hold no buffers and the connection stays healthy.
    assert!(clients
        .iter()
        .all(|t| t.buffered_bytes() == 0 && t.unacknowledged_bytes() == 0));
    sim.run_for(Duration::from_secs(2));
    assert!(sim.fully_connected());
    drop(clients);
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.node(NodeId(1)).tunnel_count(), 0);
    drop(servers);
}

// ----- deadlines and callers that give up (issue 15, items 4 and 5) ---------

/// One handler slot, a member that takes `handler` (virtual time) per
/// request, `count` requests each with `timeout`, from `caller` to the member
/// on node 1. Returns how many requests the member ran.
fn one_slot_member_runs(
    sim: &mut Sim,
    caller: NodeId,
    count: usize,
    timeout: Duration,
    handler: Duration,
) -> usize {
    let (m, m_box) = sim.node(NodeId(1)).new_mailbox();
    let limits = Limits {
        max_in_flight: 1,
        max_queued_bytes: 1 << 20,
    };
    sim.node(NodeId(1))
        .join_with_limits("one-slot", &m, limits)
        .unwrap();
    sync_all(sim);
    let deadline = sim.now() + timeout;
    let pending: Vec<_> = (0..count as u64)
        .map(|i| sim.node(caller).request("one-slot", i, deadline))
        .collect();
    let mut ran = 0;
    // Long enough for every request to be handed out if it were to be.
    for _ in 0..(count as u32 + 2) {
        sim.run_for(Duration::from_millis(5));
        for request in requests(&m_box) {
            ran += 1;
            assert!(request.deadline() <= sim.now() + timeout + Duration::from_millis(50));
            sim.run_for(handler);
            let _ = request.reply(1u8);
        }
    }
    sim.run_for(timeout + handler);
    for p in &pending {
        assert_eq!(err(p.try_result()), Some(RequestError::Timeout));
    }
    ran
}

fn assert_idle(sim: &Sim, ids: &[NodeId]) {
    for &id in ids {
        let tables = sim.node(id).request_tables();
        assert_eq!(
            tables,
            reign_proto::RequestTables::default(),
            "node {id:?} request tables not idle"
        );
    }
}

#[test]
fn expired_queued_requests_never_reach_a_local_member() {
    // Iris's case: 1 handler slot, a 25 ms handler, 4 requests with 1 ms
    // timeouts: the handler runs once.
    let mut sim = sim(2, 21);
    let ran = one_slot_member_runs(
        &mut sim,
        NodeId(1),
        4,
        Duration::from_millis(1),
        Duration::from_millis(25),
    );
    assert_eq!(ran, 1);
    let stats = sim.node(NodeId(1)).stats();
    assert_eq!(stats.expired_requests, 3);
    assert_eq!(stats.late_replies, 1, "the one that ran answered too late");
    assert_idle(&sim, &[NodeId(1)]);
}

#[test]
fn expired_queued_requests_never_reach_a_remote_member() {
    // Across nodes, with a timeout above the simulated latency.
    let mut sim = sim(2, 22);
    let ran = one_slot_member_runs(
        &mut sim,
        NodeId(0),
        4,
        Duration::from_millis(30),
        Duration::from_millis(60),
    );
    assert_eq!(ran, 1);
    assert_eq!(sim.node(NodeId(1)).stats().expired_requests, 3);
    assert_eq!(sim.node(NodeId(0)).stats().late_replies, 1);
    assert_idle(&sim, &[NodeId(0), NodeId(1)]);
}

#[test]
fn the_deadline_travels_as_time_remaining() {
    // Clocks need not agree: the member's node counts the time the caller
    // still waited when it sent the request from the request's arrival, so
    // the 20 ms transit is not taken off.
    let mut sim = Sim::new(SimConfig {
        nodes: 2,
        seed: 23,
        latency: Duration::from_millis(20),
        ..SimConfig::default()
    });
    reign_proto::register_type::<(u64, u16)>().unwrap();
    sim.run_for(Duration::from_millis(500));
    assert!(sim.fully_connected());
    let (m, m_box) = sim.node(NodeId(1)).new_mailbox();
    sim.node(NodeId(1)).join("far", &m).unwrap();
    sync_all(&mut sim);
    let sent = sim.now();
    let p = sim
        .node(NodeId(0))
        .request("far", 2u64, sent + Duration::from_millis(500));
    sim.run_for(Duration::from_millis(30));
    let got = requests(&m_box);
    assert_eq!(got.len(), 1);
    let arrived_after = got[0].deadline() - sent - Duration::from_millis(500);
    assert!(
        arrived_after >= Duration::from_millis(20) && arrived_after <= Duration::from_millis(30),
        "{arrived_after:?}"
    );
    got.into_iter().for_each(|r| r.reply(3u8).unwrap());
    sim.run_for(Duration::from_millis(50));
    assert!(p.try_result().unwrap().is_ok());
    assert_idle(&sim, &[NodeId(0), NodeId(1)]);
}

/// A member with one slot, occupied by a first request that is held.
fn busy_member(sim: &mut Sim, caller: NodeId, name: &str) -> (Mailbox, Request) {
    let (m, m_box) = sim.node(NodeId(1)).new_mailbox();
    let limits = Limits {
        max_in_flight: 1,
        max_queued_bytes: 1 << 20,
    };
    sim.node(NodeId(1))
        .join_with_limits(name, &m, limits)
        .unwrap();
    sync_all(sim);
    let first = sim
        .node(caller)
        .request(name, 0u64, sim.now() + Duration::from_secs(5));
    sim.run_for(Duration::from_millis(10));
    let mut held = requests(&m_box);
    assert_eq!(held.len(), 1);
    drop(first);
    (m_box, held.pop().unwrap())
}

#[test]
fn a_dropped_remote_request_gives_back_its_queue_place_at_once() {
    let mut sim = sim(2, 24);
    let (m_box, held) = busy_member(&mut sim, NodeId(0), "drop-remote");
    let p = sim
        .node(NodeId(0))
        .request("drop-remote", 1u64, sim.now() + Duration::from_secs(60));
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.node(NodeId(1)).request_tables().queued, 1);
    assert_eq!(sim.node(NodeId(0)).request_tables().pending, 1);
    drop(p);
    assert_eq!(sim.node(NodeId(0)).request_tables().pending, 0);
    // Long before the 60 s deadline, the member's node lets go of it.
    sim.run_for(Duration::from_millis(10));
    let tables = sim.node(NodeId(1)).request_tables();
    assert_eq!(
        (tables.queued, tables.queued_bytes, tables.queue_index),
        (0, 0, 0)
    );
    assert_eq!(sim.node(NodeId(1)).stats().cancelled_requests, 1);
    // The held request's late answer is dropped quietly and counted; its
    // slot comes back and nothing else reaches the member.
    held.reply(1u8).unwrap();
    sim.run_for(Duration::from_millis(10));
    assert!(requests(&m_box).is_empty());
    assert_eq!(sim.node(NodeId(0)).stats().late_replies, 1);
    assert_idle(&sim, &[NodeId(0), NodeId(1)]);
}

#[test]
fn a_dropped_local_request_gives_back_its_queue_place_at_once() {
    let mut sim = sim(2, 25);
    let (m_box, held) = busy_member(&mut sim, NodeId(1), "drop-local");
    let p = sim
        .node(NodeId(1))
        .request("drop-local", 1u64, sim.now() + Duration::from_secs(60));
    let tables = sim.node(NodeId(1)).request_tables();
    assert_eq!((tables.pending, tables.queued, tables.in_flight), (1, 1, 1));
    drop(p);
    let tables = sim.node(NodeId(1)).request_tables();
    assert_eq!((tables.pending, tables.queued, tables.in_flight), (0, 0, 1));
    assert_eq!(sim.node(NodeId(1)).stats().cancelled_requests, 1);
    held.reply(1u8).unwrap();
    sim.run_for(Duration::from_millis(10));
    assert!(requests(&m_box).is_empty());
    assert_eq!(sim.node(NodeId(1)).stats().late_replies, 1);
    assert_idle(&sim, &[NodeId(1)]);
}

#[test]
fn a_timed_out_remote_request_gives_back_everything() {
    let mut sim = sim(2, 26);
    let (m_box, held) = busy_member(&mut sim, NodeId(0), "timeout-remote");
    let p = sim.node(NodeId(0)).request(
        "timeout-remote",
        1u64,
        sim.now() + Duration::from_millis(50),
    );
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.node(NodeId(1)).request_tables().queued, 1);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(err(p.try_result()), Some(RequestError::Timeout));
    // Both sides let go at the deadline, without any message between them.
    assert_eq!(sim.node(NodeId(0)).request_tables().pending, 0);
    let tables = sim.node(NodeId(1)).request_tables();
    assert_eq!(
        (tables.queued, tables.queued_bytes, tables.queue_index),
        (0, 0, 0)
    );
    assert_eq!(sim.node(NodeId(1)).stats().expired_requests, 1);
    drop(p);
    drop(held);
    sim.run_for(Duration::from_millis(10));
    assert!(requests(&m_box).is_empty());
    assert_idle(&sim, &[NodeId(0), NodeId(1)]);
}

#[test]
fn a_callers_node_going_away_frees_its_queued_requests() {
    let mut sim = sim(3, 27);
    let (m_box, held) = busy_member(&mut sim, NodeId(2), "crash");
    let _p = sim
        .node(NodeId(2))
        .request("crash", 1u64, sim.now() + Duration::from_secs(60));
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.node(NodeId(1)).request_tables().queued, 1);
    sim.crash(NodeId(2));
    sim.run_for(Duration::from_secs(10));
    let tables = sim.node(NodeId(1)).request_tables();
    assert_eq!((tables.queued, tables.queue_index), (0, 0));
    assert_eq!(sim.node(NodeId(1)).stats().cancelled_requests, 1);
    drop(held);
    sim.run_for(Duration::from_millis(10));
    assert!(requests(&m_box).is_empty());
    assert_idle(&sim, &[NodeId(0), NodeId(1)]);
}

#[test]
fn a_closed_members_queued_requests_are_answered_and_its_gate_goes() {
    let mut sim = sim(2, 28);
    let (m_box, held) = busy_member(&mut sim, NodeId(0), "closing");
    let p = sim
        .node(NodeId(0))
        .request("closing", 1u64, sim.now() + Duration::from_secs(60));
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.node(NodeId(1)).request_tables().queued, 1);
    drop(m_box);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(err(p.try_result()), Some(RequestError::Abandoned));
    drop(held);
    sim.run_for(Duration::from_millis(10));
    assert_idle(&sim, &[NodeId(0), NodeId(1)]);
}
