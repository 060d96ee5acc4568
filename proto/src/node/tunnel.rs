//! Tunnels: ordered, reliable, flow-controlled, bidirectional streams of
//! messages between a caller and one member of a service group,
//! multiplexed over the existing node-to-node connection.
//!
//! Flow control is credit-based, in bytes: each end grants the other a
//! window (its `tunnel_window`) when the tunnel opens. A sender spends
//! credit on every piece it sends (a piece is at most
//! [`crate::codec::FRAGMENT_LEN`] and never more than the
//! credit it holds, so a window smaller than a piece still moves), and waits
//! when it has none; `unacknowledged_bytes` never exceeds the window.
//!
//! A message may be larger than the window (anything up to
//! `max_message_len`), so the receiver cannot wait for the application to
//! take a whole message before returning credit: it would wait for pieces
//! the sender has no credit to send. The receiver counts the bytes it was
//! sent and has not credited back (`charged`) and returns credit for every
//! byte it no longer needs to hold against the window:
//!
//! - bytes the application took with `recv`;
//! - bytes of a partial message discarded because its sender gave up
//!   (an abort piece), so an abandoned send gives its credit back;
//! - bytes buffered into the partial message *while no complete message
//!   waits to be read*: the message is being assembled for a reader that
//!   is keeping up, and the rest of it needs credit to arrive.
//!
//! While complete messages wait unread, nothing more is credited, so a
//! reader that stops stops the writer. A receiver therefore holds at most
//! one credited message (≤ `max_message_len`) plus one window of charged
//! bytes, whatever the peer does. Credit goes back in lumps of at least a
//! quarter window (fewer, smaller credit frames); a sender out of credit
//! means the receiver holds a whole window, so a lump is always due once
//! the reader catches up.
//!
//! The receiver checks both bounds on every piece: a peer that sends beyond
//! the credit it was given, or a message longer than this node's
//! `max_message_len`, broke the protocol and its tunnel is closed. A sender
//! refuses a message longer than its own `max_message_len` at once with
//! [`TunnelError::TooLarge`]. Two nodes should share `max_message_len` (a
//! cluster's spec gives every node the same tuning); a larger message sent to
//! a node with a smaller bound closes the tunnel with a protocol error.
//!
//! Every operation a caller can abandon gives back what it held: a send
//! dropped part way sends an abort piece (the receiver discards the partial
//! message and credits its bytes back); a dropped receive holds nothing; a
//! dropped open closes the half-open tunnel, which removes its entry on both
//! nodes (a member accepting afterwards gets an error; one whose accept
//! crossed the close gets a tunnel that reports it closed).
//!
//! Messages larger than a piece travel in pieces and are put back together.
//! A tunnel costs a few hundred bytes while idle: ten thousand of them
//! between two nodes are cheap (the fabric reign learns from opened a TCP
//! connection per tunnel and fell over at about 300).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::codec::frame::{TunnelOp, TUNNEL_ABORT, TUNNEL_LAST};
use crate::codec::FRAGMENT_LEN;
use crate::error::SendError;
use crate::id::NodeId;
use crate::node::NodeInner;
use crate::poison::lock;

/// Why a tunnel operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TunnelError {
    /// The other end closed the tunnel (or this end did).
    Closed,
    /// The other end closed it with an error, or refused to open it.
    Remote(String),
    /// The member did not accept in time, or a send or receive timed out.
    Timeout,
    /// The service has no member, or the addressed mailbox does not exist.
    NoMember,
    /// The other end's node became unreachable.
    Unreachable,
    /// The other end broke the protocol (sent beyond its credit).
    Protocol(String),
    /// The tunnel could not be opened (the node is shutting down, …).
    Send(SendError),
    /// The message is longer than this node's `max_message_len`; nothing
    /// was sent and the tunnel stays usable.
    TooLarge {
        /// The message's length in bytes.
        len: usize,
        /// This node's `max_message_len`.
        max: usize,
    },
}

