//! Mailboxes: the receiving end of an [`Address`].
//!
//! A mailbox is a queue behind one mutex, shared by every sender and the
//! receiver. Receiving is async (std [`Waker`], no runtime), non-blocking
//! ([`Mailbox::try_recv`]) or blocking for plain threads
//! ([`Mailbox::recv_blocking`]). Waiting never spins: a waiting receiver is
//! woken by the next push.
//!
//! A mailbox also keeps its own share of messages from other nodes
//! (`Tuning::mailbox_unread_bytes`): over it, it tells their senders it is
//! busy (their sends fail with `Full`) until it is read down to half, and
//! drops and counts what still arrives past twice the share, so one slow
//! consumer never stops the link that carries its node's other traffic.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{RecvError, SendError};
use crate::id::{MailboxId, NodeId};
use crate::node::address::Address;
use crate::node::message::Message;
use crate::node::outbox::MESSAGE_COST;
use crate::node::task::TaskAbort;
use crate::node::NodeInner;
use crate::poison::lock;
use crate::system::{Exit, ExitReason};

/// Linked closes waiting on this thread for the close that caused them to
/// finish notifying: `None` when no linked close runs on this thread.
type ClosingQueue = Option<VecDeque<(Arc<MailboxShared>, ExitReason)>>;

thread_local! {
    static CLOSING: std::cell::RefCell<ClosingQueue> = const { std::cell::RefCell::new(None) };
}

/// Closes `mailbox` for a linked exit. A close notifies its linked
/// mailboxes, whose exits close them, which notify theirs: done by
/// recursion, a chain of 100,000 linked mailboxes would take 100,000 nested
/// closes and overflow the stack. The first linked close on a thread runs a
/// worklist instead; the closes it causes are queued and run by it, one
/// after another, before it returns, so every caller still finds the whole
/// cascade done when its close returns.
pub(crate) fn close_linked(mailbox: Arc<MailboxShared>, reason: ExitReason) {
    let nested = CLOSING.with(|closing| {
        let mut closing = closing.borrow_mut();
        match closing.as_mut() {
            Some(queue) => {
                queue.push_back((mailbox.clone(), reason.clone()));
                true
            }
            None => {
                *closing = Some(VecDeque::new());
                false
            }
        }
    });
    if nested {
        return;
    }
    // Ends the worklist even if a close panics (a queued message's
    // destructor): the closes still queued go with the panic, and later
    // closes on this thread start a worklist of their own.
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            CLOSING.with(|closing| closing.borrow_mut().take());
        }
    }
    let _done = Done;
    mailbox.close_and_notify(reason);
    while let Some((mailbox, reason)) =
        CLOSING.with(|closing| closing.borrow_mut().as_mut().and_then(VecDeque::pop_front))
    {
        mailbox.close_and_notify(reason);
    }
}

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

/// Messages and bytes that went one way (into the mailbox, or out of it)
/// since it was made. Each tally is written only under one lock (the
/// incoming queue's for what went in, the taken queue's for what came out),
/// so a write is a plain load and store, not a locked read-modify-write;
/// anyone may read it. What the mailbox holds is the difference
/// ([`MailboxShared::held`]).
#[derive(Default)]
struct Tally {
    messages: AtomicUsize,
    bytes: AtomicUsize,
}

impl Tally {
    /// Adds to the tally. The caller holds the lock that owns it.
    fn add(&self, messages: usize, bytes: usize) {
        let m = self.messages.load(Ordering::Relaxed);
        let b = self.bytes.load(Ordering::Relaxed);
        self.bytes.store(b.wrapping_add(bytes), Ordering::Release);
        self.messages
            .store(m.wrapping_add(messages), Ordering::Release);
    }
}

/// Keeps what senders write and what receivers write on cache lines of
/// their own (128 bytes: two lines, for CPUs that fetch lines in pairs), so
/// a receiver popping from a batch does not take the line a sender is
/// pushing on away from it, and the other way round.
#[repr(align(128))]
struct Padded<T>(T);

/// The senders' side: the incoming queue and what went into it.
struct Incoming {
    /// The incoming queue, the closed flag, waiters.
    state: Mutex<State>,
    /// Everything pushed so far (written under `state`). A blocked
    /// receiver also spins on its message count before it parks: on a
    /// line apart from the lock's, so that spinning does not take the
    /// lock's line from a sender between its lock and its unlock.
    pushed: Padded<Tally>,
}

