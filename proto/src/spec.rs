//! The cluster spec: which nodes exist, where they listen, and the TLS
//! material that proves who they are.
//!
//! The JSON form uses the field names of Go reign's `ClusterSpec`, so an
//! existing reign spec file works:
//!
//! ```json
//! {
//!   "nodes": [
//!     { "id": 0, "address": "127.0.0.1:29000" },
//!     { "id": 1, "address": "127.0.0.1:29001", "listen_address": "127.0.0.1:29001" }
//!   ],
//!   "node_cert_path": "node_%d.crt",
//!   "node_key_path": "node_%d.key",
//!   "cluster_cert_path": "cluster.crt"
//! }
//! ```
//!
//! `%d` in a path is replaced by the node id. Each `*_path` has a `*_pem`
//! twin holding the PEM text itself, which wins when both are set. Relative
//! paths in a spec loaded from a file are relative to that file's folder.
//! An optional `tuning` object overrides [`Tuning`] fields; its durations
//! are milliseconds (`250`) or a whole number with a unit (`"30s"`,
//! `"500ms"`, `"2m"`, `"1h"`: [`parse_duration`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use serde::{Deserialize, Serialize};

pub use crate::error::SpecError;
use crate::id::NodeId;
pub use crate::tls::NodeMaterial;

/// One node of the cluster (Go reign's `NodeDescriptor`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDescriptor {
    /// The node's id.
    pub id: u16,
    /// Where other nodes dial it (`host:port`).
    #[serde(default)]
    pub address: String,
    /// Where it listens, if not `address` (e.g. `0.0.0.0:port` behind NAT).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub listen_address: String,
    /// The local address it dials from, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local_address: String,
}

impl NodeDescriptor {
    /// The address to bind the listener to.
    pub fn listen_addr(&self) -> &str {
        if self.listen_address.is_empty() {
            &self.address
        } else {
            &self.listen_address
        }
    }
}

