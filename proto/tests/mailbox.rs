//! Local mailbox behaviour: ordering, selective receive, close, watchers,
//! bounds, blocking receive, concurrency and address binding.

use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_lite::future::block_on;
use reign_proto::{
    Address, Capacity, ExitReason, Incarnation, MailboxClosed, Message, Node, RecvError, SendError,
};

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    (counter.clone(), Waker::from(counter))
}

fn node() -> Node {
    Node::local(Incarnation(1))
}

#[test]
fn messages_arrive_in_send_order() {
    let node = node();
    let (addr, mailbox) = node.new_mailbox();
    for i in 0..100u32 {
        addr.send(i).unwrap();
    }
    assert_eq!(mailbox.message_count(), 100);
    for i in 0..100u32 {
        let got = mailbox
            .try_recv()
            .unwrap()
            .unwrap()
            .downcast::<u32>()
            .unwrap();
        assert_eq!(got, i);
    }
    assert!(mailbox.try_recv().unwrap().is_none());
}

#[test]
fn messages_test_and_downcast_by_type() {
    let node = node();
    let (addr, mailbox) = node.new_mailbox();
    addr.send(String::from("x")).unwrap();
    let msg = mailbox.try_recv().unwrap().unwrap();
    assert!(msg.is::<String>());
    assert!(!msg.is::<u32>());
    assert_eq!(msg.downcast_ref::<String>().map(String::as_str), Some("x"));
    assert_eq!(msg.type_name(), Some("string"));
    let msg = msg.downcast::<u32>().unwrap_err();
    let err = msg.try_downcast::<u8>().unwrap_err();
    assert!(err.reason.is_none());
    assert_eq!(err.message.downcast::<String>().unwrap(), "x");
}

#[test]
fn close_during_pending_recv_wakes_with_closed() {
    let node = node();
    let (_addr, mailbox) = node.new_mailbox();
    let (count, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut recv = pin!(mailbox.recv());
    assert!(recv.as_mut().poll(&mut cx).is_pending());
    mailbox.close();
    assert_eq!(
        count.0.load(Ordering::SeqCst),
        1,
        "the pending receiver was woken"
    );
    match recv.as_mut().poll(&mut cx) {
        Poll::Ready(Err(RecvError::Closed)) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[test]
fn close_from_another_thread_ends_an_async_recv() {
    let node = node();
    let (_addr, mailbox) = node.new_mailbox();
    let mailbox = Arc::new(mailbox);
    let closer = {
        let mailbox = mailbox.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            mailbox.close();
        })
    };
    assert_eq!(block_on(mailbox.recv()).unwrap_err(), RecvError::Closed);
    closer.join().unwrap();
}

#[test]
fn recv_match_leaves_unmatched_messages_in_order() {
    let node = node();
    let (addr, mailbox) = node.new_mailbox();
    addr.send(String::from("a")).unwrap();
    addr.send(1u32).unwrap();
    addr.send(String::from("b")).unwrap();
    addr.send(2u32).unwrap();
    addr.send(String::from("c")).unwrap();
    let n: u32 = block_on(mailbox.recv_type()).unwrap();
    assert_eq!(n, 1);
    let m = block_on(mailbox.recv_match(|m| m.downcast_ref::<u32>() == Some(&2))).unwrap();
    assert_eq!(m.downcast::<u32>().unwrap(), 2);
    let rest: Vec<String> = std::iter::from_fn(|| mailbox.try_recv().unwrap())
        .map(|m| m.downcast::<String>().unwrap())
        .collect();
    assert_eq!(rest, ["a", "b", "c"]);
}

#[test]
fn recv_match_waits_for_a_match_without_spinning() {
    let node = node();
    let (addr, mailbox) = node.new_mailbox();
    let (count, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut recv = pin!(mailbox.recv_match(Message::is::<u64>));
    assert!(recv.as_mut().poll(&mut cx).is_pending());
    addr.send(String::from("not it")).unwrap();
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    assert!(recv.as_mut().poll(&mut cx).is_pending(), "no match yet");
    addr.send(9u64).unwrap();
    assert_eq!(count.0.load(Ordering::SeqCst), 2);
    match recv.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(m)) => assert_eq!(m.downcast::<u64>().unwrap(), 9),
        other => panic!("expected the u64, got {other:?}"),
    }
    assert_eq!(mailbox.message_count(), 1);
}

