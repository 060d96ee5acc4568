//! `handshake`: a sequence of frames fed to [`Handshake::on_frame`], for a
//! dialer and an acceptor alike.
//!
//! Every result is compared with a model of the handshake's rules (the
//! order of the checks included); `Done` only ever follows a hello that
//! checks out, the acceptor's reply is the right hello, and once done, every
//! further frame is an error. A dialer and an acceptor built from the same
//! input also complete with each other whenever the input's peer and
//! certificate predicates allow it.

use arbitrary::{Arbitrary, Unstructured};
use reign_proto::codec::payload;
use reign_proto::codec::{Frame, PROTOCOL_VERSION};
use reign_proto::handshake::{goodbye_body, Handshake, HandshakeError, Hello, Role, Step};
use reign_proto::{Incarnation, NodeId};

crate::unarbitrary! {
    /// The structured input of the `handshake` target.
    #[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
    pub struct HandshakeInput {
        /// This node's id.
        pub me: u16,
        /// The node the dialer means to reach.
        pub target: u16,
        /// This node's incarnation.
        pub incarnation: u64,
        /// The byte this node's 32-byte cluster id is made of.
        pub cluster: u8,
        /// Bit `n`: node `n` (< 16) is a peer in the spec.
        pub peers: u16,
        /// Bit `n`: the peer's certificate names node `n` (< 16).
        pub certs: u16,
        /// The frames, in order.
        pub frames: Vec<HsFrame>,
    }
}

crate::unarbitrary! {
    /// One frame of the `handshake` target.
    #[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
    pub enum HsFrame {
        /// A hello built from fields; `*_ok` picks this node's own value.
        Hello {
            /// Whether to speak this build's protocol version.
            version_ok: bool,
            /// The version otherwise.
            version: u16,
            /// The sender.
            node: u16,
            /// The sender's incarnation.
            incarnation: u64,
            /// Whether to name this node's cluster.
            cluster_ok: bool,
            /// The cluster id otherwise.
            cluster: Vec<u8>,
            /// Whether to name this node as the target.
            target_ok: bool,
            /// The target otherwise.
            target: u16,
        },
        /// A hello frame with an arbitrary body.
        HelloBody(Vec<u8>),
        /// A goodbye with a CBOR string reason (lossy UTF-8).
        GoodbyeText(Vec<u8>),
        /// A goodbye with an arbitrary body.
        GoodbyeBody(Vec<u8>),
        /// Whatever `Frame::parse` makes of these bytes (kind byte first).
        Wire(Vec<u8>),
    }
}

impl HsFrame {
    fn to_frame(&self, me: NodeId, cluster: &[u8; 32]) -> Option<Frame> {
        Some(match self {
            HsFrame::Hello {
                version_ok,
                version,
                node,
                incarnation,
                cluster_ok,
                cluster: other,
                target_ok,
                target,
            } => Frame::Hello(
                Hello {
                    version: if *version_ok {
                        PROTOCOL_VERSION
                    } else {
                        *version
                    },
                    node: NodeId(*node),
                    incarnation: Incarnation(*incarnation),
                    cluster: if *cluster_ok {
                        cluster.to_vec()
                    } else {
                        other.clone()
                    },
                    target: if *target_ok { me } else { NodeId(*target) },
                    features: reign_proto::handshake::FEATURES,
                }
                .to_frame_body(),
            ),
            HsFrame::HelloBody(body) => Frame::Hello(body.clone().into()),
            HsFrame::GoodbyeText(text) => {
                Frame::Goodbye(goodbye_body(&String::from_utf8_lossy(text)))
            }
            HsFrame::GoodbyeBody(body) => Frame::Goodbye(body.clone().into()),
            HsFrame::Wire(bytes) => Frame::parse(bytes.clone().into()).ok()?,
        })
    }
}

struct Rules {
    role: Role,
    me: NodeId,
    incarnation: Incarnation,
    cluster: [u8; 32],
    peers: u16,
    certs: u16,
}

fn bit(mask: u16, node: NodeId) -> bool {
    node.0 < 16 && mask >> node.0 & 1 == 1
}

impl Rules {
    fn is_peer(&self, node: NodeId) -> bool {
        bit(self.peers, node)
    }

    fn cert_names(&self, node: NodeId) -> bool {
        bit(self.certs, node)
    }

    fn handshake(&self) -> Handshake {
        Handshake::new(self.role, self.me, self.incarnation, self.cluster)
    }