/// Timers and limits of the protocol. Every field has a default suited to a
/// production cluster; tests shorten the timers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tuning {
    /// How often a connected peer is pinged.
    #[serde(with = "millis")]
    pub ping_interval: Duration,
    /// Unanswered pings in a row (with nothing else received) after which a
    /// peer is declared down.
    pub max_ping_failures: u32,
    /// A peer that sends nothing at all for this long is declared down.
    #[serde(with = "millis")]
    pub read_deadline: Duration,
    /// TLS plus the reign handshake must finish within this time.
    #[serde(with = "millis")]
    pub handshake_timeout: Duration,
    /// First reconnection delay after a connection is lost.
    #[serde(with = "millis")]
    pub backoff_initial: Duration,
    /// Largest reconnection delay; the delay doubles up to here, with jitter.
    #[serde(with = "millis")]
    pub backoff_max: Duration,
    /// Hard maximum frame length; larger frames close the connection.
    pub max_frame_len: usize,
    /// Largest message (encoded) that may be sent or received.
    pub max_message_len: usize,
    /// Bytes of small messages (up to 64 KiB each) that may wait in the
    /// outbound queue to one peer. A send that would go over fails with
    /// `SendError::Full` and is not queued.
    pub outbound_queue_bytes: usize,
    /// Bytes of large messages (sent in fragments) that may wait to one
    /// peer, counted apart so that one large message never locks small ones
    /// out. One message is always accepted when none waits, so the most
    /// this queue holds is the bound or one message, whichever is larger.
    pub outbound_bulk_bytes: usize,
    /// Ciphertext handed to the driver but not yet written to the socket,
    /// per connection, before the core stops producing more.
    pub write_window: usize,
    /// Inbound connections that may be handshaking at once; more are refused.
    pub max_handshaking: usize,
    /// Bytes each end of a tunnel may have in flight before the other end
    /// grants more credit.
    pub tunnel_window: usize,
    /// Bytes one peer's messages may hold on this node, delivered but not
    /// yet dropped by the application, before the node stops reading from
    /// that peer (TCP pushes back; the sender's queue fills and its sends
    /// return `Full`) until consumers bring it under half. A last resort
    /// for the node's memory, which many slow mailboxes together could
    /// otherwise take: one slow mailbox is held to its own share
    /// ([`mailbox_unread_bytes`](Tuning::mailbox_unread_bytes)) and never
    /// pauses a link. The bound in effect is never below
    /// `max_message_len + 2 × mailbox_unread_bytes`, so one message of the
    /// largest size waiting in a mailbox at its hard cap never pauses a
    /// link either; the node holds at most that much per connected peer.
    /// Default 256 MiB.
    pub max_unread_bytes: usize,
    /// Whether nodes missing from this node's spec may join by connecting
    /// (they still need a certificate signed by the cluster CA that names
    /// their id). Off: only the nodes in the spec are accepted.
    pub accept_joins: bool,
    /// How often this node tells one random peer which members it knows,
    /// so that views that drifted apart (partitions, lost joins) converge.
    #[serde(with = "millis")]
    pub gossip_interval: Duration,
    /// A member learned by gossip (not in the spec) that has been
    /// unreachable this long is forgotten. Members in the spec never are.
    #[serde(with = "millis")]
    pub forget_after: Duration,
    // Graceful shutdown drain (issue 15, item 3).
    /// How long a graceful shutdown (`shutdown()`, SIGTERM of `reign node`)
    /// may spend delivering what `send` already accepted before it says
    /// goodbye, as NATS's drain: new sends are refused from its start, the
    /// outbound queues to connected peers are written out, and whatever is
    /// still queued when this passes is dropped, counted
    /// (`NodeStats::dropped_at_shutdown`) and logged. 0 = no drain: the
    /// queues are dropped (and counted) at once. Default 5 s: a healthy
    /// link empties the largest queue the outbound bounds allow (32 MiB
    /// per peer) in well under a second, and 5 s leaves a slow link room
    /// while staying well inside the stop grace of process supervisors
    /// (systemd 90 s, Kubernetes 30 s).
    #[serde(with = "millis")]
    pub drain_timeout: Duration,
    // registry caps (issue 15, item 7)
    /// Longest registered name, service group or topic, in bytes. A peer
    /// that sends a longer one is cut off. 255: names are identifiers
    /// (Erlang caps atoms, and so registered names, at 255 characters), and
    /// with the per-node caps below it bounds what one peer can make this
    /// node hold to about 10 MB even when every entry is as long as
    /// allowed.
    pub max_name_len: usize,
    /// Names one node may claim: this node's own claims past it are
    /// refused, a peer that claims more is cut off. 8,192: far more
    /// singletons than an application registers, and at most ~3 MB held
    /// for one peer.
    pub max_names_per_node: usize,
    /// Service group memberships (a group and one member) one node may
    /// hold: local joins past it are refused, a peer that holds more is cut
    /// off. 8,192: a large worker pool per node, ~4 MB at most per peer.
    pub max_group_members_per_node: usize,
    /// Topics one node may have subscribers to: local subscriptions to a
    /// new topic past it are refused, a peer interested in more is cut off.
    /// 8,192, ~3 MB at most per peer. Every node of a cluster should share
    /// these four caps: a node allowed more than its peers can be cut off.
    pub max_topics_per_node: usize,
    // --- outside input (issue 15 item 9: the handshake pool against slow-loris) ---
    /// Inbound connections from one source address (IP, port ignored) that
    /// may be handshaking at once; more from that address are refused while
    /// connections from other addresses are still taken. Kept well under
    /// [`max_handshaking`](Tuning::max_handshaking) so that one address,
    /// however many sockets it opens, can never fill the pool.
    pub max_handshaking_per_address: usize,
    /// An inbound connection that has sent nothing (not even the first byte
    /// of its TLS ClientHello) this long after it was accepted is closed: a
    /// real dialer writes its ClientHello as soon as it connects, so a silent
    /// socket only holds a handshake slot. The whole handshake still has
    /// [`handshake_timeout`](Tuning::handshake_timeout).
    #[serde(with = "millis")]
    pub first_bytes_timeout: Duration,
    // Link budgets (issue 15, items 1 and 2).
    /// Bytes of messages from other nodes one mailbox should hold queued,
    /// unread: its share, counted as what they hold in memory (each
    /// payload plus [`MESSAGE_COST`](crate::MESSAGE_COST), 287 bytes on
    /// 64-bit targets, for its queue slots and frame header; a share of
    /// 16 MiB holds about 47,800 messages of 64 bytes). A mailbox that
    /// reaches it tells each node sending to it that it is busy, and their
    /// later sends to it fail with `SendError::Full` at once (as a full
    /// local mailbox's do) until it is read down to half its share.
    /// Messages already on the way are still queued, up to twice the share
    /// in payload bytes; beyond that they are dropped and counted (`NodeStats::dropped_unread_share`, one log line per
    /// episode). A mailbox holding nothing takes a message of any size up to
    /// `max_message_len`, so one large message always gets through. One
    /// consumer that does not keep up thus holds back only its own senders:
    /// the link keeps carrying registry sync, requests, replies, close
    /// notifications and every other mailbox's messages. Default 16 MiB,
    /// the former per-peer budget, now each mailbox's.
    pub mailbox_unread_bytes: usize,
}

