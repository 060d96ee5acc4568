//! The messages of the built-in node service that `reign node` runs and
//! `reign demo` and the multi-process tests talk to. Registered under stable
//! wire names, so every build of `reign` speaks them.

use std::collections::BTreeMap;

use reign_proto::Address;
use serde::{Deserialize, Serialize};

/// The name each node registers its control mailbox under.
pub fn control_name(node: u16) -> String {
    format!("node-{node}")
}

/// The service group of the echo members.
pub const ECHO: &str = "echo";
/// The service group that receives demo broadcasts.
pub const BROADCAST: &str = "demo.broadcast";
/// The topic demo publications go to.
pub const NEWS: &str = "demo.news";
/// The service group that accepts tunnels and counts their bytes.
pub const SINK: &str = "sink";

/// Asks the control mailbox to answer `reply_to` with a [`Pong`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ping {
    /// Where the pong goes.
    pub reply_to: Address,
}

/// The answer to a [`Ping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The answering node.
    pub node: u16,
}

/// A one-way message the control mailbox counts, checking that every
/// sender's sequence numbers arrive once and in order.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Count {
    /// The sending node.
    pub from: u16,
    /// The sender's sequence number, from 0.
    pub seq: u64,
    /// Padding to the payload size being measured.
    #[serde(with = "serde_bytes")]
    pub pad: [u8; 48],
}

/// A counted one-way message of any size, like [`Count`] (benchmarks use
/// it to measure payloads from 64 bytes to 64 KiB).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bulk {
    /// The sending node.
    pub from: u16,
    /// The sender's sequence number, from 0.
    pub seq: u64,
    /// The payload.
    pub data: serde_bytes::ByteBuf,
}

/// Bytes at the start of a raw counted message ([`raw_count_header`]):
/// the sender's sequence number (u64) and node (u16), little-endian.
pub const RAW_COUNT_LEN: usize = 10;

/// The start of a raw counted message (sent with `Address::send_bytes`,
/// counted like a [`Bulk`]); any payload may follow.
pub fn raw_count_header(from: u16, seq: u64) -> [u8; RAW_COUNT_LEN] {
    let mut header = [0u8; RAW_COUNT_LEN];
    header[..8].copy_from_slice(&seq.to_le_bytes());
    header[8..].copy_from_slice(&from.to_le_bytes());
    header
}

/// The sender and sequence number of a raw counted message, if it is long
/// enough to hold them.
pub fn parse_raw_count(bytes: &[u8]) -> Option<(u16, u64)> {
    let seq = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let from = u16::from_le_bytes(bytes.get(8..RAW_COUNT_LEN)?.try_into().ok()?);
    Some((from, seq))
}

/// Tells a node to subscribe `count` more mailboxes to `topic`, each
/// counting what it receives in [`NodeReport::publications`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AddSubscribers {
    /// The topic.
    pub topic: String,
    /// How many subscribers to add.
    pub count: u32,
}

/// Asks a node to tell `reply_to` (with [`NameSeen`]) as soon as `name`
/// is visible in its registry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WatchName {
    /// The name to wait for.
    pub name: String,
    /// Where the answer goes.
    pub reply_to: Address,
}

/// The answer to a [`WatchName`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameSeen {
    /// The answering node.
    pub node: u16,
    /// The name.
    pub name: String,
}

/// Tells a node to send `count` [`Count`] messages to the mailbox
/// registered as `target`, as fast as the outbound queue allows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StartLoad {
    /// The registered name to send to.
    pub target: String,
    /// How many messages.
    pub count: u64,
}

/// A request for the node's [`NodeReport`].
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct StatsQuery;

/// What one sender's counted messages looked like on arrival.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountState {
    /// Messages received.
    pub received: u64,
    /// The next sequence number expected.
    pub next: u64,
    /// Sequence numbers skipped (lost messages).
    pub gaps: u64,
    /// Sequence numbers seen again or going backwards.
    pub duplicates: u64,
}

/// The node's counters, answered to a [`StatsQuery`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node.
    pub node: u16,
    /// Echo requests answered.
    pub echo_requests: u64,
    /// Broadcasts received.
    pub broadcasts: u64,
    /// Publications received.
    pub publications: u64,
    /// Bytes received through tunnels.
    pub tunnel_bytes: u64,
    /// Counted messages per sending node.
    pub counted: BTreeMap<u16, CountState>,
    /// Counted messages this node sent, per target name (from `StartLoad`).
    pub sent: BTreeMap<String, u64>,
    /// Resident memory of the process, in KiB (0 where unknown).
    pub rss_kb: u64,
    /// Peak resident memory of the process, in KiB (0 where unknown).
    pub peak_rss_kb: u64,
    /// The peers the node is connected to, by id.
    pub connected: Vec<u16>,
}

/// The reply of an echo member.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Echoed {
    /// The member's node.
    pub node: u16,
    /// The request's payload, unchanged.
    pub payload: serde_bytes::ByteBuf,
}

/// A demo event (broadcast or publication).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Event {
    /// Its sequence number.
    pub seq: u64,
}

/// Registers every message type above (idempotent).
pub fn register() {
    use reign_proto::register_type_named as reg;
    let results = [
        reg::<Ping>("reign.cli.Ping"),
        reg::<Pong>("reign.cli.Pong"),
        reg::<Count>("reign.cli.Count"),
        reg::<StatsQuery>("reign.cli.StatsQuery"),
        reg::<StartLoad>("reign.cli.StartLoad"),
        reg::<Bulk>("reign.cli.Bulk"),
        reg::<AddSubscribers>("reign.cli.AddSubscribers"),
        reg::<WatchName>("reign.cli.WatchName"),
        reg::<NameSeen>("reign.cli.NameSeen"),
        reg::<NodeReport>("reign.cli.NodeReport"),
        reg::<Echoed>("reign.cli.Echoed"),
        reg::<Event>("reign.cli.Event"),
    ];
    for r in results {
        if let Err(e) = r {
            tracing::error!(error = %e, "registering a message type failed");
        }
    }
}

/// Resident memory of this process in KiB, from /proc (0 elsewhere).
pub fn rss_kb() -> u64 {
    read_status_kb("VmRSS:")
}

/// Peak resident memory of this process in KiB, from /proc (0 elsewhere).
pub fn peak_rss_kb() -> u64 {
    read_status_kb("VmHWM:")
}

fn read_status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
