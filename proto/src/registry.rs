//! The cluster-wide directory, as a pure state machine: the name registry,
//! the members of service groups, and which nodes subscribe to which topics.
//!
//! Each node is authoritative for its own entries: at most one mailbox per
//! name per node, any number of members per service group, and whether it
//! has subscribers to a topic (subscribers themselves stay local: a
//! publication crosses the wire once per interested node). When two nodes connect they send each other a snapshot of
//! their own claims; after that, claim and unclaim deltas. A node's claims
//! vanish from every view when it goes down. The registry never does IO: it
//! returns [`Effect`]s for the node to carry out, which is what lets the
//! property tests run many registries against each other by hand.
//!
//! Limits: what one node may hold in the directory is capped
//! ([`RegistryLimits`], from the `Tuning` fields `max_name_len`,
//! `max_names_per_node`, `max_group_members_per_node` and
//! `max_topics_per_node`). The caps apply alike to this node's own entries
//! (a local call over a cap is refused with
//! [`RegistryError::CantRegister`]) and to each peer's: a peer that goes over
//! one gets [`PeerError::OverLimit`], and the node cuts it off, which drops
//! everything it held here. So a peer, hostile or mistaken, can make this
//! node hold at most one node's worth of entries per connection.
//!
//! Conflicts: a name claimed by more than one mailbox (each on its own node)
//! is resolved the same way on every node, with no messages exchanged: the
//! claimant with the lowest [`MailboxId`] (node, then incarnation, then
//! serial) wins, and [`lookup`](Registry::lookup) returns the winner on every
//! node that sees the same claims. The other claims stay recorded but
//! shadowed: when the winner goes, the next lowest takes over. However a
//! conflict is found (a local claim, a remote claim, a snapshot after a
//! partition healed), every node that sees it reports it once with
//! [`Effect::NameConflict`] (the node logs one WARN and counts it), and each
//! node tells its *own* claimant with [`MultipleClaim`](crate::MultipleClaim)
//! when it becomes party to the conflict, and again if it loses a win it
//! held. Every claimant's own node sees the conflict, so every claimant is
//! told, losers included; a loser that does not want to wait its turn
//! unregisters. [`multiple_claim_count`](Registry::multiple_claim_count) is
//! Go reign's: the names claimed more than once right now.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::control::Control;
use crate::id::{MailboxId, NodeId};

/// Longest name that may be registered with the default limits, in bytes
/// (the default of `Tuning::max_name_len`): Erlang's cap on atoms, which
/// its registered names are. Names are identifiers; a longer limit only
/// multiplies what a hostile peer can make every node hold (at 1 KiB the
/// registry flood test took a node to 40–66 MB above idle; at 255 bytes
/// the worst case is about a quarter of that).
pub const MAX_NAME_LEN: usize = 255;

/// Caps on the directory entries of one node: this node's own, and each
/// peer's as held here. See the `Tuning` fields of the same names, which
/// every node of a cluster should share (a node whose own caps are larger
/// than a peer's can be cut off by that peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryLimits {
    /// Longest name, service group or topic, in bytes.
    pub max_name_len: usize,
    /// Names one node may claim.
    pub max_names_per_node: usize,
    /// Service group memberships (group, member) one node may hold.
    pub max_group_members_per_node: usize,
    /// Topics one node may be interested in.
    pub max_topics_per_node: usize,
}

/// Names, group memberships and topics one node may hold, each (the
/// default of the `Tuning` fields of the same names): thousands of names
/// are a large service, and 8192 entries of at most `MAX_NAME_LEN` bytes
/// cost a peer a few MB at the very worst.
pub const MAX_ENTRIES_PER_NODE: usize = 8192;

impl Default for RegistryLimits {
    fn default() -> RegistryLimits {
        RegistryLimits {
            max_name_len: MAX_NAME_LEN,
            max_names_per_node: MAX_ENTRIES_PER_NODE,
            max_group_members_per_node: MAX_ENTRIES_PER_NODE,
            max_topics_per_node: MAX_ENTRIES_PER_NODE,
        }
    }
}

/// How many entries one peer holds in this node's directory.
#[derive(Clone, Copy, Debug, Default)]
struct Load {
    names: usize,
    group_members: usize,
    topics: usize,
}

/// Snapshot chunks stay under this many bytes of names.
const SNAPSHOT_CHUNK_BYTES: usize = 128 * 1024;

/// What the node must do after a registry change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send a control message to a connected peer.
    Send(NodeId, Control),
    /// Tell the local claimant `claimant` that `name` is claimed elsewhere too.
    MultipleClaim {
        /// The contested name.
        name: String,
        /// This node's claimant.
        claimant: MailboxId,
    },
    /// This node has just seen `name` become claimed by more than one
    /// mailbox (once per conflict: reported again only after the name has
    /// had a single claimant in between). The node logs it and counts it.
    NameConflict {
        /// The contested name.
        name: String,
        /// Every claimant, the winner (lowest id) first.
        claimants: Vec<MailboxId>,
    },
    /// Every peer has acknowledged the sync with this sequence number.
    SyncDone(u64),
}

/// Why a directory change was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryError {
    /// Only live mailboxes of this node can be registered, join a service
    /// or subscribe.
    CantRegister {
        /// Why.
        reason: &'static str,
    },
    /// The mailbox is not a member of that service group.
    NotMember {
        /// The group.
        group: String,
    },
    /// The mailbox is not subscribed to that topic.
    NotSubscribed {
        /// The topic.
        topic: String,
    },
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryError::CantRegister { reason } => write!(f, "cannot register: {reason}"),
            RegistryError::NotMember { group } => {
                write!(f, "the mailbox is not a member of service {group:?}")
            }
            RegistryError::NotSubscribed { topic } => {
                write!(f, "the mailbox is not subscribed to topic {topic:?}")
            }
        }
    }
}

impl std::error::Error for RegistryError {}

