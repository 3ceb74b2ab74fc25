//! The subject of an X.509 certificate, as RabbitMQ names a client by it.
//!
//! Owns a small DER walk from a certificate to its subject `Name` and the two ways
//! SASL EXTERNAL turns that into a user name (RabbitMQ's `rabbit_ssl:peer_cert_auth_name`
//! with `ssl_cert_login_from`): `common_name` (every CN, joined by ",") and
//! `distinguished_name` (`rabbit_cert_info:subject`: RDNs last to first, "+" inside a
//! multi-valued RDN, RabbitMQ's attribute names and escaping).
//!
//! The certificate has been verified by rustls before anything here sees it; still,
//! every length is checked (a peer controls these bytes): a malformed certificate
//! gives `None`, never a panic.

/// One attribute of a subject RDN: its object identifier's arcs and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub oid: Vec<u64>,
    /// The value as text (UTF-8, decoded from the ASN.1 string type).
    pub value: String,
}

/// A subject: its RDNs in certificate order, each one or more attributes.
pub type Subject = Vec<Vec<Attribute>>;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;

/// Takes one tag-length-value off the front of `d`: (tag, contents).
fn tlv<'a>(d: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let (&tag, rest) = d.split_first()?;
    let (&l0, mut rest) = rest.split_first()?;
    let len = if l0 < 0x80 {
        usize::from(l0)
    } else {
        let n = usize::from(l0 & 0x7f);
        // Lengths beyond 4 bytes (4 GB) are not a certificate; 0x80 is indefinite
        // length, which DER forbids.
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, r) = rest.split_at_checked(n)?;
        rest = r;
        bytes.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b))
    };
    let (value, r) = rest.split_at_checked(len)?;
    *d = r;
    Some((tag, value))
}

fn expect<'a>(d: &mut &'a [u8], tag: u8) -> Option<&'a [u8]> {
    match tlv(d)? {
        (t, v) if t == tag => Some(v),
        _ => None,
    }
}

/// The arcs of a DER object identifier.
fn oid_arcs(b: &[u8]) -> Option<Vec<u64>> {
    let mut arcs = Vec::new();
    let mut acc: u64 = 0;
    for (i, &byte) in b.iter().enumerate() {
        acc = acc.checked_mul(128)?.checked_add(u64::from(byte & 0x7f))?;
        if byte & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        } else if i + 1 == b.len() {
            return None;
        }
    }
    (!arcs.is_empty()).then_some(arcs)
}

/// A directory string's text (RabbitMQ's `format_asn1_value`).
fn text(tag: u8, v: &[u8]) -> String {
    match tag {
        // UTF8String, PrintableString, IA5String, VisibleString, NumericString.
        0x0c | 0x13 | 0x16 | 0x1a | 0x12 => String::from_utf8_lossy(v).into_owned(),
        // TeletexString: in practice Latin-1.
        0x14 => v.iter().map(|&b| char::from(b)).collect(),
        // BMPString: UTF-16BE.
        0x1e => {
            let units: Vec<u16> = v
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        // UniversalString: UTF-32BE.
        0x1c => v
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        _ => String::from_utf8_lossy(v).into_owned(),
    }
}

/// What the management API shows of a peer certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: Subject,
    pub issuer: Subject,
    /// notBefore and notAfter as RabbitMQ prints them ("2026-12-07T00:00:00Z").
    pub validity: Option<(String, String)>,
}

/// The subject of a DER certificate; None when it does not parse.
pub fn subject(cert: &[u8]) -> Option<Subject> {
    parse(cert).map(|c| c.subject)
}