/// The receivers' side: messages already moved out of the incoming queue,
/// older than anything still in it, and what came out. Receivers take
/// whole batches from the incoming queue at once (one lock, swapping the
/// queues), then pop without touching the senders' side.
struct Taken {
    queue: Mutex<VecDeque<Message>>,
    /// Everything received or dropped by a close so far (written under
    /// `queue`).
    popped: Tally,
}

pub(crate) struct MailboxShared {
    pub(crate) id: MailboxId,
    incoming: Padded<Incoming>,
    taken: Padded<Taken>,
    node: Weak<NodeInner>,
    capacity: Capacity,
    /// Some peer was told this mailbox is busy: receivers check whether it
    /// is ready again (one relaxed load per receive otherwise).
    busy: AtomicBool,
    /// The share it was told busy under, to tell when it is under half.
    busy_share: AtomicUsize,
    /// Exits of linked mailboxes arrive as [`Exit`] messages instead of
    /// closing this one.
    trap_exits: AtomicBool,
    /// The task this mailbox belongs to (see `Node::task`): closing the
    /// mailbox aborts it, and the task, not the [`Mailbox`] handle's drop,
    /// closes the mailbox with its exit reason.
    pub(crate) task: OnceLock<Arc<TaskAbort>>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Message>,
    closed: bool,
    /// Why it closed (set with `closed`): what a watch that comes after
    /// the close hears, for as long as someone holds the mailbox.
    exit: Option<ExitReason>,
    /// The mailbox reached its hard cap and drops messages from other
    /// nodes (see [`MailboxShared::push_many`]); cleared once it takes one
    /// again, so a slow consumer is logged once per episode, not once per
    /// dropped message.
    over_share: bool,
    /// Peers told that this mailbox is busy ([`Control::Busy`]), to be told
    /// when it is ready again.
    ///
    /// [`Control::Busy`]: crate::control::Control::Busy
    told_busy: Vec<NodeId>,
    wakers: Vec<Waker>,
    /// Threads parked in a blocking receive.
    parked: Vec<Thread>,
    watchers: Vec<Address>,
    /// Mailboxes linked to this one (each also watches the other): a close
    /// notice from one of them is an exit signal, not a message.
    links: Vec<MailboxId>,
}

/// How a batch of deliveries went (see [`MailboxShared::push_many`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pushed {
    pub(crate) delivered: u64,
    pub(crate) full: u64,
    pub(crate) closed: u64,
    /// Dropped because the mailbox already held its hard cap of unread
    /// bytes.
    pub(crate) over_share: u64,
    /// The sender is to be told that the mailbox is busy (it went over its
    /// share): the caller sends it [`Control::Busy`].
    ///
    /// [`Control::Busy`]: crate::control::Control::Busy
    pub(crate) tell_busy: bool,
}

/// A mailbox over its share of remote messages still takes those already
/// on the way (sent before its sender heard it is busy) up to this many
/// times its share; beyond, they are dropped and counted. The sender's
/// queue is bounded too, so only a sender that ignores `Busy` reaches it.
pub(crate) const HARD_CAP_SHARES: usize = 2;

/// What `messages` unread remote messages with `bytes` of payload hold on
/// the heap, as a mailbox's share counts it: each payload plus
/// [`MESSAGE_COST`] (the message's queue slots and frame header). Counting
/// payloads alone let a flood of 64-byte messages fill a 16 MiB share with
/// 210,000 messages holding some 60 MB before its sender was told busy.
fn unread_cost(messages: usize, bytes: usize) -> usize {
    bytes.saturating_add(messages.saturating_mul(MESSAGE_COST))
}

impl MailboxShared {
    pub(crate) fn new(id: MailboxId, node: Weak<NodeInner>, capacity: Capacity) -> MailboxShared {
        MailboxShared {
            id,
            incoming: Padded(Incoming {
                state: Mutex::new(State::default()),
                pushed: Padded(Tally::default()),
            }),
            taken: Padded(Taken {
                queue: Mutex::new(VecDeque::new()),
                popped: Tally::default(),
            }),
            node,
            capacity,
            busy: AtomicBool::new(false),
            busy_share: AtomicUsize::new(0),
            trap_exits: AtomicBool::new(false),
            task: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every critical section is a few field updates), so carry on.
        lock(&self.incoming.0.state)
    }

