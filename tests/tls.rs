//! AMQPS and HTTPS: the broker's TLS listener (`--tls-port`), certificate verification
//! both ways, SASL EXTERNAL from the client certificate, refusals (untrusted
//! certificate, missing certificate, the wrong protocol on either port, a handshake
//! that dribbles past the timeout), `--http-tls`, and start-up with bad files.
//!
//! Every run makes its own CA and certificates (rcgen) in a temporary directory: no
//! fixture to expire. The Rust client is a small blocking AMQP client over rustls
//! written here (lapin's TLS needs OpenSSL); pika goes through Python's `ssl`.

mod support;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::{wait_until, Broker};
use warren::proto::frame::{self, FRAME_METHOD, PROTOCOL_HEADER};
use warren::proto::{basic, channel, connection, queue, FieldTable, FieldValue, Method};

// ---------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------

/// A CA and what it signed, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

impl Pki {
    /// ca.pem; server.pem/server.key (localhost, 127.0.0.1); client.pem/client.key
    /// (C=GB, O=Warren, CN=guest); rogue-client.* (CN=guest, signed by another CA);
    /// other-ca.pem (a CA that signed nothing here).
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("Warren Test CA");
        let rogue = new_ca("Rogue CA");
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca.cert.pem());
        write("other-ca.pem", rogue.cert.pem());

        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "localhost");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
        write("server.pem", cert.pem());
        write("server.key", key.serialize_pem());

        let client = |signer: &Ca, prefix: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            // In this order in the certificate (rcgen's default DN holds a CN first).
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(DnType::CountryName, "GB");
            p.distinguished_name
                .push(DnType::OrganizationName, "Warren");
            p.distinguished_name.push(DnType::CommonName, "guest");
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let cert = p.signed_by(&key, &signer.cert, &signer.key).unwrap();
            write(&format!("{prefix}.pem"), cert.pem());
            write(&format!("{prefix}.key"), key.serialize_pem());
        };
        client(&ca, "client");
        client(&rogue, "rogue-client");
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    /// The server flags: certificate, key, client CA.
    fn server_args(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "--tls-port".into(),
            "0".into(),
            "--tls-cert".into(),
            self.arg("server.pem"),
            "--tls-key".into(),
            self.arg("server.key"),
            "--tls-ca".into(),
            self.arg("ca.pem"),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    /// A client configuration trusting `ca` and presenting `cert` (a file prefix).
    fn client_config(&self, ca: &str, cert: Option<&str>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path(ca)).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(warren::net::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match cert {
            Some(prefix) => {
                let chain = CertificateDer::pem_file_iter(self.path(&format!("{prefix}.pem")))
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key =
                    PrivateKeyDer::from_pem_file(self.path(&format!("{prefix}.key"))).unwrap();
                b.with_client_auth_cert(chain, key).unwrap()
            }
            None => b.with_no_client_auth(),
        };
        Arc::new(config)
    }
}

fn start(pki: &Pki, extra: &[&str]) -> Option<(Broker, u16)> {
    let args = pki.server_args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let b = Broker::spawn_own(&args)?;
    let port = amqps_port(&b);
    Some((b, port))
}

/// The AMQPS port from the broker's banner (`warren listening on amqps://ADDR:PORT`).
fn amqps_port(b: &Broker) -> u16 {
    let mut port = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            port = b.logs().lines().find_map(|l| {
                l.trim_end()
                    .strip_prefix("warren listening on amqps://")
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse::<u16>().ok())
            });
            port.is_some()
        }),
        "no amqps banner:\n{}",
        b.logs()
    );
    port.unwrap()
}

