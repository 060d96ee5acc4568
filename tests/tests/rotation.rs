//! Certificate rotation without a restart, over real TCP and mutual TLS
//! (tokio adapter): a reload picks up a renewed node certificate, and a CA
//! rolls over in three reloads on a running cluster with traffic flowing,
//! losing nothing on the links that stay up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reign_proto::certgen::{CertAndKey, ClusterCa};
use reign_proto::SpecError;
use reign_tests::raw_peer::{ClientAuth, RawPeer};
use reign_tests::{capture_logs, eventually, sync_all, TestCluster};
use reign_tokio::{ClusterSpec, Node, NodeId, ReloadError, SendError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

const WAIT: Duration = Duration::from_secs(20);

/// How long traffic flows between the steps of a rotation, so that each
/// step happens with messages in flight on every link.
const FLOW: Duration = Duration::from_millis(300);

/// Node `id`'s spec listing `listed`, with `cert` and trusting `cas`.
fn spec(
    cluster: &TestCluster,
    id: u16,
    listed: &[u16],
    cert: &CertAndKey,
    cas: &[&ClusterCa],
) -> ClusterSpec {
    ClusterSpec {
        nodes: cluster
            .descriptors()
            .into_iter()
            .filter(|d| d.id == id || listed.contains(&d.id))
            .collect(),
        node_cert_pem: cert.cert_pem.clone(),
        node_key_pem: cert.key_pem.clone(),
        cluster_cert_pem: cas.iter().map(|ca| ca.cert_pem()).collect(),
        tuning: cluster.tuning.clone(),
        ..ClusterSpec::default()
    }
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// (connects, disconnects) of `node` to each of `peers`.
fn link_counts(node: &Node, peers: &[u16]) -> Vec<(u16, u64, u64)> {
    let mut counts: Vec<(u16, u64, u64)> = node
        .peer_stats()
        .into_iter()
        .filter(|p| peers.contains(&p.node.0))
        .map(|p| (p.node.0, p.connects, p.disconnects))
        .collect();
    counts.sort();
    counts
}

/// Traffic between every pair of `nodes`: each sends numbered `u64`s
/// (sender id in the top 16 bits) to a mailbox named `sink-<id>` on each
/// other node, and each sink checks they arrive one after another.
struct Traffic {
    stop: Arc<AtomicBool>,
    senders: Vec<tokio::task::JoinHandle<(u16, u16, u64)>>,
    received: Arc<Mutex<HashMap<(u16, u16), u64>>>,
}

impl Traffic {
    async fn start(nodes: &[Node]) -> Traffic {
        let received = Arc::new(Mutex::new(HashMap::new()));
        let mut sinks = Vec::new();
        for node in nodes {
            let (addr, mailbox) = node.new_mailbox();
            node.register(&format!("sink-{}", node.id().0), &addr)
                .unwrap();
            let me = node.id().0;
            let received = received.clone();
            sinks.push(addr);
            tokio::spawn(async move {
                while let Ok(msg) = mailbox.recv().await {
                    let value = msg.downcast::<u64>().expect("a u64");
                    let (from, seq) = ((value >> 48) as u16, value & ((1 << 48) - 1));
                    let mut received = received.lock().unwrap();
                    let count = received.entry((from, me)).or_insert(0);
                    assert_eq!(
                        seq, *count,
                        "message {seq} from node {from} to node {me} out of turn"
                    );
                    *count += 1;
                }
            });
        }
        sync_all(nodes, WAIT).await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        for node in nodes {
            for other in nodes.iter().filter(|o| o.id() != node.id()) {
                let to = other.id().0;
                let target = node.lookup(&format!("sink-{to}")).expect("sink registered");
                let (from, stop) = (node.id().0, stop.clone());
                senders.push(tokio::spawn(async move {
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        match target.send((u64::from(from) << 48) | seq) {
                            Ok(()) => seq += 1,
                            Err(SendError::Full) => {}
                            Err(e) => panic!("send from node {from} to node {to}: {e}"),
                        }
                        if seq.is_multiple_of(16) {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                    (from, to, seq)
                }));
            }
        }
        Traffic {
            stop,
            senders,
            received,
        }
    }

    /// Stops the senders and waits until every message sent has arrived;
    /// returns how many that was.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for sender in self.senders {
            let (from, to, sent) = sender.await.unwrap();
            total += sent;
            let arrived = eventually(WAIT, || {
                self.received
                    .lock()
                    .unwrap()
                    .get(&(from, to))
                    .copied()
                    .unwrap_or(0)
                    == sent
            });
            let got = self.received.lock().unwrap().get(&(from, to)).copied();
            assert!(
                arrived,
                "node {from} sent {sent} to node {to}, {got:?} arrived"
            );
        }
        total
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_used_by_new_connections_and_links_stay_up() {
    capture_logs();
    let cluster = TestCluster::new(2);
    let certs: Vec<CertAndKey> = (0..2).map(|i| cluster.cert(NodeId(i))).collect();
    let nodes: Vec<Node> = reign_tests::start_connected(
        (0..2).map(|i| {
            (
                NodeId(i),
                spec(&cluster, i, &[0, 1], &certs[i as usize], &[&cluster.ca]),
            )
        }),
        WAIT,
    )
    .await
    .into_iter()
    .map(Node::from)
    .collect();
    let before = link_counts(&nodes[0], &[1]);
    let traffic = Traffic::start(&nodes).await;
    tokio::time::sleep(FLOW).await;

    // The same material again changes nothing.
    let same = spec(&cluster, 0, &[1], &certs[0], &[&cluster.ca]);
    assert!(!nodes[0].reload(&same).await.unwrap().tls_renewed);

    // A renewed certificate: taken, and the link to node 1 stays up.
    let renewed = cluster.cert(NodeId(0));
    let changes = nodes[0]
        .reload(&spec(&cluster, 0, &[1], &renewed, &[&cluster.ca]))
        .await
        .unwrap();
    assert!(changes.tls_renewed);
    tokio::time::sleep(FLOW).await;
    // A new connection sees the renewed certificate.
    let address = cluster.address(NodeId(0)).to_owned();
    let outsider = cluster.cert(NodeId(7));
    let ca = cluster.ca.cert_pem().to_owned();
    let presented = tokio::task::spawn_blocking(move || {
        RawPeer::connect(&address, NodeId(0), &ca, ClientAuth::Cert(&outsider))
            .map(|peer| peer.peer_certificate())
    })
    .await
    .unwrap()
    .expect("TLS with the renewed certificate");
    assert_eq!(presented, Some(der(&renewed.cert_pem)));

    let total = traffic.finish().await;
    assert_eq!(link_counts(&nodes[0], &[1]), before, "the link went down");
    println!("renewal: {total} messages, none lost, link up throughout");
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rollover_in_three_reloads_on_a_running_cluster_loses_nothing() {
    capture_logs();
    let started = Instant::now();
    // Nodes 0-2 run; node 3 joins later with only the new CA, node 4 tries
    // with only the old one after the rollover.
    let cluster = TestCluster::new(5);
    let old = &cluster.ca;
    let new = ClusterCa::generate_named("the new CA").unwrap();
    let old_certs: Vec<CertAndKey> = (0..3).map(|i| old.node_cert(NodeId(i)).unwrap()).collect();
    let new_certs: Vec<CertAndKey> = (0..3).map(|i| new.node_cert(NodeId(i)).unwrap()).collect();
    let trio = [0u16, 1, 2];
    let nodes: Vec<Node> = reign_tests::start_connected(
        trio.map(|i| {
            (
                NodeId(i),
                spec(&cluster, i, &trio, &old_certs[i as usize], &[old]),
            )
        }),
        WAIT,
    )
    .await
    .into_iter()
    .map(Node::from)
    .collect();
    let links_before: Vec<_> = nodes.iter().map(|n| link_counts(n, &trio)).collect();
    let traffic = Traffic::start(&nodes).await;

    // Refused, changing nothing: straight to the new CA (no CA in common),
    // and a bundle with a certificate from neither CA.
    let n0 = &nodes[0];
    assert_eq!(
        n0.reload(&spec(&cluster, 0, &trio, &new_certs[0], &[&new]))
            .await,
        Err(ReloadError::OtherCluster)
    );
    let stranger = ClusterCa::generate().unwrap().node_cert(NodeId(0)).unwrap();
    assert!(matches!(
        n0.reload(&spec(&cluster, 0, &trio, &stranger, &[old, &new]))
            .await,
        Err(ReloadError::Spec(SpecError::NotSignedByCluster {
            id: 0,
            ..
        }))
    ));

    let outsider_new = new.node_cert(NodeId(9)).unwrap();
    let presents_new_ca = |id: u16| {
        let address = cluster.address(NodeId(id)).to_owned();
        let (ca, cert) = (new.cert_pem().to_owned(), outsider_new.clone());
        tokio::task::spawn_blocking(move || {
            RawPeer::connect(&address, NodeId(id), &ca, ClientAuth::Cert(&cert)).is_ok()
        })
    };

    // One step of the rollover: every node reloads with its certificate
    // from `certs` and trusts `cas`, and each reload renews its TLS.
    let reload_all = |certs: &[CertAndKey], cas: &[&ClusterCa]| {
        let specs: Vec<ClusterSpec> = (0..nodes.len())
            .map(|i| spec(&cluster, i as u16, &trio, &certs[i], cas))
            .collect();
        let nodes = &nodes;
        async move {
            for (node, spec) in nodes.iter().zip(&specs) {
                assert!(node.reload(spec).await.unwrap().tls_renewed);
            }
        }
    };
    // Step 1: every node trusts the old and the new CA.
    reload_all(&old_certs, &[old, &new]).await;
    tokio::time::sleep(FLOW).await;
    assert!(
        !presents_new_ca(0).await.unwrap(),
        "still the old certificate"
    );
    // Step 2: every node gets a certificate from the new CA.
    reload_all(&new_certs, &[old, &new]).await;
    tokio::time::sleep(FLOW).await;
    for id in trio {
        assert!(
            presents_new_ca(id).await.unwrap(),
            "node {id}'s new connections use the new certificate"
        );
    }
    // Step 3: every node trusts only the new CA.
    reload_all(&new_certs, &[&new]).await;
    tokio::time::sleep(FLOW).await;

    // A node with only the new material joins all three over new links.
    let n3 = Node::start(
        &spec(
            &cluster,
            3,
            &trio,
            &new.node_cert(NodeId(3)).unwrap(),
            &[&new],
        ),
        NodeId(3),
    )
    .await
    .unwrap();
    assert!(n3.wait_for_peers(&trio.map(NodeId), WAIT).await);
    // A node with only the old material (no bundle) is refused by all.
    let n4 = Node::start(
        &spec(
            &cluster,
            4,
            &trio,
            &old.node_cert(NodeId(4)).unwrap(),
            &[old],
        ),
        NodeId(4),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(trio.iter().all(|&id| !n4.is_connected(NodeId(id))));
    assert!(nodes.iter().all(|n| !n.is_connected(NodeId(4))));

    let total = traffic.finish().await;
    let links_after: Vec<_> = nodes.iter().map(|n| link_counts(n, &trio)).collect();
    assert_eq!(
        links_after, links_before,
        "a link between nodes 0-2 went down"
    );
    println!(
        "CA rollover on 3 nodes: {total} messages across it, none lost, no link down, {:?}",
        started.elapsed()
    );
    for node in nodes.iter().chain([&n3, &n4]) {
        node.shutdown().await;
    }
}
