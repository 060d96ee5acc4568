//! What the `node` target's input words stand for on the wire: mailbox
//! ids, values of the registered types, frames and control messages built
//! from grammar steps (`grammar.rs`) and what the harness has seen so far.
//!
//! Kept apart from the driving (`harness.rs`) so that one place says how a
//! step's words become the ids and values local calls use and the bytes a
//! peer sends. Ids the node itself used (request
//! correlations, tunnel ids, ping nonces, sync sequence numbers) are echoed
//! back on request, so answers the node is waiting for are reachable.

use bytes::Bytes;
use reign_proto::codec::frame::{PublishScope, ReplyStatus, TunnelOp, MAX_REMAINING_US};
use reign_proto::codec::Frame;
use reign_proto::control::Control;
use reign_proto::system::MailboxClosed;
use reign_proto::{ExitReason, Incarnation, MailboxId, NodeId, TypeTag};

use super::grammar::{
    text, Body, Corr, Delta, FuzzControl, FuzzFrame, FuzzMember, FuzzReason, FuzzTunnelOp,
    FuzzValue, RemoteRef, Tag, TunnelRef, Who,
};
use super::harness::Harness;
use super::pick;
use super::value::Value;
use super::{FLOOD_MAX_ENTRIES, FLOOD_NAME_CAP, MY_INCARNATION, PEER_INCARNATION};

impl Harness {
    /// The peer mailbox `r` names, if there are peers.
    pub(super) fn remote_id(&self, r: &RemoteRef) -> Option<MailboxId> {
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

    /// The mailbox id `who` names; `sender` is the peer a frame comes from.
    pub(super) fn who(&self, who: &Who, sender: Option<NodeId>) -> MailboxId {
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

    /// The value `value` describes.
    pub(super) fn value(&self, value: &FuzzValue, sender: Option<NodeId>) -> Value {
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
            FuzzValue::Closed(who) => Value::Closed(MailboxClosed {
                id: self.who(who, sender),
                reason: reign_proto::ExitReason::Closed,
            }),
        }
    }

    /// The type tag `tag` names.
    fn tag(&self, tag: &Tag) -> TypeTag {
        match tag {
            Tag::Registered(i) => pick(&self.tags, *i).copied().unwrap_or(TypeTag(0)),
            Tag::Raw(t) => TypeTag(*t),
        }
    }

    /// A message body from `sender`: its tag and payload.
    fn body(&self, body: &Body, sender: NodeId) -> (TypeTag, Bytes) {
        match body {
            Body::Value(v) => {
                let (tag, bytes) = self.value(v, Some(sender)).encode();
                (tag, bytes.into())
            }
            Body::Tagged { tag, payload } => (self.tag(tag), payload.bytes().into()),
        }
    }

    /// The frame `frame` describes from `peer`, or (for `Wire`) the raw
    /// length-prefixed bytes to send instead.
    pub(super) fn frame(&self, frame: &FuzzFrame, peer: NodeId) -> Result<Frame, Vec<u8>> {
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
                chunk: chunk.bytes().into(),
            },
            FuzzFrame::FragmentCont { dest, chunk } => Frame::FragmentCont {
                dest: who(dest),
                chunk: chunk.bytes().into(),
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
                        Corr::Seen(i) => pick(seen, *i).copied().unwrap_or(0),
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
                        TunnelRef::Seen(i) => pick(seen, *i).copied().unwrap_or(0),
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
                            chunk: chunk.bytes().into(),
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

    /// The registry change `delta` describes from `peer`.
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

    /// The exit reason `reason` describes, from `peer` (`None` for a
    /// reason of this node's own).
    pub(super) fn reason(&self, reason: &FuzzReason, peer: Option<NodeId>) -> ExitReason {
        match reason {
            FuzzReason::Normal => ExitReason::Normal,
            FuzzReason::Closed => ExitReason::Closed,
            FuzzReason::Error(bytes) => ExitReason::Error(text(bytes)),
            FuzzReason::Panic { len, fill } => ExitReason::Panic(
                char::from(*fill & 0x7f)
                    .to_string()
                    .repeat(usize::from(*len)),
            ),
            FuzzReason::Killed => ExitReason::Killed,
            FuzzReason::Unreachable => ExitReason::Unreachable(None),
            FuzzReason::NodeShutdown => ExitReason::NodeShutdown,
            FuzzReason::Linked { from, depth } => {
                let from = self.who(from, peer);
                (0..*depth % 4).fold(
                    ExitReason::Linked {
                        from,
                        reason: Box::new(ExitReason::Panic("linked".into())),
                    },
                    |inner, _| ExitReason::Linked {
                        from,
                        reason: Box::new(inner),
                    },
                )
            }
            FuzzReason::NoMailbox => ExitReason::NoMailbox,
            FuzzReason::Unspecified => ExitReason::Unspecified,
        }
    }

    /// The encoded control body `control` describes from `peer`.
    pub(super) fn control(&self, control: &FuzzControl, peer: NodeId) -> Bytes {
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
            FuzzControl::Exited { target, reason } => Control::Exited {
                target: who(target),
                reason: self.reason(reason, Some(peer)),
            },
            FuzzControl::Link { from, target } => Control::Link {
                from: who(from),
                target: who(target),
            },
            FuzzControl::Unlink { from, target } => Control::Unlink {
                from: who(from),
                target: who(target),
            },
            FuzzControl::Kill { target } => Control::Kill {
                target: who(target),
            },
            FuzzControl::Members { nodes, answer } => Control::Members {
                nodes: nodes.iter().map(|m| (m.id, member_address(m))).collect(),
                answer: *answer,
            },
            FuzzControl::MemberDigest {
                address,
                count,
                hash,
                matching,
                answer,
            } => {
                let (count, hash) = if *matching {
                    reign_proto::control::member_digest(self.core.members().iter().map(|d| d.id))
                } else {
                    (*count, *hash)
                };
                Control::MemberDigest {
                    address: member_address(address),
                    count,
                    hash,
                    answer: *answer,
                }
            }
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
}

/// The address a `Members` entry or a digest names for `m`.
fn member_address(m: &FuzzMember) -> String {
    if m.malformed {
        format!("no-port-{}", m.port)
    } else {
        format!("127.0.0.1:{}", 20000 + u16::from(m.port))
    }
}
