//! The seed corpus: a handful of valid inputs per target (well-formed
//! frame streams, hellos, node sessions, specs, payloads), written as Rust
//! values. `tests/seeds.rs` checks that `corpus/<target>/seed-*` holds
//! exactly these, and rewrites them when `REIGN_FUZZ_WRITE_SEEDS=1`.

use reign_proto::codec::frame::{PublishScope, ReplyStatus, TunnelOp};
use reign_proto::codec::{payload, Frame, PROTOCOL_VERSION};
use reign_proto::control::Control;
use reign_proto::handshake::{goodbye_body, Hello};
use reign_proto::system::{ConnectionStatus, MultipleClaim};
use reign_proto::types::registered_types;
use reign_proto::{Incarnation, MailboxId, NodeId, TypeTag};

use crate::handshake::{HandshakeInput, HsFrame};
use crate::node::{
    Body, Chunk, Corr, Delta, FuzzControl, FuzzFrame, FuzzMember, FuzzReason, FuzzTarget,
    FuzzTunnelOp, FuzzValue, LocalOp, Name, NodeInput, Op, RemoteRef, Tag, TunnelRef, Who,
};
use crate::payload::{Choice, Nested, NESTED_NAME};
use crate::unarb::Unarbitrary;

/// One seed input.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The target it is for.
    pub target: &'static str,
    /// Its file name in `corpus/<target>/`.
    pub file: String,
    /// The input.
    pub data: Vec<u8>,
}

fn id(node: u16, serial: u64) -> MailboxId {
    MailboxId {
        node: NodeId(node),
        incarnation: Incarnation(0x1234),
        serial,
    }
}

/// One frame of every kind.
fn every_frame() -> Vec<Frame> {
    let tag = TypeTag::of_name("u64");
    vec![
        Frame::Ping(1),
        Frame::Pong(1),
        Frame::Data {
            dest: id(1, 1),
            tag,
            payload: payload::to_vec(&42u64).into(),
        },
        Frame::FragmentStart {
            dest: id(1, 2),
            tag: TypeTag::of_name("bytes"),
            total_len: 10,
            chunk: vec![0x49, 1, 2, 3, 4].into(),
        },
        Frame::FragmentCont {
            dest: id(1, 2),
            chunk: vec![5, 6, 7, 8, 9].into(),
        },
        Frame::Control(
            Control::Claim {
                name: "svc".into(),
                id: id(1, 3),
            }
            .encode(),
        ),
        Frame::Request {
            dest: id(1, 4),
            corr: 9,
            tag,
            remaining_us: 5_000_000,
            payload: payload::to_vec(&1u64).into(),
        },
        Frame::Reply {
            corr: 9,
            status: ReplyStatus::Ok,
            tag,
            payload: payload::to_vec(&2u64).into(),
        },
        Frame::Publish {
            scope: PublishScope::Topic,
            tag,
            name: "news".as_bytes().into(),
            payload: payload::to_vec(&3u64).into(),
        },
        Frame::Tunnel {
            id: 5,
            from_opener: true,
            op: TunnelOp::Open {
                dest: id(1, 5),
                credit: 4096,
            },
        },
        Frame::Tunnel {
            id: 5,
            from_opener: false,
            op: TunnelOp::Data {
                flags: 1,
                chunk: "hi".as_bytes().into(),
            },
        },
        Frame::Tunnel {
            id: 5,
            from_opener: true,
            op: TunnelOp::Credit { bytes: 2 },
        },
        Frame::Goodbye(goodbye_body("bye")),
        Frame::Hello(
            Hello {
                version: PROTOCOL_VERSION,
                node: NodeId(1),
                incarnation: Incarnation(7),
                cluster: vec![1; 32],
                target: NodeId(2),
                // None: the seed stays a hello that every version reads.
                features: 0,
            }
            .to_frame_body(),
        ),
    ]
}

fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

