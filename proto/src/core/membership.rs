//! Who is in the cluster: members from the spec and members learned from
//! peers, spec reloads, gossip, and refusing a second process that claims
//! the id of a live node.
//!
//! Membership is open to any node holding a certificate from the cluster
//! CA that names its id ([`Tuning::accept_joins`]): a node whose spec lists
//! only a few seeds connects to them, and every node tells the peers it
//! connects to which members it knows ([`Control::Members`]). A node that
//! a new member connects to tells its other peers once, so news of a join
//! floods the cluster and stops (members only heard of are never passed
//! on, and each peer may name only so many of them); a periodic exchange with one random peer
//! mends views that drifted apart (partitions, lost messages).
//!
//! **Digests.** A full list costs about 20 bytes per member, so sending it
//! on every new link and every gossip round costs a node about 20 N² bytes
//! to form a mesh of N. Peers that understand it
//! ([`FEATURE_MEMBER_DIGEST`]) get a [`Control::MemberDigest`] instead: the
//! sender's own address and the count and hash of the member ids it knows.
//! A receiver whose digest matches sends nothing; one whose digest differs
//! answers with its full list, and the push-pull of `Members` takes it from
//! there. Nodes that share a spec agree from the start, so a mesh of them
//! forms without a single list; a node that joined through a seed differs
//! until it has learned the members, then stops costing lists.
//!
//! [`Control::Members`]: crate::control::Control::Members
//! [`Control::MemberDigest`]: crate::control::Control::MemberDigest
//! [`FEATURE_MEMBER_DIGEST`]: crate::handshake::FEATURE_MEMBER_DIGEST

use super::*;

use crate::control::member_digest;
use crate::handshake::FEATURE_MEMBER_DIGEST;

/// Members this node admits at most, spec and learned together (node ids
/// are 16 bits, but nobody should make a node allocate for 65,536
/// members); also the most entries of one `Members` message looked at.
const MAX_MEMBERS: usize = 4096;

/// Members one peer may name that have not connected to this node yet:
/// a peer cannot fill the member table (and make this node dial at will)
/// with made-up entries.
const MAX_HEARSAY_PER_PEER: usize = 256;

/// The most members a [`Control::MemberDigest`] may count: node ids are 16
/// bits, so no honest node knows more (itself included). A digest that
/// counts none (the sender always counts itself) or more is a protocol
/// error.
///
/// [`Control::MemberDigest`]: crate::control::Control::MemberDigest
pub(super) const MAX_DIGEST_COUNT: u32 = 1 << 16;

/// What the dropped-input summary counts entries of a `Members` list past
/// [`MAX_MEMBERS`] under (they are ignored).
pub(super) const OVERSIZED_MEMBERS: &str = "as members list entries past the members limit";

/// A connection whose hello claims the id of a peer that is up under
/// another incarnation, held until the live connection proves itself
/// (refuse the newcomer) or goes down (accept it).
pub(super) struct Probe {
    /// The newcomer's connection, handshake finished but not answered.
    pub(super) conn: ConnId,
    /// The ping sent on the live connection.
    pub(super) nonce: u64,
    /// The newcomer's hello, and our answer to send if it is accepted.
    pub(super) hello: Hello,
    pub(super) reply: Option<Hello>,
}

/// What a [`Core::reload`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Members added by the new spec.
    pub added: Vec<NodeId>,
    /// Members the new spec no longer lists, now disconnected and refused.
    pub removed: Vec<NodeId>,
    /// Members whose address changed.
    pub readdressed: Vec<NodeId>,
    /// The new spec held other TLS material (a renewed certificate and key,
    /// or another CA bundle during a rollover): new connections use it,
    /// connections already up keep their sessions.
    pub tls_renewed: bool,
}

/// Why a [`Core::reload`] was refused (the old membership stays).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReloadError {
    /// The new spec is for another node.
    OtherNode {
        /// This node.
        ours: NodeId,
        /// The node the new spec was resolved for.
        theirs: NodeId,
    },
    /// The new spec trusts none of the CAs this node trusts now: it is
    /// another cluster. A CA is changed in steps that keep one CA in common
    /// (a bundle of the old and the new first), or by a restart.
    OtherCluster,
    /// The new spec does not resolve.
    Spec(SpecError),
    /// The node is shutting down.
    ShuttingDown,
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::OtherNode { ours, theirs } => write!(
                f,
                "the new spec was resolved for node {}, this is node {}",
                theirs.0, ours.0
            ),
            ReloadError::OtherCluster => write!(
                f,
                "the new spec trusts none of this node's cluster CAs; roll a CA over through a bundle of the old and the new, or restart the node"
            ),
            ReloadError::Spec(e) => write!(f, "{e}"),
            ReloadError::ShuttingDown => write!(f, "the node is shutting down"),
        }
    }
}

