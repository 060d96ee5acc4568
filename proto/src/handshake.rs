//! The reign handshake that follows TLS: each side states its protocol
//! version, node id, incarnation, cluster identity, and (the dialer) which
//! node it meant to reach. Every mismatch is a typed error; the connection
//! closes with a goodbye that says why, and the node keeps running.
//!
//! The dialer speaks first; the acceptor answers only once the dialer's hello
//! checks out, so an acceptor never tells a stranger who it is.
//!
//! Versions must match exactly; within a version, a hello's `features` bits
//! say which later additions the sender understands (`FEATURE_EXITS`: exit
//! reasons and links; `FEATURE_MEMBER_DIGEST`: membership digests), so
//! they are added without refusing older peers.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec::payload;
use crate::codec::{Frame, PROTOCOL_VERSION};
use crate::id::{Incarnation, NodeId};
use crate::tls::ClusterIds;

/// What a node says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version; peers must match exactly.
    pub version: u16,
    /// The sender's node id.
    pub node: NodeId,
    /// The sender's current start.
    pub incarnation: Incarnation,
    /// The SHA-256 of each cluster CA the sender trusts, concatenated
    /// (32 bytes with one CA; see [`ClusterIds`]).
    #[serde(with = "serde_bytes")]
    pub cluster: Vec<u8>,
    /// The node the sender believes it is talking to.
    pub target: NodeId,
    /// What the sender understands beyond [`PROTOCOL_VERSION`], one bit per
    /// feature (`FEATURE_*`). Absent in the hellos of nodes that predate
    /// it, which read as no features; nodes that predate it ignore it. A
    /// node sends a peer only the control messages its bits allow, so
    /// features are added without refusing older peers.
    #[serde(default, skip_serializing_if = "no_features")]
    pub features: u64,
}

/// Whether a hello's features are empty (then left out of its encoding,
/// which is then byte for byte a hello of the version before features).
fn no_features(features: &u64) -> bool {
    *features == 0
}

/// Feature bit: the node understands exit reasons and links
/// (`Control::Exited`, `Link`, `Unlink`, `Kill`).
pub const FEATURE_EXITS: u64 = 1;

/// Feature bit: the node understands membership digests
/// (`Control::MemberDigest`) and sends them instead of full member lists.
pub const FEATURE_MEMBER_DIGEST: u64 = 2;

/// The features this build understands, sent in every hello.
pub const FEATURES: u64 = FEATURE_EXITS | FEATURE_MEMBER_DIGEST;

