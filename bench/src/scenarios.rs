//! The scenarios. Each prints one `name=… key=value …` line on stdout.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use reign_cli::protocol::{self, AddSubscribers, Bulk, NameSeen, Ping, WatchName};
use reign_proto::{Address, Incarnation, NodeId, SendError};
use reign_tokio::{MailboxExt, Node};
use serde_bytes::ByteBuf;

use crate::cluster::{runtime, Cluster, WAIT};

type Result<T = ()> = std::result::Result<T, String>;

fn line(fields: &[(&str, String)]) {
    let text: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", text.join(" "));
}

fn rate(n: f64, secs: f64) -> String {
    format!("{:.0}", n / secs)
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e6
}

fn latency_fields(samples: &mut [Duration]) -> Vec<(&'static str, String)> {
    samples.sort();
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64;
    vec![
        ("p50_us", format!("{:.1}", percentile(samples, 0.50))),
        ("p99_us", format!("{:.1}", percentile(samples, 0.99))),
        ("p999_us", format!("{:.1}", percentile(samples, 0.999))),
        ("mean_us", format!("{:.1}", mean * 1e6)),
        ("rtt_per_s", format!("{:.0}", 1.0 / mean)),
    ]
}

/// Prints the line of a latency scenario with 64-byte payloads (`name`,
/// the percentiles of `samples`), and its p50 and p99 for a human.
fn report_latency(name: &str, label: &str, samples: &mut [Duration]) {
    let mut fields = vec![("name", name.to_string()), ("payload_b", "64".into())];
    fields.extend(latency_fields(samples));
    line(&fields);
    eprintln!(
        "{label}: p50 {:.1} µs, p99 {:.1} µs",
        percentile(samples, 0.5),
        percentile(samples, 0.99)
    );
}

/// Sends `count` messages made by `make`, waiting a little whenever the
/// outbound queue is full (a send never blocks; Full means "later").
fn send_all<T: std::any::Any + Send + serde::Serialize>(
    to: &Address,
    count: u64,
    mut make: impl FnMut(u64) -> T,
) -> Result {
    let mut seq = 0;
    let mut spins = 0;
    while seq < count {
        match to.send(make(seq)) {
            Ok(()) => {
                seq += 1;
                spins = 0;
            }
            Err(SendError::Full) => {
                spins += 1;
                if spins < 16 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Every scenario once, each in a fresh process so that its peak RSS is
/// its own.
pub fn all() -> Result {
    let mut runs: Vec<Vec<String>> = vec![vec!["local".into()]];
    for size in [64, 1024, 4096, 65536] {
        runs.push(vec!["oneway".into(), "--size".into(), size.to_string()]);
    }
    // The same 64 B flood through the raw-bytes path, one by one and in
    // batches.
    for batch in [1, ONEWAY_BATCH] {
        runs.push(vec![
            "oneway".into(),
            "--size".into(),
            "64".into(),
            "--raw".into(),
            "--batch".into(),
            batch.to_string(),
        ]);
    }
    runs.push(vec!["hop".into()]);
    runs.push(vec!["pingpong".into()]);
    runs.push(vec!["tcp-pingpong".into()]);
    runs.push(vec!["reqrep".into()]);
    runs.push(vec!["loaded".into()]);
    for (subscribers, messages) in [(1u64, 1_000_000u64), (10, 200_000), (100, 20_000)] {
        runs.push(vec![
            "pubsub".into(),
            "--subscribers".into(),
            subscribers.to_string(),
            "--messages".into(),
            messages.to_string(),
        ]);
    }
    runs.push(vec!["tunnel".into()]);
    runs.push(vec!["registry".into()]);
    runs.push(vec!["regcycle".into()]);
    runs.push(vec!["alloc".into()]);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // One failed scenario must not cost the others their figures.
    let mut failed = Vec::new();
    for args in runs {
        let status = std::process::Command::new(&exe)
            .args(&args)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            println!("name=reign_{} error={status}", args[0].replace('-', "_"));
            failed.push(format!("{} ({status})", args.join(" ")));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {}", failed.join(", ")))
    }
}

// ----- local -----------------------------------------------------------------

fn reign_local(producers: u64, messages: u64) -> f64 {
    let node = reign_proto::Node::local(Incarnation(1));
    let (addr, mailbox) = node.new_mailbox();
    let per = messages / producers;
    let started = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    let _ = addr.send(i);
                }
            })
        })
        .collect();
    for _ in 0..per * producers {
        let _ = mailbox.recv_blocking();
    }
    let secs = started.elapsed().as_secs_f64();
    threads.into_iter().for_each(|t| {
        let _ = t.join();
    });
    (per * producers) as f64 / secs
}

fn mpsc_local(producers: u64, messages: u64) -> f64 {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let per = messages / producers;
    let started = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    let _ = tx.send(i);
                }
            })
        })
        .collect();
    drop(tx);
    for _ in 0..per * producers {
        let _ = rx.blocking_recv();
    }
    let secs = started.elapsed().as_secs_f64();
    threads.into_iter().for_each(|t| {
        let _ = t.join();
    });
    (per * producers) as f64 / secs
}