#[test]
fn many_senders_on_many_threads_lose_nothing() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 20_000;
    reign_proto::register_type::<(u64, u64)>().unwrap();
    let node = node();
    let (addr, mailbox) = node.new_mailbox();
    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    addr.send((t, i)).unwrap();
                }
            })
        })
        .collect();
    let mut next = vec![0u64; THREADS as usize];
    for _ in 0..THREADS * PER_THREAD {
        let (t, i) = mailbox
            .recv_blocking_timeout(Duration::from_secs(30))
            .unwrap()
            .downcast::<(u64, u64)>()
            .unwrap();
        assert_eq!(next[t as usize], i, "per-sender order holds");
        next[t as usize] += 1;
    }
    for s in senders {
        s.join().unwrap();
    }
    assert!(next.iter().all(|&n| n == PER_THREAD));
    assert_eq!(mailbox.message_count(), 0);
}

#[test]
fn watcher_is_notified_exactly_once() {
    let node = node();
    let (target, target_box) = node.new_mailbox();
    let (watcher, watcher_box) = node.new_mailbox();
    target.on_close_notify(&watcher);
    target.on_close_notify(&watcher); // a duplicate watch is one watch
    target_box.close();
    target_box.close();
    drop(target_box);
    let msg = watcher_box.try_recv().unwrap().unwrap();
    assert_eq!(
        msg.downcast::<MailboxClosed>().unwrap(),
        MailboxClosed {
            id: target.id(),
            reason: ExitReason::Closed
        }
    );
    assert!(watcher_box.try_recv().unwrap().is_none());
}

#[test]
fn watching_a_closed_mailbox_notifies_at_once() {
    let node = node();
    let (target, target_box) = node.new_mailbox();
    let (watcher, watcher_box) = node.new_mailbox();
    drop(target_box);
    target.on_close_notify(&watcher);
    assert!(watcher_box
        .try_recv()
        .unwrap()
        .unwrap()
        .is::<MailboxClosed>());
}

#[test]
fn removed_watch_does_not_fire() {
    let node = node();
    let (target, target_box) = node.new_mailbox();
    let (watcher, watcher_box) = node.new_mailbox();
    target.on_close_notify(&watcher);
    target.remove_notify(&watcher);
    target_box.close();
    assert!(watcher_box.try_recv().unwrap().is_none());
}

#[test]
fn closed_mailbox_refuses_sends_and_receives() {
    let node = node();
    let (addr, mailbox) = node.new_mailbox();
    addr.send(1u8).unwrap();
    mailbox.close();
    assert!(mailbox.is_closed());
    assert_eq!(addr.send(2u8), Err(SendError::Closed));
    assert_eq!(mailbox.try_recv().unwrap_err(), RecvError::Closed);
    assert_eq!(mailbox.recv_blocking().unwrap_err(), RecvError::Closed);
    assert_eq!(node.mailbox_count(), 0);
}

#[test]
fn dropping_the_mailbox_closes_it() {
    let node = node();
    let (addr, mailbox) = node.new_mailbox();
    drop(mailbox);
    assert_eq!(addr.send(1u8), Err(SendError::Closed));
}

#[test]
fn bounded_mailboxes_refuse_with_full() {
    let node = node();
    let (addr, mailbox) = node.new_mailbox_with_capacity(Capacity::messages(2));
    addr.send(1u8).unwrap();
    addr.send(2u8).unwrap();
    assert_eq!(addr.send(3u8), Err(SendError::Full));
    mailbox.try_recv().unwrap().unwrap();
    addr.send(4u8).unwrap();

    let (addr, _mailbox) = node.new_mailbox_with_capacity(Capacity::bytes(16));
    addr.send(1u64).unwrap();
    addr.send(2u64).unwrap();
    assert_eq!(addr.send(3u64), Err(SendError::Full));
}