fn frame_decoder_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let all = wire(&every_frame());
    let header = |max: u8, chunk: u8, seed: u16| {
        let [lo, hi] = seed.to_le_bytes();
        vec![max, chunk, lo, hi]
    };
    let mut seeds = Vec::new();
    let mut every = header(3, 3, 1);
    every.extend_from_slice(&all);
    seeds.push(("every-kind", every));
    let mut bytewise = header(2, 0, 2);
    bytewise.extend_from_slice(&all);
    seeds.push(("byte-by-byte", bytewise));
    let mut truncated = header(3, 2, 3);
    truncated.extend_from_slice(&all[..all.len() - 3]);
    seeds.push(("truncated-tail", truncated));
    let mut too_large = header(0, 1, 4);
    too_large.extend_from_slice(&wire(&[Frame::Ping(1)]));
    too_large.extend_from_slice(&wire(&[Frame::Control(vec![0x60; 64].into())]));
    seeds.push(("over-maximum", too_large));
    let mut bad = header(2, 2, 5);
    bad.extend_from_slice(&wire(&[Frame::Pong(3)]));
    bad.extend_from_slice(&[2, 0, 0, 0, 11, 7]);
    seeds.push(("bad-field", bad));
    seeds
}

fn hello(node: u16, target: u16) -> HsFrame {
    HsFrame::Hello {
        version_ok: true,
        version: PROTOCOL_VERSION,
        node,
        incarnation: 77,
        cluster_ok: true,
        cluster: Vec::new(),
        target_ok: false,
        target,
    }
}

fn handshake_seeds() -> Vec<(&'static str, HandshakeInput)> {
    let base = HandshakeInput {
        me: 2,
        target: 1,
        incarnation: 5,
        cluster: 0xc1,
        peers: 0b0111,
        certs: 0b0111,
        frames: Vec::new(),
    };
    vec![
        (
            "accept-then-second-hello",
            HandshakeInput {
                frames: vec![hello(1, 2), hello(1, 2)],
                ..base.clone()
            },
        ),
        (
            "dialer-reaches-target",
            HandshakeInput {
                frames: vec![hello(1, 2)],
                ..base.clone()
            },
        ),
        (
            "mismatches",
            HandshakeInput {
                frames: vec![
                    HsFrame::Hello {
                        version_ok: false,
                        version: 2,
                        node: 1,
                        incarnation: 1,
                        cluster_ok: true,
                        cluster: Vec::new(),
                        target_ok: true,
                        target: 0,
                    },
                    HsFrame::Hello {
                        version_ok: true,
                        version: 0,
                        node: 1,
                        incarnation: 1,
                        cluster_ok: false,
                        cluster: vec![9; 32],
                        target_ok: true,
                        target: 0,
                    },
                    hello(9, 2),
                    hello(2, 2),
                    hello(1, 3),
                ],
                ..base.clone()
            },
        ),
        (
            "goodbye-and-junk",
            HandshakeInput {
                frames: vec![
                    HsFrame::GoodbyeText(b"no thanks".to_vec()),
                    HsFrame::GoodbyeBody(vec![0xff]),
                    HsFrame::HelloBody(vec![
                        0xa1, 0x67, b'v', b'e', b'r', b's', b'i', b'o', b'n', 2,
                    ]),
                    HsFrame::Wire(vec![2, 1, 0, 0, 0, 0, 0, 0, 0]),
                    hello(1, 2),
                ],
                ..base.clone()
            },
        ),
        (
            "certificate-names-another",
            HandshakeInput {
                certs: 0b0001,
                frames: vec![hello(1, 2)],
                ..base
            },
        ),
    ]
}

fn ours(i: u8) -> Who {
    Who::Ours(i)
}

fn remote(serial: u8) -> RemoteRef {
    RemoteRef {
        peer: 0,
        serial,
        stale: false,
    }
}

fn frame(frame: FuzzFrame) -> Op {
    Op::PeerFrame {
        peer: 0,
        frame,
        repeat: 0,
    }
}

fn control(control: FuzzControl) -> Op {
    Op::PeerControl { peer: 0, control }
}

/// Local code takes every message out of a mailbox (see `LocalOp::Drain`).
fn drain(mailbox: u8, answer: u8) -> Op {
    Op::Local(LocalOp::Drain { mailbox, answer })
}

fn known(i: u8) -> Name {
    Name::Known(i)
}