    fn hello_to(&self, target: NodeId) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            node: self.me,
            incarnation: self.incarnation,
            cluster: self.cluster.to_vec(),
            target,
            features: reign_proto::handshake::FEATURES,
        }
    }

    /// What a handshake that is not done yet must answer to `frame`.
    fn expected(&self, frame: &Frame) -> Result<Step, HandshakeError> {
        let body = match frame {
            Frame::Hello(body) => body,
            Frame::Goodbye(body) => {
                let reason =
                    payload::decode::<String>(body).unwrap_or_else(|_| "<unreadable>".to_owned());
                return Err(HandshakeError::RefusedByPeer(reason));
            }
            _ => return Err(HandshakeError::Malformed(String::new())),
        };
        let hello: Hello = match payload::decode(body) {
            Ok(hello) => hello,
            Err(_) => {
                #[derive(serde::Deserialize)]
                struct VersionOnly {
                    version: u16,
                }
                return match payload::decode::<VersionOnly>(body) {
                    Ok(v) if v.version != PROTOCOL_VERSION => {
                        Err(HandshakeError::VersionMismatch {
                            ours: PROTOCOL_VERSION,
                            theirs: v.version,
                        })
                    }
                    _ => Err(HandshakeError::Malformed(String::new())),
                };
            }
        };
        if hello.version != PROTOCOL_VERSION {
            return Err(HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: hello.version,
            });
        }
        // One CA in common is one cluster (a hello lists each CA's id).
        let ours = reign_proto::tls::ClusterIds::from(self.cluster);
        if !reign_proto::tls::ClusterIds::from_bytes(&hello.cluster)
            .is_some_and(|c| c.shares_ca(&ours))
        {
            return Err(HandshakeError::WrongCluster);
        }
        if hello.target != self.me {
            return Err(HandshakeError::MisdirectedDial {
                target: hello.target,
                this_node: self.me,
                claimant: hello.node,
            });
        }
        if let Role::Dialer { target } = self.role {
            if hello.node != target {
                return Err(HandshakeError::WrongNode {
                    expected: target,
                    claimed: hello.node,
                });
            }
        }
        if hello.node == self.me || !self.is_peer(hello.node) {
            return Err(HandshakeError::UnknownNode {
                claimed: hello.node,
            });
        }
        if !self.cert_names(hello.node) {
            return Err(HandshakeError::CertificateMismatch {
                claimed: hello.node,
            });
        }
        let reply = match self.role {
            Role::Acceptor => Some(self.hello_to(hello.node)),
            Role::Dialer { .. } => None,
        };
        Ok(Step::Done { peer: hello, reply })
    }
}

/// Compares results, ignoring the text of `Malformed` errors (serde's words).
fn same(got: &Result<Step, HandshakeError>, want: &Result<Step, HandshakeError>) -> bool {
    match (got, want) {
        (Err(HandshakeError::Malformed(_)), Err(HandshakeError::Malformed(_))) => true,
        _ => got == want,
    }
}

fn run_role(rules: &Rules, frames: &[Frame]) {
    let mut hs = rules.handshake();
    match rules.role {
        Role::Dialer { target } => assert_eq!(hs.opening(), Some(rules.hello_to(target))),
        Role::Acceptor => assert_eq!(hs.opening(), None),
    }
    for frame in frames {
        let was_done = hs.is_done();
        let got = hs.on_frame(frame.clone(), |n| rules.is_peer(n), |n| rules.cert_names(n));
        if let Err(e) = &got {
            assert!(!e.to_string().is_empty());
        }
        if was_done {
            assert!(
                matches!(got, Err(HandshakeError::Malformed(_))),
                "a frame after Done gave {got:?}"
            );
            assert!(hs.is_done());
            continue;
        }
        let want = rules.expected(frame);
        assert!(
            same(&got, &want),
            "{:?} answered {got:?} to {frame:?}, the rules say {want:?}",
            rules.role
        );
        assert_eq!(hs.is_done(), got.is_ok());
    }
}

/// Fuzzes the post-TLS handshake with `data`, a [`HandshakeInput`].
pub fn handshake(data: &[u8]) {
    let Ok(input) = HandshakeInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let me = NodeId(input.me);
    let cluster = [input.cluster; 32];
    let frames: Vec<Frame> = input
        .frames
        .iter()
        .filter_map(|f| f.to_frame(me, &cluster))
        .collect();
    let rules = |role| Rules {
        role,
        me,
        incarnation: Incarnation(input.incarnation),
        cluster,
        peers: input.peers,
        certs: input.certs,
    };
    let dialer = rules(Role::Dialer {
        target: NodeId(input.target),
    });
    let acceptor = rules(Role::Acceptor);
    run_role(&dialer, &frames);
    run_role(&acceptor, &frames);

    // A dialer `me` reaching `target`, whose acceptor sees `me` as a peer.
    let target = NodeId(input.target);
    let far = Rules {
        me: target,
        ..rules(Role::Acceptor)
    };
    let mut d = dialer.handshake();
    let mut a = far.handshake();
    let opening = Frame::Hello(d.opening().expect("a dialer opens").to_frame_body());
    let accepted = a.on_frame(opening, |n| far.is_peer(n), |n| far.cert_names(n));
    let acceptor_ok = me != target && far.is_peer(me) && far.cert_names(me);
    assert_eq!(accepted.is_ok(), acceptor_ok, "{accepted:?}");
    if let Ok(Step::Done { peer, reply }) = accepted {
        assert_eq!(peer.node, me);
        let reply = Frame::Hello(reply.expect("the acceptor answers").to_frame_body());
        let done = d.on_frame(reply, |n| dialer.is_peer(n), |n| dialer.cert_names(n));
        let dialer_ok = dialer.is_peer(target) && dialer.cert_names(target);
        assert_eq!(done.is_ok(), dialer_ok, "{done:?}");
        if let Ok(Step::Done { peer, reply }) = done {
            assert_eq!(peer.node, target);
            assert_eq!(reply, None);
        }
    }
}
