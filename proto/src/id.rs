//! Identities: nodes, node incarnations and mailboxes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
/// Printed as `<node.incarnation.serial>` with the incarnation in hex (Go
/// reign's text form), and parsed back from it ([`FromStr`], Go reign's
/// `UnmarshalText`). Serialized compactly as the tuple `(node, incarnation,
/// serial)` in binary formats (ids travel inside every control message and
/// every address a user sends) and as that text in human-readable ones
/// (JSON, TOML, …).
///
/// ```
/// use reign_proto::{Incarnation, MailboxId, NodeId};
///
/// let id = MailboxId { node: NodeId(3), incarnation: Incarnation(0xbeef), serial: 42 };
/// assert_eq!(id.to_string(), "<3.beef.42>");
/// assert_eq!("<3.beef.42>".parse::<MailboxId>(), Ok(id));
/// assert_eq!(serde_json::to_string(&id).unwrap(), "\"<3.beef.42>\"");
/// assert!("<3.beef>".parse::<MailboxId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// Why a text is not a mailbox id (`<node.incarnation.serial>`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseIdError {
    /// The text is not wrapped in `<` and `>`.
    NotBracketed,
    /// The text does not have exactly three dot-separated parts.
    Parts {
        /// How many parts it has.
        found: usize,
    },
    /// One part is not a number in range.
    Number {
        /// `node` (decimal u16), `incarnation` (hex u64) or `serial`
        /// (decimal u64).
        part: &'static str,
        /// The part as written (at most [`ParseIdError::SHOWN`] characters).
        value: String,
    },
}

impl ParseIdError {
    /// Characters of a bad part kept in the error, so that a huge input
    /// does not become a huge error message.
    pub const SHOWN: usize = 32;
}

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseIdError::NotBracketed => {
                write!(f, "a mailbox id is written <node.incarnation.serial>")
            }
            ParseIdError::Parts { found } => write!(
                f,
                "a mailbox id has 3 dot-separated parts (node.incarnation.serial), not {found}"
            ),
            ParseIdError::Number { part, value } => {
                let base = if *part == "incarnation" {
                    "a hexadecimal"
                } else {
                    "a decimal"
                };
                write!(
                    f,
                    "the {part} of a mailbox id must be {base} number, not {value:?}"
                )
            }
        }
    }
}

impl std::error::Error for ParseIdError {}

impl FromStr for MailboxId {
    type Err = ParseIdError;

    fn from_str(text: &str) -> Result<MailboxId, ParseIdError> {
        let inner = text
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .ok_or(ParseIdError::NotBracketed)?;
        let parts: Vec<&str> = inner.splitn(4, '.').collect();
        let [node, incarnation, serial] = parts[..] else {
            return Err(ParseIdError::Parts {
                found: inner.split('.').count(),
            });
        };
        let bad = |part: &'static str, value: &str| ParseIdError::Number {
            part,
            value: value.chars().take(ParseIdError::SHOWN).collect(),
        };
        // `from_str_radix` accepts a leading `+`; the printed form never
        // has one, so neither does the parsed form.
        let digits = |s: &str, hex: bool| {
            !s.is_empty()
                && s.chars().all(|c| {
                    if hex {
                        c.is_ascii_hexdigit()
                    } else {
                        c.is_ascii_digit()
                    }
                })
        };
        if !digits(node, false) {
            return Err(bad("node", node));
        }
        if !digits(incarnation, true) {
            return Err(bad("incarnation", incarnation));
        }
        if !digits(serial, false) {
            return Err(bad("serial", serial));
        }
        Ok(MailboxId {
            node: NodeId(node.parse().map_err(|_| bad("node", node))?),
            incarnation: Incarnation(
                u64::from_str_radix(incarnation, 16)
                    .map_err(|_| bad("incarnation", incarnation))?,
            ),
            serial: serial.parse().map_err(|_| bad("serial", serial))?,
        })
    }
}

