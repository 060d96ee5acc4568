//! The built-in service every `reign node` runs: a control mailbox
//! registered as `node-<id>` (pings, counted messages, stats), an echo
//! member, a broadcast member and news subscriber, and a tunnel sink — and
//! the sink's other end, [`stream_to_sink`], which the demo and the tunnel
//! benchmark both measure with.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reign_proto::{Message, Request};
use reign_tokio::Node;

use crate::protocol::{
    self, AddSubscribers, CountState, Echoed, Event, NameSeen, NodeReport, Ping, Pong, StartLoad,
    StatsQuery, WatchName,
};
use reign_proto::poison::lock;

#[derive(Default)]
struct Counters {
    echo_requests: AtomicU64,
    broadcasts: AtomicU64,
    publications: AtomicU64,
    tunnel_bytes: AtomicU64,
    sent: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// Counted messages per sender, owned by the control task (no lock on the
/// hot path of a benchmark's sink).
type CountBook = std::collections::BTreeMap<u16, CountState>;

fn count(book: &mut CountBook, from: u16, seq: u64) {
    let state = book.entry(from).or_default();
    state.received += 1;
    if seq == state.next {
        state.next += 1;
    } else if seq > state.next {
        state.gaps += seq - state.next;
        state.next = seq + 1;
    } else {
        state.duplicates += 1;
    }
}

impl Counters {
    fn report(&self, node: &Node, counted: &CountBook) -> NodeReport {
        NodeReport {
            node: node.id().0,
            connected: node
                .peer_stats()
                .iter()
                .filter(|p| p.connected)
                .map(|p| p.node.0)
                .collect(),
            echo_requests: self.echo_requests.load(Ordering::Relaxed),
            broadcasts: self.broadcasts.load(Ordering::Relaxed),
            publications: self.publications.load(Ordering::Relaxed),
            tunnel_bytes: self.tunnel_bytes.load(Ordering::Relaxed),
            counted: counted.clone(),
            sent: lock(&self.sent).clone(),
            rss_kb: protocol::rss_kb(),
            peak_rss_kb: protocol::peak_rss_kb(),
        }
    }
}

/// Starts the built-in service on `node` (spawns its tasks on tokio).
pub fn start(node: &Node) -> Result<(), String> {
    protocol::register();
    let counters = Arc::new(Counters::default());
    let id = node.id().0;
    let err = |e: reign_proto::RegistryError| e.to_string();

    // Control: pings, counted messages, stats.
    let (control, control_box) = node.new_mailbox();
    node.register(&protocol::control_name(id), &control)
        .map_err(err)?;
    let c = counters.clone();
    let loader = start_loader(node, &counters);
    let n = node.clone();
    tokio::spawn(async move {
        let mut book = CountBook::new();
        while let Ok(msg) = control_box.recv().await {
            handle_control(msg, &n, &c, &mut book, &loader);
        }
    });

    // Echo member.
    let (echo, echo_box) = node.new_mailbox();
    node.join(protocol::ECHO, &echo).map_err(err)?;
    let c = counters.clone();
    tokio::spawn(async move {
        while let Ok(request) = echo_box.recv_request().await {
            c.echo_requests.fetch_add(1, Ordering::Relaxed);
            let (msg, responder) = request.into_parts();
            let _ = match msg.downcast::<serde_bytes::ByteBuf>() {
                Ok(payload) => responder.reply(Echoed { node: id, payload }),
                Err(_) => responder.reply_error("echo takes bytes"),
            };
        }
    });

    // Broadcast member and news subscriber.
    let (events, events_box) = node.new_mailbox();
    node.join(protocol::BROADCAST, &events).map_err(err)?;
    let (news, news_box) = node.new_mailbox();
    node.subscribe(protocol::NEWS, &news).map_err(err)?;
    let c = counters.clone();
    tokio::spawn(async move {
        while let Ok(msg) = events_box.recv().await {
            if msg.is::<Event>() {
                c.broadcasts.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let c = counters.clone();
    tokio::spawn(async move {
        while let Ok(msg) = news_box.recv().await {
            if msg.is::<Event>() {
                c.publications.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    // Tunnel sink: counts bytes; an empty message asks for the total back.
    let (sink, sink_box) = node.new_mailbox();
    node.join(protocol::SINK, &sink).map_err(err)?;
    let c = counters.clone();
    let n = node.clone();
    tokio::spawn(async move {
        while let Ok(incoming) = sink_box.recv_tunnel().await {
            let Ok(tunnel) = n.accept_tunnel(incoming) else {
                continue;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let mut total: u64 = 0;
                let idle = std::time::Duration::from_secs(60);
                while let Ok(message) = tunnel.recv(idle).await {
                    if message.is_empty() {
                        let _ = tunnel.send(total.to_le_bytes().to_vec(), idle).await;
                        continue;
                    }
                    total += message.len() as u64;
                    c.tunnel_bytes
                        .fetch_add(message.len() as u64, Ordering::Relaxed);
                }
            });
        }
    });
    Ok(())
}

/// Starts the loader thread: it carries out [`StartLoad`] commands one after
/// another, continuing each target's sequence numbers across commands so
/// the receiver can check that nothing was lost or repeated. Sends never
/// block; a full queue means waiting a little for it to drain.
fn start_loader(node: &Node, counters: &Arc<Counters>) -> std::sync::mpsc::Sender<StartLoad> {
    let (tx, rx) = std::sync::mpsc::channel::<StartLoad>();
    let node = node.clone();
    let counters = counters.clone();
    std::thread::spawn(move || {
        let from = node.id().0;
        let mut next: std::collections::BTreeMap<String, u64> = Default::default();
        while let Ok(load) = rx.recv() {
            let Some(target) = node.lookup(&load.target) else {
                tracing::warn!(target = load.target, "load target is not registered");
                continue;
            };
            let seq = next.entry(load.target.clone()).or_insert(0);
            let end = *seq + load.count;
            while *seq < end {
                match target.send(protocol::Count {
                    from,
                    seq: *seq,
                    pad: [0; 48],
                }) {
                    Ok(()) => *seq += 1,
                    Err(reign_proto::SendError::Full) => {
                        std::thread::sleep(std::time::Duration::from_micros(100))
                    }
                    Err(e) => {
                        // The count lets a receiver check that everything
                        // accepted arrived (a shutdown drains it).
                        tracing::warn!(error = %e, name = %load.target, sent = *seq, "load stopped");
                        break;
                    }
                }
            }
            lock(&counters.sent).insert(load.target, *seq);
        }
    });
    tx
}

fn handle_control(
    msg: Message,
    node: &Node,
    counters: &Arc<Counters>,
    book: &mut CountBook,
    loader: &std::sync::mpsc::Sender<StartLoad>,
) {
    let id = node.id().0;
    if msg.is_bytes() {
        if let Some((from, seq)) = msg
            .into_bytes()
            .ok()
            .and_then(|b| protocol::parse_raw_count(&b))
        {
            count(book, from, seq);
        }
    } else if msg.is::<protocol::Bulk>() {
        if let Ok(bulk) = msg.downcast::<protocol::Bulk>() {
            count(book, bulk.from, bulk.seq);
        }
    } else if msg.is::<protocol::Count>() {
        if let Ok(c) = msg.downcast::<protocol::Count>() {
            count(book, c.from, c.seq);
        }
    } else if msg.is::<Request>() {
        if let Ok(request) = msg.take::<Request>() {
            let (query, responder) = request.into_parts();
            let _ = if query.is::<StatsQuery>() {
                responder.reply(counters.report(node, book))
            } else {
                responder.reply_error("unknown request")
            };
        }
    } else if msg.is::<StartLoad>() {
        if let Ok(load) = msg.downcast::<StartLoad>() {
            let _ = loader.send(load);
        }
    } else if msg.is::<AddSubscribers>() {
        if let Ok(add) = msg.downcast::<AddSubscribers>() {
            add_subscribers(node, counters, add);
        }
    } else if msg.is::<WatchName>() {
        if let Ok(watch) = msg.downcast::<WatchName>() {
            let node = node.clone();
            tokio::spawn(async move {
                // Polled, not pushed: this measures when the name becomes
                // visible, to within the poll interval.
                while !node.seen_names(&[&watch.name])[0] {
                    tokio::time::sleep(std::time::Duration::from_micros(200)).await;
                }
                let _ = watch.reply_to.send(NameSeen {
                    node: node.id().0,
                    name: watch.name,
                });
            });
        }
    } else if let Ok(ping) = msg.downcast::<Ping>() {
        let _ = ping.reply_to.send(Pong { node: id });
    }
}

fn add_subscribers(node: &Node, counters: &Arc<Counters>, add: AddSubscribers) {
    for _ in 0..add.count {
        let (subscriber, mailbox) = node.new_mailbox();
        if node.subscribe(&add.topic, &subscriber).is_err() {
            return;
        }
        let c = counters.clone();
        tokio::spawn(async move {
            while mailbox.recv().await.is_ok() {
                c.publications.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// What [`stream_to_sink`] measured.
#[derive(Clone, Copy, Debug)]
pub struct SinkRun {
    /// The bytes the sink counted on its end of the tunnel.
    pub bytes: u64,
    /// From the first message sent to the sink's count received.
    pub elapsed: Duration,
}

impl SinkRun {
    /// Throughput in MB (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// Streams `mib` MiB in 1 MiB messages through a tunnel from `node` to a
/// member of [`protocol::SINK`], then asks for the sink's count (an empty
/// message) and closes the tunnel. `wait` bounds opening the tunnel and
/// each send and receive. Opening is not timed; the rest is.
pub async fn stream_to_sink(node: &Node, mib: usize, wait: Duration) -> Result<SinkRun, String> {
    let tunnel = node
        .tunnel(protocol::SINK, wait)
        .await
        .map_err(|e| e.to_string())?;
    let chunk = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    for _ in 0..mib {
        tunnel
            .send(chunk.clone(), wait)
            .await
            .map_err(|e| e.to_string())?;
    }
    tunnel
        .send(Vec::new(), wait)
        .await
        .map_err(|e| e.to_string())?;
    let total = tunnel.recv(wait).await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    let bytes = u64::from_le_bytes(
        total
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or("the sink's count is short")?,
    );
    tunnel.close();
    Ok(SinkRun { bytes, elapsed })
}
