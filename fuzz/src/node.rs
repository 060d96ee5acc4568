//! `node`: a whole [`Core`] driven through its public Sans-IO API.
//!
//! The node is one of a 2- or 3-node cluster whose certificates are made
//! once per process. Its peers reach it over authenticated plaintext links
//! (`Core::fuzz_connect_peer`, fuzz builds only), so arbitrary frames reach
//! every layer above TLS; real inbound connections get garbage where TLS
//! belongs; the driver's reports (written, closed, connected, failed) come
//! in any order; virtual time advances; and local code creates and closes
//! mailboxes, sends to remote mailboxes, registers names, watches remote
//! mailboxes, joins groups, publishes, requests and opens tunnels.
//!
//! After every input the harness drains [`Core::poll_output`] and checks:
//! - nothing panics, and output ends (`poll_output` returns `None`);
//! - memory a peer can make the node hold for its link stays bounded:
//!   [`Core::peer_buffered_bytes`] (partial messages, unsent core frames,
//!   decoder buffer, unwritten transmits) is at most two maximum messages,
//!   one maximum frame, what local calls queued, what the driver has not
//!   reported written, and a little slack;
//! - links the input was not for stay up (only time passing, or input for
//!   a link, may bring a link down);
//! - `PeerUp`/`PeerDown` events alternate per peer and match
//!   [`Core::connected_peers`]; nothing is output for a connection after
//!   its `Close`;
//! - what the node sends its peers is a stream of well-formed frames that
//!   never stops mid-frame at a `Close`, with data only for the peer's own
//!   mailboxes;
//! - a tunnel never buffers more than its credit window plus one message
//!   of `max_message_len` (the message being assembled, credited as it
//!   arrives so that messages larger than the window pass);
//! - after shutdown no connection is left.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use reign_proto::codec::frame::{PublishScope, ReplyStatus, TunnelOp, MAX_REMAINING_US};
use reign_proto::codec::{payload, Frame, FrameDecoder};
use reign_proto::control::Control;
use reign_proto::system::MailboxClosed;
use reign_proto::types::registered_types;
use reign_proto::{
    Address, Capacity, ConnId, Core, CoreConfig, Event, Incarnation, IncomingTunnel, Input,
    Mailbox, MailboxId, NodeId, OpeningTunnel, Output, Request, RequestFuture, Tuning, Tunnel,
    TypeTag,
};

use crate::certs;
use crate::unarb::{Unarbitrary, Writer};
use crate::write_fields;

/// The incarnation `fuzz_connect_peer` gives every peer.
const PEER_INCARNATION: Incarnation = Incarnation(1);
/// This node's incarnation.
const MY_INCARNATION: Incarnation = Incarnation(0x5eed);
/// Frame bytes one input may send at once (with repeats).
const MAX_OP_BYTES: usize = 256 * 1024;
/// Fixed allowance on top of the computed memory bound.
const SLACK: usize = 64 * 1024;
/// Core frames (pongs, answers to control messages) the node lets wait for
/// a peer that does not read before it closes the link (the core's
/// `MAX_CONTROL_BACKLOG`).
const CONTROL_BACKLOG: usize = 8 << 20;
/// The registry's per-node caps in the fuzz tuning: small, so that a
/// `Flood` reaches one (under, at and over) with a small input.
const FLOOD_COUNT_CAP: usize = 4;
/// The longest name, group or topic in the fuzz tuning.
const FLOOD_NAME_CAP: usize = 32;
/// Entries one `Flood` sends, at most (keeps its frame under `max_frame_len`).
const FLOOD_MAX_ENTRIES: usize = 16;
/// Names the fuzzer picks by index (so two ops can agree on one).
const NAMES: [&str; 5] = ["svc", "topic", "a", "b", ""];

/// The node's timers and limits: the fast test timers, small limits so the
/// fuzzer reaches them with small inputs.
pub fn tuning() -> Tuning {
    Tuning {
        max_frame_len: 8 * 1024,
        max_message_len: 160 * 1024,
        outbound_queue_bytes: 64 * 1024,
        outbound_bulk_bytes: 256 * 1024,
        write_window: 16 * 1024,
        max_handshaking: 4,
        tunnel_window: 8 * 1024,
        max_name_len: FLOOD_NAME_CAP,
        max_names_per_node: FLOOD_COUNT_CAP,
        max_group_members_per_node: FLOOD_COUNT_CAP,
        max_topics_per_node: FLOOD_COUNT_CAP,
        ..Tuning::fast()
    }
}

// ----- the input -----------------------------------------------------------

/// The structured input of the `node` target.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct NodeInput {
    /// A 3-node cluster rather than a 2-node one.
    pub three_nodes: bool,
    /// Which node this is (modulo the cluster size).
    pub me: u8,
    /// Bit `i`: the `i`th peer starts linked.
    pub link: u8,
    /// What happens, in order.
    pub ops: Vec<Op>,
}

/// One input to the node.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A well-formed frame from a linked peer, sent `1 + 8 * repeat` times
    /// in one read.
    PeerFrame {
        /// Which peer (modulo the peers).
        peer: u8,
        /// The frame.
        frame: FuzzFrame,
        /// Extra copies, in eights.
        repeat: u8,
    },
    /// A control message from a linked peer.
    PeerControl {
        /// Which peer.
        peer: u8,
        /// The message.
        control: FuzzControl,
    },
    /// Raw bytes from a linked peer.
    PeerBytes {
        /// Which peer.
        peer: u8,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A new authenticated link from a peer, replacing any other.
    Reconnect {
        /// Which peer.
        peer: u8,
    },
    /// Virtual time passes, then the timers run.
    Timeout {
        /// Milliseconds.
        ms: u16,
    },
    /// Virtual time jumps to the node's next deadline; the timers run.
    NextDeadline,
    /// The driver reports bytes written on a connection.
    Written {
        /// Which connection (modulo those seen).
        conn: u8,
        /// How many bytes.
        bytes: u32,
    },
    /// A connection's socket closed.
    Closed {
        /// Which connection.
        conn: u8,
        /// With an error rather than a clean end.
        error: bool,
    },
    /// A dial connected.
    Connected {
        /// Which connection.
        conn: u8,
    },
    /// A dial failed.
    ConnectFailed {
        /// Which connection.
        conn: u8,
    },
    /// A new inbound connection (TLS, so it never authenticates).
    Accept,
    /// Bytes read from any connection.
    Received {
        /// Which connection.
        conn: u8,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Something local code does.
    Local(LocalOp),
    /// The node shuts down (later inputs still arrive).
    Shutdown,
}

/// Something user code does on the node.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum LocalOp {
    /// A new mailbox; `capacity` 0 is unbounded, else that many messages.
    NewMailbox {
        /// Capacity in messages.
        capacity: u8,
    },
    /// Closes a mailbox.
    CloseMailbox {
        /// Which mailbox (modulo those made).
        mailbox: u8,
    },
    /// Sends a value to a remote mailbox.
    Send {
        /// Where.
        to: RemoteRef,
        /// What.
        value: FuzzValue,
    },
    /// Registers a mailbox under a name.
    Register {
        /// The name.
        name: Name,
        /// Which mailbox.
        mailbox: u8,
    },
    /// Unregisters a mailbox's name.
    Unregister {
        /// The name.
        name: Name,
        /// Which mailbox.
        mailbox: u8,
    },
    /// Looks a name up and sends to what it finds.
    Lookup {
        /// The name.
        name: Name,
    },
    /// A mailbox watches a remote mailbox.
    Watch {
        /// The watched mailbox.
        target: RemoteRef,
        /// The watcher.
        watcher: u8,
    },
    /// Cancels a watch.
    Unwatch {
        /// The watched mailbox.
        target: RemoteRef,
        /// The watcher.
        watcher: u8,
    },
    /// A mailbox joins a service group.
    Join {
        /// The group.
        group: Name,
        /// Which mailbox.
        mailbox: u8,
    },
    /// A mailbox leaves a service group.
    Leave {
        /// The group.
        group: Name,
        /// Which mailbox.
        mailbox: u8,
    },
    /// A mailbox subscribes to a topic.
    Subscribe {
        /// The topic.
        topic: Name,
        /// Which mailbox.
        mailbox: u8,
    },
    /// A mailbox unsubscribes.
    Unsubscribe {
        /// The topic.
        topic: Name,
        /// Which mailbox.
        mailbox: u8,
    },
    /// A broadcast to a group.
    Broadcast {
        /// The group.
        group: Name,
        /// What.
        value: FuzzValue,
    },
    /// A publication on a topic.
    Publish {
        /// The topic.
        topic: Name,
        /// What.
        value: FuzzValue,
    },
    /// A request.
    Request {
        /// To whom.
        to: FuzzTarget,
        /// What.
        value: FuzzValue,
        /// Deadline, in virtual milliseconds from now.
        timeout_ms: u16,
    },
    /// Opens a tunnel.
    OpenTunnel {
        /// To whom.
        to: FuzzTarget,
    },
    /// Sends a message on a tunnel (polled once).
    TunnelSend {
        /// Which tunnel (modulo those open).
        tunnel: u8,
        /// Message length.
        len: u16,
    },
    /// Receives on a tunnel (polled once).
    TunnelRecv {
        /// Which tunnel.
        tunnel: u8,
    },
    /// Closes a tunnel.
    TunnelClose {
        /// Which tunnel.
        tunnel: u8,
    },
    /// Takes every message out of a mailbox: decodes remote ones, answers
    /// requests (`answer % 3`: reply, error, drop) and accepts offered
    /// tunnels (`answer & 4`) or rejects them.
    Drain {
        /// Which mailbox.
        mailbox: u8,
        /// How to answer.
        answer: u8,
    },
    /// Starts a registry sync (`Node::sync`).
    Sync,
    /// A mailbox watches connection status changes.
    WatchStatus {
        /// Which mailbox.
        mailbox: u8,
    },
}

