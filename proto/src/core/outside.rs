//! Input from outside the cluster: the handshake pool and what refused or
//! misbehaving senders cost in the log.
//!
//! **The handshake pool.** An inbound connection holds a slot of
//! [`Tuning::max_handshaking`] until it authenticates or closes. One source
//! address (IP; the port is ignored) may hold at most
//! [`Tuning::max_handshaking_per_address`] of them, so a slow-loris from one
//! address, however many sockets it opens, never fills the pool and a joiner
//! from another address always finds a slot. A connection that sends
//! nothing within [`Tuning::first_bytes_timeout`] (a real dialer writes its
//! ClientHello at once) loses its slot then, not at the full
//! [`Tuning::handshake_timeout`].
//!
//! **The log.** Whatever an unauthenticated sender can trigger (a refused
//! connection, a failed TLS or reign handshake, a handshake timeout) and
//! what an authenticated one can repeat cheaply (messages of unknown
//! types, tunnels over its cap) is logged at DEBUG per event and counted
//! per cause in a [`LogSummary`](crate::log_summary::LogSummary), which
//! writes one WARN line per kind every
//! [`SUMMARY_INTERVAL`](crate::log_summary::SUMMARY_INTERVAL), driven by the
//! core's time argument.

use super::*;

/// What the summary of refused inbound connections counts.
pub(super) const REFUSED: &str = "inbound connections refused before authentication";
/// What the summary of messages dropped on arrival counts.
pub(super) const DROPPED: &str = "messages from peers dropped";

/// Causes of refusal, as the summary line prints them.
pub(super) const POOL_FULL: &str = "with the handshake pool full";
pub(super) const ADDRESS_SHARE: &str = "over their address's share of the handshake pool";
pub(super) const SILENT: &str = "silent past the first-bytes deadline";
pub(super) const SLOW: &str = "not finished within the handshake timeout";
pub(super) const CLOSED: &str = "closed by the client mid-handshake";
pub(super) const MALFORMED_FRAMES: &str = "sending malformed frames";
/// The cause under which messages of unregistered types are dropped.
pub(super) const UNKNOWN_TYPE: &str = "of a type not registered on this node";
/// The cause under which a peer's registry messages that break the rules
/// (claims for another node's mailboxes, …) are ignored.
pub(super) const REJECTED_REGISTRY: &str = "as registry messages that break the rules";

/// An inbound connection in the handshake pool.
pub(super) struct Inbound {
    /// The source address the per-address share is counted by.
    pub(super) source: String,
    /// Whether any bytes arrived (the first-bytes deadline is met).
    pub(super) heard: bool,
}

/// The key the per-address share counts a connection under: the IP of a
/// `ip:port` label (IPv4-mapped IPv6 as IPv4), or the whole label when it
/// is not a socket address (simulators and tests label connections freely).
pub(super) fn source_of(label: &str) -> String {
    match label.parse::<std::net::SocketAddr>() {
        Ok(addr) => match addr.ip() {
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => v6.to_string(),
            },
            ip => ip.to_string(),
        },
        Err(_) => label.to_owned(),
    }
}

/// The summary cause of a refusal whose typed error was not kept.
pub(super) fn cause_of(reason: &CloseReason) -> &'static str {
    if reason.is_malformed() {
        MALFORMED_FRAMES
    } else if reason.is_handshake_refusal() {
        "refused by the reign handshake"
    } else {
        "failing otherwise"
    }
}

/// The summary cause of a TLS failure during an inbound handshake.
pub(super) fn tls_cause(e: &rustls::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match e {
        Error::NoCertificatesPresented => "without a certificate",
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::UnhandledCriticalExtension,
        ) => "from another CA",
        Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => "with an expired or not yet valid certificate",
        Error::InvalidCertificate(_) => "with an invalid certificate",
        Error::InvalidMessage(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. } => "not speaking TLS",
        Error::PeerIncompatible(_) | Error::NoApplicationProtocol => {
            "with an incompatible TLS client (version, suites or protocol name)"
        }
        Error::AlertReceived(_) => "ended by a TLS alert from the client",
        _ => "failing TLS otherwise",
    }
}

/// The summary cause of a failed reign handshake.
pub(super) fn handshake_cause(e: &HandshakeError) -> &'static str {
    match e {
        HandshakeError::VersionMismatch { .. } => "speaking another protocol version",
        HandshakeError::WrongCluster => "from another cluster",
        HandshakeError::WrongNode { .. } | HandshakeError::MisdirectedDial { .. } => {
            "meant for another node"
        }
        HandshakeError::CertificateMismatch { .. } => {
            "claiming a node their certificate does not name"
        }
        HandshakeError::UnknownNode { .. } => "claiming a node this node does not admit",
        HandshakeError::Malformed(_) => "with a malformed hello",
        HandshakeError::RefusedByPeer(_) => "refused by the client",
    }
}

impl Core {
    /// Takes an inbound connection from `source` into the handshake pool,
    /// or refuses it (logged at DEBUG, counted in the summary).
    pub(super) fn admit_handshake(
        &mut self,
        now: Instant,
        label: &str,
        source: &str,
    ) -> Result<(), AcceptError> {
        let error = if self.inbound.len() >= self.tuning.max_handshaking {
            Some((
                POOL_FULL,
                AcceptError::TooManyHandshakes {
                    limit: self.tuning.max_handshaking,
                },
            ))
        } else if self.inbound.values().filter(|i| i.source == source).count()
            >= self.tuning.max_handshaking_per_address
        {
            Some((
                ADDRESS_SHARE,
                AcceptError::TooManyFromAddress {
                    address: source.to_owned(),
                    limit: self.tuning.max_handshaking_per_address,
                },
            ))
        } else {
            None
        };
        let Some((cause, error)) = error else {
            return Ok(());
        };
        tracing::debug!(node = self.me.0, from = label, %error, "refusing connection");
        self.refused.record(cause);
        self.tick_summaries(now);
        Err(error)
    }

    /// Counts and logs (at DEBUG) the refusal of inbound connection `id`,
    /// which has not authenticated, for `cause`.
    pub(super) fn note_refusal(
        &mut self,
        id: ConnId,
        cause: &'static str,
        reason: &dyn std::fmt::Display,
    ) {
        let from = self.conns.get(&id).map(|c| c.label.as_str()).unwrap_or("");
        tracing::debug!(node = self.me.0, conn = %id, from, cause, reason = reason.to_string(), "inbound connection refused during the handshake");
        self.refused.record(cause);
    }

    /// Writes the summaries that are due.
    pub(super) fn tick_summaries(&mut self, now: Instant) {
        let me = self.me.0;
        self.refused.tick(now, me);
        self.dropped.tick(now, me);
        self.node.inner.network().tunnels_refused.tick(now, me);
    }

    /// When summaries are due.
    pub(super) fn summaries_due(&self) -> impl Iterator<Item = Instant> {
        [
            self.refused.due(),
            self.dropped.due(),
            self.node.inner.network().tunnels_refused.due(),
        ]
        .into_iter()
        .flatten()
    }

    /// Whether inbound connection `id` is still in the handshake pool.
    pub(super) fn is_inbound_handshake(&self, id: ConnId) -> bool {
        self.inbound.contains_key(&id)
    }

    /// Marks inbound connection `id` as having sent its first bytes.
    pub(super) fn heard_from(&mut self, id: ConnId) {
        if let Some(i) = self.inbound.get_mut(&id) {
            i.heard = true;
        }
    }
}
