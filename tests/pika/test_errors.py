"""Error cases and protocol corners, asserting pika's exception and RabbitMQ's reply code and
reply-text prefix (pika users match on these)."""

import pika
import pytest

from conftest import (eventually, expect_channel_error, get_message, message_count, pump,
                      queue_exists, wait_count)

VH = "in vhost '/'"


def publish(channel, queue, body, **props):
    channel.basic_publish(exchange='', routing_key=queue, body=body,
                          properties=pika.BasicProperties(**props) if props else None)


# --- channel errors: 404 ----------------------------------------------------------------------

def test_passive_declare_missing_queue_closes_only_the_channel(connect, uniq):
    conn = connect()
    ch = conn.channel()
    missing = uniq("missing")
    with expect_channel_error(404, f"NOT_FOUND - no queue '{missing}' {VH}"):
        ch.queue_declare(queue=missing, passive=True)
    assert ch.is_closed
    assert conn.is_open
    # The connection is still usable: a new channel works.
    ch2 = conn.channel()
    q = ch2.queue_declare(queue='', exclusive=True).method.queue
    assert q.startswith('amq.gen-')
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        ch.queue_declare(queue=q, passive=True)  # the closed channel stays closed


def test_publish_to_missing_exchange_closes_channel_404(connect, uniq):
    conn = connect()
    ch = conn.channel()
    missing = uniq("no-such-exchange")
    ch.basic_publish(exchange=missing, routing_key='k', body=b'x')
    # basic.publish has no reply; the channel.close arrives before the next call's reply.
    with expect_channel_error(404, f"NOT_FOUND - no exchange '{missing}' {VH}"):
        ch.queue_declare(queue='', exclusive=True)
    assert conn.is_open

    # With publisher confirms the blocking publish itself raises.
    ch = conn.channel()
    ch.confirm_delivery()
    with expect_channel_error(404, f"NOT_FOUND - no exchange '{missing}' {VH}"):
        ch.basic_publish(exchange=missing, routing_key='k', body=b'x')


def test_bind_to_missing_exchange_404(connect, uniq):
    ch = connect().channel()
    q = ch.queue_declare(queue='', exclusive=True).method.queue
    missing = uniq("no-such-exchange")
    with expect_channel_error(404, f"NOT_FOUND - no exchange '{missing}' {VH}"):
        ch.queue_bind(queue=q, exchange=missing, routing_key='k')


def test_bind_missing_queue_404(connect, uniq):
    ch = connect().channel()
    missing = uniq("missing")
    with expect_channel_error(404, f"NOT_FOUND - no queue '{missing}' {VH}"):
        ch.queue_bind(queue=missing, exchange='amq.direct', routing_key='k')


# --- 406 PRECONDITION_FAILED on redeclare ---------------------------------------------------

def test_redeclare_queue_with_different_durable_406(connect, uniq):
    conn = connect()
    ch = conn.channel()
    q = uniq("q")
    ch.queue_declare(queue=q, durable=False)
    ch.queue_declare(queue=q, durable=False)  # same arguments: fine
    with expect_channel_error(
            406, f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' {VH}: "
                 "received 'true' but current is 'false'"):
        ch.queue_declare(queue=q, durable=True)
    conn.channel().queue_delete(queue=q)


def test_redeclare_exchange_with_different_type_406(connect, uniq):
    conn = connect()
    ch = conn.channel()
    x = uniq("x")
    ch.exchange_declare(exchange=x, exchange_type='direct')
    with expect_channel_error(
            406, f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' {VH}: "
                 "received 'fanout' but current is 'direct'"):
        ch.exchange_declare(exchange=x, exchange_type='fanout')
    conn.channel().exchange_delete(exchange=x)


def test_redeclare_with_different_argument_names_rabbitmq_types(connect, uniq):
    """Issue 8.5: the texts were Rust's Debug output (`current is I32(1)`)."""
    conn = connect()
    q = uniq("q")
    conn.channel().queue_declare(queue=q, arguments={'x-max-length': 1})
    prefix = f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' {VH}: "
    with expect_channel_error(406, prefix + "received none but current is the value '1' of "
                                            "type 'signedint'"):
        conn.channel().queue_declare(queue=q)
    with expect_channel_error(406, prefix + "received '2' but current is '1'"):
        conn.channel().queue_declare(queue=q, arguments={'x-max-length': 2})
    conn.channel().queue_declare(queue=q, arguments={'x-max-length': 1, 'x-custom': 'ignored'})
    conn.channel().queue_delete(queue=q)


