//! Service messaging: request/reply to one member of a service group,
//! broadcast to every member, publish/subscribe on topics, and the limits
//! that keep a busy member from drowning.
//!
//! A service group is a name in the directory ([`Registry`](crate::registry::Registry))
//! with any number of member mailboxes on any nodes; membership syncs like
//! every other directory entry. Every failure is its own typed error
//! ([`RequestError`]): the fabric reign learns from reported nearly every
//! failure as a timeout.
//!
//! A request carries its caller's deadline, on the wire as the time remaining
//! (the nodes' clocks need not agree). A request still waiting for one of
//! its member's handler slots when that runs out is discarded unrun; a
//! caller that gives up early (drops its future) calls its request off the
//! same way, across nodes with a `Cancelled` reply frame. This module owns
//! both sides' tables: replies a node waits for, and requests queued for its
//! members; [`Node::request_tables`](crate::Node::request_tables) shows them.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::SendError;
use crate::id::{MailboxId, NodeId};
use crate::node::address::Address;
use crate::node::message::Message;
use crate::node::NodeInner;
use crate::poison::lock;

/// Caps on one service member or subscriber.
///
/// A member holds at most `max_in_flight` unanswered requests in its
/// mailbox (its "handlers", as in Iris); further requests wait in the
/// member's node, in order, and move into the mailbox as answers go out.
/// When a request would take the bytes waiting for a member (backlog and
/// mailbox together) over `max_queued_bytes`, the member's node refuses it
/// at once with [`RequestError::Refused`]: nothing is dropped silently.
/// A waiting request whose caller's deadline passes, or whose caller gives
/// up, leaves the backlog unrun (counted in
/// [`NodeStats::expired_requests`](crate::NodeStats::expired_requests) and
/// [`NodeStats::cancelled_requests`](crate::NodeStats::cancelled_requests)).
/// A broadcast or publication that would take a receiver's mailbox over
/// `max_queued_bytes` is dropped for that receiver and counted in
/// [`NodeStats::dropped_events`](crate::NodeStats::dropped_events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Requests delivered to the member and not yet answered.
    pub max_in_flight: usize,
    /// Bytes waiting in the member's or subscriber's mailbox.
    pub max_queued_bytes: usize,
}

/// Requests a member holds unanswered by default: Iris's 4 handlers per
/// core on a 2-core machine. A constant, not the host's core count, so a
/// node (and a simulation seed) behaves the same on every machine; see
/// [`Limits::per_core`] for Iris's scaling.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;

/// Bytes waiting for one member or subscriber by default (Iris's 64 MiB).
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 << 20;

impl Default for Limits {
    /// [`DEFAULT_MAX_IN_FLIGHT`] and [`DEFAULT_MAX_QUEUED_BYTES`].
    fn default() -> Limits {
        Limits {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
        }
    }
}

impl Limits {
    /// Iris's own defaults on this machine: 4 handlers per core (as the
    /// operating system reports cores) and 64 MiB queued. Reads the host,
    /// so it is never a default of the core; pass it to
    /// [`Node::join_with_limits`](crate::Node::join_with_limits) to get it.
    pub fn per_core() -> Limits {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Limits {
            max_in_flight: 4 * cores,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
        }
    }
}

/// Who asked: the caller's node (`None`: this node) and the correlation id
/// it chose. Lets the caller's node call off a request it no longer waits for.
pub(in crate::node) type Caller = (Option<NodeId>, u64);

/// A request waiting in its member's node for a handler slot.
struct Queued {
    request: Request,
    len: usize,
    deadline: Instant,
    caller: Caller,
}

/// The accounting of one member or subscriber mailbox, kept in
/// [`Services`] under the node's services lock.
pub(crate) struct Gate {
    pub(crate) limits: Limits,
    /// Requests in the mailbox or being answered (handler slots in use).
    in_flight: usize,
    /// Requests waiting for a slot, in arrival order (keyed by ticket).
    backlog: BTreeMap<u64, Queued>,
    backlog_bytes: usize,
}

