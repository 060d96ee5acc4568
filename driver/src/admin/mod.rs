//! The admin endpoint (feature `admin`): a running node seen from outside
//! over HTTP, on every runtime.
//!
//! [`serve`] binds an address and answers:
//!
//! | path | what |
//! |---|---|
//! | `/` | a live dashboard: one static page with inline JavaScript (no build step) that polls `/cluster` every second and draws the cluster as this node sees it |
//! | `/status` | this node as JSON ([`Status`]): id, incarnation, uptime, version; each peer with its state, round trip, bytes and messages each way, queues, reconnects and last close reason; names with their claimants, groups, topics; mailboxes and the largest queues; every counter, drops included |
//! | `/cluster` | the dashboard's picture as JSON ([`ClusterView`]): this node, its peers, and the links each peer reports (asked over the cluster from the peers that serve an admin endpoint too) |
//! | `/metrics` | the same figures in the Prometheus text format (OpenMetrics), encoded by the `prometheus-client` crate |
//!
//! **Who may ask.** The endpoint binds loopback unless told otherwise:
//! [`serve`] refuses any other address unless
//! [`AdminOptions::allow_public`] is set *and* a token is given. With a
//! token, every request must carry it, as `Authorization: Bearer TOKEN`
//! (tools, `reign status`) or as the password of HTTP Basic authentication
//! (any user name: a browser asks for it). The endpoint speaks plain HTTP:
//! the token keeps out whoever cannot see the traffic, not whoever can, so
//! bind a private network or put a TLS proxy in front.
//!
//! **Why a blocking server on its own thread.** The driver runs on tokio,
//! async-std or smol, and an async HTTP server is tied to one of them. The
//! admin endpoint serves a few requests a second at most, so it runs
//! `tiny_http` (a small, dependency-light blocking server) on a thread of
//! its own: the same code on every runtime, and no admin request ever waits
//! behind the node's own tasks or holds them up. Only the small responder
//! that answers other nodes' `/cluster` questions runs on the node's
//! runtime (it is a mailbox like any other).
//!
//! ```no_run
//! # fn demo<R: reign_driver::Runtime>(node: &reign_driver::Reign<R>) {
//! use reign_driver::admin::{serve, AdminOptions};
//! let admin = serve(node, "127.0.0.1:9090".parse().unwrap(), AdminOptions::default())
//!     .expect("admin endpoint");
//! println!("dashboard on http://{}/", admin.local_addr());
//! // Dropping `admin` stops the endpoint.
//! # }
//! ```

mod http;
mod metrics;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::{Reign, Runtime};

pub use status::{
    Claimant, ClusterView, LinkView, MailboxQueue, MailboxesStatus, NodeView, PeerStatus, Status,
    ADMIN_GROUP, VIEW_TIMEOUT,
};

/// How the admin endpoint may be reached.
#[derive(Clone, Debug, Default)]
pub struct AdminOptions {
    /// A token every request must carry (`Authorization: Bearer TOKEN`, or
    /// as the Basic password). Required for a non-loopback bind; optional
    /// (and then checked all the same) on loopback.
    pub token: Option<String>,
    /// Allows a non-loopback bind (with a token). Off by default: the
    /// endpoint shows the whole directory and every counter.
    pub allow_public: bool,
}

/// Why the admin endpoint did not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum AdminError {
    /// A non-loopback address without [`AdminOptions::allow_public`].
    NotLoopback(SocketAddr),
    /// A non-loopback address without a (non-empty) token.
    TokenRequired(SocketAddr),
    /// The address could not be bound.
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// What the OS said.
        error: String,
    },
    /// The responder to other nodes' questions could not join its group.
    Registry(reign_proto::RegistryError),
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::NotLoopback(address) => write!(
                f,
                "admin endpoint {address} is not a loopback address: allow it explicitly \
                 (--admin-public) and set a token"
            ),
            AdminError::TokenRequired(address) => write!(
                f,
                "admin endpoint {address} is not a loopback address: it needs a token \
                 (--admin-token or REIGN_ADMIN_TOKEN)"
            ),
            AdminError::Bind { address, error } => {
                write!(f, "cannot serve the admin endpoint on {address}: {error}")
            }
            AdminError::Registry(e) => write!(f, "admin endpoint: {e}"),
        }
    }
}