fn node_seeds() -> Vec<(&'static str, NodeInput)> {
    let session = |three_nodes, me, ops| NodeInput {
        three_nodes,
        me,
        link: 0xff,
        ops,
    };
    vec![
        (
            "deliver-and-ping",
            session(
                false,
                0,
                vec![
                    frame(FuzzFrame::Data {
                        dest: ours(0),
                        body: Body::Value(FuzzValue::U64(7)),
                    }),
                    frame(FuzzFrame::Data {
                        dest: ours(1),
                        body: Body::Value(FuzzValue::Address(Who::Sender { serial: 3 })),
                    }),
                    drain(0, 0),
                    drain(1, 0),
                    Op::Timeout { ms: 150 },
                    frame(FuzzFrame::Pong {
                        seen: true,
                        nonce: 0,
                    }),
                    frame(FuzzFrame::Ping(5)),
                    Op::Written {
                        conn: 0,
                        bytes: 1 << 20,
                    },
                    Op::NextDeadline,
                ],
            ),
        ),
        (
            "registry",
            session(
                true,
                1,
                vec![
                    control(FuzzControl::Snapshot {
                        deltas: vec![
                            Delta::Claim {
                                name: known(2),
                                id: Who::Sender { serial: 1 },
                            },
                            Delta::Join {
                                group: known(0),
                                id: Who::Sender { serial: 2 },
                            },
                            Delta::Interest {
                                topic: known(1),
                                interested: true,
                            },
                        ],
                        last: true,
                    }),
                    Op::Local(LocalOp::Register {
                        name: known(2),
                        mailbox: 0,
                    }),
                    Op::Local(LocalOp::Lookup { name: known(2) }),
                    Op::Local(LocalOp::Sync),
                    control(FuzzControl::SyncReply { seen: true, seq: 0 }),
                    control(FuzzControl::SyncRequest { seq: 1 }),
                    Op::Local(LocalOp::Watch {
                        target: remote(1),
                        watcher: 1,
                    }),
                    control(FuzzControl::Closed {
                        target: Who::Sender { serial: 1 },
                    }),
                    control(FuzzControl::Watch { target: ours(0) }),
                    control(FuzzControl::Members {
                        nodes: vec![
                            FuzzMember {
                                id: 7,
                                port: 7,
                                malformed: false,
                            },
                            FuzzMember {
                                id: 8,
                                port: 8,
                                malformed: true,
                            },
                        ],
                        answer: true,
                    }),
                    control(FuzzControl::MemberDigest {
                        address: FuzzMember {
                            id: 0,
                            port: 1,
                            malformed: false,
                        },
                        count: 0,
                        hash: 0,
                        matching: true,
                        answer: true,
                    }),
                    control(FuzzControl::MemberDigest {
                        address: FuzzMember {
                            id: 0,
                            port: 1,
                            malformed: false,
                        },
                        count: 3,
                        hash: 7,
                        matching: false,
                        answer: true,
                    }),
                    Op::Timeout { ms: 600 },
                    Op::Local(LocalOp::CloseMailbox { mailbox: 0 }),
                    control(FuzzControl::Delta(Delta::Unclaim {
                        name: known(2),
                        id: Who::Sender { serial: 1 },
                    })),
                    drain(1, 0),
                ],
            ),
        ),
        (
            "exits",
            session(false, 0, {
                let peer = |serial| Who::Sender { serial };
                let mut ops = vec![
                    Op::Local(LocalOp::TrapExits {
                        mailbox: 1,
                        on: true,
                    }),
                    Op::Local(LocalOp::Link {
                        target: remote(1),
                        mailbox: 0,
                    }),
                    Op::Local(LocalOp::Link {
                        target: remote(2),
                        mailbox: 1,
                    }),
                    // A panic text over the cap, a linked exit wrapped
                    // deeper than a well-formed chain.
                    control(FuzzControl::Exited {
                        target: peer(1),
                        reason: FuzzReason::Panic {
                            len: 1030,
                            fill: b'x',
                        },
                    }),
                    control(FuzzControl::Exited {
                        target: peer(2),
                        reason: FuzzReason::Linked {
                            from: peer(9),
                            depth: 3,
                        },
                    }),
                    control(FuzzControl::Link {
                        from: peer(4),
                        target: ours(2),
                    }),
                    control(FuzzControl::Unlink {
                        from: peer(4),
                        target: ours(2),
                    }),
                    control(FuzzControl::Link {
                        from: peer(5),
                        target: ours(2),
                    }),
                    Op::Local(LocalOp::CloseWith {
                        mailbox: 2,
                        reason: FuzzReason::Error(b"bad".to_vec()),
                    }),
                    control(FuzzControl::Watch { target: ours(2) }),
                    control(FuzzControl::Kill { target: ours(1) }),
                    Op::Local(LocalOp::Kill { target: remote(3) }),
                    Op::Local(LocalOp::Unlink {
                        target: remote(2),
                        mailbox: 1,
                    }),
                ];
                for (serial, reason) in [
                    FuzzReason::Normal,
                    FuzzReason::Closed,
                    FuzzReason::Killed,
                    FuzzReason::Unreachable,
                    FuzzReason::NodeShutdown,
                    FuzzReason::NoMailbox,
                    FuzzReason::Unspecified,
                ]
                .into_iter()
                .enumerate()
                {
                    ops.push(control(FuzzControl::Exited {
                        target: peer(10 + serial as u8),
                        reason,
                    }));
                }
                // A kill of a mailbox of another node: a protocol error.
                ops.push(control(FuzzControl::Kill {
                    target: Who::Raw {
                        node: 9,
                        incarnation: 1,
                        serial: 1,
                    },
                }));
                ops.extend([drain(0, 0), drain(1, 0), Op::Timeout { ms: 600 }]);
                ops
            }),
        ),
        (
            "registry-caps",
            session(true, 1, {
                // Per kind: 3 entries one byte under the name cap, a 4th
                // at it (the count cap), a 5th over: cut off, link again.
                let flood = |kind, first, count, len| {
                    control(FuzzControl::Flood {
                        kind,
                        first,
                        count,
                        len,
                    })
                };
                let mut ops = Vec::new();
                for kind in 0..3 {
                    ops.push(flood(kind, 0, 3, 31));
                    ops.push(flood(kind, 3, 1, 32));
                    ops.push(control(FuzzControl::SyncRequest { seq: 1 }));
                    ops.push(flood(kind, 4, 1, 5));
                    ops.push(Op::Reconnect { peer: 0 });
                    ops.push(flood(kind, 0, 1, 33));
                    ops.push(Op::Reconnect { peer: 0 });
                }
                // A name claimed here and by the peer: resolved to the
                // lower id, the local claimant told.
                ops.push(Op::Local(LocalOp::Register {
                    name: known(2),
                    mailbox: 0,
                }));
                ops.push(control(FuzzControl::Delta(Delta::Claim {
                    name: known(2),
                    id: Who::Sender { serial: 1 },
                })));
                ops.push(Op::Local(LocalOp::Lookup { name: known(2) }));
                ops.push(drain(0, 0));
                ops
            }),
        ),
        (
            "fragments",
            session(
                false,
                1,
                vec![
                    frame(FuzzFrame::FragmentStart {
                        dest: ours(0),
                        tag: Tag::Registered(0),
                        total: 20_000,
                        chunk: Chunk::Filled { len: 8000, fill: 0 },
                    }),
                    frame(FuzzFrame::FragmentCont {
                        dest: ours(0),
                        chunk: Chunk::Filled { len: 8000, fill: 0 },
                    }),
                    frame(FuzzFrame::FragmentCont {
                        dest: ours(0),
                        chunk: Chunk::Filled { len: 4000, fill: 0 },
                    }),
                    drain(0, 0),
                    Op::Local(LocalOp::Send {
                        to: remote(2),
                        value: FuzzValue::Bytes {
                            len: 40_000,
                            big: true,
                            fill: 1,
                        },
                    }),
                    Op::Written {
                        conn: 0,
                        bytes: 100_000,
                    },
                ],
            ),
        ),
        (
            "services",
            session(
                false,
                0,
                vec![
                    Op::Local(LocalOp::Join {
                        group: known(0),
                        mailbox: 0,
                    }),
                    Op::Local(LocalOp::Subscribe {
                        topic: known(1),
                        mailbox: 1,
                    }),
                    frame(FuzzFrame::Request {
                        dest: ours(0),
                        corr: 1,
                        body: Body::Value(FuzzValue::Text(b"ping".to_vec())),
                    }),
                    drain(0, 0),
                    Op::Local(LocalOp::Request {
                        to: FuzzTarget::Remote(remote(1)),
                        value: FuzzValue::U64(1),
                        timeout_ms: 500,
                    }),
                    frame(FuzzFrame::Reply {
                        corr: Corr::Seen(0),
                        status: 0,
                        body: Body::Value(FuzzValue::U64(2)),
                    }),
                    frame(FuzzFrame::Publish {
                        topic: true,
                        name: known(1),
                        body: Body::Value(FuzzValue::U64(3)),
                    }),
                    frame(FuzzFrame::Publish {
                        topic: false,
                        name: known(0),
                        body: Body::Value(FuzzValue::U64(4)),
                    }),
                    Op::Local(LocalOp::Broadcast {
                        group: known(0),
                        value: FuzzValue::U64(5),
                    }),
                    Op::Local(LocalOp::Publish {
                        topic: known(1),
                        value: FuzzValue::U64(6),
                    }),
                    drain(1, 1),
                    Op::Timeout { ms: 600 },
                ],
            ),
        ),
        (
            "tunnels",
            session(
                false,
                0,
                vec![
                    frame(FuzzFrame::Tunnel {
                        id: TunnelRef::Raw(1),
                        from_opener: true,
                        op: FuzzTunnelOp::Open {
                            dest: ours(0),
                            credit: 8192,
                        },
                    }),
                    drain(0, 4),
                    frame(FuzzFrame::Tunnel {
                        id: TunnelRef::Raw(1),
                        from_opener: true,
                        op: FuzzTunnelOp::Data {
                            flags: 1,
                            chunk: Chunk::Filled { len: 100, fill: 7 },
                        },
                    }),
                    Op::Local(LocalOp::TunnelRecv { tunnel: 0 }),
                    Op::Local(LocalOp::TunnelSend {
                        tunnel: 0,
                        len: 300,
                    }),
                    Op::Local(LocalOp::OpenTunnel {
                        to: FuzzTarget::Remote(remote(4)),
                    }),
                    frame(FuzzFrame::Tunnel {
                        id: TunnelRef::Seen(1),
                        from_opener: false,
                        op: FuzzTunnelOp::Accept { credit: 4096 },
                    }),
                    frame(FuzzFrame::Tunnel {
                        id: TunnelRef::Seen(0),
                        from_opener: true,
                        op: FuzzTunnelOp::Credit { bytes: 300 },
                    }),
                    Op::Local(LocalOp::TunnelClose { tunnel: 0 }),
                    frame(FuzzFrame::Tunnel {
                        id: TunnelRef::Seen(1),
                        from_opener: false,
                        op: FuzzTunnelOp::Close(Vec::new()),
                    }),
                ],
            ),
        ),
        (
            "connections",
            session(
                true,
                0,
                vec![
                    Op::Accept,
                    Op::Received {
                        conn: 2,
                        bytes: b"\x16\x03\x01\x00\x05hello".to_vec(),
                    },
                    Op::Connected { conn: 0 },
                    Op::Received {
                        conn: 0,
                        bytes: vec![0x15, 3, 3, 0, 2, 2, 40],
                    },
                    Op::ConnectFailed { conn: 1 },
                    Op::Timeout { ms: 1000 },
                    Op::Reconnect { peer: 1 },
                    frame(FuzzFrame::Goodbye(Vec::new())),
                    Op::PeerBytes {
                        peer: 1,
                        bytes: vec![0xff, 0xff, 0xff, 0xff, 1],
                    },
                    Op::Timeout { ms: 3000 },
                    Op::NextDeadline,
                    Op::Shutdown,
                    Op::Accept,
                ],
            ),
        ),
        (
            "pings-while-not-written",
            session(
                false,
                0,
                vec![
                    Op::Local(LocalOp::Send {
                        to: remote(1),
                        value: FuzzValue::Bytes {
                            len: 30_000,
                            big: false,
                            fill: 2,
                        },
                    }),
                    Op::PeerFrame {
                        peer: 0,
                        frame: FuzzFrame::Ping(1),
                        repeat: 255,
                    },
                    Op::PeerControl {
                        peer: 0,
                        control: FuzzControl::SyncRequest { seq: 2 },
                    },
                    Op::PeerFrame {
                        peer: 0,
                        frame: FuzzFrame::Ping(2),
                        repeat: 255,
                    },
                ],
            ),
        ),
    ]
}

