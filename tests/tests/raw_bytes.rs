//! Raw byte messages and batches (issue 17): `Address::send_bytes` and
//! `send_bytes_batch` skip serde, and the receiver takes the same bytes
//! with `Message::into_bytes`. Over real TCP and rustls mutual TLS on
//! 127.0.0.1:
//!
//! - payloads of 0 and 1 bytes, one under, at and over the fragment size,
//!   and one under, at and over the maximum message size cross intact
//!   (over the maximum fails at once with `TooLarge`), on every runtime;
//! - a batch partly over the outbound queue's bound takes a prefix and
//!   says how many; the rest goes through when resent, in order, with
//!   nothing lost or repeated; a batch with a message over the maximum
//!   stops there;
//! - a batch to a local mailbox that fills up says how many it took;
//! - a batch to a node that is down is dropped and counted.

use std::time::Duration;

use bytes::Bytes;
use reign_driver::{Reign, Runtime};
use reign_proto::codec::frame::DATA_HEADER_LEN;
use reign_proto::codec::FRAGMENT_LEN;
use reign_tests::{eventually, on_every_runtime, TestCluster};
use reign_tokio::{BatchError, Capacity, Mailbox, Message, SendError, Tuning};

/// Generous: nothing here should take more than a fraction of it.
const WAIT: Duration = Duration::from_secs(30);
/// The maximum message size of these clusters: small enough that a
/// message at it crosses quickly, large enough to span many fragments.
const MAX_MESSAGE: usize = 3 << 20;
/// The outbound queue bound of the batch test: a few dozen messages.
const OUTBOUND: usize = 64 << 10;
/// The payload of the batch test's messages.
const BATCH_PAYLOAD: usize = 1000;

fn tuning() -> Tuning {
    Tuning {
        max_message_len: MAX_MESSAGE,
        ..Tuning::fast()
    }
}

/// `len` bytes that differ with their position and with `len`.
fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i.wrapping_mul(7) + len) as u8)
        .collect::<Vec<u8>>()
        .into()
}

async fn next_bytes<R: Runtime + Default>(mailbox: &Mailbox) -> Bytes {
    let msg: Message = reign_driver::recv_timeout(&R::default(), mailbox, WAIT)
        .await
        .expect("a message in time");
    assert!(msg.is_bytes(), "a raw message: {msg:?}");
    msg.into_bytes().expect("raw bytes")
}

async fn raw_bytes_cross_intact_at_every_edge<R: Runtime + Default>() {
    let cluster = TestCluster::with_tuning(2, tuning());
    let (a, b): (Reign<R>, Reign<R>) = cluster.pair_on::<R>(WAIT).await;
    let (sink, inbox) = b.new_mailbox();
    let to = a.address_of(sink.id());
    let lens = [
        0,
        1,
        FRAGMENT_LEN - 1,
        FRAGMENT_LEN,
        FRAGMENT_LEN + 1,
        MAX_MESSAGE - 1,
        MAX_MESSAGE,
        MAX_MESSAGE + 1,
    ];
    for len in lens {
        let payload = pattern(len);
        let sent = to.send_bytes(payload.clone());
        if len > MAX_MESSAGE {
            assert_eq!(
                sent,
                Err(SendError::TooLarge {
                    len,
                    max: MAX_MESSAGE
                })
            );
            continue;
        }
        sent.expect("taken");
        let got = next_bytes::<R>(&inbox).await;
        assert_eq!(got.len(), len);
        assert!(got == payload, "{len} bytes arrive unchanged");
        // The same bytes to a mailbox of the sending node.
        let (here, here_box) = a.new_mailbox();
        here.send_bytes(payload.clone()).expect("a local send");
        assert!(next_bytes::<R>(&here_box).await == payload);
    }
    // The batch form: every edge in one call, in order.
    let batch: Vec<Bytes> = lens[..lens.len() - 1].iter().map(|&l| pattern(l)).collect();
    to.send_bytes_batch(&batch).expect("all taken");
    for payload in &batch {
        assert!(next_bytes::<R>(&inbox).await == *payload);
    }
    assert_eq!(b.stats().dropped_unknown_type, 0);
    a.shutdown().await;
    b.shutdown().await;
}

on_every_runtime!(raw_bytes_cross_intact_at_every_edge);

/// Waits until nothing waits in node `from`'s queue to its peer.
fn queue_drained(from: &reign_tokio::Node) -> bool {
    eventually(WAIT, || {
        from.peer_stats()
            .iter()
            .all(|p| p.connected && p.queued_bytes == 0)
    })
}

/// The numbered payload `seq` of the batch test.
fn numbered(seq: u64) -> Bytes {
    let mut payload = vec![0x5a; BATCH_PAYLOAD];
    payload[..8].copy_from_slice(&seq.to_le_bytes());
    payload.into()
}

