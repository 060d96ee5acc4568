//! Cluster certificates: a CA and one certificate per node (rcgen, ring).
//!
//! Used by `reign init`, by tests and by the simulator. Nodes only ever need
//! the CA certificate, never its key. Keys are Ed25519: fast to make and to
//! use, and their signatures have a fixed size, so handshakes are the same
//! length every time (the simulator replays runs byte for byte).
//!
//! Two kinds of validity: [`ClusterCa::node_cert`] and [`ClusterCa::generate`]
//! make certificates valid from 1975 to 4096 for tests and the simulator,
//! whose clock may be anywhere; `reign init` issues node certificates valid
//! for [`DEFAULT_NODE_CERT_DAYS`] (or `--days`) with
//! [`ClusterCa::node_cert_for_days`], and CAs valid for [`CA_DAYS`].

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::id::NodeId;
use crate::spec::{ClusterSpec, NodeDescriptor};
use crate::tls::node_dns_name;

/// A generated certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertAndKey {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// Why a CA could not be loaded from its PEM files.
#[derive(Debug)]
#[non_exhaustive]
pub enum CaError {
    /// The key file is not a PEM private key rcgen can use.
    Key(rcgen::Error),
    /// The certificate file is not a PEM CA certificate.
    Certificate(rcgen::Error),
    /// The key does not belong to the certificate: what it signs, the
    /// certificate does not vouch for.
    KeyMismatch,
}

impl std::fmt::Display for CaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaError::Key(e) => write!(f, "unreadable CA key: {e}"),
            CaError::Certificate(e) => write!(f, "unreadable CA certificate: {e}"),
            CaError::KeyMismatch => write!(f, "the CA key does not belong to the CA certificate"),
        }
    }
}

/// The rcgen error behind [`CaError::Key`] and [`CaError::Certificate`].
impl std::error::Error for CaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CaError::Key(e) | CaError::Certificate(e) => Some(e),
            CaError::KeyMismatch => None,
        }
    }
}

/// A cluster CA able to issue node certificates.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

/// A random 16-byte serial number whose DER encoding is always the same
/// length (top bit clear, first byte non-zero), so certificates, and with
/// them handshakes, have a fixed size.
fn serial() -> rcgen::SerialNumber {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; 16];
    // The system RNG does not fail on supported platforms; a fixed serial
    // would still be valid if it did.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    rcgen::SerialNumber::from(bytes)
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.serial_number = Some(serial());
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// The common name of CAs made by [`ClusterCa::generate`].
pub const DEFAULT_CA_NAME: &str = "reign cluster CA";

/// Days a node certificate from `reign init` is valid by default: 825, the
/// longest the CA/Browser Forum allowed TLS server certificates from 2018
/// to 2020. Long enough that renewals are a chore of every other year,
/// short enough that a stolen node key stops working on its own; a renewal
/// is a reload away (`reign init --renew`, then SIGHUP).
pub const DEFAULT_NODE_CERT_DAYS: u32 = 825;

/// The most days a node certificate may be valid for: the life of a CA
/// `reign init` makes, so no node certificate outlives its CA.
pub const MAX_NODE_CERT_DAYS: u32 = CA_DAYS;

/// Days a CA from `reign init` is valid: ten years. A CA is replaced by a
/// rollover while the cluster runs (`reign init --rollover-ca`), so it need
/// not live forever; ten years is the usual life of a private root.
pub const CA_DAYS: u32 = 3650;

/// How far before the moment of issue a certificate becomes valid, so that a
/// node whose clock is a little behind the issuing machine's accepts a fresh
/// certificate at once: an hour covers any clock that NTP keeps.
pub const NOT_BEFORE_SKEW: time::Duration = time::Duration::hours(1);

/// Sets `params` valid from [`NOT_BEFORE_SKEW`] ago for `days` days.
fn valid_for(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - NOT_BEFORE_SKEW;
    params.not_after = now + time::Duration::days(i64::from(days));
}

impl ClusterCa {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<ClusterCa, rcgen::Error> {
        ClusterCa::generate_named(DEFAULT_CA_NAME)
    }

