//! The registry's edges over real TCP and mutual TLS (tokio adapter): an
//! authenticated peer that floods the directory is cut off at its caps and
//! cannot grow the node's memory or slow its healthy links (issue 15, item
//! 7), and a name claimed on two nodes is resolved alike everywhere, with a
//! WARN and a count on every node and a notice for every claimant (item 8).
//!
//! The flood tests read the process's resident memory (`VmRSS`), so the
//! tests of this file run one at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reign_proto::codec::Frame;
use reign_proto::control::Control;
use reign_proto::{MailboxId, Tuning};
use reign_tests::raw_peer::{ClientAuth, RawPeer};
use reign_tests::{capture_logs, eventually, logged, shutdown_all, TestCluster};
use reign_tokio::{MultipleClaim, Node, NodeId};

const WAIT: Duration = Duration::from_secs(10);

/// Memory the node may gain under a flood, over its idle footprint.
const FLOOD_BUDGET: u64 = 64 << 20;

/// One test at a time: the flood tests measure the whole process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Resident memory of this process, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kb * 1024
}

/// A member of `service` that answers every `u64` with itself.
fn echo_member(node: &Node, service: &str) {
    let (addr, mailbox) = node.new_mailbox();
    node.join(service, &addr).unwrap();
    tokio::spawn(async move {
        while let Ok(request) = mailbox.recv_request().await {
            let (msg, responder) = request.into_parts();
            if let Ok(n) = msg.downcast::<u64>() {
                let _ = responder.reply(n);
            }
        }
    });
}

/// The attacker: node `me` of the cluster (a valid certificate), talking
/// raw protocol to node 0.
struct Attacker {
    address: String,
    ca: String,
    cert: reign_proto::certgen::CertAndKey,
    me: NodeId,
}

impl Attacker {
    fn new(cluster: &TestCluster, me: u16) -> Attacker {
        Attacker {
            address: cluster.address(NodeId(0)).to_owned(),
            ca: cluster.ca.cert_pem().to_owned(),
            cert: cluster.cert(NodeId(me)),
            me: NodeId(me),
        }
    }

