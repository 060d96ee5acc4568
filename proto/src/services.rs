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
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::address::Address;
use crate::error::SendError;
use crate::id::{MailboxId, NodeId};
use crate::message::Message;
use crate::node::NodeInner;

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

impl Default for Limits {
    /// Iris's defaults: 4 handlers per core and 64 MiB queued.
    fn default() -> Limits {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Limits {
            max_in_flight: 4 * cores,
            max_queued_bytes: 64 << 20,
        }
    }
}

/// Who asked: the caller's node (`None`: this node) and the correlation id
/// it chose. Lets the caller's node call off a request it no longer waits for.
type Caller = (Option<NodeId>, u64);

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
enum Admit {
    /// Goes into the mailbox now (holding a slot if the member has limits).
    Deliver(Request),
    /// Waits for a slot.
    Queued,
    /// Over the member's byte limit: answered at once.
    Refused(String),
    /// Its deadline has passed: discarded unanswered.
    Expired(Request),
}

/// The tables of a node's requests, as [`Node::request_tables`] reports
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
        }
    }
}

impl std::error::Error for RequestError {}

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
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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

struct Pending {
    slot: Arc<ReplySlot>,
    /// The member's node, if remote: its loss fails the request.
    peer: Option<NodeId>,
    deadline: Instant,
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
    manual_now: Option<Instant>,
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
    fn forget(&mut self, corr: u64) -> Option<Pending> {
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
    fn now(&self) -> Instant {
        self.manual_now.unwrap_or_else(Instant::now)
    }

    // ----- the member's side ---------------------------------------------

    /// Sets a member's limits; its slots and queue stay as they are.
    fn set_gate(&mut self, id: MailboxId, limits: Limits) {
        self.gates
            .entry(id)
            .and_modify(|g| g.limits = limits)
            .or_insert_with(|| Gate::new(limits));
    }

    /// The limits of a local member or subscriber.
    fn limits(&self, id: MailboxId) -> Option<Limits> {
        self.gates.get(&id).map(|g| g.limits)
    }

    /// Offers a request to member `id` (see [`Admit`]).
    #[allow(clippy::too_many_arguments)]
    fn admit(
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
    fn release(
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
    fn sweep(&mut self, now: Instant, expired: &mut Vec<Request>) {
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
    fn cancel(&mut self, caller: Caller) -> Option<Request> {
        let (id, ticket) = *self.queued_by_caller.get(&caller)?;
        let mut request = self.unqueue(id, ticket)?.request;
        request.responder.disarm();
        Some(request)
    }

    /// Takes out every queued request from callers on `peer`, disarmed.
    fn cancel_from(&mut self, peer: NodeId) -> Vec<Request> {
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
    fn drop_gate(&mut self, id: MailboxId) -> Vec<Request> {
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

    fn tables(&self) -> RequestTables {
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
    responder: Responder,
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
struct Slot {
    node: Weak<NodeInner>,
    member: MailboxId,
    /// The mailbox the next waiting request goes to.
    mailbox: Weak<crate::mailbox::MailboxShared>,
}

/// Answers one request, once.
pub struct Responder {
    route: Option<Route>,
    /// Boxed: a request in a mailbox counts its in-memory size against the
    /// member's byte limit, so it stays small.
    slot: Option<Box<Slot>>,
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

    /// Answers with a value.
    pub fn reply<T: Any + Send + Serialize>(mut self, value: T) -> Result<(), SendError> {
        match self.route.take() {
            Some(Route::Local { node, corr }) => {
                complete_local(&node, corr, Ok(Message::local(value)))
            }
            Some(Route::Remote { node, peer, corr }) => {
                send_remote(&node, peer, corr, RemoteAnswer::Value(&value))
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

// ----- the node's side -------------------------------------------------------

use crate::codec::frame::{self as wire, PublishScope, ReplyStatus};
use crate::net::Refused;
use crate::registry::RegistryError;
use crate::types::{self, TypeTag};
use bytes::Bytes;

/// A request's time remaining for the wire: whole microseconds, rounded up
/// so that a caller still waiting is never sent as one that gave up, and
/// capped at [`wire::MAX_REMAINING_US`].
fn remaining_micros(remaining: Duration) -> u64 {
    let micros = remaining.as_micros() + u128::from(!remaining.subsec_nanos().is_multiple_of(1000));
    u64::try_from(micros).map_or(wire::MAX_REMAINING_US, |m| m.min(wire::MAX_REMAINING_US))
}

/// The longest a request can wait: a timeout over it counts as this
/// ([`MAX_REMAINING_US`](crate::codec::frame::MAX_REMAINING_US), 30 days).
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_micros(wire::MAX_REMAINING_US);

fn encode_registered<T: Any + Serialize>(value: &T) -> Result<(TypeTag, Vec<u8>), SendError> {
    let tag = types::tag_for::<T>()?;
    let mut payload = Vec::new();
    crate::codec::payload::encode(value, &mut payload).map_err(SendError::Encode)?;
    Ok((tag, payload))
}

impl NodeInner {
    fn services(&self) -> MutexGuard<'_, Services> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
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

    pub(crate) fn next_request_deadline(&self) -> Option<Instant> {
        self.services().next_deadline()
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
    fn release_slot(&self, member: MailboxId, mailbox: &Weak<crate::mailbox::MailboxShared>) {
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
        match self.network().push_frame(outbox, framed, true, |out| {
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
        charge: Option<crate::net::Charge>,
    ) {
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
        // Re-arm the core's timer for the new deadline.
        self.network().wake.notify();
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
            self.network()
                .push_frame(outbox, framed, true, |out| {
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
        budget: Option<&Arc<crate::net::RecvBudget>>,
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
        budget: Option<Arc<crate::net::RecvBudget>>,
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
            let pushed = self.network().push_frame(outbox, framed, true, |out| {
                wire::put_publish_header(out, scope, tag, name, payload.len());
                out.extend_from_slice(&payload);
            });
            if pushed.is_err() {
                self.counters.dropped_events.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Joins or subscribes with limits.
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
}

impl crate::Node {
    /// The sizes of this node's request tables: replies it waits for,
    /// requests queued for its members' handler slots, slots in use. All
    /// zero on an idle node, however its callers gave up.
    pub fn request_tables(&self) -> RequestTables {
        self.inner.services().tables()
    }
}