/// The bound counts messages on both sides of the receiver's batch: those
/// still incoming and those already moved over to the receiver. Just
/// under, at and over the bound, before and after a receive moves the
/// whole incoming queue over, and after a close.
#[test]
fn the_bound_counts_messages_on_both_sides_of_a_batch() {
    const MAX: usize = 4;
    let node = node();
    let (addr, mailbox) = node.new_mailbox_with_capacity(Capacity::messages(MAX));
    for n in 0..MAX - 1 {
        addr.send(n as u32).unwrap();
    }
    assert_eq!(mailbox.message_count(), MAX - 1, "just under");
    addr.send(99u32).unwrap();
    assert_eq!(mailbox.message_count(), MAX, "at");
    assert_eq!(addr.send(100u32), Err(SendError::Full), "over");
    // This receive moves all four over to the receiver's side and takes one:
    // three left there, room for exactly one more.
    let first = mailbox.try_recv().unwrap().unwrap();
    assert_eq!(first.downcast::<u32>().unwrap(), 0);
    assert_eq!(mailbox.message_count(), MAX - 1);
    addr.send(4u32).unwrap();
    assert_eq!(addr.send(5u32), Err(SendError::Full));
    let got: Vec<u32> = std::iter::from_fn(|| mailbox.try_recv().unwrap())
        .map(|m| m.downcast::<u32>().unwrap())
        .collect();
    assert_eq!(got, [1, 2, 99, 4]);
    assert_eq!(mailbox.message_count(), 0);

    // Bytes: two u64 are 16 bytes, at the bound; a third is over.
    let (addr, mailbox) = node.new_mailbox_with_capacity(Capacity::bytes(16));
    addr.send(1u64).unwrap();
    assert_eq!(addr.send(2u32), Ok(()), "12 bytes, under");
    assert_eq!(addr.send(3u64), Err(SendError::Full), "20 bytes, over");
    addr.send(4u32).unwrap(); // 16 bytes, at
    assert_eq!(addr.send(5u8), Err(SendError::Full));
    mailbox.try_recv().unwrap().unwrap();
    addr.send(6u64).unwrap();
    // A close drops what is queued: the count is zero and stays so.
    mailbox.close();
    assert_eq!(mailbox.message_count(), 0);
    assert_eq!(addr.send(7u8), Err(SendError::Closed));
    assert_eq!(mailbox.message_count(), 0);
}

