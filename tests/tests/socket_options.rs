//! The socket options of node links (issue 17, latency under load): every
//! runtime adapter's `connect` and `accept` hand the driver sockets with
//! `TCP_NODELAY` in effect (read back with
//! `getsockopt`, on both ends, on tokio, async-std and smol); and over real
//! TCP and mutual TLS, requests to one mailbox keep completing, within a
//! generous bound, while another thread floods another mailbox on the same
//! link, and the flood arrives whole and in order.

#![cfg(unix)]

use std::time::{Duration, Instant};

use reign_driver::Runtime;
use reign_tests::{capture_logs, shutdown_all, TestCluster};
use reign_tokio::SendError;

const WAIT: Duration = Duration::from_secs(30);

/// Checks one end of a node socket, as the adapter handed it over.
fn assert_tuned(socket: &impl std::os::fd::AsFd, what: &str) {
    let socket = socket2::SockRef::from(socket);
    assert!(socket.tcp_nodelay().unwrap(), "{what}: TCP_NODELAY is off");
}

/// Connects to a listener of runtime `R` and accepts, both through the
/// adapter, and returns (dialed reader, dialed writer, accepted reader,
/// accepted writer).
async fn pair<R: Runtime + Default>() -> (R::Reader, R::Writer, R::Reader, R::Writer) {
    let runtime = R::default();
    let listener = runtime.bind("127.0.0.1:0").await.unwrap();
    let address = R::local_addr(&listener).unwrap().to_string();
    let (dialed, accepted) =
        futures_lite::future::zip(runtime.connect(&address), R::accept(&listener)).await;
    let (dr, dw) = dialed.unwrap();
    let (ar, aw, _) = accepted.unwrap();
    (dr, dw, ar, aw)
}

#[tokio::test]
async fn tokio_node_sockets_have_the_options_on_both_ends() {
    let (dr, dw, ar, aw) = pair::<reign_tokio::Tokio>().await;
    assert_tuned(dr.as_ref(), "tokio dialed, reader");
    assert_tuned(dw.as_ref(), "tokio dialed, writer");
    assert_tuned(ar.as_ref(), "tokio accepted, reader");
    assert_tuned(aw.as_ref(), "tokio accepted, writer");
}

#[test]
fn async_std_node_sockets_have_the_options_on_both_ends() {
    async_std::task::block_on(async {
        let (dr, dw, ar, aw) = pair::<reign_async_std::AsyncStd>().await;
        assert_tuned(&dr, "async-std dialed, reader");
        assert_tuned(&dw, "async-std dialed, writer");
        assert_tuned(&ar, "async-std accepted, reader");
        assert_tuned(&aw, "async-std accepted, writer");
    });
}

#[test]
fn smol_node_sockets_have_the_options_on_both_ends() {
    smol::block_on(async {
        let (dr, dw, ar, aw) = pair::<reign_smol::Smol>().await;
        assert_tuned(&dr, "smol dialed, reader");
        assert_tuned(&dw, "smol dialed, writer");
        assert_tuned(&ar, "smol accepted, reader");
        assert_tuned(&aw, "smol accepted, writer");
    });
}

/// Requests measured while the flood runs.
const REQUESTS: usize = 50;

/// The longest one request under the flood may take. Generous on purpose
/// (the machine may be shared and loaded): on an idle link a request takes
/// tens of µs in a release build (a debug build on a loaded machine was
/// measured at up to 0.9 s), and the queues a request could wait behind
/// on this link (the lanes' time bound, the driver's write window, the
/// kernel's buffers) drain in well under a second.
const REQUEST_BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_complete_while_another_mailbox_on_the_link_is_flooded() {
    capture_logs();
    let nodes = TestCluster::new(2).start_all(Duration::from_secs(10)).await;
    let (flooded, flooded_box) = nodes[1].new_mailbox();
    let (service, service_box) = nodes[1].new_mailbox();
    let flooded = nodes[0].address_of(flooded.id());
    let service = nodes[0].address_of(service.id());
    tokio::spawn(async move {
        while let Ok(request) = service_box.recv_request().await {
            let _ = request.reply(());
        }
    });
    let flood_reader = tokio::spawn(async move {
        let mut next = 0u64;
        while let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_secs(5), flooded_box.recv()).await
        {
            assert_eq!(
                message.downcast::<u64>().expect("a u64"),
                next,
                "flood reordered"
            );
            next += 1;
        }
        next
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match flooded.send(sent) {
                    Ok(()) => sent += 1,
                    Err(SendError::Full) => std::thread::yield_now(),
                    Err(e) => panic!("flood: {e}"),
                }
            }
            (sent, started.elapsed())
        })
    };
    // Let the flood fill the queues first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut took = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let t = Instant::now();
        nodes[0]
            .request(&service, (), WAIT)
            .await
            .expect("a request under the flood");
        took.push(t.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, secs) = tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    assert_eq!(flood_reader.await.unwrap(), sent, "flood messages lost");
    took.sort();
    let (p50, worst) = (took[took.len() / 2], took[took.len() - 1]);
    println!(
        "{REQUESTS} requests under a flood of {sent} messages ({:.0} msg/s): p50 {p50:?}, worst {worst:?}",
        sent as f64 / secs.as_secs_f64()
    );
    assert!(
        worst < REQUEST_BOUND,
        "a request under the flood took {worst:?} (p50 {p50:?})"
    );
    shutdown_all(&nodes).await;
}