    fn lock_taken(&self) -> MutexGuard<'_, VecDeque<Message>> {
        lock(&self.taken.0.queue)
    }

    /// Messages and bytes queued (in the taken and the incoming queue
    /// together). What came out is read first: it never passes what went
    /// in, so the difference is never negative, and it is exact under the
    /// incoming queue's lock but for receives that run meanwhile (which
    /// only lower it).
    fn held(&self) -> (usize, usize) {
        let popped = &self.taken.0.popped;
        let pushed = &self.incoming.0.pushed.0;
        let (out_m, out_b) = (
            popped.messages.load(Ordering::Acquire),
            popped.bytes.load(Ordering::Acquire),
        );
        let (in_m, in_b) = (
            pushed.messages.load(Ordering::Acquire),
            pushed.bytes.load(Ordering::Acquire),
        );
        (in_m.wrapping_sub(out_m), in_b.wrapping_sub(out_b))
    }

    /// Messages pushed so far: a blocked receiver spins on it before it
    /// parks, to see whether anything arrived.
    fn pushes(&self) -> usize {
        self.incoming.0.pushed.0.messages.load(Ordering::Acquire)
    }

    /// Counts a message taken out of the taken queue (its lock held).
    fn count_taken(&self, msg: &Message) {
        self.taken.0.popped.add(1, msg.byte_len());
    }

    /// Whether one more message of `len` bytes fits the capacity.
    fn fits(&self, len: usize) -> bool {
        if self.capacity == Capacity::UNBOUNDED {
            return true;
        }
        let (messages, bytes) = self.held();
        let count_ok = self.capacity.max_messages.is_none_or(|max| messages < max);
        let bytes_ok = self.capacity.max_bytes.is_none_or(|max| bytes + len <= max);
        count_ok && bytes_ok
    }

    /// Queues a message, waking a waiting receiver.
    pub(crate) fn push(&self, msg: Message) -> Result<(), SendError> {
        let mut state = self.lock();
        if state.closed {
            return Err(SendError::Closed);
        }
        let len = msg.byte_len();
        if !self.fits(len) {
            return Err(SendError::Full);
        }
        state.queue.push_back(msg);
        self.incoming.0.pushed.0.add(1, len);
        self.wake_receivers(state);
        Ok(())
    }

    /// Queues many messages from `from`, another node, under one lock and
    /// one wake-up (the receive path of a connection delivers in batches).
    ///
    /// `share` is the most bytes the mailbox should hold queued
    /// ([`Tuning::mailbox_unread_bytes`]), counted as what the messages
    /// hold: each payload plus [`MESSAGE_COST`]. Once it holds that much,
    /// the sender is to be told it is busy ([`Pushed::tell_busy`]; its
    /// later sends fail with `Full` at once, until the mailbox is read down
    /// to half); messages already on the way are still queued up to
    /// [`HARD_CAP_SHARES`] shares of payload bytes and dropped and counted
    /// ([`Pushed::over_share`]) beyond. The hard cap counts payloads alone,
    /// as the sender's queue bound does, so telling a sender busy sooner
    /// never makes its messages on the way be dropped. An empty mailbox
    /// takes a message of any size, so one message up to the largest
    /// allowed always gets through. A consumer that does not keep up thus
    /// holds back its own senders and never the link its messages arrive
    /// on, which carries everything else from that node.
    ///
    /// [`Tuning::mailbox_unread_bytes`]: crate::Tuning::mailbox_unread_bytes
    pub(crate) fn push_many(
        &self,
        msgs: impl IntoIterator<Item = Message>,
        share: usize,
        from: NodeId,
    ) -> Pushed {
        let mut pushed = Pushed::default();
        let mut state = self.lock();
        let bounded = self.capacity != Capacity::UNBOUNDED;
        let mut added_bytes = 0;
        let hard_cap = share.saturating_mul(HARD_CAP_SHARES);
        // Receivers may take messages meanwhile (they only lower this), so a
        // value read once per batch is a safe upper bound.
        let (held_messages, held) = if bounded { (0, 0) } else { self.held() };
        for msg in msgs {
            if state.closed {
                pushed.closed += 1;
                continue;
            }
            let len = msg.byte_len();
            // What the mailbox holds before this message.
            let (queued_messages, queued) = if bounded {
                self.held()
            } else {
                (
                    held_messages + pushed.delivered as usize,
                    held + added_bytes,
                )
            };
            if queued > 0 && queued >= hard_cap {
                pushed.over_share += 1;
                if !state.over_share {
                    state.over_share = true;
                    tracing::warn!(
                        mailbox = ?self.id,
                        from = from.0,
                        queued_bytes = queued,
                        hard_cap,
                        "a mailbox holds twice its share of unread messages from other nodes; \
                         dropping its further messages until it is read (counted in \
                         dropped_unread_share)"
                    );
                }
                continue;
            }
            state.over_share = false;
            if bounded {
                if !self.fits(len) {
                    pushed.full += 1;
                    continue;
                }
                // Keep the counts exact message by message for the bound.
                self.incoming.0.pushed.0.add(1, len);
            } else {
                added_bytes += len;
            }
            state.queue.push_back(msg);
            pushed.delivered += 1;
            if unread_cost(queued_messages + 1, queued + len) >= share
                && !state.told_busy.contains(&from)
            {
                state.told_busy.push(from);
                self.busy_share.store(share, Ordering::Relaxed);
                self.busy.store(true, Ordering::Release);
                // The caller (the core, handling `from`'s input) sends the
                // `Busy` before it next takes the frames user threads
                // queued, so a `Ready` (queued after taking `told_busy`
                // under this lock) always follows it.
                pushed.tell_busy = true;
            }
        }
        if !bounded && pushed.delivered > 0 {
            // One update for the whole batch (still under the lock, so a
            // receiver that swaps the queue out sees counts that cover it).
            self.incoming
                .0
                .pushed
                .0
                .add(pushed.delivered as usize, added_bytes);
        }
        if pushed.delivered > 0 {
            self.wake_receivers(state);
        }
        pushed
    }

    /// Wakes whoever waits for a message (call with the state lock held,
    /// after a push). Costs nothing more when no receiver waits: the
    /// common case for a receiver that keeps up takes no system call and
    /// no atomic besides the lock.
    fn wake_receivers(&self, mut state: MutexGuard<'_, State>) {
        // Unparking a thread that is not asleep yet costs no system call.
        if !state.parked.is_empty() {
            for thread in state.parked.drain(..) {
                thread.unpark();
            }
        }
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
    }

    /// Closes the mailbox; returns the watchers to notify and the linked
    /// mailboxes if this call closed it, `None` if it was already closed.
    fn close(&self, reason: &ExitReason) -> Option<(Vec<Address>, Vec<MailboxId>)> {
        let mut taken = self.lock_taken();
        let mut state = self.lock();
        if state.closed {
            return None;
        }
        state.closed = true;
        state.exit = Some(reason.clone());
        let queue = std::mem::take(&mut state.queue);
        let older = std::mem::take(&mut *taken);
        // Everything queued leaves with the close: count it as taken.
        let pushed = &self.incoming.0.pushed.0;
        let popped = &self.taken.0.popped;
        popped
            .bytes
            .store(pushed.bytes.load(Ordering::Acquire), Ordering::Release);
        popped
            .messages
            .store(pushed.messages.load(Ordering::Acquire), Ordering::Release);
        let watchers = std::mem::take(&mut state.watchers);
        let links = std::mem::take(&mut state.links);
        let told_busy = std::mem::take(&mut state.told_busy);
        self.busy.store(false, Ordering::Release);
        let wakers = std::mem::take(&mut state.wakers);
        let parked = std::mem::take(&mut state.parked);
        drop(state);
        drop(taken);
        // Dropping queued messages may run user destructors: outside the locks.
        drop(queue);
        drop(older);
        wakers.into_iter().for_each(Waker::wake);
        parked.iter().for_each(Thread::unpark);
        // Senders held back from a closed mailbox forget it (their later
        // sends are dropped here as to any closed mailbox).
        if let Some(node) = self.node.upgrade() {
            for peer in told_busy {
                node.queue_control(peer, &crate::control::Control::Ready { target: self.id });
            }
        }
        Some((watchers, links))
    }

    /// Closes the mailbox for `reason` (the first close's reason is the
    /// one every watcher hears), aborts its task if it has one, and tells
    /// watchers and linked mailboxes.
    pub(crate) fn close_and_notify(&self, reason: ExitReason) {
        if let Some((watchers, links)) = self.close(&reason) {
            if let Some(task) = self.task.get() {
                task.abort();
            }
            match self.node.upgrade() {
                Some(node) => node.mailbox_closed(self.id, &reason, watchers, links),
                None => {
                    // The node is gone; local watchers can still be told.
                    for watcher in watchers {
                        watcher.deliver_close(self.id, &reason);
                    }
                }
            }
        }
    }

    /// Links this mailbox to `other` (this side only); `false` if it is
    /// closed, or if it already has `limit` links.
    pub(crate) fn add_link_within(&self, other: MailboxId, limit: usize) -> bool {
        let mut state = self.lock();
        if state.closed || (state.links.len() >= limit && !state.links.contains(&other)) {
            return false;
        }
        if !state.links.contains(&other) {
            state.links.push(other);
        }
        true
    }

    /// Links this mailbox to `other` (this side only); `false` if it is
    /// closed.
    pub(crate) fn add_link(&self, other: MailboxId) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        if !state.links.contains(&other) {
            state.links.push(other);
        }
        true
    }

    /// Removes the link to `other` (this side only); whether there was one.
    pub(crate) fn take_link(&self, other: MailboxId) -> bool {
        let mut state = self.lock();
        match state.links.iter().position(|l| *l == other) {
            Some(index) => {
                state.links.swap_remove(index);
                true
            }
            None => false,
        }
    }

    /// An exit signal from `from`, a linked mailbox that closed for
    /// `reason` (its link already removed): an [`Exit`] message if this
    /// mailbox traps exits, else closes it if the exit is abnormal.
    /// Whether it had an effect.
    ///
    /// The close a linked exit causes runs in a loop, not by recursion
    /// (see [`close_linked`]): a chain of any length closes in constant
    /// stack.
    pub(crate) fn exit_signal(self: &Arc<Self>, from: MailboxId, reason: &ExitReason) -> bool {
        if self.trap_exits.load(Ordering::Acquire) {
            return self
                .push(Message::local(Exit {
                    from,
                    reason: reason.clone(),
                }))
                .is_ok();
        }
        if reason.is_normal() {
            return false;
        }
        close_linked(self.clone(), reason.clone().linked(from));
        true
    }

    /// Messages queued.
    pub(crate) fn queued_messages(&self) -> usize {
        self.held().0
    }

    /// Bytes of the messages queued.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.held().1
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Why the mailbox closed; `None` while it is open.
    pub(crate) fn exit_reason(&self) -> Option<ExitReason> {
        self.lock().exit.clone()
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

    /// Removes the first message of `taken[from..]` that matches.
    fn take_match(
        &self,
        taken: &mut VecDeque<Message>,
        from: usize,
        pred: &mut dyn FnMut(&Message) -> bool,
    ) -> Option<Message> {
        let index = from + taken.iter().skip(from).position(&mut *pred)?;
        let msg = taken.remove(index)?;
        self.count_taken(&msg);
        Some(msg)
    }

    /// Takes the first matching message, moving the incoming queue over to
    /// the receivers' side if needed. With the state lock still held when
    /// nothing matches, so a waiter can register before the next push.
    fn take_or_lock<'a, 'p>(
        &'a self,
        taken: &mut VecDeque<Message>,
        mut pred: Option<&mut (dyn FnMut(&Message) -> bool + 'p)>,
    ) -> Result<Message, MutexGuard<'a, State>> {
        let found = match pred.as_deref_mut() {
            None => self.pop_taken(taken),
            Some(pred) => self.take_match(taken, 0, pred),
        };
        if let Some(msg) = found {
            return Ok(msg);
        }
        let mut state = self.lock();
        if state.queue.is_empty() {
            return Err(state);
        }
        let from = taken.len();
        if taken.is_empty() {
            // The common case: swap whole queues, keeping both allocations.
            std::mem::swap(taken, &mut state.queue);
        } else {
            taken.append(&mut state.queue);
        }
        let found = match pred {
            None => self.pop_taken(taken),
            Some(pred) => self.take_match(taken, from, pred),
        };
        found.ok_or(state)
    }

    /// Takes the oldest message without a predicate: the common receive.
    fn pop_taken(&self, taken: &mut VecDeque<Message>) -> Option<Message> {
        let msg = taken.pop_front()?;
        self.count_taken(&msg);
        Some(msg)
    }

    /// After a receive: if peers were told this mailbox is busy and it is
    /// now under half its share, tells them it is ready (call with no lock
    /// held).
    fn after_take(&self) {
        if !self.busy.load(Ordering::Acquire) {
            return;
        }
        let share = self.busy_share.load(Ordering::Relaxed);
        let (messages, bytes) = self.held();
        if unread_cost(messages, bytes) > share / 2 {
            return;
        }
        self.tell_ready();
    }

    /// Tells every peer told this mailbox is busy that it is ready.
    fn tell_ready(&self) {
        let told = {
            let mut state = self.lock();
            self.busy.store(false, Ordering::Release);
            std::mem::take(&mut state.told_busy)
        };
        if told.is_empty() {
            return;
        }
        if let Some(node) = self.node.upgrade() {
            for peer in told {
                node.queue_control(peer, &crate::control::Control::Ready { target: self.id });
            }
        }
    }

    /// Every receive that may wait comes here. Nothing there: before it
    /// waits, the node's driver may read its sockets from this thread
    /// ([`WakeSignal::receive_inline`](crate::WakeSignal::receive_inline)),
    /// and a message already in a socket is taken without a wake-up.
    fn poll_take<'p>(
        &self,
        cx: &mut Context<'_>,
        mut pred: Option<&mut (dyn FnMut(&Message) -> bool + 'p)>,
    ) -> Poll<Result<Message, RecvError>> {
        if let ready @ Poll::Ready(_) = self.take_or_register(None, pred.as_deref_mut()) {
            return ready;
        }
        if self.receive_inline() {
            // This thread just did the driver's work and may have woken
            // other tasks onto itself (a runtime runs a task woken from its
            // own thread there, and may let no other thread take it): let
            // them run before this one goes on. What it waits for, if it
            // came, is taken on the next poll.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.take_or_register(Some(cx), pred)
    }

    /// Nothing to take: lets the node's sleeping driver read its sockets
    /// from this thread ([`WakeSignal::receive_inline`](crate::WakeSignal::receive_inline));
    /// whether the core got input (look again). Call with no lock held.
    fn receive_inline(&self) -> bool {
        self.node
            .upgrade()
            .is_some_and(|node| node.net.wake.receive_inline())
    }

    /// Takes a message, or registers `cx`'s waker (if given) to wait.
    fn take_or_register<'p>(
        &self,
        cx: Option<&mut Context<'_>>,
        pred: Option<&mut (dyn FnMut(&Message) -> bool + 'p)>,
    ) -> Poll<Result<Message, RecvError>> {
        let mut taken = self.lock_taken();
        match self.take_or_lock(&mut taken, pred) {
            Ok(msg) => {
                drop(taken);
                self.after_take();
                Poll::Ready(Ok(msg))
            }
            Err(mut state) => {
                if state.closed {
                    return Poll::Ready(Err(RecvError::Closed));
                }
                if let Some(cx) = cx {
                    if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                        state.wakers.push(cx.waker().clone());
                    }
                }
                Poll::Pending
            }
        }
    }

    fn try_take(&self) -> Result<Option<Message>, RecvError> {
        let mut taken = self.lock_taken();
        match self.take_or_lock(&mut taken, None) {
            Ok(msg) => {
                drop(taken);
                self.after_take();
                Ok(Some(msg))
            }
            Err(state) if state.closed => Err(RecvError::Closed),
            Err(_) => Ok(None),
        }
    }

    fn take_blocking<'p>(
        &self,
        timeout: Option<Duration>,
        mut pred: Option<&mut (dyn FnMut(&Message) -> bool + 'p)>,
    ) -> Result<Message, RecvError> {
        // A user-thread convenience, not the core: it may read the clock.
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            let mut taken = self.lock_taken();
            let state = match self.take_or_lock(&mut taken, pred.as_deref_mut()) {
                Ok(msg) => {
                    drop(taken);
                    self.after_take();
                    return Ok(msg);
                }
                Err(state) => state,
            };
            drop(taken);
            if state.closed {
                return Err(RecvError::Closed);
            }
            // Exact: pushes count under the lock held here. Read only when
            // nothing is queued, so a receiver working through a batch
            // never touches the senders' cache line.
            let seen = self.pushes();
            drop(state);
            if self.receive_inline() {
                continue;
            }
            // Nothing matched. A busy sender usually pushes again within
            // microseconds: spin a little before parking the thread, which
            // would cost both sides a system call per message.
            if self.spin_for_push(seen) {
                continue;
            }
            let mut state = self.lock();
            if self.pushes() != seen || state.closed {
                continue;
            }
            state.parked.push(std::thread::current());
            drop(state);
            match deadline {
                None => std::thread::park(),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        let me = std::thread::current().id();
                        self.lock().parked.retain(|t| t.id() != me);
                        return Err(RecvError::Timeout);
                    }
                    std::thread::park_timeout(left);
                }
            }
            // Woken by a push (it removed us), or spuriously or by the
            // timeout (remove ourselves before looking again).
            let me = std::thread::current().id();
            self.lock().parked.retain(|t| t.id() != me);
        }
    }

    /// Spins briefly; whether a push happened since `seen`.
    fn spin_for_push(&self, seen: usize) -> bool {
        for i in 0..SPINS {
            if self.pushes() != seen {
                return true;
            }
            if i < SPINS / 2 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        false
    }
}

