//! Quorum queues on one node (`x-queue-type: quorum`): what makes them differ from a
//! durable classic queue in what clients see.
//!
//! - Every message is kept in the store and confirmed after the sync that wrote it,
//!   even one published transient (its `delivery_mode` is delivered unchanged, as
//!   RabbitMQ does): [`Broker::enqueue_quorum_copy`] writes a transient message once for
//!   the quorum queues it routed to and marks that copy persistent
//!   (`Message::into_persistent`); other queues get the transient message as before.
//! - A message counts how often it came back (nack or reject with requeue, recover, its
//!   channel closing): the count rides in its position token (`queue::Ready::token`),
//!   [`Broker::quorum_return`] raises it (and records the return in the store, so the
//!   count survives a restart: `Store::returned`), and beyond `x-delivery-limit` the
//!   message is dead-lettered with reason `delivery_limit` (dropped without a
//!   dead-letter exchange), as RabbitMQ's `rabbit_fifo:return_one` does.
//! - Deliveries carry the count as the `x-delivery-count` header
//!   ([`delivery_count_properties`]): basic.get always (0 the first time), basic.deliver
//!   once the message came back at least once (`rabbit_fifo_client`'s
//!   `add_delivery_count_header` and `transform_msgs`).
//!
//! Declaration rules (durable, not exclusive, not auto-delete, the arguments a quorum
//! queue accepts) are `super::args`'s. A classic queue never reaches this module: the
//! broker tests `Queue::quorum` (and `Broker::quorum_queues` on the publish path) first.

use bytes::{Bytes, BytesMut};

use crate::message::{Message, Timing};
use crate::proto::properties::BasicProperties;
use crate::proto::{FieldTable, FieldValue};

use super::dead_letter::Reason;
use super::queue::{count_return, delivery_count};
use super::{Broker, QueueId};

/// The header RabbitMQ puts the delivery count in.
pub const DELIVERY_COUNT: &[u8] = b"x-delivery-count";

/// The raw properties `raw` with header `x-delivery-count` set to `count` (a signed
/// 64-bit value, RabbitMQ's `long`), the header table sorted by key as
/// `rabbit_basic:add_header` leaves it. None when `raw` does not decode (never for
/// properties Warren accepted).
pub fn delivery_count_properties(raw: &[u8], count: u64) -> Option<Bytes> {
    let mut props = BasicProperties::decode(&Bytes::copy_from_slice(raw)).ok()?;
    let mut headers = props.headers.take().unwrap_or_else(FieldTable::new);
    let value = FieldValue::I64(i64::try_from(count).unwrap_or(i64::MAX));
    match headers.0.iter_mut().find(|(k, _)| &k[..] == DELIVERY_COUNT) {
        Some((_, v)) => *v = value,
        None => headers.0.push((Bytes::from_static(DELIVERY_COUNT), value)),
    }
    headers.0.sort_by(|a, b| a.0.cmp(&b.0));
    props.headers = Some(headers);
    let mut buf = BytesMut::with_capacity(raw.len() + 32);
    props.encode(&mut buf);
    Some(buf.freeze())
}

impl Broker {
    /// A message of quorum queue `id` (store id `durable`) comes back at position
    /// `token`: its delivery count goes up; beyond the queue's `x-delivery-limit` it is
    /// dead-lettered (reason `delivery_limit`) and None is returned, else the message
    /// and the token to requeue it at.
    pub(super) fn quorum_return(
        &mut self,
        id: QueueId,
        durable: u32,
        msg: Message,
        token: u64,
    ) -> Option<(Message, u64)> {
        let token = count_return(token);
        if let (Some(st), Some(loc), true) = (self.store.as_mut(), msg.location(), durable != 0) {
            // Counted across a restart too (recovery sums these records).
            st.returned(loc, durable);
        }
        let beyond = self
            .queue(id)
            .and_then(|q| q.features.as_ref())
            .is_some_and(|f| f.beyond_delivery_limit(delivery_count(token)));
        if beyond {
            self.dead_letter(id, durable, msg, Reason::DeliveryLimit);
            return None;
        }
        Some((msg, token))
    }

