//! `Reign::serve_relay` on every runtime (tokio, async-std, smol), with a
//! raw Iris client on real sockets: the relay refuses a non-loopback
//! address unless allowed, and Iris clients and reign's own services talk
//! both ways (an Iris client calls a reign member, which gets an
//! `IrisRequest` and answers with bytes; a reign caller calls an Iris
//! service with bytes, and the service is handed the time remaining). Stopping the relay closes its clients with a reason.

use std::time::Duration;

use reign_driver::relay::{IrisRequest, RelayError, RelayOptions};
use reign_driver::{Reign, Runtime};
use reign_proto::NodeId;
use reign_tests::iris::Raw;
use reign_tests::TestCluster;
use serde_bytes::ByteBuf;

const WAIT: Duration = Duration::from_secs(10);

/// What the Iris side of the exchange does, on a thread of its own.
fn iris_side(port: u16, started: async_channel::Sender<()>) {
    // An Iris service, member of "iris-svc", and a plain client.
    let mut service = Raw::attach(port, "iris-svc");
    let mut client = Raw::attach(port, "");
    started.send_blocking(()).unwrap();

    // The client calls reign's own member of "native".
    client.request(0, "native", b"shout", 5000);
    assert_eq!(client.expect_reply(0), Some(Ok(b"SHOUT".to_vec())));

    // A reign caller's request reaches the Iris service with the time
    // remaining as its timeout.
    let (id, body, timeout) = service.expect_request();
    assert_eq!(body, b"from reign");
    assert!((1..=10_000).contains(&timeout), "{timeout}");
    service.reply(id, Ok(b"from iris"));

    // Then the relay stops: both get opClose with its reason.
    for raw in [&mut service, &mut client] {
        assert_eq!(raw.expect_dropped(), "the relay stopped");
    }
}

async fn relay_on<R: Runtime>(node: Reign<R>) {
    let public = node
        .serve_relay("0.0.0.0:0".parse().unwrap(), RelayOptions::default())
        .await;
    assert!(
        matches!(public, Err(RelayError::NotLoopback(_))),
        "{public:?}"
    );

    let relay = node
        .serve_relay("127.0.0.1:0".parse().unwrap(), RelayOptions::default())
        .await
        .unwrap();
    let port = relay.local_addr().port();

    let (address, mailbox) = node.new_mailbox();
    node.join("native", &address).unwrap();

    let (started_tx, started) = async_channel::bounded(1);
    let (done_tx, done) = async_channel::bounded::<std::thread::Result<()>>(1);
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(|| iris_side(port, started_tx));
        let _ = done_tx.send_blocking(outcome);
    });
    started.recv().await.unwrap();
    assert_eq!(relay.clients(), 2);

    // reign's member answers the Iris client.
    let request = mailbox.recv_request().await.unwrap();
    let (message, responder) = request.into_parts();
    // An Iris client's request carries its original timeout.
    let asked: IrisRequest = message.downcast().unwrap();
    assert_eq!(asked.timeout_ms, 5000);
    responder
        .reply(ByteBuf::from(asked.payload.to_ascii_uppercase()))
        .unwrap();

    // A reign caller asks the Iris service.
    let reply = node
        .request("iris-svc", ByteBuf::from(&b"from reign"[..]), WAIT)
        .await
        .unwrap();
    assert_eq!(
        reply.downcast::<ByteBuf>().unwrap().as_slice(),
        b"from iris"
    );

    relay.stop();
    if let Err(panic) = done.recv().await.unwrap() {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(relay.dropped_clients(), 2);
}

/// The relay on runtime `R`: refused on a public address, then both ways
/// between an Iris client and reign's own members, then stopped.
async fn a_relay_serves<R: Runtime + Default>() {
    let cluster = TestCluster::new(1);
    let node = Reign::<R>::start(&cluster.spec(NodeId(0)), NodeId(0))
        .await
        .unwrap();
    relay_on(node.clone()).await;
    node.shutdown().await;
}

reign_tests::on_every_runtime!(a_relay_serves);

#[test]
fn a_node_shutting_down_closes_its_relay_clients_with_the_reason() {
    let cluster = TestCluster::new(1);
    let rt = reign_tests::tokio_runtime(2);
    rt.block_on(async {
        let node = reign_tokio::Node::start(&cluster.spec(NodeId(0)), NodeId(0))
            .await
            .unwrap();
        let relay = node
            .serve_relay("127.0.0.1:0".parse().unwrap(), RelayOptions::default())
            .await
            .unwrap();
        let port = relay.local_addr().port();
        let (attached_tx, attached) = async_channel::bounded(1);
        let (done_tx, done) = async_channel::bounded::<std::thread::Result<()>>(1);
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(|| {
                // A service (its binding would run HandleDrop) and a client.
                let mut service = Raw::attach(port, "svc");
                let mut client = Raw::attach(port, "");
                attached_tx.send_blocking(()).unwrap();
                for raw in [&mut service, &mut client] {
                    assert_eq!(raw.expect_dropped(), "the node is shutting down");
                }
            });
            let _ = done_tx.send_blocking(outcome);
        });
        attached.recv().await.unwrap();
        node.shutdown().await;
        if let Err(panic) = done.recv().await.unwrap() {
            std::panic::resume_unwind(panic);
        }
        drop(relay);
    });
}
