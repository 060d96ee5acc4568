//! The mailbox table: id → mailbox, the one structure that user threads and
//! the driver share on the receive path.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, Weak};

use crate::id::MailboxId;
use crate::node::mailbox::MailboxShared;
use crate::poison::lock;

/// Shards of the mailbox table; a power of two.
const SHARDS: usize = 16;

/// Mailbox serials are sequential, so the identity is a good enough hash.
#[derive(Default)]
struct SerialHasher(u64);

impl Hasher for SerialHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type SerialMap<V> = HashMap<u64, V, BuildHasherDefault<SerialHasher>>;

/// id → mailbox, the one structure that user threads and the driver share on
/// the receive path. Sharded so that creating and closing mailboxes on many
/// threads does not serialize on one lock.
pub(in crate::node) struct MailboxTable {
    shards: [Mutex<SerialMap<Weak<MailboxShared>>>; SHARDS],
}

impl MailboxTable {
    pub(in crate::node) fn new() -> MailboxTable {
        MailboxTable {
            shards: std::array::from_fn(|_| Mutex::new(SerialMap::default())),
        }
    }

    fn shard(&self, serial: u64) -> std::sync::MutexGuard<'_, SerialMap<Weak<MailboxShared>>> {
        lock(&self.shards[(serial as usize) & (SHARDS - 1)])
    }

    pub(in crate::node) fn insert(&self, serial: u64, mailbox: Weak<MailboxShared>) {
        self.shard(serial).insert(serial, mailbox);
    }

    pub(in crate::node) fn remove(&self, serial: u64) {
        self.shard(serial).remove(&serial);
    }

    pub(in crate::node) fn get(&self, serial: u64) -> Option<Arc<MailboxShared>> {
        self.shard(serial).get(&serial).and_then(Weak::upgrade)
    }

    pub(in crate::node) fn all(&self) -> Vec<Arc<MailboxShared>> {
        self.shards
            .iter()
            .flat_map(|s| {
                lock(s)
                    .values()
                    .filter_map(Weak::upgrade)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The `n` mailboxes with the most queued bytes (then messages), as
    /// (id, messages, bytes), largest first; read-only.
    pub(in crate::node) fn largest(&self, n: usize) -> Vec<(MailboxId, usize, usize)> {
        let mut all: Vec<_> = self
            .all()
            .iter()
            .map(|m| (m.id, m.queued_messages(), m.queued_bytes()))
            .collect();
        all.sort_by(|a, b| (b.2, b.1, a.0).cmp(&(a.2, a.1, b.0)));
        all.truncate(n);
        all
    }

    pub(in crate::node) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}
