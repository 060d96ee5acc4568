//! Issue 21, item 1: a mailbox is a `futures::Stream`, cancel-safe, and a
//! tunnel is a byte stream (`Tunnel::into_io`) that `tokio::io::copy`, a
//! `BufReader`'s lines, the futures-io traits and a rustls session (TLS
//! inside the tunnel) use as they would a socket. Two nodes over real TCP and mutual TLS; every abandoned poll is
//! checked to lose nothing.

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use reign_tests::{capture_logs, shutdown_all, sync_all, TestCluster};
use reign_tokio::{Mailbox, Node, Tuning, TunnelIo};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Generous: nothing here should take more than a fraction of it.
const WAIT: Duration = Duration::from_secs(60);

/// Two connected nodes on tokio with a small tunnel window (so every
/// transfer below spans many windows and waits for credit).
async fn pair(window: usize) -> Vec<Node> {
    capture_logs();
    let tuning = Tuning {
        tunnel_window: window,
        ..Tuning::fast()
    };
    TestCluster::with_tuning(2, tuning)
        .start(&[0, 1], WAIT)
        .await
}

/// A byte stream from node 0 to a member of `group` on node 1, with the
/// member's end.
async fn io_pair(nodes: &[Node], group: &str) -> (TunnelIo, TunnelIo) {
    let (member, requests) = nodes[1].new_mailbox();
    nodes[1].join(group, &member).unwrap();
    sync_all(nodes, WAIT).await;
    let accept = async {
        let incoming = requests.recv_tunnel().await.unwrap();
        nodes[1].accept_tunnel(incoming).unwrap()
    };
    let (client, server) = tokio::join!(nodes[0].tunnel(group, WAIT), accept);
    // The member mailbox may go: an accepted tunnel lives on its own.
    drop(requests);
    (client.unwrap().into_io(), server.into_io())
}

/// Bytes whose value depends on their position, so a byte lost, doubled or
/// reordered shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(131) >> 3) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_io_copy_moves_a_file_through_a_tunnel() {
    let nodes = pair(64 * 1024).await;
    let (mut client, mut server) = io_pair(&nodes, "files").await;
    // 4 MiB through a 64 KiB window: 64 windows, each waiting for credit.
    let data = pattern(4 << 20);
    let started = Instant::now();
    let sender = {
        let data = data.clone();
        tokio::spawn(async move {
            let copied = tokio::io::copy(&mut &data[..], &mut client).await.unwrap();
            client.shutdown().await.unwrap();
            copied
        })
    };
    let mut received = Vec::new();
    let read = tokio::time::timeout(WAIT, server.read_to_end(&mut received))
        .await
        .expect("the copy finishes")
        .expect("a clean end of stream");
    let copied = sender.await.unwrap();
    let elapsed = started.elapsed();
    println!(
        "copied {copied} bytes through a tunnel in {elapsed:?} ({:.1} MiB/s)",
        copied as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(copied as usize, data.len());
    assert_eq!(read, data.len());
    assert!(received == data, "the bytes arrive whole and in order");
    // After the end of the stream, reads stay at the end.
    assert_eq!(server.read(&mut [0u8; 16]).await.unwrap(), 0);
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_server_and_a_line_codec_over_a_tunnel() {
    let nodes = pair(4096).await;
    let (client, server) = io_pair(&nodes, "echo").await;
    // The member echoes every byte back with tokio::io::copy on its halves.
    let echo = tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(server);
        tokio::io::copy(&mut r, &mut w).await
    });
    let (r, mut w) = tokio::io::split(client);
    let mut lines = BufReader::new(r).lines();
    // Lines around the window (4096) and a piece, written in one go each.
    let sent: Vec<String> = [0usize, 1, 4095, 4096, 4097, 20_000, 65_536]
        .iter()
        .map(|&n| "x".repeat(n))
        .collect();
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for line in &sent {
                w.write_all(line.as_bytes()).await.unwrap();
                w.write_all(b"\n").await.unwrap();
            }
            w
        })
    };
    for expected in &sent {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("not the end");
        assert_eq!(line.len(), expected.len());
    }
    let mut w = writer.await.unwrap();
    w.shutdown().await.unwrap();
    // The echo ends when its read side ends: our shutdown closed the tunnel.
    let echoed = tokio::time::timeout(WAIT, echo)
        .await
        .expect("echo ends")
        .unwrap();
    println!("echo task ended with {echoed:?}");
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_read_takes_nothing_and_futures_io_works_too() {
    let nodes = pair(4096).await;
    let (mut client, mut server) = io_pair(&nodes, "abandon").await;
    // Reads given up while nothing has arrived (timeouts, dropped futures).
    for _ in 0..5 {
        let mut buf = [0u8; 8];
        assert!(
            tokio::time::timeout(Duration::from_millis(20), server.read(&mut buf))
                .await
                .is_err(),
            "nothing was sent yet"
        );
    }
    // A write through the futures-io traits, read in small tokio reads: the
    // message is handed out across reads, nothing lost between them.
    futures_lite::io::AsyncWriteExt::write_all(&mut client, b"hello, tunnel")
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 13 {
        let mut buf = [0u8; 4];
        let n = tokio::time::timeout(WAIT, server.read(&mut buf))
            .await
            .expect("data in time")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
        // Between small reads, the rest waits in the byte stream.
        assert_eq!(server.buffered(), 13 - got.len());
    }
    assert_eq!(got, b"hello, tunnel");
    // A close by the writer is the end of the stream for the reader, and a
    // write after a close is an error carrying the TunnelError.
    futures_lite::io::AsyncWriteExt::close(&mut client)
        .await
        .unwrap();
    let mut rest = Vec::new();
    let n = futures_lite::io::AsyncReadExt::read_to_end(&mut server, &mut rest)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let e = client.write_all(b"late").await.expect_err("closed");
    assert!(
        e.get_ref().is_some(),
        "the io::Error carries the tunnel error"
    );
    shutdown_all(&nodes).await;
}