impl From<&Tuning> for crate::registry::RegistryLimits {
    /// The registry caps a node with this tuning applies.
    fn from(tuning: &Tuning) -> crate::registry::RegistryLimits {
        crate::registry::RegistryLimits {
            max_name_len: tuning.max_name_len,
            max_names_per_node: tuning.max_names_per_node,
            max_group_members_per_node: tuning.max_group_members_per_node,
            max_topics_per_node: tuning.max_topics_per_node,
        }
    }
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            ping_interval: Duration::from_secs(30),
            max_ping_failures: 5,
            read_deadline: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            max_frame_len: crate::codec::DEFAULT_MAX_FRAME_LEN,
            max_message_len: 128 << 20,
            outbound_queue_bytes: 16 << 20,
            outbound_bulk_bytes: 16 << 20,
            write_window: 1 << 20,
            max_handshaking: 64,
            tunnel_window: 1 << 20,
            max_unread_bytes: 256 << 20,
            accept_joins: true,
            gossip_interval: Duration::from_secs(10),
            forget_after: Duration::from_secs(120),
            // Graceful shutdown drain (issue 15, item 3).
            drain_timeout: Duration::from_secs(5),
            // registry caps (issue 15, item 7)
            max_name_len: crate::registry::MAX_NAME_LEN,
            max_names_per_node: crate::registry::MAX_ENTRIES_PER_NODE,
            max_group_members_per_node: crate::registry::MAX_ENTRIES_PER_NODE,
            max_topics_per_node: crate::registry::MAX_ENTRIES_PER_NODE,
            // outside input (issue 15 item 9): a quarter of the pool per
            // address (four addresses are needed to fill it; a NAT with a
            // few nodes behind it still handshakes them all at once), and
            // a second for the first bytes, which a dialer writes at once.
            max_handshaking_per_address: 16,
            first_bytes_timeout: Duration::from_secs(1),
            // Link budgets (issue 15, items 1 and 2).
            mailbox_unread_bytes: 16 << 20,
        }
    }
}

impl Tuning {
    /// Short timers for tests on loopback: pings every 100 ms, down after
    /// 5 misses, handshake within 2 s, reconnect from 20 ms up to 500 ms.
    pub fn fast() -> Tuning {
        Tuning {
            ping_interval: Duration::from_millis(100),
            max_ping_failures: 5,
            read_deadline: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            gossip_interval: Duration::from_millis(500),
            forget_after: Duration::from_secs(5),
            // Graceful shutdown drain (issue 15, item 3): loopback drains
            // fast; a test with a stalled peer should not wait 5 s.
            drain_timeout: Duration::from_secs(2),
            // outside input (issue 15 item 9): as long as the (short) test
            // handshake timeout, so a loaded test machine slow to write a
            // ClientHello is not cut off; tests of the deadline set it.
            first_bytes_timeout: Duration::from_secs(2),
            ..Tuning::default()
        }
    }
}

/// The longest duration text [`parse_duration`] reads: far more than any
/// real value needs ("18446744073709551615ms" is 22 characters), and it keeps
/// a hostile spec's error message short.
pub const MAX_DURATION_TEXT: usize = 32;

/// The units a tuning duration may be written in, with their milliseconds.
const DURATION_UNITS: [(&str, u64); 4] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

/// Reads a tuning duration written with a unit: a whole number followed by
/// `ms`, `s`, `m` or `h` (`"500ms"`, `"30s"`, `"2m"`, `"1h"`; no space, no
/// fraction). The bound is the one a plain number of milliseconds has:
/// `u64::MAX` milliseconds. Used for every duration of [`Tuning`], which
/// also takes a plain number of milliseconds.
///
/// ```
/// use std::time::Duration;
/// use reign_proto::spec::parse_duration;
///
/// assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert!(parse_duration("30 seconds").unwrap_err().contains("ms, s, m or h"));
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const WANT: &str = "a duration is a number of milliseconds or a whole number with a unit: \
                        ms, s, m or h (\"500ms\", \"30s\")";
    if text.len() > MAX_DURATION_TEXT {
        return Err(format!(
            "a duration of {} characters is too long (at most {MAX_DURATION_TEXT})",
            text.len()
        ));
    }
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let Some(&(_, per_unit)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!("{text:?}: {WANT}"));
    };
    if number.is_empty() {
        return Err(format!("{text:?}: {WANT}"));
    }
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per_unit))
        .map(Duration::from_millis)
        .ok_or_else(|| {
            format!(
                "{text:?} is longer than the longest duration, {} ms",
                u64::MAX
            )
        })
}

mod millis {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// A number of milliseconds, or a text with a unit (`parse_duration`).
    struct Millis;

    impl Visitor<'_> for Millis {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number of milliseconds or a duration with a unit (\"30s\", \"500ms\")")
        }

        fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(ms))
        }

        fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
            u64::try_from(ms)
                .map(Duration::from_millis)
                .map_err(|_| E::custom(format!("a duration cannot be negative ({ms})")))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            super::parse_duration(text).map_err(E::custom)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(Millis)
    }
}

