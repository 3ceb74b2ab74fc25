"""The six RabbitMQ Python tutorials, written the way the tutorials write them, asserting what
each tutorial promises. Names get a unique suffix because the oracle broker is shared."""

import threading
import uuid

import pika

from conftest import eventually, pump, queue_exists, expect_channel_error


# --- 1. Hello World -------------------------------------------------------------------------

def test_hello_world(connect, uniq):
    hello = uniq("hello")

    # send.py
    connection = connect()
    channel = connection.channel()
    channel.queue_declare(queue=hello)
    channel.basic_publish(exchange='', routing_key=hello, body='Hello World!')
    connection.close()

    # receive.py
    connection = connect()
    channel = connection.channel()
    channel.queue_declare(queue=hello)
    received = []

    def callback(ch, method, properties, body):
        received.append(body)
        ch.stop_consuming()

    channel.basic_consume(queue=hello, auto_ack=True, on_message_callback=callback)
    timer = connection.call_later(5, channel.stop_consuming)  # the test's deadline
    channel.start_consuming()
    connection.remove_timeout(timer)
    assert received == [b'Hello World!']
    channel.queue_delete(queue=hello)


# --- 2. Work queues -------------------------------------------------------------------------

def new_task(connect, queue, messages):
    connection = connect()
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True)
    for message in messages:
        channel.basic_publish(
            exchange='',
            routing_key=queue,
            body=message,
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
    connection.close()


class Worker:
    """worker.py: durable queue, manual ack (optionally deferred), optional prefetch."""

    def __init__(self, connect, queue, prefetch=None, ack=True):
        self.connection = connect()
        self.channel = self.connection.channel()
        self.channel.queue_declare(queue=queue, durable=True)
        if prefetch is not None:
            self.channel.basic_qos(prefetch_count=prefetch)
        self.ack = ack
        self.got = []  # (body, redelivered, delivery_mode)
        self.channel.basic_consume(queue=queue, on_message_callback=self.callback)

    def callback(self, ch, method, properties, body):
        self.got.append((body, method.redelivered, properties.delivery_mode))
        if self.ack:
            ch.basic_ack(delivery_tag=method.delivery_tag)


def test_work_queue_round_robin(connect, uniq):
    queue = uniq("task_queue")
    w1 = Worker(connect, queue)
    w2 = Worker(connect, queue)
    messages = [f"task {i}".encode() for i in range(10)]
    new_task(connect, queue, messages)
    pump([w1.connection, w2.connection], lambda: len(w1.got) + len(w2.got) == 10,
         what="10 tasks")
    b1 = [g[0] for g in w1.got]
    b2 = [g[0] for g in w2.got]
    # Round-robin: 5 and 5, alternating, each worker's share in publish order.
    assert sorted(b1 + b2) == sorted(messages)
    assert {tuple(b1), tuple(b2)} == {tuple(messages[0::2]), tuple(messages[1::2])}
    assert all(g[1] is False and g[2] == 2 for g in w1.got + w2.got)
    w1.channel.queue_delete(queue=queue)


def test_work_queue_fair_dispatch(connect, uniq):
    queue = uniq("task_queue")
    busy = Worker(connect, queue, prefetch=1, ack=False)  # holds its first task forever
    idle = Worker(connect, queue, prefetch=1, ack=True)
    messages = [f"task {i}".encode() for i in range(6)]
    new_task(connect, queue, messages)
    pump([busy.connection, idle.connection], lambda: len(busy.got) + len(idle.got) == 6,
         what="6 tasks")
    # The busy worker got exactly one task; all others went to the free worker.
    assert len(busy.got) == 1
    assert len(idle.got) == 5
    assert sorted([busy.got[0][0]] + [g[0] for g in idle.got]) == sorted(messages)
    # Give the broker a chance to (wrongly) push more: round-trip on both connections.
    busy.channel.basic_qos(prefetch_count=1)
    idle.channel.basic_qos(prefetch_count=1)
    busy.connection.process_data_events(time_limit=0.1)
    assert len(busy.got) == 1
    idle.channel.queue_delete(queue=queue)


def test_work_queue_unacked_redelivered_after_worker_dies(connect, uniq):
    queue = uniq("task_queue")
    messages = [f"task {i}".encode() for i in range(4)]
    new_task(connect, queue, messages)
    dying = Worker(connect, queue, ack=False)
    pump(dying.connection, lambda: len(dying.got) == 4, what="dying worker's deliveries")
    assert [g[0] for g in dying.got] == messages
    assert not any(g[1] for g in dying.got)

    survivor = Worker(connect, queue, ack=True)
    survivor.connection.process_data_events(time_limit=0.05)
    assert survivor.got == []  # everything is held by the dying worker
    dying.connection.close()  # dies without acking
    pump(survivor.connection, lambda: len(survivor.got) == 4, what="redeliveries")
    assert [g[0] for g in survivor.got] == messages  # original order
    assert all(g[1] is True for g in survivor.got)
    survivor.channel.queue_delete(queue=queue)


# --- 3. Publish/Subscribe -------------------------------------------------------------------

class LogReceiver:
    """receive_logs.py / receive_logs_direct.py / receive_logs_topic.py."""

    def __init__(self, connect, exchange, exchange_type, binding_keys=(None,)):
        self.connection = connect()
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange=exchange, exchange_type=exchange_type)
        result = self.channel.queue_declare(queue='', exclusive=True)
        self.queue_name = result.method.queue
        for key in binding_keys:
            if key is None:
                self.channel.queue_bind(exchange=exchange, queue=self.queue_name)
            else:
                self.channel.queue_bind(exchange=exchange, queue=self.queue_name,
                                        routing_key=key)
        self.got = []
        self.done = False
        self.channel.basic_consume(queue=self.queue_name, on_message_callback=self.callback,
                                   auto_ack=True)

    def callback(self, ch, method, properties, body):
        if body == b'--end--':
            self.done = True
        else:
            self.got.append((method.routing_key, body))