/// A bounded mailbox between two threads: the sender retries on `Full`,
/// the receiver never sees more than the bound queued, and every message
/// arrives once, in order.
#[test]
fn a_bounded_mailbox_under_a_fast_sender_holds_at_most_its_bound() {
    const MAX: usize = 64;
    const N: u64 = 200_000;
    let node = node();
    let (addr, mailbox) = node.new_mailbox_with_capacity(Capacity::messages(MAX));
    let sender = std::thread::spawn(move || {
        let mut full = 0u64;
        for n in 0..N {
            loop {
                match addr.send(n) {
                    Ok(()) => break,
                    Err(SendError::Full) => {
                        full += 1;
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("send failed: {e}"),
                }
            }
        }
        full
    });
    let mut most = 0;
    for n in 0..N {
        most = most.max(mailbox.message_count());
        let got = mailbox
            .recv_blocking_timeout(Duration::from_secs(30))
            .unwrap()
            .downcast::<u64>()
            .unwrap();
        assert_eq!(got, n);
    }
    let full = sender.join().unwrap();
    assert!(most <= MAX, "{most} queued, over the bound of {MAX}");
    assert_eq!(mailbox.message_count(), 0);
    println!("{N} messages through a bound of {MAX}: {full} sends refused with Full, at most {most} queued");
}

/// A `recv` future dropped before it completes (a lost `select!` branch, a
/// timeout) takes nothing with it: a message leaves the mailbox only in the
/// poll that returns it.
#[test]
fn a_dropped_recv_future_loses_no_message() {
    let node = node();
    let (addr, mailbox) = node.new_mailbox();
    let (count, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);

    // Pending, woken by a send, then dropped without being polled again.
    {
        let mut recv = pin!(mailbox.recv());
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        addr.send(1u32).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
    // Selective, pending on a batch of non-matching messages, then dropped.
    addr.send(String::from("a")).unwrap();
    {
        let mut recv = pin!(mailbox.recv_match(Message::is::<u64>));
        assert!(recv.as_mut().poll(&mut cx).is_pending());
    }
    addr.send(String::from("b")).unwrap();
    assert_eq!(mailbox.message_count(), 3);
    let got: Vec<String> = std::iter::from_fn(|| mailbox.try_recv().unwrap())
        .map(|m| match m.downcast::<u32>() {
            Ok(n) => n.to_string(),
            Err(m) => m.downcast::<String>().unwrap(),
        })
        .collect();
    assert_eq!(got, ["1", "a", "b"]);

    // Across threads: a receiver that drops every other future after one
    // poll, while a sender pushes, still gets every message once, in order.
    const N: u64 = 100_000;
    let sender = std::thread::spawn(move || {
        for n in 0..N {
            addr.send(n).unwrap();
        }
    });
    let mut next = 0;
    let mut dropped = 0u64;
    while next < N {
        let mut recv = Box::pin(mailbox.recv());
        match recv.as_mut().poll(&mut cx) {
            Poll::Ready(msg) => {
                assert_eq!(msg.unwrap().downcast::<u64>().unwrap(), next);
                next += 1;
                // Then drop one more future, polled or not.
                let mut again = Box::pin(mailbox.recv());
                if next % 2 == 0 {
                    if let Poll::Ready(msg) = again.as_mut().poll(&mut cx) {
                        assert_eq!(msg.unwrap().downcast::<u64>().unwrap(), next);
                        next += 1;
                    }
                }
                dropped += 1;
            }
            Poll::Pending => {
                dropped += 1;
                std::thread::yield_now();
            }
        }
    }
    sender.join().unwrap();
    assert_eq!(mailbox.message_count(), 0);
    assert!(mailbox.try_recv().unwrap().is_none());
    println!("{N} messages received in order past {dropped} dropped recv futures");
}

#[test]
fn blocking_receive_across_threads_and_timeout() {
    let node = node();
    let (addr, mailbox) = node.new_mailbox();
    assert_eq!(
        mailbox
            .recv_blocking_timeout(Duration::from_millis(10))
            .unwrap_err(),
        RecvError::Timeout
    );
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        addr.send(5i32).unwrap();
    });
    let got = mailbox.recv_blocking().unwrap().downcast::<i32>().unwrap();
    assert_eq!(got, 5);
    sender.join().unwrap();
}

#[test]
fn blocking_selective_receive() {
    let node = node();
    let (addr, mailbox) = node.new_mailbox();
    addr.send(String::from("skip")).unwrap();
    addr.send(3u16).unwrap();
    let m = mailbox
        .recv_match_blocking(Some(Duration::from_secs(1)), Message::is::<u16>)
        .unwrap();
    assert_eq!(m.downcast::<u16>().unwrap(), 3);
    assert_eq!(
        mailbox
            .recv_match_blocking(Some(Duration::from_millis(5)), Message::is::<u16>)
            .unwrap_err(),
        RecvError::Timeout
    );
    assert_eq!(mailbox.message_count(), 1);
}

