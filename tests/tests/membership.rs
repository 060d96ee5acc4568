//! Dynamic membership over real TCP and mutual TLS (tokio adapter): joining
//! through a seed, graceful leave, replacement with a new incarnation, a
//! second process claiming a live node id, spec reloads, and membership
//! digests (a peer lacking nothing gets only a digest; bad ones close).

use std::time::{Duration, Instant};

use reign_proto::certgen::CertAndKey;
use reign_proto::codec::Frame;
use reign_proto::control::{member_digest, Control};
use reign_proto::handshake::FEATURES;
use reign_proto::{SpecError, ID_IN_USE};
use reign_tests::raw_peer::RawPeer;
use reign_tests::{capture_logs, eventually, logged, recv_as, shutdown_all, TestCluster};
use reign_tokio::{ClusterSpec, MailboxExt, Node, NodeId, ReloadError, Tuning};

const WAIT: Duration = Duration::from_secs(10);

/// Node `id`'s spec listing only itself and `seeds`.
fn seeded(cluster: &TestCluster, id: u16, seeds: &[u16]) -> ClusterSpec {
    let mut spec = cluster.spec(NodeId(id));
    spec.nodes.retain(|n| n.id == id || seeds.contains(&n.id));
    spec
}

/// Starts nodes `0..n`: node 0 alone, the others with node 0 as seed.
async fn start_through_seed(cluster: &TestCluster, n: u16) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let seeds: &[u16] = if i == 0 { &[] } else { &[0] };
        nodes.push(
            Node::start(&seeded(cluster, i, seeds), NodeId(i))
                .await
                .unwrap(),
        );
    }
    nodes
}