/// A time of the validity field as RabbitMQ formats it (`format_asn1_value`):
/// UTCTime YYMMDDHHMMSSZ as 20YY-MM-DDTHH:MM:SSZ, GeneralizedTime likewise.
fn time(tag: u8, v: &[u8]) -> Option<String> {
    let t = std::str::from_utf8(v).ok()?;
    let (year, rest) = match tag {
        0x17 if t.len() == 13 => (format!("20{}", &t[..2]), &t[2..]),
        0x18 if t.len() == 15 => (t[..4].to_string(), &t[4..]),
        _ => return None,
    };
    if !rest.ends_with('Z') || !rest[..10].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!(
        "{year}-{}-{}T{}:{}:{}Z",
        &rest[0..2],
        &rest[2..4],
        &rest[4..6],
        &rest[6..8],
        &rest[8..10]
    ))
}

fn name(mut n: &[u8]) -> Option<Subject> {
    let mut rdns = Vec::new();
    while !n.is_empty() {
        let mut set = expect(&mut n, SET)?;
        let mut rdn = Vec::new();
        while !set.is_empty() {
            let mut atv = expect(&mut set, SEQUENCE)?;
            let oid = oid_arcs(expect(&mut atv, OID)?)?;
            let (tag, v) = tlv(&mut atv)?;
            rdn.push(Attribute {
                oid,
                value: text(tag, v),
            });
        }
        rdns.push(rdn);
    }
    Some(rdns)
}

/// Subject, issuer and validity of a DER certificate; None when it does not parse.
pub fn parse(cert: &[u8]) -> Option<CertInfo> {
    let mut d = cert;
    let mut c = expect(&mut d, SEQUENCE)?;
    let mut tbs = expect(&mut c, SEQUENCE)?;
    let (mut tag, _) = tlv(&mut tbs)?;
    if tag == VERSION {
        (tag, _) = tlv(&mut tbs)?; // the serial number
    }
    if tag != 0x02 {
        return None;
    }
    expect(&mut tbs, SEQUENCE)?; // signature algorithm
    let issuer = name(expect(&mut tbs, SEQUENCE)?)?;
    let mut validity = expect(&mut tbs, SEQUENCE)?;
    let validity = match (tlv(&mut validity), tlv(&mut validity)) {
        (Some((t1, v1)), Some((t2, v2))) => time(t1, v1).zip(time(t2, v2)),
        _ => None,
    };
    let subject = name(expect(&mut tbs, SEQUENCE)?)?;
    Some(CertInfo {
        subject,
        issuer,
        validity,
    })
}

const CN: &[u64] = &[2, 5, 4, 3];

/// RabbitMQ's short names (`rabbit_cert_info:format_rdn`). STREET is missing on
/// purpose: RabbitMQ's table lists it under a bare `17`, which never matches an OID,
/// so it prints street addresses as "2.5.4.9=...", and so do we.
fn short_name(oid: &[u64]) -> Option<&'static str> {
    Some(match oid {
        [2, 5, 4, 3] => "CN",
        [2, 5, 4, 4] => "SN",
        [2, 5, 4, 5] => "SERIALNUMBER",
        [2, 5, 4, 6] => "C",
        [2, 5, 4, 7] => "L",
        [2, 5, 4, 8] => "ST",
        [2, 5, 4, 10] => "O",
        [2, 5, 4, 11] => "OU",
        [2, 5, 4, 12] => "TITLE",
        [2, 5, 4, 42] => "GIVENNAME",
        [2, 5, 4, 43] => "INITIALS",
        [2, 5, 4, 44] => "GENERATIONQUALIFIER",
        [2, 5, 4, 65] => "PSEUDONYM",
        [0, 9, 2342, 19200300, 100, 1, 25] => "DC",
        [0, 9, 2342, 19200300, 100, 1, 1] => "UID",
        [1, 2, 840, 113549, 1, 9, 1] => "EMAILADDRESS",
        _ => return None,
    })
}

/// RabbitMQ's `escape_rdn_value`, over the value's UTF-8 bytes: a leading space or
/// '#', a trailing space and `"+,;<>\` get a backslash; bytes below 32 or from 126 up
/// become `\XX` (upper-case hex).
fn escape(v: &str, out: &mut String) {
    let b = v.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let first = i == 0;
        let last = i + 1 == b.len();
        if (first && (c == b' ' || c == b'#')) || (last && c == b' ') || b"\"+,;<>\\".contains(&c) {
            out.push('\\');
            out.push(char::from(c));
        } else if !(32..126).contains(&c) {
            out.push_str(&format!("\\{c:02X}"));
        } else {
            out.push(char::from(c));
        }
    }
}

