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
//! Conflicts: when a name has claimants on more than one node, each node
//! tells its *own* claimant with [`MultipleClaim`](crate::MultipleClaim),
//! once per conflict, however the conflict appeared (a local claim, a remote
//! claim, a snapshot after a partition healed). Every claimant's own node
//! sees the conflict, so every claimant is told.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::control::Control;
use crate::id::{MailboxId, NodeId};

/// Longest name that may be registered, in bytes.
pub const MAX_NAME_LEN: usize = 4096;

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
    /// Every peer has acknowledged the sync with this sequence number.
    SyncDone(u64),
}

/// Why a directory change was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// One node's view of the cluster's names.
#[derive(Debug)]
pub struct Registry {
    me: NodeId,
    local: BTreeMap<String, MailboxId>,
    local_by_id: HashMap<MailboxId, BTreeSet<String>>,
    remote: BTreeMap<String, BTreeMap<NodeId, MailboxId>>,
    connected: BTreeSet<NodeId>,
    /// Names whose current conflict the local claimant has been told about.
    conflicted: BTreeSet<String>,
    round_robin: HashMap<String, usize>,
    groups: BTreeMap<String, BTreeSet<MailboxId>>,
    member_of: HashMap<MailboxId, BTreeSet<String>>,
    remote_groups: BTreeMap<String, BTreeMap<NodeId, BTreeSet<MailboxId>>>,
    group_turns: HashMap<String, usize>,
    topics: BTreeMap<String, BTreeSet<MailboxId>>,
    subscribed_to: HashMap<MailboxId, BTreeSet<String>>,
    topic_interest: BTreeMap<String, BTreeSet<NodeId>>,
    multiple_claims: u64,
    next_sync: u64,
    pending_syncs: BTreeMap<u64, BTreeSet<NodeId>>,
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
    /// `MultipleClaim` notifications sent by this node.
    pub multiple_claims: u64,
    /// Syncs waiting for acknowledgements.
    pub pending_syncs: usize,
}

impl Registry {
    /// An empty registry for node `me`.
    pub fn new(me: NodeId) -> Registry {
        Registry {
            me,
            local: BTreeMap::new(),
            local_by_id: HashMap::new(),
            remote: BTreeMap::new(),
            connected: BTreeSet::new(),
            conflicted: BTreeSet::new(),
            round_robin: HashMap::new(),
            groups: BTreeMap::new(),
            member_of: HashMap::new(),
            remote_groups: BTreeMap::new(),
            group_turns: HashMap::new(),
            topics: BTreeMap::new(),
            subscribed_to: HashMap::new(),
            topic_interest: BTreeMap::new(),
            multiple_claims: 0,
            next_sync: 1,
            pending_syncs: BTreeMap::new(),
        }
    }

    fn broadcast(&self, control: Control, effects: &mut Vec<Effect>) {
        for &peer in &self.connected {
            effects.push(Effect::Send(peer, control.clone()));
        }
    }

