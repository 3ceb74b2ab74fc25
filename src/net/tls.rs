//! TLS for the transport seam: a rustls server session over a non-blocking mio
//! `TcpStream` ([`TlsStream`]), and the server configuration built from the
//! `--tls-*` flags ([`server_config`]).
//!
//! The session is driven by hand, as rustls's `tlsserver-mio` example does: reads pull
//! records off the socket (`read_tls`), decrypt them (`process_new_packets`) and copy
//! the plaintext into the connection's read buffer; writes encrypt into rustls's
//! outgoing buffer (`writer`) and push records out (`write_tls`), stopping at
//! `WouldBlock` like a plain socket. The handshake happens inside those calls: nothing
//! reaches the AMQP layer before it is done, so the AMQP handshake timeout (which
//! starts at accept) bounds it too.
//!
//! Knows nothing of AMQP: the caller asks for the verified client certificate's name
//! ([`TlsStream::peer_name`]) when it wants one.

use bytes::BytesMut;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use std::io::{self, IoSlice, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// Which part of a client certificate SASL EXTERNAL logs in as (RabbitMQ's
/// `ssl_cert_login_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoginFrom {
    /// The subject's common name(s).
    CommonName,
    /// The whole subject, formatted as RabbitMQ does ("CN=client,O=Warren,C=GB");
    /// RabbitMQ's default.
    #[default]
    DistinguishedName,
}

/// What the `--tls-*` flags name.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: Option<std::path::PathBuf>,
    pub require_client_cert: bool,
}

fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: cannot read: {e}", path.display()))
}

fn certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(flag, path)?;
    certs_pem(&pem).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

fn certs_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the file (PEM \"BEGIN CERTIFICATE\" expected)".into());
    }
    Ok(certs)
}

/// The crypto provider: ring (builds offline, no cmake). rustls 0.23.48 deprecates it
/// for lacking post-quantum key exchange, which aws-lc-rs has; X25519 and the NIST
/// curves are what RabbitMQ's OTP offers too.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server configuration: the certificate chain and its key (which must
/// match), TLS 1.2 and 1.3, and with a CA the client-certificate verifier (required or
/// optional). `alpn`: protocols to offer (empty for AMQP). Err is the message start-up
/// prints before exiting.
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, String> {
    let chain = certs("--tls-cert", &files.cert)?;
    let key_pem = read_file("--tls-key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "--tls-key {}: no PEM private key in the file: {e}",
            files.key.display()
        )
    })?;
    let ca = match &files.ca {
        Some(ca) => Some(certs("--tls-ca", ca)?),
        None => None,
    };
    build(chain, key, ca, files.require_client_cert, alpn).map_err(|e| match e {
        BuildError::Ca(e) => format!(
            "--tls-ca {}: {e}",
            files.ca.as_deref().unwrap_or(Path::new("")).display()
        ),
        BuildError::Key(e) => format!(
            "--tls-cert {} / --tls-key {}: {e}",
            files.cert.display(),
            files.key.display()
        ),
        BuildError::Other(e) => e,
    })
}

/// The same from PEM text in memory (the fuzz target's fixed certificate).
pub fn server_config_pem(
    cert: &[u8],
    key: &[u8],
    ca: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, String> {
    let chain = certs_pem(cert)?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| e.to_string())?;
    let ca = ca.map(certs_pem).transpose()?;
    build(chain, key, ca, false, &[]).map_err(|e| match e {
        BuildError::Ca(e) | BuildError::Key(e) | BuildError::Other(e) => e,
    })
}

enum BuildError {
    Ca(String),
    Key(String),
    Other(String),
}