fn spec_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let specs: [(&str, &str); 8] = [
        (
            "go-reign-fields",
            r#"{"nodes":[{"id":0,"address":"127.0.0.1:29000"},
  {"id":1,"address":"127.0.0.1:29001","listen_address":"0.0.0.0:29001"},
  {"id":2,"address":"node2.example:29002","local_address":"10.0.0.2:0"}],
 "node_cert_path":"node_%d.crt","node_key_path":"node_%d.key","cluster_cert_path":"cluster.crt",
 "permitted_protocols":["reign-rs/1"]}"#,
        ),
        (
            "tuning",
            r#"{"nodes":[{"id":1,"address":"h:1"},{"id":0,"address":"h:2"}],
 "node_cert_pem":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
 "node_key_pem":"junk","cluster_cert_pem":"junk",
 "tuning":{"ping_interval":250,"max_ping_failures":3,"read_deadline":5000,"handshake_timeout":1000,
  "backoff_initial":10,"backoff_max":2000,"max_frame_len":65536,"max_message_len":1048576,
  "outbound_queue_bytes":65536,"outbound_bulk_bytes":131072,"write_window":32768,
  "max_handshaking":8,"tunnel_window":65536}}"#,
        ),
        (
            "duplicate-id",
            r#"{"nodes":[{"id":1,"address":"a:1"},{"id":1,"address":"b:2"}]}"#,
        ),
        (
            "bad-address",
            r#"{"nodes":[{"id":3,"address":"h:1","listen_address":"nope"}]}"#,
        ),
        ("not-json", r#"{"nodes":[{"id":"zero"}"#),
        (
            "typo-tuning",
            r#"{"nodes":[{"id":0,"address":"h:1"}],"tunning":{"accept_joins":false}}"#,
        ),
        (
            "typo-node-and-key",
            r#"{"nodes":[{"id":0,"address":"h:1","listen_adress":"h:2"}],"tuning":{"handshake_timout":5}}"#,
        ),
        (
            "cipher-suite",
            r#"{"nodes":[{"id":0,"address":"h:1"}],"permitted_protocols":["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]}"#,
        ),
    ];
    specs
        .iter()
        .map(|(name, json)| (*name, json.as_bytes().to_vec()))
        .collect()
}

