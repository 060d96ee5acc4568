//! Identities: nodes, node incarnations and mailboxes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity of a node in a cluster, as written in the cluster spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u16);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// One start of a node process.
///
/// Every start of a node picks a new incarnation (the adapters use the wall
/// clock in nanoseconds, so a restart always gets a larger one on a sane
/// clock). Mailbox ids embed it, so an address minted before a restart can
/// never reach a mailbox created after it — Go reign reused ids across
/// restarts and old addresses silently reached new mailboxes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Incarnation(pub u64);

impl Incarnation {
    /// An incarnation derived from the wall clock, for adapters to call at
    /// start. Kept here so every adapter picks incarnations the same way.
    pub fn from_system_time(now: std::time::SystemTime) -> Incarnation {
        let nanos = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Incarnation(nanos.max(1))
    }
}

/// The cluster-wide identity of a mailbox: its node, the node's incarnation
/// and a serial number that never repeats within that incarnation.
///
/// Serialized compactly as the tuple `(node, incarnation, serial)`: ids
/// travel inside every control message and every address a user sends.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "(u16, u64, u64)", into = "(u16, u64, u64)")]
pub struct MailboxId {
    /// The node that owns the mailbox.
    pub node: NodeId,
    /// The start of that node during which the mailbox was created.
    pub incarnation: Incarnation,
    /// A per-incarnation counter, starting at 1.
    pub serial: u64,
}

impl MailboxId {
    /// Bytes a mailbox id takes on the wire.
    pub const WIRE_LEN: usize = 2 + 8 + 8;

    /// Writes the id in its fixed 18-byte little-endian wire form.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.node.0.to_le_bytes());
        out.extend_from_slice(&self.incarnation.0.to_le_bytes());
        out.extend_from_slice(&self.serial.to_le_bytes());
    }

    /// Reads an id from its wire form; `None` if `bytes` is too short.
    pub fn read_from(bytes: &[u8]) -> Option<MailboxId> {
        if bytes.len() < Self::WIRE_LEN {
            return None;
        }
        Some(MailboxId {
            node: NodeId(u16::from_le_bytes([bytes[0], bytes[1]])),
            incarnation: Incarnation(u64::from_le_bytes(bytes[2..10].try_into().ok()?)),
            serial: u64::from_le_bytes(bytes[10..18].try_into().ok()?),
        })
    }
}

impl From<(u16, u64, u64)> for MailboxId {
    fn from((node, incarnation, serial): (u16, u64, u64)) -> MailboxId {
        MailboxId {
            node: NodeId(node),
            incarnation: Incarnation(incarnation),
            serial,
        }
    }
}

impl From<MailboxId> for (u16, u64, u64) {
    fn from(id: MailboxId) -> (u16, u64, u64) {
        (id.node.0, id.incarnation.0, id.serial)
    }
}

impl fmt::Debug for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<{}.{:x}.{}>",
            self.node.0, self.incarnation.0, self.serial
        )
    }
}

impl fmt::Display for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip() {
        let id = MailboxId {
            node: NodeId(7),
            incarnation: Incarnation(0xdead_beef_1234),
            serial: 99,
        };
        let mut out = Vec::new();
        id.write_to(&mut out);
        assert_eq!(out.len(), MailboxId::WIRE_LEN);
        assert_eq!(MailboxId::read_from(&out), Some(id));
        assert_eq!(MailboxId::read_from(&out[..17]), None);
    }

    #[test]
    fn ids_serialize_as_compact_tuples() {
        let id = MailboxId {
            node: NodeId(1),
            incarnation: Incarnation(2),
            serial: 3,
        };
        let cbor = crate::codec::payload::to_vec(&id);
        assert_eq!(cbor, [0x83, 1, 2, 3]);
        assert_eq!(
            crate::codec::payload::decode::<MailboxId>(&cbor).unwrap(),
            id
        );
    }

    #[test]
    fn incarnation_from_clock_is_never_zero() {
        assert_eq!(
            Incarnation::from_system_time(std::time::UNIX_EPOCH),
            Incarnation(1)
        );
        let later = std::time::UNIX_EPOCH + std::time::Duration::from_secs(5);
        assert_eq!(
            Incarnation::from_system_time(later),
            Incarnation(5_000_000_000)
        );
    }
}
