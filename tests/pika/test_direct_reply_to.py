"""Direct reply-to: the RabbitMQ RPC tutorial (rpc_server.py unchanged, rpc_client.py with
`amq.rabbitmq.reply-to` instead of an exclusive callback queue, as RabbitMQ's direct reply-to
guide shows), and RabbitMQ's errors for misusing the pseudo-queue. Names get a unique suffix
because the oracle broker is shared."""

import threading
import uuid

import pika

from conftest import expect_channel_error, pump
from test_tutorials import RpcServer, fib

REPLY_TO = 'amq.rabbitmq.reply-to'


class DirectReplyToRpcClient:
    """rpc_client.py with direct reply-to: consume from the pseudo-queue with auto_ack (no
    queue is declared), publish requests with reply_to set to it."""

    def __init__(self, connect, rpc_queue):
        self.rpc_queue = rpc_queue
        self.connection = connect()
        self.channel = self.connection.channel()
        self.channel.basic_consume(queue=REPLY_TO, on_message_callback=self.on_response,
                                   auto_ack=True)
        self.response = None
        self.corr_id = None
        self.deliveries = []

    def on_response(self, ch, method, props, body):
        self.deliveries.append(method)
        if self.corr_id == props.correlation_id:
            self.response = body

    def call(self, n):
        self.response = None
        self.corr_id = str(uuid.uuid4())
        self.channel.basic_publish(
            exchange='',
            routing_key=self.rpc_queue,
            properties=pika.BasicProperties(reply_to=REPLY_TO, correlation_id=self.corr_id),
            body=str(n))
        pump(self.connection, lambda: self.response is not None, what=f"fib({n}) reply")
        return int(self.response)


class RecordingRpcServer(RpcServer):
    """rpc_server.py, also recording the reply_to each request arrived with."""

    def __init__(self, connect, rpc_queue):
        super().__init__(connect, rpc_queue)
        self.reply_tos = []

    def on_request(self, ch, method, props, body):
        self.reply_tos.append(props.reply_to)
        super().on_request(ch, method, props, body)


def test_rpc_with_direct_reply_to(connect, uniq):
    rpc_queue = uniq("rpc_queue")
    server = RecordingRpcServer(connect, rpc_queue)
    server.start()
    try:
        client = DirectReplyToRpcClient(connect, rpc_queue)
        assert client.call(30) == 832040
        assert client.call(10) == 55
        # The server saw the channel's own address, the same for both requests.
        assert server.reply_tos[0].startswith(REPLY_TO + '.'), server.reply_tos
        assert len(server.reply_tos[0]) > len(REPLY_TO) + 1
        assert server.reply_tos[1] == server.reply_tos[0]
        for d in client.deliveries:
            assert d.exchange == ''
            assert d.routing_key == server.reply_tos[0]
            assert not d.redelivered

        # Several clients at once: each reply reaches only the channel that asked.
        results, errors = {}, []

        def call_in_thread(i, n):
            try:
                c = DirectReplyToRpcClient(connect, rpc_queue)
                results[i] = [c.call(n), c.call(n + 1)]
                assert len(c.deliveries) == 2
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=call_in_thread, args=(i, 5 + i)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=15)
        assert not errors, errors
        assert results == {i: [fib(5 + i), fib(6 + i)] for i in range(4)}
        assert len(set(server.reply_tos)) == 5, "one address per client channel"
    finally:
        server.stop.set()
        server.join(timeout=5)
    assert server.served == 10
    cleanup = connect().channel()
    cleanup.queue_delete(queue=rpc_queue)


def test_reply_consumer_must_not_acknowledge(connect):
    ch = connect().channel()
    with expect_channel_error(406, "PRECONDITION_FAILED - reply consumer cannot acknowledge"):
        ch.basic_consume(queue=REPLY_TO, on_message_callback=lambda *a: None, auto_ack=False)


def test_one_reply_consumer_per_channel(connect):
    ch = connect().channel()
    ch.basic_consume(queue=REPLY_TO, on_message_callback=lambda *a: None, auto_ack=True)
    with expect_channel_error(406, "PRECONDITION_FAILED - reply consumer already set"):
        ch.basic_consume(queue=REPLY_TO, on_message_callback=lambda *a: None, auto_ack=True)


def test_publishing_with_reply_to_needs_a_reply_consumer(connect, uniq):
    ch = connect().channel()
    ch.confirm_delivery()
    with expect_channel_error(406, "PRECONDITION_FAILED - fast reply consumer does not exist"):
        ch.basic_publish(exchange='', routing_key=uniq("nobody"), body=b'x',
                         properties=pika.BasicProperties(reply_to=REPLY_TO))


def test_pseudo_queue_declares_and_addresses(connect):
    conn = connect()
    ch = conn.channel()
    ok = ch.queue_declare(queue=REPLY_TO, passive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (REPLY_TO, 0, 1)
    # Any declare of it is passive, whatever its flags.
    ok = ch.queue_declare(queue=REPLY_TO, durable=True, arguments={'x-max-length': 1}).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (REPLY_TO, 0, 1)
    with expect_channel_error(404, f"NOT_FOUND - no queue '{REPLY_TO}.nobody' in vhost '/'"):
        conn.channel().queue_declare(queue=REPLY_TO + '.nobody', passive=True)
    with expect_channel_error(404, f"NOT_FOUND - no queue '{REPLY_TO}X' in vhost '/'"):
        conn.channel().queue_declare(queue=REPLY_TO + 'X')


def test_a_reply_after_cancel_is_dropped_and_the_address_is_gone(connect, uniq):
    requester = connect()
    ch = requester.channel()
    got = []
    tag = ch.basic_consume(queue=REPLY_TO, on_message_callback=lambda c, m, p, b: got.append(b),
                           auto_ack=True)
    q = ch.queue_declare(queue='', exclusive=True).method.queue
    ch.basic_publish(exchange='', routing_key=q, body=b'req',
                     properties=pika.BasicProperties(reply_to=REPLY_TO))
    method, props, _ = None, None, None
    deadline = 50
    while method is None and deadline:
        method, props, _ = ch.basic_get(queue=q, auto_ack=True)
        deadline -= 1
        requester.process_data_events(time_limit=0.02)
    assert method is not None
    address = props.reply_to

    responder = connect()
    rch = responder.channel()
    rch.confirm_delivery()
    ok = rch.queue_declare(queue=address, passive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (address, 0, 1)
    # Delivered, and for a mandatory publisher still unroutable (no queue took it).
    returns = []
    rch.add_on_return_callback(lambda *a: returns.append(a[1]))
    try:
        rch.basic_publish(exchange='', routing_key=address, body=b'one', mandatory=True)
    except pika.exceptions.UnroutableError:
        pass
    pump([requester, responder], lambda: got == [b'one'] and len(returns) == 1,
         what="the reply and its basic.return")
    assert (returns[0].reply_code, returns[0].reply_text) == (312, 'NO_ROUTE')

    ch.basic_cancel(tag)
    rch.basic_publish(exchange='', routing_key=address, body=b'two')
    requester.process_data_events(time_limit=0.2)
    assert got == [b'one']
    with expect_channel_error(404, f"NOT_FOUND - no queue '{address}' in vhost '/'"):
        responder.channel().queue_declare(queue=address, passive=True)