/// Why a handshake failed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer speaks another protocol version.
    VersionMismatch {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// The peer belongs to another cluster: it trusts none of this node's
    /// CAs (or named them malformed).
    WrongCluster,
    /// The peer is not the node it should be (dialled node answered as
    /// another, or a dialer aimed at another node).
    WrongNode {
        /// The node expected.
        expected: NodeId,
        /// The node the peer says it is.
        claimed: NodeId,
    },
    /// The dialer (`claimant`) meant to reach node `target`, but reached
    /// this node (`this_node`): a stale or mistaken address.
    MisdirectedDial {
        /// The node the dialer meant to reach.
        target: NodeId,
        /// The node that answered (this one).
        this_node: NodeId,
        /// The node the dialer says it is.
        claimant: NodeId,
    },
    /// The peer's certificate does not name the node it claims to be.
    CertificateMismatch {
        /// The node claimed.
        claimed: NodeId,
    },
    /// The peer claims to be a node this node does not admit (removed from
    /// its spec, or not in it while joins are off), or this node itself.
    UnknownNode {
        /// The node claimed.
        claimed: NodeId,
    },
    /// The peer sent something other than a well-formed hello first.
    Malformed(String),
    /// The peer closed the handshake with a reason.
    RefusedByPeer(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::VersionMismatch { ours, theirs } => write!(
                f,
                "incompatible protocol version: peer speaks {theirs}, this node speaks {ours}"
            ),
            HandshakeError::WrongCluster => write!(f, "peer belongs to another cluster (CA)"),
            HandshakeError::WrongNode { expected, claimed } => {
                write!(
                    f,
                    "wrong node: expected node {}, peer is node {}",
                    expected.0, claimed.0
                )
            }
            HandshakeError::MisdirectedDial {
                target,
                this_node,
                claimant,
            } => write!(
                f,
                "wrong node: node {} dialled node {}, but reached node {}",
                claimant.0, target.0, this_node.0
            ),
            HandshakeError::CertificateMismatch { claimed } => write!(
                f,
                "peer claims to be node {} but its certificate names another node",
                claimed.0
            ),
            HandshakeError::UnknownNode { claimed } => {
                write!(
                    f,
                    "peer claims to be node {}, which this node does not admit (removed from its spec, or not in it with joins off)",
                    claimed.0
                )
            }
            HandshakeError::Malformed(e) => write!(f, "malformed handshake: {e}"),
            HandshakeError::RefusedByPeer(reason) => {
                write!(f, "peer refused the handshake: {reason}")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Which side of the connection this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// This node dialled `target`.
    Dialer {
        /// The node it meant to reach.
        target: NodeId,
    },
    /// This node accepted the connection.
    Acceptor,
}

/// What a handshake step produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet.
    Waiting,
    /// The handshake is done: the peer is who it says. `reply` is a hello to
    /// send back (the acceptor's answer), if any.
    Done {
        /// The peer's hello.
        peer: Hello,
        /// Our hello to send, if the peer still needs it.
        reply: Option<Hello>,
    },
}

/// The handshake state machine of one connection. Pure: frames in, steps out.
///
/// ```
/// use reign_proto::codec::Frame;
/// use reign_proto::handshake::{Handshake, Role, Step};
/// use reign_proto::{Incarnation, NodeId};
///
/// let cluster = [7u8; 32];
/// let mut dialer = Handshake::new(Role::Dialer { target: NodeId(2) }, NodeId(1), Incarnation(1), cluster);
/// let mut acceptor = Handshake::new(Role::Acceptor, NodeId(2), Incarnation(9), cluster);
/// let hello = dialer.opening().unwrap();
/// let reply = match acceptor.on_frame(Frame::Hello(hello.to_frame_body()), |_| true, |_| true).unwrap() {
///     Step::Done { peer, reply } => { assert_eq!(peer.node, NodeId(1)); reply.unwrap() }
///     Step::Waiting => unreachable!(),
/// };
/// let step = dialer.on_frame(Frame::Hello(reply.to_frame_body()), |_| true, |_| true).unwrap();
/// assert!(matches!(step, Step::Done { reply: None, .. }));
/// ```
#[derive(Clone, Debug)]
pub struct Handshake {
    role: Role,
    me: NodeId,
    incarnation: Incarnation,
    cluster: ClusterIds,
    done: bool,
}

impl Hello {
    /// The CBOR body of a hello frame.
    pub fn to_frame_body(&self) -> bytes::Bytes {
        payload::to_vec(self).into()
    }
}

impl Handshake {
    /// A handshake for this node in `role`, trusting the CAs of `cluster`
    /// (one CA's id converts into it).
    pub fn new(
        role: Role,
        me: NodeId,
        incarnation: Incarnation,
        cluster: impl Into<ClusterIds>,
    ) -> Handshake {
        Handshake {
            role,
            me,
            incarnation,
            cluster: cluster.into(),
            done: false,
        }
    }

    fn hello(&self, target: NodeId) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            node: self.me,
            incarnation: self.incarnation,
            cluster: self.cluster.to_bytes(),
            target,
            features: FEATURES,
        }
    }

    /// The dialer's opening hello, sent as soon as TLS is up; `None` for the acceptor.
    pub fn opening(&self) -> Option<Hello> {
        match self.role {
            Role::Dialer { target } => Some(self.hello(target)),
            Role::Acceptor => None,
        }
    }

    /// Whether the handshake has completed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds one frame received before the handshake completed.
    /// `is_peer` says whether a node id is a peer in the spec;
    /// `cert_names` whether the peer's TLS certificate names a node id.
    pub fn on_frame(
        &mut self,
        frame: Frame,
        is_peer: impl Fn(NodeId) -> bool,
        cert_names: impl Fn(NodeId) -> bool,
    ) -> Result<Step, HandshakeError> {
        if self.done {
            return Err(HandshakeError::Malformed("a second hello".into()));
        }
        let body = match frame {
            Frame::Hello(body) => body,
            Frame::Goodbye(body) => {
                let reason: String =
                    payload::decode(&body).unwrap_or_else(|_| "<unreadable>".into());
                return Err(HandshakeError::RefusedByPeer(reason));
            }
            other => {
                return Err(HandshakeError::Malformed(format!(
                    "expected a hello, got a {:?} frame",
                    other.kind()
                )))
            }
        };
        let hello = decode_hello(&body)?;
        if hello.version != PROTOCOL_VERSION {
            return Err(HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: hello.version,
            });
        }
        // One CA in common is one cluster: during a CA rollover nodes
        // trusting {old}, {old, new} and {new} meet (see `tls`).
        if !ClusterIds::from_bytes(&hello.cluster).is_some_and(|c| c.shares_ca(&self.cluster)) {
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
        if hello.node == self.me || !is_peer(hello.node) {
            return Err(HandshakeError::UnknownNode {
                claimed: hello.node,
            });
        }
        if !cert_names(hello.node) {
            return Err(HandshakeError::CertificateMismatch {
                claimed: hello.node,
            });
        }
        self.done = true;
        let reply = match self.role {
            Role::Acceptor => Some(self.hello(hello.node)),
            Role::Dialer { .. } => None,
        };
        Ok(Step::Done { peer: hello, reply })
    }
}

/// Decodes a hello, reading the version first so that a peer of another
/// version gets a version error rather than a shape error.
fn decode_hello(body: &[u8]) -> Result<Hello, HandshakeError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u16,
    }
    match payload::decode::<Hello>(body) {
        Ok(hello) => Ok(hello),
        Err(e) => match payload::decode::<VersionOnly>(body) {
            Ok(v) if v.version != PROTOCOL_VERSION => Err(HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: v.version,
            }),
            _ => Err(HandshakeError::Malformed(e.to_string())),
        },
    }
}