def test_invalid_known_arguments_406(connect, uniq):
    """Issue 8.6: known arguments were accepted whatever their type or range."""
    conn = connect()
    for args, why in [({'x-max-length': 'ten'}, '"expected integer, got longstr"'),
                      ({'x-message-ttl': -1}, "{value_negative,-1}"),
                      ({'x-max-priority': 256}, "{max_value_exceeded,256}"),
                      ({'x-overflow': 'bogus'}, "invalid_overflow"),
                      ({'x-queue-type': 'bogus'}, "\"unsupported queue type 'bogus'\"")]:
        q = uniq("q")
        key = next(iter(args))
        with expect_channel_error(
                406, f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' {VH}: {why}"):
            conn.channel().queue_declare(queue=q, arguments=args)
        assert not queue_exists(conn, q)


# --- 405 RESOURCE_LOCKED: exclusive queue of another connection -----------------------------

@pytest.mark.parametrize("op", ["declare", "passive", "consume", "get", "delete", "purge",
                                "bind"])
def test_exclusive_queue_from_another_connection_405(connect, uniq, op):
    owner = connect().channel()
    q = uniq("excl")
    owner.queue_declare(queue=q, exclusive=True)
    ch = connect().channel()
    calls = {
        "declare": lambda: ch.queue_declare(queue=q),
        "passive": lambda: ch.queue_declare(queue=q, passive=True),
        "consume": lambda: ch.basic_consume(queue=q, on_message_callback=lambda *a: None),
        "get": lambda: ch.basic_get(queue=q),
        "delete": lambda: ch.queue_delete(queue=q),
        "purge": lambda: ch.queue_purge(queue=q),
        "bind": lambda: ch.queue_bind(queue=q, exchange='amq.fanout'),
    }
    with expect_channel_error(
            405, f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' {VH}"):
        calls[op]()
    # The owner is unaffected.
    assert owner.queue_declare(queue=q, passive=True).method.queue == q


# --- connection errors ------------------------------------------------------------------------

def test_wrong_password_is_refused(broker):
    params = broker.params(credentials=pika.PlainCredentials('guest', 'not-the-password'))
    with pytest.raises((pika.exceptions.ProbableAuthenticationError,
                        pika.exceptions.AuthenticationError)) as info:
        pika.BlockingConnection(params)
    # RabbitMQ (authentication_failure_close) sends connection.close 403 before closing;
    # pika reports it wrapped in ProbableAuthenticationError.
    assert "(403) 'ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN" \
        in str(info.value), info.value


def test_unknown_vhost_is_not_allowed(broker, uniq):
    vhost = uniq("no-such-vhost")
    with pytest.raises(pika.exceptions.AMQPConnectionError) as info:
        pika.BlockingConnection(broker.params(virtual_host=vhost))
    # RabbitMQ answers connection.open with connection.close 530; pika, seeing the close
    # before the connection is open, wraps ConnectionClosedByBroker in ProbableAccessDeniedError.
    assert isinstance(info.value, (pika.exceptions.ProbableAccessDeniedError,
                                   pika.exceptions.ConnectionClosedByBroker)), repr(info.value)
    assert f"(530) 'NOT_ALLOWED - vhost {vhost} not found'" in str(info.value), info.value


# --- 403 ACCESS_REFUSED on reserved names -----------------------------------------------------

def test_default_exchange_cannot_be_deleted_403(connect):
    ch = connect().channel()
    with expect_channel_error(403, "ACCESS_REFUSED - operation not permitted on the default "
                                   "exchange"):
        ch.exchange_delete(exchange='')


def test_amq_prefixed_exchange_cannot_be_declared_403(connect, uniq):
    ch = connect().channel()
    name = uniq("amq.mine")
    with expect_channel_error(403, f"ACCESS_REFUSED - exchange name '{name}' contains reserved "
                                   "prefix 'amq.*'"):
        ch.exchange_declare(exchange=name, exchange_type='direct')


def test_amq_prefixed_queue_cannot_be_declared_403(connect, uniq):
    ch = connect().channel()
    name = uniq("amq.mine")
    with expect_channel_error(403, f"ACCESS_REFUSED - queue name '{name}' contains reserved "
                                   "prefix 'amq.*'"):
        ch.queue_declare(queue=name)


def test_builtin_exchanges_exist(connect):
    ch = connect().channel()
    for name in ['amq.direct', 'amq.fanout', 'amq.topic', 'amq.headers', 'amq.match']:
        ch.exchange_declare(exchange=name, passive=True)


# --- queue.delete / purge ---------------------------------------------------------------------

def test_delete_if_unused_with_consumer_406(connect, uniq):
    conn = connect()
    ch = conn.channel()
    q = uniq("q")
    ch.queue_declare(queue=q)
    ch.basic_consume(queue=q, on_message_callback=lambda *a: None)
    with expect_channel_error(406, f"PRECONDITION_FAILED - queue '{q}' {VH} in use"):
        conn.channel().queue_delete(queue=q, if_unused=True)
    assert queue_exists(conn, q)
    conn.channel().queue_delete(queue=q)


def test_delete_if_empty_with_messages_406(connect, uniq):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()  # publishes are in the queue once basic_publish returns
    q = uniq("q")
    ch.queue_declare(queue=q)
    publish(ch, q, b'x')
    with expect_channel_error(406, f"PRECONDITION_FAILED - queue '{q}' {VH} not empty"):
        conn.channel().queue_delete(queue=q, if_empty=True)
    assert message_count(conn, q) == 1
    assert conn.channel().queue_delete(queue=q).method.message_count == 1


def test_purge_and_delete_return_counts(connect, uniq):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()  # publishes are in the queue once basic_publish returns
    q = uniq("q")
    assert ch.queue_declare(queue=q).method.message_count == 0
    for i in range(7):
        publish(ch, q, str(i))
    assert ch.queue_declare(queue=q).method.message_count == 7
    assert ch.queue_declare(queue=q, passive=True).method.consumer_count == 0
    assert ch.queue_purge(queue=q).method.message_count == 7
    assert ch.queue_purge(queue=q).method.message_count == 0
    for i in range(3):
        publish(ch, q, str(i))
    assert ch.queue_delete(queue=q).method.message_count == 3
    assert not queue_exists(conn, q)
    # Deleting a queue that does not exist is not an error in RabbitMQ 3.x.
    assert ch.queue_delete(queue=q).method.message_count == 0


# --- acks -------------------------------------------------------------------------------------

def test_ack_unknown_delivery_tag_406(connect):
    conn = connect()
    ch = conn.channel()
    ch.basic_ack(delivery_tag=42)
    with expect_channel_error(406, "PRECONDITION_FAILED - unknown delivery tag 42"):
        ch.queue_declare(queue='', exclusive=True)
    assert conn.is_open


def test_double_ack_406(connect, uniq):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()  # publishes are in the queue once basic_publish returns
    q = ch.queue_declare(queue='', exclusive=True).method.queue
    publish(ch, q, b'x')
    method, _, _ = ch.basic_get(queue=q)
    ch.basic_ack(delivery_tag=method.delivery_tag)
    ch.basic_ack(delivery_tag=method.delivery_tag)
    with expect_channel_error(406, f"PRECONDITION_FAILED - unknown delivery tag "
                                   f"{method.delivery_tag}"):
        ch.queue_declare(queue=q, passive=True)


def test_basic_get_and_get_empty(connect):
    ch = connect().channel()
    ch.confirm_delivery()  # publishes are in the queue once basic_publish returns
    q = ch.queue_declare(queue='', exclusive=True).method.queue
    assert ch.basic_get(queue=q) == (None, None, None)  # basic.get-empty
    publish(ch, q, b'one', content_type='text/plain')
    publish(ch, q, b'two')
    method, props, body = ch.basic_get(queue=q, auto_ack=True)
    assert (body, method.message_count, method.redelivered) == (b'one', 1, False)
    assert method.exchange == '' and method.routing_key == q
    assert props.content_type == 'text/plain'
    method, props, body = ch.basic_get(queue=q)
    assert (body, method.message_count) == (b'two', 0)
    ch.basic_ack(delivery_tag=method.delivery_tag)
    assert ch.basic_get(queue=q) == (None, None, None)


def test_nack_and_reject_with_requeue_redeliver(connect):
    ch = connect().channel()
    ch.confirm_delivery()  # publishes are in the queue once basic_publish returns
    q = ch.queue_declare(queue='', exclusive=True).method.queue
    publish(ch, q, b'm')
    method, _, body = ch.basic_get(queue=q)
    assert not method.redelivered
    ch.basic_nack(delivery_tag=method.delivery_tag, requeue=True)
    method, _, body = get_message(ch, q, auto_ack=False)
    assert body == b'm' and method.redelivered
    ch.basic_reject(delivery_tag=method.delivery_tag, requeue=True)
    method, _, body = get_message(ch, q, auto_ack=False)
    assert body == b'm' and method.redelivered
    ch.basic_reject(delivery_tag=method.delivery_tag, requeue=False)  # dropped
    assert ch.basic_get(queue=q) == (None, None, None)


def test_nack_multiple_requeue_keeps_order(connect):
    conn = connect()
    ch = conn.channel()
    q = ch.queue_declare(queue='', exclusive=True).method.queue
    for i in range(3):
        publish(ch, q, str(i))
    got = []
    ch.basic_consume(queue=q, on_message_callback=lambda c, m, p, b: got.append((m, b)))
    pump(conn, lambda: len(got) == 3, what="3 deliveries")
    ch.basic_nack(delivery_tag=got[-1][0].delivery_tag, multiple=True, requeue=True)
    pump(conn, lambda: len(got) == 6, what="3 redeliveries")
    assert [b for _, b in got[3:]] == [b'0', b'1', b'2']
    assert all(m.redelivered for m, _ in got[3:])


# --- consumers --------------------------------------------------------------------------------

def test_second_exclusive_consumer_403(connect, uniq):
    conn = connect()
    ch = conn.channel()
    q = uniq("q")
    ch.queue_declare(queue=q, auto_delete=True)
    ch.basic_consume(queue=q, on_message_callback=lambda *a: None, exclusive=True)
    with expect_channel_error(403, f"ACCESS_REFUSED - queue '{q}' {VH} in exclusive use"):
        conn.channel().basic_consume(queue=q, on_message_callback=lambda *a: None)
    with expect_channel_error(403, f"ACCESS_REFUSED - queue '{q}' {VH} in exclusive use"):
        conn.channel().basic_consume(queue=q, on_message_callback=lambda *a: None,
                                     exclusive=True)


def test_exclusive_consume_on_queue_with_consumer_403(connect, uniq):
    conn = connect()
    ch = conn.channel()
    q = uniq("q")
    ch.queue_declare(queue=q, auto_delete=True)
    ch.basic_consume(queue=q, on_message_callback=lambda *a: None)
    with expect_channel_error(403, f"ACCESS_REFUSED - queue '{q}' {VH} in exclusive use"):
        conn.channel().basic_consume(queue=q, on_message_callback=lambda *a: None,
                                     exclusive=True)


def test_auto_delete_queue_goes_with_last_consumer(connect, uniq):
    conn = connect()
    ch = conn.channel()
    q = uniq("autodel")
    ch.queue_declare(queue=q, auto_delete=True)
    assert queue_exists(conn, q)  # no consumer ever: still there
    t1 = ch.basic_consume(queue=q, on_message_callback=lambda *a: None)
    t2 = ch.basic_consume(queue=q, on_message_callback=lambda *a: None)
    ch.basic_cancel(t1)
    assert queue_exists(conn, q)  # one consumer left
    ch.basic_cancel(t2)
    eventually(lambda: not queue_exists(conn, q), what=f"{q} to be auto-deleted")


def test_queue_delete_cancels_consumers(connect, uniq):
    consumer_conn = connect()
    ch = consumer_conn.channel()
    q = uniq("q")
    ch.queue_declare(queue=q)
    cancelled = []
    ch.add_on_cancel_callback(lambda method_frame: cancelled.append(method_frame))
    tag = ch.basic_consume(queue=q, on_message_callback=lambda *a: None)
    other = connect().channel()
    assert other.queue_delete(queue=q).method.message_count == 0
    pump(consumer_conn, lambda: cancelled, what="server-sent basic.cancel")
    assert cancelled[0].method.consumer_tag == tag
    assert ch.is_open  # a cancel is not a channel error
    assert tag not in ch.consumer_tags


# --- mandatory / confirms / tx ----------------------------------------------------------------

def test_mandatory_unroutable_is_returned(connect, uniq):
    conn = connect()
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda c, method, props, body: returned.append((method, body)))
    key = uniq("nobody")
    ch.basic_publish(exchange='amq.direct', routing_key=key, body=b'lost', mandatory=True)
    ch.basic_publish(exchange='amq.direct', routing_key=key, body=b'dropped')  # not mandatory
    pump(conn, lambda: returned, what="basic.return")
    method, body = returned[0]
    assert (method.reply_code, method.reply_text) == (312, 'NO_ROUTE')
    assert (method.exchange, method.routing_key, body) == ('amq.direct', key, b'lost')
    # The non-mandatory one is dropped silently: a round trip later still one return.
    ch.queue_declare(queue='', exclusive=True)
    conn.process_data_events(time_limit=0)
    assert len(returned) == 1


def test_mandatory_unroutable_with_confirms_raises_unroutable(connect, uniq):
    ch = connect().channel()
    ch.confirm_delivery()
    key = uniq("nobody")
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        ch.basic_publish(exchange='amq.direct', routing_key=key, body=b'lost', mandatory=True)
    [msg] = info.value.messages
    assert msg.body == b'lost'
    assert (msg.method.reply_code, msg.method.reply_text) == (312, 'NO_ROUTE')
    # Unroutable but not mandatory: confirmed (acked) all the same.
    ch.basic_publish(exchange='amq.direct', routing_key=key, body=b'dropped')


def test_publisher_confirms_ack_every_publish(connect):
    conn = connect()
    ch = conn.channel()
    q = ch.queue_declare(queue='', exclusive=True).method.queue
    ch.confirm_delivery()
    for i in range(50):
        # BlockingChannel waits for the broker's basic.ack and raises NackError on a nack.
        ch.basic_publish(exchange='', routing_key=q, body=str(i),
                         properties=pika.BasicProperties(delivery_mode=2))
    assert message_count(conn, q) == 50


def test_publisher_confirm_delivery_tags(connect):
    """The raw confirm stream: delivery tags 1..n, each acked (possibly with multiple)."""
    conn = connect()
    ch = conn.channel()
    q = ch.queue_declare(queue='', exclusive=True).method.queue
    impl = ch._impl  # pika's async channel: the blocking one hides individual acks
    acked = set()

    def on_ack(frame):
        m = frame.method
        assert isinstance(m, pika.spec.Basic.Ack), m
        acked.update(range(1, m.delivery_tag + 1) if m.multiple else [m.delivery_tag])

    selected = []
    impl.confirm_delivery(ack_nack_callback=on_ack, callback=selected.append)
    pump(conn, lambda: selected, what="confirm.select-ok")
    for i in range(20):
        impl.basic_publish(exchange='', routing_key=q, body=str(i))
    pump(conn, lambda: acked == set(range(1, 21)), what="acks for tags 1..20")


def test_tx_commit_and_rollback(connect):
    conn = connect()
    ch = conn.channel()
    q = ch.queue_declare(queue='', exclusive=True).method.queue
    ch.tx_select()
    publish(ch, q, b'committed-1')
    assert message_count(conn, q) == 0  # not visible before commit
    ch.tx_commit()
    wait_count(conn, q, 1)
    publish(ch, q, b'rolled-back')
    ch.tx_rollback()
    publish(ch, q, b'committed-2')
    ch.tx_commit()
    wait_count(conn, q, 2)
    bodies = []
    while True:
        method, _, body = ch.basic_get(queue=q, auto_ack=True)
        if method is None:
            break
        bodies.append(body)
    ch.tx_commit()
    assert bodies == [b'committed-1', b'committed-2']


def test_tx_rollback_of_ack_keeps_message(connect):
    conn = connect()
    ch = conn.channel()
    q = ch.queue_declare(queue='', exclusive=True).method.queue
    confirmed = conn.channel()
    confirmed.confirm_delivery()  # (a tx channel cannot also be in confirm mode)
    publish(confirmed, q, b'm')
    ch.tx_select()
    method, _, _ = ch.basic_get(queue=q)
    ch.basic_ack(delivery_tag=method.delivery_tag)
    ch.tx_rollback()
    # The ack was rolled back: the message is still unacked on this channel, not gone.
    ch.basic_recover(requeue=True)
    method, _, body = get_message(ch, q, auto_ack=False)
    assert body == b'm' and method.redelivered
    ch.basic_ack(delivery_tag=method.delivery_tag)
    ch.tx_commit()
    assert ch.basic_get(queue=q) == (None, None, None)


def test_channel_flow_is_optional(connect):
    """channel.flow(active=true) is a no-op that RabbitMQ acknowledges; active=false is
    optional: RabbitMQ 3.x refuses it by closing the whole connection with 540."""
    assert connect().channel().flow(True) is True
    conn = connect()
    try:
        assert conn.channel().flow(False) is False
    except pika.exceptions.ConnectionClosedByBroker as e:
        assert (e.reply_code, e.reply_text) == (540, 'NOT_IMPLEMENTED - active=false')