    /// A new CA with a fresh key and the given common name.
    pub fn generate_named(name: &str) -> Result<ClusterCa, rcgen::Error> {
        ClusterCa::generate_with(name, None)
    }

    /// A new CA for `reign init`: valid for [`CA_DAYS`], named after the
    /// day it was made and its serial, so the old and the new CA of a
    /// rollover are told apart.
    pub fn generate_dated() -> Result<ClusterCa, rcgen::Error> {
        let now = time::OffsetDateTime::now_utc();
        let mut tag = [0u8; 3];
        use ring::rand::SecureRandom;
        // A fixed tag would still make a valid CA if the system RNG failed.
        let _ = ring::rand::SystemRandom::new().fill(&mut tag);
        let name = format!(
            "{DEFAULT_CA_NAME} {:04}-{:02}-{:02} {:02x}{:02x}{:02x}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            tag[0],
            tag[1],
            tag[2]
        );
        ClusterCa::generate_with(&name, Some(CA_DAYS))
    }

    fn generate_with(name: &str, days: Option<u32>) -> Result<ClusterCa, rcgen::Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let mut params = ca_params(name);
        if let Some(days) = days {
            valid_for(&mut params, days);
        }
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA made earlier, from its PEM files, to issue certificates for
    /// more nodes. Its name and key identifier come from the certificate;
    /// a key that does not belong to the certificate is refused.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(CaError::Key)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(CaError::Certificate)?;
        let ca = ClusterCa {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        };
        // Issue a throw-away certificate and check it against the CA: a
        // mismatched key would otherwise yield certificates no node accepts.
        let probe = ca.node_cert(NodeId(0)).map_err(CaError::Certificate)?;
        let material = crate::spec::ClusterSpec {
            node_cert_pem: probe.cert_pem,
            node_key_pem: probe.key_pem,
            cluster_cert_pem: cert_pem.to_owned(),
            nodes: vec![NodeDescriptor {
                id: 0,
                address: "127.0.0.1:1".into(),
                listen_address: String::new(),
                local_address: String::new(),
            }],
            ..crate::spec::ClusterSpec::default()
        };
        material
            .resolve(NodeId(0), rustls::pki_types::UnixTime::now())
            .map_err(|_| CaError::KeyMismatch)?;
        Ok(ca)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM. Keep it off the nodes.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate and key for `node`, naming it as `node-<id>.reign`,
    /// usable as both TLS client and server, valid from 1975 to 4096 (for
    /// tests and simulations; see [`node_cert_for_days`](Self::node_cert_for_days)).
    pub fn node_cert(&self, node: NodeId) -> Result<CertAndKey, rcgen::Error> {
        self.issue(node, None)
    }

    /// As [`node_cert`](Self::node_cert), valid from [`NOT_BEFORE_SKEW`]
    /// ago for `days` days (what `reign init` issues).
    pub fn node_cert_for_days(&self, node: NodeId, days: u32) -> Result<CertAndKey, rcgen::Error> {
        self.issue(node, Some(days))
    }

    fn issue(&self, node: NodeId, days: Option<u32>) -> Result<CertAndKey, rcgen::Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let mut params = CertificateParams::new(vec![node_dns_name(node)])?;
        if let Some(days) = days {
            valid_for(&mut params, days);
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("reign node {}", node.0));
        params.distinguished_name = dn;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// An in-memory spec for `node` of a cluster of `ids`, every node on
    /// 127.0.0.1 at the given ports, with this node's PEMs inlined. Handy for
    /// tests and simulations.
    pub fn inline_spec(
        &self,
        node: NodeId,
        addresses: &[(NodeId, String)],
    ) -> Result<ClusterSpec, rcgen::Error> {
        let cert = self.node_cert(node)?;
        Ok(ClusterSpec {
            nodes: addresses
                .iter()
                .map(|(id, address)| NodeDescriptor {
                    id: id.0,
                    address: address.clone(),
                    listen_address: String::new(),
                    local_address: String::new(),
                })
                .collect(),
            node_cert_pem: cert.cert_pem,
            node_key_pem: cert.key_pem,
            cluster_cert_pem: self.cert_pem.clone(),
            ..ClusterSpec::default()
        })
    }
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}
