//! The node's side of service messaging: routing requests to members,
//! replies back to callers, broadcasts and publications to their receivers.

use std::any::Any;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::SendError;
use crate::id::{MailboxId, NodeId};
use crate::message::Message;

use super::NodeInner;
use crate::node::services::*;

use crate::codec::frame::{self as wire, PublishScope, ReplyStatus};
use crate::node::outbox::Refused;
use crate::poison::lock;
use crate::types::{self, TypeTag};
use bytes::Bytes;

/// A request's time remaining for the wire: whole microseconds, rounded up
/// so that a caller still waiting is never sent as one that gave up, and
/// capped at [`wire::MAX_REMAINING_US`].
fn remaining_micros(remaining: Duration) -> u64 {
    let micros = remaining.as_micros() + u128::from(!remaining.subsec_nanos().is_multiple_of(1000));
    u64::try_from(micros).map_or(wire::MAX_REMAINING_US, |m| m.min(wire::MAX_REMAINING_US))
}

fn encode_registered<T: Any + Serialize>(value: &T) -> Result<(TypeTag, Vec<u8>), SendError> {
    let tag = types::tag_for::<T>()?;
    let mut payload = Vec::new();
    crate::codec::payload::encode(value, &mut payload).map_err(SendError::Encode)?;
    Ok((tag, payload))
}

/// An `Option<Instant>` written under the services lock and read by the
/// core without one: the request tables hand their next deadline to the
/// core this way, so [`Core::poll_timeout`](crate::Core::poll_timeout)
/// takes no lock. Stored as signed nanoseconds from the cell's creation
/// (deadlines of a simulated clock may lie before it).
pub(in crate::node) struct DeadlineCell {
    base: Instant,
    offset_ns: AtomicI64,
}

/// The stored value of an empty cell.
const NO_DEADLINE: i64 = i64::MIN;

impl DeadlineCell {
    pub(in crate::node) fn new() -> DeadlineCell {
        DeadlineCell {
            base: Instant::now(),
            offset_ns: AtomicI64::new(NO_DEADLINE),
        }
    }

    fn set(&self, deadline: Option<Instant>) {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let value = match deadline {
            None => NO_DEADLINE,
            Some(t) if t >= self.base => nanos(t - self.base),
            Some(t) => -nanos(self.base - t),
        };
        self.offset_ns.store(value, Ordering::Release);
    }

    pub(in crate::node) fn get(&self) -> Option<Instant> {
        let value = self.offset_ns.load(Ordering::Acquire);
        if value == NO_DEADLINE {
            None
        } else if value >= 0 {
            Some(self.base + Duration::from_nanos(value as u64))
        } else {
            let back = Duration::from_nanos(value.unsigned_abs());
            Some(self.base.checked_sub(back).unwrap_or(self.base))
        }
    }
}

/// The services lock. Dropping it publishes the tables' next deadline to
/// the node's [`DeadlineCell`], so every change to the tables reaches the
/// core's timer.
pub(in crate::node) struct ServicesGuard<'a> {
    guard: MutexGuard<'a, Services>,
    next: &'a DeadlineCell,
}

impl std::ops::Deref for ServicesGuard<'_> {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.guard
    }
}

impl std::ops::DerefMut for ServicesGuard<'_> {
    fn deref_mut(&mut self) -> &mut Services {
        &mut self.guard
    }
}

impl Drop for ServicesGuard<'_> {
    fn drop(&mut self) {
        self.next.set(self.guard.next_deadline());
    }
}