fn build(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: Option<Vec<CertificateDer<'static>>>,
    require_client_cert: bool,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, BuildError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| BuildError::Other(format!("TLS: {e}")))?;
    let builder = match ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in ca {
                roots.add(c).map_err(|e| BuildError::Ca(e.to_string()))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let v = if require_client_cert {
                v
            } else {
                v.allow_unauthenticated()
            };
            let v = v.build().map_err(|e| BuildError::Ca(e.to_string()))?;
            builder.with_client_cert_verifier(v)
        }
        None if require_client_cert => {
            return Err(BuildError::Other(
                "--tls-require-client-cert needs --tls-ca (the CA to verify against)".into(),
            ))
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| BuildError::Key(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Plaintext copied out of rustls per call at most: bounds the zeroing of the read
/// buffer's spare capacity (rustls's reader needs initialised bytes).
const PLAIN_CHUNK: usize = 64 * 1024;

/// A server-side TLS session over a non-blocking TCP stream.
pub struct TlsStream {
    pub(super) sock: mio::net::TcpStream,
    conn: ServerConnection,
    /// The socket reached end of stream (or the peer sent close_notify).
    eof: bool,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("sock", &self.sock)
            .field("handshaking", &self.conn.is_handshaking())
            .finish()
    }
}

impl TlsStream {
    pub fn new(sock: mio::net::TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream {
            sock,
            conn,
            eof: false,
        })
    }

    /// Reads and decrypts what the socket has into `buf`'s spare capacity. The
    /// contract of `Transport::read_into`, with one twist for edge-triggered readiness:
    /// when it stops with bytes possibly left (the buffer is full), it reports the room
    /// offered as the bytes read, so the caller reads again rather than waiting for an
    /// event that will not come. Ok((0, _)) is end of stream; WouldBlock when the socket
    /// is drained and no plaintext came (mid-handshake, or a partial record).
    pub fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<(usize, usize)> {
        let want = buf.capacity() - buf.len();
        let mut n = 0;
        loop {
            let plain = match self.conn.process_new_packets() {
                Ok(st) => st.plaintext_bytes_to_read(),
                Err(e) => {
                    // rustls queued an alert telling the peer why: a last try to send it.
                    let _ = self.conn.write_tls(&mut self.sock);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            // Handshake records (and alerts) go out as soon as they are made; a full
            // socket leaves them to the flush phase (`wants_write`).
            if self.conn.wants_write() {
                self.flush_pending()?;
            }
            if plain > 0 {
                let room = buf.capacity() - buf.len();
                let k = plain.min(room).min(PLAIN_CHUNK);
                let at = buf.len();
                buf.resize(at + k, 0);
                let got = read_plain(&mut self.conn, &mut buf[at..])?;
                buf.truncate(at + got);
                n += got;
                if buf.len() == buf.capacity() {
                    return Ok((n, n));
                }
                continue;
            }
            if self.eof {
                break;
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n > 0 || self.eof {
            Ok((n, want))
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    /// Writes rustls's pending records. Ok(true) when none are left.
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Records are waiting for the socket.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Encrypts what of `bufs` rustls takes (up to its 64 KB buffer) and writes it
    /// out. WouldBlock while earlier records are still waiting for the socket: the
    /// plaintext stays in the caller's out-queue, as with a full TCP socket.
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.flush_pending()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.conn.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // What the socket does not take now goes out at the next write or flush.
        self.flush_pending()?;
        Ok(n)
    }

    /// Says goodbye (close_notify, best effort) and shuts the socket.
    pub fn shutdown(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush_pending();
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }

    /// The name SASL EXTERNAL logs in as: from the client certificate, which rustls
    /// has verified against `--tls-ca` (an unverified one fails the handshake). None
    /// without a certificate, or when it has no such name.
    pub fn peer_name(&self, from: LoginFrom) -> Option<String> {
        let cert = self.conn.peer_certificates()?.first()?;
        let subject = super::x509::subject(cert)?;
        match from {
            LoginFrom::CommonName => super::x509::common_name(&subject),
            LoginFrom::DistinguishedName => Some(super::x509::distinguished_name(&subject)),
        }
    }

    /// What the management API shows of the session (RabbitMQ's `ssl_*` and
    /// `peer_cert_*` connection fields); None before the handshake is done.
    pub fn info(&self) -> Option<TlsInfo> {
        let protocol = match self.conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => "tlsv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "tlsv1.2",
            _ => "tls",
        };
        let suite = self.conn.negotiated_cipher_suite()?.suite();
        let (key_exchange, cipher, hash) = suite_parts(suite.as_str().unwrap_or(""));
        let cert = self
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| super::x509::parse(c));
        Some(TlsInfo {
            protocol,
            key_exchange,
            cipher,
            hash,
            peer_cert_subject: cert
                .as_ref()
                .map(|c| super::x509::distinguished_name(&c.subject)),
            peer_cert_issuer: cert
                .as_ref()
                .map(|c| super::x509::distinguished_name(&c.issuer)),
            peer_cert_validity: cert
                .and_then(|c| c.validity)
                .map(|(from, to)| format!("{from} - {to}")),
        })
    }
}

/// A TLS session as the management API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// "tlsv1.3", "tlsv1.2" (OTP's names, which RabbitMQ shows).
    pub protocol: &'static str,
    /// "any" for TLS 1.3 (the suite does not fix it), else e.g. "ecdhe_ecdsa".
    pub key_exchange: String,
    /// e.g. "aes_256_gcm".
    pub cipher: String,
    /// e.g. "sha384".
    pub hash: String,
    pub peer_cert_subject: Option<String>,
    pub peer_cert_issuer: Option<String>,
    pub peer_cert_validity: Option<String>,
}

/// A suite's IANA name in OTP's parts: "TLS13_AES_256_GCM_SHA384" → ("any",
/// "aes_256_gcm", "sha384"); "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" → ("ecdhe_rsa",
/// "aes_128_gcm", "sha256").
fn suite_parts(name: &str) -> (String, String, String) {
    let lower = name.to_ascii_lowercase();
    let (kx, rest) = match lower.strip_prefix("tls13_") {
        Some(rest) => ("any", rest),
        None => {
            let body = lower.strip_prefix("tls_").unwrap_or(&lower);
            body.split_once("_with_").unwrap_or(("", body))
        }
    };
    let (cipher, hash) = rest.rsplit_once('_').unwrap_or((rest, ""));
    (kx.to_string(), cipher.to_string(), hash.to_string())
}

/// Copies decrypted bytes into `out`; how many.
fn read_plain(conn: &mut ServerConnection, out: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < out.len() {
        match conn.reader().read(&mut out[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A server-side TLS session fed from memory (the fuzz target): the same
/// `process_new_packets` path a socket's bytes take, without a socket.
#[cfg(feature = "fuzzing")]
pub fn feed(config: Arc<ServerConfig>, data: &[u8]) {
    let Ok(mut conn) = ServerConnection::new(config) else {
        return;
    };
    let mut input = data;
    let mut plain = vec![0u8; 4096];
    let mut sink = Vec::new();
    while !input.is_empty() {
        match conn.read_tls(&mut input) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if conn.process_new_packets().is_err() {
            let _ = conn.write_tls(&mut sink);
            return;
        }
        while conn.wants_write() {
            sink.clear();
            if conn.write_tls(&mut sink).is_err() {
                return;
            }
        }
        let _ = read_plain(&mut conn, &mut plain);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn suites_split_as_otp_names_them() {
        let p = |s: &str| {
            let (a, b, c) = super::suite_parts(s);
            format!("{a}|{b}|{c}")
        };
        assert_eq!(p("TLS13_AES_256_GCM_SHA384"), "any|aes_256_gcm|sha384");
        assert_eq!(
            p("TLS13_CHACHA20_POLY1305_SHA256"),
            "any|chacha20_poly1305|sha256"
        );
        assert_eq!(
            p("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
            "ecdhe_ecdsa|aes_128_gcm|sha256"
        );
    }
}