/// The body of a goodbye frame.
pub fn goodbye_body(reason: &str) -> bytes::Bytes {
    payload::to_vec(reason).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: [u8; 32] = [1; 32];

    fn dialer() -> Handshake {
        Handshake::new(
            Role::Dialer { target: NodeId(2) },
            NodeId(1),
            Incarnation(5),
            CLUSTER,
        )
    }

    fn acceptor() -> Handshake {
        Handshake::new(Role::Acceptor, NodeId(2), Incarnation(6), CLUSTER)
    }

    fn feed(h: &mut Handshake, hello: &Hello) -> Result<Step, HandshakeError> {
        h.on_frame(Frame::Hello(hello.to_frame_body()), |n| n.0 < 10, |_| true)
    }

    #[test]
    fn both_sides_complete() {
        let (mut d, mut a) = (dialer(), acceptor());
        assert!(a.opening().is_none());
        let Step::Done { peer, reply } = feed(&mut a, &d.opening().unwrap()).unwrap() else {
            panic!()
        };
        assert_eq!(peer.incarnation, Incarnation(5));
        let Step::Done { peer, reply: none } = feed(&mut d, &reply.unwrap()).unwrap() else {
            panic!()
        };
        assert_eq!(peer.node, NodeId(2));
        assert!(none.is_none());
        assert!(d.is_done() && a.is_done());
        assert!(feed(&mut d, &peer).is_err(), "a second hello is refused");
    }

    #[test]
    fn mismatches_are_typed() {
        let good = dialer().opening().unwrap();

        let mut h = good.clone();
        h.version = 99;
        assert_eq!(
            feed(&mut acceptor(), &h),
            Err(HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 99
            })
        );

        let mut h = good.clone();
        h.cluster = vec![2; 32];
        assert_eq!(feed(&mut acceptor(), &h), Err(HandshakeError::WrongCluster));
        // Malformed identities: empty, a partial id, more CAs than allowed.
        let max = crate::tls::MAX_CLUSTER_CAS;
        for bad in [vec![], vec![1; 31], vec![1; 33], vec![1; 32 * (max + 1)]] {
            let mut h = good.clone();
            h.cluster = bad;
            assert_eq!(feed(&mut acceptor(), &h), Err(HandshakeError::WrongCluster));
        }
        // A bundle sharing one CA is the same cluster, at the limit too.
        let mut h = good.clone();
        h.cluster = [vec![2; 32 * (max - 1)], CLUSTER.to_vec()].concat();
        assert!(feed(&mut acceptor(), &h).is_ok());

        let mut h = good.clone();
        h.target = NodeId(3);
        let e = feed(&mut acceptor(), &h).unwrap_err();
        assert_eq!(
            e,
            HandshakeError::MisdirectedDial {
                target: NodeId(3),
                this_node: NodeId(2),
                claimant: NodeId(1)
            }
        );
        assert_eq!(
            e.to_string(),
            "wrong node: node 1 dialled node 3, but reached node 2",
            "the claimant is named, not the acceptor itself"
        );

        let mut h = good.clone();
        h.node = NodeId(50);
        assert_eq!(
            feed(&mut acceptor(), &h),
            Err(HandshakeError::UnknownNode {
                claimed: NodeId(50)
            })
        );

        let r = acceptor().on_frame(Frame::Hello(good.to_frame_body()), |_| true, |n| n.0 == 7);
        assert_eq!(
            r,
            Err(HandshakeError::CertificateMismatch { claimed: NodeId(1) })
        );

        // The dialer reached node 3 instead of node 2.
        let mut wrong = acceptor().hello(NodeId(1));
        wrong.node = NodeId(3);
        assert_eq!(
            feed(&mut dialer(), &wrong),
            Err(HandshakeError::WrongNode {
                expected: NodeId(2),
                claimed: NodeId(3)
            })
        );

        assert!(matches!(
            acceptor().on_frame(Frame::Ping(1), |_| true, |_| true),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            acceptor().on_frame(Frame::Hello(vec![0xff, 0x00].into()), |_| true, |_| true),
            Err(HandshakeError::Malformed(_))
        ));
        assert_eq!(
            acceptor().on_frame(Frame::Goodbye(goodbye_body("nope")), |_| true, |_| true),
            Err(HandshakeError::RefusedByPeer("nope".into()))
        );
    }

    #[test]
    fn a_future_version_with_another_shape_is_a_version_error() {
        #[derive(Serialize)]
        struct V2 {
            version: u16,
            something_else: String,
        }
        let body = payload::to_vec(&V2 {
            version: 2,
            something_else: "x".into(),
        });
        assert_eq!(
            acceptor().on_frame(Frame::Hello(body.into()), |_| true, |_| true),
            Err(HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 2
            })
        );
    }
}
