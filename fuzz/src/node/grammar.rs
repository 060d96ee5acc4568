//! The `node` target's input grammar: the steps a fuzz input is parsed
//! into, and what their plain words (fixed names, filled chunks) stand for.
//!
//! Each type is declared through [`unarbitrary!`](crate::unarbitrary), which
//! keeps `#[derive(Arbitrary)]` (bytes to steps, for the fuzzer) and the
//! [`Unarbitrary`](crate::unarb::Unarbitrary) writer (steps to bytes, for the
//! seeds in `crate::seeds`) on one list of fields. The byte layout lives
//! here alone and every stored corpus file and regression depends on it:
//! adding, removing or reordering a field or a variant changes what those
//! inputs mean. What the harness does with each step is in `harness.rs`
//! and `wire.rs`.

use arbitrary::Arbitrary;

use crate::unarbitrary;

/// Names the fuzzer picks by index (so two ops can agree on one).
const NAMES: [&str; 5] = ["svc", "topic", "a", "b", ""];

unarbitrary! {
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
}

unarbitrary! {
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
}

unarbitrary! {
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
        /// A mailbox links to a remote mailbox (`Link` on the wire).
        Link {
            /// The remote mailbox.
            target: RemoteRef,
            /// The linking mailbox.
            mailbox: u8,
        },
        /// Undoes a link (`Unlink` on the wire).
        Unlink {
            /// The remote mailbox.
            target: RemoteRef,
            /// The linked mailbox.
            mailbox: u8,
        },
        /// A mailbox traps exits, or stops trapping them.
        TrapExits {
            /// Which mailbox.
            mailbox: u8,
            /// Trap or not.
            on: bool,
        },
        /// Kills a remote mailbox (`Kill` on the wire).
        Kill {
            /// The remote mailbox.
            target: RemoteRef,
        },
        /// Closes a local mailbox with a reason (an `Exited` to the peers
        /// that watch it, a linked exit to the mailboxes linked to it).
        CloseWith {
            /// Which mailbox.
            mailbox: u8,
            /// Why.
            reason: FuzzReason,
        },
    }
}

unarbitrary! {
    /// A name, group or topic.
    #[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
    pub enum Name {
        /// One of a few fixed names (modulo their number).
        Known(u8),
        /// Any text (lossy UTF-8).
        Raw(Vec<u8>),
    }
}

unarbitrary! {
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
}

unarbitrary! {
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
}

unarbitrary! {
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
}

unarbitrary! {
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
}

unarbitrary! {
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
}

unarbitrary! {
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
}

unarbitrary! {
    /// A type tag.
    #[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
    pub enum Tag {
        /// The registered type at this index (modulo their number).
        Registered(u8),
        /// Any tag.
        Raw(u64),
    }
}

unarbitrary! {
    /// A correlation id of a reply.
    #[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
    pub enum Corr {
        /// One the node used in a request to this peer (by index, modulo).
        Seen(u8),
        /// Any.
        Raw(u64),
    }
}

unarbitrary! {
    /// A tunnel id.
    #[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
    pub enum TunnelRef {
        /// One the node used in a tunnel frame to this peer (by index, modulo).
        Seen(u8),
        /// Any.
        Raw(u64),
    }
}

unarbitrary! {
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
}

unarbitrary! {
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
}

unarbitrary! {
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
        /// A mailbox the node watched closed, with why.
        Exited {
            /// The mailbox.
            target: Who,
            /// Why it closed.
            reason: FuzzReason,
        },
        /// The peer's mailbox `from` links to `target`, one of the node's.
        Link {
            /// The peer's mailbox.
            from: Who,
            /// The node's mailbox.
            target: Who,
        },
        /// Undoes a link.
        Unlink {
            /// The peer's mailbox.
            from: Who,
            /// The node's mailbox.
            target: Who,
        },
        /// Kills a mailbox of the node.
        Kill {
            /// The mailbox.
            target: Who,
        },
        /// A digest of the members the peer knows: its own address, a count
        /// (0 and over the node's limit are protocol errors) and a hash
        /// (`matching` makes it the node's own, else `hash`).
        MemberDigest {
            /// The peer's own address.
            address: FuzzMember,
            /// The members counted.
            count: u32,
            /// The hash, unless `matching`.
            hash: u64,
            /// Send the node's own count and hash instead.
            matching: bool,
            /// Ask for the node's list back if the digests differ.
            answer: bool,
        },
    }
}

unarbitrary! {
    /// An exit reason, as a peer may send one.
    #[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
    pub enum FuzzReason {
        /// A normal return.
        Normal,
        /// Closed by its owner.
        Closed,
        /// An error with this text (any bytes, made UTF-8).
        Error(Vec<u8>),
        /// A panic whose text is `len` bytes of `fill` (under, at and over
        /// `MAX_REASON_TEXT` as `len` varies).
        Panic {
            /// Bytes of text.
            len: u16,
            /// The byte repeated (made ASCII).
            fill: u8,
        },
        /// Killed.
        Killed,
        /// Its node became unreachable.
        Unreachable,
        /// Its node shut down.
        NodeShutdown,
        /// A linked exit from `from`, wrapped `depth` times (a well-formed
        /// chain keeps one level; a peer may send more).
        Linked {
            /// The mailbox the exit came from.
            from: Who,
            /// How many times the inner reason is wrapped.
            depth: u8,
        },
        /// No such mailbox.
        NoMailbox,
        /// No reason given.
        Unspecified,
    }
}

unarbitrary! {
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
}

unarbitrary! {
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
}

impl Name {
    /// The name as text: a fixed one, or the bytes as lossy UTF-8.
    pub(super) fn resolve(&self) -> String {
        match self {
            Name::Known(i) => NAMES[*i as usize % NAMES.len()].to_owned(),
            Name::Raw(bytes) => text(bytes),
        }
    }
}

impl Chunk {
    /// The chunk's bytes.
    pub(super) fn bytes(&self) -> Vec<u8> {
        match self {
            Chunk::Filled { len, fill } => vec![*fill; *len as usize],
            Chunk::Raw(bytes) => bytes.clone(),
        }
    }
}

/// Input bytes as text (lossy UTF-8).
pub(super) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