#[test]
fn concurrent_mailbox_creation_never_repeats_an_id() {
    let node = node();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let node = node.clone();
            std::thread::spawn(move || {
                (0..5_000)
                    .map(|_| {
                        let (addr, mailbox) = node.new_mailbox();
                        std::mem::forget(mailbox); // keep it open
                        addr.id()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in threads {
        for id in t.join().unwrap() {
            assert!(all.insert(id), "id {id:?} allocated twice");
        }
    }
    assert_eq!(all.len(), 40_000);
}

#[test]
fn addresses_round_trip_through_serde() {
    let node = node();
    let (addr, mailbox) = node.new_mailbox();
    let json = serde_json::to_string(&addr).unwrap();
    let back: Address = node.bind_scope(|| serde_json::from_str(&json).unwrap());
    assert_eq!(back, addr);
    assert!(back.is_local());
    back.send(1u8).unwrap();
    assert_eq!(mailbox.message_count(), 1);

    // Outside any node's scope an address is unbound.
    let unbound: Address = serde_json::from_str(&json).unwrap();
    assert_eq!(unbound.send(1u8), Err(SendError::Unbound));

    // After close, a freshly bound address knows the mailbox is gone.
    drop(mailbox);
    let gone: Address = node.bind_scope(|| serde_json::from_str(&json).unwrap());
    assert_eq!(gone.send(1u8), Err(SendError::Closed));
}

#[test]
fn addresses_from_an_earlier_incarnation_never_reach_new_mailboxes() {
    let before = Node::local(Incarnation(1));
    let (old_addr, _old_box) = before.new_mailbox();
    let json = serde_json::to_string(&old_addr).unwrap();

    // The node "restarts": same id, new incarnation, serials start again.
    let after = Node::local(Incarnation(2));
    let (new_addr, new_box) = after.new_mailbox();
    assert_eq!(new_addr.id().serial, old_addr.id().serial);
    let stale: Address = after.bind_scope(|| serde_json::from_str(&json).unwrap());
    assert_eq!(stale.send(1u8), Err(SendError::Closed));
    assert_eq!(new_box.message_count(), 0);
    let (watcher, watcher_box) = after.new_mailbox();
    stale.on_close_notify(&watcher);
    assert!(watcher_box
        .try_recv()
        .unwrap()
        .unwrap()
        .is::<MailboxClosed>());
}

#[test]
fn remote_sends_check_registration_and_count_unreachable_nodes() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct NotRegistered;

    let node = node();
    let mut id = node.new_mailbox().0.id();
    id.node = reign_proto::NodeId(5);
    let remote = node.address_of(id);
    assert!(!remote.is_local());
    assert!(matches!(
        remote.send(NotRegistered),
        Err(SendError::Unregistered { .. })
    ));
    remote.send(1u64).unwrap();
    assert_eq!(node.stats().dropped_unreachable, 1);
}

/// A local send follows the remote rule: a type must be registered to be
/// sent at all, so a program tried on `Node::local()` behaves the same in a
/// cluster (it used to succeed locally and fail remotely).
#[test]
fn an_unregistered_type_fails_locally_as_it_would_remotely() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct NotYet(u8);
    let node = node();
    let (addr, mailbox) = node.new_mailbox();
    let e = addr.send(NotYet(1)).unwrap_err();
    assert_eq!(
        e,
        SendError::Unregistered {
            type_name: std::any::type_name::<NotYet>()
        }
    );
    let text = e.to_string();
    assert!(
        text.contains("NotYet") && text.contains("register_type"),
        "{text}"
    );
    assert_eq!(mailbox.message_count(), 0, "nothing was delivered");
    reign_proto::register_type_named::<NotYet>("test.NotYet").unwrap();
    addr.send(NotYet(2)).unwrap();
    let got = mailbox.try_recv().unwrap().unwrap();
    assert_eq!(got.downcast::<NotYet>().unwrap(), NotYet(2));
    // Built-in types need no registration.
    addr.send(7u64).unwrap();
    addr.send(String::from("s")).unwrap();
}

/// The close note waiting in `notes`.
fn closed_note(notes: &reign_proto::Mailbox) -> MailboxClosed {
    notes
        .try_recv()
        .unwrap()
        .expect("a note at once")
        .downcast::<MailboxClosed>()
        .unwrap()
}

/// A watch that comes after its mailbox closed and left the table hears
/// the reason it closed for while that close is among the node's last
/// [`MAX_RECENT_EXITS`](reign_proto::MAX_RECENT_EXITS): just under and at
/// the bound it is known, one close over it is `NoMailbox`.
#[test]
fn late_watches_hear_recent_exit_reasons_up_to_the_bound() {
    let bound = reign_proto::MAX_RECENT_EXITS;
    for (later_closes, expected) in [
        (bound - 2, Some("under")),
        (bound - 1, Some("at")),
        (bound, None),
    ] {
        let node = node();
        let (target, mailbox) = node.new_mailbox();
        let text = expected.unwrap_or("over");
        mailbox.close_with(ExitReason::Error(text.into()));
        drop(mailbox);
        for _ in 0..later_closes {
            let (_, other) = node.new_mailbox();
            other.close();
        }
        // The target is now the oldest of `later_closes + 1` kept reasons.
        let (watcher, notes) = node.new_mailbox();
        let late = node.address_of(target.id());
        late.on_close_notify(&watcher);
        let note = closed_note(&notes);
        let heard = match expected {
            Some(text) => ExitReason::Error(text.into()),
            None => ExitReason::NoMailbox,
        };
        assert_eq!(note.reason, heard, "{later_closes} later closes");
        // A handle that still holds the mailbox knows its reason whatever
        // the table says.
        target.on_close_notify(&watcher);
        let note = closed_note(&notes);
        assert_eq!(note.reason, ExitReason::Error(text.into()));
    }
}

/// A chain of 100,000 linked mailboxes closes from one end without
/// recursion: on a thread with a 256 KiB stack (a close by recursion
/// takes several frames per link and overflows it within a few thousand
/// links), every mailbox closes with the first one's reason carried along.
#[test]
fn a_long_link_chain_closes_without_recursion() {
    const CHAIN: usize = 100_000;
    let started = std::time::Instant::now();
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let node = node();
            let boxes: Vec<_> = (0..CHAIN).map(|_| node.new_mailbox().1).collect();
            for pair in boxes.windows(2) {
                pair[0].link(&pair[1].address());
            }
            let (watcher, notes) = node.new_mailbox();
            let last = boxes[CHAIN - 1].address();
            last.on_close_notify(&watcher);
            boxes[0].close_with(ExitReason::Panic("the head".into()));
            assert!(
                boxes.iter().all(|b| b.is_closed()),
                "the whole chain closed"
            );
            // The tail's reason names its neighbour and carries the head's.
            assert_eq!(
                closed_note(&notes).reason,
                ExitReason::Linked {
                    from: boxes[CHAIN - 2].id(),
                    reason: Box::new(ExitReason::Panic("the head".into())),
                }
            );
            drop(boxes);
            drop(notes);
            assert_eq!(node.mailbox_count(), 0, "nothing left behind");
        })
        .expect("a thread");
    handle.join().expect("no stack overflow");
    println!(
        "a chain of {CHAIN} linked mailboxes built and closed in {:?}",
        started.elapsed()
    );
}