// ---------------------------------------------------------------------------------
// A small blocking AMQP client over any stream
// ---------------------------------------------------------------------------------

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects to `port` over TLS as `name` (SNI and certificate name) and completes the
/// TLS handshake. Err: what the handshake said.
fn tls_connect(port: u16, config: Arc<rustls::ClientConfig>, name: &str) -> io::Result<Tls> {
    let sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let server = ServerName::try_from(name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(config, server).map_err(io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

struct Amqp<S: Read + Write> {
    s: S,
    buf: BytesMut,
}

impl<S: Read + Write> Amqp<S> {
    fn new(s: S) -> Self {
        Amqp {
            s,
            buf: BytesMut::new(),
        }
    }

    fn send(&mut self, ch: u16, m: &Method) -> io::Result<()> {
        let mut b = BytesMut::new();
        frame::write_method(&mut b, ch, m);
        self.s.write_all(&b)?;
        self.s.flush()
    }

    /// The next frame: (kind, channel, payload).
    fn frame(&mut self) -> io::Result<(u8, u16, Bytes)> {
        loop {
            if let Some(h) = frame::parse(&self.buf, 1 << 20)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
            {
                let all = self.buf.split_to(h.total_len()).freeze();
                return Ok((h.kind, h.channel, all.slice(7..7 + h.size as usize)));
            }
            let mut chunk = [0u8; 65536];
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn method(&mut self) -> io::Result<Method> {
        loop {
            let (kind, _, payload) = self.frame()?;
            if kind == FRAME_METHOD {
                return Method::decode(&payload)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
            }
        }
    }

    /// Protocol header → connection.start: the mechanisms offered.
    fn start(&mut self) -> io::Result<String> {
        self.s.write_all(PROTOCOL_HEADER)?;
        match self.method()? {
            Method::ConnectionStart(s) => Ok(String::from_utf8_lossy(&s.mechanisms).into()),
            m => panic!("expected connection.start, got {m:?}"),
        }
    }

    /// start-ok with `mechanism` → tune → open "/": Ok, or the close the broker sent.
    fn login(&mut self, mechanism: &str, response: &[u8]) -> io::Result<Result<(), String>> {
        let mut caps = FieldTable::new();
        caps.insert(
            Bytes::from_static(b"authentication_failure_close"),
            FieldValue::Bool(true),
        );
        let mut props = FieldTable::new();
        props.insert(Bytes::from_static(b"capabilities"), FieldValue::Table(caps));
        self.send(
            0,
            &Method::ConnectionStartOk(connection::StartOk {
                client_properties: props,
                mechanism: Bytes::from(mechanism.to_string()),
                response: Bytes::copy_from_slice(response),
                locale: Bytes::from_static(b"en_US"),
            }),
        )?;
        let tune = match self.method()? {
            Method::ConnectionTune(t) => t,
            Method::ConnectionClose(c) => {
                return Ok(Err(format!(
                    "{} {}",
                    c.reply_code,
                    String::from_utf8_lossy(&c.reply_text)
                )))
            }
            m => panic!("expected tune, got {m:?}"),
        };
        self.send(
            0,
            &Method::ConnectionTuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: 0,
            }),
        )?;
        self.send(
            0,
            &Method::ConnectionOpen(connection::Open {
                virtual_host: Bytes::from_static(b"/"),
                ..Default::default()
            }),
        )?;
        match self.method()? {
            Method::ConnectionOpenOk(_) => Ok(Ok(())),
            m => Ok(Err(format!("{m:?}"))),
        }
    }

    /// Opens channel 1, declares a server-named queue, publishes `body` to it and
    /// gets it back.
    fn round_trip(&mut self, body: &[u8]) -> io::Result<Vec<u8>> {
        self.send(1, &Method::ChannelOpen(channel::Open::default()))?;
        assert!(matches!(self.method()?, Method::ChannelOpenOk(_)));
        self.send(
            1,
            &Method::QueueDeclare(queue::Declare {
                exclusive: true,
                ..Default::default()
            }),
        )?;
        let q = match self.method()? {
            Method::QueueDeclareOk(ok) => ok.queue,
            m => panic!("expected declare-ok, got {m:?}"),
        };
        let mut b = BytesMut::new();
        frame::write_method(
            &mut b,
            1,
            &Method::BasicPublish(basic::Publish {
                routing_key: q.clone(),
                ..Default::default()
            }),
        );
        frame::write_content_header(&mut b, 1, body.len() as u64, &[0, 0]);
        frame::write_body(&mut b, 1, body, 131_072);
        self.s.write_all(&b)?;
        self.send(
            1,
            &Method::BasicGet(basic::Get {
                queue: q,
                no_ack: true,
                ..Default::default()
            }),
        )?;
        match self.method()? {
            Method::BasicGetOk(_) => {}
            m => panic!("expected get-ok, got {m:?}"),
        }
        let (kind, _, _) = self.frame()?;
        assert_eq!(kind, frame::FRAME_HEADER);
        let mut got = Vec::new();
        while got.len() < body.len() {
            let (kind, _, p) = self.frame()?;
            assert_eq!(kind, frame::FRAME_BODY);
            got.extend_from_slice(&p);
        }
        Ok(got)
    }
}

fn plain(user: &str, pass: &str) -> Vec<u8> {
    format!("\0{user}\0{pass}").into_bytes()
}

/// A body that crosses several TLS records and AMQP frames.
fn big_body() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 251) as u8).collect()
}