impl Gate {
    fn new(limits: Limits) -> Gate {
        Gate {
            limits,
            in_flight: 0,
            backlog: BTreeMap::new(),
            backlog_bytes: 0,
        }
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("limits", &self.limits)
            .field("in_flight", &self.in_flight)
            .field("queued", &self.backlog.len())
            .finish()
    }
}

/// What became of a request offered to its member.
pub(in crate::node) enum Admit {
    /// Goes into the mailbox now (holding a slot if the member has limits).
    Deliver(Request),
    /// Waits for a slot.
    Queued,
    /// Over the member's byte limit: answered at once.
    Refused(String),
    /// Its deadline has passed: discarded unanswered.
    Expired(Request),
}

/// The tables of a node's requests, as [`Node::request_tables`](crate::Node::request_tables) reports
/// them: all zero on an idle node, whatever callers gave up on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestTables {
    /// Requests this node sent that wait for a reply (the caller's side).
    pub pending: usize,
    /// Entries of the pending requests' deadline index.
    pub pending_deadlines: usize,
    /// Requests waiting on this node for a handler slot of a local member.
    pub queued: usize,
    /// Payload bytes of the queued requests.
    pub queued_bytes: usize,
    /// Entries of the queued requests' deadline and caller indexes.
    pub queue_index: usize,
    /// Handler slots in use: requests in members' mailboxes or being
    /// answered.
    pub in_flight: usize,
}

/// Why a request failed. Each failure has its own variant.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// The service group has no member, or the addressed mailbox does not
    /// exist.
    NoMember,
    /// The member is over its limits; returned at once.
    Refused(String),
    /// No reply arrived in time.
    Timeout,
    /// The member answered with an application error.
    Remote(String),
    /// The member dropped the request without answering.
    Abandoned,
    /// The member's node became unreachable before it answered.
    Unreachable,
    /// The caller's node shut down.
    Closed,
    /// The request could not be sent (unregistered type, full queue, …).
    Send(SendError),
    /// A typed call's reply is not of the call's reply type (the member
    /// answered with another type, or a payload that does not decode).
    UnexpectedReply {
        /// The call's reply type.
        expected: &'static str,
        /// The type the reply holds, as registered.
        found: &'static str,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NoMember => {
                write!(f, "the service has no member (or the mailbox is gone)")
            }
            RequestError::Refused(why) => write!(f, "the member refused the request: {why}"),
            RequestError::Timeout => write!(f, "no reply arrived in time"),
            RequestError::Remote(e) => write!(f, "the member answered with an error: {e}"),
            RequestError::Abandoned => write!(f, "the member dropped the request without replying"),
            RequestError::Unreachable => write!(f, "the member's node became unreachable"),
            RequestError::Closed => write!(f, "the node shut down"),
            RequestError::Send(e) => write!(f, "the request could not be sent: {e}"),
            RequestError::UnexpectedReply { expected, found } => {
                write!(f, "the reply holds {found}, not the expected {expected}")
            }
        }
    }
}

/// [`RequestError::Send`] exposes the [`SendError`] it wraps.
impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::Send(e) => Some(e),
            _ => None,
        }
    }
}

impl From<SendError> for RequestError {
    fn from(e: SendError) -> RequestError {
        match e {
            SendError::NodeShutdown => RequestError::Closed,
            e => RequestError::Send(e),
        }
    }
}

/// Whom a request or tunnel goes to.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// One member of this service group (local preferred, else in turn).
    Service(&'a str),
    /// This mailbox.
    Address(&'a Address),
}

impl<'a> From<&'a str> for Target<'a> {
    fn from(service: &'a str) -> Target<'a> {
        Target::Service(service)
    }
}

impl<'a> From<&'a String> for Target<'a> {
    fn from(service: &'a String) -> Target<'a> {
        Target::Service(service)
    }
}

impl<'a> From<&'a Address> for Target<'a> {
    fn from(address: &'a Address) -> Target<'a> {
        Target::Address(address)
    }
}

/// Where a request's answer completes.
#[derive(Default)]
pub(crate) struct ReplySlot {
    inner: Mutex<SlotInner>,
}

#[derive(Default)]
struct SlotInner {
    result: Option<Result<Message, RequestError>>,
    waker: Option<Waker>,
}

impl ReplySlot {
    fn lock(&self) -> MutexGuard<'_, SlotInner> {
        lock(&self.inner)
    }

    pub(crate) fn complete(&self, result: Result<Message, RequestError>) {
        let mut inner = self.lock();
        if inner.result.is_none() {
            inner.result = Some(result);
            if let Some(waker) = inner.waker.take() {
                drop(inner);
                waker.wake();
            }
        }
    }
}

