//! The exit reasons of this node's most recently closed mailboxes, so a
//! watch or a link that arrives after its mailbox closed (and was removed
//! from the mailbox table) hears the real reason instead of
//! `ExitReason::NoMailbox` (Erlang's `noproc`), as long as the close is
//! recent enough. A watch crosses a close by a scheduling delay or one
//! round trip to another node; the table covers that, not history.

use std::collections::{HashMap, VecDeque};

use crate::id::MailboxId;
use crate::system::ExitReason;

/// How many closed mailboxes' reasons a node keeps. A late watch arrives
/// within a round trip of its close, during which a busy node closes far
/// fewer than this many mailboxes; with reasons at their cap
/// ([`MAX_REASON_TEXT`](crate::system::MAX_REASON_TEXT)) the table holds at
/// most about 1 MiB. The oldest reason goes first; a watch of a mailbox
/// closed longer ago hears `NoMailbox`.
pub const MAX_RECENT_EXITS: usize = 1024;

/// A bounded table, oldest first.
#[derive(Default)]
pub(crate) struct RecentExits {
    order: VecDeque<MailboxId>,
    reasons: HashMap<MailboxId, ExitReason>,
}

impl RecentExits {
    /// Keeps `reason` for `id`, forgetting the oldest past the bound.
    pub(crate) fn record(&mut self, id: MailboxId, reason: &ExitReason) {
        if self.reasons.insert(id, reason.clone()).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > MAX_RECENT_EXITS {
            if let Some(old) = self.order.pop_front() {
                self.reasons.remove(&old);
            }
        }
    }

    /// The reason `id` closed for, if it is still kept.
    pub(crate) fn get(&self, id: MailboxId) -> Option<ExitReason> {
        self.reasons.get(&id).cloned()
    }
}
