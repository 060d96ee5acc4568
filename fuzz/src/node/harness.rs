//! The `node` target's harness: one [`Core`] and everything around it that
//! a driver and user code would be, driven one grammar step at a time.
//!
//! [`Harness`] holds the core, virtual time, the connections and links it
//! has seen and the handles local code holds (mailboxes, request futures,
//! tunnels). [`Harness::apply`] turns one [`Op`] into core inputs or calls
//! on the node and says which links that step may legitimately take down.
//! What a step's words become on the wire is in `wire.rs`; what is checked
//! after each step is in `checks.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use reign_proto::codec::{Frame, FrameDecoder};
use reign_proto::system::MailboxClosed;
use reign_proto::types::registered_types;
use reign_proto::{
    Address, Capacity, ConnId, Core, CoreConfig, IncomingTunnel, Input, Mailbox, NodeId,
    OpeningTunnel, Request, RequestFuture, Tunnel, TypeTag,
};

use super::grammar::{FuzzTarget, LocalOp, Name, NodeInput, Op};
use super::pick;
use super::value::{with_value, Value};
use super::{tuning, MAX_OP_BYTES, MY_INCARNATION};
use crate::certs;

/// Mailboxes local code makes, at most (`NewMailbox` past it does nothing):
/// enough to address by a `u8` index, few enough to keep a run fast.
const MAX_MAILBOXES: usize = 64;
/// Requests local code keeps polling, at most (a later one is dropped,
/// which cancels it).
const MAX_REQUESTS: usize = 64;
/// Tunnels being opened that local code keeps polling, at most.
const MAX_OPENING: usize = 16;
/// Open tunnels local code holds, at most.
const MAX_TUNNELS: usize = 16;
/// Messages one `Drain` takes from a mailbox, at most.
const DRAIN_BATCH: usize = 1024;
/// Bytes of core frames any local call may queue, added to
/// [`Harness::local_budget`] per call.
const LOCAL_CALL_BUDGET: usize = 512;
/// Bytes closing a mailbox may queue per peer (its watchers' notices).
const CLOSE_BUDGET_PER_PEER: usize = 256;
/// Bytes handling one drained message may queue (a reply, an answer to a
/// tunnel offer).
const DRAIN_BUDGET_PER_MESSAGE: usize = 256;

/// One node under test and what the harness knows about it.
pub(super) struct Harness {
    pub(super) core: Core,
    pub(super) now: Instant,
    pub(super) me: NodeId,
    pub(super) peers: Vec<NodeId>,
    pub(super) tags: Vec<TypeTag>,
    /// Every connection id seen, in order.
    pub(super) conns: Vec<ConnId>,
    /// The current plaintext link of each linked peer.
    pub(super) links: BTreeMap<NodeId, ConnId>,
    /// The peer of every plaintext link ever made.
    pub(super) link_peer: BTreeMap<ConnId, NodeId>,
    /// What the node sent on each open plaintext link, being decoded.
    pub(super) streams: BTreeMap<ConnId, FrameDecoder>,
    /// Transmitted and not reported written, per connection.
    pub(super) in_flight: BTreeMap<ConnId, usize>,
    pub(super) closed: BTreeSet<ConnId>,
    /// Peers up, by the events.
    pub(super) up: BTreeSet<NodeId>,
    /// What the node told each peer: request ids, tunnel ids, last ping
    /// nonce, last sync request.
    pub(super) corrs: BTreeMap<NodeId, Vec<u64>>,
    pub(super) tunnel_ids: BTreeMap<NodeId, Vec<u64>>,
    pub(super) pings: BTreeMap<NodeId, u64>,
    pub(super) syncs: BTreeMap<NodeId, u64>,
    /// Bytes local calls may have queued as core frames.
    pub(super) local_budget: usize,
    pub(super) mailboxes: Vec<(Address, Mailbox)>,
    requests: Vec<RequestFuture>,
    opening: Vec<OpeningTunnel>,
    pub(super) tunnels: Vec<Tunnel>,
    pub(super) shut_down: bool,
}

/// Keeps `item` if `items` holds fewer than `cap`, else drops it.
fn keep<T>(items: &mut Vec<T>, cap: usize, item: T) {
    if items.len() < cap {
        items.push(item);
    }
}

fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

