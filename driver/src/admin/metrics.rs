//! `/metrics`: a [`Status`] in the Prometheus text format (OpenMetrics),
//! encoded by the `prometheus-client` crate, never by hand.
//!
//! Every scrape builds a fresh registry from one status snapshot, so the
//! figures of one page are consistent with each other and nothing is kept
//! between scrapes. Names start with `reign_`; counters end in `_total`.
//! Per-peer figures carry a `peer` label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::status::{PeerStatus, Status};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeInfo {
    node: String,
    version: String,
    incarnation: String,
}

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Renders `status` as a metrics page.
pub(super) fn encode(status: &Status) -> String {
    let mut registry = Registry::with_prefix("reign");
    registry.register(
        "node",
        "The node's id, version and incarnation",
        Info::new(NodeInfo {
            node: status.node.to_string(),
            version: status.version.clone(),
            incarnation: status.incarnation.to_string(),
        }),
    );
    gauge_f64(
        &mut registry,
        "uptime_seconds",
        "Seconds since the node started",
        status.uptime_secs,
    );
    let up = status.peers.iter().filter(|p| p.state == "up").count();
    gauge(
        &mut registry,
        "peers",
        "Other cluster members known",
        status.peers.len() as u64,
    );
    gauge(
        &mut registry,
        "peers_up",
        "Other cluster members connected",
        up as u64,
    );
    gauge(
        &mut registry,
        "mailboxes",
        "Open mailboxes",
        status.mailboxes.count as u64,
    );
    gauge(
        &mut registry,
        "names",
        "Names claimed in this node's view",
        status.names.len() as u64,
    );
    gauge(
        &mut registry,
        "groups",
        "Service groups in this node's view",
        status.groups.len() as u64,
    );
    gauge(
        &mut registry,
        "topics",
        "Topics with subscribers in this node's view",
        status.topics.len() as u64,
    );
    for (name, value) in &status.counters {
        let counter = Counter::<u64>::default();
        counter.inc_by(*value);
        registry.register(name.as_str(), counter_help(name), counter);
    }
    for (name, value) in &status.requests {
        gauge(
            &mut registry,
            &format!("requests_{name}"),
            &format!("Request tables: {name} (RequestTables::{name})"),
            *value,
        );
    }
    peer_metrics(&mut registry, &status.peers);
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => text,
        Err(e) => format!("# encoding failed: {e}\n"),
    }
}

/// A counter's help text: its `NodeStats` doc comment on one line.
fn counter_help(name: &str) -> String {
    let doc = reign_proto::NodeStats::DOCS
        .iter()
        .find(|(field, _)| *field == name)
        .map_or("", |(_, doc)| doc);
    let text = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = text.trim_end_matches('.');
    if text.is_empty() {
        format!("NodeStats::{name}")
    } else {
        text.to_owned()
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, gauge);
}

fn gauge_f64(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let gauge = F64Gauge::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

/// One family per per-peer figure, one series per peer.
fn peer_metrics(registry: &mut Registry, peers: &[PeerStatus]) {
    type Get = fn(&PeerStatus) -> u64;
    let counters: [(&str, &str, Get); 8] = [
        (
            "peer_messages_sent",
            "User messages sent to the peer",
            |p| p.messages_out,
        ),
        (
            "peer_messages_received",
            "User messages received from the peer",
            |p| p.messages_in,
        ),
        ("peer_bytes_sent", "Plaintext bytes sent to the peer", |p| {
            p.bytes_out
        }),
        (
            "peer_bytes_received",
            "Plaintext bytes received from the peer",
            |p| p.bytes_in,
        ),
        (
            "peer_connects",
            "Connections established to the peer",
            |p| p.connects,
        ),
        ("peer_disconnects", "Connections to the peer lost", |p| {
            p.disconnects
        }),
        (
            "peer_dropped_unreachable",
            "Sends dropped because the peer was not connected",
            |p| p.dropped_unreachable,
        ),
        (
            "peer_dropped_full",
            "Sends refused because the peer's queue was full",
            |p| p.dropped_full,
        ),
    ];
    for (name, help, get) in counters {
        let family = Family::<PeerLabel, Counter>::default();
        for peer in peers {
            family.get_or_create(&label(peer)).inc_by(get(peer));
        }
        registry.register(name, help, family);
    }
    let gauges: [(&str, &str, Get); 3] = [
        (
            "peer_up",
            "Whether a connection to the peer is up (1) or not (0)",
            |p| u64::from(p.state == "up"),
        ),
        (
            "peer_queued_bytes",
            "Bytes waiting in the peer's outbound queue",
            |p| p.queued_bytes,
        ),
        (
            "peer_unread_bytes",
            "Bytes the peer's messages hold here, not yet received",
            |p| p.unread_bytes,
        ),
    ];
    for (name, help, get) in gauges {
        let family = Family::<PeerLabel, Gauge>::default();
        for peer in peers {
            family
                .get_or_create(&label(peer))
                .set(i64::try_from(get(peer)).unwrap_or(i64::MAX));
        }
        registry.register(name, help, family);
    }
    let rtt = Family::<PeerLabel, F64Gauge>::default();
    for peer in peers {
        if let Some(us) = peer.rtt_us {
            rtt.get_or_create(&label(peer)).set(us as f64 / 1e6);
        }
    }
    registry.register(
        "peer_rtt_seconds",
        "Round trip of the last answered ping to the peer",
        rtt,
    );
}

fn label(peer: &PeerStatus) -> PeerLabel {
    PeerLabel {
        peer: peer.node.to_string(),
    }
}