pub(in crate::node) struct Pending {
    pub(in crate::node) slot: Arc<ReplySlot>,
    /// The member's node, if remote: its loss fails the request.
    pub(in crate::node) peer: Option<NodeId>,
    pub(in crate::node) deadline: Instant,
}

/// Request bookkeeping of one node: the caller's side (pending replies and
/// their deadlines) and the member's side (the gates of local members, the
/// requests queued there, indexed by deadline and by caller so that a
/// request nobody waits for any more gives its place back).
#[derive(Default)]
pub(crate) struct Services {
    next_corr: u64,
    pending: HashMap<u64, Pending>,
    deadlines: BTreeSet<(Instant, u64)>,
    gates: HashMap<MailboxId, Gate>,
    next_ticket: u64,
    /// Every queued request as (deadline, member, ticket).
    queue_deadlines: BTreeSet<(Instant, MailboxId, u64)>,
    /// Every queued request by its caller.
    queued_by_caller: HashMap<Caller, (MailboxId, u64)>,
    /// The virtual clock of a simulated node; `None`: the real clock.
    pub(in crate::node) manual_now: Option<Instant>,
}

impl Services {
    /// Registers a new pending request; returns its correlation id.
    pub(crate) fn begin(
        &mut self,
        slot: Arc<ReplySlot>,
        peer: Option<NodeId>,
        deadline: Instant,
    ) -> u64 {
        self.next_corr += 1;
        let corr = self.next_corr;
        self.pending.insert(
            corr,
            Pending {
                slot,
                peer,
                deadline,
            },
        );
        self.deadlines.insert((deadline, corr));
        corr
    }

    /// Completes a pending request; `false` if it is no longer pending or
    /// its deadline has passed (a late reply: the caller gets `Timeout`,
    /// also on a node without a core to time it out).
    pub(crate) fn complete(
        &mut self,
        corr: u64,
        from: Option<NodeId>,
        result: Result<Message, RequestError>,
        now: Instant,
    ) -> bool {
        match self.pending.get(&corr) {
            Some(p) if p.peer == from => {}
            _ => return false,
        }
        let pending = self.pending.remove(&corr).expect("checked");
        self.deadlines.remove(&(pending.deadline, corr));
        if pending.deadline <= now {
            pending.slot.complete(Err(RequestError::Timeout));
            return false;
        }
        pending.slot.complete(result);
        true
    }

    /// Forgets a request whose caller stopped waiting; returns it if it was
    /// still pending.
    pub(in crate::node) fn forget(&mut self, corr: u64) -> Option<Pending> {
        let p = self.pending.remove(&corr)?;
        self.deadlines.remove(&(p.deadline, corr));
        Some(p)
    }