/// Why a registry message from a peer was not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerError {
    /// The message broke the protocol (for instance it claimed a mailbox of
    /// another node): it is ignored, the link carries on.
    Rejected(String),
    /// The peer went over one of its [`RegistryLimits`]: the node must cut
    /// it off (which drops everything the peer held here).
    OverLimit(String),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Rejected(e) | PeerError::OverLimit(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for PeerError {}

/// What this node has done about one contested name.
#[derive(Clone, Copy, Debug, Default)]
struct Conflict {
    /// The local claimant last told with `MultipleClaim`, and whether it
    /// was the winner then (a winner that later loses is told again).
    told: Option<(MailboxId, bool)>,
}

/// One node's view of the cluster's names.
#[derive(Debug)]
pub struct Registry {
    me: NodeId,
    local: BTreeMap<String, MailboxId>,
    local_by_id: HashMap<MailboxId, BTreeSet<String>>,
    remote: BTreeMap<String, BTreeMap<NodeId, MailboxId>>,
    connected: BTreeSet<NodeId>,
    /// Names claimed more than once in this view, and what the local
    /// claimant was told.
    conflicts: BTreeMap<String, Conflict>,
    groups: BTreeMap<String, BTreeSet<MailboxId>>,
    /// Memberships in `groups` (pairs), against the cap.
    local_members: usize,
    member_of: HashMap<MailboxId, BTreeSet<String>>,
    remote_groups: BTreeMap<String, BTreeMap<NodeId, BTreeSet<MailboxId>>>,
    group_turns: HashMap<String, usize>,
    topics: BTreeMap<String, BTreeSet<MailboxId>>,
    subscribed_to: HashMap<MailboxId, BTreeSet<String>>,
    topic_interest: BTreeMap<String, BTreeSet<NodeId>>,
    /// `MultipleClaim` notices handed out.
    multiple_claim_notices: u64,
    next_sync: u64,
    pending_syncs: BTreeMap<u64, BTreeSet<NodeId>>,
    limits: RegistryLimits,
    /// What each connected peer holds here, against the caps.
    loads: HashMap<NodeId, Load>,
}

/// A JSON-friendly dump of a registry view (reign's `NamesDebugger`).
#[derive(Clone, Debug, Serialize)]
pub struct RegistryDump {
    /// The node whose view this is.
    pub node: u16,
    /// Every name with its claimants as `(node, mailbox)`.
    pub names: BTreeMap<String, Vec<String>>,
    /// Distinct names.
    pub name_count: usize,
    /// Distinct claimant mailboxes.
    pub address_count: usize,
    /// Claims held by each node, as this node sees them.
    pub claims_per_node: BTreeMap<u16, usize>,
    /// Names claimed more than once right now (Go reign's
    /// `MultipleClaimCount`).
    pub multiple_claims: usize,
    /// `MultipleClaim` notices this node has sent its claimants.
    pub multiple_claim_notices: u64,
    /// Syncs waiting for acknowledgements.
    pub pending_syncs: usize,
}

impl Registry {
    /// An empty registry for node `me`, with the default limits.
    pub fn new(me: NodeId) -> Registry {
        Registry::with_limits(me, RegistryLimits::default())
    }

    /// An empty registry for node `me` with these limits.
    pub fn with_limits(me: NodeId, limits: RegistryLimits) -> Registry {
        Registry {
            me,
            local: BTreeMap::new(),
            local_by_id: HashMap::new(),
            remote: BTreeMap::new(),
            connected: BTreeSet::new(),
            conflicts: BTreeMap::new(),
            groups: BTreeMap::new(),
            local_members: 0,
            member_of: HashMap::new(),
            remote_groups: BTreeMap::new(),
            group_turns: HashMap::new(),
            topics: BTreeMap::new(),
            subscribed_to: HashMap::new(),
            topic_interest: BTreeMap::new(),
            multiple_claim_notices: 0,
            next_sync: 1,
            pending_syncs: BTreeMap::new(),
            limits,
            loads: HashMap::new(),
        }
    }

    /// Changes the limits. Entries already held over a lowered cap stay.
    pub fn set_limits(&mut self, limits: RegistryLimits) {
        self.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> RegistryLimits {
        self.limits
    }

    fn broadcast(&self, control: Control, effects: &mut Vec<Effect>) {
        for &peer in &self.connected {
            effects.push(Effect::Send(peer, control.clone()));
        }
    }

    /// Every claimant of `name` in this view, the winner (lowest id) first.
    fn claimants(&self, name: &str) -> Vec<MailboxId> {
        let mut all: Vec<MailboxId> = self.local.get(name).copied().into_iter().collect();
        if let Some(claims) = self.remote.get(name) {
            all.extend(claims.values().copied());
        }
        all.sort_unstable();
        all
    }

    /// Re-evaluates the conflict state of `name` after any change to its
    /// claims: reports a conflict when it begins, and tells the local
    /// claimant when it becomes party to one or loses a win it held.
    fn check_conflict(&mut self, name: &str, effects: &mut Vec<Effect>) {
        let claimants = self.claimants(name);
        if claimants.len() < 2 {
            self.conflicts.remove(name);
            return;
        }
        let winner = claimants[0];
        let local = self.local.get(name).copied();
        let conflict = match self.conflicts.get_mut(name) {
            Some(conflict) => conflict,
            None => {
                effects.push(Effect::NameConflict {
                    name: name.to_owned(),
                    claimants,
                });
                self.conflicts.entry(name.to_owned()).or_default()
            }
        };
        let Some(claimant) = local else {
            // A local claimant that comes back is a new party.
            conflict.told = None;
            return;
        };
        let wins = claimant == winner;
        let tell = match conflict.told {
            None => true,
            Some((told, was_winner)) => told != claimant || (was_winner && !wins),
        };
        conflict.told = Some((claimant, wins));
        if tell {
            self.multiple_claim_notices += 1;
            effects.push(Effect::MultipleClaim {
                name: name.to_owned(),
                claimant,
            });
        }
    }

    /// Claims `name` for the local mailbox `id`, replacing this node's
    /// previous claimant of that name.
    pub fn register(&mut self, name: &str, id: MailboxId) -> Result<Vec<Effect>, RegistryError> {
        if id.node != self.me {
            return Err(RegistryError::CantRegister {
                reason: "the mailbox belongs to another node",
            });
        }
        if name.len() > self.limits.max_name_len {
            return Err(RegistryError::CantRegister {
                reason: "the name is longer than max_name_len",
            });
        }
        if !self.local.contains_key(name) && self.local.len() >= self.limits.max_names_per_node {
            return Err(RegistryError::CantRegister {
                reason: "this node already claims max_names_per_node names",
            });
        }
        let mut effects = Vec::new();
        if let Some(old) = self.local.insert(name.to_owned(), id) {
            if old == id {
                return Ok(effects);
            }
            if let Some(names) = self.local_by_id.get_mut(&old) {
                names.remove(name);
                if names.is_empty() {
                    self.local_by_id.remove(&old);
                }
            }
        }
        self.local_by_id
            .entry(id)
            .or_default()
            .insert(name.to_owned());
        self.broadcast(
            Control::Claim {
                name: name.to_owned(),
                id,
            },
            &mut effects,
        );
        self.check_conflict(name, &mut effects);
        Ok(effects)
    }

    /// Drops the local claim of `name` if `id` holds it; ignored otherwise.
    pub fn unregister(&mut self, name: &str, id: MailboxId) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.local.get(name) != Some(&id) {
            return effects;
        }
        self.local.remove(name);
        if let Some(names) = self.local_by_id.get_mut(&id) {
            names.remove(name);
            if names.is_empty() {
                self.local_by_id.remove(&id);
            }
        }
        self.broadcast(
            Control::Unclaim {
                name: name.to_owned(),
                id,
            },
            &mut effects,
        );
        self.check_conflict(name, &mut effects);
        effects
    }

    /// A local mailbox closed: every name it held is released, it leaves
    /// every service group and drops every subscription, everywhere.
    pub fn mailbox_closed(&mut self, id: MailboxId) -> Vec<Effect> {
        let names = self.local_by_id.remove(&id).unwrap_or_default();
        let mut effects = Vec::new();
        for name in names {
            self.local.remove(&name);
            self.broadcast(
                Control::Unclaim {
                    name: name.clone(),
                    id,
                },
                &mut effects,
            );
            self.check_conflict(&name, &mut effects);
        }
        for group in self.member_of.get(&id).cloned().unwrap_or_default() {
            if let Ok(more) = self.leave(&group, id) {
                effects.extend(more);
            }
        }
        for topic in self.subscribed_to.get(&id).cloned().unwrap_or_default() {
            if let Ok(more) = self.unsubscribe(&topic, id) {
                effects.extend(more);
            }
        }
        effects
    }

    /// Adds the local mailbox `id` to service `group`.
    pub fn join(&mut self, group: &str, id: MailboxId) -> Result<Vec<Effect>, RegistryError> {
        self.check_local(group, id)?;
        let mut effects = Vec::new();
        let already = self.groups.get(group).is_some_and(|m| m.contains(&id));
        if already {
            return Ok(effects);
        }
        if self.local_members >= self.limits.max_group_members_per_node {
            return Err(RegistryError::CantRegister {
                reason: "this node already holds max_group_members_per_node group memberships",
            });
        }
        if self.groups.entry(group.to_owned()).or_default().insert(id) {
            self.local_members += 1;
            self.member_of
                .entry(id)
                .or_default()
                .insert(group.to_owned());
            self.broadcast(
                Control::Join {
                    group: group.to_owned(),
                    id,
                },
                &mut effects,
            );
        }
        Ok(effects)
    }

    /// Removes the local mailbox `id` from service `group`.
    pub fn leave(&mut self, group: &str, id: MailboxId) -> Result<Vec<Effect>, RegistryError> {
        let removed = self.groups.get_mut(group).is_some_and(|m| m.remove(&id));
        if !removed {
            return Err(RegistryError::NotMember {
                group: group.to_owned(),
            });
        }
        self.local_members -= 1;
        if self.groups.get(group).is_some_and(BTreeSet::is_empty) {
            self.groups.remove(group);
        }
        if let Some(groups) = self.member_of.get_mut(&id) {
            groups.remove(group);
            if groups.is_empty() {
                self.member_of.remove(&id);
            }
        }
        let mut effects = Vec::new();
        self.broadcast(
            Control::Leave {
                group: group.to_owned(),
                id,
            },
            &mut effects,
        );
        Ok(effects)
    }

    /// Subscribes the local mailbox `id` to `topic`; the first local
    /// subscriber makes this node interested.
    pub fn subscribe(&mut self, topic: &str, id: MailboxId) -> Result<Vec<Effect>, RegistryError> {
        self.check_local(topic, id)?;
        let mut effects = Vec::new();
        if !self.topics.contains_key(topic) && self.topics.len() >= self.limits.max_topics_per_node
        {
            return Err(RegistryError::CantRegister {
                reason: "this node is already interested in max_topics_per_node topics",
            });
        }
        let subscribers = self.topics.entry(topic.to_owned()).or_default();
        let first = subscribers.is_empty();
        if subscribers.insert(id) {
            self.subscribed_to
                .entry(id)
                .or_default()
                .insert(topic.to_owned());
            if first {
                self.broadcast(
                    Control::Interest {
                        topic: topic.to_owned(),
                        interested: true,
                    },
                    &mut effects,
                );
            }
        }
        Ok(effects)
    }

    /// Unsubscribes `id` from `topic`: a typed error if it was not subscribed.
    pub fn unsubscribe(
        &mut self,
        topic: &str,
        id: MailboxId,
    ) -> Result<Vec<Effect>, RegistryError> {
        let removed = self.topics.get_mut(topic).is_some_and(|s| s.remove(&id));
        if !removed {
            return Err(RegistryError::NotSubscribed {
                topic: topic.to_owned(),
            });
        }
        if let Some(topics) = self.subscribed_to.get_mut(&id) {
            topics.remove(topic);
            if topics.is_empty() {
                self.subscribed_to.remove(&id);
            }
        }
        let mut effects = Vec::new();
        if self.topics.get(topic).is_some_and(BTreeSet::is_empty) {
            self.topics.remove(topic);
            self.broadcast(
                Control::Interest {
                    topic: topic.to_owned(),
                    interested: false,
                },
                &mut effects,
            );
        }
        Ok(effects)
    }

    fn check_local(&self, name: &str, id: MailboxId) -> Result<(), RegistryError> {
        if id.node != self.me {
            return Err(RegistryError::CantRegister {
                reason: "the mailbox belongs to another node",
            });
        }
        if name.len() > self.limits.max_name_len {
            return Err(RegistryError::CantRegister {
                reason: "the name is longer than max_name_len",
            });
        }
        Ok(())
    }

    /// Local members of `group`.
    pub fn local_members(&self, group: &str) -> Vec<MailboxId> {
        self.groups
            .get(group)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every member of `group`, local first.
    pub fn members(&self, group: &str) -> Vec<MailboxId> {
        let mut all = self.local_members(group);
        if let Some(remote) = self.remote_groups.get(group) {
            all.extend(remote.values().flatten().copied());
        }
        all
    }

    /// Nodes other than this one with members in `group`.
    pub fn member_nodes(&self, group: &str) -> Vec<NodeId> {
        self.remote_groups
            .get(group)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The member a request to `group` goes to: a local member if there is
    /// one (in turn), otherwise the remote members in turn.
    pub fn pick_member(&mut self, group: &str) -> Option<MailboxId> {
        let local = self.local_members(group);
        let candidates = if local.is_empty() {
            self.remote_groups
                .get(group)
                .map(|m| m.values().flatten().copied().collect::<Vec<_>>())
                .unwrap_or_default()
        } else {
            local
        };
        if candidates.is_empty() {
            return None;
        }
        let turn = self.group_turns.entry(group.to_owned()).or_insert(0);
        let pick = candidates[*turn % candidates.len()];
        *turn = turn.wrapping_add(1);
        Some(pick)
    }

    /// Local subscribers of `topic`.
    pub fn local_subscribers(&self, topic: &str) -> Vec<MailboxId> {
        self.topics
            .get(topic)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Other nodes with subscribers to `topic`.
    pub fn interested_nodes(&self, topic: &str) -> Vec<NodeId> {
        self.topic_interest
            .get(topic)
            .map(|n| n.iter().copied().collect())
            .unwrap_or_default()
    }

    /// A peer connected: its claims start afresh, and it gets our snapshot
    /// (returned as the control messages to send it first).
    pub fn peer_up(&mut self, peer: NodeId) -> Vec<Control> {
        self.forget_claims_of(peer, &mut Vec::new());
        self.connected.insert(peer);
        let mut deltas = Vec::new();
        for (name, id) in &self.local {
            deltas.push((
                name.len(),
                Control::Claim {
                    name: name.clone(),
                    id: *id,
                },
            ));
        }
        for (group, members) in &self.groups {
            for id in members {
                deltas.push((
                    group.len(),
                    Control::Join {
                        group: group.clone(),
                        id: *id,
                    },
                ));
            }
        }
        for topic in self.topics.keys() {
            deltas.push((
                topic.len(),
                Control::Interest {
                    topic: topic.clone(),
                    interested: true,
                },
            ));
        }
        let mut chunks = Vec::new();
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for (len, delta) in deltas {
            bytes += len + 32;
            chunk.push(delta);
            if bytes >= SNAPSHOT_CHUNK_BYTES {
                chunks.push(Control::Snapshot {
                    deltas: std::mem::take(&mut chunk),
                    last: false,
                });
                bytes = 0;
            }
        }
        chunks.push(Control::Snapshot {
            deltas: chunk,
            last: true,
        });
        chunks
    }

    /// A peer went down: its claims vanish, and it no longer holds up syncs.
    pub fn peer_down(&mut self, peer: NodeId) -> Vec<Effect> {
        self.connected.remove(&peer);
        let mut effects = Vec::new();
        self.forget_claims_of(peer, &mut effects);
        let done: Vec<u64> = self
            .pending_syncs
            .iter_mut()
            .filter_map(|(&seq, waiting)| {
                waiting.remove(&peer);
                waiting.is_empty().then_some(seq)
            })
            .collect();
        for seq in done {
            self.pending_syncs.remove(&seq);
            effects.push(Effect::SyncDone(seq));
        }
        effects
    }

    fn forget_claims_of(&mut self, peer: NodeId, effects: &mut Vec<Effect>) {
        self.loads.remove(&peer);
        let mut touched = Vec::new();
        self.remote.retain(|name, claims| {
            if claims.remove(&peer).is_some() {
                touched.push(name.clone());
            }
            !claims.is_empty()
        });
        for name in touched {
            self.check_conflict(&name, effects);
        }
        self.remote_groups.retain(|_, members| {
            members.remove(&peer);
            !members.is_empty()
        });
        self.topic_interest.retain(|_, nodes| {
            nodes.remove(&peer);
            !nodes.is_empty()
        });
    }

    /// Refuses a name, group or topic from `peer` longer than the cap.
    fn check_len(&self, peer: NodeId, what: &str, name: &str) -> Result<(), PeerError> {
        if name.len() > self.limits.max_name_len {
            return Err(PeerError::OverLimit(format!(
                "node {} sent a {what} of {} bytes, over max_name_len ({})",
                peer.0,
                name.len(),
                self.limits.max_name_len
            )));
        }
        Ok(())
    }

    /// Refuses `id` unless it is a mailbox of `peer` itself.
    fn check_owner(
        peer: NodeId,
        id: MailboxId,
        what: impl FnOnce() -> String,
    ) -> Result<(), PeerError> {
        if id.node != peer {
            return Err(PeerError::Rejected(format!(
                "node {} {} {id:?}, a mailbox of another node",
                peer.0,
                what()
            )));
        }
        Ok(())
    }

    fn remote_claim(&mut self, peer: NodeId, name: String, id: MailboxId) -> Result<(), PeerError> {
        Registry::check_owner(peer, id, || format!("claimed {name:?} for"))?;
        self.check_len(peer, "name", &name)?;
        let max = self.limits.max_names_per_node;
        let load = self.loads.entry(peer).or_default();
        let claims = self.remote.get(&name);
        if !claims.is_some_and(|c| c.contains_key(&peer)) {
            if load.names >= max {
                return Err(PeerError::OverLimit(format!(
                    "node {} claimed more than max_names_per_node ({max}) names",
                    peer.0
                )));
            }
            load.names += 1;
        }
        self.remote.entry(name).or_default().insert(peer, id);
        Ok(())
    }

    fn remote_join(&mut self, peer: NodeId, group: String, id: MailboxId) -> Result<(), PeerError> {
        Registry::check_owner(peer, id, || format!("added to service {group:?}"))?;
        self.check_len(peer, "service group", &group)?;
        let max = self.limits.max_group_members_per_node;
        let load = self.loads.entry(peer).or_default();
        let known = self
            .remote_groups
            .get(&group)
            .and_then(|m| m.get(&peer))
            .is_some_and(|ids| ids.contains(&id));
        if known {
            return Ok(());
        }
        if load.group_members >= max {
            return Err(PeerError::OverLimit(format!(
                "node {} held more than max_group_members_per_node ({max}) group memberships",
                peer.0
            )));
        }
        load.group_members += 1;
        self.remote_groups
            .entry(group)
            .or_default()
            .entry(peer)
            .or_default()
            .insert(id);
        Ok(())
    }

    fn remote_interest(&mut self, peer: NodeId, topic: String) -> Result<(), PeerError> {
        self.check_len(peer, "topic", &topic)?;
        let max = self.limits.max_topics_per_node;
        let load = self.loads.entry(peer).or_default();
        if self
            .topic_interest
            .get(&topic)
            .is_some_and(|n| n.contains(&peer))
        {
            return Ok(());
        }
        if load.topics >= max {
            return Err(PeerError::OverLimit(format!(
                "node {} was interested in more than max_topics_per_node ({max}) topics",
                peer.0
            )));
        }
        load.topics += 1;
        self.topic_interest.entry(topic).or_default().insert(peer);
        Ok(())
    }

    /// Applies a registry control message from a connected peer.
    /// [`PeerError::Rejected`] means the peer broke the protocol (that
    /// message is ignored); [`PeerError::OverLimit`] means the peer went
    /// over a cap: the caller must cut it off and call
    /// [`peer_down`](Registry::peer_down). Within a snapshot, the deltas
    /// before an over-limit one are applied (and go with the peer).
    pub fn on_control(&mut self, peer: NodeId, control: Control) -> Result<Vec<Effect>, PeerError> {
        let mut effects = Vec::new();
        match control {
            Control::Snapshot { deltas, .. } => {
                let mut first_error = None;
                for delta in deltas {
                    let result = match delta {
                        Control::Claim { .. } | Control::Join { .. } | Control::Interest { .. } => {
                            self.on_control(peer, delta)
                        }
                        other => Err(PeerError::Rejected(format!("{other:?} inside a snapshot"))),
                    };
                    match result {
                        Ok(more) => effects.extend(more),
                        Err(e @ PeerError::OverLimit(_)) => return Err(e),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                if let Some(e) = first_error {
                    return Err(e);
                }
            }
            Control::Join { group, id } => self.remote_join(peer, group, id)?,
            Control::Leave { group, id } => {
                if let Some(members) = self.remote_groups.get_mut(&group) {
                    if let Some(of_peer) = members.get_mut(&peer) {
                        if of_peer.remove(&id) {
                            if let Some(load) = self.loads.get_mut(&peer) {
                                load.group_members -= 1;
                            }
                        }
                        if of_peer.is_empty() {
                            members.remove(&peer);
                        }
                    }
                    if members.is_empty() {
                        self.remote_groups.remove(&group);
                    }
                }
            }
            Control::Interest { topic, interested } => {
                if interested {
                    self.remote_interest(peer, topic)?;
                } else if let Some(nodes) = self.topic_interest.get_mut(&topic) {
                    if nodes.remove(&peer) {
                        if let Some(load) = self.loads.get_mut(&peer) {
                            load.topics -= 1;
                        }
                    }
                    if nodes.is_empty() {
                        self.topic_interest.remove(&topic);
                    }
                }
            }
            Control::Claim { name, id } => {
                let checked = name.clone();
                self.remote_claim(peer, name, id)?;
                self.check_conflict(&checked, &mut effects);
            }
            Control::Unclaim { name, id } => {
                if let Some(claims) = self.remote.get_mut(&name) {
                    if claims.get(&peer) == Some(&id) {
                        claims.remove(&peer);
                        if let Some(load) = self.loads.get_mut(&peer) {
                            load.names -= 1;
                        }
                        if claims.is_empty() {
                            self.remote.remove(&name);
                        }
                    }
                }
                self.check_conflict(&name, &mut effects);
            }
            Control::SyncRequest { seq } => {
                effects.push(Effect::Send(peer, Control::SyncReply { seq }));
            }
            Control::SyncReply { seq } => {
                if let Some(waiting) = self.pending_syncs.get_mut(&seq) {
                    waiting.remove(&peer);
                    if waiting.is_empty() {
                        self.pending_syncs.remove(&seq);
                        effects.push(Effect::SyncDone(seq));
                    }
                }
            }
            other => {
                return Err(PeerError::Rejected(format!(
                    "not a registry message: {other:?}"
                )))
            }
        }
        Ok(effects)
    }

    /// Starts a sync: every connected peer is asked to acknowledge once it
    /// has applied everything this node sent before. Returns the sequence
    /// number and the requests to send (none if no peer is connected, in
    /// which case the sync is already done).
    ///
    /// One round trip: the request follows this node's claims on the same
    /// ordered link, and a peer answers it as soon as it reads it (it has
    /// applied every claim before it by then), so a sync waits for the
    /// slowest connected peer's round trip and nothing more.
    pub fn start_sync(&mut self) -> (u64, Vec<Effect>) {
        let seq = self.next_sync;
        self.next_sync += 1;
        let mut effects = Vec::new();
        if self.connected.is_empty() {
            effects.push(Effect::SyncDone(seq));
        } else {
            self.pending_syncs.insert(seq, self.connected.clone());
            self.broadcast(Control::SyncRequest { seq }, &mut effects);
        }
        (seq, effects)
    }

    /// The claimant to use for `name`: the only one, or when several
    /// claim it the winner, the lowest [`MailboxId`]. Every node that sees
    /// the same claims picks the same one.
    pub fn lookup(&self, name: &str) -> Option<MailboxId> {
        let local = self.local.get(name).copied();
        let remote = self
            .remote
            .get(name)
            .and_then(|claims| claims.values().min().copied());
        match (local, remote) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Every claimant of `name`, the winner first, then by id.
    pub fn lookup_all(&self, name: &str) -> Vec<MailboxId> {
        self.claimants(name)
    }

    /// Whether each name has at least one claimant.
    pub fn seen_names(&self, names: &[&str]) -> Vec<bool> {
        names
            .iter()
            .map(|n| self.local.contains_key(*n) || self.remote.contains_key(*n))
            .collect()
    }

    /// Every name with its claimants, as this node sees them.
    pub fn view(&self) -> BTreeMap<String, BTreeSet<MailboxId>> {
        let mut view: BTreeMap<String, BTreeSet<MailboxId>> = BTreeMap::new();
        for (name, id) in &self.local {
            view.entry(name.clone()).or_default().insert(*id);
        }
        for (name, claims) in &self.remote {
            view.entry(name.clone())
                .or_default()
                .extend(claims.values().copied());
        }
        view
    }

    /// This node's own claims.
    pub fn local_claims(&self) -> BTreeMap<String, MailboxId> {
        self.local.clone()
    }

    /// Every service group and its members, as this node sees them.
    pub fn group_view(&self) -> BTreeMap<String, BTreeSet<MailboxId>> {
        let mut view: BTreeMap<String, BTreeSet<MailboxId>> = self.groups.clone();
        for (group, members) in &self.remote_groups {
            view.entry(group.clone())
                .or_default()
                .extend(members.values().flatten().copied());
        }
        view
    }

    /// This node's own service memberships.
    pub fn local_groups(&self) -> BTreeMap<String, BTreeSet<MailboxId>> {
        self.groups.clone()
    }

    /// Which nodes (this one included) have subscribers, per topic.
    pub fn topic_view(&self) -> BTreeMap<String, BTreeSet<NodeId>> {
        let mut view = self.topic_interest.clone();
        for topic in self.topics.keys() {
            view.entry(topic.clone()).or_default().insert(self.me);
        }
        view
    }

    /// Names claimed more than once right now, in this node's view (Go
    /// reign's `MultipleClaimCount`: it falls as conflicts end).
    pub fn multiple_claim_count(&self) -> usize {
        self.conflicts.len()
    }

    /// `MultipleClaim` notices handed to this node's claimants so far.
    pub fn multiple_claim_notices(&self) -> u64 {
        self.multiple_claim_notices
    }

    /// How many names, group memberships and topics `peer` holds here.
    pub fn peer_load(&self, peer: NodeId) -> (usize, usize, usize) {
        self.loads
            .get(&peer)
            .map_or((0, 0, 0), |l| (l.names, l.group_members, l.topics))
    }

    /// Syncs waiting for acknowledgements.
    pub fn pending_sync_count(&self) -> usize {
        self.pending_syncs.len()
    }

    /// A debugging dump of the whole view.
    pub fn dump(&self) -> RegistryDump {
        let view = self.view();
        let mut claims_per_node: BTreeMap<u16, usize> = BTreeMap::new();
        let mut addresses = BTreeSet::new();
        for ids in view.values() {
            for id in ids {
                *claims_per_node.entry(id.node.0).or_default() += 1;
                addresses.insert(*id);
            }
        }
        RegistryDump {
            node: self.me.0,
            name_count: view.len(),
            address_count: addresses.len(),
            names: view
                .into_iter()
                .map(|(name, ids)| (name, ids.iter().map(|id| format!("{id:?}")).collect()))
                .collect(),
            claims_per_node,
            multiple_claims: self.conflicts.len(),
            multiple_claim_notices: self.multiple_claim_notices,
            pending_syncs: self.pending_syncs.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Incarnation;

    fn id(node: u16, serial: u64) -> MailboxId {
        MailboxId {
            node: NodeId(node),
            incarnation: Incarnation(1),
            serial,
        }
    }

    #[test]
    fn local_claims_replace_and_broadcast() {
        let mut r = Registry::new(NodeId(0));
        r.peer_up(NodeId(1));
        let effects = r.register("svc", id(0, 1)).unwrap();
        assert_eq!(
            effects,
            vec![Effect::Send(
                NodeId(1),
                Control::Claim {
                    name: "svc".into(),
                    id: id(0, 1)
                }
            )]
        );
        r.register("svc", id(0, 2)).unwrap();
        assert_eq!(r.lookup_all("svc"), vec![id(0, 2)]);
        assert!(
            r.unregister("svc", id(0, 1)).is_empty(),
            "not the claimant: ignored"
        );
        assert_eq!(r.lookup("svc"), Some(id(0, 2)));
        assert_eq!(
            r.register("x", id(3, 1)),
            Err(RegistryError::CantRegister {
                reason: "the mailbox belongs to another node"
            })
        );
        let effects = r.mailbox_closed(id(0, 2));
        assert_eq!(
            effects,
            vec![Effect::Send(
                NodeId(1),
                Control::Unclaim {
                    name: "svc".into(),
                    id: id(0, 2)
                }
            )]
        );
        assert_eq!(r.lookup("svc"), None);
    }

    #[test]
    fn conflicts_notify_the_local_claimant_once() {
        let mut r = Registry::new(NodeId(0));
        r.peer_up(NodeId(1));
        r.register("svc", id(0, 1)).unwrap();
        let effects = r
            .on_control(
                NodeId(1),
                Control::Claim {
                    name: "svc".into(),
                    id: id(1, 1),
                },
            )
            .unwrap();
        assert_eq!(
            effects,
            vec![
                Effect::NameConflict {
                    name: "svc".into(),
                    claimants: vec![id(0, 1), id(1, 1)]
                },
                Effect::MultipleClaim {
                    name: "svc".into(),
                    claimant: id(0, 1)
                }
            ]
        );
        // The same conflict again: no second notification.
        let effects = r
            .on_control(
                NodeId(1),
                Control::Claim {
                    name: "svc".into(),
                    id: id(1, 1),
                },
            )
            .unwrap();
        assert!(effects.is_empty());
        assert_eq!(r.multiple_claim_notices(), 1);
        assert_eq!(r.multiple_claim_count(), 1);
        // The conflict ends and begins again (a partition heals): told again.
        r.peer_down(NodeId(1));
        assert_eq!(r.multiple_claim_count(), 0);
        r.peer_up(NodeId(1));
        let effects = r
            .on_control(
                NodeId(1),
                Control::Snapshot {
                    deltas: vec![Control::Claim {
                        name: "svc".into(),
                        id: id(1, 1),
                    }],
                    last: true,
                },
            )
            .unwrap();
        assert_eq!(effects.len(), 2);
        assert_eq!(r.multiple_claim_notices(), 2);
    }

    #[test]
    fn a_winner_that_loses_is_told_again_and_lookups_follow_the_lowest_id() {
        let mut r = Registry::new(NodeId(1));
        r.peer_up(NodeId(0));
        r.peer_up(NodeId(2));
        r.register("svc", id(1, 5)).unwrap();
        let claim = |node, serial| Control::Claim {
            name: "svc".into(),
            id: id(node, serial),
        };
        // Node 2 claims: node 1's claimant wins, and is told once.
        let effects = r.on_control(NodeId(2), claim(2, 1)).unwrap();
        assert_eq!(effects.len(), 2, "{effects:?}");
        assert_eq!(r.lookup("svc"), Some(id(1, 5)));
        // Node 0 claims: node 1's claimant loses its win and is told again,
        // but the conflict is not reported twice.
        let effects = r.on_control(NodeId(0), claim(0, 9)).unwrap();
        assert_eq!(
            effects,
            vec![Effect::MultipleClaim {
                name: "svc".into(),
                claimant: id(1, 5)
            }]
        );
        assert_eq!(r.lookup("svc"), Some(id(0, 9)));
        assert_eq!(r.lookup_all("svc"), vec![id(0, 9), id(1, 5), id(2, 1)]);
        // The winner goes: the next lowest takes over.
        r.on_control(
            NodeId(0),
            Control::Unclaim {
                name: "svc".into(),
                id: id(0, 9),
            },
        )
        .unwrap();
        assert_eq!(r.lookup("svc"), Some(id(1, 5)));
        assert_eq!(r.multiple_claim_count(), 1);
        assert_eq!(r.multiple_claim_notices(), 2);
    }

    #[test]
    fn lookups_agree_on_the_lowest_claimant() {
        let mut r = Registry::new(NodeId(0));
        for n in 1..=2 {
            r.peer_up(NodeId(n));
            r.on_control(
                NodeId(n),
                Control::Claim {
                    name: "svc".into(),
                    id: id(n, 1),
                },
            )
            .unwrap();
        }
        let picks: Vec<_> = (0..4).map(|_| r.lookup("svc").unwrap().node.0).collect();
        assert_eq!(picks, [1, 1, 1, 1]);
        r.register("svc", id(0, 9)).unwrap();
        assert_eq!(r.lookup("svc"), Some(id(0, 9)));
        assert_eq!(r.lookup_all("svc").len(), 3);
        assert_eq!(r.seen_names(&["svc", "nope"]), vec![true, false]);
    }

    fn small() -> RegistryLimits {
        RegistryLimits {
            max_name_len: 8,
            max_names_per_node: 3,
            max_group_members_per_node: 3,
            max_topics_per_node: 3,
        }
    }

    #[test]
    fn a_peer_over_a_cap_is_over_limit_just_past_it() {
        let mut r = Registry::with_limits(NodeId(0), small());
        r.peer_up(NodeId(1));
        let over = |r: &mut Registry, c: Control| {
            matches!(r.on_control(NodeId(1), c), Err(PeerError::OverLimit(_)))
        };
        // Name length: 7 and 8 bytes pass, 9 does not.
        for (len, ok) in [(7, true), (8, true), (9, false)] {
            let name = "n".repeat(len);
            let claim = Control::Claim {
                name: name.clone(),
                id: id(1, 1),
            };
            assert_eq!(over(&mut r, claim), !ok, "claim of {len} bytes");
            let join = Control::Join {
                group: name.clone(),
                id: id(1, 1),
            };
            assert_eq!(over(&mut r, join), !ok, "group of {len} bytes");
            let interest = Control::Interest {
                topic: name,
                interested: true,
            };
            assert_eq!(over(&mut r, interest), !ok, "topic of {len} bytes");
        }
        assert_eq!(r.peer_load(NodeId(1)), (2, 2, 2));
        // At the cap (3), repeating a held entry is fine; one more is over.
        let claim = |n: &str| Control::Claim {
            name: n.into(),
            id: id(1, 2),
        };
        assert!(r.on_control(NodeId(1), claim("c")).is_ok());
        assert!(r.on_control(NodeId(1), claim("c")).is_ok());
        assert!(over(&mut r, claim("d")));
        let join = |g: &str, serial| Control::Join {
            group: g.into(),
            id: id(1, serial),
        };
        assert!(r.on_control(NodeId(1), join("g", 7)).is_ok());
        assert!(r.on_control(NodeId(1), join("g", 7)).is_ok());
        assert!(over(&mut r, join("g", 8)));
        let interest = |t: &str| Control::Interest {
            topic: t.into(),
            interested: true,
        };
        assert!(r.on_control(NodeId(1), interest("t")).is_ok());
        assert!(r.on_control(NodeId(1), interest("t")).is_ok());
        assert!(over(&mut r, interest("u")));
        assert_eq!(r.peer_load(NodeId(1)), (3, 3, 3));
        // Dropping entries makes room again.
        r.on_control(
            NodeId(1),
            Control::Unclaim {
                name: "c".into(),
                id: id(1, 2),
            },
        )
        .unwrap();
        r.on_control(
            NodeId(1),
            Control::Leave {
                group: "g".into(),
                id: id(1, 7),
            },
        )
        .unwrap();
        r.on_control(
            NodeId(1),
            Control::Interest {
                topic: "t".into(),
                interested: false,
            },
        )
        .unwrap();
        assert_eq!(r.peer_load(NodeId(1)), (2, 2, 2));
        assert!(r.on_control(NodeId(1), claim("d")).is_ok());
        // Losing the peer drops what it held.
        r.peer_down(NodeId(1));
        assert_eq!(r.peer_load(NodeId(1)), (0, 0, 0));
        assert!(r.view().is_empty() && r.group_view().is_empty() && r.topic_view().is_empty());
        // A snapshot over the cap stops at the first delta past it.
        r.peer_up(NodeId(1));
        let deltas = (0..5).map(|i| claim(&format!("s{i}"))).collect();
        assert!(over(&mut r, Control::Snapshot { deltas, last: true }));
        assert_eq!(r.peer_load(NodeId(1)).0, 3);
    }

    #[test]
    fn local_entries_obey_the_same_caps() {
        let mut r = Registry::with_limits(NodeId(0), small());
        assert!(r.register("12345678", id(0, 1)).is_ok());
        assert!(r.register("123456789", id(0, 1)).is_err());
        assert!(r.register("b", id(0, 1)).is_ok());
        assert!(r.register("c", id(0, 1)).is_ok());
        assert!(
            r.register("c", id(0, 2)).is_ok(),
            "a replacement is no new name"
        );
        assert!(r.register("d", id(0, 1)).is_err());
        for serial in 1..=3 {
            assert!(r.join("g", id(0, serial)).is_ok());
        }
        assert!(r.join("g", id(0, 3)).is_ok(), "already a member");
        assert!(r.join("h", id(0, 1)).is_err());
        r.leave("g", id(0, 1)).unwrap();
        assert!(r.join("h", id(0, 1)).is_ok());
        for topic in ["t", "u", "v"] {
            assert!(r.subscribe(topic, id(0, 1)).is_ok());
        }
        assert!(r.subscribe("v", id(0, 2)).is_ok(), "not a new topic");
        assert!(r.subscribe("w", id(0, 1)).is_err());
    }

    #[test]
    fn groups_and_topics_sync_and_balance() {
        let mut a = Registry::new(NodeId(0));
        let mut b = Registry::new(NodeId(1));
        a.join("echo", id(0, 1)).unwrap();
        a.join("echo", id(0, 2)).unwrap();
        a.subscribe("news", id(0, 3)).unwrap();
        // b learns a's directory from the snapshot.
        b.peer_up(NodeId(0));
        for control in a.peer_up(NodeId(1)) {
            b.on_control(NodeId(0), control).unwrap();
        }
        assert_eq!(b.members("echo"), vec![id(0, 1), id(0, 2)]);
        let picks: Vec<_> = (0..4).map(|_| b.pick_member("echo").unwrap()).collect();
        assert_eq!(picks, [id(0, 1), id(0, 2), id(0, 1), id(0, 2)]);
        assert_eq!(b.interested_nodes("news"), vec![NodeId(0)]);
        // Leaving and the last unsubscription propagate as deltas.
        let effects = a.leave("echo", id(0, 1)).unwrap();
        let effects2 = a.unsubscribe("news", id(0, 3)).unwrap();
        for effect in effects.into_iter().chain(effects2) {
            if let Effect::Send(_, control) = effect {
                b.on_control(NodeId(0), control).unwrap();
            }
        }
        assert_eq!(b.members("echo"), vec![id(0, 2)]);
        assert!(b.interested_nodes("news").is_empty());
        assert_eq!(
            a.unsubscribe("news", id(0, 3)),
            Err(RegistryError::NotSubscribed {
                topic: "news".into()
            })
        );
        assert_eq!(
            a.leave("nope", id(0, 3)),
            Err(RegistryError::NotMember {
                group: "nope".into()
            })
        );
        // Closing a member's mailbox leaves its groups.
        let effects = a.mailbox_closed(id(0, 2));
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::Send(_, Control::Leave { .. }))));
        assert!(a.local_members("echo").is_empty());
        // A node going down takes its members and interest with it.
        b.peer_down(NodeId(0));
        assert!(b.members("echo").is_empty());
    }

    #[test]
    fn claims_for_other_nodes_mailboxes_are_rejected() {
        let mut r = Registry::new(NodeId(0));
        r.peer_up(NodeId(1));
        assert!(r
            .on_control(
                NodeId(1),
                Control::Claim {
                    name: "x".into(),
                    id: id(2, 1)
                }
            )
            .is_err());
        assert_eq!(r.lookup("x"), None);
    }

    #[test]
    fn syncs_complete_on_replies_or_peer_loss() {
        let mut r = Registry::new(NodeId(0));
        let (seq, effects) = r.start_sync();
        assert_eq!(
            effects,
            vec![Effect::SyncDone(seq)],
            "no peers: done at once"
        );
        r.peer_up(NodeId(1));
        r.peer_up(NodeId(2));
        let (seq, effects) = r.start_sync();
        assert_eq!(effects.len(), 2);
        assert!(r
            .on_control(NodeId(1), Control::SyncReply { seq })
            .unwrap()
            .is_empty());
        assert_eq!(r.peer_down(NodeId(2)), vec![Effect::SyncDone(seq)]);
        assert_eq!(r.pending_sync_count(), 0);
    }
}