/// Wakes a thread parked in [`many_receivers_with_dropped_futures_count_every_message_once`].
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Stress: several senders on their own threads, several receivers on
/// theirs sharing one mailbox (one of them selective), each receiver
/// dropping recv futures at random, some right after a `Pending`. Every
/// message is received exactly once, each receiver sees every sender's
/// messages in send order, and no wake-up is lost: a receiver parked on a
/// pending future is never found, after a long park ran out, to have had a
/// message waiting for it all along.
#[test]
fn many_receivers_with_dropped_futures_count_every_message_once() {
    const SENDERS: u64 = 4;
    const RECEIVERS: u64 = 3;
    const PER_SENDER: u64 = 25_000;
    const TOTAL: u64 = SENDERS * PER_SENDER;
    /// Long enough that only a lost wake-up, not a slow machine, outlasts
    /// it while messages keep arriving.
    const PARK: Duration = Duration::from_secs(5);
    reign_proto::register_type::<(u64, u64)>().unwrap();
    let node = node();
    let (addr, mailbox) = node.new_mailbox();
    let received = AtomicUsize::new(0);
    let lost_wakes = AtomicUsize::new(0);
    let dropped = AtomicUsize::new(0);
    let seen: Vec<Vec<(u64, u64)>> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..SENDERS)
            .map(|t| {
                let addr = addr.clone();
                scope.spawn(move || {
                    for i in 0..PER_SENDER {
                        addr.send((t, i)).unwrap();
                        if i % 1024 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let receivers: Vec<_> = (0..RECEIVERS)
            .map(|r| {
                let (mailbox, received, lost_wakes, dropped) =
                    (&mailbox, &received, &lost_wakes, &dropped);
                scope.spawn(move || {
                    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
                    let mut cx = Context::from_waker(&waker);
                    // A small xorshift: which futures to drop.
                    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (r + 1);
                    let mut next = move || {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng
                    };
                    // Receiver 0 takes only even senders' messages.
                    let even = |m: &Message| {
                        m.downcast_ref::<(u64, u64)>()
                            .is_some_and(|(t, _)| t % 2 == 0)
                    };
                    let mut got = Vec::new();
                    'futures: loop {
                        let mut recv: std::pin::Pin<
                            Box<dyn Future<Output = Result<Message, RecvError>>>,
                        > = if r == 0 {
                            Box::pin(mailbox.recv_match(even))
                        } else {
                            Box::pin(mailbox.recv())
                        };
                        loop {
                            match recv.as_mut().poll(&mut cx) {
                                Poll::Ready(Ok(msg)) => {
                                    got.push(*msg.downcast_ref::<(u64, u64)>().unwrap());
                                    received.fetch_add(1, Ordering::SeqCst);
                                    continue 'futures;
                                }
                                Poll::Ready(Err(RecvError::Closed)) => break 'futures,
                                Poll::Ready(Err(e)) => panic!("unexpected {e:?}"),
                                Poll::Pending if next() % 3 == 0 => {
                                    dropped.fetch_add(1, Ordering::Relaxed);
                                    continue 'futures;
                                }
                                Poll::Pending => {
                                    let parked = std::time::Instant::now();
                                    std::thread::park_timeout(PARK);
                                    if parked.elapsed() >= PARK
                                        && (received.load(Ordering::SeqCst) as u64) < TOTAL
                                        && recv.as_mut().poll(&mut cx).is_ready()
                                    {
                                        // Ready after a full park: its wake-up
                                        // was lost (the message is not).
                                        lost_wakes.fetch_add(1, Ordering::SeqCst);
                                        continue 'futures;
                                    }
                                }
                            }
                        }
                    }
                    got
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        // Generous: the machine may be slow; a poll, not a fixed sleep.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while (received.load(Ordering::SeqCst) as u64) < TOTAL {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {TOTAL} received",
                received.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        mailbox.close();
        receivers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(lost_wakes.load(Ordering::SeqCst), 0, "lost wake-ups");
    let mut all = HashSet::new();
    for got in &seen {
        let mut last = vec![None; SENDERS as usize];
        for &(t, i) in got {
            assert!(all.insert((t, i)), "({t}, {i}) received twice");
            let previous = last[t as usize].replace(i);
            assert!(previous < Some(i), "sender {t}'s order broke at {i}");
        }
    }
    assert_eq!(all.len() as u64, TOTAL, "every message received once");
    assert!(
        seen[0].iter().all(|(t, _)| t % 2 == 0),
        "the selective receiver took only matches"
    );
    println!(
        "{TOTAL} messages, {RECEIVERS} receivers ({} each), {} dropped recv futures",
        seen.iter()
            .map(|s| s.len().to_string())
            .collect::<Vec<_>>()
            .join("/"),
        dropped.load(Ordering::Relaxed)
    );
}