impl fmt::Display for TunnelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelError::Closed => write!(f, "the tunnel is closed"),
            TunnelError::Remote(e) => write!(f, "the other end closed the tunnel: {e}"),
            TunnelError::Timeout => write!(f, "the tunnel operation timed out"),
            TunnelError::NoMember => write!(f, "no member to open a tunnel to"),
            TunnelError::Unreachable => write!(f, "the other end's node became unreachable"),
            TunnelError::Protocol(e) => write!(f, "tunnel protocol violation: {e}"),
            TunnelError::Send(e) => write!(f, "{e}"),
            TunnelError::TooLarge { len, max } => write!(
                f,
                "a tunnel message of {len} bytes is over the {max} byte maximum"
            ),
        }
    }
}

/// [`TunnelError::Send`] exposes the [`SendError`] it wraps.
impl std::error::Error for TunnelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TunnelError::Send(e) => Some(e),
            _ => None,
        }
    }
}

/// Identifies a tunnel on one node: the node at the other end, the id the
/// opener chose, and whether this node opened it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TunnelKey {
    pub(crate) peer: NodeId,
    pub(crate) id: u64,
    pub(crate) opened_here: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum EndPhase {
    /// Opened here, waiting for the member to accept.
    Opening,
    /// Opened by the peer, waiting for the local member to accept.
    Offered,
    Open,
    /// Closed: `None` for a normal close.
    Closed(Option<TunnelError>),
}

/// The smallest credit window a tunnel uses: a window of 0 (a mistaken
/// `tunnel_window`) would never let a byte through.
const MIN_WINDOW: usize = 1;

/// The largest credit window: credit travels as a `u32` on the wire.
const MAX_WINDOW: usize = u32::MAX as usize;

/// A receiver returns credit in lumps of at least `window / GRANT_DIVISOR`
/// bytes: one credit frame per quarter window instead of one per message,
/// while a writer still never waits for a lump the reader already freed
/// (a writer out of credit means a whole window is charged).
const GRANT_DIVISOR: usize = 4;

struct State {
    phase: EndPhase,
    /// Bytes this end may still send.
    credit: usize,
    /// Bytes sent and not yet credited back.
    unacknowledged: usize,
    /// Complete messages received and not yet taken by the application.
    inbox: VecDeque<Bytes>,
    inbox_bytes: usize,
    /// The message being received, piece by piece.
    partial: Vec<u8>,
    /// Bytes received and not yet credited back: the receiver's view of the
    /// sender's `unacknowledged` (never more than the window).
    charged: usize,
    send_waker: Option<Waker>,
    recv_waker: Option<Waker>,
}

impl State {
    /// Credit to return now (taken off `charged`), or 0. Bytes are held
    /// against the window while complete messages wait unread; otherwise
    /// everything charged may go back (see the module header), in a lump
    /// of at least a quarter window unless `all` (an abandoned message's
    /// bytes go back at once, so the sender ends with its whole window).
    fn take_grant(&mut self, window: usize, all: bool) -> usize {
        if self.phase != EndPhase::Open {
            return 0;
        }
        let hold = if self.inbox.is_empty() {
            0
        } else {
            self.inbox_bytes + self.partial.len()
        };
        let free = self.charged.saturating_sub(hold);
        if free > 0 && (all || free >= (window / GRANT_DIVISOR).max(1)) {
            self.charged -= free;
            free
        } else {
            0
        }
    }
}

pub(crate) struct TunnelShared {
    pub(crate) key: TunnelKey,
    node: Weak<NodeInner>,
    /// The credit window this end grants (and checks the peer against).
    pub(in crate::node) window: usize,
    /// The longest message this end sends or accepts.
    max_message_len: usize,
    state: Mutex<State>,
}