/// A name, group or topic.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Name {
    /// One of a few fixed names (modulo their number).
    Known(u8),
    /// Any text (lossy UTF-8).
    Raw(Vec<u8>),
}

/// A mailbox of a peer.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct RemoteRef {
    /// Which peer (modulo the peers).
    pub peer: u8,
    /// Its serial.
    pub serial: u8,
    /// From an earlier start of the peer.
    pub stale: bool,
}

/// Whom a request or tunnel goes to.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum FuzzTarget {
    /// A service group.
    Service(Name),
    /// A peer's mailbox.
    Remote(RemoteRef),
    /// One of this node's mailboxes.
    Local(u8),
}

/// Any mailbox id.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// A mailbox of the peer sending the frame (or of the first peer).
    Sender {
        /// Its serial.
        serial: u8,
    },
    /// One of this node's mailboxes.
    Ours(u8),
    /// A mailbox of some peer.
    Peer(RemoteRef),
    /// Anything.
    Raw {
        /// Node.
        node: u16,
        /// Incarnation.
        incarnation: u64,
        /// Serial.
        serial: u64,
    },
}

/// A value of a registered type.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum FuzzValue {
    /// A `u64`.
    U64(u64),
    /// A `String` (lossy UTF-8).
    Text(Vec<u8>),
    /// A byte buffer of `len * (1 + 3 * big)` copies of `fill`.
    Bytes {
        /// Length unit.
        len: u16,
        /// Four times longer.
        big: bool,
        /// The byte.
        fill: u8,
    },
    /// An address.
    Address(Who),
    /// A close notification.
    Closed(Who),
}

/// Bytes of a chunk: generated (cheap for the input) or given.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// `len` copies of `fill`.
    Filled {
        /// Length.
        len: u16,
        /// The byte.
        fill: u8,
    },
    /// These bytes.
    Raw(Vec<u8>),
}

/// A message body with its type tag.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A well-typed value.
    Value(FuzzValue),
    /// A registered tag (by index, modulo) or any tag, with any bytes.
    Tagged {
        /// The tag.
        tag: Tag,
        /// The payload.
        payload: Chunk,
    },
}

/// A type tag.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Tag {
    /// The registered type at this index (modulo their number).
    Registered(u8),
    /// Any tag.
    Raw(u64),
}

/// A correlation id of a reply.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Corr {
    /// One the node used in a request to this peer (by index, modulo).
    Seen(u8),
    /// Any.
    Raw(u64),
}

/// A tunnel id.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum TunnelRef {
    /// One the node used in a tunnel frame to this peer (by index, modulo).
    Seen(u8),
    /// Any.
    Raw(u64),
}

/// A frame from a peer, always well framed.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum FuzzFrame {
    /// A hello after the handshake.
    Hello(Vec<u8>),
    /// A ping.
    Ping(u64),
    /// A pong, echoing the node's last ping nonce if `seen`.
    Pong {
        /// Echo the last nonce.
        seen: bool,
        /// The nonce otherwise.
        nonce: u64,
    },
    /// A whole message.
    Data {
        /// To.
        dest: Who,
        /// What.
        body: Body,
    },
    /// The first fragment of a message of `total` bytes.
    FragmentStart {
        /// To.
        dest: Who,
        /// The tag.
        tag: Tag,
        /// The announced length.
        total: u64,
        /// The piece.
        chunk: Chunk,
    },
    /// A further fragment.
    FragmentCont {
        /// To.
        dest: Who,
        /// The piece.
        chunk: Chunk,
    },
    /// A control frame with any body.
    Control(Vec<u8>),
    /// A goodbye with any body.
    Goodbye(Vec<u8>),
    /// A request.
    Request {
        /// To.
        dest: Who,
        /// Correlation id.
        corr: u64,
        /// What.
        body: Body,
    },
    /// A reply.
    Reply {
        /// To which request.
        corr: Corr,
        /// Status byte (modulo the statuses).
        status: u8,
        /// What.
        body: Body,
    },
    /// A broadcast (`topic` false) or publication.
    Publish {
        /// Topic rather than group.
        topic: bool,
        /// The group or topic.
        name: Name,
        /// What.
        body: Body,
    },
    /// A tunnel operation.
    Tunnel {
        /// The tunnel.
        id: TunnelRef,
        /// Whether the peer says it opened it.
        from_opener: bool,
        /// The operation.
        op: FuzzTunnelOp,
    },
    /// Any frame body (kind byte first), length-prefixed.
    Wire(Vec<u8>),
}

/// A tunnel operation.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum FuzzTunnelOp {
    /// Open, to a mailbox.
    Open {
        /// The mailbox.
        dest: Who,
        /// Credit granted.
        credit: u32,
    },
    /// Accept.
    Accept {
        /// Credit granted.
        credit: u32,
    },
    /// Reject.
    Reject(Vec<u8>),
    /// Data.
    Data {
        /// Flags.
        flags: u8,
        /// The piece.
        chunk: Chunk,
    },
    /// Credit returned.
    Credit {
        /// Bytes.
        bytes: u32,
    },
    /// Close.
    Close(Vec<u8>),
}

/// A control message from a peer.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum FuzzControl {
    /// A snapshot part.
    Snapshot {
        /// Its deltas.
        deltas: Vec<Delta>,
        /// The final part.
        last: bool,
    },
    /// One delta.
    Delta(Delta),
    /// A sync request.
    SyncRequest {
        /// Sequence number.
        seq: u64,
    },
    /// A sync reply, to the node's last sync request if `seen`.
    SyncReply {
        /// Answer the last request.
        seen: bool,
        /// The sequence number otherwise.
        seq: u64,
    },
    /// Watch a mailbox of the node.
    Watch {
        /// The mailbox.
        target: Who,
    },
    /// Stop watching.
    Unwatch {
        /// The mailbox.
        target: Who,
    },
    /// A mailbox the node watched closed.
    Closed {
        /// The mailbox.
        target: Who,
    },
    /// Any CBOR body.
    Raw(Vec<u8>),
    /// Cluster members the peer says are live (the node may add and dial
    /// them).
    Members {
        /// The members.
        nodes: Vec<FuzzMember>,
        /// Ask for the node's own list back.
        answer: bool,
    },
    /// A snapshot of distinct entries against the registry caps: `count`
    /// (modulo 17) names, group memberships or topics (`kind` modulo 3),
    /// numbered from `first`, each `len` bytes (modulo 41: under, at and
    /// over the fuzz tuning's 32).
    Flood {
        /// Names, groups or topics.
        kind: u8,
        /// Where the numbering starts (so floods can overlap).
        first: u8,
        /// How many entries.
        count: u8,
        /// Bytes per name.
        len: u8,
    },
}

/// One entry of a `Members` message.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct FuzzMember {
    /// The node id.
    pub id: u16,
    /// Its port, from 20000.
    pub port: u8,
    /// A malformed address instead.
    pub malformed: bool,
}