    /// Re-evaluates the conflict state of `name`, telling the local claimant
    /// when a conflict begins.
    fn check_conflict(&mut self, name: &str, effects: &mut Vec<Effect>) {
        let local = self.local.get(name).copied();
        let remote_claims = self.remote.get(name).is_some_and(|m| !m.is_empty());
        match local {
            Some(claimant) if remote_claims => {
                if self.conflicted.insert(name.to_owned()) {
                    self.multiple_claims += 1;
                    effects.push(Effect::MultipleClaim {
                        name: name.to_owned(),
                        claimant,
                    });
                }
            }
            _ => {
                self.conflicted.remove(name);
            }
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
        if name.len() > MAX_NAME_LEN {
            return Err(RegistryError::CantRegister {
                reason: "the name is longer than 4096 bytes",
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
            // A new claimant is a new party to any conflict.
            self.conflicted.remove(name);
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
        if self.groups.entry(group.to_owned()).or_default().insert(id) {
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
        if name.len() > MAX_NAME_LEN {
            return Err(RegistryError::CantRegister {
                reason: "the name is longer than 4096 bytes",
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

    fn remote_claim(&mut self, peer: NodeId, name: String, id: MailboxId) -> Result<(), String> {
        if id.node != peer {
            return Err(format!(
                "node {} claimed {name:?} for {id:?}, a mailbox of another node",
                peer.0
            ));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(format!(
                "node {} claimed a name of {} bytes",
                peer.0,
                name.len()
            ));
        }
        self.remote.entry(name).or_default().insert(peer, id);
        Ok(())
    }

    /// Applies a registry control message from a connected peer. `Err`
    /// means the peer broke the protocol (the claim is ignored).
    pub fn on_control(&mut self, peer: NodeId, control: Control) -> Result<Vec<Effect>, String> {
        let mut effects = Vec::new();
        match control {
            Control::Snapshot { deltas, .. } => {
                let mut first_error = None;
                for delta in deltas {
                    let result = match delta {
                        Control::Claim { .. } | Control::Join { .. } | Control::Interest { .. } => {
                            self.on_control(peer, delta)
                        }
                        other => Err(format!("{other:?} inside a snapshot")),
                    };
                    match result {
                        Ok(more) => effects.extend(more),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                if let Some(e) = first_error {
                    return Err(e);
                }
            }
            Control::Join { group, id } => {
                if id.node != peer {
                    return Err(format!(
                        "node {} added {id:?}, a mailbox of another node, to service {group:?}",
                        peer.0
                    ));
                }
                self.remote_groups
                    .entry(group)
                    .or_default()
                    .entry(peer)
                    .or_default()
                    .insert(id);
            }
            Control::Leave { group, id } => {
                if let Some(members) = self.remote_groups.get_mut(&group) {
                    if let Some(of_peer) = members.get_mut(&peer) {
                        of_peer.remove(&id);
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
                    self.topic_interest.entry(topic).or_default().insert(peer);
                } else if let Some(nodes) = self.topic_interest.get_mut(&topic) {
                    nodes.remove(&peer);
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
            other => return Err(format!("not a registry message: {other:?}")),
        }
        Ok(effects)
    }

    /// Starts a sync: every connected peer is asked to acknowledge once it
    /// has applied everything this node sent before. Returns the sequence
    /// number and the requests to send (none if no peer is connected, in
    /// which case the sync is already done).
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

    /// The claimant to use for `name`: the local one if any, otherwise the
    /// remote claimants in turn (round-robin per name, deterministic).
    pub fn lookup(&mut self, name: &str) -> Option<MailboxId> {
        if let Some(id) = self.local.get(name) {
            return Some(*id);
        }
        let claims = self.remote.get(name)?;
        let turn = self.round_robin.entry(name.to_owned()).or_insert(0);
        let id = claims.values().nth(*turn % claims.len()).copied();
        *turn = turn.wrapping_add(1);
        id
    }

    /// Every claimant of `name`, local first.
    pub fn lookup_all(&self, name: &str) -> Vec<MailboxId> {
        let mut all: Vec<MailboxId> = self.local.get(name).copied().into_iter().collect();
        if let Some(claims) = self.remote.get(name) {
            all.extend(claims.values().copied());
        }
        all
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

    /// `MultipleClaim` notifications sent so far.
    pub fn multiple_claim_count(&self) -> u64 {
        self.multiple_claims
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
            multiple_claims: self.multiple_claims,
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
            vec![Effect::MultipleClaim {
                name: "svc".into(),
                claimant: id(0, 1)
            }]
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
        assert_eq!(r.multiple_claim_count(), 1);
        // The conflict ends and begins again (a partition heals): told again.
        r.peer_down(NodeId(1));
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
        assert_eq!(effects.len(), 1);
        assert_eq!(r.multiple_claim_count(), 2);
    }

    #[test]
    fn lookups_prefer_local_then_round_robin() {
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
        assert_eq!(picks, [1, 2, 1, 2]);
        r.register("svc", id(0, 9)).unwrap();
        assert_eq!(r.lookup("svc"), Some(id(0, 9)));
        assert_eq!(r.lookup_all("svc").len(), 3);
        assert_eq!(r.seen_names(&["svc", "nope"]), vec![true, false]);
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