    /// Moves the quorum queues of `routed` to its front and returns how many there are.
    pub(super) fn quorum_first(&self, routed: &mut [QueueId]) -> usize {
        let mut n = 0;
        for i in 0..routed.len() {
            if self.queue(routed[i]).is_some_and(|q| q.quorum) {
                routed.swap(n, i);
                n += 1;
            }
        }
        n
    }

    /// Writes a transient message to the store for the quorum queues `quorum` and
    /// enqueues it into each, marked persistent (see the module doc). Err when the
    /// store refused the write (a full disk): the publish is refused, as for a
    /// persistent message.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn enqueue_quorum_copy(
        &mut self,
        quorum: &[QueueId],
        exchange: &[u8],
        routing_key: &[u8],
        properties: &[u8],
        body: &Bytes,
        page: bool,
        timing: Option<Timing>,
    ) -> std::io::Result<()> {
        let arrival = timing.map(|t| t.arrival_ms);
        let location = self.persist(
            quorum,
            true,
            false,
            exchange,
            routing_key,
            properties,
            body,
            arrival,
        )?;
        let msg = match location {
            Some(loc) if page => {
                Message::paged_timed(exchange, routing_key, properties, body.len(), loc, timing)
            }
            _ => Message::new_timed(
                exchange,
                routing_key,
                properties,
                body.clone(),
                location,
                timing,
            ),
        };
        let msg = msg.into_persistent();
        for &q in quorum {
            self.enqueue(q, msg.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::properties;

    #[test]
    fn the_count_header_is_added_or_replaced_and_the_table_sorted() {
        let mut p = BasicProperties {
            delivery_mode: Some(1),
            ..Default::default()
        };
        let mut h = FieldTable::new();
        h.0.push((Bytes::from_static(b"z"), FieldValue::I32(1)));
        h.0.push((Bytes::from_static(b"a"), FieldValue::I32(2)));
        p.headers = Some(h);
        let raw = p.to_raw();
        let one = delivery_count_properties(&raw, 1).unwrap();
        let got = properties::headers(&one).unwrap();
        let keys: Vec<&[u8]> = got.0.iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(keys, [&b"a"[..], b"x-delivery-count", b"z"]);
        assert_eq!(got.get(DELIVERY_COUNT), Some(&FieldValue::I64(1)));
        assert_eq!(properties::delivery_mode(&one), Some(1));
        let two = delivery_count_properties(&one, 2).unwrap();
        let got = properties::headers(&two).unwrap();
        assert_eq!(got.0.len(), 3);
        assert_eq!(got.get(DELIVERY_COUNT), Some(&FieldValue::I64(2)));
        // No headers before: a table with the one header.
        let bare = BasicProperties::default().to_raw();
        let got = properties::headers(&delivery_count_properties(&bare, 0).unwrap()).unwrap();
        assert_eq!(got.0.len(), 1);
        assert_eq!(got.get(DELIVERY_COUNT), Some(&FieldValue::I64(0)));
    }

    #[test]
    fn the_count_rides_in_the_position_token() {
        use super::super::queue::{with_delivery_count, Ready};
        let msg = Message::new(b"", b"", &[0, 0], Bytes::new(), None);
        let r = Ready::new(msg.clone(), 41, false);
        assert_eq!((r.seq(), r.delivery_count(), r.token()), (41, 0, 41));
        let back = Ready::new(msg.clone(), count_return(r.token()), true);
        assert_eq!((back.seq(), back.delivery_count()), (41, 1));
        assert!(back.redelivered());
        let max = with_delivery_count(41, u64::MAX);
        assert_eq!(
            delivery_count(count_return(max)),
            (1 << 16) - 1,
            "saturates"
        );
        assert_eq!(Ready::new(msg, max, true).seq(), 41);
    }
}