def publish_then_sync(connect, exchange, exchange_type, items, receivers):
    """emit_log*.py, then a marker through the default exchange to every receiver's queue.
    Messages from one channel reach a queue in publish order, so once every receiver has
    the marker it has everything it will ever get from `items`."""
    connection = connect()
    channel = connection.channel()
    channel.exchange_declare(exchange=exchange, exchange_type=exchange_type)
    for routing_key, message in items:
        channel.basic_publish(exchange=exchange, routing_key=routing_key, body=message)
    for r in receivers:
        channel.basic_publish(exchange='', routing_key=r.queue_name, body=b'--end--')
    pump([r.connection for r in receivers], lambda: all(r.done for r in receivers),
         what="end markers")
    return channel


def test_publish_subscribe_fanout(connect, uniq):
    logs = uniq("logs")
    r1 = LogReceiver(connect, logs, 'fanout')
    r2 = LogReceiver(connect, logs, 'fanout')
    assert r1.queue_name.startswith('amq.gen-')
    assert r2.queue_name.startswith('amq.gen-')
    assert r1.queue_name != r2.queue_name
    items = [('', f"info: Hello World! {i}".encode()) for i in range(5)]
    channel = publish_then_sync(connect, logs, 'fanout', items, [r1, r2])
    assert r1.got == items
    assert r2.got == items

    # The exclusive queue goes away with its connection.
    name = r1.queue_name
    r1.connection.close()
    other = connect()
    eventually(lambda: not queue_exists(other, name), what=f"{name} to be deleted")
    with expect_channel_error(404, f"NOT_FOUND - no queue '{name}' in vhost '/'"):
        other.channel().queue_declare(queue=name, passive=True)
    channel.exchange_delete(exchange=logs)


# --- 4. Routing -----------------------------------------------------------------------------

def test_routing_direct(connect, uniq):
    direct_logs = uniq("direct_logs")
    errors = LogReceiver(connect, direct_logs, 'direct', ['error'])
    all_sev = LogReceiver(connect, direct_logs, 'direct', ['info', 'warning', 'error'])
    warn_err = LogReceiver(connect, direct_logs, 'direct', ['warning', 'error'])
    items = [(sev, f"{sev}: message {i}".encode())
             for i, sev in enumerate(['info', 'warning', 'error', 'debug', 'error', 'info'])]
    channel = publish_then_sync(connect, direct_logs, 'direct', items,
                                [errors, all_sev, warn_err])
    assert errors.got == [i for i in items if i[0] == 'error']
    assert all_sev.got == [i for i in items if i[0] in ('info', 'warning', 'error')]
    assert warn_err.got == [i for i in items if i[0] in ('warning', 'error')]
    channel.exchange_delete(exchange=direct_logs)


# --- 5. Topics ------------------------------------------------------------------------------