/// A directory change.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Delta {
    /// A claim.
    Claim {
        /// The name.
        name: Name,
        /// The claimant.
        id: Who,
    },
    /// A dropped claim.
    Unclaim {
        /// The name.
        name: Name,
        /// The former claimant.
        id: Who,
    },
    /// A group member.
    Join {
        /// The group.
        group: Name,
        /// The member.
        id: Who,
    },
    /// A member gone.
    Leave {
        /// The group.
        group: Name,
        /// The former member.
        id: Who,
    },
    /// Topic interest.
    Interest {
        /// The topic.
        topic: Name,
        /// Whether interested.
        interested: bool,
    },
}

// ----- the harness -----------------------------------------------------------

/// A value of one of the registered types the harness sends.
enum Value {
    U64(u64),
    Text(String),
    Bytes(serde_bytes::ByteBuf),
    Address(Address),
    Closed(MailboxClosed),
}

/// Runs `$body` with `$x` bound to the value inside, whatever its type.
macro_rules! with_value {
    ($v:expr, |$x:ident| $body:expr) => {
        match $v {
            Value::U64($x) => $body,
            Value::Text($x) => $body,
            Value::Bytes($x) => $body,
            Value::Address($x) => $body,
            Value::Closed($x) => $body,
        }
    };
}

impl Value {
    fn encode(&self) -> (TypeTag, Vec<u8>) {
        let name = match self {
            Value::U64(_) => "u64",
            Value::Text(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Address(_) => "reign.Address",
            Value::Closed(_) => "reign.MailboxClosed",
        };
        (
            TypeTag::of_name(name),
            with_value!(self, |x| payload::to_vec(x)),
        )
    }
}

struct Harness {
    core: Core,
    now: Instant,
    me: NodeId,
    peers: Vec<NodeId>,
    tags: Vec<TypeTag>,
    /// Every connection id seen, in order.
    conns: Vec<ConnId>,
    /// The current plaintext link of each linked peer.
    links: BTreeMap<NodeId, ConnId>,
    /// The peer of every plaintext link ever made.
    link_peer: BTreeMap<ConnId, NodeId>,
    /// What the node sent on each open plaintext link, being decoded.
    streams: BTreeMap<ConnId, FrameDecoder>,
    /// Transmitted and not reported written, per connection.
    in_flight: BTreeMap<ConnId, usize>,
    closed: BTreeSet<ConnId>,
    /// Peers up, by the events.
    up: BTreeSet<NodeId>,
    /// What the node told each peer: request ids, tunnel ids, last ping
    /// nonce, last sync request.
    corrs: BTreeMap<NodeId, Vec<u64>>,
    tunnel_ids: BTreeMap<NodeId, Vec<u64>>,
    pings: BTreeMap<NodeId, u64>,
    syncs: BTreeMap<NodeId, u64>,
    /// Bytes local calls may have queued as core frames.
    local_budget: usize,
    mailboxes: Vec<(Address, Mailbox)>,
    requests: Vec<RequestFuture>,
    opening: Vec<OpeningTunnel>,
    tunnels: Vec<Tunnel>,
    shut_down: bool,
}

fn pick<T: Copy>(items: &[T], index: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[index as usize % items.len()])
}

fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

