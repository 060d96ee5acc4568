//! A hand-driven TLS peer over a blocking socket, to play a misbehaving
//! node: wrong certificates, wrong hellos, oversized frames, never reading.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reign_proto::certgen::CertAndKey;
use reign_proto::codec::{Frame, FrameDecoder};
use reign_proto::handshake::Hello;
use reign_proto::tls::{cluster_id, crypto_provider, node_dns_name};
use reign_proto::{Incarnation, NodeId};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A raw TLS connection to a node.
pub struct RawPeer {
    stream: StreamOwned<ClientConnection, TcpStream>,
    decoder: FrameDecoder,
}

/// The client certificate a raw peer presents, if any.
pub enum ClientAuth<'a> {
    /// No certificate at all.
    None,
    /// This certificate.
    Cert(&'a CertAndKey),
}

impl RawPeer {
    /// Connects to `address`, expecting node `server` behind it, trusting
    /// `ca_pem`. Returns the TLS error if the handshake fails.
    pub fn connect(
        address: &str,
        server: NodeId,
        ca_pem: &str,
        auth: ClientAuth<'_>,
    ) -> Result<RawPeer, String> {
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
        let mut roots = RootCertStore::empty();
        roots.add(ca).map_err(|e| e.to_string())?;
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut config = match auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Cert(cert) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())
                        .map_err(|e| e.to_string())?],
                    PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
                        .map_err(|e| e.to_string())?,
                )
                .map_err(|e| e.to_string())?,
        };
        config.alpn_protocols = vec![reign_proto::spec::DEFAULT_PROTOCOL.as_bytes().to_vec()];
        let name = ServerName::try_from(node_dns_name(server)).map_err(|e| e.to_string())?;
        let conn = ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
        let sock = TcpStream::connect(address).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut stream = StreamOwned::new(conn, sock);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| e.to_string())?;
        }
        Ok(RawPeer {
            stream,
            decoder: FrameDecoder::new(16 << 20),
        })
    }

    /// Connects to `address` as node `me`, presenting `cert`, to node
    /// `target` of the cluster whose CA is `ca_pem`, and exchanges hellos:
    /// a peer the node has let in. Waits at most `wait` for its hello.
    ///
    /// # Panics
    /// If TLS fails or the node's hello does not come in time.
    pub fn admitted(
        address: &str,
        me: NodeId,
        target: NodeId,
        ca_pem: &str,
        cert: &CertAndKey,
        wait: Duration,
    ) -> RawPeer {
        let hello = RawPeer::hello(me, target, ca_pem);
        RawPeer::admitted_with(address, &hello, ca_pem, cert, wait)
    }

    /// [`admitted`](RawPeer::admitted) with a hello of the caller's own.
    ///
    /// A node with the lower id refuses a peer's connection as a duplicate
    /// while its own dial to that peer is on its way (`core/lifecycle.rs`,
    /// "Simultaneous dials"), and a real peer then dials again: so does
    /// this, until `wait` passes. Any other answer than a hello panics.
    ///
    /// # Panics
    /// If TLS fails or the node's hello does not come in time.
    pub fn admitted_with(
        address: &str,
        hello: &Hello,
        ca_pem: &str,
        cert: &CertAndKey,
        wait: Duration,
    ) -> RawPeer {
        let target = hello.target;
        let deadline = Instant::now() + wait;
        loop {
            let mut peer = RawPeer::connect(address, target, ca_pem, ClientAuth::Cert(cert))
                .unwrap_or_else(|e| panic!("TLS to node {}: {e}", target.0));
            peer.send_frame(&Frame::Hello(hello.to_frame_body()))
                .expect("send a hello");
            let left = deadline.saturating_duration_since(Instant::now());
            match peer.next_frame(left) {
                Some(Frame::Hello(_)) => return peer,
                Some(Frame::Goodbye(why))
                    if String::from_utf8_lossy(&why).contains("duplicate connection")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => panic!("node {} did not answer the hello: {other:?}", target.0),
            }
        }
    }

    /// A hello as node `me` of the cluster whose CA is `ca_pem`, aimed at `target`.
    pub fn hello(me: NodeId, target: NodeId, ca_pem: &str) -> Hello {
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM");
        Hello {
            version: reign_proto::codec::PROTOCOL_VERSION,
            node: me,
            incarnation: Incarnation(1),
            cluster: cluster_id(&ca).to_vec(),
            target,
            // A raw peer speaks like a node that predates features: it is
            // sent only what such a node understands.
            features: 0,
        }
    }

    /// The certificate the node presented (DER), to see which one it uses.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.stream
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.to_vec())
    }

    /// Sends one frame.
    pub fn send_frame(&mut self, frame: &Frame) -> std::io::Result<()> {
        self.send_raw(&frame.to_vec())
    }

    /// Sends raw plaintext bytes inside TLS.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads frames until the node closes the connection or `timeout` passes
    /// with nothing new. Returns the frames and whether it closed.
    pub fn read_until_closed(&mut self, timeout: Duration) -> (Vec<Frame>, bool) {
        let _ = self.stream.sock.set_read_timeout(Some(timeout));
        let mut frames = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return (frames, true),
                Ok(n) => {
                    self.decoder.feed(&buf[..n]);
                    while let Ok(Some(frame)) = self.decoder.next_frame() {
                        frames.push(frame);
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return (frames, false)
                }
                Err(_) => return (frames, true),
            }
        }
    }

    /// Reads the next frame, waiting at most `timeout`.
    pub fn next_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let _ = self.stream.sock.set_read_timeout(Some(timeout));
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Ok(Some(frame)) = self.decoder.next_frame() {
                return Some(frame);
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.decoder.feed(&buf[..n]),
            }
        }
    }
}

/// Reads from a plain socket until it closes (true) or `timeout` passes (false).
pub fn closes_within(sock: &mut TcpStream, timeout: Duration) -> bool {
    let _ = sock.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Node 1 of `cluster` played by a [`RawPeer`] on its own thread: it is
/// admitted by node 0 and then never reads, so once the socket and the
/// write window are full node 0's outbound queue only grows. Dropping it
/// closes the connection.
pub struct SilentPeer {
    done: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentPeer {
    /// Connects as node 1 to node 0 of `cluster` and returns once node 0
    /// answered the hello.
    ///
    /// # Panics
    /// If the peer is not admitted within 5 s.
    pub fn admitted(cluster: &crate::TestCluster) -> SilentPeer {
        let (addr, ca, cert) = (
            cluster.address(NodeId(0)).to_owned(),
            cluster.ca.cert_pem().to_owned(),
            cluster.cert(NodeId(1)),
        );
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let peer = RawPeer::admitted(
                &addr,
                NodeId(1),
                NodeId(0),
                &ca,
                &cert,
                Duration::from_secs(5),
            );
            ready_tx.send(()).unwrap();
            let _ = done_rx.recv();
            drop(peer);
        });
        ready_rx.recv().expect("the silent peer was admitted");
        SilentPeer {
            done: Some(done_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