    /// Connects and says hello; retries while the node still holds the
    /// previous connection.
    fn connect(&self) -> RawPeer {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut peer = RawPeer::connect(
                &self.address,
                NodeId(0),
                &self.ca,
                ClientAuth::Cert(&self.cert),
            )
            .expect("TLS to node 0");
            let hello = RawPeer::hello(self.me, NodeId(0), &self.ca);
            peer.send_frame(&Frame::Hello(hello.to_frame_body()))
                .unwrap();
            if matches!(peer.next_frame(WAIT), Some(Frame::Hello(_))) {
                return peer;
            }
            assert!(
                Instant::now() < deadline,
                "node 0 never took the attacker back"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn id(&self, serial: u64) -> MailboxId {
        MailboxId {
            node: self.me,
            incarnation: reign_proto::Incarnation(1),
            serial,
        }
    }
}

/// Sends control messages in batches; `false` once the node has closed.
fn send_all(peer: &mut RawPeer, controls: impl Iterator<Item = Control>) -> bool {
    let mut batch = Vec::new();
    for control in controls {
        batch.extend_from_slice(&Frame::Control(control.encode()).to_vec());
        if batch.len() >= 256 * 1024 && peer.send_raw(&std::mem::take(&mut batch)).is_err() {
            return false;
        }
    }
    batch.is_empty() || peer.send_raw(&batch).is_ok()
}

/// Whether the node has applied everything sent so far and still talks:
/// a sync request is answered (pings are answered meanwhile, so the link
/// is never dropped for silence). `false` when the node closed the link.
fn still_served(peer: &mut RawPeer, seq: u64) -> bool {
    let request = Frame::Control(Control::SyncRequest { seq }.encode());
    if peer.send_frame(&request).is_err() {
        return false;
    }
    loop {
        match peer.next_frame(WAIT) {
            None => return false,
            Some(Frame::Control(body)) => {
                if matches!(Control::decode(&body), Ok(Control::SyncReply { seq: s }) if s == seq) {
                    return true;
                }
            }
            Some(Frame::Ping(n)) => {
                let _ = peer.send_frame(&Frame::Pong(n));
            }
            Some(_) => {}
        }
    }
}

/// Whether the node cut the link: what was sent before is never
/// acknowledged and the connection closes (an old node would answer).
fn cut_off(peer: &mut RawPeer) -> bool {
    !still_served(peer, u64::MAX)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Names,
    Groups,
    Topics,
}

/// `count` entries of `kind` for the mailbox `id`, numbered from `from`,
/// with `len`-byte names; made as they are sent, so the attacker's own
/// memory stays small.
fn entries(
    id: MailboxId,
    kind: Kind,
    from: usize,
    count: usize,
    len: usize,
) -> impl Iterator<Item = Control> {
    (from..from + count).map(move |i| {
        let mut name = format!("{i:08}-");
        name.extend(std::iter::repeat_n('x', len.saturating_sub(name.len())));
        name.truncate(len);
        match kind {
            Kind::Names => Control::Claim { name, id },
            Kind::Groups => Control::Join { group: name, id },
            Kind::Topics => Control::Interest {
                topic: name,
                interested: true,
            },
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_registry_cap_holds_just_under_at_and_over_against_a_real_peer() {
    let _serial = SERIAL.lock().await;
    capture_logs();
    let tuning = Tuning::fast();
    let cluster = TestCluster::with_tuning(3, tuning.clone());
    let nodes = cluster.start(&[0, 1], WAIT).await;
    let attacker = Attacker::new(&cluster, 2);
    let caps = [
        (Kind::Names, tuning.max_names_per_node),
        (Kind::Groups, tuning.max_group_members_per_node),
        (Kind::Topics, tuning.max_topics_per_node),
    ];
    let max_len = tuning.max_name_len;
    let n0 = nodes[0].clone();
    tokio::task::spawn_blocking(move || {
        for (kind, cap) in caps {
            // Name length: one byte under and at the cap are held.
            let mut peer = attacker.connect();
            for (i, len) in [max_len - 1, max_len].into_iter().enumerate() {
                assert!(send_all(
                    &mut peer,
                    entries(attacker.id(1), kind, i, 1, len)
                ));
                assert!(
                    still_served(&mut peer, i as u64),
                    "{kind:?}: {len} bytes refused"
                );
            }
            // One byte over: cut off at once.
            assert!(send_all(
                &mut peer,
                entries(attacker.id(1), kind, 2, 1, max_len + 1)
            ));
            assert!(
                cut_off(&mut peer),
                "{kind:?}: {} bytes accepted",
                max_len + 1
            );
            // Count: one under the cap, then the cap, are held; one more is not.
            let mut peer = attacker.connect();
            assert!(send_all(
                &mut peer,
                entries(attacker.id(1), kind, 0, cap - 1, 16)
            ));
            assert!(
                still_served(&mut peer, 10),
                "{kind:?}: {} entries refused",
                cap - 1
            );
            assert!(send_all(
                &mut peer,
                entries(attacker.id(1), kind, cap - 1, 1, 16)
            ));
            assert!(
                still_served(&mut peer, 11),
                "{kind:?}: {cap} entries refused"
            );
            let held = {
                let dump = n0.registry_dump();
                (
                    dump.claims_per_node.get(&2).copied(),
                    n0.stats().registry_cutoffs,
                )
            };
            println!("{kind:?}: {cap} entries held, then one more: {held:?}");
            assert!(send_all(
                &mut peer,
                entries(attacker.id(1), kind, cap, 1, 16)
            ));
            assert!(cut_off(&mut peer), "{kind:?}: {} entries accepted", cap + 1);
        }
    })
    .await
    .unwrap();
    assert!(eventually(WAIT, || !nodes[0].is_connected(NodeId(2))));
    // Everything the attacker held went with it.
    assert_eq!(nodes[0].registry_dump().claims_per_node.get(&2), None);
    assert_eq!(nodes[0].stats().registry_cutoffs, 6);
    for what in [
        "max_name_len",
        "max_names_per_node",
        "max_group_members_per_node",
        "max_topics_per_node",
    ] {
        assert!(
            logged(&[
                "closing connection",
                "cut off for going over a registry cap",
                what
            ]),
            "no log line naming {what}"
        );
    }
    assert!(
        nodes[0].is_connected(NodeId(1)),
        "the healthy link stayed up"
    );
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_flood_stays_within_64_mb_and_healthy_round_trips_stay_short() {
    let _serial = SERIAL.lock().await;
    capture_logs();
    let tuning = Tuning::fast();
    let cluster = TestCluster::with_tuning(3, tuning.clone());
    let nodes = cluster.start(&[0, 1], WAIT).await;
    echo_member(&nodes[1], "echo");
    tokio::time::timeout(WAIT, nodes[1].sync()).await.unwrap();
    // Idle: warm the healthy link, then measure.
    let mut idle_rtts = Vec::new();
    for i in 0..200u64 {
        let start = Instant::now();
        let reply = nodes[0].request("echo", i, WAIT).await.unwrap();
        assert_eq!(reply.downcast::<u64>().unwrap(), i);
        idle_rtts.push(start.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = rss_bytes();

    // The attacker fills names, groups and topics to the cap with names as
    // long as allowed (the worst a peer can hold), goes one over, is cut
    // off, and starts again; once per round it also sends the 4,000-byte
    // names of the original report.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(idle));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let attacker = Attacker::new(&cluster, 2);
    let rounds = 4;
    let flood = {
        let tuning = tuning.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut sent = 0usize;
            for round in 0..rounds {
                let mut peer = attacker.connect();
                let over = entries(attacker.id(1), Kind::Names, round * 100_000, 1, 4000);
                assert!(send_all(&mut peer, over));
                assert!(
                    cut_off(&mut peer),
                    "round {round}: a 4,000-byte name was taken"
                );
                let mut peer = attacker.connect();
                for (kind, cap) in [
                    (Kind::Names, tuning.max_names_per_node),
                    (Kind::Groups, tuning.max_group_members_per_node),
                    (Kind::Topics, tuning.max_topics_per_node),
                ] {
                    let all = entries(
                        attacker.id(1),
                        kind,
                        round * 100_000,
                        cap,
                        tuning.max_name_len,
                    );
                    sent += cap;
                    assert!(
                        send_all(&mut peer, all),
                        "round {round}: cut off at {kind:?}"
                    );
                }
                assert!(
                    still_served(&mut peer, round as u64),
                    "round {round}: at the caps"
                );
                let over = entries(
                    attacker.id(1),
                    Kind::Topics,
                    round * 100_000 + 99_999,
                    1,
                    16,
                );
                assert!(send_all(&mut peer, over));
                assert!(
                    cut_off(&mut peer),
                    "round {round}: over the cap and still on"
                );
            }
            (sent, started.elapsed())
        })
    };
    // Meanwhile the healthy link keeps answering.
    let mut flood_rtts = Vec::new();
    let mut i = 0u64;
    while !flood.is_finished() {
        let start = Instant::now();
        let reply = nodes[0].request("echo", i, WAIT).await.unwrap();
        assert_eq!(reply.downcast::<u64>().unwrap(), i);
        flood_rtts.push(start.elapsed());
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (sent, took) = flood.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    let grown = peak.saturating_sub(idle);
    let stats = |rtts: &mut Vec<Duration>| {
        rtts.sort();
        (
            rtts[rtts.len() / 2],
            rtts[rtts.len() * 99 / 100],
            rtts[rtts.len() - 1],
        )
    };
    let (idle_p50, idle_p99, idle_max) = stats(&mut idle_rtts);
    let (flood_p50, flood_p99, flood_max) = stats(&mut flood_rtts);
    println!(
        "registry flood: {rounds} rounds, {sent} entries of {} bytes in {took:?}; RSS idle {} MB, peak {} MB (+{} MB, budget {} MB)",
        tuning.max_name_len,
        idle >> 20,
        peak >> 20,
        grown >> 20,
        FLOOD_BUDGET >> 20
    );
    println!(
        "healthy round trip: idle p50 {idle_p50:?} p99 {idle_p99:?} max {idle_max:?}; during the flood ({} requests) p50 {flood_p50:?} p99 {flood_p99:?} max {flood_max:?}",
        flood_rtts.len()
    );
    assert!(grown <= FLOOD_BUDGET, "the node grew by {} MB", grown >> 20);
    // Generous: the healthy link never missed a beat long enough to matter
    // (the fast tuning declares a silent peer down after 2 s).
    assert!(
        flood_max < Duration::from_secs(1),
        "a round trip took {flood_max:?}"
    );
    assert!(nodes[0].is_connected(NodeId(1)) && nodes[1].is_connected(NodeId(0)));
    assert_eq!(nodes[0].stats().registry_cutoffs, 2 * rounds as u64);
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_over_on_a_third_node_is_resolved_alike_everywhere() {
    let _serial = SERIAL.lock().await;
    capture_logs();
    let cluster = TestCluster::new(3);
    let nodes = cluster.start(&[0, 1, 2], WAIT).await;
    // Node 2 holds the name; node 1 claims it as well (the take-over of the
    // report). Node 1's mailbox has the lower id, so it wins everywhere.
    let (holder, holder_box) = nodes[2].new_mailbox();
    nodes[2].register("takeover", &holder).unwrap();
    tokio::time::timeout(WAIT, nodes[2].sync()).await.unwrap();
    assert_eq!(
        nodes[0].lookup("takeover").map(|a| a.id()),
        Some(holder.id())
    );
    let (taker, taker_box) = nodes[1].new_mailbox();
    nodes[1].register("takeover", &taker).unwrap();
    tokio::time::timeout(WAIT, nodes[1].sync()).await.unwrap();
    for mailbox in [&holder_box, &taker_box] {
        let note: MultipleClaim = tokio::time::timeout(WAIT, mailbox.recv_type())
            .await
            .expect("a MultipleClaim")
            .unwrap();
        assert_eq!(note.name, "takeover");
    }
    for node in &nodes {
        assert!(eventually(WAIT, || node.stats().name_conflicts == 1));
        assert_eq!(node.multiple_claim_count(), 1);
        for _ in 0..100 {
            assert_eq!(
                node.lookup("takeover").unwrap().id(),
                taker.id(),
                "node {}",
                node.id().0
            );
        }
        assert!(logged(&[
            "a name is claimed by more than one mailbox",
            &format!("node={}", node.id().0),
            "takeover"
        ]));
    }
    // Sends from node 0 all go to the winner.
    for i in 0..20u64 {
        nodes[0].lookup("takeover").unwrap().send(i).unwrap();
    }
    for i in 0..20u64 {
        let n: u64 = tokio::time::timeout(WAIT, taker_box.recv_type())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, i);
    }
    assert!(
        holder_box.try_recv().unwrap().is_none(),
        "the loser got a message"
    );
    // The winner steps down: every node turns to the holder, and the
    // conflict is over.
    nodes[1].unregister("takeover", &taker);
    tokio::time::timeout(WAIT, nodes[1].sync()).await.unwrap();
    for node in &nodes {
        assert_eq!(node.lookup("takeover").unwrap().id(), holder.id());
        assert_eq!(node.multiple_claim_count(), 0);
    }
    shutdown_all(nodes).await;
}