impl TunnelShared {
    pub(crate) fn new(
        key: TunnelKey,
        node: Weak<NodeInner>,
        window: usize,
        max_message_len: usize,
        credit: usize,
    ) -> TunnelShared {
        TunnelShared {
            key,
            node,
            window: window.clamp(MIN_WINDOW, MAX_WINDOW),
            max_message_len,
            state: Mutex::new(State {
                phase: if key.opened_here {
                    EndPhase::Opening
                } else {
                    EndPhase::Offered
                },
                credit,
                unacknowledged: 0,
                inbox: VecDeque::new(),
                inbox_bytes: 0,
                partial: Vec::new(),
                charged: 0,
                send_waker: None,
                recv_waker: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn send_op(&self, op: TunnelOp) -> Result<(), SendError> {
        let node = self.node.upgrade().ok_or(SendError::NodeShutdown)?;
        node.send_tunnel_op(self.key, op)
    }

    fn wake(state: &mut State) {
        if let Some(w) = state.send_waker.take() {
            w.wake();
        }
        if let Some(w) = state.recv_waker.take() {
            w.wake();
        }
    }

    /// Ends the tunnel here (without telling the other end).
    pub(crate) fn finish(&self, error: Option<TunnelError>) {
        let mut state = self.lock();
        if !matches!(state.phase, EndPhase::Closed(_)) {
            state.phase = EndPhase::Closed(error);
            state.partial = Vec::new();
            Self::wake(&mut state);
        }
    }

    /// Closes the tunnel and tells the other end (once).
    fn close_with(&self, reason: &str) {
        let was_live = {
            let mut state = self.lock();
            let live = !matches!(state.phase, EndPhase::Closed(_));
            if live {
                state.phase = EndPhase::Closed(None);
                Self::wake(&mut state);
            }
            live
        };
        if was_live {
            let _ = self.send_op(TunnelOp::Close {
                reason: Bytes::copy_from_slice(reason.as_bytes()),
            });
            if let Some(node) = self.node.upgrade() {
                node.forget_tunnel(self.key);
            }
        }
    }

    /// Applies an operation from the other end: `Ok` holds the credit to
    /// return to it (0 for none), `Err` is a protocol error.
    pub(crate) fn on_op(&self, op: TunnelOp) -> Result<usize, String> {
        let abort = matches!(op, TunnelOp::Data { flags, .. } if flags & TUNNEL_ABORT != 0);
        let mut state = self.lock();
        match op {
            TunnelOp::Accept { credit } => {
                if state.phase != EndPhase::Opening {
                    return Err("an accept for a tunnel that is not opening".into());
                }
                state.phase = EndPhase::Open;
                state.credit = credit as usize;
            }
            TunnelOp::Reject { reason } => {
                state.phase = EndPhase::Closed(Some(TunnelError::Remote(
                    String::from_utf8_lossy(&reason).into_owned(),
                )));
            }
            TunnelOp::Data { flags, chunk } => {
                if state.phase != EndPhase::Open {
                    return Err("data on a tunnel that is not open".into());
                }
                if flags & TUNNEL_ABORT != 0 {
                    // Its sender gave up: the bytes go, and their credit
                    // goes back (take_grant below).
                    state.partial = Vec::new();
                } else {
                    if state.charged + chunk.len() > self.window {
                        return Err(format!(
                            "data beyond the {} byte credit window",
                            self.window
                        ));
                    }
                    if state.partial.len() + chunk.len() > self.max_message_len {
                        return Err(format!(
                            "a message of more than {} bytes",
                            self.max_message_len
                        ));
                    }
                    state.charged += chunk.len();
                    if flags & TUNNEL_LAST != 0 && state.partial.is_empty() {
                        // A whole message in one piece: no copy.
                        state.inbox_bytes += chunk.len();
                        state.inbox.push_back(chunk);
                    } else {
                        state.partial.extend_from_slice(&chunk);
                        if flags & TUNNEL_LAST != 0 {
                            let message = Bytes::from(std::mem::take(&mut state.partial));
                            state.inbox_bytes += message.len();
                            state.inbox.push_back(message);
                        }
                    }
                }
            }
            TunnelOp::Credit { bytes } => {
                let bytes = bytes as usize;
                if bytes > state.unacknowledged {
                    return Err("credit for more than was sent".into());
                }
                state.unacknowledged -= bytes;
                state.credit += bytes;
            }
            TunnelOp::Close { reason } => {
                let error = (!reason.is_empty())
                    .then(|| TunnelError::Remote(String::from_utf8_lossy(&reason).into_owned()));
                state.phase = EndPhase::Closed(error);
                state.partial = Vec::new();
            }
            TunnelOp::Open { .. } => return Err("a second open for one tunnel".into()),
        }
        let grant = state.take_grant(self.window, abort);
        Self::wake(&mut state);
        Ok(grant)
    }

    /// Returns `bytes` of credit to the other end.
    pub(in crate::node) fn grant(&self, bytes: usize) {
        if bytes > 0 {
            let _ = self.send_op(TunnelOp::Credit {
                bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
            });
        }
    }

    fn closed_error(phase: &EndPhase) -> Option<TunnelError> {
        match phase {
            EndPhase::Closed(Some(e)) => Some(e.clone()),
            EndPhase::Closed(None) => Some(TunnelError::Closed),
            _ => None,
        }
    }
}

/// A tunnel end. Dropping it closes the tunnel.
///
/// Sending waits for credit; receiving waits for a message. Both are plain
/// futures with no timer of their own: the runtime adapters add timeouts.
pub struct Tunnel {
    shared: Arc<TunnelShared>,
}

impl Tunnel {
    /// Sends one message (empty is fine, and anything up to this node's
    /// `max_message_len`, whatever the credit window; longer fails at once
    /// with [`TunnelError::TooLarge`]). Completes once every piece has been
    /// handed to the connection, waiting for credit as needed. Dropped part
    /// way, the other end discards the partial message and gives its credit
    /// back; the tunnel stays usable.
    pub fn send(&self, message: impl Into<Bytes>) -> TunnelSend<'_> {
        TunnelSend {
            tunnel: &self.shared,
            message: message.into(),
            offset: 0,
            started: false,
            done: false,
        }
    }

    /// Receives the next message. After the other end closes, the messages
    /// that arrived first are still delivered, then the close.
    pub fn recv(&self) -> TunnelRecv<'_> {
        TunnelRecv {
            tunnel: &self.shared,
        }
    }

    /// The poll form of [`recv`](Tunnel::recv), for byte-stream adapters
    /// and hand-written futures: `Ready` with the next message or the
    /// tunnel's end, or `Pending` with `cx`'s waker kept for the next
    /// arrival. Nothing is taken from the tunnel unless it returns `Ready`.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Bytes, TunnelError>> {
        poll_recv(&self.shared, cx)
    }

    /// Sends a prefix of `buf` as one whole message without waiting: as many
    /// bytes as the credit, a piece ([`FRAGMENT_LEN`]) and `max_message_len`
    /// allow at once, and returns how many (`Ok(0)` for an empty `buf`).
    /// With no credit it returns `Pending` and wakes `cx` when credit
    /// comes back. Nothing is half sent, so dropping the caller between
    /// polls needs no abort: this is what a byte stream's `poll_write`
    /// calls.
    pub fn poll_send_some(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, TunnelError>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let len = {
            let mut state = self.shared.lock();
            if let Some(e) = TunnelShared::closed_error(&state.phase) {
                return Poll::Ready(Err(e));
            }
            if state.phase != EndPhase::Open || state.credit == 0 {
                state.send_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let len = buf
                .len()
                .min(FRAGMENT_LEN)
                .min(state.credit)
                .min(self.shared.max_message_len.max(1));
            state.credit -= len;
            state.unacknowledged += len;
            len
        };
        let chunk = Bytes::copy_from_slice(&buf[..len]);
        let op = TunnelOp::Data {
            flags: TUNNEL_LAST,
            chunk,
        };
        if let Err(e) = self.shared.send_op(op) {
            let closed = TunnelShared::closed_error(&self.shared.lock().phase);
            return Poll::Ready(Err(closed.unwrap_or(TunnelError::Send(e))));
        }
        Poll::Ready(Ok(len))
    }

    /// Closes the tunnel; the other end sees [`TunnelError::Closed`].
    pub fn close(&self) {
        self.shared.close_with("");
    }

    /// Whether the tunnel is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.shared.lock().phase, EndPhase::Closed(_))
    }

    /// Bytes sent and not yet credited back by the receiver: never more than
    /// the credit window.
    pub fn unacknowledged_bytes(&self) -> usize {
        self.shared.lock().unacknowledged
    }

    /// Bytes received and not yet taken by [`recv`](Tunnel::recv).
    pub fn buffered_bytes(&self) -> usize {
        let state = self.shared.lock();
        state.inbox_bytes + state.partial.len()
    }

    /// The credit window each end grants.
    pub fn window(&self) -> usize {
        self.shared.window
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.shared.close_with("");
    }
}

impl fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel")
            .field("peer", &self.shared.key.peer)
            .field("id", &self.shared.key.id)
            .finish()
    }
}