impl NodeInner {
    /// Locks the request tables.
    pub(in crate::node) fn services(&self) -> ServicesGuard<'_> {
        ServicesGuard {
            guard: lock(&self.services),
            next: &self.request_deadline,
        }
    }

    /// This node's clock: the real one, or a simulated node's virtual one.
    pub(crate) fn now(&self) -> Instant {
        self.services().now()
    }

    /// Puts this node on a virtual clock (the simulator's), now at `now`.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub(crate) fn set_manual_now(&self, now: Instant) {
        self.services().manual_now = Some(now);
    }

    /// Drops requests discarded before they reached their member, counting
    /// them (outside the services lock: dropping a message may take others).
    fn discard(&self, requests: Vec<Request>, expired: bool) {
        if requests.is_empty() {
            return;
        }
        let counter = if expired {
            &self.counters.expired_requests
        } else {
            &self.counters.cancelled_requests
        };
        counter.fetch_add(requests.len() as u64, Ordering::Relaxed);
        drop(requests);
    }

    /// The caller dropped its [`RequestFuture`]: the pending entry goes, and
    /// the request itself is called off wherever it still waits for a slot
    /// (here, or on the member's node with a `Cancelled` frame).
    pub(crate) fn forget_request(&self, corr: u64) {
        let now = self.now();
        let (pending, local) = {
            let mut services = self.services();
            let Some(pending) = services.forget(corr) else {
                return;
            };
            let local = match pending.peer {
                None => services.cancel((None, corr)),
                Some(_) => None,
            };
            (pending, local)
        };
        let expired = pending.deadline <= now;
        if let Some(request) = local {
            self.discard(vec![request], expired);
        }
        if let (Some(peer), false) = (pending.peer, expired) {
            // Best effort: if the link is full or gone, the member's node
            // discards the request at its deadline anyway.
            let _ = self.send_reply_frame(peer, corr, ReplyStatus::Cancelled, TypeTag(0), &[]);
        }
    }

    pub(crate) fn complete_request(
        &self,
        corr: u64,
        from: Option<NodeId>,
        result: Result<Message, RequestError>,
    ) {
        let completed = {
            let mut services = self.services();
            let now = services.now();
            services.complete(corr, from, result, now)
        };
        if !completed {
            self.counters.late_replies.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The earliest deadline of the request tables, without a lock.
    pub(crate) fn next_request_deadline(&self) -> Option<Instant> {
        self.request_deadline.get()
    }

    /// Times out pending requests and discards queued ones whose deadline
    /// has passed.
    pub(crate) fn expire_requests(&self, now: Instant) {
        let mut expired = Vec::new();
        {
            let mut services = self.services();
            services.expire(now);
            services.sweep(now, &mut expired);
        }
        self.discard(expired, true);
    }

    /// The member's node of requests from `peer` lost it: requests still
    /// waiting on `peer` fail, and `peer`'s requests queued here go.
    pub(crate) fn requests_peer_down(&self, peer: NodeId) {
        let orphans = {
            let mut services = self.services();
            services.peer_down(peer);
            services.cancel_from(peer)
        };
        self.discard(orphans, false);
    }

    /// A member's mailbox closed: its queued requests answer their callers
    /// (`Abandoned`) and its limits go.
    pub(crate) fn drop_gate(&self, id: MailboxId) {
        let orphans = self.services().drop_gate(id);
        drop(orphans);
    }

    /// A request of `member` was answered or dropped: the next queued one
    /// that its caller still waits for takes the slot.
    pub(in crate::node) fn release_slot(
        &self,
        member: MailboxId,
        mailbox: &Weak<crate::mailbox::MailboxShared>,
    ) {
        let now = self.now();
        let mut expired = Vec::new();
        let next = self.services().release(member, now, &mut expired);
        self.discard(expired, true);
        let Some(next) = next else {
            return;
        };
        match mailbox.upgrade() {
            // On failure the request drops and answers for itself
            // (Abandoned), releasing its slot again.
            Some(mailbox) if !mailbox.is_closed() => {
                let _ = mailbox.push(Message::local(next));
            }
            _ => {
                let orphans = self.services().drop_gate(member);
                drop(next);
                drop(orphans);
            }
        }
    }

    /// The limits gate of a local member or subscriber.
    pub(crate) fn set_gate(&self, id: MailboxId, limits: Limits) {
        self.services().set_gate(id, limits);
    }

    /// Sends a member's answer back to the caller's node.
    pub(crate) fn send_reply(
        &self,
        peer: NodeId,
        corr: u64,
        answer: RemoteAnswer<'_>,
    ) -> Result<(), SendError> {
        let (status, tag, payload) = match answer {
            RemoteAnswer::Value(value) => {
                let tag = types::tag_of(value.type_id_of()).ok_or(SendError::Unregistered {
                    type_name: value.type_name_of(),
                })?;
                let mut payload = Vec::new();
                value.encode(&mut payload).map_err(SendError::Encode)?;
                (ReplyStatus::Ok, tag, payload)
            }
            RemoteAnswer::Error(e) => (
                ReplyStatus::RemoteError,
                TypeTag(0),
                crate::codec::payload::to_vec(&e),
            ),
            RemoteAnswer::Abandoned => (ReplyStatus::Dropped, TypeTag(0), Vec::new()),
        };
        self.send_reply_frame(peer, corr, status, tag, &payload)
    }

    fn send_reply_frame(
        &self,
        peer: NodeId,
        corr: u64,
        status: ReplyStatus,
        tag: TypeTag,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let Some(outbox) = self.network().outbox(peer) else {
            return Ok(());
        };
        let framed = payload.len() + 22;
        match self
            .network()
            .push_frame(outbox, framed, true, true, |out| {
                wire::put_reply_header(out, corr, status, tag, payload.len());
                out.extend_from_slice(payload);
            }) {
            Ok(()) => Ok(()),
            // The caller's node is gone: it fails the request itself.
            Err(Refused::Unreachable) => Ok(()),
            Err(Refused::Full) => Err(SendError::Full),
        }
    }

    /// Puts a request in a member's mailbox, within the member's limits:
    /// at once, after a wait for a handler slot, or (its deadline passed
    /// first) never. `Ok` unless refused before it was taken.
    fn deliver_request(
        &self,
        dest: MailboxId,
        message: Message,
        route: Route,
        deadline: Instant,
        caller: Caller,
        now: Instant,
    ) -> Result<(), (ReplyStatus, String)> {
        let Some(mailbox) = self.local_mailbox(dest) else {
            return Err((ReplyStatus::NoMember, String::new()));
        };
        let len = message.byte_len();
        let mut request = Request::new(message, route, deadline);
        request.responder.slot = Some(Box::new(Slot {
            node: self.weak(),
            member: dest,
            mailbox: Arc::downgrade(&mailbox),
        }));
        let mut expired = Vec::new();
        let admitted = {
            let mut services = self.services();
            // Nodes without a core (local-only) have no timer: requests
            // whose time is up go here as well.
            services.sweep(now, &mut expired);
            services.admit(dest, request, len, mailbox.queued_bytes(), caller, now)
        };
        self.discard(expired, true);
        match admitted {
            Admit::Deliver(request) => {
                // On failure the request drops and answers for itself
                // (Abandoned), releasing its slot.
                let _ = mailbox.push(Message::local(request));
                Ok(())
            }
            Admit::Queued => Ok(()),
            Admit::Expired(request) => {
                self.discard(vec![request], true);
                Ok(())
            }
            Admit::Refused(why) => {
                self.counters
                    .refused_requests
                    .fetch_add(1, Ordering::Relaxed);
                Err((ReplyStatus::Refused, why))
            }
        }
    }

    /// A request frame from `peer`, received at `now`, its caller waiting
    /// `remaining_us` more microseconds when it was sent.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_request_frame(
        &self,
        now: Instant,
        peer: NodeId,
        dest: MailboxId,
        corr: u64,
        tag: TypeTag,
        remaining_us: u64,
        payload: Bytes,
        charge: Option<crate::node::outbox::Charge>,
    ) {
        // The request's span on the member's node (inside the connection's).
        let span = tracing::debug_span!("request", from = peer.0, corr);
        let _entered = span.enter();
        if !types::is_registered_tag(tag) {
            let why = format!(
                "request type {:#018x} is not registered on node {}",
                tag.0, self.id.0
            );
            let body = crate::codec::payload::to_vec(&why);
            let _ = self.send_reply_frame(peer, corr, ReplyStatus::RemoteError, TypeTag(0), &body);
            return;
        }
        let remaining = Duration::from_micros(remaining_us.min(wire::MAX_REMAINING_US));
        let deadline = now.checked_add(remaining).unwrap_or(now);
        let message = Message::remote(tag, payload, self.weak()).charged(charge);
        let route = Route::Remote {
            node: self.weak(),
            peer,
            corr,
        };
        if let Err((status, why)) =
            self.deliver_request(dest, message, route, deadline, (Some(peer), corr), now)
        {
            // The dropped Request already answered `Dropped` if it got that far;
            // a refusal before that is answered here.
            let body = if why.is_empty() {
                Vec::new()
            } else {
                crate::codec::payload::to_vec(&why)
            };
            let _ = self.send_reply_frame(peer, corr, status, TypeTag(0), &body);
        }
    }

    /// A reply frame from `peer`.
    pub(crate) fn on_reply_frame(
        &self,
        peer: NodeId,
        corr: u64,
        status: ReplyStatus,
        tag: TypeTag,
        payload: Bytes,
    ) {
        let text = || crate::codec::payload::decode::<String>(&payload).unwrap_or_default();
        let result = match status {
            ReplyStatus::Ok => Ok(Message::remote(tag, payload.clone(), self.weak())),
            ReplyStatus::RemoteError => Err(RequestError::Remote(text())),
            ReplyStatus::Refused => Err(RequestError::Refused(text())),
            ReplyStatus::NoMember => Err(RequestError::NoMember),
            ReplyStatus::Dropped => Err(RequestError::Abandoned),
            ReplyStatus::Cancelled => {
                // `corr` is the caller's (`peer`'s): it gave up.
                let called_off = self.services().cancel((Some(peer), corr));
                self.discard(called_off.into_iter().collect(), false);
                return;
            }
        };
        self.complete_request(corr, Some(peer), result);
    }

    /// Starts a request; see [`Node::request`](crate::Node::request).
    pub(crate) fn request<T: Any + Send + Serialize>(
        &self,
        target: Target<'_>,
        value: T,
        deadline: Instant,
    ) -> RequestFuture {
        if self.is_shutting_down() {
            return RequestFuture::failed(RequestError::Closed);
        }
        let dest = match target {
            Target::Address(address) => address.id(),
            Target::Service(service) => match self.registry().pick_member(service) {
                Some(id) => id,
                None => return RequestFuture::failed(RequestError::NoMember),
            },
        };
        let slot = Arc::new(ReplySlot::default());
        let local = dest.node == self.id;
        let (now, corr) = {
            let mut services = self.services();
            let now = services.now();
            if deadline <= now {
                return RequestFuture::failed(RequestError::Timeout);
            }
            let corr = services.begin(slot.clone(), (!local).then_some(dest.node), deadline);
            (now, corr)
        };
        let future = RequestFuture {
            slot,
            node: self.weak(),
            corr: Some(corr),
        };
        // Re-arm the core's timer for the new deadline, unless the driver
        // already sleeps until before it (no wake-up per request).
        self.network().wake.notify_deadline(deadline);
        if local {
            let route = Route::Local {
                node: self.weak(),
                corr,
            };
            let caller = (None, corr);
            if let Err((status, why)) =
                self.deliver_request(dest, Message::local(value), route, deadline, caller, now)
            {
                let error = match status {
                    ReplyStatus::Refused => RequestError::Refused(why),
                    _ => RequestError::NoMember,
                };
                self.complete_request(corr, None, Err(error));
            }
            return future;
        }
        let sent = encode_registered(&value).and_then(|(tag, payload)| {
            if payload.len() + 64 > self.network().max_frame_len {
                return Err(SendError::TooLarge {
                    len: payload.len(),
                    max: self.network().max_frame_len - 64,
                });
            }
            let Some(outbox) = self.network().outbox(dest.node) else {
                return Err(SendError::Closed);
            };
            let framed = payload.len() + wire::LEN_PREFIX + 1 + wire::REQUEST_HEADER_BODY_LEN;
            let remaining_us = remaining_micros(deadline.saturating_duration_since(now));
            // In the destination mailbox's lane: after earlier sends to it.
            self.network()
                .push_frame_to(outbox, Some(dest), framed, true, true, |out| {
                    wire::put_request_header(out, dest, corr, tag, remaining_us, payload.len());
                    out.extend_from_slice(&payload);
                })
                .map_err(|refused| match refused {
                    Refused::Unreachable => SendError::Closed,
                    Refused::Full => SendError::Full,
                })
        });
        match sent {
            Ok(()) => {}
            Err(SendError::Closed) => {
                self.complete_request(corr, Some(dest.node), Err(RequestError::Unreachable))
            }
            Err(e) => self.complete_request(corr, Some(dest.node), Err(RequestError::Send(e))),
        }
        future
    }

    /// Delivers a broadcast or publication to the local members or
    /// subscribers, each within its byte limit.
    pub(crate) fn fan_out(
        &self,
        scope: PublishScope,
        name: &str,
        tag: TypeTag,
        payload: &Bytes,
        budget: Option<&Arc<crate::node::outbox::RecvBudget>>,
    ) {
        let receivers = {
            let registry = self.registry();
            match scope {
                PublishScope::Group => registry.local_members(name),
                PublishScope::Topic => registry.local_subscribers(name),
            }
        };
        for id in receivers {
            let Some(mailbox) = self.local_mailbox(id) else {
                continue;
            };
            let over = self.services().limits(id).is_some_and(|limits| {
                mailbox.queued_bytes() + payload.len() > limits.max_queued_bytes
            });
            let charge = budget.map(|b| b.charge(payload.len()));
            let delivered = !over
                && mailbox
                    .push(Message::remote(tag, payload.clone(), self.weak()).charged(charge))
                    .is_ok();
            if !delivered {
                self.counters.dropped_events.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A publish frame from a peer.
    pub(crate) fn on_publish_frame(
        &self,
        peer: NodeId,
        scope: PublishScope,
        name: &[u8],
        tag: TypeTag,
        payload: Bytes,
        budget: Option<Arc<crate::node::outbox::RecvBudget>>,
    ) {
        let Ok(name) = std::str::from_utf8(name) else {
            tracing::warn!(
                node = self.id.0,
                peer = peer.0,
                "dropping a publication whose name is not UTF-8"
            );
            self.counters.dropped_events.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !types::is_registered_tag(tag) {
            tracing::warn!(
                node = self.id.0,
                peer = peer.0,
                name,
                "dropping a publication of an unregistered type"
            );
            self.counters
                .dropped_unknown_type
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.fan_out(scope, name, tag, &payload, budget.as_ref());
    }

    /// Broadcasts or publishes: encoded once, fanned out locally, and sent
    /// once to every other node with receivers.
    pub(crate) fn publish<T: Any + Serialize>(
        &self,
        scope: PublishScope,
        name: &str,
        value: &T,
    ) -> Result<(), SendError> {
        if self.is_shutting_down() {
            return Err(SendError::NodeShutdown);
        }
        let (tag, payload) = encode_registered(value)?;
        let framed = payload.len() + name.len() + 16;
        if framed > self.network().max_frame_len {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max: self.network().max_frame_len.saturating_sub(name.len() + 16),
            });
        }
        let payload = Bytes::from(payload);
        self.fan_out(scope, name, tag, &payload, None);
        let nodes = {
            let registry = self.registry();
            match scope {
                PublishScope::Group => registry.member_nodes(name),
                PublishScope::Topic => registry.interested_nodes(name),
            }
        };
        for node in nodes {
            let Some(outbox) = self.network().outbox(node) else {
                continue;
            };
            let pushed = self
                .network()
                .push_frame(outbox, framed, true, true, |out| {
                    wire::put_publish_header(out, scope, tag, name, payload.len());
                    out.extend_from_slice(&payload);
                });
            if pushed.is_err() {
                self.counters.dropped_events.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}