impl Serialize for MailboxId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            <(u16, u64, u64)>::from(*self).serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for MailboxId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<MailboxId, D::Error> {
        if deserializer.is_human_readable() {
            struct Text;
            impl serde::de::Visitor<'_> for Text {
                type Value = MailboxId;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    write!(f, "a mailbox id <node.incarnation.serial>")
                }
                fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<MailboxId, E> {
                    text.parse().map_err(E::custom)
                }
            }
            deserializer.deserialize_str(Text)
        } else {
            <(u16, u64, u64)>::deserialize(deserializer).map(MailboxId::from)
        }
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
    fn text_form_errors_are_typed() {
        let parse = |s: &str| s.parse::<MailboxId>();
        assert_eq!(parse("1.2.3"), Err(ParseIdError::NotBracketed));
        assert_eq!(parse("<1.2.3"), Err(ParseIdError::NotBracketed));
        assert_eq!(parse(""), Err(ParseIdError::NotBracketed));
        assert_eq!(parse("<1.2>"), Err(ParseIdError::Parts { found: 2 }));
        assert_eq!(parse("<1.2.3.4>"), Err(ParseIdError::Parts { found: 4 }));
        assert_eq!(parse("<>"), Err(ParseIdError::Parts { found: 1 }));
        let number = |part, value: &str| {
            Err(ParseIdError::Number {
                part,
                value: value.into(),
            })
        };
        // Just under, at and over each part's range.
        assert!(parse("<65535.1.1>").is_ok());
        assert_eq!(parse("<65536.1.1>"), number("node", "65536"));
        assert!(parse("<0.ffffffffffffffff.18446744073709551615>").is_ok());
        assert_eq!(
            parse("<0.10000000000000000.1>"),
            number("incarnation", "10000000000000000")
        );
        assert_eq!(
            parse("<0.1.18446744073709551616>"),
            number("serial", "18446744073709551616")
        );
        assert_eq!(parse("<+1.1.1>"), number("node", "+1"));
        assert_eq!(parse("<1.g.1>"), number("incarnation", "g"));
        assert_eq!(parse("<1.1.>"), number("serial", ""));
        assert_eq!(parse("<1. 1.1>"), number("incarnation", " 1"));
        // A huge bad part is cut in the error.
        let huge = format!("<{}.1.1>", "x".repeat(1 << 20));
        match parse(&huge) {
            Err(ParseIdError::Number { value, .. }) => assert_eq!(value.len(), ParseIdError::SHOWN),
            other => panic!("{other:?}"),
        }
        assert!(ParseIdError::Parts { found: 2 }
            .to_string()
            .contains("node.incarnation.serial"));
    }

    #[test]
    fn human_readable_formats_carry_the_text_form() {
        let id = MailboxId {
            node: NodeId(65535),
            incarnation: Incarnation(u64::MAX),
            serial: 7,
        };
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"<65535.ffffffffffffffff.7>\"");
        assert_eq!(serde_json::from_str::<MailboxId>(&json).unwrap(), id);
        let e = serde_json::from_str::<MailboxId>("\"<1.2>\"").unwrap_err();
        assert!(e.to_string().contains("3 dot-separated parts"), "{e}");
        assert!(serde_json::from_str::<MailboxId>("[1,2,3]").is_err());
    }

    proptest::proptest! {
        #[test]
        fn text_form_round_trips(node: u16, incarnation: u64, serial: u64) {
            let id = MailboxId { node: NodeId(node), incarnation: Incarnation(incarnation), serial };
            proptest::prop_assert_eq!(id.to_string().parse::<MailboxId>(), Ok(id));
            let json = serde_json::to_string(&id).unwrap();
            proptest::prop_assert_eq!(serde_json::from_str::<MailboxId>(&json).unwrap(), id);
            let cbor = crate::codec::payload::to_vec(&id);
            proptest::prop_assert_eq!(crate::codec::payload::decode::<MailboxId>(&cbor).unwrap(), id);
        }

        #[test]
        fn any_text_parses_or_fails_typed(text in ".{0,40}") {
            if let Ok(id) = text.parse::<MailboxId>() {
                proptest::prop_assert_eq!(id.to_string(), text);
            }
        }
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
