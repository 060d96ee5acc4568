//! What the relay writes to one client: a byte queue and the task that
//! drains it into the socket.
//!
//! Iris batches writers and flushes only when none is pending; the queue
//! does the same: producers append whole packets, the writer task takes
//! everything queued in one swap and writes it. Producers of bulk (events,
//! requests, tunnel chunks, replies) first wait for [`Outbox::room`]: the
//! queue holds at most [`SOFT_CAP`] before they stop, so a client that
//! does not read its socket holds its own deliveries back (its mailboxes
//! fill and reign's limits apply) instead of growing the relay's memory.
//! Small control packets (credit, acks, closes) are appended without
//! waiting: a producer sends at most a few of them per bulk packet. The
//! answers the reading task gives at once to what the client asked for
//! (an over-cap request or tunnel refused) wait for room like bulk: the
//! client could ask for them without end, and waiting stops its reading.

use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Instant;

use reign_proto::poison::lock;

use super::CLOSE_FLUSH_TIMEOUT;
use crate::runtime::Runtime;
use crate::signal::{race, Either};

/// Bytes queued for one client above which bulk producers wait: a few
/// tunnel chunks' worth keeps the socket busy between two wake-ups of the
/// writer, and bounds what a client that stops reading makes the relay
/// hold (this plus one packet per waiting producer).
pub const SOFT_CAP: usize = 1 << 20;

#[derive(Default)]
struct State {
    queue: Vec<u8>,
    /// No more packets: the writer shuts the socket once the queue is empty.
    finishing: bool,
    /// The socket failed or the writer ended: producers stop.
    dead: bool,
    writer: Option<Waker>,
    waiting: Vec<Waker>,
    /// When a finishing client's socket is shut whatever is left unwritten.
    finish_at: Option<Instant>,
    /// The writer while it waits on the socket, to learn of `finish_at`.
    blocked: Option<Waker>,
}

/// The queue of one client's outgoing bytes.
#[derive(Default)]
pub struct Outbox {
    state: Mutex<State>,
}

impl Outbox {
    /// A new, empty queue.
    pub fn new() -> Arc<Outbox> {
        Arc::new(Outbox::default())
    }

    /// Appends a packet; `false` if the client is gone or finishing.
    pub fn push(&self, packet: &[u8]) -> bool {
        let mut state = lock(&self.state);
        if state.dead || state.finishing {
            return false;
        }
        state.queue.extend_from_slice(packet);
        if let Some(w) = state.writer.take() {
            drop(state);
            w.wake();
        }
        true
    }

    /// Bytes queued and not yet taken by the writer.
    pub fn queued(&self) -> usize {
        lock(&self.state).queue.len()
    }

    /// Waits until the queue is under [`SOFT_CAP`]; `false` if the client
    /// is gone.
    pub async fn room(&self) -> bool {
        std::future::poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.dead || state.finishing {
                return Poll::Ready(false);
            }
            if state.queue.len() < SOFT_CAP {
                return Poll::Ready(true);
            }
            if !state.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                state.waiting.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Appends a last packet (if any) and lets the writer shut the socket
    /// once everything queued is written.
    pub fn finish(&self, last: Option<&[u8]>) {
        let mut state = lock(&self.state);
        if let (Some(packet), false) = (last, state.dead) {
            state.queue.extend_from_slice(packet);
        }
        state.finishing = true;
        state.finish_at = Some(Instant::now() + CLOSE_FLUSH_TIMEOUT);
        let writer = state.writer.take();
        let blocked = state.blocked.take();
        let waiting = std::mem::take(&mut state.waiting);
        drop(state);
        writer
            .into_iter()
            .chain(blocked)
            .chain(waiting)
            .for_each(Waker::wake);
    }

    /// Completes when the client is finishing, with the instant its
    /// socket is shut whatever is left.
    async fn finish_at(&self) -> Instant {
        std::future::poll_fn(|cx| {
            let mut state = lock(&self.state);
            match state.finish_at {
                Some(at) => Poll::Ready(at),
                None => {
                    state.blocked = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    fn mark_dead(&self) {
        let mut state = lock(&self.state);
        state.dead = true;
        let waiting = std::mem::take(&mut state.waiting);
        drop(state);
        waiting.into_iter().for_each(Waker::wake);
    }

    /// The writer task: drains the queue into `socket` until finished or
    /// the socket fails, then shuts the socket's write side. Once the
    /// client is finishing, a socket the client does not read is shut after
    /// [`CLOSE_FLUSH_TIMEOUT`] with what is left unwritten.
    pub async fn run_writer<R: Runtime>(self: Arc<Outbox>, mut socket: R::Writer, rt: R) {
        let mut batch = Vec::new();
        loop {
            let finishing = std::future::poll_fn(|cx| {
                let mut state = lock(&self.state);
                if !state.queue.is_empty() {
                    std::mem::swap(&mut batch, &mut state.queue);
                    let waiting = std::mem::take(&mut state.waiting);
                    drop(state);
                    waiting.into_iter().for_each(Waker::wake);
                    return Poll::Ready(false);
                }
                if state.finishing {
                    return Poll::Ready(true);
                }
                state.writer = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            if finishing {
                break;
            }
            let mut written = 0;
            while written < batch.len() {
                let write =
                    std::future::poll_fn(|cx| R::poll_write(&mut socket, cx, &batch[written..]));
                let give_up = async {
                    let at = self.finish_at().await;
                    rt.sleep_until(at).await;
                };
                match race(write, give_up).await {
                    Either::Right(()) | Either::Left(Ok(0)) | Either::Left(Err(_)) => {
                        self.mark_dead();
                        return;
                    }
                    Either::Left(Ok(n)) => written += n,
                }
            }
            batch.clear();
            // A burst's large buffer is not kept for an idle client.
            if batch.capacity() > SOFT_CAP {
                batch = Vec::new();
            }
        }
        let _ = std::future::poll_fn(|cx| R::poll_close(&mut socket, cx)).await;
        self.mark_dead();
    }
}