impl Harness {
    /// A node of the cluster `input` describes, linked to the peers its
    /// `link` bits name, with two mailboxes.
    pub(super) fn new(input: &NodeInput) -> Harness {
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

    /// The peer `index` picks.
    pub(super) fn peer(&self, index: u8) -> Option<NodeId> {
        pick(&self.peers, index).copied()
    }

    /// The mailbox `index` picks.
    pub(super) fn mailbox(&self, index: u8) -> Option<&(Address, Mailbox)> {
        pick(&self.mailboxes, index)
    }

    /// The peer `index` picks, marked in `exempt` as one the step is for.
    fn peer_for(&self, index: u8, exempt: &mut BTreeSet<NodeId>) -> Option<NodeId> {
        let peer = self.peer(index)?;
        exempt.insert(peer);
        Some(peer)
    }

    /// Feeds bytes to `peer`'s link, if it has one.
    fn feed_peer(&mut self, peer: NodeId, bytes: &[u8]) {
        if let Some(&conn) = self.links.get(&peer) {
            self.core
                .handle_input(self.now, Input::Received { conn, bytes });
        }
    }

    /// Gives the core `input` for the connection `index` picks, if any,
    /// marking its link's peer in `exempt`; returns the connection.
    fn conn_input<'a>(
        &mut self,
        index: u8,
        exempt: &mut BTreeSet<NodeId>,
        input: impl FnOnce(ConnId) -> Input<'a>,
    ) -> Option<ConnId> {
        let conn = *pick(&self.conns, index)?;
        exempt.extend(self.link_peer.get(&conn).copied());
        self.core.handle_input(self.now, input(conn));
        Some(conn)
    }