/// [`ReloadError::Spec`] exposes the [`SpecError`] it wraps.
impl std::error::Error for ReloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReloadError::Spec(e) => Some(e),
            _ => None,
        }
    }
}

impl From<SpecError> for ReloadError {
    fn from(e: SpecError) -> ReloadError {
        ReloadError::Spec(e)
    }
}

impl Core {
    /// The cluster's members as this node knows them, itself included, in
    /// id order: the spec's nodes and those learned from peers (minus any
    /// forgotten or removed).
    pub fn members(&self) -> Vec<NodeDescriptor> {
        let mut members: Vec<NodeDescriptor> =
            self.peers.values().map(|p| p.descriptor.clone()).collect();
        members.push(self.descriptor.clone());
        members.sort_by_key(|d| d.id);
        members
    }

    /// Applies a new spec to the running node: members it adds are dialled
    /// (or awaited), members it drops are told goodbye, disconnected and
    /// refused from then on, and changed addresses are dialled at once if
    /// the member is down. New TLS material (a renewed certificate and key,
    /// a CA bundle during a rollover) is used for new connections from now
    /// on; connections already up keep their sessions and lose nothing.
    /// Tuning, protocols and this node's own address keep their values from
    /// the start. A spec for another node, one whose CAs share none with
    /// this node's (another cluster), or material rustls refuses is refused
    /// and nothing changes. ("At once" for a member with a higher id means
    /// after the usual dial grace, as at start.)
    ///
    /// Removal compares with the previous spec: a member learned from peers
    /// (in no spec of this node) stays; list it once and drop it again to
    /// part with it.
    pub fn reload(&mut self, now: Instant, spec: ResolvedSpec) -> Result<Reloaded, ReloadError> {
        if self.shutting_down {
            return Err(ReloadError::ShuttingDown);
        }
        if spec.node_id != self.me {
            return Err(ReloadError::OtherNode {
                ours: self.me,
                theirs: spec.node_id,
            });
        }
        let cas = crate::tls::ClusterIds::of(&spec.material.cluster_certs);
        if !cas.shares_ca(&self.tls.cluster_id) {
            return Err(ReloadError::OtherCluster);
        }
        // Built before anything changes, so refused material changes nothing.
        let renewed_tls = self.tls.renewed(&spec.material)?;
        let mut changes = Reloaded::default();
        let dropped: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(id, p)| !p.learned && !spec.nodes.contains_key(id))
            .map(|(&id, _)| id)
            .collect();
        for id in dropped {
            self.remove_member(now, id, Removal::RemovedFromSpec);
            self.removed.insert(id);
            changes.removed.push(id);
        }
        for (&id, descriptor) in &spec.nodes {
            if id == self.me {
                continue;
            }
            self.removed.remove(&id);
            match self.peers.get_mut(&id) {
                Some(peer) => {
                    peer.learned = false;
                    if peer.descriptor != *descriptor {
                        peer.descriptor = descriptor.clone();
                        changes.readdressed.push(id);
                        if peer.up.is_none() && peer.dialing.is_none() {
                            peer.backoff.reset();
                            peer.retry_at = Some(peer.first_dial(&self.tuning, now));
                        }
                    }
                }
                None => {
                    self.add_member(now, descriptor.clone(), false);
                    changes.added.push(id);
                }
            }
        }
        if let Some(tls) = renewed_tls {
            self.tls = tls;
            changes.tls_renewed = true;
            tracing::info!(
                node = self.me.0,
                cas = spec.material.cluster_certs.len(),
                "TLS material renewed; new connections use it"
            );
        }
        // A reload that changes nothing is routine (a SIGHUP sent to be
        // sure, a dev directory rescan): DEBUG. A change is INFO, once.
        if changes.added.is_empty() && changes.removed.is_empty() && changes.readdressed.is_empty()
        {
            tracing::debug!(node = self.me.0, "cluster spec reloaded: no change");
        } else {
            tracing::info!(
                node = self.me.0,
                added = ?changes.added,
                removed = ?changes.removed,
                readdressed = ?changes.readdressed,
                "cluster spec reloaded"
            );
        }
        Ok(changes)
    }

    /// Makes `descriptor`'s node a member and schedules its first dial (if
    /// its address is known).
    pub(super) fn add_member(&mut self, now: Instant, descriptor: NodeDescriptor, learned: bool) {
        let id = NodeId(descriptor.id);
        self.node.inner.network().add_peer(id);
        tracing::info!(
            node = self.me.0,
            member = id.0,
            address = descriptor.address,
            learned,
            "member added"
        );
        self.departed.remove(&id);
        let mut peer = Peer {
            features: 0,
            dials_first: self.me < id,
            up: None,
            dialing: None,
            retry_at: None,
            backoff: Backoff::new(self.tuning.backoff_initial, self.tuning.backoff_max),
            descriptor,
            learned,
            hearsay_from: None,
            incarnation: None,
            down_since: Some(now),
            dial_failures: Default::default(),
        };
        if !peer.descriptor.address.is_empty() {
            peer.retry_at = Some(peer.first_dial(&self.tuning, now));
        }
        self.peers.insert(id, peer);
    }

    /// Drops a member: says goodbye on its connection, closes it (its
    /// mailboxes' watchers are told, as for any lost peer) and forgets it.
    pub(super) fn remove_member(&mut self, now: Instant, id: NodeId, removal: Removal) {
        // A newcomer held under this id goes too (and is not let in when
        // the live connection closes below).
        let held = self.probes.remove(&id).map(|p| p.conn);
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(&cid, c)| c.peer() == Some(id) || c.dialed == Some(id) || held == Some(cid))
            .map(|(&cid, _)| cid)
            .collect();
        let reason = removal.to_string();
        for cid in conns {
            if let Some(c) = self.conns.get_mut(&cid) {
                c.queue_frame(&Frame::Goodbye(handshake::goodbye_body(&reason)));
            }
            self.fail_conn(now, cid, CloseReason::MemberRemoved(removal));
        }
        if self.peers.remove(&id).is_some() {
            tracing::warn!(node = self.me.0, member = id.0, reason, "member removed");
        }
        self.active.remove(&id);
        self.node.inner.network().remove_peer(id);
    }

    /// Whether a node claiming `id` in its hello may become a peer.
    pub(super) fn admits(&self, id: NodeId) -> bool {
        id != self.me
            && !self.removed.contains(&id)
            && (self.peers.contains_key(&id)
                || (self.tuning.accept_joins && self.peers.len() < MAX_MEMBERS))
    }

    /// The `Members` message this node sends: itself and its live peers.
    pub(super) fn members_frame(&self, answer: bool) -> Frame {
        let mut nodes = vec![(self.me.0, self.descriptor.address.clone())];
        nodes.extend(
            self.peers
                .iter()
                .filter(|(_, p)| p.up.is_some() && !p.descriptor.address.is_empty())
                .map(|(id, p)| (id.0, p.descriptor.address.clone())),
        );
        Frame::Control(Control::Members { nodes, answer }.encode())
    }

    /// The count and hash of the member ids this node knows, itself
    /// included (spec and learned, up or not): what it sends as a
    /// [`Control::MemberDigest`].
    pub(super) fn own_digest(&self) -> (u32, u64) {
        let below = self.peers.range(..self.me).map(|(id, _)| id.0);
        let above = self.peers.range(self.me..).map(|(id, _)| id.0);
        member_digest(below.chain(std::iter::once(self.me.0)).chain(above))
    }

    /// The `MemberDigest` message this node sends.
    pub(super) fn digest_frame(&self, answer: bool) -> Frame {
        let (count, hash) = self.own_digest();
        Frame::Control(
            Control::MemberDigest {
                address: self.descriptor.address.clone(),
                count,
                hash,
                answer,
            }
            .encode(),
        )
    }

    /// The members message for a peer whose link just came up on `conn`
    /// with hello `features`: a digest if it understands them, else the
    /// full list.
    pub(super) fn link_up_members(&mut self, peer: NodeId, conn: &mut Conn, features: u64) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.features = features;
        }
        let frame = if features & FEATURE_MEMBER_DIGEST != 0 {
            self.digest_frame(false)
        } else {
            self.members_frame(false)
        };
        conn.queue_frame(&frame);
    }

    /// A peer's digest of its members, on `conn`: its own address is taken
    /// as from a `Members` list naming it; if the digest differs from ours,
    /// our full list goes back (see [`Control::MemberDigest`]).
    pub(super) fn on_member_digest(
        &mut self,
        now: Instant,
        from: NodeId,
        conn: &mut Conn,
        address: String,
        (count, hash): (u32, u64),
        answer: bool,
    ) -> Result<(), CloseReason> {
        if count == 0 || count > MAX_DIGEST_COUNT {
            return Err(CloseReason::Protocol(format!(
                "a member digest counting {count} members (1 to {MAX_DIGEST_COUNT})"
            )));
        }
        if !address.is_empty() {
            self.on_members(now, from, conn, vec![(from.0, address)], false);
        }
        if (count, hash) != self.own_digest() {
            conn.queue_frame(&self.members_frame(answer));
        }
        Ok(())
    }

    /// Members a peer told us about, on `conn`.
    pub(super) fn on_members(
        &mut self,
        now: Instant,
        from: NodeId,
        conn: &mut Conn,
        nodes: Vec<(u16, String)>,
        answer: bool,
    ) {
        if answer {
            let listed: BTreeSet<u16> = nodes.iter().map(|(id, _)| *id).collect();
            let lacking = self
                .peers
                .iter()
                .any(|(id, p)| p.up.is_some() && *id != from && !listed.contains(&id.0));
            if lacking {
                conn.queue_frame(&self.members_frame(false));
            }
        }
        let mut news = Vec::new();
        let mut hearsay = self
            .peers
            .values()
            .filter(|p| p.hearsay_from == Some(from))
            .count();
        if nodes.len() > MAX_MEMBERS {
            // Counted, not logged per message: one summary line now and then.
            self.dropped
                .record_many(OVERSIZED_MEMBERS, (nodes.len() - MAX_MEMBERS) as u64);
        }
        for (id, address) in nodes.into_iter().take(MAX_MEMBERS) {
            let id = NodeId(id);
            let departed = self.departed.get(&id).is_some_and(|&until| now < until);
            if id == self.me || self.removed.contains(&id) || departed {
                continue;
            }
            if !crate::spec::valid_host_port(&address) {
                tracing::warn!(
                    node = self.me.0,
                    peer = from.0,
                    member = id.0,
                    address,
                    "ignoring a member with a malformed address"
                );
                continue;
            }
            let room = self.tuning.accept_joins && self.peers.len() < MAX_MEMBERS;
            match self.peers.get_mut(&id) {
                Some(peer) => {
                    // The spec's address wins; a learned member's own word
                    // on its address wins over hearsay.
                    let update = peer.learned
                        && peer.descriptor.address != address
                        && (id == from || peer.descriptor.address.is_empty());
                    if update {
                        peer.descriptor.address = address.clone();
                        if peer.up.is_none() && peer.dialing.is_none() {
                            peer.retry_at = Some(peer.first_dial(&self.tuning, now));
                        }
                    }
                    // Pass on only what this node has seen for itself.
                    if update && peer.up.is_some() {
                        news.push((id.0, address));
                    }
                }
                None if room && hearsay < MAX_HEARSAY_PER_PEER => {
                    let descriptor = NodeDescriptor {
                        id: id.0,
                        address,
                        listen_address: String::new(),
                        local_address: String::new(),
                    };
                    self.add_member(now, descriptor, true);
                    if let Some(peer) = self.peers.get_mut(&id) {
                        peer.hearsay_from = Some(from);
                    }
                    hearsay += 1;
                }
                None => {
                    tracing::debug!(
                        node = self.me.0,
                        peer = from.0,
                        member = id.0,
                        "ignoring a member: no room for more learned members"
                    );
                }
            }
        }
        if news.is_empty() {
            return;
        }
        // Tell everyone else once; they do the same, so the news of a
        // member that connected floods the cluster and stops when nobody
        // learns anything new.
        let frame = Frame::Control(
            Control::Members {
                nodes: news,
                answer: false,
            }
            .encode(),
        );
        let targets: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(&id, _)| id != from)
            .filter_map(|(_, p)| p.up)
            .collect();
        for cid in targets {
            if let Some(c) = self.conns.get_mut(&cid) {
                c.queue_frame(&frame);
                self.dirty.insert(cid);
            }
        }
    }

    /// Periodic upkeep: tell one random peer what we know (a digest if it
    /// understands them, else the full list), and forget learned members
    /// that have been unreachable for too long.
    /// Runs when [`Timer::Gossip`](super::timer::Timer::Gossip) is due.
    pub(super) fn membership_timers(&mut self, now: Instant) {
        self.next_gossip = now + self.tuning.gossip_interval;
        let up: Vec<(ConnId, u64)> = self
            .peers
            .values()
            .filter_map(|p| p.up.map(|c| (c, p.features)))
            .collect();
        if !up.is_empty() {
            let (pick, features) = up[(self.rng.next_u64() % up.len() as u64) as usize];
            let frame = if features & FEATURE_MEMBER_DIGEST != 0 {
                self.digest_frame(true)
            } else {
                self.members_frame(true)
            };
            if let Some(c) = self.conns.get_mut(&pick) {
                c.queue_frame(&frame);
                self.dirty.insert(pick);
            }
        }
        let stale: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.learned
                    && p.up.is_none()
                    && p.down_since.is_some_and(|t| {
                        now.saturating_duration_since(t) >= self.tuning.forget_after
                    })
            })
            .map(|(&id, _)| id)
            .collect();
        for id in stale {
            self.remove_member(now, id, Removal::Unreachable);
        }
    }

    /// A hello claims `hello.node`, which is up under another incarnation.
    /// Holds the newcomer and pings the live connection: a pong proves the
    /// live process is there (the newcomer is refused with [`ID_IN_USE`]);
    /// the live connection failing first lets the newcomer in (a restarted
    /// node whose old connection had not been noticed gone yet).
    /// Returns `Err` to refuse the newcomer at once.
    pub(super) fn hold_for_probe(
        &mut self,
        conn: &mut Conn,
        hello: Hello,
        reply: Option<Hello>,
    ) -> Result<(), CloseReason> {
        let peer_id = hello.node;
        if reply.is_none() {
            // We dialled, and meanwhile the node connected to us under
            // another incarnation: keep that one, drop this dial quietly.
            let reason = CloseReason::Duplicate;
            conn.queue_frame(&Frame::Goodbye(handshake::goodbye_body(
                &reason.to_string(),
            )));
            return Err(reason);
        }
        if self.probes.contains_key(&peer_id) {
            conn.queue_frame(&Frame::Goodbye(handshake::goodbye_body(
                "another connection claiming this node id is being checked",
            )));
            return Err(CloseReason::SecondClaimant { node: peer_id });
        }
        let Some(live) = self.peers.get(&peer_id).and_then(|p| p.up) else {
            return Err(CloseReason::NoProbeTarget);
        };
        let Some(live_conn) = self.conns.get_mut(&live) else {
            return Err(CloseReason::NoProbeTarget);
        };
        live_conn.ping_nonce = live_conn.ping_nonce.wrapping_add(1);
        let nonce = live_conn.ping_nonce;
        live_conn.ping_outstanding = true;
        live_conn.queue_frame(&Frame::Ping(nonce));
        self.dirty.insert(live);
        tracing::warn!(
            node = self.me.0,
            peer = peer_id.0,
            from = %conn.label,
            live_incarnation = self.peers[&peer_id].incarnation.map(|i| i.0),
            claimed_incarnation = hello.incarnation.0,
            "a new process claims the id of a connected node; checking whether the old one is alive"
        );
        self.probes.insert(
            peer_id,
            Probe {
                conn: conn.id,
                nonce,
                hello,
                reply,
            },
        );
        Ok(())
    }

    /// A pong arrived on `peer`'s live connection.
    pub(super) fn on_probe_pong(&mut self, now: Instant, peer: NodeId, nonce: u64) {
        if self.probes.get(&peer).is_none_or(|p| p.nonce != nonce) {
            return;
        }
        let probe = self.probes.remove(&peer).expect("checked");
        let reason = crate::close::id_in_use_text(peer);
        tracing::error!(
            node = self.me.0,
            peer = peer.0,
            claimed_incarnation = probe.hello.incarnation.0,
            "refusing a second process with the id of a live node"
        );
        if let Some(c) = self.conns.get_mut(&probe.conn) {
            c.queue_frame(&Frame::Goodbye(handshake::goodbye_body(&reason)));
            self.fail_conn(now, probe.conn, CloseReason::IdInUse { node: peer });
        }
    }

    /// `peer`'s live incarnation just completed a fresh handshake (it
    /// reconnected): that proves it alive as well as a pong would, so a
    /// newcomer held under its id is refused.
    pub(super) fn refuse_probe_for_live(&mut self, now: Instant, peer: NodeId, live: Incarnation) {
        if self
            .probes
            .get(&peer)
            .is_some_and(|p| p.hello.incarnation != live)
        {
            let nonce = self.probes[&peer].nonce;
            self.on_probe_pong(now, peer, nonce);
        }
    }

    /// `peer`'s live connection went down: a held newcomer is accepted.
    pub(super) fn release_probe(&mut self, now: Instant, peer: NodeId) {
        let Some(probe) = self.probes.remove(&peer) else {
            return;
        };
        let Some(mut conn) = self.conns.remove(&probe.conn) else {
            return;
        };
        let result = self.establish(now, &mut conn, probe.hello, probe.reply);
        let id = conn.id;
        self.conns.insert(id, conn);
        self.dirty.insert(id);
        if let Err(reason) = result {
            self.fail_conn(now, id, reason);
        }
    }
}