/// The cluster spec, as read from JSON or built in code.
///
/// Unknown keys are an error ([`SpecError::UnknownField`]) in the spec and
/// in each of its objects: a misspelt `tuning` or `listen_address` would
/// otherwise be ignored and leave the default in force (an open cluster,
/// say) without a word.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Every node of the cluster.
    pub nodes: Vec<NodeDescriptor>,
    /// Path of each node's certificate, `%d` standing for its id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_cert_path: String,
    /// Path of each node's private key, `%d` standing for its id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_key_path: String,
    /// Path of the cluster CA certificate: one PEM certificate, or during a
    /// CA rollover a bundle of the old and the new (see `tls`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_cert_path: String,
    /// This node's certificate as PEM text (wins over the path).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_cert_pem: String,
    /// This node's private key as PEM text (wins over the path).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_key_pem: String,
    /// The cluster CA certificate (or bundle) as PEM text (wins over the path).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_cert_pem: String,
    /// ALPN protocol names nodes accept; empty means reign's own.
    ///
    /// The field keeps Go reign's name, but Go reign listed TLS cipher
    /// suites here; rustls chooses among its own secure suites, so a
    /// cipher-suite name is refused with [`SpecError::CipherSuiteAsProtocol`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permitted_protocols: Vec<String>,
    /// Protocol timers and limits.
    #[serde(default)]
    pub tuning: Tuning,
    /// Folder that relative paths are relative to (the spec file's folder).
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

pub use crate::codec::DEFAULT_PROTOCOL;

/// A PEM error in words, after where the PEM came from (the pem crate's
/// own message prints an END marker as a list of byte values).
fn pem_error(source: String, e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as Pem;
    match e {
        Pem::MissingSectionEnd { .. } => {
            format!("{source}: truncated (a PEM section has no END line)")
        }
        Pem::IllegalSectionStart { .. } => format!("{source}: a malformed BEGIN line"),
        Pem::NoItemsFound => format!("{source}: no PEM section of the expected kind"),
        other => format!("{source}: {other}"),
    }
}

/// A spec resolved for one node: ready to start it.
#[derive(Debug, Clone)]
pub struct ResolvedSpec {
    /// The node being started.
    pub node_id: NodeId,
    /// Every node by id.
    pub nodes: BTreeMap<NodeId, NodeDescriptor>,
    /// This node's TLS material.
    pub material: NodeMaterial,
    /// ALPN protocols.
    pub protocols: Vec<String>,
    /// Timers and limits.
    pub tuning: Tuning,
}

impl ResolvedSpec {
    /// This node's descriptor.
    pub fn me(&self) -> &NodeDescriptor {
        &self.nodes[&self.node_id]
    }
}

pub(crate) fn valid_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

impl ClusterSpec {
    /// Parses a spec from JSON text. An unknown key is an error naming it
    /// and the nearest known key.
    ///
    /// ```
    /// use reign_proto::spec::{ClusterSpec, SpecError};
    ///
    /// let e = ClusterSpec::from_json(r#"{"nodes": [], "tunning": {}}"#).unwrap_err();
    /// assert!(matches!(e, SpecError::UnknownField { .. }));
    /// assert_eq!(
    ///     e.to_string(),
    ///     "cluster spec: unknown field `tunning` in the spec at line 1 column 23, did you mean `tuning`?"
    /// );
    /// ```
    pub fn from_json(json: &str) -> Result<ClusterSpec, SpecError> {
        serde_json::from_str(json).map_err(json_error)
    }

    /// Parses a spec from a reader of JSON.
    pub fn from_reader(reader: impl Read) -> Result<ClusterSpec, SpecError> {
        serde_json::from_reader(reader).map_err(json_error)
    }