/// [`AdminError::Registry`] exposes the [`RegistryError`](reign_proto::RegistryError) it wraps.
impl std::error::Error for AdminError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AdminError::Registry(e) => Some(e),
            _ => None,
        }
    }
}

/// A running admin endpoint. Dropping it (or [`stop`](AdminHandle::stop))
/// stops the server and its responder.
pub struct AdminHandle {
    address: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
    responder: status::Responder,
}

impl AdminHandle {
    /// The address the endpoint listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Stops the endpoint and waits for its thread.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        self.server.unblock();
        self.responder.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for AdminHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminHandle")
            .field("address", &self.address)
            .finish()
    }
}

/// Serves `node`'s admin endpoint on `bind` (see the module docs for the
/// paths and the rule for non-loopback addresses). Port 0 picks a free one:
/// read it back with [`AdminHandle::local_addr`].
///
/// It also makes `node` a member of the service group `reign.admin`, whose
/// member answers other nodes' endpoints with this node's links; that task
/// is spawned on the node's runtime, so call `serve` where the runtime can
/// spawn (for tokio: inside the runtime, as the node's own start).
pub fn serve<R: Runtime>(
    node: &Reign<R>,
    bind: SocketAddr,
    options: AdminOptions,
) -> Result<AdminHandle, AdminError> {
    check_bind(bind, &options)?;
    let token = options.token.filter(|t| !t.is_empty());
    let server = tiny_http::Server::http(bind).map_err(|e| AdminError::Bind {
        address: bind,
        error: e.to_string(),
    })?;
    let address = server.server_addr().to_ip().unwrap_or(bind);
    let server = Arc::new(server);
    let responder = status::Responder::start(node).map_err(AdminError::Registry)?;
    let source = status::Source::new(node);
    let serving = server.clone();
    let thread = std::thread::Builder::new()
        .name(format!("reign-admin-{}", node.id().0))
        .spawn(move || http::run(&serving, &source, token.as_deref()))
        .map_err(|e| AdminError::Bind {
            address,
            error: e.to_string(),
        })?;
    tracing::info!(node = node.id().0, %address, "admin endpoint listening");
    Ok(AdminHandle {
        address,
        server,
        thread: Some(thread),
        responder,
    })
}

/// Whether [`serve`] would accept `bind` with `options`: a loopback
/// address always; any other only with [`AdminOptions::allow_public`] and
/// a non-empty token. Lets a program refuse a bad flag before it starts
/// its node.
pub fn check_bind(bind: SocketAddr, options: &AdminOptions) -> Result<(), AdminError> {
    if bind.ip().is_loopback() {
        return Ok(());
    }
    if !options.allow_public {
        return Err(AdminError::NotLoopback(bind));
    }
    if options.token.as_deref().is_none_or(str::is_empty) {
        return Err(AdminError::TokenRequired(bind));
    }
    Ok(())
}

/// This node's status, as `/status` serves it.
pub fn status<R: Runtime>(node: &Reign<R>) -> Status {
    status::Source::new(node).status()
}

/// This node's `/metrics` page (Prometheus text format).
pub fn metrics<R: Runtime>(node: &Reign<R>) -> String {
    metrics::encode(&status::Source::new(node).status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_binds_without_a_flag_and_a_token() {
        let open = AdminOptions::default();
        let public = AdminOptions {
            token: None,
            allow_public: true,
        };
        let with_token = AdminOptions {
            token: Some("s3cret".into()),
            allow_public: true,
        };
        for loopback in ["127.0.0.1:9090", "[::1]:9090"] {
            assert!(check_bind(loopback.parse().unwrap(), &open).is_ok());
        }
        for other in ["0.0.0.0:9090", "10.1.2.3:9090", "[::]:9090"] {
            let bind: SocketAddr = other.parse().unwrap();
            assert!(matches!(
                check_bind(bind, &open),
                Err(AdminError::NotLoopback(_))
            ));
            assert!(matches!(
                check_bind(bind, &public),
                Err(AdminError::TokenRequired(_))
            ));
            let empty = AdminOptions {
                token: Some(String::new()),
                allow_public: true,
            };
            assert!(matches!(
                check_bind(bind, &empty),
                Err(AdminError::TokenRequired(_))
            ));
            assert!(check_bind(bind, &with_token).is_ok());
        }
    }
}
