//! Cross-module codec tests: method round trips, known captures, hostile input.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::frame::{self, parse};
use super::method::strategies;
use super::*;

fn encode(m: &Method) -> Bytes {
    let mut buf = BytesMut::new();
    m.encode(&mut buf);
    buf.freeze()
}

/// Every (class, method) id pair, taken from the generated name table.
fn all_ids() -> Vec<(u16, u16)> {
    let mut ids = Vec::new();
    for class in [10u16, 20, 30, 40, 50, 60, 85, 90] {
        for method in 0..=130u16 {
            if method_name(class, method) != "unknown" {
                ids.push((class, method));
            }
        }
    }
    ids
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_method_round_trips(m in strategies::method()) {
        let bytes = encode(&m);
        prop_assert_eq!(&bytes[..2], &m.class_id().to_be_bytes()[..]);
        prop_assert_eq!(&bytes[2..4], &m.method_id().to_be_bytes()[..]);
        prop_assert_eq!(Method::decode(&bytes), Ok(m.clone()));
        prop_assert_eq!(m.name(), method_name(m.class_id(), m.method_id()));
        // Every strict prefix is an error, never a panic nor a different method.
        for n in 0..bytes.len() {
            prop_assert!(Method::decode(&bytes.slice(..n)).is_err());
        }
        // One byte more is trailing garbage.
        let mut longer = BytesMut::from(&bytes[..]);
        longer.put_u8(0);
        prop_assert_eq!(Method::decode(&longer.freeze()), Err(DecodeError::TrailingBytes));
        // And through a whole frame.
        let mut buf = BytesMut::new();
        frame::write_method(&mut buf, 7, &m);
        let h = parse(&buf, 0).unwrap().unwrap();
        prop_assert_eq!(h.total_len(), buf.len());
        prop_assert_eq!(h.channel, 7);
        let payload = buf.freeze().slice(7..h.total_len() - 1);
        prop_assert_eq!(Method::decode(&payload), Ok(m));
    }

    #[test]
    fn method_decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Method::decode(&Bytes::from(data));
    }

    #[test]
    fn method_decode_never_panics_with_known_ids(
        which in any::<prop::sample::Index>(),
        data in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let ids = all_ids();
        let (class, method) = ids[which.index(ids.len())];
        let mut buf = BytesMut::new();
        buf.put_u16(class);
        buf.put_u16(method);
        buf.put_slice(&data);
        match Method::decode(&buf.freeze()) {
            Ok(m) => prop_assert_eq!((m.class_id(), m.method_id()), (class, method)),
            Err(e) => {
                let unknown = matches!(e, DecodeError::UnknownMethod { .. });
                prop_assert!(!unknown);
            }
        }
    }

    #[test]
    fn frame_parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64), max in any::<u32>()) {
        if let Ok(Some(h)) = parse(&data, max) {
            prop_assert!(h.total_len() <= data.len());
        }
    }
}

#[test]
fn all_methods_are_named() {
    let ids = all_ids();
    assert_eq!(ids.len(), 66);
    assert!(ids.contains(&(40, 51)), "exchange.unbind-ok is 51");
    assert_eq!(method_name(40, 51), "exchange.unbind-ok");
    assert_eq!(method_name(60, 40), "basic.publish");
    assert_eq!(method_name(1, 1), "unknown");
}

#[test]
fn unknown_method() {
    let b = Bytes::from_static(&[0, 60, 0, 41]);
    assert_eq!(
        Method::decode(&b),
        Err(DecodeError::UnknownMethod {
            class: 60,
            method: 41
        })
    );
    assert_eq!(
        Method::decode(&Bytes::from_static(&[0, 60, 0])),
        Err(DecodeError::Truncated)
    );
}

