//! # What a tokio user may still find foreign
//!
//! (The closing note of the issue that brought the ecosystem's traits in:
//! keep it true.)
//!
//! Known differences from tokio's habits, kept on purpose or not yet done:
//!
//! - **Sends do not wait.** [`Address::send`](crate::Address::send) is a
//!   plain function that fails with `Full` instead of an `async fn` that
//!   waits for room (as `tokio::sync::mpsc::Sender::send` does), and an
//!   address is not a `futures::Sink`: a message bound for another node is
//!   queued for its connection, and waiting there would couple a sender to
//!   every other sender on that link.
//! - **Messages are dynamic by default.** `recv` yields a
//!   [`Message`](crate::Message) to downcast; the typed layer
//!   ([`TypedMailbox`](crate::TypedMailbox), [`Call`](crate::Call)) is
//!   opt-in, and every type that crosses the wire is registered once per
//!   process ([`register_type`](crate::register_type)), like Go's gob.
//! - **Timeouts are arguments.** `request`, `tunnel`, `Tunnel::send` and
//!   `recv_timeout` take a `Duration` on the runtime's own timer (the same
//!   API runs on async-std and smol); `tokio::time::timeout` around the
//!   untimed futures works too.
//! - **A tunnel's byte stream has no half close.** Shutting down
//!   [`TunnelIo`](crate::TunnelIo) closes both directions.
//! - **Methods through `Deref`.** [`Node`](crate::Node) reaches the
//!   runtime-generic `Reign` and the runtime-free node through two `Deref`
//!   steps, so rustdoc lists its methods on three pages.
//! - **`recv_timeout` needs a trait in scope** ([`MailboxExt`](crate::MailboxExt)),
//!   since the mailbox type itself knows no runtime.
//! - **No codec helpers.** A `TunnelIo` works with any codec crate, but
//!   reign ships none.