fn payload_seeds() -> Vec<(String, Vec<u8>)> {
    crate::payload::register_harness_types();
    let types = registered_types();
    let index = |name: &str| -> u8 {
        types
            .iter()
            .position(|(_, n)| *n == name)
            .expect("a registered type") as u8
    };
    let nested = Nested {
        name: "n".into(),
        values: vec![vec![1, 2], vec![]],
        table: [("k".to_owned(), None)].into_iter().collect(),
        choice: Choice::Pair(1, "x".into()),
        blob: vec![0, 1],
    };
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("u64", payload::to_vec(&u64::MAX)),
        ("i128", payload::to_vec(&i128::MIN)),
        ("f64", payload::to_vec(&f64::NAN)),
        ("string", payload::to_vec("héllo")),
        (
            "bytes",
            payload::to_vec(&serde_bytes::ByteBuf::from(vec![1, 2, 3])),
        ),
        (
            "reign.MailboxClosed",
            // The form of nodes that predate exit reasons, still read.
            payload::to_vec(&id(3, 9)),
        ),
        (
            "reign.MultipleClaim",
            payload::to_vec(&MultipleClaim { name: "a".into() }),
        ),
        (
            "reign.ConnectionStatus",
            payload::to_vec(&ConnectionStatus {
                node: NodeId(1),
                connected: true,
                reason: None,
            }),
        ),
        ("reign.Address", payload::to_vec(&id(2, 5))),
        (NESTED_NAME, payload::to_vec(&nested)),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = bodies
        .into_iter()
        .map(|(name, body)| {
            let mut data = vec![index(name)];
            data.extend_from_slice(&body);
            (format!("type-{name}"), data)
        })
        .collect();
    let snapshot = Control::Snapshot {
        deltas: vec![
            Control::Claim {
                name: "a".into(),
                id: id(1, 1),
            },
            Control::Join {
                group: "g".into(),
                id: id(1, 2),
            },
            Control::Interest {
                topic: "t".into(),
                interested: true,
            },
        ],
        last: true,
    };
    for (name, control) in [
        ("control-snapshot", snapshot),
        ("control-watch", Control::Watch { target: id(0, 3) }),
        ("control-sync", Control::SyncRequest { seq: 4 }),
    ] {
        let mut data = vec![255];
        data.extend_from_slice(&control.encode());
        seeds.push((name.to_owned(), data));
    }
    seeds
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, data: Vec<u8>| {
        seeds.push(Seed {
            target,
            file: format!("seed-{name}"),
            data,
        })
    };
    for (name, data) in frame_decoder_seeds() {
        add("frame_decoder", name, data);
    }
    for (name, input) in handshake_seeds() {
        add("handshake", name, input.to_input());
    }
    for (name, input) in node_seeds() {
        add("node", name, input.to_input());
    }
    for (name, data) in spec_seeds() {
        add("spec_json", name, data);
    }
    for (name, data) in payload_seeds() {
        add("payload", &name, data);
    }
    seeds
}

/// The structured seeds as values, to check that they parse back.
pub fn structured() -> (Vec<HandshakeInput>, Vec<NodeInput>) {
    (
        handshake_seeds().into_iter().map(|(_, i)| i).collect(),
        node_seeds().into_iter().map(|(_, i)| i).collect(),
    )
}
