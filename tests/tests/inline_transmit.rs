//! Inline transmit (issue 17): a user thread that queued output for an
//! idle link writes it into the socket itself when the driver is not
//! working, so sending threads race each other and the driver for the
//! core. Over real TCP and rustls mutual TLS on 127.0.0.1, on every
//! runtime:
//!
//! - several threads sending numbered messages in bursts, with idle gaps
//!   (the inline path) and back to back (the driver's path), lose nothing
//!   and keep each sender's order;
//! - a ping-pong between threads on two nodes, where every message goes
//!   out inline, completes, and its latency is printed.

use std::time::{Duration, Instant};

use reign_driver::{Reign, Runtime};
use reign_tests::{on_every_runtime, recv_on, TestCluster};
use reign_tokio::SendError;

/// Generous: nothing here should take more than a fraction of it.
const WAIT: Duration = Duration::from_secs(30);
/// Sending threads.
const SENDERS: u64 = 4;
/// Bursts per sender; every other one is followed by an idle gap.
const BURSTS: u64 = 40;
/// Messages per burst.
const BURST: u64 = 250;
/// The idle gap: well over the driver's 5 µs "busy link" window, so the
/// next burst starts on the inline path.
const GAP: Duration = Duration::from_micros(300);
/// Round trips of the ping-pong.
const ROUND_TRIPS: u64 = 2_000;

/// The message of sender `t` with sequence number `seq`.
fn numbered(t: u64, seq: u64) -> u64 {
    t << 32 | seq
}

async fn racing_senders_lose_nothing_and_keep_order<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b): (Reign<R>, Reign<R>) = cluster.pair_on::<R>(WAIT).await;
    let (sink, inbox) = b.new_mailbox();
    let to = a.address_of(sink.id());
    let threads: Vec<_> = (0..SENDERS)
        .map(|t| {
            let to = to.clone();
            std::thread::spawn(move || {
                for burst in 0..BURSTS {
                    for i in 0..BURST {
                        let value = numbered(t, burst * BURST + i);
                        loop {
                            match to.send(value) {
                                Ok(()) => break,
                                Err(SendError::Full) => {
                                    std::thread::sleep(Duration::from_micros(200));
                                }
                                Err(e) => panic!("send failed: {e}"),
                            }
                        }
                    }
                    if burst % 2 == 0 {
                        std::thread::sleep(GAP);
                    }
                }
            })
        })
        .collect();
    let mut next = [0u64; SENDERS as usize];
    for _ in 0..SENDERS * BURSTS * BURST {
        let value: u64 = recv_on::<R, u64>(&inbox, WAIT).await;
        let (t, seq) = ((value >> 32) as usize, value & 0xffff_ffff);
        assert_eq!(seq, next[t], "sender {t}: out of order or lost");
        next[t] += 1;
    }
    for thread in threads {
        thread.join().expect("a sender panicked");
    }
    assert!(next.iter().all(|&n| n == BURSTS * BURST));
    assert_eq!(a.stats().dropped_unreachable, 0);
    a.shutdown().await;
    b.shutdown().await;
}

async fn ping_pong_between_threads_goes_inline<R: Runtime + Default>() {
    let cluster = TestCluster::new(2);
    let (a, b): (Reign<R>, Reign<R>) = cluster.pair_on::<R>(WAIT).await;
    let (ping_addr, ping_box) = a.new_mailbox();
    let (pong_addr, pong_box) = b.new_mailbox();
    let to_pong = a.address_of(pong_addr.id());
    let to_ping = b.address_of(ping_addr.id());
    // The echo side: a plain thread receiving and answering.
    let echo = std::thread::spawn(move || {
        for _ in 0..ROUND_TRIPS {
            let n: u64 = pong_box
                .recv_blocking_timeout(WAIT)
                .expect("a ping in time")
                .downcast()
                .expect("a u64");
            to_ping.send(n).expect("the pong is sent");
        }
    });
    let mut samples = Vec::new();
    for n in 0..ROUND_TRIPS {
        let started = Instant::now();
        to_pong.send(n).expect("the ping is sent");
        let back: u64 = recv_on::<R, u64>(&ping_box, WAIT).await;
        assert_eq!(back, n);
        samples.push(started.elapsed());
    }
    echo.join().expect("the echo thread panicked");
    samples.sort();
    println!(
        "ping-pong between threads, {} round trips: p50 {:?}, p99 {:?}",
        ROUND_TRIPS,
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100]
    );
    a.shutdown().await;
    b.shutdown().await;
}

on_every_runtime!(
    racing_senders_lose_nothing_and_keep_order,
    ping_pong_between_threads_goes_inline
);