/// The future of [`Tunnel::send`].
#[must_use = "futures do nothing unless polled"]
pub struct TunnelSend<'a> {
    tunnel: &'a TunnelShared,
    message: Bytes,
    offset: usize,
    started: bool,
    done: bool,
}

impl Future for TunnelSend<'_> {
    type Output = Result<(), TunnelError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let total = this.message.len();
        if !this.started && total > this.tunnel.max_message_len {
            this.done = true;
            return Poll::Ready(Err(TunnelError::TooLarge {
                len: total,
                max: this.tunnel.max_message_len,
            }));
        }
        loop {
            if this.started && this.offset >= total {
                this.done = true;
                return Poll::Ready(Ok(()));
            }
            let remaining = total - this.offset;
            let len = {
                let mut state = this.tunnel.lock();
                if let Some(e) = TunnelShared::closed_error(&state.phase) {
                    this.done = true;
                    return Poll::Ready(Err(e));
                }
                if state.phase != EndPhase::Open || (remaining > 0 && state.credit == 0) {
                    state.send_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                // As much as the credit allows: a window smaller than a
                // piece still moves, in smaller pieces.
                let len = remaining.min(FRAGMENT_LEN).min(state.credit);
                state.credit -= len;
                state.unacknowledged += len;
                len
            };
            let end = this.offset + len;
            let flags = if end >= total { TUNNEL_LAST } else { 0 };
            let chunk = this.message.slice(this.offset..end);
            if let Err(e) = this.tunnel.send_op(TunnelOp::Data { flags, chunk }) {
                this.done = true;
                let closed = TunnelShared::closed_error(&this.tunnel.lock().phase);
                return Poll::Ready(Err(closed.unwrap_or(TunnelError::Send(e))));
            }
            this.started = true;
            this.offset = end;
        }
    }
}