pub fn local(messages: u64) -> Result {
    for producers in [1u64, 2] {
        // Interleaved: ours, theirs, ours, theirs; the best of each.
        let mut ours = 0f64;
        let mut theirs = 0f64;
        for _ in 0..3 {
            ours = ours.max(reign_local(producers, messages));
            theirs = theirs.max(mpsc_local(producers, messages));
        }
        let shape = format!("{producers}to1");
        line(&[
            ("name", format!("reign_local_{shape}")),
            ("msgs_per_s", format!("{ours:.0}")),
            ("vs_tokio_mpsc", format!("{:.2}", ours / theirs)),
        ]);
        line(&[
            ("name", format!("tokio_mpsc_{shape}")),
            ("msgs_per_s", format!("{theirs:.0}")),
        ]);
        eprintln!(
            "local {shape}: reign {:.2}M msg/s, tokio mpsc {:.2}M msg/s ({:.2}x)",
            ours / 1e6,
            theirs / 1e6,
            ours / theirs
        );
    }
    Ok(())
}

// ----- across nodes ------------------------------------------------------------

pub fn oneway(size: usize, messages: Option<u64>) -> Result {
    let count = messages.unwrap_or_else(|| (1_000_000_000 / size as u64).clamp(10_000, 4_000_000));
    runtime()?.block_on(async move {
        let cluster = Cluster::start(1).await?;
        let sink = cluster
            .node
            .lookup(&protocol::control_name(1))
            .ok_or("no sink")?;
        let data = ByteBuf::from(vec![0x5a; size]);
        // Warm up the connection and the receiver's buffers.
        let warm = data.clone();
        let to = sink.clone();
        tokio::task::spawn_blocking(move || {
            send_all(&to, 1000, |seq| Bulk {
                from: 0,
                seq,
                data: warm.clone(),
            })
        })
        .await
        .map_err(|e| e.to_string())??;
        wait_counted(&cluster, 1000).await?;

        let started = Instant::now();
        let to = sink.clone();
        tokio::task::spawn_blocking(move || {
            send_all(&to, count, |i| Bulk {
                from: 0,
                seq: 1000 + i,
                data: data.clone(),
            })
        })
        .await
        .map_err(|e| e.to_string())??;
        let report = wait_counted(&cluster, 1000 + count).await?;
        let secs = started.elapsed().as_secs_f64();
        let state = report.counted.get(&0).copied().unwrap_or_default();
        if state.gaps != 0 || state.duplicates != 0 {
            return Err(format!("lost or repeated messages: {state:?}"));
        }
        report_oneway(
            format!("reign_oneway_{size}"),
            &format!("one-way {size} B"),
            size,
            None,
            count,
            secs,
            report.peak_rss_kb,
        );
        cluster.stop().await;
        Ok(())
    })
}

/// Prints a one-way flood's result line (and a readable line on stderr):
/// `count` messages of `size` bytes in `secs`, with the peak RSS of the
/// sender (this process) and of the receiver.
fn report_oneway(
    name: String,
    what: &str,
    size: usize,
    batch: Option<usize>,
    count: u64,
    secs: f64,
    peak_rss_kb_b: u64,
) {
    let mut fields = vec![("name", name), ("payload_b", size.to_string())];
    if let Some(batch) = batch {
        fields.push(("batch", batch.to_string()));
    }
    fields.extend([
        ("msgs_per_s", rate(count as f64, secs)),
        (
            "MB_per_s",
            format!("{:.1}", count as f64 * size as f64 / secs / 1e6),
        ),
        ("secs", format!("{secs:.2}")),
        ("peak_rss_kb_a", protocol::peak_rss_kb().to_string()),
        ("peak_rss_kb_b", peak_rss_kb_b.to_string()),
    ]);
    line(&fields);
    eprintln!(
        "{what}: {:.0} msg/s, {:.1} MB/s; peak RSS sender {} KiB, receiver {} KiB",
        count as f64 / secs,
        count as f64 * size as f64 / secs / 1e6,
        protocol::peak_rss_kb(),
        peak_rss_kb_b
    );
}

/// Messages per `send_bytes_batch` call in `all`'s batched raw flood.
const ONEWAY_BATCH: usize = 64;

/// Bytes a raw benchmark message needs for its counting header: the
/// sequence number (8 bytes) and the sending node (2), as the sink reads
/// them (`reign_cli::protocol::RAW_COUNT_LEN`).
const RAW_HEADER: usize = protocol::RAW_COUNT_LEN;

/// Raw payloads for `seqs`, `size` bytes each, carved out of one buffer
/// (one allocation per call, shared by reference counts).
fn raw_payloads(seqs: std::ops::Range<u64>, size: usize, into: &mut Vec<bytes::Bytes>) {
    into.clear();
    let mut buf = bytes::BytesMut::with_capacity(size * (seqs.end - seqs.start) as usize);
    for seq in seqs {
        buf.extend_from_slice(&protocol::raw_count_header(0, seq));
        buf.resize(buf.len() + size - RAW_HEADER, 0x5a);
        into.push(buf.split().freeze());
    }
}

