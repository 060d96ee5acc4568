//! The node's side of the registry: it carries out the effects the pure
//! [`Registry`](crate::registry::Registry) returns, and keeps the book of
//! completed syncs that [`SyncFuture`](crate::SyncFuture)s wait on.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::poison::lock;

use crate::close::CloseReason;
use crate::control::Control;
use crate::id::{MailboxId, NodeId};
use crate::node::address::Address;
use crate::node::NodeInner;
use crate::registry::{Effect, PeerError, Registry, RegistryError, RegistryLimits};
use crate::system::MultipleClaim;

/// Completed registry syncs and the tasks waiting for them.
#[derive(Default)]
pub(in crate::node) struct SyncBook {
    pub(in crate::node) done: BTreeSet<u64>,
    pub(in crate::node) waiting: BTreeMap<u64, Waker>,
}

impl NodeInner {
    /// Handles a registry message of a peer: its effects' frames go to
    /// `out`; a rejected claim is counted and ignored; a peer over a
    /// registry cap is cut off (`Err`).
    pub(in crate::node) fn on_registry_control(
        &self,
        peer: NodeId,
        registry_message: Control,
        out: &mut Vec<(NodeId, Control)>,
    ) -> Result<(), CloseReason> {
        let result = lock(&self.registry).on_control(peer, registry_message);
        match result {
            Ok(effects) => self.apply_into(effects, out),
            Err(PeerError::Rejected(e)) => {
                // The claim is ignored; the connection carries on.
                self.counters
                    .rejected_claims
                    .fetch_add(1, Ordering::Relaxed);
                // DEBUG: a peer can repeat this at will; the core
                // logs a summary per interval.
                tracing::debug!(node = self.id.0, peer = peer.0, error = %e, "rejected a registry message");
            }
            Err(PeerError::OverLimit(e)) => {
                // Cut off: the core closes the link with this reason
                // (its one log line), and `peer_down` drops
                // everything the peer held here.
                self.counters
                    .registry_cutoffs
                    .fetch_add(1, Ordering::Relaxed);
                return Err(CloseReason::RegistryCap(e.to_string()));
            }
        }
        Ok(())
    }

    /// The id of `address` if it is a live mailbox of this node: only
    /// those may claim a name, join a group or subscribe.
    pub(crate) fn check_own_live(&self, address: &Address) -> Result<MailboxId, RegistryError> {
        let id = address.id();
        if self.local_mailbox(id).is_some_and(|m| !m.is_closed()) {
            Ok(id)
        } else {
            Err(RegistryError::CantRegister {
                reason: if id.node == self.id {
                    "the mailbox is closed or from an earlier start of this node"
                } else {
                    "the mailbox belongs to another node"
                },
            })
        }
    }

    /// Starts a registry sync; the future completes when every connected
    /// peer has answered it.
    pub(in crate::node) fn start_sync(self: &Arc<Self>) -> SyncFuture {
        let (seq, effects) = lock(&self.registry).start_sync();
        self.apply(effects);
        SyncFuture {
            node: self.clone(),
            seq,
        }
    }

    /// Carries out what the registry asked for, on a user thread: frames
    /// for peers are queued for the core (which is woken).
    pub(in crate::node) fn apply(&self, effects: Vec<Effect>) {
        self.apply_with(effects, |peer, control| self.queue_control(peer, &control));
    }

    /// Carries out what the registry asked for, on the core's path: frames
    /// for peers are pushed to `out`, for the core to send.
    pub(crate) fn apply_into(&self, effects: Vec<Effect>, out: &mut Vec<(NodeId, Control)>) {
        self.apply_with(effects, |peer, control| out.push((peer, control)));
    }

    /// Carries out `effects`, handing each frame for a peer to `send`.
    fn apply_with(&self, effects: Vec<Effect>, mut send: impl FnMut(NodeId, Control)) {
        for effect in effects {
            match effect {
                Effect::Send(peer, control) => send(peer, control),
                Effect::MultipleClaim { name, claimant } => {
                    self.counters
                        .multiple_claim_notices
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = self.bind(claimant).send(MultipleClaim { name });
                }
                Effect::NameConflict { name, claimants } => {
                    self.counters.name_conflicts.fetch_add(1, Ordering::Relaxed);
                    let winner = claimants[0];
                    let others = &claimants[1..];
                    tracing::warn!(
                        node = self.id.0,
                        name = %name.escape_debug(),
                        winner = %winner,
                        others = ?others,
                        "a name is claimed by more than one mailbox: every node resolves it to the lowest id"
                    );
                }
                Effect::SyncDone(seq) => {
                    let mut book = lock(&self.syncs);
                    book.done.insert(seq);
                    if let Some(waker) = book.waiting.remove(&seq) {
                        drop(book);
                        waker.wake();
                    }
                }
            }
        }
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// Sets the registry caps (from the node's `Tuning`).
    pub(crate) fn set_registry_limits(&self, limits: RegistryLimits) {
        lock(&self.registry).set_limits(limits);
    }
}

/// The future of [`Node::sync`](crate::Node::sync).
#[must_use = "futures do nothing unless polled"]
pub struct SyncFuture {
    node: Arc<NodeInner>,
    seq: u64,
}

impl SyncFuture {
    /// Whether the sync has completed (for callers that poll by hand, such
    /// as simulations).
    pub fn is_done(&self) -> bool {
        lock(&self.node.syncs).done.contains(&self.seq)
    }
}

impl Future for SyncFuture {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut book = lock(&self.node.syncs);
        if book.done.remove(&self.seq) {
            return Poll::Ready(());
        }
        book.waiting.insert(self.seq, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SyncFuture {
    fn drop(&mut self) {
        let mut book = lock(&self.node.syncs);
        book.done.remove(&self.seq);
        book.waiting.remove(&self.seq);
    }
}