impl Drop for TunnelSend<'_> {
    fn drop(&mut self) {
        // Given up half way (a timeout): the receiver discards the piece.
        if self.started && !self.done && self.offset < self.message.len() {
            let _ = self.tunnel.send_op(TunnelOp::Data {
                flags: TUNNEL_ABORT,
                chunk: Bytes::new(),
            });
        }
    }
}

/// The future of [`Tunnel::recv`].
#[must_use = "futures do nothing unless polled"]
pub struct TunnelRecv<'a> {
    tunnel: &'a TunnelShared,
}

impl Future for TunnelRecv<'_> {
    type Output = Result<Bytes, TunnelError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        poll_recv(self.tunnel, cx)
    }
}

/// Takes the next message of `tunnel`, or keeps `cx`'s waker.
fn poll_recv(tunnel: &TunnelShared, cx: &mut Context<'_>) -> Poll<Result<Bytes, TunnelError>> {
    let (message, grant) = {
        let mut state = tunnel.lock();
        match state.inbox.pop_front() {
            Some(message) => {
                state.inbox_bytes -= message.len();
                let grant = state.take_grant(tunnel.window, false);
                (message, grant)
            }
            None => {
                if let Some(e) = TunnelShared::closed_error(&state.phase) {
                    return Poll::Ready(Err(e));
                }
                state.recv_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
    };
    tunnel.grant(grant);
    Poll::Ready(Ok(message))
}

/// A tunnel offered to a member: delivered to its mailbox (test with
/// `msg.is::<IncomingTunnel>()`, or use
/// [`Mailbox::recv_tunnel`](crate::Mailbox::recv_tunnel)). Accept or reject it;
/// dropping it rejects it.
pub struct IncomingTunnel {
    shared: Option<Arc<TunnelShared>>,
}

impl IncomingTunnel {
    pub(crate) fn new(shared: Arc<TunnelShared>) -> IncomingTunnel {
        IncomingTunnel {
            shared: Some(shared),
        }
    }

    /// Accepts: the caller's open completes, and both ends may send.
    pub fn accept(mut self) -> Result<Tunnel, TunnelError> {
        let shared = self.shared.take().ok_or(TunnelError::Closed)?;
        {
            let mut state = shared.lock();
            if let Some(e) = TunnelShared::closed_error(&state.phase) {
                return Err(e);
            }
            state.phase = EndPhase::Open;
        }
        shared
            .send_op(TunnelOp::Accept {
                credit: shared.window as u32,
            })
            .map_err(TunnelError::Send)?;
        Ok(Tunnel { shared })
    }

    /// Refuses the tunnel; the caller gets [`TunnelError::Remote`].
    pub fn reject(mut self, reason: &str) {
        if let Some(shared) = self.shared.take() {
            reject(&shared, reason);
        }
    }
}

fn reject(shared: &TunnelShared, reason: &str) {
    shared.finish(None);
    let _ = shared.send_op(TunnelOp::Reject {
        reason: Bytes::copy_from_slice(reason.as_bytes()),
    });
    if let Some(node) = shared.node.upgrade() {
        node.forget_tunnel(shared.key);
    }
}

impl Drop for IncomingTunnel {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            reject(&shared, "the member did not accept the tunnel");
        }
    }
}