fn ids(range: impl IntoIterator<Item = u16>, except: u16) -> Vec<NodeId> {
    range
        .into_iter()
        .filter(|&i| i != except)
        .map(NodeId)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_join_through_one_seed_and_find_each_others_names() {
    capture_logs();
    let cluster = TestCluster::new(5);
    let started = Instant::now();
    let nodes = start_through_seed(&cluster, 5).await;
    for node in &nodes {
        let others = ids(0..5, node.id().0);
        assert!(
            node.wait_for_peers(&others, WAIT).await,
            "{} connected to {:?} only",
            node.id(),
            others
                .iter()
                .filter(|&&p| node.is_connected(p))
                .collect::<Vec<_>>()
        );
        assert_eq!(node.cluster_members(), others);
    }
    println!(
        "five nodes fully connected {:?} after the first join",
        started.elapsed()
    );

    let (addr, mailbox) = nodes[4].new_mailbox();
    nodes[4].register("four", &addr).unwrap();
    tokio::time::timeout(WAIT, nodes[4].sync()).await.unwrap();
    let found = nodes[1]
        .lookup("four")
        .expect("node 4's name is visible on node 1");
    found.send("hello from node 1".to_owned()).unwrap();
    let msg = mailbox.recv_timeout(WAIT).await.unwrap();
    assert_eq!(msg.downcast::<String>().unwrap(), "hello from node 1");

    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_is_dropped_at_once_and_its_replacement_is_a_new_incarnation() {
    capture_logs();
    let cluster = TestCluster::new(3);
    let [n0, n1, n2]: [Node; 3] = start_through_seed(&cluster, 3).await.try_into().unwrap();
    for node in [&n0, &n1, &n2] {
        assert!(node.wait_for_peers(&ids(0..3, node.id().0), WAIT).await);
    }
    let (old_addr, _old_mailbox) = n2.new_mailbox();
    n2.register("two", &old_addr).unwrap();
    tokio::time::timeout(WAIT, n2.sync()).await.unwrap();
    let old_seen = n1.lookup("two").unwrap();
    let (watcher, watcher_box) = n1.new_mailbox();
    old_seen.on_close_notify(&watcher);
    tokio::time::timeout(WAIT, n1.sync()).await.unwrap();

    // Graceful leave: the goodbye, not down-detection, takes node 2 off.
    let left = Instant::now();
    n2.shutdown().await;
    for node in [&n0, &n1] {
        assert!(node.wait_for_disconnect(NodeId(2), WAIT).await);
    }
    let seen_after = left.elapsed();
    println!("both peers saw node 2 leave {seen_after:?} after its shutdown began");
    assert!(logged(&["peer said goodbye: node shutting down", "peer=2"]));
    assert!(!logged(&["pings in a row went unanswered", "peer=2"]));
    assert!(!logged(&["nothing received for", "peer=2"]));
    assert!(watcher_box
        .recv_timeout(WAIT)
        .await
        .unwrap()
        .is::<reign_tokio::MailboxClosed>());
    // Node 2 was learned (it is in neither spec): it is forgotten, not redialled.
    assert!(eventually(WAIT, || !n0
        .cluster_members()
        .contains(&NodeId(2))
        && !n1.cluster_members().contains(&NodeId(2))));

    // The replacement: same id, new incarnation, joins again.
    let n2b = Node::start(&seeded(&cluster, 2, &[0]), NodeId(2))
        .await
        .unwrap();
    for node in [&n0, &n1, &n2b] {
        assert!(node.wait_for_peers(&ids(0..3, node.id().0), WAIT).await);
    }
    let (new_addr, new_mailbox) = n2b.new_mailbox();
    n2b.register("two", &new_addr).unwrap();
    tokio::time::timeout(WAIT, n2b.sync()).await.unwrap();
    let new_seen = n1.lookup("two").unwrap();
    assert_ne!(new_seen.id().incarnation, old_seen.id().incarnation);
    old_seen.send("to the old incarnation".to_owned()).unwrap();
    new_seen.send("to the new one".to_owned()).unwrap();
    let msg = new_mailbox.recv_timeout(WAIT).await.unwrap();
    assert_eq!(msg.downcast::<String>().unwrap(), "to the new one");
    assert!(new_mailbox
        .recv_timeout(Duration::from_millis(200))
        .await
        .is_err());

    for node in [&n0, &n1, &n2b] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_a_live_id_is_refused_and_stops_and_the_first_keeps_serving() {
    capture_logs();
    let cluster = TestCluster::new(3);
    let [n0, n1]: [Node; 2] = start_through_seed(&cluster, 2).await.try_into().unwrap();
    assert!(n0.wait_for_peers(&[NodeId(1)], WAIT).await);
    let (addr, mailbox) = n1.new_mailbox();
    n1.register("one", &addr).unwrap();
    tokio::time::timeout(WAIT, n1.sync()).await.unwrap();

    // Same id, its own listening port (node 2's), node 0 as seed.
    let mut impostor_spec = seeded(&cluster, 1, &[0]);
    impostor_spec
        .nodes
        .iter_mut()
        .find(|n| n.id == 1)
        .unwrap()
        .address = cluster.address(NodeId(2)).to_owned();
    let impostor = Node::start(&impostor_spec, NodeId(1)).await.unwrap();
    tokio::time::timeout(WAIT, impostor.stopped())
        .await
        .expect("the second process stops by itself");
    let failure = impostor.failure().expect("it says why it stopped");
    assert!(failure.contains(ID_IN_USE), "{failure}");
    assert!(logged(&[
        "refusing a second process with the id of a live node"
    ]));

    // The first is untouched: same connection, same names, still served.
    assert!(n0.is_connected(NodeId(1)));
    let found = n0.lookup("one").unwrap();
    assert_eq!(found.id(), addr.id());
    found.send(7u64).unwrap();
    assert_eq!(recv_as::<u64>(&mailbox, WAIT).await, 7);

    for node in [&n0, &n1] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_node_and_removes_another_and_a_bad_one_changes_nothing() {
    capture_logs();
    let cluster = TestCluster::with_tuning(
        4,
        reign_tokio::Tuning {
            accept_joins: false,
            ..reign_tokio::Tuning::fast()
        },
    );
    let only = |spec: &mut ClusterSpec, keep: &[u16]| spec.nodes.retain(|n| keep.contains(&n.id));
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut spec = cluster.spec(NodeId(i));
        only(&mut spec, &[0, 1, 2]);
        nodes.push(Node::start(&spec, NodeId(i)).await.unwrap());
    }
    let n3 = Node::start(&cluster.spec(NodeId(3)), NodeId(3))
        .await
        .unwrap();
    for node in &nodes {
        assert!(node.wait_for_peers(&ids(0..3, node.id().0), WAIT).await);
    }
    // Joins are off: node 3 is in nobody's spec, so it is refused.
    assert!(eventually(WAIT, || logged(&["not in it with joins off"])));
    assert!(!n3.is_connected(NodeId(0)));

    // Nodes 0 and 1 now run {0, 1, 3}: node 3 in, node 2 out.
    for node in &nodes[..2] {
        let mut spec = cluster.spec(node.id());
        only(&mut spec, &[0, 1, 3]);
        let changes = node.reload(&spec).await.unwrap();
        assert_eq!(changes.added, [NodeId(3)]);
        assert_eq!(changes.removed, [NodeId(2)]);
    }
    for node in &nodes[..2] {
        assert!(node.wait_for_peers(&[NodeId(3)], WAIT).await);
        assert!(node.wait_for_disconnect(NodeId(2), WAIT).await);
        assert_eq!(node.cluster_members(), ids([0, 1, 3], node.id().0));
    }
    assert!(logged(&["removed from the cluster spec"]));
    // Node 2 keeps dialling (its spec is unchanged) and is refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!nodes[0].is_connected(NodeId(2)) && !nodes[1].is_connected(NodeId(2)));

    // Bad reloads: refused with the reason, the old view kept.
    let node = &nodes[0];
    let mut duplicate = cluster.spec(NodeId(0));
    duplicate.nodes.push(duplicate.nodes[0].clone());
    assert!(matches!(
        node.reload(&duplicate).await,
        Err(ReloadError::Spec(SpecError::DuplicateId { id: 0 }))
    ));
    let mut without_me = cluster.spec(NodeId(0));
    only(&mut without_me, &[1, 3]);
    assert!(matches!(
        node.reload(&without_me).await,
        Err(ReloadError::Spec(SpecError::NodeNotInSpec { id: 0 }))
    ));
    let other_ca = TestCluster::new(4);
    assert_eq!(
        node.reload(&other_ca.spec(NodeId(0))).await,
        Err(ReloadError::OtherCluster)
    );
    assert_eq!(node.cluster_members(), [NodeId(1), NodeId(3)]);
    assert!(node.is_connected(NodeId(1)) && node.is_connected(NodeId(3)));

    for node in nodes.iter().chain([&n3]) {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_naming_a_thousand_made_up_members_gets_a_bounded_few_and_they_go_no_further() {
    capture_logs();
    let cluster = TestCluster::new(3);
    let [n0, n2]: [Node; 2] = [
        Node::start(&seeded(&cluster, 0, &[]), NodeId(0))
            .await
            .unwrap(),
        Node::start(&seeded(&cluster, 2, &[0]), NodeId(2))
            .await
            .unwrap(),
    ];
    assert!(n0.wait_for_peers(&[NodeId(2)], WAIT).await);
    // An authenticated node 1 (its certificate is real) that lies.
    let address = cluster.address(NodeId(0)).to_owned();
    let ca = cluster.ca.cert_pem().to_owned();
    let cert = cluster.cert(NodeId(1));
    let liar = tokio::task::spawn_blocking(move || {
        let mut peer = RawPeer::admitted(&address, NodeId(1), NodeId(0), &ca, &cert, WAIT);
        let nodes = (1000..2000u16)
            .map(|id| (id, format!("127.0.0.1:{}", 40000 + id)))
            .collect();
        let members = Control::Members {
            nodes,
            answer: true,
        };
        peer.send_frame(&Frame::Control(members.encode())).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        peer
    });
    assert!(eventually(WAIT, || n0.cluster_members().len() > 2));
    let liar = liar.await.unwrap();
    let made_up = n0
        .cluster_members()
        .into_iter()
        .filter(|n| n.0 >= 1000)
        .count();
    assert_eq!(made_up, 256, "the per-peer cap on members only heard of");
    // Hearsay is not passed on: node 2 never hears of them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        n2.cluster_members().iter().all(|n| n.0 < 1000),
        "{:?}",
        n2.cluster_members()
    );
    drop(liar);
    for node in [&n0, &n2] {
        node.shutdown().await;
    }
}

/// What a raw peer needs to reach node 0 of a test cluster as another
/// member: the CA, the addresses and a certificate per node.
#[derive(Clone)]
struct Dialer {
    ca: String,
    addresses: Vec<String>,
    certs: Vec<CertAndKey>,
}

impl Dialer {
    fn of(cluster: &TestCluster, n: u16) -> Dialer {
        Dialer {
            ca: cluster.ca.cert_pem().to_owned(),
            addresses: (0..n)
                .map(|i| cluster.address(NodeId(i)).to_owned())
                .collect(),
            certs: (0..n).map(|i| cluster.cert(NodeId(i))).collect(),
        }
    }

    /// Node `me`, admitted by node 0 as a raw peer whose hello carries
    /// `features`.
    fn admitted(&self, me: u16, features: u64) -> RawPeer {
        let mut hello = RawPeer::hello(NodeId(me), NodeId(0), &self.ca);
        hello.features = features;
        RawPeer::admitted_with(
            &self.addresses[0],
            &hello,
            &self.ca,
            &self.certs[usize::from(me)],
            WAIT,
        )
    }

    /// A digest as node `me` sends it, counting `count` members hashed to
    /// `hash`.
    fn digest(&self, me: u16, (count, hash): (u32, u64), answer: bool) -> Frame {
        Frame::Control(
            Control::MemberDigest {
                address: self.addresses[usize::from(me)].clone(),
                count,
                hash,
                answer,
            }
            .encode(),
        )
    }
}

/// The test tuning with pings and gossip far apart: a raw peer answers no
/// ping and must stay connected while a test reads what the node sends it,
/// and reads end after a quiet spell, which gossip every 500 ms never
/// leaves.
fn patient(n: u16) -> TestCluster {
    TestCluster::with_tuning(
        n,
        Tuning {
            ping_interval: Duration::from_secs(30),
            read_deadline: Duration::from_secs(120),
            gossip_interval: Duration::from_secs(60),
            ..Tuning::fast()
        },
    )
}

/// The membership messages (`Members`, `MemberDigest`) a raw peer reads
/// until `quiet` passes with nothing new.
fn membership_messages(peer: &mut RawPeer, quiet: Duration) -> Vec<Control> {
    // Frame by frame: frames that came in with the node's hello are
    // already buffered.
    std::iter::from_fn(|| peer.next_frame(quiet))
        .filter_map(|f| match f {
            Frame::Control(body) => Control::decode(&body).ok(),
            _ => None,
        })
        .filter(|c| matches!(c, Control::Members { .. } | Control::MemberDigest { .. }))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_lacking_nothing_gets_only_a_digest_and_one_lacking_a_member_gets_the_list() {
    capture_logs();
    let cluster = patient(4);
    let mut nodes = Vec::new();
    for id in [0, 2] {
        nodes.push(
            Node::start(&cluster.spec(NodeId(id)), NodeId(id))
                .await
                .unwrap(),
        );
    }
    assert!(nodes[0].wait_for_peers(&[NodeId(2)], WAIT).await);
    let all = [0u16, 1, 2, 3];
    let dialer = Dialer::of(&cluster, 4);
    let seen = tokio::task::spawn_blocking(move || {
        let mut peer = dialer.admitted(1, FEATURES);
        // Link up: node 0 knows the same four members (one spec): a digest
        // of them, no list.
        let at_link_up = membership_messages(&mut peer, Duration::from_millis(800));
        // The periodic exchange from a peer lacking nothing: no answer.
        peer.send_frame(&dialer.digest(1, member_digest(all), true))
            .unwrap();
        let lacking_nothing = membership_messages(&mut peer, Duration::from_millis(800));
        // From a peer that lacks node 2 and 3: the list, asking for ours.
        peer.send_frame(&dialer.digest(1, member_digest([0, 1]), true))
            .unwrap();
        let lacking = membership_messages(&mut peer, Duration::from_millis(800));
        // A node that predates digests (no feature bit) gets the full list
        // at link up, as before.
        let mut old = dialer.admitted(3, 0);
        let old_link_up = membership_messages(&mut old, Duration::from_millis(800));
        (at_link_up, lacking_nothing, lacking, old_link_up, peer, old)
    });
    let (at_link_up, lacking_nothing, lacking, old_link_up, peer, old) = seen.await.unwrap();
    let (count, hash) = member_digest(all);
    // Node 0's periodic exchange (every 500 ms in the test tuning) may fall
    // in a window: a digest asking back, of the same four members.
    let gossip = |c: &Control| matches!(c, Control::MemberDigest { answer: true, .. });
    for c in at_link_up
        .iter()
        .chain(&lacking_nothing)
        .filter(|c| gossip(c))
    {
        assert!(
            matches!(c, Control::MemberDigest { count: n, hash: h, .. } if (*n, *h) == (count, hash)),
            "{c:?}"
        );
    }
    let at_link_up: Vec<&Control> = at_link_up.iter().filter(|c| !gossip(c)).collect();
    assert_eq!(
        at_link_up,
        vec![&Control::MemberDigest {
            address: cluster.address(NodeId(0)).to_owned(),
            count,
            hash,
            answer: false,
        }],
        "a digest and nothing else when the link comes up"
    );
    assert!(
        lacking_nothing.iter().all(gossip),
        "only digests for a peer lacking nothing: {lacking_nothing:?}"
    );
    let lists: Vec<&Control> = lacking.iter().filter(|c| !gossip(c)).collect();
    let [Control::Members {
        nodes: listed,
        answer: true,
    }] = lists.as_slice()
    else {
        panic!("a peer lacking members gets the full list, asking back: {lacking:?}");
    };
    let listed: Vec<u16> = listed.iter().map(|(id, _)| *id).collect();
    assert!(listed.contains(&0) && listed.contains(&2), "{listed:?}");
    assert!(
        old_link_up
            .iter()
            .all(|c| matches!(c, Control::Members { .. })),
        "a peer without the feature never gets a digest: {old_link_up:?}"
    );
    assert!(
        old_link_up.iter().any(|c| matches!(c,
            Control::Members { nodes, answer: false } if nodes.iter().any(|(id, _)| *id == 2))),
        "a peer without the feature gets the full list at link up: {old_link_up:?}"
    );
    drop((peer, old));
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_counting_no_members_or_more_than_node_ids_allow_closes_the_link() {
    capture_logs();
    // `MAX_DIGEST_COUNT`: node ids are 16 bits.
    let max = 1u32 << 16;
    for (count, closes) in [(0, true), (1, false), (max, false), (max + 1, true)] {
        // A node of its own per case: what one case leaves behind (a
        // redial of the closed peer) does not meet the next.
        let cluster = patient(2);
        let n0 = Node::start(&cluster.spec(NodeId(0)), NodeId(0))
            .await
            .unwrap();
        let dialer = Dialer::of(&cluster, 2);
        let (closed, answered) = tokio::task::spawn_blocking(move || {
            let mut peer = dialer.admitted(1, FEATURES);
            let _ = membership_messages(&mut peer, Duration::from_millis(300));
            peer.send_frame(&dialer.digest(1, (count, 7), true))
                .unwrap();
            let (frames, closed) = peer.read_until_closed(Duration::from_millis(1500));
            let answered = frames.iter().any(|f| match f {
                Frame::Control(body) => {
                    matches!(Control::decode(body), Ok(Control::Members { .. }))
                }
                _ => false,
            });
            (closed, answered)
        })
        .await
        .unwrap();
        assert_eq!(closed, closes, "a digest counting {count} members");
        // A well-formed digest that differs is answered with the list.
        assert_eq!(answered, !closes, "a digest counting {count} members");
        n0.shutdown().await;
    }
    assert!(logged(&["member digest counting 0 members"]));
    assert!(logged(&["member digest counting 65537 members"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_list_entries_past_the_members_limit_are_ignored_and_summarised() {
    capture_logs();
    let cluster = patient(2);
    let n0 = Node::start(&cluster.spec(NodeId(0)), NodeId(0))
        .await
        .unwrap();
    // `MAX_MEMBERS`: entries of one `Members` message looked at.
    let max = 4096usize;
    let dialer = Dialer::of(&cluster, 2);
    let peer = tokio::task::spawn_blocking(move || {
        let mut peer = dialer.admitted(1, FEATURES);
        // Lists of node 0 itself (skipped) whose last entry is a new
        // member: under the limit, at it, and one past it.
        let me = (0u16, dialer.addresses[0].clone());
        for (len, id) in [(max - 1, 7001u16), (max, 7002), (max + 1, 7003)] {
            let mut nodes = vec![me.clone(); len - 1];
            nodes.push((id, format!("127.0.0.1:{}", 40000 + id % 1000)));
            let members = Control::Members {
                nodes,
                answer: false,
            };
            peer.send_frame(&Frame::Control(members.encode())).unwrap();
        }
        peer
    })
    .await
    .unwrap();
    assert!(eventually(WAIT, || n0
        .cluster_members()
        .contains(&NodeId(7002))));
    let members = n0.cluster_members();
    assert!(members.contains(&NodeId(7001)), "{members:?}");
    assert!(
        !members.contains(&NodeId(7003)),
        "past the limit: {members:?}"
    );
    // One summary line (every 10 s at most), not a line per message.
    assert!(eventually(Duration::from_secs(30), || logged(&[
        "members list entries past the members limit"
    ])));
    assert!(
        n0.is_connected(NodeId(1)),
        "an oversized list is not an error"
    );
    drop(peer);
    n0.shutdown().await;
}