#[test]
fn pika_start_ok() {
    // connection.start-ok as pika sends it (client properties abridged).
    let mut b: Vec<u8> = vec![0, 10, 0, 11];
    b.extend_from_slice(&[0, 0, 0, 91]); // client-properties, 91 bytes
    b.push(7);
    b.extend_from_slice(b"product");
    b.push(b'S');
    b.extend_from_slice(&[0, 0, 0, 26]);
    b.extend_from_slice(b"Pika Python Client Library");
    b.push(12);
    b.extend_from_slice(b"capabilities");
    b.push(b'F');
    b.extend_from_slice(&[0, 0, 0, 34]);
    b.push(18);
    b.extend_from_slice(b"publisher_confirms");
    b.extend_from_slice(&[b't', 1]);
    b.push(10);
    b.extend_from_slice(b"basic.nack");
    b.extend_from_slice(&[b't', 1]);
    b.push(5);
    b.extend_from_slice(b"PLAIN"); // mechanism
    b.extend_from_slice(&[0, 0, 0, 12]);
    b.extend_from_slice(b"\0guest\0guest"); // response
    b.push(5);
    b.extend_from_slice(b"en_US"); // locale
    let b = Bytes::from(b);

    let Method::ConnectionStartOk(m) = Method::decode(&b).unwrap() else {
        panic!("not start-ok");
    };
    assert_eq!(&m.mechanism[..], b"PLAIN");
    assert_eq!(&m.response[..], b"\0guest\0guest");
    assert_eq!(&m.locale[..], b"en_US");
    let product = m
        .client_properties
        .get(b"product")
        .and_then(FieldValue::as_bytes);
    assert_eq!(product, Some(&b"Pika Python Client Library"[..]));
    let Some(FieldValue::Table(caps)) = m.client_properties.get(b"capabilities") else {
        panic!("no capabilities");
    };
    assert_eq!(
        caps.get(b"basic.nack").and_then(FieldValue::as_bool),
        Some(true)
    );
    assert_eq!(caps.len(), 2);
    // Zero copy: the strings point into the payload.
    let range = b.as_ptr() as usize..b.as_ptr() as usize + b.len();
    assert!(range.contains(&(m.mechanism.as_ptr() as usize)));
    // Exact round trip.
    assert_eq!(encode(&Method::ConnectionStartOk(m)), b);
}

#[test]
fn known_publish() {
    let b = Bytes::from_static(&[0, 60, 0, 40, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o', 1]);
    let m = Method::decode(&b).unwrap();
    assert_eq!(
        m,
        Method::BasicPublish(basic::Publish {
            ticket: 0,
            exchange: Bytes::new(),
            routing_key: Bytes::from_static(b"hello"),
            mandatory: true,
            immediate: false,
        })
    );
    assert!(m.has_content());
    assert!(!m.is_synchronous_request());
    assert_eq!(m.name(), "basic.publish");
    assert_eq!(encode(&m), b);
}

#[test]
fn bits_are_packed() {
    // queue.declare: durable + nowait = bits 1 and 4.
    let m: Method = queue::Declare {
        queue: Bytes::from_static(b"q"),
        durable: true,
        nowait: true,
        ..Default::default()
    }
    .into();
    let want: &[u8] = &[0, 50, 0, 10, 0, 0, 1, b'q', 0b1_0010, 0, 0, 0, 0];
    assert_eq!(&encode(&m)[..], want);
    assert!(m.is_synchronous_request());
    // basic.nack: multiple + requeue in one octet after the tag.
    let m: Method = basic::Nack {
        delivery_tag: 9,
        multiple: true,
        requeue: true,
    }
    .into();
    assert_eq!(
        &encode(&m)[..],
        &[0, 60, 0, 120, 0, 0, 0, 0, 0, 0, 0, 9, 0b11]
    );
}

#[test]
fn has_content_set() {
    let with: Vec<Method> = vec![
        basic::Publish::default().into(),
        basic::Return::default().into(),
        basic::Deliver::default().into(),
        basic::GetOk::default().into(),
    ];
    assert!(with.iter().all(Method::has_content));
    let m: Method = basic::GetEmpty::default().into();
    assert!(!m.has_content());
}

#[test]
fn errors_read_well() {
    let e = DecodeError::UnknownMethod {
        class: 60,
        method: 41,
    };
    assert_eq!(e.to_string(), "unknown method: class 60, method 41");
    assert_eq!(
        DecodeError::BadFieldType(b'Z').to_string(),
        "unknown field-table value type 'Z'"
    );
    assert_eq!(
        DecodeError::BadFieldType(0).to_string(),
        "unknown field-table value type 0x00"
    );
    let f = frame::FrameError::TooLarge {
        size: 5000,
        max: 4096,
    };
    assert_eq!(
        f.to_string(),
        "frame payload of 5000 bytes exceeds frame-max 4096"
    );
}

#[test]
fn content_header_is_zero_copy() {
    let mut buf = BytesMut::new();
    frame::write_content_header(&mut buf, 1, 5, &[0x90, 0, 4, b'j', b's', b'o', b'n', 2]);
    let frame = buf.freeze();
    let payload = frame.slice(7..frame.len() - 1);
    let h = ContentHeader::parse(&payload).unwrap();
    assert_eq!(h.properties.as_ptr(), payload[12..].as_ptr());
    let p = h.decode_properties().unwrap();
    assert_eq!(p.content_type.as_deref(), Some(&b"json"[..]));
    assert_eq!(p.delivery_mode, Some(2));
}
