//! Issue 21, item 4: the typed layer over the dynamic core, between two
//! nodes over real TCP and mutual TLS. A typed call gets its reply type; a
//! reply of another type is `UnexpectedReply`, one that cannot cross the
//! wire reaches the caller as an error at once (not as a timeout); a typed
//! address travels inside a message like an address; a request of another
//! type is handed back untouched.

use std::time::{Duration, Instant};

use reign_tests::{capture_logs, shutdown_all, sync_all, TestCluster};
use reign_tokio::{Call, Node, Request, RequestError, TypedAddress};

/// Generous: nothing here should take more than a fraction of it.
const WAIT: Duration = Duration::from_secs(60);

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Double(u64);

impl Call for Double {
    type Reply = u64;
}

/// Claims a `u64` reply; the member below answers it with a `String`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Liar;

impl Call for Liar {
    type Reply = u64;
}

/// Its member answers with a type nobody registered.
#[derive(serde::Serialize, serde::Deserialize)]
struct Unsendable;

impl Call for Unsendable {
    type Reply = NotRegistered;
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct NotRegistered(u8);

/// A message carrying a typed address back to its sender.
#[derive(serde::Serialize, serde::Deserialize)]
struct ReplyTo(TypedAddress<u64>);

fn register() {
    let _ = reign_tokio::register_type_named::<Double>("typed.Double");
    let _ = reign_tokio::register_type_named::<Liar>("typed.Liar");
    let _ = reign_tokio::register_type_named::<Unsendable>("typed.Unsendable");
    let _ = reign_tokio::register_type_named::<ReplyTo>("typed.ReplyTo");
}

/// Node 1's member of "typed": answers each kind as described above.
fn serve(node: &Node) {
    let (member, requests) = node.new_mailbox();
    node.join("typed", &member).unwrap();
    tokio::spawn(async move {
        while let Ok(request) = requests.recv_request().await {
            let request = match request.into_call::<Double>() {
                Ok((Double(n), reply)) => {
                    reply.reply(n * 2).unwrap();
                    continue;
                }
                Err(request) => request,
            };
            let request: Request = match request.into_call::<Liar>() {
                Ok((Liar, reply)) => {
                    // Through the untyped responder: the compiler would
                    // refuse a String on the typed one.
                    reply.into_untyped().reply(String::from("lie")).unwrap();
                    continue;
                }
                Err(request) => request,
            };
            match request.into_call::<Unsendable>() {
                Ok((Unsendable, reply)) => {
                    let e = reply.reply(NotRegistered(1)).expect_err("unregistered");
                    assert!(e.to_string().contains("not registered"), "{e}");
                }
                Err(other) => {
                    // Not one of ours: the request comes back whole.
                    assert!(other.message().is::<String>());
                    other.reply_error("unknown request").unwrap();
                }
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_calls_and_addresses_across_two_nodes() {
    capture_logs();
    register();
    let nodes = TestCluster::new(2).start(&[0, 1], WAIT).await;
    serve(&nodes[1]);
    sync_all(&nodes, WAIT).await;

    // The right types: the reply arrives as the call's reply type.
    let doubled: u64 = nodes[0].call("typed", Double(21), WAIT).await.unwrap();
    assert_eq!(doubled, 42);

    // A reply of another type: a typed error naming both types.
    let e = nodes[0].call("typed", Liar, WAIT).await.unwrap_err();
    assert_eq!(
        e,
        RequestError::UnexpectedReply {
            expected: "u64",
            found: "string"
        }
    );

    // A reply that cannot cross the wire: the caller hears why at once.
    let started = Instant::now();
    let e = nodes[0].call("typed", Unsendable, WAIT).await.unwrap_err();
    let elapsed = started.elapsed();
    println!("an unsendable reply failed the call in {elapsed:?}: {e}");
    assert!(
        matches!(&e, RequestError::Remote(why) if why.contains("could not be sent")),
        "{e:?}"
    );
    assert!(elapsed < WAIT / 2, "an error, not the timeout");

    // An untyped request of another type is handed back whole.
    let e = nodes[0]
        .request("typed", String::from("?"), WAIT)
        .await
        .unwrap_err();
    assert_eq!(e, RequestError::Remote("unknown request".into()));

    // A typed address inside a message: node 1 answers through it.
    let (back, inbox) = nodes[0].new_typed_mailbox::<u64>();
    let (relay, relay_inbox) = nodes[1].new_mailbox();
    nodes[0]
        .address_of(relay.id())
        .send(ReplyTo(back.clone()))
        .unwrap();
    let ReplyTo(to) = relay_inbox.recv_type::<ReplyTo>().await.unwrap();
    assert_eq!(to.id(), back.id());
    to.send(7).unwrap();
    let got = tokio::time::timeout(WAIT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, 7);
    shutdown_all(&nodes).await;
}