/// Reads until end of stream or error; true when the stream ended within `within`.
fn closed_within(s: &mut impl Read, within: Duration) -> bool {
    let t0 = Instant::now();
    let mut b = [0u8; 4096];
    while t0.elapsed() < within {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

#[test]
fn external_login_as_the_certificate_common_name_over_a_verified_server() {
    let pki = Pki::new();
    let Some((b, port)) = start(&pki, &["--tls-login-from", "common_name"]) else {
        return;
    };
    let s = tls_connect(
        port,
        pki.client_config("ca.pem", Some("client")),
        "localhost",
    )
    .expect("handshake");
    let version = s.conn.protocol_version();
    let mut c = Amqp::new(s);
    let mechs = c.start().unwrap();
    assert!(
        mechs.split(' ').any(|m| m == "EXTERNAL"),
        "EXTERNAL offered to a verified client certificate: {mechs}"
    );
    c.login("EXTERNAL", b"")
        .unwrap()
        .expect("EXTERNAL login as guest");
    let body = big_body();
    assert_eq!(c.round_trip(&body).unwrap(), body);
    assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert!(
        wait_until(Duration::from_secs(5), || b
            .logs()
            .contains("EXTERNAL login as 'guest'")),
        "{}",
        b.logs()
    );
    // The connection shows the user it logged in as, and its mechanism.
    let conns: serde_json::Value = ureq::get(&format!("{}/api/connections", b.http_url()))
        .set("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let row = &conns.as_array().unwrap()[0];
    assert_eq!(row["user"], "guest", "{row}");
    assert_eq!(row["auth_mechanism"], "EXTERNAL", "{row}");
    // RabbitMQ's ssl_* and peer_cert_* fields.
    assert_eq!(row["ssl"], true, "{row}");
    assert_eq!(row["ssl_protocol"], "tlsv1.3", "{row}");
    assert_eq!(row["ssl_key_exchange"], "any", "{row}");
    assert!(
        row["ssl_cipher"].as_str().is_some_and(|c| !c.is_empty()),
        "{row}"
    );
    assert_eq!(row["peer_cert_subject"], "CN=guest,O=Warren,C=GB", "{row}");
    assert_eq!(row["peer_cert_issuer"], "CN=Warren Test CA", "{row}");
    assert!(
        row["peer_cert_validity"]
            .as_str()
            .is_some_and(|v| v.len() == 43 && v.contains("Z - ")),
        "{row}"
    );
}

#[test]
fn tls12_works_too_and_external_defaults_to_rabbitmqs_distinguished_name() {
    let pki = Pki::new();
    let Some((b, port)) = start(&pki, &[]) else {
        return;
    };
    let config = rustls::ClientConfig::builder_with_provider(warren::net::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates({
            let mut r = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
                r.add(c.unwrap()).unwrap();
            }
            r
        })
        .with_client_auth_cert(
            CertificateDer::pem_file_iter(pki.path("client.pem"))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap(),
            PrivateKeyDer::from_pem_file(pki.path("client.key")).unwrap(),
        )
        .unwrap();
    let s = tls_connect(port, Arc::new(config), "127.0.0.1").expect("TLS 1.2 handshake");
    assert_eq!(
        s.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut c = Amqp::new(s);
    assert!(c.start().unwrap().contains("EXTERNAL"));
    // No user is called by the DN: refused, 403, with RabbitMQ's text.
    let e = c.login("EXTERNAL", b"").unwrap().unwrap_err();
    assert_eq!(
        e,
        "403 ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. \
         For details see the broker logfile."
    );
    assert!(
        wait_until(Duration::from_secs(5), || b
            .logs()
            .contains("EXTERNAL login as 'CN=guest,O=Warren,C=GB'")),
        "{}",
        b.logs()
    );
    // A password-less user named by the DN, with permissions on "/": EXTERNAL works.
    let dn = "CN%3Dguest%2CO%3DWarren%2CC%3DGB";
    let api = |path: &str, body: serde_json::Value| {
        ureq::put(&format!("{}{path}", b.http_url()))
            .set("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
            .send_json(body)
            .unwrap()
            .status()
    };
    assert!(
        api(
            &format!("/api/users/{dn}"),
            serde_json::json!({"password_hash": "", "tags": ""})
        ) < 300
    );
    assert!(
        api(
            &format!("/api/permissions/%2F/{dn}"),
            serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"})
        ) < 300
    );
    let mut c = Amqp::new(
        tls_connect(
            port,
            pki.client_config("ca.pem", Some("client")),
            "localhost",
        )
        .unwrap(),
    );
    c.start().unwrap();
    c.login("EXTERNAL", b"")
        .unwrap()
        .expect("EXTERNAL as the DN user");
    assert_eq!(c.round_trip(b"dn").unwrap(), b"dn");
    // The same user cannot log in with PLAIN: it has no password.
    let mut c = Amqp::new(
        tls_connect(
            port,
            pki.client_config("ca.pem", Some("client")),
            "localhost",
        )
        .unwrap(),
    );
    c.start().unwrap();
    assert!(c
        .login("PLAIN", &plain("CN=guest,O=Warren,C=GB", ""))
        .unwrap()
        .is_err());
}

#[test]
fn without_a_client_certificate_plain_works_and_external_is_not_offered() {
    let pki = Pki::new();
    let Some((_b, port)) = start(&pki, &[]) else {
        return;
    };
    let s = tls_connect(port, pki.client_config("ca.pem", None), "localhost").unwrap();
    let mut c = Amqp::new(s);
    let mechs = c.start().unwrap();
    assert_eq!(mechs, "PLAIN AMQPLAIN");
    c.login("PLAIN", &plain("guest", "guest")).unwrap().unwrap();
    assert_eq!(c.round_trip(b"hello").unwrap(), b"hello");
    // EXTERNAL asked for anyway: not offered, so the socket is just closed.
    let s = tls_connect(port, pki.client_config("ca.pem", None), "localhost").unwrap();
    let mut c = Amqp::new(s);
    c.start().unwrap();
    assert!(c.login("EXTERNAL", b"").is_err(), "closed without a reply");
}

#[test]
fn the_client_refuses_a_server_its_ca_did_not_sign() {
    let pki = Pki::new();
    let Some((_b, port)) = start(&pki, &[]) else {
        return;
    };
    let e = tls_connect(port, pki.client_config("other-ca.pem", None), "localhost")
        .expect_err("an unknown issuer must fail the handshake");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    // And a name the certificate does not carry.
    let e = tls_connect(port, pki.client_config("ca.pem", None), "warren.example")
        .expect_err("a wrong name must fail the handshake");
    assert!(e.to_string().contains("not valid for name"), "{e}");
}

#[test]
fn an_untrusted_client_certificate_is_refused_and_others_carry_on() {
    let pki = Pki::new();
    let Some((b, port)) = start(&pki, &[]) else {
        return;
    };
    let mut good = Amqp::new(
        tls_connect(
            port,
            pki.client_config("ca.pem", Some("client")),
            "localhost",
        )
        .unwrap(),
    );
    good.start().unwrap();
    good.login("PLAIN", &plain("guest", "guest"))
        .unwrap()
        .unwrap();
    // TLS 1.3: the client's handshake is over before the server has checked the
    // certificate; the refusal arrives as an alert on the first read.
    let refused = tls_connect(
        port,
        pki.client_config("ca.pem", Some("rogue-client")),
        "localhost",
    )
    .and_then(|s| Amqp::new(s).start());
    let e = refused.expect_err("a certificate from another CA is refused");
    assert!(e.to_string().contains("UnknownCA"), "{e}");
    assert!(
        wait_until(Duration::from_secs(5), || b
            .logs()
            .contains("invalid peer certificate")),
        "{}",
        b.logs()
    );
    assert_eq!(good.round_trip(b"still here").unwrap(), b"still here");
}

#[test]
fn require_client_cert_refuses_a_client_without_one() {
    let pki = Pki::new();
    let Some((_b, port)) = start(&pki, &["--tls-require-client-cert"]) else {
        return;
    };
    let refused = tls_connect(port, pki.client_config("ca.pem", None), "localhost")
        .and_then(|s| Amqp::new(s).start());
    let e = refused.expect_err("no certificate: refused");
    assert!(e.to_string().contains("CertificateRequired"), "{e}");
    let mut c = Amqp::new(
        tls_connect(
            port,
            pki.client_config("ca.pem", Some("client")),
            "localhost",
        )
        .unwrap(),
    );
    c.start().unwrap();
    c.login("PLAIN", &plain("guest", "guest")).unwrap().unwrap();
}

#[test]
fn the_wrong_protocol_on_either_port_is_refused_cleanly_while_others_carry_on() {
    let pki = Pki::new();
    let Some((b, tls_port)) = start(&pki, &[]) else {
        return;
    };
    let mut other =
        Amqp::new(tls_connect(tls_port, pki.client_config("ca.pem", None), "localhost").unwrap());
    other.start().unwrap();
    other
        .login("PLAIN", &plain("guest", "guest"))
        .unwrap()
        .unwrap();

    // Plain AMQP to the TLS port: a TLS alert, then the close.
    let mut s = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(PROTOCOL_HEADER).unwrap();
    let mut first = [0u8; 2];
    let t0 = Instant::now();
    loop {
        match s.read(&mut first) {
            Ok(_) => break,
            Err(_) if t0.elapsed() < Duration::from_secs(5) => {}
            Err(e) => panic!("no answer to plain AMQP on the TLS port: {e}"),
        }
    }
    assert_eq!(first[0], 0x15, "a TLS alert record");
    assert!(closed_within(&mut s, Duration::from_secs(5)));

    // TLS to the plain port: the broker answers with its protocol header and closes,
    // which fails the client's handshake.
    let e = tls_connect(b.port, pki.client_config("ca.pem", None), "localhost")
        .expect_err("TLS to the plain port fails");
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
        ),
        "{e}"
    );
    assert_eq!(other.round_trip(b"carry on").unwrap(), b"carry on");
}

#[test]
fn a_dribbled_tls_handshake_is_closed_at_the_handshake_timeout() {
    let pki = Pki::new();
    let Some((b, port)) = start(&pki, &["--handshake-timeout", "2"]) else {
        return;
    };
    // A real ClientHello, sent one byte every 100 ms: never complete before 2 s.
    let server = ServerName::try_from("localhost").unwrap();
    let mut conn =
        rustls::ClientConnection::new(pki.client_config("ca.pem", None), server).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let t0 = Instant::now();
    let mut closed_at = None;
    'dribble: for byte in &hello {
        if s.write_all(std::slice::from_ref(byte)).is_err() {
            closed_at = Some(t0.elapsed());
            break;
        }
        let tick = Instant::now();
        while tick.elapsed() < Duration::from_millis(100) {
            let mut b = [0u8; 64];
            match s.read(&mut b) {
                Ok(0) => {
                    closed_at = Some(t0.elapsed());
                    break 'dribble;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    closed_at = Some(t0.elapsed());
                    break 'dribble;
                }
            }
        }
    }
    let at = closed_at.expect("the broker must close a dribbling handshake");
    assert!(
        at >= Duration::from_millis(1900) && at < Duration::from_secs(5),
        "closed after {at:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || b
            .logs()
            .contains("handshake timeout")),
        "{}",
        b.logs()
    );
}

#[test]
fn management_serves_https_with_http_tls() {
    let pki = Pki::new();
    let Some((b, _)) = start(&pki, &["--http-tls"]) else {
        return;
    };
    assert!(b.logs().contains("warren management on https://"));
    let agent = ureq::AgentBuilder::new()
        .tls_config(pki.client_config("ca.pem", None))
        .build();
    let url = format!("https://localhost:{}/api/overview", b.http_port);
    let r = agent
        .get(&url)
        .set("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.into_json().unwrap();
    let listeners = v["listeners"].as_array().unwrap();
    let protocols: Vec<&str> = listeners
        .iter()
        .filter_map(|l| l["protocol"].as_str())
        .collect();
    assert!(protocols.contains(&"amqp/ssl"), "{protocols:?}");
    assert!(protocols.contains(&"https"), "{protocols:?}");
    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = ureq::get(&format!("http://127.0.0.1:{}/api/overview", b.http_port))
        .timeout(Duration::from_secs(5))
        .call();
    assert!(
        plain.is_err(),
        "plain HTTP must not be served on --http-tls"
    );
    // And the broker still serves HTTPS afterwards.
    assert_eq!(
        agent
            .get(&url)
            .set("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
            .call()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn pika_over_amqps_with_external_and_plain() {
    let pki = Pki::new();
    let Some((_b, port)) = start(&pki, &["--tls-login-from", "common_name"]) else {
        return;
    };
    let python = pika_python();
    let script = r#"
import pika, ssl, sys
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def connect(creds, with_cert):
    ctx = ssl.create_default_context(cafile=ca)
    if with_cert:
        ctx.load_cert_chain(cert, key)
    p = pika.ConnectionParameters(host="localhost", port=port, credentials=creds,
        ssl_options=pika.SSLOptions(ctx, "localhost"), connection_attempts=1, socket_timeout=5)
    return pika.BlockingConnection(p)
for creds, with_cert in [(pika.credentials.ExternalCredentials(), True),
                         (pika.PlainCredentials("guest", "guest"), False)]:
    c = connect(creds, with_cert)
    ch = c.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    body = bytes(range(256)) * 1000
    ch.basic_publish("", q, body)
    for _ in range(100):
        m = ch.basic_get(q, auto_ack=True)
        if m[0] is not None:
            break
        c.process_data_events(0.05)
    assert m[2] == body, "body differs"
    print("ok", type(creds).__name__)
    c.close()
"#;
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .arg(pki.path("ca.pem"))
        .arg(pki.path("client.pem"))
        .arg(pki.path("client.key"))
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok ExternalCredentials"), "{text}");
    assert!(text.contains("ok PlainCredentials"), "{text}");
}

/// A Python with pika: the pika suite's venv when it exists, else the system's.
fn pika_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pika-venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

#[test]
fn bad_certificate_or_key_files_stop_start_up_with_a_clear_message() {
    let pki = Pki::new();
    std::fs::write(pki.path("garbage.pem"), "not a certificate\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--tls-cert".into(),
                pki.arg("missing.pem"),
                "--tls-key".into(),
                pki.arg("server.key"),
            ],
            "missing.pem: cannot read",
        ),
        (
            vec![
                "--tls-cert".into(),
                pki.arg("garbage.pem"),
                "--tls-key".into(),
                pki.arg("server.key"),
            ],
            "no certificate in the file",
        ),
        (
            vec![
                "--tls-cert".into(),
                pki.arg("server.pem"),
                "--tls-key".into(),
                pki.arg("garbage.pem"),
            ],
            "no PEM private key",
        ),
        (
            // The client's key does not belong to the server's certificate.
            vec![
                "--tls-cert".into(),
                pki.arg("server.pem"),
                "--tls-key".into(),
                pki.arg("client.key"),
            ],
            "KeyMismatch",
        ),
        (
            vec![
                "--tls-cert".into(),
                pki.arg("server.pem"),
                "--tls-key".into(),
                pki.arg("server.key"),
                "--tls-ca".into(),
                pki.arg("missing-ca.pem"),
            ],
            "--tls-ca",
        ),
    ];
    for (mut args, want) in cases {
        args.extend(["--tls-port".to_string(), "0".to_string()]);
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let f = Broker::start_failure(dir.path(), &args);
        assert_eq!(
            f.status.and_then(|s| s.code()),
            Some(1),
            "{args:?}: {}",
            f.logs
        );
        assert!(
            f.stderr.contains(want),
            "{args:?}: expected {want:?} in stderr:\n{}",
            f.stderr
        );
        assert!(
            !f.logs.contains("warren listening on"),
            "nothing listens: {}",
            f.logs
        );
    }
    // Flags that cannot work together are usage errors (exit 2).
    let dir = tempfile::tempdir().unwrap();
    let f = Broker::start_failure(dir.path(), &["--tls-port", "0"]);
    assert_eq!(f.status.and_then(|s| s.code()), Some(2), "{}", f.logs);
    assert!(
        f.stderr
            .contains("--tls-port and --http-tls need --tls-cert and --tls-key"),
        "{}",
        f.stderr
    );
}

#[test]
fn a_slow_tls_consumer_gets_every_byte_in_order_after_backpressure() {
    let pki = Pki::new();
    let Some((_b, port)) = start(&pki, &[]) else {
        return;
    };
    let connect = || {
        let mut c =
            Amqp::new(tls_connect(port, pki.client_config("ca.pem", None), "localhost").unwrap());
        c.start().unwrap();
        c.login("PLAIN", &plain("guest", "guest")).unwrap().unwrap();
        c.send(1, &Method::ChannelOpen(channel::Open::default()))
            .unwrap();
        assert!(matches!(c.method().unwrap(), Method::ChannelOpenOk(_)));
        c
    };
    let queue = Bytes::from(support::unique("tls-slow"));
    let mut consumer = connect();
    consumer
        .send(
            1,
            &Method::QueueDeclare(queue::Declare {
                queue: queue.clone(),
                auto_delete: true,
                ..Default::default()
            }),
        )
        .unwrap();
    assert!(matches!(
        consumer.method().unwrap(),
        Method::QueueDeclareOk(_)
    ));
    consumer
        .send(
            1,
            &Method::BasicConsume(basic::Consume {
                queue: queue.clone(),
                no_ack: true,
                ..Default::default()
            }),
        )
        .unwrap();
    assert!(matches!(
        consumer.method().unwrap(),
        Method::BasicConsumeOk(_)
    ));
    // 24 MB through a consumer that does not read for a while: the broker's TLS writes
    // hit a full socket (WouldBlock, WRITABLE, flush of held records) many times.
    const N: u32 = 240;
    const SIZE: usize = 100_000;
    let mut producer = connect();
    for i in 0..N {
        let mut body = vec![(i % 251) as u8; SIZE];
        body[..4].copy_from_slice(&i.to_be_bytes());
        let mut b = BytesMut::new();
        frame::write_method(
            &mut b,
            1,
            &Method::BasicPublish(basic::Publish {
                routing_key: queue.clone(),
                ..Default::default()
            }),
        );
        frame::write_content_header(&mut b, 1, SIZE as u64, &[0, 0]);
        frame::write_body(&mut b, 1, &body, 131_072);
        producer.s.write_all(&b).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..N {
        match consumer.method().unwrap() {
            Method::BasicDeliver(_) => {}
            m => panic!("expected deliver {i}, got {m:?}"),
        }
        let (kind, _, _) = consumer.frame().unwrap();
        assert_eq!(kind, frame::FRAME_HEADER);
        let mut got = Vec::with_capacity(SIZE);
        while got.len() < SIZE {
            let (kind, _, p) = consumer.frame().unwrap();
            assert_eq!(kind, frame::FRAME_BODY);
            got.extend_from_slice(&p);
        }
        assert_eq!(&got[..4], &i.to_be_bytes(), "message {i} out of order");
        assert!(
            got[4..].iter().all(|&x| x == (i % 251) as u8),
            "message {i} damaged"
        );
    }
}