fn chunk_bytes(chunk: &Chunk) -> Vec<u8> {
    match chunk {
        Chunk::Filled { len, fill } => vec![*fill; *len as usize],
        Chunk::Raw(bytes) => bytes.clone(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Name {
    fn resolve(&self) -> String {
        match self {
            Name::Known(i) => NAMES[*i as usize % NAMES.len()].to_owned(),
            Name::Raw(bytes) => text(bytes),
        }
    }
}

impl Harness {
    fn new(input: &NodeInput) -> Harness {
        let size = if input.three_nodes { 3 } else { 2 };
        let me = NodeId(u16::from(input.me) % size);
        let config = CoreConfig {
            spec: certs::resolved(size, me.0, tuning()),
            incarnation: MY_INCARNATION,
            seed: 0x00c0_ffee,
            time_provider: certs::time_provider(),
        };
        let now = epoch();
        let core = Core::new(config, now).expect("start a core");
        let mut harness = Harness {
            core,
            now,
            me,
            peers: (0..size).map(NodeId).filter(|&n| n != me).collect(),
            tags: registered_types().into_iter().map(|(tag, _)| tag).collect(),
            conns: Vec::new(),
            links: BTreeMap::new(),
            link_peer: BTreeMap::new(),
            streams: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            closed: BTreeSet::new(),
            up: BTreeSet::new(),
            corrs: BTreeMap::new(),
            tunnel_ids: BTreeMap::new(),
            pings: BTreeMap::new(),
            syncs: BTreeMap::new(),
            local_budget: 0,
            mailboxes: Vec::new(),
            requests: Vec::new(),
            opening: Vec::new(),
            tunnels: Vec::new(),
            shut_down: false,
        };
        harness.drain();
        for (i, peer) in harness.peers.clone().into_iter().enumerate() {
            if input.link >> i & 1 == 1 {
                harness.connect(peer);
            }
        }
        for _ in 0..2 {
            let (addr, mailbox) = harness.core.node().new_mailbox();
            harness.mailboxes.push((addr, mailbox));
        }
        harness.check();
        harness
    }

    fn connect(&mut self, peer: NodeId) {
        if let Some(conn) = self.core.fuzz_connect_peer(self.now, peer) {
            self.conns.push(conn);
            self.links.insert(peer, conn);
            self.link_peer.insert(conn, peer);
            self.streams.insert(conn, FrameDecoder::new(1 << 24));
        }
        self.drain();
    }

    fn peer(&self, index: u8) -> Option<NodeId> {
        pick(&self.peers, index)
    }

    fn mailbox(&self, index: u8) -> Option<&(Address, Mailbox)> {
        (!self.mailboxes.is_empty()).then(|| &self.mailboxes[index as usize % self.mailboxes.len()])
    }

    fn remote_id(&self, r: &RemoteRef) -> Option<MailboxId> {
        Some(MailboxId {
            node: self.peer(r.peer)?,
            incarnation: if r.stale {
                Incarnation(0)
            } else {
                PEER_INCARNATION
            },
            serial: u64::from(r.serial),
        })
    }

    fn who(&self, who: &Who, sender: Option<NodeId>) -> MailboxId {
        let fallback = MailboxId {
            node: self.me,
            incarnation: MY_INCARNATION,
            serial: 0,
        };
        match who {
            Who::Sender { serial } => MailboxId {
                node: sender.or_else(|| self.peer(0)).unwrap_or(self.me),
                incarnation: PEER_INCARNATION,
                serial: u64::from(*serial),
            },
            Who::Ours(i) => self.mailbox(*i).map_or(fallback, |(a, _)| a.id()),
            Who::Peer(r) => self.remote_id(r).unwrap_or(fallback),
            Who::Raw {
                node,
                incarnation,
                serial,
            } => MailboxId {
                node: NodeId(*node),
                incarnation: Incarnation(*incarnation),
                serial: *serial,
            },
        }
    }

    fn value(&self, value: &FuzzValue, sender: Option<NodeId>) -> Value {
        match value {
            FuzzValue::U64(x) => Value::U64(*x),
            FuzzValue::Text(bytes) => Value::Text(text(bytes)),
            FuzzValue::Bytes { len, big, fill } => {
                let n = *len as usize * if *big { 4 } else { 1 };
                Value::Bytes(serde_bytes::ByteBuf::from(vec![*fill; n]))
            }
            FuzzValue::Address(who) => {
                Value::Address(self.core.node().address_of(self.who(who, sender)))
            }
            FuzzValue::Closed(who) => Value::Closed(MailboxClosed(self.who(who, sender))),
        }
    }

    fn tag(&self, tag: &Tag) -> TypeTag {
        match tag {
            Tag::Registered(i) => pick(&self.tags, *i).unwrap_or(TypeTag(0)),
            Tag::Raw(t) => TypeTag(*t),
        }
    }

    fn body(&self, body: &Body, sender: NodeId) -> (TypeTag, Bytes) {
        match body {
            Body::Value(v) => {
                let (tag, bytes) = self.value(v, Some(sender)).encode();
                (tag, bytes.into())
            }
            Body::Tagged { tag, payload } => (self.tag(tag), chunk_bytes(payload).into()),
        }
    }

    fn frame(&self, frame: &FuzzFrame, peer: NodeId) -> Result<Frame, Vec<u8>> {
        let who = |w: &Who| self.who(w, Some(peer));
        Ok(match frame {
            FuzzFrame::Hello(body) => Frame::Hello(body.clone().into()),
            FuzzFrame::Ping(nonce) => Frame::Ping(*nonce),
            FuzzFrame::Pong { seen, nonce } => Frame::Pong(if *seen {
                self.pings.get(&peer).copied().unwrap_or(*nonce)
            } else {
                *nonce
            }),
            FuzzFrame::Data { dest, body } => {
                let (tag, payload) = self.body(body, peer);
                Frame::Data {
                    dest: who(dest),
                    tag,
                    payload,
                }
            }
            FuzzFrame::FragmentStart {
                dest,
                tag,
                total,
                chunk,
            } => Frame::FragmentStart {
                dest: who(dest),
                tag: self.tag(tag),
                total_len: *total,
                chunk: chunk_bytes(chunk).into(),
            },
            FuzzFrame::FragmentCont { dest, chunk } => Frame::FragmentCont {
                dest: who(dest),
                chunk: chunk_bytes(chunk).into(),
            },
            FuzzFrame::Control(body) => Frame::Control(body.clone().into()),
            FuzzFrame::Goodbye(body) => Frame::Goodbye(body.clone().into()),
            FuzzFrame::Request { dest, corr, body } => {
                let (tag, payload) = self.body(body, peer);
                Frame::Request {
                    dest: who(dest),
                    corr: *corr,
                    tag,
                    // Already expired, just expiring, a usual timeout and the cap.
                    remaining_us: [0, 1_000, 5_000_000, MAX_REMAINING_US][(*corr % 4) as usize],
                    payload,
                }
            }
            FuzzFrame::Reply { corr, status, body } => {
                let (tag, payload) = self.body(body, peer);
                let seen = self.corrs.get(&peer).map_or(&[][..], Vec::as_slice);
                Frame::Reply {
                    corr: match corr {
                        Corr::Seen(i) => pick(seen, *i).unwrap_or(0),
                        Corr::Raw(c) => *c,
                    },
                    status: [
                        ReplyStatus::Ok,
                        ReplyStatus::RemoteError,
                        ReplyStatus::Refused,
                        ReplyStatus::NoMember,
                        ReplyStatus::Dropped,
                        ReplyStatus::Cancelled,
                    ][*status as usize % 6],
                    tag,
                    payload,
                }
            }
            FuzzFrame::Publish { topic, name, body } => {
                let (tag, payload) = self.body(body, peer);
                let mut name = name.resolve().into_bytes();
                name.truncate(u16::MAX as usize);
                Frame::Publish {
                    scope: if *topic {
                        PublishScope::Topic
                    } else {
                        PublishScope::Group
                    },
                    tag,
                    name: name.into(),
                    payload,
                }
            }
            FuzzFrame::Tunnel {
                id,
                from_opener,
                op,
            } => {
                let seen = self.tunnel_ids.get(&peer).map_or(&[][..], Vec::as_slice);
                Frame::Tunnel {
                    id: match id {
                        TunnelRef::Seen(i) => pick(seen, *i).unwrap_or(0),
                        TunnelRef::Raw(id) => *id,
                    },
                    from_opener: *from_opener,
                    op: match op {
                        FuzzTunnelOp::Open { dest, credit } => TunnelOp::Open {
                            dest: who(dest),
                            credit: *credit,
                        },
                        FuzzTunnelOp::Accept { credit } => TunnelOp::Accept { credit: *credit },
                        FuzzTunnelOp::Reject(r) => TunnelOp::Reject {
                            reason: r.clone().into(),
                        },
                        FuzzTunnelOp::Data { flags, chunk } => TunnelOp::Data {
                            flags: *flags,
                            chunk: chunk_bytes(chunk).into(),
                        },
                        FuzzTunnelOp::Credit { bytes } => TunnelOp::Credit { bytes: *bytes },
                        FuzzTunnelOp::Close(r) => TunnelOp::Close {
                            reason: r.clone().into(),
                        },
                    },
                }
            }
            FuzzFrame::Wire(body) => {
                let mut wire = Vec::with_capacity(body.len() + 4);
                wire.extend_from_slice(&(body.len() as u32).to_le_bytes());
                wire.extend_from_slice(body);
                return Err(wire);
            }
        })
    }

    fn delta(&self, delta: &Delta, peer: NodeId) -> Control {
        let who = |w: &Who| self.who(w, Some(peer));
        match delta {
            Delta::Claim { name, id } => Control::Claim {
                name: name.resolve(),
                id: who(id),
            },
            Delta::Unclaim { name, id } => Control::Unclaim {
                name: name.resolve(),
                id: who(id),
            },
            Delta::Join { group, id } => Control::Join {
                group: group.resolve(),
                id: who(id),
            },
            Delta::Leave { group, id } => Control::Leave {
                group: group.resolve(),
                id: who(id),
            },
            Delta::Interest { topic, interested } => Control::Interest {
                topic: topic.resolve(),
                interested: *interested,
            },
        }
    }

    fn control(&self, control: &FuzzControl, peer: NodeId) -> Bytes {
        let who = |w: &Who| self.who(w, Some(peer));
        let control = match control {
            FuzzControl::Snapshot { deltas, last } => Control::Snapshot {
                deltas: deltas.iter().map(|d| self.delta(d, peer)).collect(),
                last: *last,
            },
            FuzzControl::Delta(d) => self.delta(d, peer),
            FuzzControl::SyncRequest { seq } => Control::SyncRequest { seq: *seq },
            FuzzControl::SyncReply { seen, seq } => Control::SyncReply {
                seq: if *seen {
                    self.syncs.get(&peer).copied().unwrap_or(*seq)
                } else {
                    *seq
                },
            },
            FuzzControl::Watch { target } => Control::Watch {
                target: who(target),
            },
            FuzzControl::Unwatch { target } => Control::Unwatch {
                target: who(target),
            },
            FuzzControl::Closed { target } => Control::Closed {
                target: who(target),
            },
            FuzzControl::Raw(body) => return body.clone().into(),
            FuzzControl::Members { nodes, answer } => Control::Members {
                nodes: nodes
                    .iter()
                    .map(|m| {
                        let address = if m.malformed {
                            format!("no-port-{}", m.port)
                        } else {
                            format!("127.0.0.1:{}", 20000 + u16::from(m.port))
                        };
                        (m.id, address)
                    })
                    .collect(),
                answer: *answer,
            },
            FuzzControl::Flood {
                kind,
                first,
                count,
                len,
            } => {
                let count = *count as usize % (FLOOD_MAX_ENTRIES + 1);
                let len = *len as usize % (FLOOD_NAME_CAP + 9);
                let id = self.who(&Who::Sender { serial: 1 }, Some(peer));
                let deltas = (0..count)
                    .map(|i| {
                        let mut name = format!("{}", *first as usize + i);
                        name.extend(std::iter::repeat_n('f', len.saturating_sub(name.len())));
                        match kind % 3 {
                            0 => Control::Claim { name, id },
                            1 => Control::Join { group: name, id },
                            _ => Control::Interest {
                                topic: name,
                                interested: true,
                            },
                        }
                    })
                    .collect();
                Control::Snapshot { deltas, last: true }
            }
        };
        control.encode()
    }

    /// Feeds bytes to `peer`'s link, if it has one.
    fn feed_peer(&mut self, peer: NodeId, bytes: &[u8]) {
        if let Some(&conn) = self.links.get(&peer) {
            self.core
                .handle_input(self.now, Input::Received { conn, bytes });
        }
    }

    fn conn(&self, index: u8) -> Option<ConnId> {
        pick(&self.conns, index)
    }

    /// Applies one op; returns the peers whose links it may take down.
    fn apply(&mut self, op: &Op) -> BTreeSet<NodeId> {
        let mut exempt = BTreeSet::new();
        let link_of = |h: &Harness, conn: ConnId| h.link_peer.get(&conn).copied();
        match op {
            Op::PeerFrame {
                peer,
                frame,
                repeat,
            } => {
                let Some(peer) = self.peer(*peer) else {
                    return exempt;
                };
                exempt.insert(peer);
                let one = match self.frame(frame, peer) {
                    Ok(frame) => frame.to_vec(),
                    Err(wire) => wire,
                };
                let copies = (1 + 8 * *repeat as usize)
                    .min(MAX_OP_BYTES / one.len().max(1))
                    .max(1);
                let bytes = one.repeat(copies);
                self.feed_peer(peer, &bytes);
            }
            Op::PeerControl { peer, control } => {
                let Some(peer) = self.peer(*peer) else {
                    return exempt;
                };
                exempt.insert(peer);
                let body = self.control(control, peer);
                self.feed_peer(peer, &Frame::Control(body).to_vec());
            }
            Op::PeerBytes { peer, bytes } => {
                let Some(peer) = self.peer(*peer) else {
                    return exempt;
                };
                exempt.insert(peer);
                self.feed_peer(peer, bytes);
            }
            Op::Reconnect { peer } => {
                let Some(peer) = self.peer(*peer) else {
                    return exempt;
                };
                exempt.insert(peer);
                if !self.shut_down {
                    self.connect(peer);
                }
            }
            Op::Timeout { ms } => {
                exempt.extend(self.peers.iter().copied());
                self.now += Duration::from_millis(u64::from(*ms));
                self.core.handle_input(self.now, Input::Timeout);
            }
            Op::NextDeadline => {
                exempt.extend(self.peers.iter().copied());
                if let Some(t) = self.core.poll_timeout() {
                    self.now = self.now.max(t);
                }
                self.core.handle_input(self.now, Input::Timeout);
            }
            Op::Written { conn, bytes } => {
                if let Some(conn) = self.conn(*conn) {
                    exempt.extend(link_of(self, conn));
                    let bytes = *bytes as usize;
                    if let Some(f) = self.in_flight.get_mut(&conn) {
                        *f = f.saturating_sub(bytes);
                    }
                    self.core
                        .handle_input(self.now, Input::Written { conn, bytes });
                }
            }
            Op::Closed { conn, error } => {
                if let Some(conn) = self.conn(*conn) {
                    exempt.extend(link_of(self, conn));
                    let error = error.then_some("connection reset by fuzzer");
                    self.core
                        .handle_input(self.now, Input::Closed { conn, error });
                }
            }
            Op::Connected { conn } => {
                if let Some(conn) = self.conn(*conn) {
                    exempt.extend(link_of(self, conn));
                    self.core.handle_input(self.now, Input::Connected { conn });
                }
            }
            Op::ConnectFailed { conn } => {
                if let Some(conn) = self.conn(*conn) {
                    exempt.extend(link_of(self, conn));
                    self.core.handle_input(
                        self.now,
                        Input::ConnectFailed {
                            conn,
                            error: "refused by fuzzer",
                        },
                    );
                }
            }
            Op::Accept => {
                if let Ok(conn) = self.core.accept(self.now, "fuzz") {
                    self.conns.push(conn);
                }
            }
            Op::Received { conn, bytes } => {
                if let Some(conn) = self.conn(*conn) {
                    exempt.extend(link_of(self, conn));
                    self.core.handle_input(
                        self.now,
                        Input::Received {
                            conn,
                            bytes: bytes.as_slice(),
                        },
                    );
                }
            }
            Op::Local(local) => {
                // A peer that leaves a write window unread may be closed as
                // too slow when local calls queue more for it.
                let window = tuning().write_window;
                for (&peer, conn) in &self.links {
                    if self.in_flight.get(conn).is_some_and(|&f| f >= window) {
                        exempt.insert(peer);
                    }
                }
                self.local(local);
            }
            Op::Shutdown => {
                exempt.extend(self.peers.iter().copied());
                self.core.shutdown(self.now);
                self.shut_down = true;
            }
        }
        exempt
    }

    fn target<'a>(&'a self, to: &FuzzTarget, names: &'a mut String) -> Option<TargetHolder<'a>> {
        Some(match to {
            FuzzTarget::Service(name) => {
                *names = name.resolve();
                TargetHolder::Service(names.as_str())
            }
            FuzzTarget::Remote(r) => {
                TargetHolder::Address(self.core.node().address_of(self.remote_id(r)?))
            }
            FuzzTarget::Local(i) => TargetHolder::Address(self.mailbox(*i)?.0.clone()),
        })
    }

    fn local(&mut self, op: &LocalOp) {
        self.local_budget += 512;
        let node = self.core.node().clone();
        match op {
            LocalOp::NewMailbox { capacity } => {
                if self.mailboxes.len() < 64 {
                    let pair = if *capacity == 0 {
                        node.new_mailbox()
                    } else {
                        node.new_mailbox_with_capacity(Capacity::messages(*capacity as usize))
                    };
                    self.mailboxes.push(pair);
                }
            }
            LocalOp::CloseMailbox { mailbox } => {
                self.local_budget += 256 * self.peers.len();
                if let Some((_, m)) = self.mailbox(*mailbox) {
                    m.close();
                }
            }
            LocalOp::Send { to, value } => {
                if let Some(id) = self.remote_id(to) {
                    let addr = node.address_of(id);
                    let _ = with_value!(self.value(value, None), |x| addr.send(x));
                }
            }
            LocalOp::Register { name, mailbox } => {
                let name = name.resolve();
                self.local_budget += name.len();
                if let Some((a, _)) = self.mailbox(*mailbox) {
                    let _ = node.register(&name, a);
                }
            }
            LocalOp::Unregister { name, mailbox } => {
                let name = name.resolve();
                self.local_budget += name.len();
                if let Some((a, _)) = self.mailbox(*mailbox) {
                    node.unregister(&name, a);
                }
            }
            LocalOp::Lookup { name } => {
                let name = name.resolve();
                if let Some(a) = node.lookup(&name) {
                    let _ = a.send(1u64);
                }
                for a in node.lookup_all(&name) {
                    let _ = a.send(2u64);
                }
                let _ = node.seen_names(&[&name]);
            }
            LocalOp::Watch { target, watcher } => {
                if let (Some(id), Some((w, _))) = (self.remote_id(target), self.mailbox(*watcher)) {
                    node.address_of(id).on_close_notify(w);
                }
            }
            LocalOp::Unwatch { target, watcher } => {
                if let (Some(id), Some((w, _))) = (self.remote_id(target), self.mailbox(*watcher)) {
                    node.address_of(id).remove_notify(w);
                }
            }
            LocalOp::Join { group, mailbox } => {
                let group = group.resolve();
                self.local_budget += group.len();
                if let Some((a, _)) = self.mailbox(*mailbox) {
                    let _ = node.join(&group, a);
                }
            }
            LocalOp::Leave { group, mailbox } => {
                let group = group.resolve();
                self.local_budget += group.len();
                if let Some((a, _)) = self.mailbox(*mailbox) {
                    let _ = node.leave(&group, a);
                }
            }
            LocalOp::Subscribe { topic, mailbox } => {
                let topic = topic.resolve();
                self.local_budget += topic.len();
                if let Some((a, _)) = self.mailbox(*mailbox) {
                    let _ = node.subscribe(&topic, a);
                }
            }
            LocalOp::Unsubscribe { topic, mailbox } => {
                let topic = topic.resolve();
                self.local_budget += topic.len();
                if let Some((a, _)) = self.mailbox(*mailbox) {
                    let _ = node.unsubscribe(&topic, a);
                }
            }
            LocalOp::Broadcast { group, value } => {
                let group = group.resolve();
                let _ = with_value!(self.value(value, None), |x| node.broadcast(&group, &x));
            }
            LocalOp::Publish { topic, value } => {
                let topic = topic.resolve();
                let _ = with_value!(self.value(value, None), |x| node.publish(&topic, &x));
            }
            LocalOp::Request {
                to,
                value,
                timeout_ms,
            } => {
                let deadline = self.now + Duration::from_millis(u64::from(*timeout_ms));
                let value = self.value(value, None);
                let mut name = String::new();
                if let Some(target) = self.target(to, &mut name) {
                    let future = match &target {
                        TargetHolder::Service(s) => {
                            with_value!(value, |x| node.request(*s, x, deadline))
                        }
                        TargetHolder::Address(a) => {
                            with_value!(value, |x| node.request(a, x, deadline))
                        }
                    };
                    if self.requests.len() < 64 {
                        self.requests.push(future);
                    }
                }
            }
            LocalOp::OpenTunnel { to } => {
                let mut name = String::new();
                if let Some(target) = self.target(to, &mut name) {
                    let opening = match &target {
                        TargetHolder::Service(s) => node.open_tunnel(*s),
                        TargetHolder::Address(a) => node.open_tunnel(a),
                    };
                    if self.opening.len() < 16 {
                        self.opening.push(opening);
                    }
                }
            }
            LocalOp::TunnelSend { tunnel, len } => {
                self.local_budget += *len as usize;
                if !self.tunnels.is_empty() {
                    let t = &self.tunnels[*tunnel as usize % self.tunnels.len()];
                    let mut send = t.send(vec![0x5a; *len as usize]);
                    let _ = poll_once(&mut send);
                }
            }
            LocalOp::TunnelRecv { tunnel } => {
                if !self.tunnels.is_empty() {
                    let t = &self.tunnels[*tunnel as usize % self.tunnels.len()];
                    let mut recv = t.recv();
                    let _ = poll_once(&mut recv);
                }
            }
            LocalOp::TunnelClose { tunnel } => {
                if !self.tunnels.is_empty() {
                    let i = *tunnel as usize % self.tunnels.len();
                    self.tunnels[i].close();
                    if self.tunnels[i].is_closed() {
                        self.tunnels.swap_remove(i);
                    }
                }
            }
            LocalOp::Drain { mailbox, answer } => {
                let mut taken = 0;
                if let Some((_, m)) = self.mailbox(*mailbox) {
                    let mut accepted = Vec::new();
                    for _ in 0..1024 {
                        let Ok(Some(msg)) = m.try_recv() else {
                            break;
                        };
                        taken += 1;
                        if msg.is_remote() {
                            decode_remote(msg);
                            continue;
                        }
                        let msg = match msg.take::<Request>() {
                            Ok(request) => {
                                let _ = match answer % 3 {
                                    0 => request.reply(7u64),
                                    1 => request.reply_error("fuzz says no"),
                                    _ => Ok(()),
                                };
                                continue;
                            }
                            Err(msg) => msg,
                        };
                        if let Ok(offer) = msg.take::<IncomingTunnel>() {
                            if answer & 4 != 0 {
                                if let Ok(t) = offer.accept() {
                                    accepted.push(t);
                                }
                            } else {
                                offer.reject("fuzz rejects");
                            }
                        }
                    }
                    for t in accepted {
                        if self.tunnels.len() < 16 {
                            self.tunnels.push(t);
                        }
                    }
                }
                self.local_budget += 256 * taken;
            }
            LocalOp::Sync => {
                drop(node.sync());
            }
            LocalOp::WatchStatus { mailbox } => {
                if let Some((a, _)) = self.mailbox(*mailbox) {
                    node.subscribe_connection_status(a);
                }
            }
        }
    }

    /// Polls the futures local code holds.
    fn poll_futures(&mut self) {
        self.requests.retain_mut(|r| poll_once(r).is_pending());
        let mut opened = Vec::new();
        self.opening.retain_mut(|o| match poll_once(o) {
            Poll::Ready(Ok(t)) => {
                opened.push(t);
                false
            }
            Poll::Ready(Err(_)) => false,
            Poll::Pending => true,
        });
        for t in opened {
            if self.tunnels.len() < 16 {
                self.tunnels.push(t);
            }
        }
    }

    /// Takes every output, checking it.
    fn drain(&mut self) {
        let mut count = 0;
        while let Some(output) = self.core.poll_output(self.now) {
            count += 1;
            assert!(count <= 100_000, "poll_output never returns None");
            match output {
                Output::Connect { conn, node, .. } => {
                    // Spec peers, or members a peer's `Members` message named.
                    assert!(node != self.me, "dialled itself");
                    assert!(!self.conns.contains(&conn), "connection id {conn} reused");
                    self.conns.push(conn);
                }
                Output::Transmit { conn, data } => {
                    assert!(
                        !self.closed.contains(&conn),
                        "transmit on {conn} after its close"
                    );
                    assert!(!data.is_empty(), "an empty transmit");
                    *self.in_flight.entry(conn).or_default() += data.len();
                    self.observe(conn, &data);
                }
                Output::Close { conn } => {
                    assert!(self.closed.insert(conn), "{conn} closed twice");
                    if let Some(stream) = self.streams.remove(&conn) {
                        assert_eq!(stream.buffered(), 0, "{conn} closed amid a frame");
                    }
                    if let Some(peer) = self.link_peer.get(&conn) {
                        if self.links.get(peer) == Some(&conn) {
                            self.links.remove(peer);
                        }
                    }
                }
                Output::PauseReading { conn } | Output::ResumeReading { conn } => {
                    assert!(
                        !self.closed.contains(&conn),
                        "reads paused on closed {conn}"
                    );
                }
                Output::Event(Event::PeerUp { node, .. }) => {
                    assert!(self.up.insert(node), "PeerUp for {node}, which was up");
                }
                Output::Event(Event::PeerDown { node, .. }) => {
                    assert!(self.up.remove(&node), "PeerDown for {node}, which was down");
                }
                Output::Event(Event::IdentityConflict { .. }) => {}
            }
        }
    }

    /// Decodes what the node sent on a plaintext link and learns the ids
    /// a peer may answer to.
    fn observe(&mut self, conn: ConnId, data: &[u8]) {
        let (Some(stream), Some(&peer)) = (self.streams.get_mut(&conn), self.link_peer.get(&conn))
        else {
            return;
        };
        stream.feed(data);
        loop {
            let frame = match stream.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => panic!("the node sent {peer} a malformed frame: {e}"),
            };
            match frame {
                Frame::Data { dest, .. }
                | Frame::FragmentStart { dest, .. }
                | Frame::FragmentCont { dest, .. }
                | Frame::Request { dest, .. } => {
                    assert_eq!(dest.node, peer, "{peer} was sent data for {dest:?}");
                    if let Frame::Request { corr, .. } = frame {
                        push_capped(self.corrs.entry(peer).or_default(), corr);
                    }
                }
                Frame::Tunnel { id, .. } => {
                    let ids = self.tunnel_ids.entry(peer).or_default();
                    if !ids.contains(&id) {
                        push_capped(ids, id);
                    }
                }
                Frame::Ping(nonce) => {
                    self.pings.insert(peer, nonce);
                }
                Frame::Control(body) => match Control::decode(&body) {
                    Ok(Control::SyncRequest { seq }) => {
                        self.syncs.insert(peer, seq);
                    }
                    Ok(_) => {}
                    Err(e) => panic!("the node sent {peer} a malformed control body: {e}"),
                },
                Frame::Hello(_) => panic!("the node sent {peer} a hello on an established link"),
                _ => {}
            }
        }
    }

    /// The invariants that hold after every op.
    fn check(&mut self) {
        let connected: BTreeSet<NodeId> = self.core.connected_peers().into_iter().collect();
        assert_eq!(connected, self.up, "events and connected_peers disagree");
        let tuning = tuning();
        for &peer in &self.peers {
            let buffered = self.core.peer_buffered_bytes(peer);
            let flight = self
                .links
                .get(&peer)
                .and_then(|c| self.in_flight.get(c))
                .copied()
                .unwrap_or(0);
            // A peer that leaves a write window unread may make the node
            // queue core frames up to the backlog limit, plus one input's
            // worth of answers before the limit is checked.
            let unread = if flight >= tuning.write_window {
                CONTROL_BACKLOG + MAX_OP_BYTES
            } else {
                0
            };
            let bound = 2 * tuning.max_message_len
                + tuning.max_frame_len
                + SLACK
                + self.local_budget
                + flight
                + unread;
            assert!(
                buffered <= bound,
                "the node holds {buffered} bytes for {peer}, over {bound} \
                 ({flight} in flight, {} queued by local calls)",
                self.local_budget
            );
        }
        let stats = self.core.node().peer_stats();
        for s in &stats {
            let bound = tuning.outbound_queue_bytes
                + reign_proto::codec::FRAGMENT_LEN
                + tuning.outbound_bulk_bytes.max(tuning.max_message_len)
                + SLACK
                + self.local_budget;
            assert!(
                s.queued_bytes as usize <= bound,
                "{} bytes wait in the outbound queue to {}, over {bound}",
                s.queued_bytes,
                s.node
            );
        }
        self.check_registry(&tuning);
        for t in &self.tunnels {
            let bound = t.window() + tuning.max_message_len;
            assert!(
                t.buffered_bytes() <= bound,
                "a tunnel buffers {} bytes, over its {} byte window plus one message ({bound})",
                t.buffered_bytes(),
                t.window()
            );
        }
    }
}

impl Harness {
    /// The registry stays within its caps for every peer, and resolves
    /// every contested name to its lowest claimant.
    fn check_registry(&self, tuning: &Tuning) {
        let node = self.core.node();
        for &peer in &self.peers {
            let (names, members, topics) = node.registry_peer_load(peer);
            assert!(
                names <= tuning.max_names_per_node
                    && members <= tuning.max_group_members_per_node
                    && topics <= tuning.max_topics_per_node,
                "{peer} holds {names} names, {members} group memberships and {topics} topics here, over the caps"
            );
        }
        let view = node.registry_view();
        let contested = view.values().filter(|ids| ids.len() > 1).count();
        assert_eq!(node.multiple_claim_count(), contested, "multiple claims");
        for (name, ids) in &view {
            assert!(
                name.len() <= tuning.max_name_len,
                "a name of {} bytes is held",
                name.len()
            );
            assert_eq!(
                node.lookup(name).map(|a| a.id()),
                ids.first().copied(),
                "{name:?} does not resolve to its lowest claimant"
            );
        }
    }
}

/// Whom a request or tunnel goes to, owned.
enum TargetHolder<'a> {
    Service(&'a str),
    Address(Address),
}

fn push_capped(ids: &mut Vec<u64>, id: u64) {
    if ids.len() >= 256 {
        ids.remove(0);
    }
    ids.push(id);
}

/// Decodes a message from another node as the type its tag names.
fn decode_remote(msg: reign_proto::Message) {
    match msg.type_name() {
        Some("u64") => drop(msg.try_downcast::<u64>()),
        Some("string") => drop(msg.try_downcast::<String>()),
        Some("bytes") => drop(msg.try_downcast::<serde_bytes::ByteBuf>()),
        Some("reign.Address") => {
            if let Ok(addr) = msg.try_downcast::<Address>() {
                // An address from a peer may name any node: sending must
                // fail or queue, never panic.
                let _ = addr.send(3u64);
            }
        }
        Some("reign.MailboxClosed") => drop(msg.try_downcast::<MailboxClosed>()),
        Some("reign.MultipleClaim") => {
            drop(msg.try_downcast::<reign_proto::system::MultipleClaim>())
        }
        Some("reign.ConnectionStatus") => {
            drop(msg.try_downcast::<reign_proto::system::ConnectionStatus>())
        }
        Some(crate::payload::NESTED_NAME) => drop(msg.try_downcast::<crate::payload::Nested>()),
        _ => {}
    }
}

/// The virtual epoch: one real instant per process, so runs are repeatable.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Fuzzes a whole node with `data`, a [`NodeInput`].
pub fn node(data: &[u8]) {
    crate::payload::register_harness_types();
    let Ok(input) = NodeInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut h = Harness::new(&input);
    let trace = std::env::var_os("REIGN_FUZZ_TRACE").is_some();
    for op in &input.ops {
        if trace {
            eprintln!(
                "up {:?}, buffered {:?}, conns {}; next: {op:?}",
                h.up,
                h.peers
                    .iter()
                    .map(|&p| h.core.peer_buffered_bytes(p))
                    .collect::<Vec<_>>(),
                h.core.connection_count()
            );
        }
        let before: BTreeSet<NodeId> = h.up.clone();
        let exempt = h.apply(op);
        h.poll_futures();
        h.drain();
        h.check();
        if !h.shut_down {
            for peer in before.difference(&h.up) {
                assert!(
                    exempt.contains(peer),
                    "{op:?} took down the link to {peer}, which it was not for"
                );
            }
        }
    }
    if !h.shut_down {
        h.core.shutdown(h.now);
    }
    h.drain();
    // A graceful shutdown first drains what peers have not taken; at its
    // deadline everything closes.
    if let Some(deadline) = h.core.drain_deadline() {
        h.now = h.now.max(deadline);
        h.core.handle_input(h.now, Input::Timeout);
        h.drain();
    }
    assert_eq!(
        h.core.connection_count(),
        0,
        "connections left after shutdown"
    );
    assert!(h.up.is_empty(), "peers up after shutdown");
}

// ----- writing inputs (for seeds) ------------------------------------------

impl Unarbitrary for NodeInput {
    fn write(&self, w: &mut Writer) {
        write_fields!(w; &self.three_nodes, &self.me, &self.link, &self.ops);
    }
}

impl Unarbitrary for Op {
    fn write(&self, w: &mut Writer) {
        const N: u32 = 14;
        match self {
            Op::PeerFrame {
                peer,
                frame,
                repeat,
            } => {
                w.variant(0, N);
                write_fields!(w; peer, frame, repeat);
            }
            Op::PeerControl { peer, control } => {
                w.variant(1, N);
                write_fields!(w; peer, control);
            }
            Op::PeerBytes { peer, bytes } => {
                w.variant(2, N);
                write_fields!(w; peer, bytes);
            }
            Op::Reconnect { peer } => {
                w.variant(3, N);
                write_fields!(w; peer);
            }
            Op::Timeout { ms } => {
                w.variant(4, N);
                write_fields!(w; ms);
            }
            Op::NextDeadline => w.variant(5, N),
            Op::Written { conn, bytes } => {
                w.variant(6, N);
                write_fields!(w; conn, bytes);
            }
            Op::Closed { conn, error } => {
                w.variant(7, N);
                write_fields!(w; conn, error);
            }
            Op::Connected { conn } => {
                w.variant(8, N);
                write_fields!(w; conn);
            }
            Op::ConnectFailed { conn } => {
                w.variant(9, N);
                write_fields!(w; conn);
            }
            Op::Accept => w.variant(10, N),
            Op::Received { conn, bytes } => {
                w.variant(11, N);
                write_fields!(w; conn, bytes);
            }
            Op::Local(op) => {
                w.variant(12, N);
                op.write(w);
            }
            Op::Shutdown => w.variant(13, N),
        }
    }
}

impl Unarbitrary for LocalOp {
    fn write(&self, w: &mut Writer) {
        const N: u32 = 22;
        match self {
            LocalOp::NewMailbox { capacity } => {
                w.variant(0, N);
                write_fields!(w; capacity);
            }
            LocalOp::CloseMailbox { mailbox } => {
                w.variant(1, N);
                write_fields!(w; mailbox);
            }
            LocalOp::Send { to, value } => {
                w.variant(2, N);
                write_fields!(w; to, value);
            }
            LocalOp::Register { name, mailbox } => {
                w.variant(3, N);
                write_fields!(w; name, mailbox);
            }
            LocalOp::Unregister { name, mailbox } => {
                w.variant(4, N);
                write_fields!(w; name, mailbox);
            }
            LocalOp::Lookup { name } => {
                w.variant(5, N);
                write_fields!(w; name);
            }
            LocalOp::Watch { target, watcher } => {
                w.variant(6, N);
                write_fields!(w; target, watcher);
            }
            LocalOp::Unwatch { target, watcher } => {
                w.variant(7, N);
                write_fields!(w; target, watcher);
            }
            LocalOp::Join { group, mailbox } => {
                w.variant(8, N);
                write_fields!(w; group, mailbox);
            }
            LocalOp::Leave { group, mailbox } => {
                w.variant(9, N);
                write_fields!(w; group, mailbox);
            }
            LocalOp::Subscribe { topic, mailbox } => {
                w.variant(10, N);
                write_fields!(w; topic, mailbox);
            }
            LocalOp::Unsubscribe { topic, mailbox } => {
                w.variant(11, N);
                write_fields!(w; topic, mailbox);
            }
            LocalOp::Broadcast { group, value } => {
                w.variant(12, N);
                write_fields!(w; group, value);
            }
            LocalOp::Publish { topic, value } => {
                w.variant(13, N);
                write_fields!(w; topic, value);
            }
            LocalOp::Request {
                to,
                value,
                timeout_ms,
            } => {
                w.variant(14, N);
                write_fields!(w; to, value, timeout_ms);
            }
            LocalOp::OpenTunnel { to } => {
                w.variant(15, N);
                write_fields!(w; to);
            }
            LocalOp::TunnelSend { tunnel, len } => {
                w.variant(16, N);
                write_fields!(w; tunnel, len);
            }
            LocalOp::TunnelRecv { tunnel } => {
                w.variant(17, N);
                write_fields!(w; tunnel);
            }
            LocalOp::TunnelClose { tunnel } => {
                w.variant(18, N);
                write_fields!(w; tunnel);
            }
            LocalOp::Drain { mailbox, answer } => {
                w.variant(19, N);
                write_fields!(w; mailbox, answer);
            }
            LocalOp::Sync => w.variant(20, N),
            LocalOp::WatchStatus { mailbox } => {
                w.variant(21, N);
                write_fields!(w; mailbox);
            }
        }
    }
}

impl Unarbitrary for Name {
    fn write(&self, w: &mut Writer) {
        match self {
            Name::Known(i) => {
                w.variant(0, 2);
                i.write(w);
            }
            Name::Raw(bytes) => {
                w.variant(1, 2);
                bytes.write(w);
            }
        }
    }
}

impl Unarbitrary for RemoteRef {
    fn write(&self, w: &mut Writer) {
        write_fields!(w; &self.peer, &self.serial, &self.stale);
    }
}

impl Unarbitrary for FuzzTarget {
    fn write(&self, w: &mut Writer) {
        match self {
            FuzzTarget::Service(name) => {
                w.variant(0, 3);
                name.write(w);
            }
            FuzzTarget::Remote(r) => {
                w.variant(1, 3);
                r.write(w);
            }
            FuzzTarget::Local(i) => {
                w.variant(2, 3);
                i.write(w);
            }
        }
    }
}

impl Unarbitrary for Who {
    fn write(&self, w: &mut Writer) {
        match self {
            Who::Sender { serial } => {
                w.variant(0, 4);
                serial.write(w);
            }
            Who::Ours(i) => {
                w.variant(1, 4);
                i.write(w);
            }
            Who::Peer(r) => {
                w.variant(2, 4);
                r.write(w);
            }
            Who::Raw {
                node,
                incarnation,
                serial,
            } => {
                w.variant(3, 4);
                write_fields!(w; node, incarnation, serial);
            }
        }
    }
}

impl Unarbitrary for FuzzValue {
    fn write(&self, w: &mut Writer) {
        match self {
            FuzzValue::U64(x) => {
                w.variant(0, 5);
                x.write(w);
            }
            FuzzValue::Text(t) => {
                w.variant(1, 5);
                t.write(w);
            }
            FuzzValue::Bytes { len, big, fill } => {
                w.variant(2, 5);
                write_fields!(w; len, big, fill);
            }
            FuzzValue::Address(who) => {
                w.variant(3, 5);
                who.write(w);
            }
            FuzzValue::Closed(who) => {
                w.variant(4, 5);
                who.write(w);
            }
        }
    }
}

impl Unarbitrary for Chunk {
    fn write(&self, w: &mut Writer) {
        match self {
            Chunk::Filled { len, fill } => {
                w.variant(0, 2);
                write_fields!(w; len, fill);
            }
            Chunk::Raw(bytes) => {
                w.variant(1, 2);
                bytes.write(w);
            }
        }
    }
}

impl Unarbitrary for Body {
    fn write(&self, w: &mut Writer) {
        match self {
            Body::Value(v) => {
                w.variant(0, 2);
                v.write(w);
            }
            Body::Tagged { tag, payload } => {
                w.variant(1, 2);
                write_fields!(w; tag, payload);
            }
        }
    }
}

impl Unarbitrary for Tag {
    fn write(&self, w: &mut Writer) {
        match self {
            Tag::Registered(i) => {
                w.variant(0, 2);
                i.write(w);
            }
            Tag::Raw(t) => {
                w.variant(1, 2);
                t.write(w);
            }
        }
    }
}

impl Unarbitrary for Corr {
    fn write(&self, w: &mut Writer) {
        match self {
            Corr::Seen(i) => {
                w.variant(0, 2);
                i.write(w);
            }
            Corr::Raw(c) => {
                w.variant(1, 2);
                c.write(w);
            }
        }
    }
}

impl Unarbitrary for TunnelRef {
    fn write(&self, w: &mut Writer) {
        match self {
            TunnelRef::Seen(i) => {
                w.variant(0, 2);
                i.write(w);
            }
            TunnelRef::Raw(id) => {
                w.variant(1, 2);
                id.write(w);
            }
        }
    }
}

impl Unarbitrary for FuzzFrame {
    fn write(&self, w: &mut Writer) {
        const N: u32 = 13;
        match self {
            FuzzFrame::Hello(body) => {
                w.variant(0, N);
                body.write(w);
            }
            FuzzFrame::Ping(nonce) => {
                w.variant(1, N);
                nonce.write(w);
            }
            FuzzFrame::Pong { seen, nonce } => {
                w.variant(2, N);
                write_fields!(w; seen, nonce);
            }
            FuzzFrame::Data { dest, body } => {
                w.variant(3, N);
                write_fields!(w; dest, body);
            }
            FuzzFrame::FragmentStart {
                dest,
                tag,
                total,
                chunk,
            } => {
                w.variant(4, N);
                write_fields!(w; dest, tag, total, chunk);
            }
            FuzzFrame::FragmentCont { dest, chunk } => {
                w.variant(5, N);
                write_fields!(w; dest, chunk);
            }
            FuzzFrame::Control(body) => {
                w.variant(6, N);
                body.write(w);
            }
            FuzzFrame::Goodbye(body) => {
                w.variant(7, N);
                body.write(w);
            }
            FuzzFrame::Request { dest, corr, body } => {
                w.variant(8, N);
                write_fields!(w; dest, corr, body);
            }
            FuzzFrame::Reply { corr, status, body } => {
                w.variant(9, N);
                write_fields!(w; corr, status, body);
            }
            FuzzFrame::Publish { topic, name, body } => {
                w.variant(10, N);
                write_fields!(w; topic, name, body);
            }
            FuzzFrame::Tunnel {
                id,
                from_opener,
                op,
            } => {
                w.variant(11, N);
                write_fields!(w; id, from_opener, op);
            }
            FuzzFrame::Wire(body) => {
                w.variant(12, N);
                body.write(w);
            }
        }
    }
}

impl Unarbitrary for FuzzTunnelOp {
    fn write(&self, w: &mut Writer) {
        const N: u32 = 6;
        match self {
            FuzzTunnelOp::Open { dest, credit } => {
                w.variant(0, N);
                write_fields!(w; dest, credit);
            }
            FuzzTunnelOp::Accept { credit } => {
                w.variant(1, N);
                credit.write(w);
            }
            FuzzTunnelOp::Reject(r) => {
                w.variant(2, N);
                r.write(w);
            }
            FuzzTunnelOp::Data { flags, chunk } => {
                w.variant(3, N);
                write_fields!(w; flags, chunk);
            }
            FuzzTunnelOp::Credit { bytes } => {
                w.variant(4, N);
                bytes.write(w);
            }
            FuzzTunnelOp::Close(r) => {
                w.variant(5, N);
                r.write(w);
            }
        }
    }
}

impl Unarbitrary for FuzzMember {
    fn write(&self, w: &mut Writer) {
        write_fields!(w; &self.id, &self.port, &self.malformed);
    }
}

impl Unarbitrary for FuzzControl {
    fn write(&self, w: &mut Writer) {
        const N: u32 = 10;
        match self {
            FuzzControl::Snapshot { deltas, last } => {
                w.variant(0, N);
                write_fields!(w; deltas, last);
            }
            FuzzControl::Delta(d) => {
                w.variant(1, N);
                d.write(w);
            }
            FuzzControl::SyncRequest { seq } => {
                w.variant(2, N);
                seq.write(w);
            }
            FuzzControl::SyncReply { seen, seq } => {
                w.variant(3, N);
                write_fields!(w; seen, seq);
            }
            FuzzControl::Watch { target } => {
                w.variant(4, N);
                target.write(w);
            }
            FuzzControl::Unwatch { target } => {
                w.variant(5, N);
                target.write(w);
            }
            FuzzControl::Closed { target } => {
                w.variant(6, N);
                target.write(w);
            }
            FuzzControl::Raw(body) => {
                w.variant(7, N);
                body.write(w);
            }
            FuzzControl::Members { nodes, answer } => {
                w.variant(8, N);
                write_fields!(w; nodes, answer);
            }
            FuzzControl::Flood {
                kind,
                first,
                count,
                len,
            } => {
                w.variant(9, N);
                write_fields!(w; kind, first, count, len);
            }
        }
    }
}

impl Unarbitrary for Delta {
    fn write(&self, w: &mut Writer) {
        const N: u32 = 5;
        match self {
            Delta::Claim { name, id } => {
                w.variant(0, N);
                write_fields!(w; name, id);
            }
            Delta::Unclaim { name, id } => {
                w.variant(1, N);
                write_fields!(w; name, id);
            }
            Delta::Join { group, id } => {
                w.variant(2, N);
                write_fields!(w; group, id);
            }
            Delta::Leave { group, id } => {
                w.variant(3, N);
                write_fields!(w; group, id);
            }
            Delta::Interest { topic, interested } => {
                w.variant(4, N);
                write_fields!(w; topic, interested);
            }
        }
    }
}
