//! The `reign` command's pieces: `reign init` (certificates and a spec),
//! `reign node` (one node as an OS process, with a built-in service and an
//! optional admin endpoint), `reign status` (a node and its peers, read from
//! that endpoint), and `reign demo` (a throw-away cluster walked through
//! every capability).
//! The built-in service's [`protocol`] is public so tests and tools can talk
//! to running nodes.

pub mod demo;
pub mod init;
pub mod node;
pub mod protocol;
pub mod service;
pub mod status;