/// Checks a blocking receiver makes before it parks (about 10-20 µs).
const SPINS: u32 = 200;

/// The receiving end of a mailbox. Dropping it closes the mailbox (with
/// [`ExitReason::Closed`]), except a task's mailbox, which its task closes
/// with the task's own reason (see [`Node::task`](crate::Node::task)).
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

    pub(crate) fn shared(&self) -> &Arc<MailboxShared> {
        &self.shared
    }

    /// A new address of this mailbox.
    pub fn address(&self) -> Address {
        Address::local(self.shared.clone())
    }

    /// Waits for the next message. Fails only when the mailbox is closed.
    pub fn recv(&self) -> Recv<'_, fn(&Message) -> bool> {
        Recv {
            shared: &self.shared,
            any: true,
            pred: |_| true,
        }
    }

    /// Takes the next message if one is queued: `Ok(None)` when the queue is
    /// empty, `Err(Closed)` once the mailbox is closed. Never waits.
    pub fn try_recv(&self) -> Result<Option<Message>, RecvError> {
        self.shared.try_take()
    }

    /// Selective receive: waits for the first message, in arrival order, for
    /// which `pred` is true. Messages that do not match stay queued, in order.
    /// Each wake-up rescans the queue, so keep unmatched backlogs short.
    pub fn recv_match<F: FnMut(&Message) -> bool>(&self, pred: F) -> Recv<'_, F> {
        Recv {
            shared: &self.shared,
            any: false,
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

    /// Waits for the first [`Request`](crate::node::services::Request) (this mailbox is a
    /// service member), leaving other messages queued.
    pub async fn recv_request(&self) -> Result<crate::node::services::Request, RecvError> {
        loop {
            let msg = self
                .recv_match(Message::is::<crate::node::services::Request>)
                .await?;
            if let Ok(request) = msg.take::<crate::node::services::Request>() {
                return Ok(request);
            }
        }
    }

    /// Waits for the first offered tunnel, leaving other messages queued.
    pub async fn recv_tunnel(&self) -> Result<crate::node::tunnel::IncomingTunnel, RecvError> {
        loop {
            let msg = self
                .recv_match(Message::is::<crate::node::tunnel::IncomingTunnel>)
                .await?;
            if let Ok(tunnel) = msg.take::<crate::node::tunnel::IncomingTunnel>() {
                return Ok(tunnel);
            }
        }
    }

    /// Blocks the thread until a message arrives or the mailbox closes.
    pub fn recv_blocking(&self) -> Result<Message, RecvError> {
        self.shared.take_blocking(None, None)
    }

    /// Blocks the thread until a message arrives, the mailbox closes, or the
    /// timeout passes ([`RecvError::Timeout`]).
    pub fn recv_blocking_timeout(&self, timeout: Duration) -> Result<Message, RecvError> {
        self.shared.take_blocking(Some(timeout), None)
    }

    /// Blocking selective receive, with an optional timeout.
    pub fn recv_match_blocking(
        &self,
        timeout: Option<Duration>,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> Result<Message, RecvError> {
        self.shared.take_blocking(timeout, Some(&mut pred))
    }

    /// Exactly how many messages are queued.
    pub fn message_count(&self) -> usize {
        self.shared.queued_messages()
    }

    /// Closes the mailbox: queued messages are dropped, pending and future
    /// receives return [`RecvError::Closed`], sends return
    /// [`SendError::Closed`], names it holds are released, and every watcher
    /// gets [`MailboxClosed`](crate::MailboxClosed) with
    /// [`ExitReason::Closed`]. Closing a task's mailbox ends the task.
    /// Idempotent: the first close's reason is the one watchers hear.
    pub fn close(&self) {
        self.shared.close_and_notify(ExitReason::Closed);
    }

    /// Closes the mailbox with `reason` (see [`close`](Mailbox::close)):
    /// watchers hear `reason`, and linked mailboxes that do not trap exits
    /// close too if it is abnormal ([`ExitReason::is_normal`]). The first
    /// close's reason is the one that counts.
    pub fn close_with(&self, reason: ExitReason) {
        self.shared.close_and_notify(reason);
    }

    /// Links this mailbox and `other`, both ways (Erlang's `link`): when
    /// either closes abnormally, the other is closed with
    /// [`ExitReason::Linked`] — unless it traps exits
    /// ([`trap_exits`](Mailbox::trap_exits)), in which case it gets an
    /// [`Exit`] message (for any exit, normal ones too). A link fires once
    /// and is then gone; a normal exit removes it quietly. `other` may be
    /// on another node: losing that node is an exit with
    /// [`ExitReason::Unreachable`], within the ping deadline or at once on
    /// a reset. Linking to a mailbox that is closed or gone is an exit
    /// with [`ExitReason::NoMailbox`] at once; linking a closed mailbox,
    /// or a mailbox to itself, does nothing.
    ///
    /// A link is also a close watch of each side by the other, so a
    /// separate [`Address::on_close_notify`] between the same two mailboxes
    /// is delivered as the link's exit signal, not as a message. A peer
    /// that predates links (no `FEATURE_EXITS` in its hello) cannot link
    /// back: the link is then one way, from its mailbox's exit to this one.
    pub fn link(&self, other: &Address) {
        if other.id() == self.id() || !self.shared.add_link(other.id()) {
            return;
        }
        other.link_from(&self.address());
    }

    /// Removes a link made with [`link`](Mailbox::link), on both sides.
    /// Does nothing if there is none.
    pub fn unlink(&self, other: &Address) {
        if self.shared.take_link(other.id()) {
            other.unlink_from(&self.address());
        }
    }

    /// Whether exits of linked mailboxes arrive as [`Exit`] messages
    /// (`true`) or close this mailbox when abnormal (`false`, the default),
    /// as Erlang's `process_flag(trap_exit, ...)`. Kills through
    /// [`Address::kill`] are never trapped.
    pub fn trap_exits(&self, trap: bool) {
        self.shared.trap_exits.store(trap, Ordering::Release);
    }

    /// The ids of the mailboxes linked to this one.
    pub fn links(&self) -> Vec<MailboxId> {
        self.shared.lock().links.clone()
    }

    /// Whether the mailbox is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        // A task's mailbox is closed by its task, with the task's reason.
        if self.shared.task.get().is_none() {
            self.shared.close_and_notify(ExitReason::Closed);
        }
    }
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("id", &self.shared.id)
            .finish()
    }
}