fn seq_of(bytes: &Bytes) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_outbound_bound_takes_a_prefix_and_says_how_many() {
    let cluster = TestCluster::with_tuning(
        2,
        Tuning {
            outbound_queue_bytes: OUTBOUND,
            ..tuning()
        },
    );
    let (a, b) = cluster.start_pair(WAIT).await;
    let (sink, inbox) = b.new_mailbox();
    let to = a.address_of(sink.id());
    let framed = BATCH_PAYLOAD + DATA_HEADER_LEN;
    let fit = OUTBOUND / framed;
    let mut next = 0u64;
    let mut expected = Vec::new();
    // Under, at and over the bound: a batch of `fit - 1` and of `fit`
    // messages is taken whole into an empty queue, one of `fit + 1` stops
    // after `fit`.
    for count in [fit - 1, fit, fit + 1] {
        assert!(queue_drained(&a), "the queue drains");
        let batch: Vec<Bytes> = (next..next + count as u64).map(numbered).collect();
        match to.send_bytes_batch(&batch) {
            Ok(()) => assert!(count <= fit, "{count} messages fit"),
            Err(BatchError { sent, error, .. }) => {
                assert_eq!((sent, error), (fit, SendError::Full));
                assert!(count > fit, "{count} messages do not fit");
                // The rest goes through once the queue drains.
                assert!(queue_drained(&a), "the queue drains");
                to.send_bytes_batch(&batch[sent..]).expect("the rest taken");
            }
        }
        expected.extend(next..next + count as u64);
        next += count as u64;
    }
    // A batch with a message over the maximum stops at it.
    assert!(queue_drained(&a), "the queue drains");
    let mut batch: Vec<Bytes> = (next..next + 3).map(numbered).collect();
    batch.insert(2, pattern(MAX_MESSAGE + 1));
    let err = to
        .send_bytes_batch(&batch)
        .expect_err("stops at the large one");
    assert_eq!(
        (err.sent, &err.error),
        (
            2,
            &SendError::TooLarge {
                len: MAX_MESSAGE + 1,
                max: MAX_MESSAGE
            }
        )
    );
    assert!(err.to_string().contains("after 2 messages"));
    assert!(std::error::Error::source(&err).is_some());
    expected.extend(next..next + 2);
    for want in expected {
        let got = next_bytes::<reign_tokio::Tokio>(&inbox).await;
        assert_eq!(seq_of(&got), want, "in order, nothing lost or repeated");
    }
    // Nothing after the refused message was sent.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(inbox.message_count(), 0);
    let peer = a.peer_stats().into_iter().next().expect("one peer");
    assert_eq!(peer.dropped_full, 1, "one refused batch counted once");
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn a_batch_into_a_full_local_mailbox_says_how_many_it_took() {
    let node = reign_proto::Node::local(reign_proto::Incarnation(1));
    let (addr, mailbox) = node.new_mailbox_with_capacity(Capacity::messages(3));
    let batch: Vec<Bytes> = (0..5u64).map(numbered).collect();
    let err = addr.send_bytes_batch(&batch).expect_err("over capacity");
    assert_eq!((err.sent, err.error), (3, SendError::Full));
    for want in 0..3 {
        let msg = mailbox.try_recv().expect("open").expect("a message");
        assert_eq!(seq_of(&msg.into_bytes().expect("raw")), want);
    }
    assert!(addr.send_bytes_batch(&[]).is_ok(), "an empty batch is Ok");
    // A raw message is no other type, and other types are not raw.
    addr.send_bytes(Bytes::new()).expect("room again");
    addr.send(7u64).expect("room");
    let raw = mailbox.try_recv().unwrap().unwrap();
    assert!(raw.is_bytes() && !raw.is::<u64>());
    let other = mailbox.try_recv().unwrap().unwrap();
    assert!(!other.is_bytes());
    assert!(other.into_bytes().is_err());
}

/// A batch to a node that is down is dropped and counted, as a `send` to
/// it is (at most once: `Ok`), and a message over the maximum in it is
/// still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_to_a_down_node_is_dropped_and_counted() {
    let cluster = TestCluster::with_tuning(2, tuning());
    let (a, b) = cluster.start_pair(WAIT).await;
    let (sink, _inbox) = b.new_mailbox();
    let to = a.address_of(sink.id());
    b.shutdown().await;
    assert!(
        eventually(WAIT, || a.peer_stats().iter().all(|p| !p.connected)),
        "node 0 sees node 1 go"
    );
    let before = a.stats().dropped_unreachable;
    let batch: Vec<Bytes> = (0..5u64).map(numbered).collect();
    to.send_bytes_batch(&batch).expect("dropped, not refused");
    assert_eq!(a.stats().dropped_unreachable, before + 5);
    let mut with_large = batch.clone();
    with_large.insert(3, pattern(MAX_MESSAGE + 1));
    let err = to.send_bytes_batch(&with_large).expect_err("too large");
    assert_eq!(err.sent, 3);
    assert!(matches!(err.error, SendError::TooLarge { .. }));
    assert_eq!(a.stats().dropped_unreachable, before + 8);
    a.shutdown().await;
}
