//! What messages from another node hold on the receiving node's heap while
//! they wait in a mailbox, against what they are charged to the peer's
//! receive budget (payload plus `MESSAGE_COST` each). The budget is the
//! node's memory bound under a flood (a mailbox's share, the link's pause
//! point), so a charge below the real cost would let a flood hold more
//! than the bound says: it once did, by a third, for 64-byte messages.
//!
//! A live-bytes counting allocator: the one piece of `unsafe` here, as in
//! `alloc_count.rs` (a `GlobalAlloc` must be an `unsafe impl`); it only
//! forwards to the system allocator and adds up sizes.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use reign_proto::sim::Sim;
use reign_proto::{Mailbox, NodeId};

struct Live;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` unchanged; the counter is a
// static atomic, which never allocates.
unsafe impl GlobalAlloc for Live {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Live = Live;

/// The live-bytes counter is global: the tests here take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Payload sizes and messages per fill: two fills stay below a mailbox's
/// share (16 MiB, counting payload plus `MESSAGE_COST` each), so no send
/// is refused.
const FILLS: [(usize, usize); 3] = [(1, 25_000), (64, 20_000), (1024, 5_000)];

/// Sends `count` copies of `payload` from node 0 to `to` and runs the
/// simulation until they are delivered.
fn fill(sim: &mut Sim, to: &reign_proto::Address, payload: &str, count: usize, mailbox: &Mailbox) {
    let want = mailbox.message_count() + count;
    let mut sent = 0;
    while sent < count {
        for _ in 0..1_000.min(count - sent) {
            to.send(payload.to_owned()).unwrap();
            sent += 1;
        }
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_millis(200));
    assert_eq!(mailbox.message_count(), want, "not all delivered");
}

fn charged(sim: &mut Sim) -> isize {
    sim.node(NodeId(1))
        .peer_stats()
        .iter()
        .find(|p| p.node == NodeId(0))
        .map_or(0, |p| p.unread_bytes as isize)
}

/// A mailbox on node 1 of `sim` and its address as node 0 sees it, with
/// the link's buffers warmed up by 100 `payload`s; returns them and the
/// heap in use after the warm-up, the base to measure from.
fn warm_mailbox(sim: &mut Sim, payload: &str) -> (reign_proto::Address, Mailbox, isize) {
    let (addr, mailbox) = sim.node(NodeId(1)).new_mailbox();
    let remote = sim.node(NodeId(0)).address_of(addr.id());
    fill(sim, &remote, payload, 100, &mailbox);
    while mailbox.try_recv().unwrap().is_some() {}
    sim.run_for(Duration::from_millis(200));
    (remote, mailbox, LIVE.load(Ordering::Relaxed))
}

/// Fills a mailbox on node 1 with `payload`s from node 0 twice, reading
/// one message in between (so both of its queues grow to a backlog's
/// size), and returns (heap held, bytes charged) after each fill.
fn held_and_charged(payload_len: usize, count: usize) -> Vec<(isize, isize)> {
    let mut sim = Sim::connected(2, 7);
    let payload = "x".repeat(payload_len);
    let (remote, mailbox, base) = warm_mailbox(&mut sim, &payload);
    let mut seen = Vec::new();
    fill(&mut sim, &remote, &payload, count, &mailbox);
    seen.push((LIVE.load(Ordering::Relaxed) - base, charged(&mut sim)));
    // The receiver takes the senders' queue whole; the next fill grows it
    // again beside the first backlog.
    drop(mailbox.try_recv().unwrap().expect("a message"));
    fill(&mut sim, &remote, &payload, count, &mailbox);
    seen.push((LIVE.load(Ordering::Relaxed) - base, charged(&mut sim)));
    while mailbox.try_recv().unwrap().is_some() {}
    sim.run_for(Duration::from_millis(200));
    assert_eq!(charged(&mut sim), 0, "read messages give their charge back");
    seen
}

/// Small messages, where the per-message cost dominates, and larger ones,
/// where the payload does: what the queued messages hold on the heap
/// (their payloads' share of the receive buffers, their queue slots with
/// the queues' growth) stays within what they are charged.
#[test]
fn queued_remote_messages_hold_no_more_than_they_are_charged() {
    let _serial = serial();
    for (payload_len, count) in FILLS {
        let seen = held_and_charged(payload_len, count);
        for (fill, (held, charged)) in seen.into_iter().enumerate() {
            let per = |b: isize| b as f64 / (count * (fill + 1)) as f64;
            println!(
                "{payload_len} B payloads, after fill {}: {:.0} B held per message, {:.0} B charged",
                fill + 1,
                per(held),
                per(charged)
            );
            assert!(
                held <= charged,
                "{payload_len} B payloads, fill {}: {held} bytes held on the heap, {charged} charged",
                fill + 1
            );
        }
    }
}

/// A mailbox that is not read, flooded with small messages from another
/// node until its sender hears it is busy, holds about its share of the
/// heap, not a multiple of it: the share counts each message's payload
/// plus `MESSAGE_COST`, what the message holds.
#[test]
fn a_flooded_mailbox_holds_about_its_share_when_its_sender_is_told_busy() {
    let _serial = serial();
    use reign_proto::sim::SimConfig;
    use reign_proto::{SendError, Tuning, MESSAGE_COST};
    let share = 1 << 20;
    for payload_len in [1, 64, 1024] {
        let mut sim = Sim::new(SimConfig {
            nodes: 2,
            seed: 11,
            tuning: Tuning {
                mailbox_unread_bytes: share,
                ..Tuning::default()
            },
            ..SimConfig::default()
        });
        sim.run_for(Duration::from_millis(500));
        assert!(sim.fully_connected());
        let payload = "x".repeat(payload_len);
        let (remote, mailbox, base) = warm_mailbox(&mut sim, &payload);
        // Send as a paced sender would, until the sends fail `Full`.
        let mut sent = 0usize;
        'flood: loop {
            for _ in 0..100 {
                match remote.send(payload.clone()) {
                    Ok(()) => sent += 1,
                    Err(SendError::Full) => break 'flood,
                    Err(e) => panic!("{payload_len} B: {e}"),
                }
            }
            sim.run_for(Duration::from_micros(200));
            assert!(sent < 10_000_000, "{payload_len} B: never told busy");
        }
        sim.run_for(Duration::from_millis(200));
        let held = LIVE.load(Ordering::Relaxed) - base;
        let queued = mailbox.message_count();
        assert_eq!(queued, sent, "{payload_len} B: everything sent arrived");
        // The encoded payload: a CBOR string header of up to 3 bytes.
        let counted = queued * (payload_len + 3 + MESSAGE_COST);
        println!(
            "{payload_len} B payloads: told busy after {queued} messages, \
             {held} B held on the heap ({:.2} shares), {counted} B counted",
            held as f64 / share as f64
        );
        assert!(
            counted >= share,
            "{payload_len} B: busy before the share was reached"
        );
        // Both nodes run in this process: the heap also holds what was on
        // the way when the sender heard (it sends 100 at a time) and the
        // sender's own buffers, grown by the flood.
        assert!(
            held <= 2 * share as isize,
            "{payload_len} B: {held} B held for a share of {share} B ({queued} messages)"
        );
        while mailbox.try_recv().unwrap().is_some() {}
    }
}