/// Sends raw messages `seqs` to `to`, `batch` at a time, waiting a little
/// whenever the outbound queue is full and resending what was not taken.
fn send_raw(to: &Address, seqs: std::ops::Range<u64>, size: usize, batch: usize) -> Result {
    let mut payloads = Vec::with_capacity(batch);
    let mut next = seqs.start;
    let mut spins = 0;
    while next < seqs.end {
        let end = (next + batch as u64).min(seqs.end);
        raw_payloads(next..end, size, &mut payloads);
        let mut from = 0;
        while from < payloads.len() {
            let result = if batch == 1 {
                to.send_bytes(payloads[from].clone())
                    .map(|()| 1)
                    .map_err(|e| (0, e))
            } else {
                match to.send_bytes_batch(&payloads[from..]) {
                    Ok(()) => Ok(payloads.len() - from),
                    Err(e) => Err((e.sent, e.error)),
                }
            };
            match result {
                Ok(n) => {
                    from += n;
                    spins = 0;
                }
                Err((n, SendError::Full)) => {
                    from += n;
                    spins += 1;
                    if spins < 16 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
                Err((_, e)) => return Err(e.to_string()),
            }
        }
        next = end;
    }
    Ok(())
}

/// `oneway` through the raw-bytes path: [`Address::send_bytes`] (`batch`
/// 1) or [`Address::send_bytes_batch`], counted by the same sink.
pub fn oneway_raw(size: usize, messages: Option<u64>, batch: usize) -> Result {
    if size < RAW_HEADER {
        return Err(format!("--raw needs --size of at least {RAW_HEADER}"));
    }
    let batch = batch.max(1);
    let count = messages.unwrap_or_else(|| (1_000_000_000 / size as u64).clamp(10_000, 4_000_000));
    runtime()?.block_on(async move {
        let cluster = Cluster::start(1).await?;
        let sink = cluster
            .node
            .lookup(&protocol::control_name(1))
            .ok_or("no sink")?;
        let to = sink.clone();
        tokio::task::spawn_blocking(move || send_raw(&to, 0..1000, size, batch))
            .await
            .map_err(|e| e.to_string())??;
        wait_counted(&cluster, 1000).await?;

        let started = Instant::now();
        let to = sink.clone();
        tokio::task::spawn_blocking(move || send_raw(&to, 1000..1000 + count, size, batch))
            .await
            .map_err(|e| e.to_string())??;
        let report = wait_counted(&cluster, 1000 + count).await?;
        let secs = started.elapsed().as_secs_f64();
        let state = report.counted.get(&0).copied().unwrap_or_default();
        if state.gaps != 0 || state.duplicates != 0 {
            return Err(format!("lost or repeated messages: {state:?}"));
        }
        let name = if batch == 1 {
            format!("reign_oneway_raw_{size}")
        } else {
            format!("reign_oneway_batch_{size}")
        };
        report_oneway(
            name,
            &format!("one-way raw {size} B, batches of {batch}"),
            size,
            Some(batch),
            count,
            secs,
            report.peak_rss_kb,
        );
        cluster.stop().await;
        Ok(())
    })
}

/// Polls node 1's counters until it has counted `total` messages from node 0.
async fn wait_counted(cluster: &Cluster, total: u64) -> Result<protocol::NodeReport> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let report = cluster.stats(1).await?;
        if report.counted.get(&0).is_some_and(|s| s.received >= total) {
            return Ok(report);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {:?} of {total} arrived",
                report.counted.get(&0)
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub fn pingpong(round_trips: usize) -> Result {
    runtime()?.block_on(async move {
        let cluster = Cluster::start(1).await?;
        let target = cluster
            .node
            .lookup(&protocol::control_name(1))
            .ok_or("no node 1")?;
        let (me, inbox) = cluster.node.new_mailbox();
        let mut samples = Vec::with_capacity(round_trips);
        for i in 0..round_trips + 1000 {
            let t = Instant::now();
            target
                .send(Ping {
                    reply_to: me.clone(),
                })
                .map_err(|e| e.to_string())?;
            inbox.recv_timeout(WAIT).await.map_err(|e| e.to_string())?;
            if i >= 1000 {
                samples.push(t.elapsed());
            }
        }
        report_latency("reign_pingpong", "ping-pong", &mut samples);
        cluster.stop().await;
        Ok(())
    })
}

pub fn tcp_pingpong(round_trips: usize) -> Result {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let total = round_trips + 1000;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        for _ in 0..total {
            s.read_exact(&mut buf)?;
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf = [7u8; 64];
    let mut samples = Vec::with_capacity(round_trips);
    for i in 0..total {
        let t = Instant::now();
        s.write_all(&buf).map_err(|e| e.to_string())?;
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        if i >= 1000 {
            samples.push(t.elapsed());
        }
    }
    let _ = echo.join();
    report_latency("tcp_pingpong", "raw TCP ping-pong", &mut samples);
    Ok(())
}

pub fn reqrep(requests: usize) -> Result {
    runtime()?.block_on(async move {
        let cluster = Cluster::start(1).await?;
        let payload = ByteBuf::from(vec![1u8; 64]);
        let mut samples = Vec::with_capacity(requests);
        for i in 0..requests + 1000 {
            let t = Instant::now();
            cluster
                .node
                .request(protocol::ECHO, payload.clone(), WAIT)
                .await
                .map_err(|e| e.to_string())?;
            if i >= 1000 {
                samples.push(t.elapsed());
            }
        }
        report_latency("reign_reqrep", "request/reply", &mut samples);
        cluster.stop().await;
        Ok(())
    })
}

/// Payload bytes of a publication: the NATS anchor's size, so the two
/// compare at the same size.
const PUBSUB_PAYLOAD: usize = 64;

pub fn pubsub(subscribers: u32, messages: u64) -> Result {
    runtime()?.block_on(async move {
        let cluster = Cluster::start(1).await?;
        let control = cluster.node.lookup(&protocol::control_name(1)).ok_or("no node 1")?;
        let topic = "bench.fanout";
        control
            .send(AddSubscribers {
                topic: topic.into(),
                count: subscribers,
            })
            .map_err(|e| e.to_string())?;
        // The stats reply comes after the subscriptions' interest (same
        // connection, control frames first): once it is here, so is that.
        cluster.stats(1).await?;
        let started = Instant::now();
        let node = cluster.node.clone();
        let data = ByteBuf::from(vec![0x5a; PUBSUB_PAYLOAD]);
        tokio::task::spawn_blocking(move || -> Result {
            let mut seq = 0;
            while seq < messages {
                let event = Bulk {
                    from: 0,
                    seq,
                    data: data.clone(),
                };
                match node.publish(topic, event) {
                    Ok(()) => seq += 1,
                    Err(e) => return Err(e.to_string()),
                }
                // Publications over a full queue are dropped (and counted):
                // pace the publisher by the receiver's progress instead.
                if seq % 50_000 == 0 {
                    std::thread::sleep(Duration::from_micros(1));
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())??;
        let expected = messages * u64::from(subscribers);
        let deadline = Instant::now() + Duration::from_secs(120);
        let delivered = loop {
            let report = cluster.stats(1).await?;
            let dropped = cluster.node.stats().dropped_events;
            if report.publications + dropped * u64::from(subscribers) >= expected || Instant::now() > deadline {
                break report.publications;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let secs = started.elapsed().as_secs_f64();
        let dropped = cluster.node.stats().dropped_events;
        line(&[
            ("name", format!("reign_pubsub_{subscribers}")),
            ("subscribers", subscribers.to_string()),
            ("payload_b", PUBSUB_PAYLOAD.to_string()),
            ("msgs_per_s", rate(messages as f64, secs)),
            ("deliveries_per_s", rate(delivered as f64, secs)),
            ("dropped", dropped.to_string()),
            ("secs", format!("{secs:.2}")),
        ]);
        eprintln!(
            "pub/sub to {subscribers} subscribers: {:.0} publications/s, {:.0} deliveries/s, {dropped} dropped",
            messages as f64 / secs,
            delivered as f64 / secs
        );
        cluster.stop().await;
        Ok(())
    })
}

pub fn tunnel(mib: usize) -> Result {
    runtime()?.block_on(async move {
        let cluster = Cluster::start(1).await?;
        let run = reign_cli::service::stream_to_sink(&cluster.node, mib, WAIT).await?;
        if run.bytes != (mib as u64) << 20 {
            return Err(format!("the sink counted {} bytes", run.bytes));
        }
        let secs = run.elapsed.as_secs_f64();
        line(&[
            ("name", "reign_tunnel".into()),
            ("MB_per_s", format!("{:.1}", run.mb_per_s())),
            ("secs", format!("{secs:.2}")),
        ]);
        eprintln!("tunnel: {:.0} MB/s", run.mb_per_s());
        cluster.stop().await;
        Ok(())
    })
}

pub fn registry(names: usize) -> Result {
    let limit = reign_proto::registry::MAX_ENTRIES_PER_NODE;
    if names == 0 || names > limit {
        return Err(format!(
            "--names must be between 1 and {limit} (the names one node may hold by default)"
        ));
    }
    runtime()?.block_on(async move {
        let cluster = Cluster::start(2).await?;
        let node = &cluster.node;
        let (me, inbox) = node.new_mailbox();
        let last = format!("bench-name-{}", names - 1);
        for of in [1, 2] {
            let control = node.lookup(&protocol::control_name(of)).ok_or("no child")?;
            control
                .send(WatchName {
                    name: last.clone(),
                    reply_to: me.clone(),
                })
                .map_err(|e| e.to_string())?;
        }
        let mailboxes: Vec<_> = (0..names).map(|_| node.new_mailbox()).collect();
        let started = Instant::now();
        for (i, (addr, _)) in mailboxes.iter().enumerate() {
            node.register(&format!("bench-name-{i}"), addr)
                .map_err(|e| e.to_string())?;
        }
        let registered = started.elapsed();
        for _ in 0..2 {
            let seen: NameSeen = inbox
                .recv_timeout(Duration::from_secs(60))
                .await
                .map_err(|e| e.to_string())?
                .downcast()
                .map_err(|_| "not a NameSeen")?;
            debug_assert_eq!(seen.name, last);
        }
        let visible = started.elapsed();
        line(&[
            ("name", "reign_registry".into()),
            ("names", names.to_string()),
            ("register_secs", format!("{:.4}", registered.as_secs_f64())),
            ("visible_on_b_secs", format!("{:.4}", visible.as_secs_f64())),
        ]);
        eprintln!(
            "registry: {names} names registered in {:.1} ms, visible on two other nodes after {:.1} ms",
            registered.as_secs_f64() * 1e3,
            visible.as_secs_f64() * 1e3
        );
        drop(mailboxes);
        cluster.stop().await;
        Ok(())
    })
}

// ----- allocations -----------------------------------------------------------

pub fn alloc() -> Result {
    // Local: send + receive of a u64.
    let node = reign_proto::Node::local(Incarnation(1));
    let (addr, mailbox) = node.new_mailbox();
    for i in 0..10_000u64 {
        let _ = addr.send(i);
        let _ = mailbox.try_recv();
    }
    let n = 100_000u64;
    let ((), local) = crate::alloc::count(|| {
        for i in 0..n {
            let _ = addr.send(i);
            let _ = mailbox.try_recv();
        }
    });
    // Remote: two nodes in this process, every thread counted, steady state.
    let remote = runtime()?.block_on(async {
        let (a, b) = two_nodes().await?;
        let (sink, sink_box) = b.new_mailbox();
        let to = a.address_of(sink.id());
        let batch = 100_000u64;
        let round = |to: Address| {
            let sender = std::thread::spawn(move || send_all(&to, batch, |i| i));
            for _ in 0..batch {
                let _ = sink_box.recv_blocking();
            }
            sender.join().map_err(|_| "sender panicked".to_string())?
        };
        round(to.clone())?;
        let (result, allocations) = crate::alloc::count(|| round(to.clone()));
        result?;
        a.shutdown().await;
        b.shutdown().await;
        Ok::<f64, String>(allocations as f64 / batch as f64)
    })?;
    line(&[
        ("name", "reign_alloc".into()),
        (
            "local_allocs_per_msg",
            format!("{:.3}", local as f64 / n as f64),
        ),
        ("remote_allocs_per_msg", format!("{remote:.3}")),
    ]);
    eprintln!(
        "allocations per message: local {:.3}, remote (both nodes, every thread) {remote:.3}",
        local as f64 / n as f64
    );
    Ok(())
}

// ----- one hop inside one process ---------------------------------------------

/// Starts two nodes in this process over mutual TLS on 127.0.0.1 and
/// waits until they are connected.
async fn two_nodes() -> Result<(Node, Node)> {
    let ca = reign_proto::certgen::ClusterCa::generate().map_err(|e| e.to_string())?;
    let ports: Vec<String> = (0..2)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.to_string())
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_>>()?;
    let addrs = vec![(NodeId(0), ports[0].clone()), (NodeId(1), ports[1].clone())];
    let a = Node::start(
        &ca.inline_spec(NodeId(0), &addrs)
            .map_err(|e| e.to_string())?,
        NodeId(0),
    )
    .await
    .map_err(|e| e.to_string())?;
    let b = Node::start(
        &ca.inline_spec(NodeId(1), &addrs)
            .map_err(|e| e.to_string())?,
        NodeId(1),
    )
    .await
    .map_err(|e| e.to_string())?;
    if !a.wait_for_peers(&[NodeId(1)], WAIT).await || !b.wait_for_peers(&[NodeId(0)], WAIT).await {
        return Err("nodes did not connect".into());
    }
    Ok((a, b))
}

/// Hops measured per round of [`hop`] (after [`HOP_WARMUP`]).
const HOP_WARMUP: usize = 1000;

/// One round of the Go reign shape: node 1 sends a 64-byte message to a
/// mailbox of node 0 and the same task receives it; the time per hop.
async fn reign_hop_round(a: &Node, b: &Node, hops: usize) -> Result<Vec<Duration>> {
    let (here, inbox) = a.new_mailbox();
    let there = b.address_of(here.id());
    let data = ByteBuf::from(vec![0x5a; 64]);
    let mut samples = Vec::with_capacity(hops);
    for i in 0..hops + HOP_WARMUP {
        let t = Instant::now();
        there.send(data.clone()).map_err(|e| e.to_string())?;
        inbox.recv_timeout(WAIT).await.map_err(|e| e.to_string())?;
        if i >= HOP_WARMUP {
            samples.push(t.elapsed());
        }
    }
    Ok(samples)
}

/// One round of a raw TCP one-way hop on loopback in one thread: write 64
/// bytes on one end, read them on the other (no TLS, no other thread).
fn tcp_hop_round(hops: usize) -> Result<Vec<Duration>> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let mut tx = TcpStream::connect(listener.local_addr().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let (mut rx, _) = listener.accept().map_err(|e| e.to_string())?;
    tx.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf = [7u8; 64];
    let mut samples = Vec::with_capacity(hops);
    for i in 0..hops + HOP_WARMUP {
        let t = Instant::now();
        tx.write_all(&buf).map_err(|e| e.to_string())?;
        rx.read_exact(&mut buf).map_err(|e| e.to_string())?;
        if i >= HOP_WARMUP {
            samples.push(t.elapsed());
        }
    }
    Ok(samples)
}

fn mean_us(samples: &[Duration]) -> f64 {
    samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64 * 1e6
}

/// `reign-bench hop`: Go reign's `BenchmarkMinimalMessageSend` shape (two
/// nodes in this process, node 1 sends to a mailbox of node 0, the same
/// task receives), interleaved round by round with a raw loopback TCP
/// one-way hop in this process. Prints µs per op (the mean, as Go's
/// ns/op) and the percentiles of all rounds.
pub fn hop(hops: usize, rounds: usize) -> Result {
    runtime()?.block_on(async move {
        let (a, b) = two_nodes().await?;
        let mut ours = Vec::new();
        let mut raw = Vec::new();
        let mut our_means = Vec::new();
        let mut raw_means = Vec::new();
        for _ in 0..rounds.max(1) {
            let round = reign_hop_round(&a, &b, hops).await?;
            our_means.push(mean_us(&round));
            ours.extend(round);
            let round = tokio::task::spawn_blocking(move || tcp_hop_round(hops))
                .await
                .map_err(|e| e.to_string())??;
            raw_means.push(mean_us(&round));
            raw.extend(round);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (ours_us, raw_us) = (median(&mut our_means), median(&mut raw_means));
        for (name, per_op, samples) in [
            ("reign_hop", ours_us, &mut ours),
            ("tcp_hop", raw_us, &mut raw),
        ] {
            let mut fields = vec![
                ("name", name.to_string()),
                ("payload_b", "64".into()),
                ("us_per_op", format!("{per_op:.2}")),
            ];
            fields.extend(latency_fields(samples));
            line(&fields);
        }
        eprintln!(
            "one hop: reign {ours_us:.1} µs/op, raw TCP one-way {raw_us:.1} µs/op ({:.2}x); \
             {} of {} hops read by the receiving thread itself (inline receive)",
            ours_us / raw_us,
            a.stats().inline_receives,
            (hops + HOP_WARMUP) * rounds.max(1),
        );

        a.shutdown().await;
        b.shutdown().await;
        Ok(())
    })
}

// ----- the register cycle ----------------------------------------------------------

/// Cycles (and round trips) measured per round of [`regcycle`], after this
/// many unmeasured ones.
const CYCLE_WARMUP: usize = 200;

/// The name the register cycle claims and drops.
const CYCLE_NAME: &str = "bench.cycle";

/// One round of the register cycle: node 0 registers [`CYCLE_NAME`] for a
/// mailbox of its own, `sync`s (done once node 1 has applied the claim),
/// node 1 looks it up and must find that mailbox, node 0 unregisters it.
async fn reign_cycle_round(a: &Node, b: &Node, cycles: usize) -> Result<Vec<Duration>> {
    let (here, _inbox) = a.new_mailbox();
    let mut samples = Vec::with_capacity(cycles);
    for i in 0..cycles + CYCLE_WARMUP {
        let t = Instant::now();
        a.register(CYCLE_NAME, &here).map_err(|e| e.to_string())?;
        tokio::time::timeout(WAIT, a.sync())
            .await
            .map_err(|_| "sync did not complete")?;
        match b.lookup(CYCLE_NAME) {
            Some(found) if found.id() == here.id() => {}
            other => {
                return Err(format!(
                    "after sync node 1 looked up {:?}, not {}",
                    other.map(|a| a.id()),
                    here.id()
                ))
            }
        }
        a.unregister(CYCLE_NAME, &here);
        if i >= CYCLE_WARMUP {
            samples.push(t.elapsed());
        }
    }
    Ok(samples)
}

/// One round of round trips between the same two nodes: node 0 sends 64
/// bytes to a mailbox of node 1 whose task sends them back.
async fn reign_rtt_round(a: &Node, b: &Node, trips: usize) -> Result<Vec<Duration>> {
    let (here, inbox) = a.new_mailbox();
    let (echo, echo_box) = b.new_mailbox();
    let back = b.address_of(here.id());
    let echoer = tokio::spawn(async move {
        while let Ok(msg) = echo_box.recv().await {
            let Ok(data) = msg.downcast::<ByteBuf>() else {
                break;
            };
            if back.send(data).is_err() {
                break;
            }
        }
    });
    let there = a.address_of(echo.id());
    let data = ByteBuf::from(vec![0x5a; 64]);
    let mut samples = Vec::with_capacity(trips);
    for i in 0..trips + CYCLE_WARMUP {
        let t = Instant::now();
        there.send(data.clone()).map_err(|e| e.to_string())?;
        inbox.recv_timeout(WAIT).await.map_err(|e| e.to_string())?;
        if i >= CYCLE_WARMUP {
            samples.push(t.elapsed());
        }
    }
    // A message of another type ends the echo task.
    there.send(0u8).map_err(|e| e.to_string())?;
    echoer.await.map_err(|e| e.to_string())?;
    Ok(samples)
}

/// `reign-bench regcycle`: register, sync, lookup, unregister of a name on
/// a 2-node cluster (both nodes in this process, mutual TLS on loopback;
/// the lookup on the other node), interleaved round by round with round
/// trips between the same two nodes, so the cycle is also given in round
/// trips (Go reign's `BenchmarkRegisterUnregisterMailbox` is the
/// reference; its sync is local only).
pub fn regcycle(cycles: usize, rounds: usize) -> Result {
    runtime()?.block_on(async move {
        let (a, b) = two_nodes().await?;
        let mut ours = Vec::new();
        let mut rtts = Vec::new();
        let mut our_means = Vec::new();
        let mut rtt_means = Vec::new();
        for _ in 0..rounds.max(1) {
            let round = reign_cycle_round(&a, &b, cycles).await?;
            our_means.push(mean_us(&round));
            ours.extend(round);
            let round = reign_rtt_round(&a, &b, cycles).await?;
            rtt_means.push(mean_us(&round));
            rtts.extend(round);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (cycle_us, rtt_us) = (median(&mut our_means), median(&mut rtt_means));
        ours.sort();
        rtts.sort();
        let in_rtts = percentile(&ours, 0.5) / percentile(&rtts, 0.5);
        let mut fields = vec![
            ("name", "reign_registry_cycle".to_string()),
            ("us_per_op", format!("{cycle_us:.2}")),
        ];
        fields.extend(latency_fields(&mut ours));
        fields.push(("round_trips_p50", format!("{in_rtts:.2}")));
        fields.push(("round_trips_mean", format!("{:.2}", cycle_us / rtt_us)));
        line(&fields);
        let mut fields = vec![
            ("name", "reign_cycle_rtt".to_string()),
            ("payload_b", "64".into()),
            ("us_per_op", format!("{rtt_us:.2}")),
        ];
        fields.extend(latency_fields(&mut rtts));
        line(&fields);
        eprintln!(
            "register/sync/lookup/unregister: {cycle_us:.1} µs/op (p50 {:.1} µs); a round trip between the same nodes {rtt_us:.1} µs/op (p50 {:.1} µs): {in_rtts:.2} round trips at p50, {:.2} on means",
            percentile(&ours, 0.5),
            percentile(&rtts, 0.5),
            cycle_us / rtt_us
        );
        a.shutdown().await;
        b.shutdown().await;
        Ok(())
    })
}

// ----- latency under load ------------------------------------------------------

/// `reign-bench loaded`: request/reply latency to the echo service on node
/// 1 while another thread floods node 1's control mailbox with 64-byte
/// messages over the same link, beside the same requests without the
/// flood (in the same process, before it starts). A request refused at
/// once (`Full`) counts as failed and is tried again after 100 µs; its
/// sample runs from the first try, which is what its caller waited (before
/// 2026-11-30's lanes a refused request was left out of the samples, which
/// hid the requests the flood delayed most). Then, still under the
/// flood, ping-pong with the flooded mailbox itself: its pings must queue
/// behind the flood to keep their order, so this shows the bound of one
/// mailbox's queue in time (a refused ping is retried; the sample runs from
/// the first try).
pub fn loaded(requests: usize) -> Result {
    runtime()?.block_on(async move {
        let cluster = Cluster::start(1).await?;
        let sink = cluster
            .node
            .lookup(&protocol::control_name(1))
            .ok_or("no sink")?;
        let payload = ByteBuf::from(vec![1u8; 64]);
        let measure = |n: usize| {
            let node = cluster.node.clone();
            let payload = payload.clone();
            async move {
                let mut samples = Vec::with_capacity(n);
                let mut failed = 0u64;
                let deadline = Instant::now() + Duration::from_secs(30);
                while samples.len() < n && Instant::now() < deadline {
                    let t = Instant::now();
                    while Instant::now() < deadline {
                        match node.request(protocol::ECHO, payload.clone(), WAIT).await {
                            Ok(_) => {
                                samples.push(t.elapsed());
                                break;
                            }
                            Err(_) => {
                                failed += 1;
                                tokio::time::sleep(Duration::from_micros(100)).await;
                            }
                        }
                    }
                }
                (samples, failed)
            }
        };
        let (mut idle, _) = measure(requests).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flood = {
            let stop = stop.clone();
            let to = sink.clone();
            let data = ByteBuf::from(vec![0x5a; 64]);
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut seq = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let n = 10_000;
                    send_all(&to, n, |i| Bulk {
                        from: 0,
                        seq: seq + i,
                        data: data.clone(),
                    })?;
                    seq += n;
                }
                Ok::<_, String>((seq, started.elapsed()))
            })
        };
        // Let the flood fill the queue first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (mut busy, failed) = measure(requests).await;
        let (me, inbox) = cluster.node.new_mailbox();
        let mut same = Vec::with_capacity(requests / 4);
        let deadline = Instant::now() + Duration::from_secs(30);
        // Whether a ping never found room before the deadline: the flooded
        // mailbox is full, and the flood's sender, retrying in a tight
        // loop, takes each slot a read frees (a mailbox's share has no
        // fairness between its senders). Reported, not an error.
        let mut starved = false;
        'pings: while same.len() < requests / 4 && Instant::now() < deadline {
            let t = Instant::now();
            while let Err(e) = sink.send(Ping {
                reply_to: me.clone(),
            }) {
                if !matches!(e, SendError::Full) {
                    return Err(e.to_string());
                }
                if Instant::now() > deadline {
                    starved = true;
                    break 'pings;
                }
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
            inbox.recv_timeout(WAIT).await.map_err(|e| e.to_string())?;
            same.push(t.elapsed());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (sent, secs) = flood.join().map_err(|_| "the flood panicked")??;
        if idle.is_empty() || busy.is_empty() {
            return Err(format!("no samples (idle {}, under load {})", idle.len(), busy.len()));
        }
        let mut fields = vec![
            ("name", "reign_reqrep_loaded".to_string()),
            ("payload_b", "64".into()),
        ];
        fields.extend(latency_fields(&mut busy));
        fields.push(("failed", failed.to_string()));
        fields.push(("flood_msgs_per_s", rate(sent as f64, secs.as_secs_f64())));
        line(&fields);
        let mut fields = vec![
            ("name", "reign_reqrep_unloaded".to_string()),
            ("payload_b", "64".into()),
        ];
        fields.extend(latency_fields(&mut idle));
        line(&fields);
        if !same.is_empty() {
            let mut fields = vec![
                ("name", "reign_pingpong_flooded_mailbox".to_string()),
                ("payload_b", "64".into()),
            ];
            fields.extend(latency_fields(&mut same));
            fields.push(("starved", u8::from(starved).to_string()));
            line(&fields);
        }
        eprintln!(
            "request/reply under a 64 B flood: p50 {:.1} µs, p99 {:.1} µs, p999 {:.1} µs ({} failed at once; the flood sent {:.0} msg/s); unloaded p50 {:.1} µs, p99 {:.1} µs, p999 {:.1} µs",
            percentile(&busy, 0.5),
            percentile(&busy, 0.99),
            percentile(&busy, 0.999),
            failed,
            sent as f64 / secs.as_secs_f64(),
            percentile(&idle, 0.5),
            percentile(&idle, 0.99),
            percentile(&idle, 0.999),
        );
        if !same.is_empty() {
            eprintln!(
                "ping-pong with the flooded mailbox itself: p50 {:.1} µs, p99 {:.1} µs",
                percentile(&same, 0.5),
                percentile(&same, 0.99)
            );
        }
        if starved {
            eprintln!(
                "ping-pong with the flooded mailbox itself: {} pings in 30 s, then one found no room until the deadline (the flood's sender took every free slot)",
                same.len()
            );
        }
        wait_counted(&cluster, sent).await?;
        cluster.stop().await;
        Ok(())
    })
}

// ----- many cores ------------------------------------------------------------------

/// `reign-bench spread --peers N`: node 0 floods a mailbox on each of `N`
/// child nodes at once (one sending thread per peer, 64-byte messages),
/// to show where one node's single driver task caps its output; compare
/// `--peers 1` and `--peers 2` in the same run.
pub fn spread(peers: u16, messages: u64) -> Result {
    runtime()?.block_on(async move {
        let cluster = Cluster::start(peers).await?;
        let data = ByteBuf::from(vec![0x5a; 64]);
        let mut sinks = Vec::new();
        for of in 1..=peers {
            sinks.push(
                cluster
                    .node
                    .lookup(&protocol::control_name(of))
                    .ok_or("no sink")?,
            );
        }
        let started = Instant::now();
        let mut senders = Vec::new();
        for to in sinks {
            let data = data.clone();
            senders.push(tokio::task::spawn_blocking(move || {
                send_all(&to, messages, |seq| Bulk {
                    from: 0,
                    seq,
                    data: data.clone(),
                })
            }));
        }
        for sender in senders {
            sender.await.map_err(|e| e.to_string())??;
        }
        for of in 1..=peers {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let report = cluster.stats(of).await?;
                if report
                    .counted
                    .get(&0)
                    .is_some_and(|s| s.received >= messages)
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("node {of} did not count {messages}"));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let total = messages * u64::from(peers);
        line(&[
            ("name", format!("reign_spread_{peers}")),
            ("peers", peers.to_string()),
            ("payload_b", "64".into()),
            ("msgs_per_s", rate(total as f64, secs)),
            ("secs", format!("{secs:.2}")),
        ]);
        eprintln!(
            "one node to {peers} peer(s) at once: {:.0} msg/s in all",
            total as f64 / secs
        );
        cluster.stop().await;
        Ok(())
    })
}