/// Receives `n` u64s from `mailbox` as a stream, giving up the `next()`
/// future every few milliseconds (a `select!` with a timer that wins).
async fn drain_with_cancels(mailbox: &Mailbox, n: usize) -> (Vec<u64>, usize) {
    let mut stream = mailbox;
    let mut got = Vec::with_capacity(n);
    let mut abandoned = 0;
    let deadline = Instant::now() + WAIT;
    while got.len() < n && Instant::now() < deadline {
        tokio::select! {
            msg = stream.next() => got.push(msg.expect("open").downcast::<u64>().unwrap()),
            () = tokio::time::sleep(Duration::from_micros(200)) => abandoned += 1,
        }
    }
    (got, abandoned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_stream_loses_nothing_to_abandoned_polls() {
    let nodes = pair(64 * 1024).await;
    // Local and remote senders: the same stream, the same promise.
    for sender in [0usize, 1] {
        let (addr, mailbox) = nodes[1].new_mailbox();
        const N: u64 = 20_000;
        let from = nodes[sender].clone();
        let remote_addr = if sender == 1 {
            addr.clone()
        } else {
            from.address_of(addr.id())
        };
        let producer = tokio::spawn(async move {
            for i in 0..N {
                while remote_addr.send(i).is_err() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if i % 500 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        let (got, abandoned) = drain_with_cancels(&mailbox, N as usize).await;
        producer.await.unwrap();
        println!(
            "sender on node {sender}: {} messages through the stream, {abandoned} polls abandoned",
            got.len()
        );
        assert_eq!(got, (0..N).collect::<Vec<_>>(), "all, once, in order");
        assert!(abandoned > 0, "some polls were abandoned");
        // The stream ends when the mailbox closes.
        mailbox.close();
        assert!((&mailbox).next().await.is_none());
    }
    shutdown_all(&nodes).await;
}

#[tokio::test]
async fn a_dropped_next_future_leaves_the_message_for_the_next_one() {
    let node = Node::local();
    let (addr, mut mailbox) = node.new_mailbox();
    {
        // Polled once (pending), then dropped.
        let next = mailbox.next();
        assert!(tokio::time::timeout(Duration::from_millis(10), next)
            .await
            .is_err());
    }
    addr.send(7u32).unwrap();
    let msg = tokio::time::timeout(WAIT, mailbox.next())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(msg.downcast::<u32>().unwrap(), 7);
    assert_eq!(mailbox.message_count(), 0);
}

#[tokio::test]
async fn a_tunnel_on_a_node_without_network_carries_bytes() {
    // A local node (Go reign's NoClustering) tunnels between its own
    // mailboxes with the default maximum message length.
    let node = Node::local();
    let (member, offers) = node.new_mailbox();
    node.join("local", &member).unwrap();
    let accept = async {
        let incoming = offers.recv_tunnel().await.unwrap();
        node.accept_tunnel(incoming).unwrap()
    };
    let (client, server) = tokio::join!(node.tunnel("local", WAIT), accept);
    let (mut client, mut server) = (client.unwrap().into_io(), server.into_io());
    let data = pattern(300_000);
    let writer = tokio::spawn(async move {
        client.write_all(&data).await.unwrap();
        client.shutdown().await.unwrap();
        data
    });
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, server.read_to_end(&mut got))
        .await
        .expect("in time")
        .unwrap();
    assert!(got == writer.await.unwrap());
}

#[test]
fn futures_io_copy_through_a_tunnel_on_smol() {
    // The async-std/smol way: futures-io traits, futures_lite::io::copy.
    smol::block_on(async {
        capture_logs();
        let cluster = TestCluster::new(2);
        let (a, b) = cluster.pair_on::<reign_smol::Smol>(WAIT).await;
        let (member, offers) = b.new_mailbox();
        b.join("smol-files", &member).unwrap();
        a.sync().await;
        b.sync().await;
        let accept = async {
            let incoming = offers.recv_tunnel().await.unwrap();
            b.accept_tunnel(incoming).unwrap()
        };
        let (client, server) =
            futures_lite::future::zip(a.tunnel("smol-files", WAIT), accept).await;
        let (mut client, mut server) = (client.unwrap().into_io(), server.into_io());
        let data = pattern(1 << 20);
        let sent = data.clone();
        let writer = smol::spawn(async move {
            let n = futures_lite::io::copy(&mut &sent[..], &mut client)
                .await
                .unwrap();
            futures_lite::io::AsyncWriteExt::close(&mut client)
                .await
                .unwrap();
            n
        });
        let mut got = Vec::new();
        futures_lite::io::AsyncReadExt::read_to_end(&mut server, &mut got)
            .await
            .unwrap();
        assert_eq!(writer.await as usize, data.len());
        assert!(got == data, "the bytes arrive whole and in order");
        a.shutdown().await;
        b.shutdown().await;
    });
}

/// TLS inside a tunnel: a rustls client and server (tokio-rustls), with a
/// CA and a certificate of their own, handshake and talk over a
/// `TunnelIo`, which itself runs inside the nodes' mutual-TLS link. The
/// tunnel is only a byte stream to them, as a TCP socket would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_runs_inside_a_tunnel() {
    use std::sync::Arc;

    use reign_proto::certgen::ClusterCa;
    use reign_proto::tls::node_dns_name;
    use reign_tokio::NodeId;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let nodes = pair(16 * 1024).await;
    let (client_io, server_io) = io_pair(&nodes, "tls").await;

    // The inner TLS has nothing to do with the cluster's: its own CA.
    let ca = ClusterCa::generate_named("inner").unwrap();
    let leaf = ca.node_cert(NodeId(7)).unwrap();
    let certs = vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let client_config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let name = ServerName::try_from(node_dns_name(NodeId(7))).unwrap();

    // 1 MiB there, its reversal back: both directions cross both TLS layers.
    let data = pattern(1 << 20);
    let server = {
        let len = data.len();
        tokio::spawn(async move {
            let mut tls = acceptor.accept(server_io).await.expect("inner handshake");
            let mut got = vec![0u8; len];
            tls.read_exact(&mut got).await.unwrap();
            got.reverse();
            tls.write_all(&got).await.unwrap();
            tls.flush().await.unwrap();
            // Wait for the client's close_notify before going.
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest).await;
            rest.len()
        })
    };
    let started = Instant::now();
    let mut tls = tokio::time::timeout(WAIT, connector.connect(name, client_io))
        .await
        .expect("the inner handshake in time")
        .expect("the inner handshake");
    let protocol = tls.get_ref().1.protocol_version();
    tls.write_all(&data).await.unwrap();
    tls.flush().await.unwrap();
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(WAIT, tls.read_exact(&mut back))
        .await
        .expect("the reply in time")
        .unwrap();
    let elapsed = started.elapsed();
    let mut expected = data.clone();
    expected.reverse();
    assert!(back == expected, "the bytes cross both TLS layers whole");
    tls.shutdown().await.unwrap();
    let trailing = tokio::time::timeout(WAIT, server)
        .await
        .expect("the server ends")
        .unwrap();
    assert_eq!(trailing, 0, "nothing after the reply");
    println!("TLS ({protocol:?}) inside a tunnel: handshake and 2 × 1 MiB in {elapsed:?}");
    shutdown_all(&nodes).await;
}