    /// Reads a spec file; relative paths inside resolve against its folder.
    pub fn load(path: impl AsRef<Path>) -> Result<ClusterSpec, SpecError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| SpecError::Unreadable {
            path: path.to_owned(),
            error: e.to_string(),
        })?;
        let mut spec = ClusterSpec::from_json(&text)?;
        spec.base_dir = path.parent().map(Path::to_owned);
        Ok(spec)
    }

    /// The spec as pretty JSON, with only the tuning fields that differ from
    /// [`Tuning::default`] (none: no `tuning` object at all), so that a
    /// written spec says what was chosen and later releases' defaults reach
    /// the rest. Reading it back gives this spec.
    pub fn to_json(&self) -> String {
        let Ok(mut value) = serde_json::to_value(self) else {
            return String::new();
        };
        let defaults = serde_json::to_value(Tuning::default()).ok();
        if let (Some(spec), Some(serde_json::Value::Object(defaults))) =
            (value.as_object_mut(), defaults)
        {
            let mut keep_tuning = true;
            if let Some(serde_json::Value::Object(tuning)) = spec.get_mut("tuning") {
                tuning.retain(|field, v| defaults.get(field) != Some(v));
                keep_tuning = !tuning.is_empty();
            }
            if !keep_tuning {
                spec.remove("tuning");
            }
        }
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// Checks the node list alone: ids unique, addresses well formed.
    pub fn validate_nodes(&self) -> Result<BTreeMap<NodeId, NodeDescriptor>, SpecError> {
        if self.nodes.is_empty() {
            return Err(SpecError::NoNodes);
        }
        let mut nodes = BTreeMap::new();
        for node in &self.nodes {
            let bad = |field, value: &str| SpecError::BadAddress {
                id: node.id,
                field,
                value: value.to_owned(),
            };
            if !valid_host_port(&node.address) {
                return Err(bad("address", &node.address));
            }
            if !node.listen_address.is_empty() && !valid_host_port(&node.listen_address) {
                return Err(bad("listen_address", &node.listen_address));
            }
            if !node.local_address.is_empty() && !valid_host_port(&node.local_address) {
                return Err(bad("local_address", &node.local_address));
            }
            if nodes.insert(NodeId(node.id), node.clone()).is_some() {
                return Err(SpecError::DuplicateId { id: node.id });
            }
        }
        Ok(nodes)
    }

    /// Where TLS material came from, for errors: the file path, or the
    /// inline PEM field.
    fn material_source(&self, pem: &str, path: &str, node: u16) -> String {
        if !pem.is_empty() {
            return "the inline PEM".into();
        }
        let mut path = PathBuf::from(path.replace("%d", &node.to_string()));
        if path.is_relative() {
            if let Some(base) = &self.base_dir {
                path = base.join(path);
            }
        }
        path.display().to_string()
    }

    fn material_text(
        &self,
        pem: &str,
        path: &str,
        field: &'static str,
        node: u16,
    ) -> Result<Vec<u8>, SpecError> {
        if !pem.is_empty() {
            return Ok(pem.as_bytes().to_vec());
        }
        if path.is_empty() {
            return Err(SpecError::Missing { field });
        }
        let mut path = PathBuf::from(path.replace("%d", &node.to_string()));
        if path.is_relative() {
            if let Some(base) = &self.base_dir {
                path = base.join(path);
            }
        }
        std::fs::read(&path).map_err(|e| SpecError::FileUnreadable {
            field,
            path,
            error: e.to_string(),
        })
    }

    /// Refuses a Go reign style `permitted_protocols` (cipher-suite names).
    pub fn check_protocols(&self) -> Result<(), SpecError> {
        match self
            .permitted_protocols
            .iter()
            .find(|p| looks_like_cipher_suite(p))
        {
            Some(value) => Err(SpecError::CipherSuiteAsProtocol {
                value: value.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Resolves the spec for `node`: reads and checks its TLS material.
    /// `now` is the wall time certificates are checked against.
    pub fn resolve(&self, node: NodeId, now: UnixTime) -> Result<ResolvedSpec, SpecError> {
        let nodes = self.validate_nodes()?;
        if !nodes.contains_key(&node) {
            return Err(SpecError::NodeNotInSpec { id: node.0 });
        }
        self.check_protocols()?;
        let cert_text = self.material_text(
            &self.node_cert_pem,
            &self.node_cert_path,
            "node_cert_path/node_cert_pem",
            node.0,
        )?;
        let key_text = self.material_text(
            &self.node_key_pem,
            &self.node_key_path,
            "node_key_path/node_key_pem",
            node.0,
        )?;
        let ca_text = self.material_text(
            &self.cluster_cert_pem,
            &self.cluster_cert_path,
            "cluster_cert_path/cluster_cert_pem",
            node.0,
        )?;
        let cert_chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_text)
            .collect::<Result<_, _>>()
            .map_err(|e| SpecError::BadPem {
                field: "node_cert",
                error: pem_error(
                    self.material_source(&self.node_cert_pem, &self.node_cert_path, node.0),
                    &e,
                ),
            })?;
        if cert_chain.is_empty() {
            return Err(SpecError::BadPem {
                field: "node_cert",
                error: "no CERTIFICATE section".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_text).map_err(|e| SpecError::BadPem {
            field: "node_key",
            error: pem_error(
                self.material_source(&self.node_key_pem, &self.node_key_path, node.0),
                &e,
            ),
        })?;
        let cluster_certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca_text)
            .collect::<Result<_, _>>()
            .map_err(|e| SpecError::BadPem {
                field: "cluster_cert",
                error: pem_error(
                    self.material_source(&self.cluster_cert_pem, &self.cluster_cert_path, node.0),
                    &e,
                ),
            })?;
        if cluster_certs.is_empty() {
            return Err(SpecError::BadPem {
                field: "cluster_cert",
                error: pem_error(
                    self.material_source(&self.cluster_cert_pem, &self.cluster_cert_path, node.0),
                    &rustls::pki_types::pem::Error::NoItemsFound,
                ),
            });
        }
        // An overfull bundle is refused by check_node_material.
        let material = NodeMaterial {
            cert_chain,
            key,
            cluster_certs,
        };
        crate::tls::check_node_material(node, &material, now)?;
        let protocols = if self.permitted_protocols.is_empty() {
            vec![DEFAULT_PROTOCOL.to_owned()]
        } else {
            self.permitted_protocols.clone()
        };
        Ok(ResolvedSpec {
            node_id: node,
            nodes,
            material,
            protocols,
            tuning: self.tuning.clone(),
        })
    }
}

/// Whether a `permitted_protocols` entry is a TLS cipher-suite name (Go
/// reign's meaning of the field): `TLS_…` as IANA and Go spell them, or an
/// OpenSSL-style name such as `ECDHE-RSA-AES128-GCM-SHA256`.
fn looks_like_cipher_suite(value: &str) -> bool {
    let upper = value.to_ascii_uppercase();
    upper.starts_with("TLS_")
        || upper.starts_with("SSL_")
        || ((upper.contains("-AES") || upper.contains("-CHACHA20") || upper.contains("-RC4"))
            && (upper.contains("SHA") || upper.contains("POLY1305")))
}

/// The keys of each spec object, for naming the object an unknown key was
/// found in (serde lists the expected keys, in declaration order).
const OBJECTS: [(&str, &str); 3] = [
    ("nodes", "the spec"),
    ("id", "a node"),
    ("ping_interval", "tuning"),
];

/// A suggestion is offered only this close (edits) to a known key, and
/// never further than a third of the key's length, so unrelated keys get
/// none.
const MAX_SUGGESTION_DISTANCE: usize = 3;

/// Turns serde_json's error into a [`SpecError`]: an unknown key becomes
/// [`SpecError::UnknownField`] with the nearest known key.
fn json_error(e: serde_json::Error) -> SpecError {
    let text = e.to_string();
    let message = text
        .strip_suffix(&format!(" at line {} column {}", e.line(), e.column()))
        .unwrap_or(&text);
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return SpecError::Json { message: text };
    };
    // serde: "unknown field `X`, expected `a` or `b`" / "… expected one of
    // `a`, `b`, `c`" / "… there are no fields". The key itself may hold a
    // backtick, so split where the list begins.
    let Some(split) = rest
        .find("`, expected ")
        .or_else(|| rest.find("`, there are no fields"))
    else {
        return SpecError::Json { message: text };
    };
    let field = rest[..split].to_owned();
    let expected: Vec<&str> = rest[split + 1..].split('`').skip(1).step_by(2).collect();
    let within = expected
        .first()
        .and_then(|first| OBJECTS.iter().find(|(key, _)| key == first))
        .map_or("the spec", |(_, object)| *object);
    let suggestion = expected
        .iter()
        .map(|known| (edit_distance(&field, known), *known))
        .filter(|(d, known)| *d <= MAX_SUGGESTION_DISTANCE && *d <= known.len().div_ceil(3))
        .min()
        .map(|(_, known)| known.to_owned());
    SpecError::UnknownField {
        field,
        within,
        line: e.line(),
        column: e.column(),
        suggestion,
    }
}

/// Levenshtein distance, by characters; keys are short, so the quadratic
/// table is a few hundred cells. A key longer than [`MAX_KEY_COMPARED`]
/// is never near a known one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(MAX_KEY_COMPARED + 1).collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > MAX_KEY_COMPARED {
        return usize::MAX;
    }
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Keys longer than this are not compared (no known key is near so long).
const MAX_KEY_COMPARED: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<ClusterSpec, SpecError> {
        ClusterSpec::from_json(json)
    }

    #[test]
    fn go_reign_field_names_parse() {
        let s = spec(
            r#"{"nodes":[{"id":0,"address":"127.0.0.1:1","listen_address":"0.0.0.0:1"},
                         {"id":1,"address":"localhost:2","local_address":"127.0.0.1:0"}],
                "node_cert_path":"n%d.crt","node_key_path":"n%d.key","cluster_cert_path":"ca.crt",
                "permitted_protocols":["x"]}"#,
        )
        .unwrap();
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(s.nodes[0].listen_addr(), "0.0.0.0:1");
        assert_eq!(s.nodes[1].listen_addr(), "localhost:2");
        assert_eq!(s.tuning, Tuning::default());
        assert_eq!(s.validate_nodes().unwrap().len(), 2);
    }

    #[test]
    fn bad_specs_name_the_field() {
        assert!(matches!(spec("{"), Err(SpecError::Json { .. })));
        assert!(matches!(
            spec(r#"{"nodes":[{"id":"zero"}]}"#),
            Err(SpecError::Json { .. })
        ));
        assert_eq!(
            spec(r#"{"nodes":[]}"#).unwrap().validate_nodes(),
            Err(SpecError::NoNodes)
        );
        assert_eq!(
            spec(r#"{"nodes":[{"id":1,"address":"a:1"},{"id":1,"address":"b:2"}]}"#)
                .unwrap()
                .validate_nodes(),
            Err(SpecError::DuplicateId { id: 1 })
        );
        assert_eq!(
            spec(r#"{"nodes":[{"id":3}]}"#).unwrap().validate_nodes(),
            Err(SpecError::BadAddress {
                id: 3,
                field: "address",
                value: String::new()
            })
        );
        assert!(matches!(
            spec(r#"{"nodes":[{"id":3,"address":"h:1","listen_address":"nope"}]}"#)
                .unwrap()
                .validate_nodes(),
            Err(SpecError::BadAddress {
                field: "listen_address",
                ..
            })
        ));
        let s = spec(r#"{"nodes":[{"id":3,"address":"h:1"}]}"#).unwrap();
        assert_eq!(
            s.resolve(NodeId(4), UnixTime::now()).unwrap_err(),
            SpecError::NodeNotInSpec { id: 4 }
        );
        assert_eq!(
            s.resolve(NodeId(3), UnixTime::now()).unwrap_err(),
            SpecError::Missing {
                field: "node_cert_path/node_cert_pem"
            }
        );
        let s =
            spec(r#"{"nodes":[{"id":3,"address":"h:1"}],"node_cert_path":"/nonexistent/n%d.crt"}"#)
                .unwrap();
        match s.resolve(NodeId(3), UnixTime::now()).unwrap_err() {
            SpecError::FileUnreadable { path, .. } => {
                assert_eq!(path, PathBuf::from("/nonexistent/n3.crt"))
            }
            other => panic!("{other:?}"),
        }
        let s = spec(
            r#"{"nodes":[{"id":3,"address":"h:1"}],"node_cert_pem":"junk","node_key_pem":"junk","cluster_cert_pem":"junk"}"#,
        )
        .unwrap();
        assert!(matches!(
            s.resolve(NodeId(3), UnixTime::now()).unwrap_err(),
            SpecError::BadPem {
                field: "node_cert",
                ..
            }
        ));
    }

    fn ping(value: &str) -> Result<Duration, String> {
        let json = format!(
            r#"{{"nodes":[{{"id":0,"address":"h:1"}}],"tuning":{{"ping_interval":{value}}}}}"#
        );
        spec(&json)
            .map(|s| s.tuning.ping_interval)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tuning_reads_durations_with_units_beside_milliseconds() {
        assert_eq!(ping("250"), Ok(Duration::from_millis(250)));
        assert_eq!(ping(r#""250ms""#), Ok(Duration::from_millis(250)));
        assert_eq!(ping(r#""30s""#), Ok(Duration::from_secs(30)));
        assert_eq!(ping(r#""2m""#), Ok(Duration::from_secs(120)));
        assert_eq!(ping(r#""1h""#), Ok(Duration::from_secs(3600)));
        assert_eq!(ping(r#""0s""#), Ok(Duration::ZERO));
        // The bound is u64::MAX milliseconds, as for a plain number: just
        // under, at and over it, in each form.
        let max = Duration::from_millis(u64::MAX);
        assert_eq!(ping(&u64::MAX.to_string()), Ok(max));
        assert_eq!(ping(&format!("\"{}ms\"", u64::MAX)), Ok(max));
        assert_eq!(
            ping(&format!("\"{}ms\"", u64::MAX - 1)),
            Ok(max - Duration::from_millis(1))
        );
        let over = ping(&format!("\"{}ms\"", u128::from(u64::MAX) + 1)).unwrap_err();
        assert!(over.contains("longer than the longest duration"), "{over}");
        let seconds = u64::MAX / 1000;
        assert_eq!(
            ping(&format!("\"{seconds}s\"")),
            Ok(Duration::from_secs(seconds))
        );
        let over = ping(&format!("\"{}s\"", seconds + 1)).unwrap_err();
        assert!(over.contains("longer than the longest duration"), "{over}");
        assert!(ping(&(u128::from(u64::MAX) + 1).to_string()).is_err());
        // The text's own bound: at it (zeros pad a valid number), over it.
        let at = format!("{}1s", "0".repeat(MAX_DURATION_TEXT - 2));
        assert_eq!(parse_duration(&at), Ok(Duration::from_secs(1)));
        let over = format!("0{at}");
        assert!(parse_duration(&over).unwrap_err().contains("too long"));
        // Bad units and shapes: one clear error naming the units, with the
        // spec's line and column.
        for bad in ["30", "30x", "30 s", "s", "1.5s", "-5s", "30S", "30sec", ""] {
            let e = ping(&format!("{bad:?}")).unwrap_err();
            assert!(
                e.contains("ms, s, m or h") && e.contains("line 1"),
                "{bad:?}: {e}"
            );
        }
        let e = ping("-5").unwrap_err();
        assert!(e.contains("cannot be negative"), "{e}");
        let e = ping("1.5").unwrap_err();
        assert!(
            e.contains("a number of milliseconds or a duration with a unit"),
            "{e}"
        );
    }

    #[test]
    fn to_json_writes_only_the_tuning_that_differs_from_the_defaults() {
        let mut s = spec(r#"{"nodes":[{"id":0,"address":"h:1"}]}"#).unwrap();
        let json = s.to_json();
        assert!(!json.contains("tuning"), "{json}");
        assert_eq!(ClusterSpec::from_json(&json).unwrap(), s);
        s.tuning.ping_interval = Duration::from_secs(1);
        s.tuning.accept_joins = false;
        let json = s.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let tuning = value["tuning"].as_object().unwrap();
        assert_eq!(tuning.len(), 2, "{json}");
        assert_eq!(tuning["ping_interval"], 1000);
        assert_eq!(ClusterSpec::from_json(&json).unwrap(), s);
        // The fast tuning of tests round-trips too.
        s.tuning = Tuning::fast();
        assert_eq!(ClusterSpec::from_json(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn tuning_reads_milliseconds() {
        let s =
            spec(r#"{"nodes":[{"id":0,"address":"h:1"}],"tuning":{"ping_interval":250}}"#).unwrap();
        assert_eq!(s.tuning.ping_interval, Duration::from_millis(250));
        assert_eq!(s.tuning.max_ping_failures, 5);
    }

    fn unknown(json: &str) -> (String, &'static str, Option<String>, String) {
        let e = spec(json).expect_err("an unknown field");
        let text = e.to_string();
        match e {
            SpecError::UnknownField {
                field,
                within,
                suggestion,
                ..
            } => (field, within, suggestion, text),
            other => panic!("expected an unknown field, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_key_in_each_object_is_named_with_the_nearest_known_one() {
        // The spec itself: the typo that silently left joins open.
        let (field, within, near, text) = unknown(
            "{\n  \"nodes\": [{\"id\": 0, \"address\": \"h:1\"}],\n  \"tunning\": {\"accept_joins\": false}\n}",
        );
        assert_eq!((field.as_str(), within), ("tunning", "the spec"));
        assert_eq!(near.as_deref(), Some("tuning"));
        assert!(text.contains("line 3"), "{text}");
        assert!(text.ends_with("did you mean `tuning`?"), "{text}");
        // A node.
        let (field, within, near, _) =
            unknown(r#"{"nodes":[{"id":0,"address":"h:1","listen_adress":"h:2"}]}"#);
        assert_eq!((field.as_str(), within), ("listen_adress", "a node"));
        assert_eq!(near.as_deref(), Some("listen_address"));
        // Tuning.
        let (field, within, near, _) = unknown(r#"{"nodes":[],"tuning":{"handshake_timout":500}}"#);
        assert_eq!((field.as_str(), within), ("handshake_timout", "tuning"));
        assert_eq!(near.as_deref(), Some("handshake_timeout"));
        let (_, _, near, _) = unknown(r#"{"nodes":[],"tuning":{"accept_join":false}}"#);
        assert_eq!(near.as_deref(), Some("accept_joins"));
        // Known keys in every object still parse.
        assert!(spec(r#"{"nodes":[{"id":0,"address":"h:1","listen_address":"h:2"}],"tuning":{"accept_joins":false}}"#).is_ok());
    }

    #[test]
    fn a_suggestion_is_offered_only_when_close() {
        // Three edits from `tuning` on a 6-letter key: over a third of its
        // length, so no suggestion; two edits: suggested.
        assert_eq!(unknown(r#"{"tuxxxg":{}}"#).2, None);
        assert_eq!(unknown(r#"{"tuxing":{}}"#).2.as_deref(), Some("tuning"));
        assert_eq!(unknown(r#"{"tuxxng":{}}"#).2.as_deref(), Some("tuning"));
        // Nothing alike at all.
        let (field, _, near, text) = unknown(r#"{"colour":"blue"}"#);
        assert_eq!((field.as_str(), near), ("colour", None));
        assert!(!text.contains("did you mean"), "{text}");
        // A very long key is named and costs no quadratic work.
        let long = "k".repeat(10_000);
        let (field, _, near, _) = unknown(&format!(r#"{{"{long}":1}}"#));
        assert_eq!((field.len(), near), (10_000, None));
        // A key holding a backtick is still named whole.
        assert_eq!(unknown(r#"{"a`, b":1}"#).0, "a`, b");
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(edit_distance("tuning", "tuning"), 0);
        assert_eq!(edit_distance("tunning", "tuning"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn go_reign_cipher_suites_are_refused_with_what_the_field_means() {
        for value in [
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_RSA_WITH_RC4_128_SHA",
            "tls_aes_128_gcm_sha256",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
        ] {
            let s = spec(&format!(
                r#"{{"nodes":[{{"id":0,"address":"h:1"}}],"permitted_protocols":["reign-rs/1",{value:?}]}}"#
            ))
            .unwrap();
            let e = s.resolve(NodeId(0), UnixTime::now()).unwrap_err();
            assert_eq!(
                e,
                SpecError::CipherSuiteAsProtocol {
                    value: value.to_owned()
                }
            );
            let text = e.to_string();
            assert!(text.contains("ALPN") && text.contains(value), "{text}");
        }
        // ALPN names, including ones with dashes and digits, are fine.
        for value in ["reign-rs/1", "h2", "my-app-v2", "x"] {
            let s = spec(&format!(
                r#"{{"nodes":[{{"id":0,"address":"h:1"}}],"permitted_protocols":[{value:?}]}}"#
            ))
            .unwrap();
            assert_eq!(s.check_protocols(), Ok(()), "{value}");
        }
    }
}