    /// The earliest deadline of a pending or a queued request.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let pending = self.deadlines.first().map(|(t, _)| *t);
        let queued = self.queue_deadlines.first().map(|(t, _, _)| *t);
        pending.into_iter().chain(queued).min()
    }

    /// Fails every pending request whose deadline has passed with `Timeout`.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, corr)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.remove(&(deadline, corr));
            if let Some(p) = self.pending.remove(&corr) {
                p.slot.complete(Err(RequestError::Timeout));
            }
        }
    }

    /// Fails every request waiting on `peer`.
    pub(crate) fn peer_down(&mut self, peer: NodeId) {
        let lost: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.peer == Some(peer))
            .map(|(&c, _)| c)
            .collect();
        for corr in lost {
            if let Some(p) = self.forget(corr) {
                p.slot.complete(Err(RequestError::Unreachable));
            }
        }
    }

    /// Fails every pending request with `Closed`.
    pub(crate) fn shutdown(&mut self) {
        self.deadlines.clear();
        for (_, p) in self.pending.drain() {
            p.slot.complete(Err(RequestError::Closed));
        }
    }

    /// The node's clock (see [`NodeInner::now`]).
    pub(in crate::node) fn now(&self) -> Instant {
        self.manual_now.unwrap_or_else(Instant::now)
    }

    // ----- the member's side ---------------------------------------------

    /// Sets a member's limits; its slots and queue stay as they are.
    pub(in crate::node) fn set_gate(&mut self, id: MailboxId, limits: Limits) {
        self.gates
            .entry(id)
            .and_modify(|g| g.limits = limits)
            .or_insert_with(|| Gate::new(limits));
    }

    /// The limits of a local member or subscriber.
    pub(in crate::node) fn limits(&self, id: MailboxId) -> Option<Limits> {
        self.gates.get(&id).map(|g| g.limits)
    }

    /// Offers a request to member `id` (see [`Admit`]).
    #[allow(clippy::too_many_arguments)]
    pub(in crate::node) fn admit(
        &mut self,
        id: MailboxId,
        mut request: Request,
        len: usize,
        mailbox_bytes: usize,
        caller: Caller,
        now: Instant,
    ) -> Admit {
        let deadline = request.responder.deadline;
        if deadline <= now {
            request.responder.disarm();
            return Admit::Expired(request);
        }
        let Some(gate) = self.gates.get_mut(&id) else {
            // A mailbox addressed directly, not a member: no limits.
            request.responder.slot = None;
            return Admit::Deliver(request);
        };
        let queued = gate.backlog_bytes + mailbox_bytes;
        if queued + len > gate.limits.max_queued_bytes {
            request.responder.disarm();
            return Admit::Refused(format!(
                "{queued} bytes wait for the member (limit {})",
                gate.limits.max_queued_bytes
            ));
        }
        if gate.in_flight < gate.limits.max_in_flight {
            gate.in_flight += 1;
            return Admit::Deliver(request);
        }
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        gate.backlog_bytes += len;
        gate.backlog.insert(
            ticket,
            Queued {
                request,
                len,
                deadline,
                caller,
            },
        );
        self.queue_deadlines.insert((deadline, id, ticket));
        self.queued_by_caller.insert(caller, (id, ticket));
        Admit::Queued
    }

    /// Drops `caller`'s index entry if it is this queued request's (a peer
    /// that reuses a correlation id must not unlink another request).
    fn forget_caller(&mut self, caller: Caller, id: MailboxId, ticket: u64) {
        if self.queued_by_caller.get(&caller) == Some(&(id, ticket)) {
            self.queued_by_caller.remove(&caller);
        }
    }

    /// Takes one queued request out of its gate and both indexes.
    fn unqueue(&mut self, id: MailboxId, ticket: u64) -> Option<Queued> {
        let gate = self.gates.get_mut(&id)?;
        let queued = gate.backlog.remove(&ticket)?;
        gate.backlog_bytes -= queued.len;
        self.queue_deadlines.remove(&(queued.deadline, id, ticket));
        self.forget_caller(queued.caller, id, ticket);
        Some(queued)
    }

    /// A request of member `id` was answered or dropped: the oldest queued
    /// request whose deadline has not passed takes its slot. Expired ones
    /// met on the way are pushed onto `expired`, disarmed.
    pub(in crate::node) fn release(
        &mut self,
        id: MailboxId,
        now: Instant,
        expired: &mut Vec<Request>,
    ) -> Option<Request> {
        loop {
            let gate = self.gates.get_mut(&id)?;
            let Some((&ticket, _)) = gate.backlog.first_key_value() else {
                gate.in_flight = gate.in_flight.saturating_sub(1);
                return None;
            };
            let queued = self.unqueue(id, ticket).expect("the first queued request");
            let mut request = queued.request;
            if queued.deadline <= now {
                request.responder.disarm();
                expired.push(request);
            } else {
                // Takes over the slot: `in_flight` stays.
                return Some(request);
            }
        }
    }

    /// Takes out every queued request whose deadline has passed, disarmed.
    pub(in crate::node) fn sweep(&mut self, now: Instant, expired: &mut Vec<Request>) {
        while let Some(&(deadline, id, ticket)) = self.queue_deadlines.first() {
            if deadline > now {
                break;
            }
            match self.unqueue(id, ticket) {
                Some(queued) => {
                    let mut request = queued.request;
                    request.responder.disarm();
                    expired.push(request);
                }
                None => {
                    self.queue_deadlines.remove(&(deadline, id, ticket));
                }
            }
        }
    }

    /// Takes out the queued request of `caller`, if it still waits, disarmed.
    pub(in crate::node) fn cancel(&mut self, caller: Caller) -> Option<Request> {
        let (id, ticket) = *self.queued_by_caller.get(&caller)?;
        let mut request = self.unqueue(id, ticket)?.request;
        request.responder.disarm();
        Some(request)
    }

    /// Takes out every queued request from callers on `peer`, disarmed.
    pub(in crate::node) fn cancel_from(&mut self, peer: NodeId) -> Vec<Request> {
        let callers: Vec<Caller> = self
            .queued_by_caller
            .keys()
            .filter(|(node, _)| *node == Some(peer))
            .copied()
            .collect();
        callers.into_iter().filter_map(|c| self.cancel(c)).collect()
    }

    /// Forgets member `id`'s gate; returns its queued requests, still armed
    /// to answer their callers when dropped (their slots are gone with it).
    pub(in crate::node) fn drop_gate(&mut self, id: MailboxId) -> Vec<Request> {
        let Some(gate) = self.gates.remove(&id) else {
            return Vec::new();
        };
        gate.backlog
            .into_iter()
            .map(|(ticket, queued)| {
                self.queue_deadlines.remove(&(queued.deadline, id, ticket));
                self.forget_caller(queued.caller, id, ticket);
                let mut request = queued.request;
                request.responder.slot = None;
                request
            })
            .collect()
    }

    pub(in crate::node) fn tables(&self) -> RequestTables {
        RequestTables {
            pending: self.pending.len(),
            pending_deadlines: self.deadlines.len(),
            queued: self.gates.values().map(|g| g.backlog.len()).sum(),
            queued_bytes: self.gates.values().map(|g| g.backlog_bytes).sum(),
            queue_index: self.queue_deadlines.len() + self.queued_by_caller.len(),
            in_flight: self.gates.values().map(|g| g.in_flight).sum(),
        }
    }
}