def test_topics(connect, uniq):
    topic_logs = uniq("topic_logs")
    q1 = LogReceiver(connect, topic_logs, 'topic', ['*.orange.*'])
    q2 = LogReceiver(connect, topic_logs, 'topic', ['*.*.rabbit', 'lazy.#'])
    hash_all = LogReceiver(connect, topic_logs, 'topic', ['#'])
    star = LogReceiver(connect, topic_logs, 'topic', ['*'])
    inner = LogReceiver(connect, topic_logs, 'topic', ['a.*.b', 'quick.#.rabbit', '#.fox'])
    keys = ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox",
            "lazy.brown.fox", "lazy.pink.rabbit", "quick.brown.fox", "orange",
            "quick.orange.male.rabbit", "lazy.orange.male.rabbit", "lazy", "", "a..b"]
    items = [(k, f"msg for {k!r}".encode()) for k in keys]
    channel = publish_then_sync(connect, topic_logs, 'topic', items, [q1, q2, hash_all, star, inner])

    def keys_of(r):
        return [k for k, _ in r.got]

    assert keys_of(q1) == ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"]
    # "lazy.pink.rabbit" matches both of Q2's bindings but is delivered once.
    assert keys_of(q2) == ["quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox",
                           "lazy.pink.rabbit", "lazy.orange.male.rabbit", "lazy"]
    assert keys_of(hash_all) == keys  # '#' matches everything, even the empty key
    # '*' is exactly one word; RabbitMQ treats the empty routing key as zero words, so '*'
    # does not match it (while '#' does).
    assert keys_of(star) == ["orange", "lazy"]
    # An empty word between dots is a word for '*'; '#' in the middle or at the start
    # matches zero or more words.
    assert keys_of(inner) == ["quick.orange.rabbit", "quick.orange.fox", "lazy.brown.fox",
                              "quick.brown.fox", "quick.orange.male.rabbit", "a..b"]
    channel.exchange_delete(exchange=topic_logs)


# --- 6. RPC ---------------------------------------------------------------------------------

def fib(n):
    if n == 0:
        return 0
    elif n == 1:
        return 1
    else:
        return fib(n - 1) + fib(n - 2)


class RpcServer(threading.Thread):
    """rpc_server.py, in a thread with its own connection, stoppable."""

    def __init__(self, connect, rpc_queue):
        super().__init__(daemon=True)
        self.connection = connect()
        self.channel = self.connection.channel()
        self.channel.queue_declare(queue=rpc_queue)
        self.channel.basic_qos(prefetch_count=1)
        self.channel.basic_consume(queue=rpc_queue, on_message_callback=self.on_request)
        self.stop = threading.Event()
        self.served = 0

    def on_request(self, ch, method, props, body):
        n = int(body)
        response = fib(n)
        ch.basic_publish(exchange='',
                         routing_key=props.reply_to,
                         properties=pika.BasicProperties(correlation_id=props.correlation_id),
                         body=str(response))
        ch.basic_ack(delivery_tag=method.delivery_tag)
        self.served += 1

    def run(self):
        while not self.stop.is_set():
            self.connection.process_data_events(time_limit=0.05)
        self.connection.close()


class FibonacciRpcClient:
    """rpc_client.py, with a deadline on call()."""

    def __init__(self, connect, rpc_queue):
        self.rpc_queue = rpc_queue
        self.connection = connect()
        self.channel = self.connection.channel()
        result = self.channel.queue_declare(queue='', exclusive=True)
        self.callback_queue = result.method.queue
        self.channel.basic_consume(queue=self.callback_queue,
                                   on_message_callback=self.on_response, auto_ack=True)
        self.response = None
        self.corr_id = None
        self.ignored = 0

    def on_response(self, ch, method, props, body):
        if self.corr_id == props.correlation_id:
            self.response = body
        else:
            self.ignored += 1

    def call(self, n):
        self.response = None
        self.corr_id = str(uuid.uuid4())
        self.channel.basic_publish(
            exchange='',
            routing_key=self.rpc_queue,
            properties=pika.BasicProperties(reply_to=self.callback_queue,
                                            correlation_id=self.corr_id),
            body=str(n))
        pump(self.connection, lambda: self.response is not None, what=f"fib({n}) reply")
        return int(self.response)


def test_rpc(connect, uniq):
    rpc_queue = uniq("rpc_queue")
    server = RpcServer(connect, rpc_queue)
    server.start()
    try:
        client = FibonacciRpcClient(connect, rpc_queue)
        assert client.callback_queue.startswith('amq.gen-')
        # A stray reply with a correlation id nobody asked for is ignored.
        client.channel.basic_publish(
            exchange='', routing_key=client.callback_queue, body='999',
            properties=pika.BasicProperties(correlation_id='not-mine'))
        assert client.call(30) == 832040
        assert client.ignored == 1

        # Several clients calling at the same time each get their own answer.
        results = {}
        errors = []

        def call_in_thread(i, n):
            try:
                c = FibonacciRpcClient(connect, rpc_queue)
                results[i] = [c.call(n), c.call(n + 1)]
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=call_in_thread, args=(i, 5 + i)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=15)
        assert not errors, errors
        assert results == {i: [fib(5 + i), fib(6 + i)] for i in range(4)}
    finally:
        server.stop.set()
        server.join(timeout=5)
    assert server.served == 9
    cleanup = connect().channel()
    cleanup.queue_delete(queue=rpc_queue)
