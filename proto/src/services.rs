//! Service messaging: request/reply to one member of a service group,
//! broadcast to every member, publish/subscribe on topics, and the limits
//! that keep a busy member from drowning.
//!
//! A service group is a name in the directory ([`Registry`](crate::registry::Registry))
//! with any number of member mailboxes on any nodes; membership syncs like
//! every other directory entry. Every failure is its own typed error
//! ([`RequestError`]): the fabric reign learns from reported nearly every
//! failure as a timeout.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

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

/// The accounting of one member or subscriber mailbox.
pub(crate) struct Gate {
    pub(crate) limits: Limits,
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    /// Requests in the mailbox or being answered.
    in_flight: usize,
    /// Requests waiting for a slot, with their sizes.
    backlog: std::collections::VecDeque<(Request, usize)>,
    backlog_bytes: usize,
}

impl Gate {
    pub(crate) fn new(limits: Limits) -> Gate {
        Gate {
            limits,
            state: Mutex::new(GateState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request: `Ok(Some(request))` to put in the mailbox now,
    /// `Ok(None)` if it waits in the backlog, `Err` if it is refused.
    fn admit(
        &self,
        request: Request,
        len: usize,
        mailbox_bytes: usize,
    ) -> Result<Option<Request>, Box<(Request, String)>> {
        let mut state = self.lock();
        let queued = state.backlog_bytes + mailbox_bytes;
        if queued + len > self.limits.max_queued_bytes {
            return Err(Box::new((
                request,
                format!(
                    "{queued} bytes wait for the member (limit {})",
                    self.limits.max_queued_bytes
                ),
            )));
        }
        if state.in_flight < self.limits.max_in_flight {
            state.in_flight += 1;
            Ok(Some(request))
        } else {
            state.backlog_bytes += len;
            state.backlog.push_back((request, len));
            Ok(None)
        }
    }

    /// An answer went out: the next waiting request, if any, takes the slot.
    fn release(&self) -> Option<Request> {
        let mut state = self.lock();
        match state.backlog.pop_front() {
            Some((request, len)) => {
                state.backlog_bytes -= len;
                Some(request)
            }
            None => {
                state.in_flight = state.in_flight.saturating_sub(1);
                None
            }
        }
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("limits", &self.limits)
            .finish()
    }
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

/// Request bookkeeping of one node.
#[derive(Default)]
pub(crate) struct Services {
    next_corr: u64,
    pending: HashMap<u64, Pending>,
    deadlines: BTreeSet<(Instant, u64)>,
    pub(crate) gates: HashMap<MailboxId, Arc<Gate>>,
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

    /// Completes a pending request; `false` if it is no longer pending (a
    /// late reply).
    pub(crate) fn complete(
        &mut self,
        corr: u64,
        from: Option<NodeId>,
        result: Result<Message, RequestError>,
    ) -> bool {
        match self.pending.get(&corr) {
            Some(p) if p.peer == from => {}
            _ => return false,
        }
        let pending = self.pending.remove(&corr).expect("checked");
        self.deadlines.remove(&(pending.deadline, corr));
        pending.slot.complete(result);
        true
    }

    /// Forgets a request whose caller stopped waiting.
    pub(crate) fn forget(&mut self, corr: u64) {
        if let Some(p) = self.pending.remove(&corr) {
            self.deadlines.remove(&(p.deadline, corr));
        }
    }

    /// The earliest request deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Fails every request whose deadline has passed with `Timeout`.
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
            self.complete(corr, Some(peer), Err(RequestError::Unreachable));
        }
    }

    /// Fails every pending request with `Closed`.
    pub(crate) fn shutdown(&mut self) {
        self.deadlines.clear();
        for (_, p) in self.pending.drain() {
            p.slot.complete(Err(RequestError::Closed));
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
/// [`RequestError::Abandoned`] by itself.
pub struct Request {
    message: Message,
    responder: Responder,
}

impl Request {
    pub(crate) fn new(message: Message, route: Route, gate: Option<Arc<Gate>>) -> Request {
        Request {
            message,
            responder: Responder {
                route: Some(route),
                gate,
                member: None,
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
            .finish()
    }
}

/// Answers one request, once.
pub struct Responder {
    route: Option<Route>,
    gate: Option<Arc<Gate>>,
    /// The mailbox the next waiting request goes to when this one is done.
    member: Option<Weak<crate::mailbox::MailboxShared>>,
}

impl Responder {
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

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.answer_error(RemoteAnswer::Abandoned);
        if let (Some(gate), Some(member)) = (self.gate.take(), self.member.take()) {
            // Hand the slot to the next waiting request. If the mailbox is
            // gone, that request drops here and answers for itself.
            if let Some(next) = gate.release() {
                if let Some(mailbox) = member.upgrade() {
                    let _ = mailbox.push(Message::local(next));
                }
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

fn encode_registered<T: Any + Serialize>(value: &T) -> Result<(TypeTag, Vec<u8>), SendError> {
    let tag = types::tag_of(std::any::TypeId::of::<T>()).ok_or(SendError::Unregistered {
        type_name: std::any::type_name::<T>(),
    })?;
    let mut payload = Vec::new();
    crate::codec::payload::encode(value, &mut payload).map_err(SendError::Encode)?;
    Ok((tag, payload))
}

impl NodeInner {
    fn services(&self) -> MutexGuard<'_, Services> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn forget_request(&self, corr: u64) {
        self.services().forget(corr);
    }

    pub(crate) fn complete_request(
        &self,
        corr: u64,
        from: Option<NodeId>,
        result: Result<Message, RequestError>,
    ) {
        if !self.services().complete(corr, from, result) {
            self.counters.late_replies.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn next_request_deadline(&self) -> Option<Instant> {
        self.services().next_deadline()
    }

    pub(crate) fn expire_requests(&self, now: Instant) {
        self.services().expire(now);
    }

    /// The limits gate of a local member or subscriber.
    pub(crate) fn set_gate(&self, id: MailboxId, limits: Limits) {
        self.services()
            .gates
            .insert(id, Arc::new(Gate::new(limits)));
    }

    fn gate(&self, id: MailboxId) -> Option<Arc<Gate>> {
        self.services().gates.get(&id).cloned()
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

    /// Puts a request in a member's mailbox, within the member's limits.
    fn deliver_request(
        &self,
        dest: MailboxId,
        message: Message,
        route: Route,
    ) -> Result<(), (ReplyStatus, String)> {
        let Some(mailbox) = self.local_mailbox(dest) else {
            return Err((ReplyStatus::NoMember, String::new()));
        };
        let len = message.byte_len();
        let gate = self.gate(dest);
        let mut request = Request::new(message, route, gate.clone());
        let request = match gate {
            Some(gate) => {
                request.responder.member = Some(Arc::downgrade(&mailbox));
                match gate.admit(request, len, mailbox.queued_bytes()) {
                    Ok(Some(request)) => request,
                    Ok(None) => return Ok(()),
                    Err(refusal) => {
                        let (mut refused, why) = *refusal;
                        // Answered here, not by the refused request's drop.
                        refused.responder.route = None;
                        refused.responder.gate = None;
                        self.counters
                            .refused_requests
                            .fetch_add(1, Ordering::Relaxed);
                        return Err((ReplyStatus::Refused, why));
                    }
                }
            }
            None => request,
        };
        // On failure the request drops and answers for itself (Abandoned),
        // releasing its slot.
        match mailbox.push(Message::local(request)) {
            Ok(()) => Ok(()),
            Err(_) => Ok(()),
        }
    }

    /// A request frame from `peer`.
    pub(crate) fn on_request_frame(
        &self,
        peer: NodeId,
        dest: MailboxId,
        corr: u64,
        tag: TypeTag,
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
        let message = Message::remote(tag, payload, self.weak()).charged(charge);
        let route = Route::Remote {
            node: self.weak(),
            peer,
            corr,
        };
        if let Err((status, why)) = self.deliver_request(dest, message, route) {
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
        let corr = self
            .services()
            .begin(slot.clone(), (!local).then_some(dest.node), deadline);
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
            if let Err((status, why)) = self.deliver_request(dest, Message::local(value), route) {
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
            let framed = payload.len() + 4 + 1 + MailboxId::WIRE_LEN + 16;
            self.network()
                .push_frame(outbox, framed, true, |out| {
                    wire::put_request_header(out, dest, corr, tag, payload.len());
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
            let over = self.gate(id).is_some_and(|g| {
                mailbox.queued_bytes() + payload.len() > g.limits.max_queued_bytes
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