/// The future of [`Node::request`](crate::Node::request).
#[must_use = "futures do nothing unless polled"]
pub struct RequestFuture {
    pub(crate) slot: Arc<ReplySlot>,
    pub(crate) node: Weak<NodeInner>,
    pub(crate) corr: Option<u64>,
}

impl RequestFuture {
    pub(crate) fn failed(error: RequestError) -> RequestFuture {
        let slot = Arc::new(ReplySlot::default());
        slot.complete(Err(error));
        RequestFuture {
            slot,
            node: Weak::new(),
            corr: None,
        }
    }

    /// The result, if it has arrived (for callers that poll by hand).
    pub fn try_result(&self) -> Option<Result<Message, RequestError>> {
        let mut inner = self.slot.lock();
        inner.result.take()
    }
}

impl Future for RequestFuture {
    type Output = Result<Message, RequestError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = self.slot.lock().result.take() {
            return Poll::Ready(result);
        }
        // Before waiting: the reply may already be in a socket of a
        // sleeping driver (see `WakeSignal::receive_inline`).
        if self
            .node
            .upgrade()
            .is_some_and(|node| node.net.wake.receive_inline())
        {
            // As a mailbox receive does (see `MailboxShared::poll_take`):
            // tasks this thread may have woken run first.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let mut inner = self.slot.lock();
        match inner.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                inner.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for RequestFuture {
    fn drop(&mut self) {
        if let (Some(corr), Some(node)) = (self.corr, self.node.upgrade()) {
            node.forget_request(corr);
        }
    }
}

/// How a member's answer reaches the caller.
pub(crate) enum Route {
    Local {
        node: Weak<NodeInner>,
        corr: u64,
    },
    Remote {
        node: Weak<NodeInner>,
        peer: NodeId,
        corr: u64,
    },
}

/// A request delivered to a member's mailbox. Test for it with
/// `msg.is::<Request>()` or receive it with
/// [`Mailbox::recv_request`](crate::Mailbox::recv_request).
///
/// Answer with [`reply`](Request::reply) or [`reply_error`](Request::reply_error);
/// a request dropped without an answer answers
/// [`RequestError::Abandoned`] by itself. The caller's deadline comes with
/// it ([`deadline`](Request::deadline), [`time_remaining`](Request::time_remaining)):
/// a member can skip work nobody waits for. A request that is still waiting
/// for a handler slot when its deadline passes never reaches the member
/// (counted in [`NodeStats::expired_requests`](crate::NodeStats::expired_requests)).
/// One already in the mailbox holds its slot until it is answered or
/// dropped: a member that finds no time remaining drops it to free the slot.
///
/// The time remaining is taken when the request is queued for the wire; time
/// it then spends in the outbound queue and in transit is not taken off.
pub struct Request {
    message: Message,
    pub(in crate::node) responder: Responder,
}

impl Request {
    pub(crate) fn new(message: Message, route: Route, deadline: Instant) -> Request {
        Request {
            message,
            responder: Responder {
                route: Some(route),
                slot: None,
                deadline,
            },
        }
    }

    /// The request's payload.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The payload and the means to answer, apart.
    pub fn into_parts(self) -> (Message, Responder) {
        (self.message, self.responder)
    }

    /// The inverse of [`into_parts`](Request::into_parts).
    pub(crate) fn from_parts(message: Message, responder: Responder) -> Request {
        Request { message, responder }
    }

    /// When the caller stops waiting, on this node's clock. For a request
    /// from another node it is the time remaining that came with the request
    /// counted from its arrival (clocks need not agree; the transit time is
    /// not subtracted, so the caller may give up a little earlier).
    pub fn deadline(&self) -> Instant {
        self.responder.deadline
    }

    /// How long the caller still waits; zero once it has given up.
    pub fn time_remaining(&self) -> Duration {
        self.responder.time_remaining()
    }

    /// Answers with a value.
    pub fn reply<T: Any + Send + Serialize>(self, value: T) -> Result<(), SendError> {
        self.responder.reply(value)
    }

    /// Answers with an application error.
    pub fn reply_error(self, error: impl Into<String>) -> Result<(), SendError> {
        self.responder.reply_error(error)
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("message", &self.message)
            .field("deadline", &self.responder.deadline)
            .finish()
    }
}

/// The handler slot a request holds on its member's gate, given back when
/// the request is answered or dropped.
pub(in crate::node) struct Slot {
    pub(in crate::node) node: Weak<NodeInner>,
    pub(in crate::node) member: MailboxId,
    /// The mailbox the next waiting request goes to.
    pub(in crate::node) mailbox: Weak<crate::mailbox::MailboxShared>,
}

/// Answers one request, once.
pub struct Responder {
    route: Option<Route>,
    /// Boxed: a request in a mailbox counts its in-memory size against the
    /// member's byte limit, so it stays small.
    pub(in crate::node) slot: Option<Box<Slot>>,
    deadline: Instant,
}

impl Responder {
    /// When the caller stops waiting (see [`Request::deadline`]).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// How long the caller still waits; zero once it has given up.
    pub fn time_remaining(&self) -> Duration {
        let node = match &self.route {
            Some(Route::Local { node, .. }) | Some(Route::Remote { node, .. }) => node.upgrade(),
            None => None,
        };
        let now = node.map_or_else(Instant::now, |n| n.now());
        self.deadline.saturating_duration_since(now)
    }

    /// Neither answers nor holds a slot any more: for a request discarded
    /// before it reached its member.
    fn disarm(&mut self) {
        self.route = None;
        self.slot = None;
    }

    /// Answers with a value. A value that cannot cross the wire to a
    /// remote caller (its type unregistered, too large, failing to encode)
    /// is an error here, and the caller gets [`RequestError::Remote`] saying
    /// why at once rather than a timeout.
    pub fn reply<T: Any + Send + Serialize>(mut self, value: T) -> Result<(), SendError> {
        match self.route.take() {
            Some(Route::Local { node, corr }) => {
                complete_local(&node, corr, Ok(Message::local(value)))
            }
            Some(Route::Remote { node, peer, corr }) => {
                match send_remote(&node, peer, corr, RemoteAnswer::Value(&value)) {
                    // The value cannot cross the wire (unregistered type,
                    // too large, fails to encode): the caller would wait
                    // out its timeout, so it hears why at once instead.
                    Err(
                        e @ (SendError::Unregistered { .. }
                        | SendError::Encode(_)
                        | SendError::TooLarge { .. }),
                    ) => {
                        let why = format!("the reply could not be sent: {e}");
                        let _ = send_remote(&node, peer, corr, RemoteAnswer::Error(why));
                        Err(e)
                    }
                    other => other,
                }
            }
            None => Ok(()),
        }
    }

    /// Answers with an application error.
    pub fn reply_error(mut self, error: impl Into<String>) -> Result<(), SendError> {
        self.answer_error(RemoteAnswer::Error(error.into()))
    }

    fn answer_error(&mut self, answer: RemoteAnswer<'_>) -> Result<(), SendError> {
        match self.route.take() {
            Some(Route::Local { node, corr }) => {
                let error = match answer {
                    RemoteAnswer::Error(e) => RequestError::Remote(e),
                    _ => RequestError::Abandoned,
                };
                complete_local(&node, corr, Err(error))
            }
            Some(Route::Remote { node, peer, corr }) => send_remote(&node, peer, corr, answer),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("deadline", &self.deadline)
            .field("answered", &self.route.is_none())
            .finish()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.answer_error(RemoteAnswer::Abandoned);
        if let Some(slot) = self.slot.take() {
            if let Some(node) = slot.node.upgrade() {
                node.release_slot(slot.member, &slot.mailbox);
            }
        }
    }
}

/// What a member answers a caller on another node.
pub(crate) enum RemoteAnswer<'a> {
    Value(&'a dyn erased::SerializeAny),
    Error(String),
    Abandoned,
}

fn complete_local(
    node: &Weak<NodeInner>,
    corr: u64,
    result: Result<Message, RequestError>,
) -> Result<(), SendError> {
    let node = node.upgrade().ok_or(SendError::NodeShutdown)?;
    node.complete_request(corr, None, result);
    Ok(())
}

fn send_remote(
    node: &Weak<NodeInner>,
    peer: NodeId,
    corr: u64,
    answer: RemoteAnswer<'_>,
) -> Result<(), SendError> {
    let node = node.upgrade().ok_or(SendError::NodeShutdown)?;
    node.send_reply(peer, corr, answer)
}

/// Serializing a value whose type is only known as `dyn`, for replies.
pub(crate) mod erased {
    use std::any::{Any, TypeId};

    use serde::Serialize;

    /// A value that can be encoded for the wire without knowing its type.
    pub trait SerializeAny {
        /// The value's type id (for its registered tag).
        fn type_id_of(&self) -> TypeId;
        /// The value's Rust type name (for errors).
        fn type_name_of(&self) -> &'static str;
        /// Appends the CBOR encoding.
        fn encode(&self, out: &mut Vec<u8>) -> Result<(), String>;
    }

    impl<T: Any + Serialize> SerializeAny for T {
        fn type_id_of(&self) -> TypeId {
            TypeId::of::<T>()
        }
        fn type_name_of(&self) -> &'static str {
            std::any::type_name::<T>()
        }
        fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
            crate::codec::payload::encode(self, out)
        }
    }
}

/// The longest a request can wait: a timeout over it counts as this
/// ([`MAX_REMAINING_US`](crate::codec::frame::MAX_REMAINING_US), 30 days).
pub const MAX_REQUEST_TIMEOUT: Duration =
    Duration::from_micros(crate::codec::frame::MAX_REMAINING_US);