    /// Applies one op; returns the peers whose links it may take down.
    pub(super) fn apply(&mut self, op: &Op) -> BTreeSet<NodeId> {
        let mut exempt = BTreeSet::new();
        match op {
            Op::PeerFrame {
                peer,
                frame,
                repeat,
            } => {
                if let Some(peer) = self.peer_for(*peer, &mut exempt) {
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
            }
            Op::PeerControl { peer, control } => {
                if let Some(peer) = self.peer_for(*peer, &mut exempt) {
                    let body = self.control(control, peer);
                    self.feed_peer(peer, &Frame::Control(body).to_vec());
                }
            }
            Op::PeerBytes { peer, bytes } => {
                if let Some(peer) = self.peer_for(*peer, &mut exempt) {
                    self.feed_peer(peer, bytes);
                }
            }
            Op::Reconnect { peer } => {
                if let Some(peer) = self.peer_for(*peer, &mut exempt) {
                    if !self.shut_down {
                        self.connect(peer);
                    }
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
                let bytes = *bytes as usize;
                let written = |conn| Input::Written { conn, bytes };
                if let Some(conn) = self.conn_input(*conn, &mut exempt, written) {
                    if let Some(f) = self.in_flight.get_mut(&conn) {
                        *f = f.saturating_sub(bytes);
                    }
                }
            }
            Op::Closed { conn, error } => {
                let error = error.then_some("connection reset by fuzzer");
                self.conn_input(*conn, &mut exempt, |conn| Input::Closed { conn, error });
            }
            Op::Connected { conn } => {
                self.conn_input(*conn, &mut exempt, |conn| Input::Connected { conn });
            }
            Op::ConnectFailed { conn } => {
                self.conn_input(*conn, &mut exempt, |conn| Input::ConnectFailed {
                    conn,
                    error: "refused by fuzzer",
                });
            }
            Op::Accept => {
                if let Ok(conn) = self.core.accept(self.now, "fuzz") {
                    self.conns.push(conn);
                }
            }
            Op::Received { conn, bytes } => {
                self.conn_input(*conn, &mut exempt, |conn| Input::Received { conn, bytes });
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

    /// The name a registry call uses, counted against the local budget
    /// (the call may send it to every peer), and the address of the mailbox
    /// `mailbox` picks.
    fn named(&mut self, name: &Name, mailbox: u8) -> (String, Option<&Address>) {
        let name = name.resolve();
        self.local_budget += name.len();
        (name, self.mailbox(mailbox).map(|(a, _)| a))
    }

    fn local(&mut self, op: &LocalOp) {
        self.local_budget += LOCAL_CALL_BUDGET;
        let node = self.core.node().clone();
        match op {
            LocalOp::NewMailbox { capacity } => {
                if self.mailboxes.len() < MAX_MAILBOXES {
                    let pair = if *capacity == 0 {
                        node.new_mailbox()
                    } else {
                        node.new_mailbox_with_capacity(Capacity::messages(*capacity as usize))
                    };
                    self.mailboxes.push(pair);
                }
            }
            LocalOp::CloseMailbox { mailbox } => {
                self.local_budget += CLOSE_BUDGET_PER_PEER * self.peers.len();
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
                if let (name, Some(a)) = self.named(name, *mailbox) {
                    let _ = node.register(&name, a);
                }
            }
            LocalOp::Unregister { name, mailbox } => {
                if let (name, Some(a)) = self.named(name, *mailbox) {
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
            LocalOp::Link { target, mailbox } => {
                if let (Some(id), Some((_, m))) = (self.remote_id(target), self.mailbox(*mailbox)) {
                    m.link(&node.address_of(id));
                }
            }
            LocalOp::Unlink { target, mailbox } => {
                if let (Some(id), Some((_, m))) = (self.remote_id(target), self.mailbox(*mailbox)) {
                    m.unlink(&node.address_of(id));
                }
            }
            LocalOp::TrapExits { mailbox, on } => {
                if let Some((_, m)) = self.mailbox(*mailbox) {
                    m.trap_exits(*on);
                }
            }
            LocalOp::Kill { target } => {
                if let Some(id) = self.remote_id(target) {
                    let _ = node.address_of(id).kill();
                }
            }
            LocalOp::CloseWith { mailbox, reason } => {
                let reason = self.reason(reason, None);
                if let Some((_, m)) = self.mailbox(*mailbox) {
                    m.close_with(reason);
                }
            }
            LocalOp::Unwatch { target, watcher } => {
                if let (Some(id), Some((w, _))) = (self.remote_id(target), self.mailbox(*watcher)) {
                    node.address_of(id).remove_notify(w);
                }
            }
            LocalOp::Join { group, mailbox } => {
                if let (group, Some(a)) = self.named(group, *mailbox) {
                    let _ = node.join(&group, a);
                }
            }
            LocalOp::Leave { group, mailbox } => {
                if let (group, Some(a)) = self.named(group, *mailbox) {
                    let _ = node.leave(&group, a);
                }
            }
            LocalOp::Subscribe { topic, mailbox } => {
                if let (topic, Some(a)) = self.named(topic, *mailbox) {
                    let _ = node.subscribe(&topic, a);
                }
            }
            LocalOp::Unsubscribe { topic, mailbox } => {
                if let (topic, Some(a)) = self.named(topic, *mailbox) {
                    let _ = node.unsubscribe(&topic, a);
                }
            }
            LocalOp::Broadcast { group, value } => {
                let group = group.resolve();
                let _ = with_value!(self.value(value, None), |x| node.broadcast(&group, x));
            }
            LocalOp::Publish { topic, value } => {
                let topic = topic.resolve();
                let _ = with_value!(self.value(value, None), |x| node.publish(&topic, x));
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
                    keep(&mut self.requests, MAX_REQUESTS, future);
                }
            }
            LocalOp::OpenTunnel { to } => {
                let mut name = String::new();
                if let Some(target) = self.target(to, &mut name) {
                    let opening = match &target {
                        TargetHolder::Service(s) => node.open_tunnel(*s),
                        TargetHolder::Address(a) => node.open_tunnel(a),
                    };
                    keep(&mut self.opening, MAX_OPENING, opening);
                }
            }
            LocalOp::TunnelSend { tunnel, len } => {
                self.local_budget += *len as usize;
                if let Some(t) = pick(&self.tunnels, *tunnel) {
                    let mut send = t.send(vec![0x5a; *len as usize]);
                    let _ = poll_once(&mut send);
                }
            }
            LocalOp::TunnelRecv { tunnel } => {
                if let Some(t) = pick(&self.tunnels, *tunnel) {
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
                let taken = self.drain_mailbox(*mailbox, *answer);
                self.local_budget += DRAIN_BUDGET_PER_MESSAGE * taken;
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

    /// Takes every message out of the mailbox `mailbox` picks, as
    /// [`LocalOp::Drain`] says; returns how many it took.
    fn drain_mailbox(&mut self, mailbox: u8, answer: u8) -> usize {
        let Some((_, m)) = self.mailbox(mailbox) else {
            return 0;
        };
        let mut taken = 0;
        let mut accepted = Vec::new();
        for _ in 0..DRAIN_BATCH {
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
            keep(&mut self.tunnels, MAX_TUNNELS, t);
        }
        taken
    }

    /// Polls the futures local code holds.
    pub(super) fn poll_futures(&mut self) {
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
            keep(&mut self.tunnels, MAX_TUNNELS, t);
        }
    }
}

/// Whom a request or tunnel goes to, owned.
enum TargetHolder<'a> {
    Service(&'a str),
    Address(Address),
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
