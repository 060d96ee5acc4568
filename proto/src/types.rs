//! The process-wide table of message types that may cross the wire.
//!
//! Like Go's `gob.Register`, a type must be declared before it can be sent to
//! another node, under a name that both sides agree on. On the wire a message
//! carries a 64-bit tag derived from that name (FNV-1a), never the name itself.
//! This table is the only process-wide state of reign: many nodes can live in
//! one process, but they all speak the same types.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{OnceLock, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::payload;
use crate::error::DecodeError;
use crate::poison::{read, write};

pub use crate::codec::TypeTag;

/// Why a type could not be registered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TypeError {
    /// The type is already registered under another name.
    AlreadyNamed {
        /// The name it already has.
        existing: &'static str,
        /// The name that was asked for.
        requested: &'static str,
    },
    /// Another type already uses this name, or a name with the same tag.
    NameTaken {
        /// The name asked for.
        name: &'static str,
        /// The Rust type that holds it.
        holder: &'static str,
    },
}

impl fmt::Display for TypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeError::AlreadyNamed {
                existing,
                requested,
            } => write!(
                f,
                "type already registered as {existing:?}, cannot also register it as {requested:?}"
            ),
            TypeError::NameTaken { name, holder } => {
                write!(
                    f,
                    "wire name {name:?} (or its tag) is already used by {holder}"
                )
            }
        }
    }
}

impl std::error::Error for TypeError {}

type CheckFn = fn(&[u8]) -> Result<(), DecodeError>;

#[derive(Clone, Copy)]
struct Entry {
    name: &'static str,
    rust_name: &'static str,
    tag: TypeTag,
    check: CheckFn,
}

#[derive(Default)]
struct Table {
    by_type: HashMap<TypeId, Entry>,
    by_tag: HashMap<TypeTag, (TypeId, Entry)>,
}

fn table() -> &'static RwLock<Table> {
    static TABLE: OnceLock<RwLock<Table>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = Table::default();
        register_builtins(&mut table);
        RwLock::new(table)
    })
}

fn check<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), DecodeError> {
    payload::decode::<T>(bytes).map(drop)
}

fn insert<T: Any>(
    table: &mut Table,
    name: &'static str,
    check: CheckFn,
) -> Result<TypeTag, TypeError> {
    let type_id = TypeId::of::<T>();
    let tag = TypeTag::of_name(name);
    if let Some(existing) = table.by_type.get(&type_id) {
        if existing.name == name {
            return Ok(existing.tag);
        }
        return Err(TypeError::AlreadyNamed {
            existing: existing.name,
            requested: name,
        });
    }
    if let Some((_, holder)) = table.by_tag.get(&tag) {
        return Err(TypeError::NameTaken {
            name,
            holder: holder.rust_name,
        });
    }
    let entry = Entry {
        name,
        rust_name: std::any::type_name::<T>(),
        tag,
        check,
    };
    table.by_type.insert(type_id, entry);
    table.by_tag.insert(tag, (type_id, entry));
    Ok(tag)
}

macro_rules! builtins {
    ($table:ident; $($ty:ty => $name:literal),* $(,)?) => {
        $( insert::<$ty>($table, $name, check::<$ty>).expect("builtin names are distinct"); )*
    };
}

fn register_builtins(table: &mut Table) {
    builtins!(table;
        () => "unit", bool => "bool", String => "string",
        u8 => "u8", u16 => "u16", u32 => "u32", u64 => "u64", u128 => "u128",
        i8 => "i8", i16 => "i16", i32 => "i32", i64 => "i64", i128 => "i128",
        f32 => "f32", f64 => "f64",
        serde_bytes::ByteBuf => "bytes",
        crate::address::Address => "reign.Address",
        crate::system::MailboxClosed => "reign.MailboxClosed",
        crate::system::Exit => "reign.Exit",
        crate::system::MultipleClaim => "reign.MultipleClaim",
        crate::system::ConnectionStatus => "reign.ConnectionStatus",
    );
    // Raw bytes (`Address::send_bytes`) are their own encoding: any payload
    // is valid.
    insert::<bytes::Bytes>(table, crate::message::RAW_BYTES_NAME, |_| Ok(()))
        .expect("builtin names are distinct");
}

/// Declares that `T` may be sent to other nodes, under its Rust type name.
///
/// The Rust type name can change between compiler versions and when code
/// moves; for clusters that upgrade nodes one at a time, prefer
/// [`register_type_named`] with a name you keep stable.
/// Registering the same type twice under the same name is harmless.
pub fn register_type<T>() -> Result<TypeTag, TypeError>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    register_type_named::<T>(std::any::type_name::<T>())
}

