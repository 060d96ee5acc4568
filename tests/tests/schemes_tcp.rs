//! The messaging schemes on a 3-node cluster over real TCP and TLS (tokio):
//! request/reply, broadcast, publish/subscribe, tunnels and limits.

use std::time::{Duration, Instant};

use reign_tests::{capture_logs, recv_as, shutdown_all, sync_all, TestCluster};
use reign_tokio::{Limits, Mailbox, MailboxExt, Node, RequestError, TunnelError};

const WAIT: Duration = Duration::from_secs(10);

async fn cluster(n: u16) -> Vec<Node> {
    capture_logs();
    reign_tokio::register_type::<(u64, u16)>().unwrap();
    TestCluster::new(n).start_all(WAIT).await
}

/// A member that answers `n` with `(n + 1, its node id)` until its mailbox closes.
fn echo_member(node: &Node, service: &str) {
    let (addr, mailbox) = node.new_mailbox();
    node.join(service, &addr).unwrap();
    let id = node.id().0;
    tokio::spawn(async move {
        while let Ok(request) = mailbox.recv_request().await {
            let (msg, responder) = request.into_parts();
            match msg.downcast::<u64>() {
                Ok(n) => {
                    let _ = responder.reply((n + 1, id));
                }
                Err(_) => {
                    let _ = responder.reply_error("expected a u64");
                }
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_are_answered_by_both_members() {
    let nodes = cluster(3).await;
    echo_member(&nodes[1], "echo");
    echo_member(&nodes[2], "echo");
    sync_all(&nodes, WAIT).await;
    let mut by_node = [0u32; 3];
    let mut handles = Vec::new();
    for i in 0..1000u64 {
        let n0 = nodes[0].clone();
        handles.push(tokio::spawn(async move {
            (i, n0.request("echo", i, WAIT).await)
        }));
    }
    for h in handles {
        let (i, reply) = h.await.unwrap();
        let (x, by): (u64, u16) = reply.unwrap().downcast().unwrap();
        assert_eq!(x, i + 1);
        by_node[by as usize] += 1;
    }
    assert_eq!(by_node, [0, 500, 500]);
    // An application error, typed as such.
    let err = nodes[0]
        .request("echo", String::from("not a number"), WAIT)
        .await
        .unwrap_err();
    assert_eq!(err, RequestError::Remote("expected a u64".into()));
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_empty_groups_late_replies_and_shutdown_are_typed() {
    let nodes = cluster(2).await;
    assert_eq!(
        nodes[0].request("nobody", 1u64, WAIT).await.unwrap_err(),
        RequestError::NoMember
    );

    let (m, m_box) = nodes[1].new_mailbox();
    nodes[1].join("silent", &m).unwrap();
    sync_all(&nodes, WAIT).await;
    let started = Instant::now();
    let err = nodes[0]
        .request("silent", 1u64, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(err, RequestError::Timeout);
    assert!(started.elapsed() >= Duration::from_millis(200));
    // The late reply is dropped and counted, never delivered elsewhere.
    let late = m_box.recv_request().await.unwrap();
    late.reply(5u64).unwrap();
    let n0 = nodes[0].clone();
    assert!(reign_tests::eventually(WAIT, move || n0
        .stats()
        .late_replies
        == 1));

    // The caller's node shuts down while waiting.
    let n0 = nodes[0].clone();
    let waiting = tokio::spawn(async move { n0.request("silent", 2u64, WAIT).await });
    let _held = m_box.recv_request().await.unwrap();
    nodes[0].shutdown().await;
    assert_eq!(waiting.await.unwrap().unwrap_err(), RequestError::Closed);
    shutdown_all(nodes).await;
}

async fn drain<T: serde::de::DeserializeOwned + 'static>(mailbox: &Mailbox, n: usize) -> Vec<T> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(recv_as::<T>(mailbox, WAIT).await);
    }
    assert!(
        mailbox
            .recv_timeout(Duration::from_millis(50))
            .await
            .is_err(),
        "more than expected"
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_and_pubsub_reach_everyone_once_in_order() {
    let nodes = cluster(3).await;
    let mut members = Vec::new();
    let mut subscribers = Vec::new();
    for node in &nodes {
        let (m, m_box) = node.new_mailbox();
        node.join("all", &m).unwrap();
        members.push(m_box);
        let (s, s_box) = node.new_mailbox();
        node.subscribe("news", &s).unwrap();
        subscribers.push((s, s_box));
    }
    sync_all(&nodes, WAIT).await;
    for i in 0..100u32 {
        nodes[0].broadcast("all", i).unwrap();
        nodes[2].publish("news", i).unwrap();
    }
    for m_box in &members {
        assert_eq!(drain::<u32>(m_box, 100).await, (0..100).collect::<Vec<_>>());
    }
    for (_, s_box) in &subscribers {
        assert_eq!(drain::<u32>(s_box, 100).await, (0..100).collect::<Vec<_>>());
    }
    let (s1, s1_box) = &subscribers[1];
    nodes[1].unsubscribe("news", s1).unwrap();
    sync_all(&nodes, WAIT).await;
    nodes[2].publish("news", 7u32).unwrap();
    assert_eq!(drain::<u32>(&subscribers[0].1, 1).await, vec![7]);
    assert!(s1_box
        .recv_timeout(Duration::from_millis(100))
        .await
        .is_err());
    assert!(nodes[1].unsubscribe("news", s1).is_err());
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_through_a_tunnel_to_a_slow_reader() {
    let nodes = cluster(2).await;
    let (m, m_box) = nodes[1].new_mailbox();
    nodes[1].join("files", &m).unwrap();
    sync_all(&nodes, WAIT).await;
    let server_node = nodes[1].clone();
    let reader = tokio::spawn(async move {
        let incoming = m_box.recv_tunnel().await.unwrap();
        let tunnel = server_node.accept_tunnel(incoming).unwrap();
        let mut total = 0usize;
        let mut index = 0u8;
        loop {
            match tunnel.recv(WAIT).await {
                Ok(message) => {
                    assert!(
                        message.iter().all(|&b| b == index),
                        "message {index} out of order"
                    );
                    total += message.len();
                    index = index.wrapping_add(1);
                    // A slow reader.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(TunnelError::Closed) => return total,
                Err(e) => panic!("{e}"),
            }
        }
    });
    let tunnel = nodes[0].tunnel("files", WAIT).await.unwrap();
    let window = tunnel.inner().window();
    let mut max_unacked = 0;
    for i in 0..64u8 {
        tunnel.send(vec![i; 1 << 20], WAIT).await.unwrap();
        max_unacked = max_unacked.max(tunnel.inner().unacknowledged_bytes());
    }
    assert!(
        max_unacked <= window,
        "{max_unacked} bytes in flight over a {window} byte window"
    );
    tunnel.close();
    assert_eq!(reader.await.unwrap(), 64 << 20);
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_sees_the_other_node_go_away() {
    let nodes = cluster(2).await;
    let (m, m_box) = nodes[1].new_mailbox();
    nodes[1].join("svc", &m).unwrap();
    sync_all(&nodes, WAIT).await;
    let server_node = nodes[1].clone();
    let accepted = tokio::spawn(async move {
        let incoming = m_box.recv_tunnel().await.unwrap();
        server_node.accept_tunnel(incoming).unwrap()
    });
    let client = nodes[0].tunnel("svc", WAIT).await.unwrap();
    let server = accepted.await.unwrap();
    server.send(&b"hello"[..], WAIT).await.unwrap();
    assert_eq!(&client.recv(WAIT).await.unwrap()[..], b"hello");
    nodes[1].shutdown().await;
    let err = client.recv(WAIT).await.unwrap_err();
    assert!(
        matches!(err, TunnelError::Unreachable | TunnelError::Closed),
        "{err}"
    );
    assert!(server.recv(WAIT).await.is_err());
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_a_members_caps_is_refused_with_bounded_memory() {
    let nodes = cluster(2).await;
    let (m, m_box) = nodes[1].new_mailbox();
    let limits = Limits {
        max_in_flight: 4,
        max_queued_bytes: 256 * 1024,
    };
    nodes[1].join_with_limits("busy", &m, limits).unwrap();
    sync_all(&nodes, WAIT).await;
    let payload = serde_bytes::ByteBuf::from(vec![1u8; 1024]);
    let mut handles = Vec::new();
    for _ in 0..2000 {
        let n0 = nodes[0].clone();
        let p = payload.clone();
        handles.push(tokio::spawn(async move {
            n0.request("busy", p, Duration::from_secs(2)).await
        }));
    }
    let mut refused = 0;
    let mut timed_out = 0;
    for h in handles {
        match h.await.unwrap() {
            Err(RequestError::Refused(_)) => refused += 1,
            Err(RequestError::Timeout) => timed_out += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // What the member holds stays within its caps; the rest was refused.
    assert_eq!(m_box.message_count(), 4);
    assert!(refused >= 2000 - 4 - 256, "only {refused} refused");
    assert_eq!(refused + timed_out, 2000);
    assert_eq!(nodes[1].stats().refused_requests, refused as u64);
    shutdown_all(nodes).await;
}
