//! Tasks tied to mailboxes: a future that owns a mailbox, whose exit (a
//! return, an error, a panic, an abort) closes that mailbox with the
//! matching [`ExitReason`], and which closing the mailbox (a kill through
//! its address, a linked exit, the node's shutdown) aborts.
//!
//! Runtime-free: [`Node::task`] returns the [`Task`] future and its
//! address, and the host spawns it (`reign_driver::Reign::spawn` does so on
//! any of the three runtimes). Aborting needs nothing from the runtime:
//! the task is a wrapper that drops the user's future at its next poll once
//! asked to, and closing the mailbox wakes it for that poll.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::node::address::Address;
use crate::node::mailbox::{Mailbox, MailboxShared};
use crate::node::Node;
use crate::poison::lock;
use crate::system::ExitReason;

/// How a task's output becomes its mailbox's [`ExitReason`]: `()` and
/// `Ok(_)` are [`Normal`](ExitReason::Normal), `Err(e)` is
/// [`Error`](ExitReason::Error) with `e`'s text, and an [`ExitReason`] is
/// taken as it is.
pub trait TaskExit {
    /// The exit reason this output stands for.
    fn into_exit_reason(self) -> ExitReason;
}

impl TaskExit for () {
    fn into_exit_reason(self) -> ExitReason {
        ExitReason::Normal
    }
}

impl TaskExit for ExitReason {
    fn into_exit_reason(self) -> ExitReason {
        self
    }
}

impl<T, E: fmt::Display> TaskExit for Result<T, E> {
    fn into_exit_reason(self) -> ExitReason {
        match self {
            Ok(_) => ExitReason::Normal,
            Err(e) => ExitReason::Error(ExitReason::bounded_text(e.to_string())),
        }
    }
}

/// The abort switch shared by a task and its mailbox.
#[derive(Default)]
pub(crate) struct TaskAbort {
    aborted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl TaskAbort {
    /// Asks the task to stop: its next poll drops the user's future.
    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        if let Some(waker) = lock(&self.waker).take() {
            waker.wake();
        }
    }

    fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }
}

type UserFuture = Pin<Box<dyn Future<Output = ExitReason> + Send>>;

/// A spawned task's future, made by [`Node::task`]: spawn it on any
/// runtime. It completes when the user's future returns, panics (the
/// panic is caught), or when its mailbox is closed from outside; its
/// mailbox is then closed with the reason. Dropping it before it completes
/// closes the mailbox with [`ExitReason::Killed`].
#[must_use = "a task does nothing until it is spawned"]
pub struct Task {
    future: Option<UserFuture>,
    mailbox: Arc<MailboxShared>,
    abort: Arc<TaskAbort>,
}

impl Task {
    /// Drops the user's future (catching a panic in its destructors) and
    /// closes the mailbox with `reason` (a no-op if it closed already).
    fn finish(&mut self, reason: ExitReason) {
        if let Some(future) = self.future.take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(future)));
        }
        self.mailbox.close_and_notify(reason);
    }
}

impl Future for Task {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(future) = this.future.as_mut() else {
            return Poll::Ready(());
        };
        {
            let mut waker = lock(&this.abort.waker);
            match waker.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        // Checked after the waker is stored, so an abort between the two
        // still wakes this task.
        if this.abort.is_aborted() {
            this.finish(ExitReason::Killed);
            return Poll::Ready(());
        }
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(reason)) => {
                this.finish(reason);
                Poll::Ready(())
            }
            Err(payload) => {
                this.finish(panic_reason(&*payload));
                Poll::Ready(())
            }
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if self.future.is_some() {
            self.finish(ExitReason::Killed);
        }
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("mailbox", &self.mailbox.id)
            .field("done", &self.future.is_none())
            .finish()
    }
}

/// The text of a caught panic's payload.
fn panic_text(payload: &(dyn Any + Send)) -> String {
    let text = if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a payload that is not text".to_string()
    };
    ExitReason::bounded_text(text)
}

impl Node {
    /// A task tied to a new mailbox: `f` receives the mailbox and its
    /// future runs when the returned [`Task`] is spawned (on any runtime;
    /// each adapter's `Node::spawn` does both). The mailbox closes with
    /// the task's exit: [`ExitReason::Normal`] when the future returns `()`
    /// or `Ok`, [`ExitReason::Error`] for `Err`, [`ExitReason::Panic`] with
    /// the message when it panics (the panic is caught). Closing the
    /// mailbox from outside — [`Address::kill`], a linked exit, the node's
    /// shutdown, or [`Mailbox::close`] by the task itself — ends the task
    /// at its next poll, even one stuck in an `.await` that never
    /// completes (a task that blocks its thread cannot be stopped by
    /// anyone). The [`Mailbox`] handle `f` gets does not close the mailbox
    /// when dropped: the task does, when it ends.
    ///
    /// ```
    /// use reign_proto::{ExitReason, Incarnation, MailboxClosed, Node};
    ///
    /// let node = Node::local(Incarnation(1));
    /// let (watcher, notes) = node.new_mailbox();
    /// let (addr, task) = node.task(|mailbox| async move {
    ///     let _keep = mailbox;
    ///     std::future::pending::<()>().await
    /// });
    /// addr.on_close_notify(&watcher);
    /// addr.kill().unwrap();
    /// drop(task); // a runtime would poll it once more; dropping ends it too
    /// let note: MailboxClosed = notes.try_recv().unwrap().unwrap().downcast().unwrap();
    /// assert_eq!(note.reason, ExitReason::Killed);
    /// ```
    pub fn task<F, Fut>(&self, f: F) -> (Address, Task)
    where
        F: FnOnce(Mailbox) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: TaskExit,
    {
        let (address, mailbox) = self.new_mailbox();
        let task = Self::task_for(mailbox, f);
        (address, task)
    }

    /// [`task`](Node::task), with the new mailbox linked to `to` before the
    /// task starts (Erlang's `spawn_link`; see [`Mailbox::link`]), so no
    /// exit of either is missed.
    pub fn task_linked<F, Fut>(&self, to: &Address, f: F) -> (Address, Task)
    where
        F: FnOnce(Mailbox) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: TaskExit,
    {
        let (address, mailbox) = self.new_mailbox();
        mailbox.link(to);
        let task = Self::task_for(mailbox, f);
        (address, task)
    }

    fn task_for<F, Fut>(mailbox: Mailbox, f: F) -> Task
    where
        F: FnOnce(Mailbox) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: TaskExit,
    {
        let shared = mailbox.shared().clone();
        let abort = Arc::new(TaskAbort::default());
        // Set before anything else can see the mailbox as a task's.
        let _ = shared.task.set(abort.clone());
        let mut task = Task {
            future: None,
            mailbox: shared,
            abort,
        };
        if task.mailbox.is_closed() {
            // Closed already (linked to a mailbox that was gone): the task
            // never starts.
            drop(mailbox);
            return task;
        }
        task.future = Some(Box::pin(async move { f(mailbox).await.into_exit_reason() }));
        task
    }
}

/// The reason a caught panic gives.
pub(crate) fn panic_reason(payload: &(dyn Any + Send)) -> ExitReason {
    ExitReason::Panic(panic_text(payload))
}