/// A mailbox is a [`Stream`](futures_core::Stream) of its messages, in
/// arrival order, ending when the mailbox closes (where [`Mailbox::recv`]
/// returns [`RecvError::Closed`]). Polling is cancel-safe like `recv`: a
/// message leaves the queue only in the poll that returns it, so a
/// `select!` that drops the `next()` future, or a stream combinator that
/// stops polling, loses nothing. The stream is implemented for `&Mailbox`
/// too, so a mailbox can be streamed without giving it up.
///
/// ```
/// use futures_lite::StreamExt;
/// use reign_proto::{Incarnation, Node};
///
/// # futures_lite::future::block_on(async {
/// let node = Node::local(Incarnation(1));
/// let (addr, mut mailbox) = node.new_mailbox();
/// for n in 0..3u32 {
///     addr.send(n).unwrap();
/// }
/// let first: Vec<u32> = (&mailbox)
///     .take(2)
///     .map(|msg| msg.downcast::<u32>().unwrap())
///     .collect()
///     .await;
/// assert_eq!(first, [0, 1]);
/// assert_eq!(mailbox.next().await.unwrap().downcast::<u32>().unwrap(), 2);
/// mailbox.close();
/// assert!(mailbox.next().await.is_none()); // a closed mailbox ends the stream
/// # });
/// ```
impl futures_core::Stream for Mailbox {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.shared.poll_next(cx)
    }
}

/// The same stream as `Mailbox`'s, through a shared reference.
impl futures_core::Stream for &Mailbox {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.shared.poll_next(cx)
    }
}

impl MailboxShared {
    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        match self.poll_take(cx, None) {
            Poll::Ready(Ok(msg)) => Poll::Ready(Some(msg)),
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The future of [`Mailbox::recv`] and [`Mailbox::recv_match`].
#[must_use = "futures do nothing unless polled"]
pub struct Recv<'a, F> {
    shared: &'a MailboxShared,
    /// Any message will do (no predicate to run).
    any: bool,
    pred: F,
}

impl<F: FnMut(&Message) -> bool + Unpin> Future for Recv<'_, F> {
    type Output = Result<Message, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let pred: Option<&mut dyn FnMut(&Message) -> bool> =
            if this.any { None } else { Some(&mut this.pred) };
        this.shared.poll_take(cx, pred)
    }
}
