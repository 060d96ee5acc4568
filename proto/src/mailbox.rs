//! Mailboxes: the receiving end of an [`Address`].
//!
//! A mailbox is a queue behind one mutex, shared by every sender and the
//! receiver. Receiving is async (std [`Waker`], no runtime), non-blocking
//! ([`Mailbox::try_recv`]) or blocking for plain threads
//! ([`Mailbox::recv_blocking`]). Waiting never spins: a waiting receiver is
//! woken by the next push.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::address::Address;
use crate::error::{RecvError, SendError};
use crate::id::MailboxId;
use crate::message::Message;
use crate::node::NodeInner;

/// Optional bounds on a mailbox. Unbounded by default.
///
/// When a send would take a bounded mailbox over either limit the send fails
/// with [`SendError::Full`] and the message is not queued (a local sender sees
/// the error; a message from another node is dropped and counted in the
/// node's statistics, since the remote sender has already moved on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Most messages the queue may hold.
    pub max_messages: Option<usize>,
    /// Most bytes the queued messages may hold (see [`Message::byte_len`]).
    pub max_bytes: Option<usize>,
}

impl Capacity {
    /// No limits.
    pub const UNBOUNDED: Capacity = Capacity {
        max_messages: None,
        max_bytes: None,
    };

    /// At most `n` queued messages.
    pub fn messages(n: usize) -> Capacity {
        Capacity {
            max_messages: Some(n),
            max_bytes: None,
        }
    }

    /// At most `n` queued bytes.
    pub fn bytes(n: usize) -> Capacity {
        Capacity {
            max_messages: None,
            max_bytes: Some(n),
        }
    }
}

pub(crate) struct MailboxShared {
    pub(crate) id: MailboxId,
    state: Mutex<State>,
    blocked: Condvar,
    node: Weak<NodeInner>,
    capacity: Capacity,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Message>,
    bytes: usize,
    closed: bool,
    wakers: Vec<Waker>,
    blocked_receivers: usize,
    watchers: Vec<Address>,
}