impl fmt::Debug for IncomingTunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingTunnel").finish_non_exhaustive()
    }
}

/// The future of [`Node::open_tunnel`](crate::Node::open_tunnel).
/// Dropping it before it completes closes the half-open tunnel.
#[must_use = "futures do nothing unless polled"]
pub struct OpeningTunnel {
    pub(crate) shared: Option<Arc<TunnelShared>>,
    pub(crate) error: Option<TunnelError>,
}

impl Future for OpeningTunnel {
    type Output = Result<Tunnel, TunnelError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(e) = this.error.take() {
            return Poll::Ready(Err(e));
        }
        let Some(shared) = this.shared.as_ref() else {
            return Poll::Ready(Err(TunnelError::Closed));
        };
        let mut state = shared.lock();
        match &state.phase {
            EndPhase::Open => {
                drop(state);
                let shared = this.shared.take().expect("checked");
                Poll::Ready(Ok(Tunnel { shared }))
            }
            EndPhase::Closed(e) => {
                let e = e.clone().unwrap_or(TunnelError::Closed);
                drop(state);
                if let Some(shared) = this.shared.take() {
                    if let Some(node) = shared.node.upgrade() {
                        node.forget_tunnel(shared.key);
                    }
                }
                Poll::Ready(Err(e))
            }
            EndPhase::Opening | EndPhase::Offered => {
                state.send_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for OpeningTunnel {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.close_with("the caller stopped waiting for the tunnel to open");
        }
    }
}

/// Tunnels one peer may have open to this node at once; more are rejected,
/// so a peer cannot grow this node's memory without bound.
pub const MAX_TUNNELS_PER_PEER: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiving end (as if offered by node 1 and accepted) with no node
    /// behind it: credit it returns is counted from `on_op`'s answers.
    fn receiver(window: usize, max_message_len: usize) -> TunnelShared {
        let key = TunnelKey {
            peer: NodeId(1),
            id: 1,
            opened_here: false,
        };
        let end = TunnelShared::new(key, Weak::new(), window, max_message_len, window);
        end.lock().phase = EndPhase::Open;
        end
    }