/// The distinguished name as RabbitMQ formats it: "CN=client,O=Warren,C=GB" for a
/// subject C=GB, O=Warren, CN=client.
pub fn distinguished_name(s: &Subject) -> String {
    let mut out = String::new();
    for (i, rdn) in s.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, a) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match short_name(&a.oid) {
                Some(n) => out.push_str(n),
                None => {
                    let arcs: Vec<String> = a.oid.iter().map(u64::to_string).collect();
                    out.push_str(&arcs.join("."));
                }
            }
            out.push('=');
            escape(&a.value, &mut out);
        }
    }
    out
}

/// Every common name, in certificate order, joined by "," (RabbitMQ's `common_name`
/// login); None when the subject has no CN.
pub fn common_name(s: &Subject) -> Option<String> {
    let cns: Vec<&str> = s
        .iter()
        .flatten()
        .filter(|a| a.oid == CN)
        .map(|a| a.value.as_str())
        .collect();
    (!cns.is_empty()).then(|| cns.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(oid: &[u64], v: &str) -> Attribute {
        Attribute {
            oid: oid.to_vec(),
            value: v.to_string(),
        }
    }

    #[test]
    fn dn_is_reversed_and_escaped_as_rabbitmq_does() {
        let s: Subject = vec![
            vec![attr(&[2, 5, 4, 6], "GB")],
            vec![attr(&[2, 5, 4, 10], "Warren, Inc")],
            vec![attr(&[2, 5, 4, 11], "a"), attr(&[2, 5, 4, 9], "1 Street")],
            vec![attr(CN, " client~")],
        ];
        assert_eq!(
            distinguished_name(&s),
            "CN=\\ client\\7E,OU=a+2.5.4.9=1 Street,O=Warren\\, Inc,C=GB"
        );
        assert_eq!(common_name(&s).as_deref(), Some(" client~"));
        assert_eq!(common_name(&vec![vec![attr(&[2, 5, 4, 6], "GB")]]), None);
    }

    #[test]
    fn oids_decode_and_bad_der_is_none() {
        assert_eq!(oid_arcs(&[0x55, 0x04, 0x03]), Some(vec![2, 5, 4, 3]));
        assert_eq!(
            oid_arcs(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]),
            Some(vec![1, 2, 840, 113549, 1, 9, 1])
        );
        assert_eq!(oid_arcs(&[0x86]), None);
        assert_eq!(subject(&[]), None);
        assert_eq!(subject(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(subject(&[0x30, 0x02, 0x30, 0x00]), None);
        assert_eq!(
            time(0x17, b"261207000143Z").as_deref(),
            Some("2026-12-07T00:01:43Z")
        );
        assert_eq!(
            time(0x18, b"21261113000143Z").as_deref(),
            Some("2126-11-13T00:01:43Z")
        );
        assert_eq!(time(0x17, b"2612070001Z"), None);
        assert_eq!(time(0x17, b"26120700014xZ"), None);
    }

    #[test]
    fn a_real_certificate_parses() {
        use rustls::pki_types::pem::PemObject;
        let pem = include_str!("../../fuzz/tls/fuzz-only-cert.pem");
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let c = parse(&der).unwrap();
        assert_eq!(
            distinguished_name(&c.subject),
            "CN=warren-fuzz,O=Warren,C=GB"
        );
        assert_eq!(
            distinguished_name(&c.issuer),
            "CN=warren-fuzz,O=Warren,C=GB"
        );
        let (from, to) = c.validity.unwrap();
        assert_eq!(from, "2026-12-07T00:01:43Z");
        assert_eq!(to, "2126-11-13T00:01:43Z");
        assert_eq!(common_name(&c.subject).as_deref(), Some("warren-fuzz"));
    }
}