/// Declares that `T` may be sent to other nodes under a stable wire name.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Line(String);
///
/// reign_proto::register_type_named::<Line>("chat.Line").unwrap();
/// // Idempotent:
/// reign_proto::register_type_named::<Line>("chat.Line").unwrap();
/// ```
pub fn register_type_named<T>(name: &'static str) -> Result<TypeTag, TypeError>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let mut table = write(table());
    insert::<T>(&mut table, name, check::<T>)
}

thread_local! {
    /// The last type looked up on this thread: senders mostly send one type
    /// in a row, and a registration never changes once made.
    static LAST_TAG: std::cell::Cell<Option<(TypeId, TypeTag)>> = const { std::cell::Cell::new(None) };
}

/// The tag of a registered type.
pub(crate) fn tag_of(type_id: TypeId) -> Option<TypeTag> {
    if let Some((id, tag)) = LAST_TAG.with(std::cell::Cell::get) {
        if id == type_id {
            return Some(tag);
        }
    }
    let table = read(table());
    let tag = table.by_type.get(&type_id).map(|e| e.tag)?;
    LAST_TAG.with(|last| last.set(Some((type_id, tag))));
    Some(tag)
}

/// The tag of the registered type `T`, or the error every send of an
/// unregistered type gets (local, remote, request, reply alike).
pub(crate) fn tag_for<T: Any>() -> Result<TypeTag, crate::error::SendError> {
    tag_of(TypeId::of::<T>()).ok_or_else(crate::error::SendError::unregistered::<T>)
}

/// The registered wire name of a type.
pub(crate) fn name_of(type_id: TypeId) -> Option<&'static str> {
    let table = read(table());
    table.by_type.get(&type_id).map(|e| e.name)
}

/// The registered wire name for a tag.
pub(crate) fn name_of_tag(tag: TypeTag) -> Option<&'static str> {
    let table = read(table());
    table.by_tag.get(&tag).map(|(_, e)| e.name)
}

/// Whether any type is registered under this tag.
pub fn is_registered_tag(tag: TypeTag) -> bool {
    let table = read(table());
    table.by_tag.contains_key(&tag)
}

/// Decodes `payload` as the type registered under `tag` and drops it: what a
/// receiver would do. Used by fuzzers and diagnostics to check that payloads
/// of every registered type decode safely.
pub fn check_payload(tag: TypeTag, payload: &[u8]) -> Result<(), DecodeError> {
    let check = {
        let table = read(table());
        match table.by_tag.get(&tag) {
            Some((_, entry)) => entry.check,
            None => return Err(DecodeError::UnknownType(tag.0)),
        }
    };
    check(payload)
}

/// Every registered tag with its wire name, sorted by name.
pub fn registered_types() -> Vec<(TypeTag, &'static str)> {
    let table = read(table());
    let mut all: Vec<_> = table
        .by_tag
        .values()
        .map(|(_, e)| (e.tag, e.name))
        .collect();
    all.sort_by_key(|(_, name)| *name);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct A;
    #[derive(serde::Serialize, serde::Deserialize)]
    struct B;

    #[test]
    fn names_are_exclusive() {
        register_type_named::<A>("test.types.A").unwrap();
        assert_eq!(
            register_type_named::<A>("test.types.A2"),
            Err(TypeError::AlreadyNamed {
                existing: "test.types.A",
                requested: "test.types.A2"
            })
        );
        assert!(matches!(
            register_type_named::<B>("test.types.A"),
            Err(TypeError::NameTaken { .. })
        ));
        assert_eq!(
            tag_of(TypeId::of::<A>()),
            Some(TypeTag::of_name("test.types.A"))
        );
    }

    #[test]
    fn builtins_are_registered() {
        assert_eq!(name_of(TypeId::of::<String>()), Some("string"));
        assert!(is_registered_tag(TypeTag::of_name("reign.MailboxClosed")));
        assert!(check_payload(TypeTag::of_name("u64"), &[0x18, 0x2a]).is_ok());
        assert!(check_payload(TypeTag::of_name("u64"), &[0x61, 0x41]).is_err());
        assert!(matches!(
            check_payload(TypeTag(1), &[]),
            Err(DecodeError::UnknownType(1))
        ));
    }
}