    fn piece(len: usize, last: bool) -> TunnelOp {
        TunnelOp::Data {
            flags: if last { TUNNEL_LAST } else { 0 },
            chunk: Bytes::from(vec![7u8; len]),
        }
    }

    #[test]
    fn a_message_larger_than_the_window_is_credited_as_it_is_buffered() {
        let end = receiver(1000, 10_000);
        // The sender's view: it may have `window` bytes unacknowledged.
        let mut unacknowledged = 0;
        for _ in 0..20 {
            unacknowledged += 450;
            assert!(unacknowledged <= 1000, "the sender would be out of credit");
            unacknowledged -= end.on_op(piece(450, false)).unwrap();
        }
        unacknowledged += 100;
        unacknowledged -= end.on_op(piece(100, true)).unwrap();
        assert!(unacknowledged <= 1000);
        let state = end.lock();
        assert_eq!(state.inbox.len(), 1);
        assert_eq!(state.inbox_bytes, 20 * 450 + 100);
        assert!(state.partial.is_empty());
        assert_eq!(state.charged, unacknowledged);
    }

    #[test]
    fn credit_is_held_while_a_complete_message_waits_unread() {
        let end = receiver(1000, 10_000);
        assert_eq!(end.on_op(piece(600, true)).unwrap(), 0);
        assert_eq!(end.on_op(piece(400, false)).unwrap(), 0);
        let err = end.on_op(piece(1, false)).unwrap_err();
        assert!(err.contains("beyond the 1000 byte credit window"), "{err}");
    }

    #[test]
    fn a_partial_message_over_max_message_len_is_a_protocol_error() {
        let end = receiver(1000, 2000);
        for _ in 0..4 {
            end.on_op(piece(500, false)).unwrap();
        }
        let err = end.on_op(piece(1, true)).unwrap_err();
        assert!(err.contains("more than 2000 bytes"), "{err}");
        // Exactly the maximum is fine.
        let end = receiver(1000, 2000);
        for _ in 0..3 {
            end.on_op(piece(500, false)).unwrap();
        }
        end.on_op(piece(500, true)).unwrap();
        assert_eq!(end.lock().inbox_bytes, 2000);
    }

    #[test]
    fn an_abort_gives_the_discarded_bytes_back_at_once() {
        let end = receiver(1000, 10_000);
        // Less than a lump: held for now.
        assert_eq!(end.on_op(piece(100, false)).unwrap(), 0);
        let abort = TunnelOp::Data {
            flags: TUNNEL_ABORT,
            chunk: Bytes::new(),
        };
        assert_eq!(end.on_op(abort).unwrap(), 100);
        let state = end.lock();
        assert_eq!(state.charged, 0);
        assert!(state.partial.is_empty());
        assert_eq!(state.partial.capacity(), 0);
    }

    #[test]
    fn a_send_over_max_message_len_fails_at_once_without_credit() {
        let key = TunnelKey {
            peer: NodeId(1),
            id: 1,
            opened_here: true,
        };
        let shared = Arc::new(TunnelShared::new(key, Weak::new(), 1000, 2000, 0));
        shared.lock().phase = EndPhase::Open;
        let tunnel = Tunnel { shared };
        let mut cx = Context::from_waker(Waker::noop());
        let mut send = std::pin::pin!(tunnel.send(vec![0u8; 2001]));
        assert_eq!(
            send.as_mut().poll(&mut cx),
            Poll::Ready(Err(TunnelError::TooLarge {
                len: 2001,
                max: 2000
            }))
        );
        // Exactly the maximum waits for credit instead.
        let mut send = std::pin::pin!(tunnel.send(vec![0u8; 2000]));
        assert!(send.as_mut().poll(&mut cx).is_pending());
    }
}
