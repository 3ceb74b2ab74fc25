//! AMQPS for the tool: a blocking rustls client session over std's `TcpStream`
//! ([`Stream`]), and the client configuration from `--tls` / `--tls-ca` ([`config`]).
//!
//! The producer writes on one thread while another reads confirms, so a session can be
//! split like a socket ([`Stream::try_clone`]): both halves share the rustls session
//! behind a mutex and each keeps its own clone of the socket. The reading half does its
//! blocking read outside the lock and only decrypts under it; the writing half encrypts
//! and writes under it (records must leave in the order they were sealed).
//!
//! Knows nothing of AMQP.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection};

/// A verifier that accepts any server certificate: benchmarks against a broker with a
/// self-signed certificate, without `--tls-ca`. Signatures are still checked, so the
/// handshake costs what a verified one does, minus the chain walk.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end: &CertificateDer<'_>,
        _inter: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client configuration: verify the broker against the CA in `ca`, or (None)
/// accept any certificate.
pub fn config(ca: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    let provider = warren::net::tls::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let config = match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("--tls-ca {path}: {e}"))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| format!("--tls-ca {path}: {e}"))?;
                roots.add(c).map_err(|e| format!("--tls-ca {path}: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A connected socket, plain or TLS.
pub enum Stream {
    Tcp(TcpStream),
    Tls(TlsHalf),
}

/// One half (or the whole) of a client TLS session.
pub struct TlsHalf {
    sock: TcpStream,
    conn: Arc<Mutex<ClientConnection>>,
    /// Received ciphertext not yet handed to rustls.
    raw: Vec<u8>,
    at: usize,
    end: usize,
}

impl Stream {
    /// Runs the TLS handshake over `sock` (blocking, bounded by its read timeout).
    pub fn tls(
        mut sock: TcpStream,
        config: Arc<ClientConfig>,
        host: &str,
    ) -> Result<Stream, String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("TLS server name {host:?}: {e}"))?;
        let mut conn = ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)
                .map_err(|e| format!("TLS handshake with {host}: {e}"))?;
        }
        Ok(Stream::Tls(TlsHalf {
            sock,
            conn: Arc::new(Mutex::new(conn)),
            raw: vec![0; 256 * 1024],
            at: 0,
            end: 0,
        }))
    }

    fn sock(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.sock().set_read_timeout(d)
    }

    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.sock().set_write_timeout(d)
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.sock().set_nodelay(on)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock().peer_addr()
    }

    /// Another handle on the same connection (one thread writes, another reads).
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Tls(t) => Stream::Tls(TlsHalf {
                sock: t.sock.try_clone()?,
                conn: t.conn.clone(),
                raw: vec![0; t.raw.len()],
                at: 0,
                end: 0,
            }),
        })
    }
}

fn lock(m: &Mutex<ClientConnection>) -> std::sync::MutexGuard<'_, ClientConnection> {
    // A thread that panicked holding the session leaves it usable for a close.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Read for Stream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let t = match self {
            Stream::Tcp(s) => return s.read(out),
            Stream::Tls(t) => t,
        };
        loop {
            {
                let mut c = lock(&t.conn);
                match c.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if t.at < t.end {
                    let mut input = &t.raw[t.at..t.end];
                    let n = c.read_tls(&mut input)?;
                    t.at += n;
                    c.process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    continue;
                }
            }
            // The blocking read happens outside the lock: the writer keeps writing.
            let n = t.sock.read(&mut t.raw)?;
            if n == 0 {
                return Ok(0);
            }
            t.at = 0;
            t.end = n;
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let t = match self {
            Stream::Tcp(s) => return s.write(b),
            Stream::Tls(t) => t,
        };
        let mut c = lock(&t.conn);
        // Records sealed earlier go first; a timeout here has taken nothing of `b`.
        while c.wants_write() {
            c.write_tls(&mut t.sock)?;
        }
        let n = c.writer().write(b)?;
        // What the socket does not take now goes at the next call: `b`'s bytes are
        // already sealed, so they count as written.
        while c.wants_write() {
            match c.write_tls(&mut t.sock) {
                Ok(_) => {}
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let t = match self {
            Stream::Tcp(s) => return s.flush(),
            Stream::Tls(t) => t,
        };
        let mut c = lock(&t.conn);
        while c.wants_write() {
            c.write_tls(&mut t.sock)?;
        }
        Ok(())
    }
}

impl Stream {
    /// Sends close_notify (TLS) and shuts the socket.
    pub fn shutdown(&mut self) {
        if let Stream::Tls(t) = self {
            let mut c = lock(&t.conn);
            c.send_close_notify();
            while c.wants_write() {
                if c.write_tls(&mut t.sock).is_err() {
                    break;
                }
            }
        }
        let _ = self.sock().shutdown(std::net::Shutdown::Both);
    }
}