impl MailboxShared {
    pub(crate) fn new(id: MailboxId, node: Weak<NodeInner>, capacity: Capacity) -> MailboxShared {
        MailboxShared {
            id,
            state: Mutex::new(State::default()),
            blocked: Condvar::new(),
            node,
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every critical section is a few field updates), so carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message, waking a waiting receiver.
    pub(crate) fn push(&self, msg: Message) -> Result<(), SendError> {
        let mut state = self.lock();
        if state.closed {
            return Err(SendError::Closed);
        }
        let len = msg.byte_len();
        if self.capacity != Capacity::UNBOUNDED {
            let over_count = self
                .capacity
                .max_messages
                .is_some_and(|max| state.queue.len() >= max);
            let over_bytes = self
                .capacity
                .max_bytes
                .is_some_and(|max| state.bytes + len > max);
            if over_count || over_bytes {
                return Err(SendError::Full);
            }
        }
        state.bytes += len;
        state.queue.push_back(msg);
        self.wake_receivers(state);
        Ok(())
    }

    fn wake_receivers(&self, mut state: MutexGuard<'_, State>) {
        let notify_blocked = state.blocked_receivers > 0;
        match state.wakers.len() {
            0 => drop(state),
            1 => {
                let waker = state.wakers.pop();
                drop(state);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            _ => {
                let wakers: Vec<Waker> = state.wakers.drain(..).collect();
                drop(state);
                wakers.into_iter().for_each(Waker::wake);
            }
        }
        if notify_blocked {
            self.blocked.notify_all();
        }
    }

    /// Closes the mailbox; returns the watchers to notify if this call closed
    /// it, `None` if it was already closed.
    fn close(&self) -> Option<Vec<Address>> {
        let mut state = self.lock();
        if state.closed {
            return None;
        }
        state.closed = true;
        let queue = std::mem::take(&mut state.queue);
        state.bytes = 0;
        let watchers = std::mem::take(&mut state.watchers);
        let wakers = std::mem::take(&mut state.wakers);
        drop(state);
        // Dropping queued messages may run user destructors: outside the lock.
        drop(queue);
        wakers.into_iter().for_each(Waker::wake);
        self.blocked.notify_all();
        Some(watchers)
    }

    pub(crate) fn close_and_notify(&self) {
        if let Some(watchers) = self.close() {
            match self.node.upgrade() {
                Some(node) => node.mailbox_closed(self.id, watchers),
                None => {
                    // The node is gone; local watchers can still be told.
                    for watcher in watchers {
                        let _ = watcher.send(crate::system::MailboxClosed(self.id));
                    }
                }
            }
        }
    }

    /// Bytes of the messages queued.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Adds a watcher; `false` if the mailbox is already closed (the caller
    /// notifies at once).
    pub(crate) fn add_watcher(&self, watcher: &Address) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        if !state.watchers.contains(watcher) {
            state.watchers.push(watcher.clone());
        }
        true
    }

    pub(crate) fn remove_watcher(&self, watcher: &Address) {
        self.lock().watchers.retain(|w| w != watcher);
    }

    fn take_first(
        &self,
        state: &mut State,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> Option<Message> {
        let index = state.queue.iter().position(&mut pred)?;
        let msg = state.queue.remove(index)?;
        state.bytes -= msg.byte_len();
        Some(msg)
    }

    fn poll_take(
        &self,
        cx: &mut Context<'_>,
        pred: impl FnMut(&Message) -> bool,
    ) -> Poll<Result<Message, RecvError>> {
        let mut state = self.lock();
        if let Some(msg) = self.take_first(&mut state, pred) {
            return Poll::Ready(Ok(msg));
        }
        if state.closed {
            return Poll::Ready(Err(RecvError::Closed));
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    fn take_blocking(
        &self,
        timeout: Option<Duration>,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> Result<Message, RecvError> {
        let mut state = self.lock();
        state.blocked_receivers += 1;
        let mut result = None;
        let mut check = |state: &mut State| {
            if let Some(msg) = self.take_first(state, &mut pred) {
                result = Some(Ok(msg));
            } else if state.closed {
                result = Some(Err(RecvError::Closed));
            }
            result.is_none()
        };
        state = match timeout {
            None => self
                .blocked
                .wait_while(state, |s| check(s))
                .unwrap_or_else(|e| e.into_inner()),
            Some(timeout) => {
                self.blocked
                    .wait_timeout_while(state, timeout, |s| check(s))
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
        state.blocked_receivers -= 1;
        result.unwrap_or(Err(RecvError::Timeout))
    }
}

/// The receiving end of a mailbox. Dropping it closes the mailbox.
///
/// Methods take `&self`, so a mailbox can be shared (behind an `Arc`) by
/// several receivers; each message goes to exactly one of them.
///
/// ```
/// use reign_proto::{Incarnation, Node};
///
/// # futures_lite::future::block_on(async {
/// let node = Node::local(Incarnation(1));
/// let (addr, mailbox) = node.new_mailbox();
/// addr.send("hello".to_string()).unwrap();
/// addr.send(7u32).unwrap();
///
/// // Selective receive: take the first u32, leave the string queued.
/// let n: u32 = mailbox.recv_type().await.unwrap();
/// assert_eq!(n, 7);
/// assert_eq!(mailbox.message_count(), 1);
/// let text = mailbox.recv().await.unwrap().downcast::<String>().unwrap();
/// assert_eq!(text, "hello");
/// # });
/// ```
pub struct Mailbox {
    shared: Arc<MailboxShared>,
}

impl Mailbox {
    pub(crate) fn new(shared: Arc<MailboxShared>) -> Mailbox {
        Mailbox { shared }
    }

    /// The mailbox's cluster-wide id.
    pub fn id(&self) -> MailboxId {
        self.shared.id
    }

    /// A new address of this mailbox.
    pub fn address(&self) -> Address {
        Address::local(self.shared.clone())
    }

    /// Waits for the next message. Fails only when the mailbox is closed.
    pub fn recv(&self) -> Recv<'_, fn(&Message) -> bool> {
        Recv {
            shared: &self.shared,
            pred: |_| true,
        }
    }

    /// Takes the next message if one is queued: `Ok(None)` when the queue is
    /// empty, `Err(Closed)` once the mailbox is closed. Never waits.
    pub fn try_recv(&self) -> Result<Option<Message>, RecvError> {
        let mut state = self.shared.lock();
        match self.shared.take_first(&mut state, |_| true) {
            Some(msg) => Ok(Some(msg)),
            None if state.closed => Err(RecvError::Closed),
            None => Ok(None),
        }
    }

    /// Selective receive: waits for the first message, in arrival order, for
    /// which `pred` is true. Messages that do not match stay queued, in order.
    /// Each wake-up rescans the queue, so keep unmatched backlogs short.
    pub fn recv_match<F: FnMut(&Message) -> bool>(&self, pred: F) -> Recv<'_, F> {
        Recv {
            shared: &self.shared,
            pred,
        }
    }

    /// Waits for the first message holding a `T`, leaving others queued.
    ///
    /// A message from another node that claims to be a `T` but does not
    /// decode is dropped with a warning, and the wait goes on.
    pub async fn recv_type<T: std::any::Any + DeserializeOwned>(&self) -> Result<T, RecvError> {
        loop {
            let msg = self.recv_match(Message::is::<T>).await?;
            if let Ok(value) = msg.downcast::<T>() {
                return Ok(value);
            }
        }
    }

    /// Waits for the first [`Request`](crate::Request) (this mailbox is a
    /// service member), leaving other messages queued.
    pub async fn recv_request(&self) -> Result<crate::Request, RecvError> {
        loop {
            let msg = self.recv_match(Message::is::<crate::Request>).await?;
            if let Ok(request) = msg.take::<crate::Request>() {
                return Ok(request);
            }
        }
    }

    /// Waits for the first offered tunnel, leaving other messages queued.
    pub async fn recv_tunnel(&self) -> Result<crate::IncomingTunnel, RecvError> {
        loop {
            let msg = self
                .recv_match(Message::is::<crate::IncomingTunnel>)
                .await?;
            if let Ok(tunnel) = msg.take::<crate::IncomingTunnel>() {
                return Ok(tunnel);
            }
        }
    }

    /// Blocks the thread until a message arrives or the mailbox closes.
    pub fn recv_blocking(&self) -> Result<Message, RecvError> {
        self.shared.take_blocking(None, |_| true)
    }

    /// Blocks the thread until a message arrives, the mailbox closes, or the
    /// timeout passes ([`RecvError::Timeout`]).
    pub fn recv_blocking_timeout(&self, timeout: Duration) -> Result<Message, RecvError> {
        self.shared.take_blocking(Some(timeout), |_| true)
    }

    /// Blocking selective receive, with an optional timeout.
    pub fn recv_match_blocking(
        &self,
        timeout: Option<Duration>,
        pred: impl FnMut(&Message) -> bool,
    ) -> Result<Message, RecvError> {
        self.shared.take_blocking(timeout, pred)
    }

    /// Exactly how many messages are queued.
    pub fn message_count(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Closes the mailbox: queued messages are dropped, pending and future
    /// receives return [`RecvError::Closed`], sends return
    /// [`SendError::Closed`], names it holds are released, and every watcher
    /// gets [`MailboxClosed`](crate::MailboxClosed). Idempotent.
    pub fn close(&self) {
        self.shared.close_and_notify();
    }

    /// Whether the mailbox is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.shared.close_and_notify();
    }
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("id", &self.shared.id)
            .finish()
    }
}

/// The future of [`Mailbox::recv`] and [`Mailbox::recv_match`].
#[must_use = "futures do nothing unless polled"]
pub struct Recv<'a, F> {
    shared: &'a MailboxShared,
    pred: F,
}

impl<F: FnMut(&Message) -> bool + Unpin> Future for Recv<'_, F> {
    type Output = Result<Message, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.shared.poll_take(cx, &mut this.pred)
    }
}
