"""The pika snippets from the study notes in /work/shared/seeds/*.txt, run as written.

Adaptations: 'localhost' becomes the test broker's host and port, and queue/exchange names
('q1', 'hello', 'logs', 'task_queue') get a unique suffix because the oracle broker is shared.
Programs that loop forever (`start_consuming()`) are stopped by their callback after the
expected message, with a deadline timer as a safety net.

Several snippets are wrong against any broker; for those the test asserts that they fail on
the client side exactly as they do on RabbitMQ (nothing reaches the broker):
  * 000: `channel.basic_qos(prefetch=1)`             -> TypeError (the keyword is prefetch_count)
  * 002: `connection.queue_declare(queue="hello")`    -> AttributeError (a channel method)
  * 003: `print " [x] Received %r" % (body,)`         -> SyntaxError (Python 2 print statement)
  * 003: `channel.queue_declare()` / `(exclusive=True)` -> TypeError (pika 1.x requires `queue`;
                                                         the server-named form is queue='')
  * 004: `pika.ConnectionParameter('localhost')`      -> AttributeError (ConnectionParameters)
  * 004: the `callback` whose body is not indented    -> IndentationError
And one that is wrong only in sequence:
  * 000: the durability section redeclares the non-durable 'q1' with durable=True ->
         406 PRECONDITION_FAILED from the broker (a new name is needed, as tutorial 2 does).
"""

import textwrap

import pika
import pytest

from conftest import expect_channel_error, get_message, message_count, pump, wait_count


@pytest.fixture
def localhost(broker):
    """`pika.ConnectionParameters('localhost')` → the test broker (the only adaptation)."""
    def params(host='localhost'):
        assert host == 'localhost'
        return broker.params()
    return params


def run_consumer(connection, channel, callback_body, expected=1, deadline=5):
    """`channel.start_consuming()` that returns after `expected` messages or the deadline."""
    seen = []

    def stop_when_done():
        seen.append(1)
        if len(seen) == expected:
            channel.stop_consuming()

    timer = connection.call_later(deadline, channel.stop_consuming)
    callback_body.stop_when_done = stop_when_done
    channel.start_consuming()
    connection.remove_timeout(timer)
    return len(seen)


# --- 000: "rabbitmq intro" ----------------------------------------------------------------

def test_seed000_sender_and_receiver(localhost, uniq):
    q1 = uniq('q1')
    connection = pika.BlockingConnection(localhost('localhost'))
    channel = connection.channel()
    channel.queue_declare(queue=q1)
    # sender.py
    channel.basic_publish(exchange='',
                          routing_key=q1,
                          body='Hello World!')
    connection.close()

    # reciever.py
    connection = pika.BlockingConnection(localhost('localhost'))
    channel = connection.channel()
    channel.queue_declare(queue=q1)
    received = []

    def callback(ch, method, properties, body):
        received.append(f" [x] Received {body}")
        callback.stop_when_done()

    channel.basic_consume(queue=q1,  # the queue we created .
                          auto_ack=True,  # remove the msg from queue when it reaches us
                          on_message_callback=callback)
    run_consumer(connection, channel, callback)
    assert received == [" [x] Received b'Hello World!'"]
    assert channel.queue_declare(queue=q1, passive=True).method.message_count == 0
    channel.queue_delete(queue=q1)
    connection.close()


def test_seed000_durability_redeclare_is_refused(localhost, uniq):
    q1 = uniq('q1')
    connection = pika.BlockingConnection(localhost('localhost'))
    channel = connection.channel()
    channel.queue_declare(queue=q1)  # "create a queue"
    # "durability": the same name, now durable -> the broker refuses the redeclare.
    with expect_channel_error(
            406, f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q1}' in vhost "
                 "'/': received 'true' but current is 'false'"):
        channel.queue_declare(queue=q1, durable=True)
    channel = connection.channel()
    channel.queue_delete(queue=q1)

    # With a fresh name the section works as the note says.
    channel.queue_declare(queue=q1, durable=True)
    channel.basic_publish(exchange='', routing_key=q1, body='Hello World!',
                          properties=pika.BasicProperties(delivery_mode=2,))
    method, properties, body = get_message(channel, q1)
    assert (body, properties.delivery_mode) == (b'Hello World!', 2)
    channel.queue_delete(queue=q1)


def test_seed000_manual_ack_removes_the_message(localhost, uniq):
    q1 = uniq('q1')
    connection = pika.BlockingConnection(localhost('localhost'))
    channel = connection.channel()
    channel.queue_declare(queue=q1, durable=True)
    channel.basic_publish(exchange='', routing_key=q1, body='work',
                          properties=pika.BasicProperties(delivery_mode=2,))

    def callback(ch, method, properties, body):
        ch.basic_ack(delivery_tag = method.delivery_tag)  # noqa: E251 - as in the note
        callback.stop_when_done()

    channel.basic_consume(queue=q1, on_message_callback=callback)
    assert run_consumer(connection, channel, callback) == 1
    connection.close()  # acked: nothing to requeue
    check = pika.BlockingConnection(localhost())
    assert message_count(check, q1) == 0
    check.channel().queue_delete(queue=q1)
    check.close()


def test_seed000_basic_qos_prefetch_keyword_is_a_type_error(localhost):
    connection = pika.BlockingConnection(localhost('localhost'))
    channel = connection.channel()
    # pika's keyword is prefetch_count; `prefetch=1` never leaves the client.
    with pytest.raises(TypeError):
        channel.basic_qos(prefetch=1)
    assert channel.is_open
    channel.basic_qos(prefetch_count=1)  # the intended call
    connection.close()


def test_seed000_temporary_queue_and_binding(localhost, uniq):
    logs = uniq('logs')
    connection = pika.BlockingConnection(localhost('localhost'))
    channel = connection.channel()
    channel.exchange_declare(exchange=logs, exchange_type='fanout')
    q_name = channel.queue_declare(queue='')
    assert q_name.method.queue.startswith('amq.gen-')  # "amq.gen-JzTY20BRgKO-HjmUJj0wLg"
    result = channel.queue_declare(queue='', exclusive=True)
    assert result.method.queue.startswith('amq.gen-')
    channel.queue_bind(exchange=logs,  # the name we chose for our exchnage
                       queue=q_name.method.queue)  # the name of our random queue
    # "we don't need to define the routing_key" for fanout
    channel.basic_publish(exchange=logs, routing_key='', body='log line')
    method, _, body = get_message(channel, q_name.method.queue)
    assert body == b'log line'
    assert channel.basic_get(queue=result.method.queue) == (None, None, None)  # not bound
    channel.queue_delete(queue=q_name.method.queue)  # not exclusive: would outlive us
    channel.exchange_delete(exchange=logs)
    connection.close()


# --- 001: "Rabbitmq executions" -------------------------------------------------------------

def test_seed001_receive_logs_program(localhost, uniq):
    logs = uniq('logs')

    connection = pika.BlockingConnection(
        localhost(host='localhost'))
    channel = connection.channel()

    channel.exchange_declare(exchange=logs, exchange_type='fanout')

    result = channel.queue_declare(queue='', exclusive=True)
    queue_name = result.method.queue

    channel.queue_bind(exchange=logs, queue=queue_name)

    printed = [' [*] Waiting for logs. To exit press CTRL+C']

    def callback(ch, method, properties, body):
        printed.append(f" [x] {body}")
        callback.stop_when_done()

    channel.basic_consume(
        queue=queue_name, on_message_callback=callback, auto_ack=True)

    # An emitter on its own connection.
    emitter = pika.BlockingConnection(localhost('localhost'))
    emitter.channel().basic_publish(exchange=logs, routing_key='', body='info: hi')
    emitter.close()

    run_consumer(connection, channel, callback)
    assert printed == [' [*] Waiting for logs. To exit press CTRL+C', " [x] b'info: hi'"]
    channel.exchange_delete(exchange=logs)
    connection.close()


def test_seed001_direct_binding_with_key(localhost, uniq):
    exchange_name = uniq('direct_logs')
    hello = uniq('hello')
    connection = pika.BlockingConnection(localhost('localhost'))
    channel = connection.channel()
    channel.exchange_declare(exchange=exchange_name, exchange_type='direct')
    queue_name = channel.queue_declare(queue='', exclusive=True).method.queue
    channel.queue_bind(exchange=exchange_name,
                       queue=queue_name,
                       routing_key='black')
    for colour in ['black', 'green', 'black']:
        channel.basic_publish(exchange=exchange_name, routing_key=colour, body=colour)
    got = []
    channel.basic_consume(queue=queue_name, auto_ack=True,
                          on_message_callback=lambda ch, m, p, body: got.append(body))
    # The default exchange: "routed to the queue with the name specified by routing_key,
    # if it exists" (and dropped otherwise).
    message = 'Hello World!'
    channel.basic_publish(exchange='',
                          routing_key=hello,
                          body=message)  # no queue 'hello…' yet: dropped
    channel.queue_declare(queue=hello, exclusive=True)
    channel.basic_publish(exchange='', routing_key=hello, body=message)
    pump(connection, lambda: len(got) == 2, what="two 'black' messages")
    assert got == [b'black', b'black']
    wait_count(connection, hello, 1)
    channel.exchange_delete(exchange=exchange_name)
    connection.close()


# --- 002: "[[message broker]] ... Post Office" ----------------------------------------------

def test_seed002_sending_and_receiving(localhost, uniq):
    hello, logs = uniq('hello'), uniq('logs')
    connection = pika.BlockingConnection(localhost("localhost"))
    channel = connection.channel()
    channel.queue_declare(queue=hello)
    channel.exchange_declare(exchange=logs, exchange_type="fanout")
    channel.basic_publish(
        exchange="",  # default/direct
        routing_key=hello,  # specific direct queue
        body="Hello World!",
    )
    connection.close()

    connection = pika.BlockingConnection(localhost("localhost"))
    # "make sure that the queue exists": on the connection, as written -> no such method.
    with pytest.raises(AttributeError):
        connection.queue_declare(queue=hello)
    channel = connection.channel()
    channel.queue_declare(queue=hello)  # what was meant
    printed = []

    def callback(ch, method, properties, body):
        printed.append(body)
        callback.stop_when_done()

    channel.basic_consume(
        queue=hello,
        auto_ack=True,  # automatic acknowledgment to delete from the queue
        on_message_callback=callback
    )
    run_consumer(connection, channel, callback)
    assert printed == [b'Hello World!']
    channel.queue_delete(queue=hello)
    channel.exchange_delete(exchange=logs)
    connection.close()


# --- 003: "Hello World / Work Queues / Publish/Subscribe" notes -------------------------------

PY2_CALLBACK = '''
def callback(ch, method, properties, body):
    print " [x] Received %r" % (body,)
    time.sleep( body.count('.')  )
    print " [x] Done"
    ch.basic_ack(delivery_tag = method.delivery_tag)
'''


def test_seed003_python2_callback_does_not_compile():
    with pytest.raises(SyntaxError):
        compile(PY2_CALLBACK, 'seed003', 'exec')


def test_seed003_manual_ack_is_the_default(localhost, uniq):
    """'Manual message acknowledgments are turned on by default': a consumer without auto_ack
    that never acks leaves the message unacked, and it comes back when the consumer goes."""
    hello = uniq('hello')
    connection = pika.BlockingConnection(localhost('localhost'))
    channel = connection.channel()
    channel.queue_declare(queue=hello, durable=True)
    channel.basic_publish(exchange='', routing_key=hello, body='a.task...',
                          properties=pika.BasicProperties(delivery_mode = 2,))  # noqa: E251
    got = []

    def callback(ch, method, properties, body):
        got.append(body)  # (Python 3 version of the note's callback, minus the ack)
        callback.stop_when_done()

    channel.basic_consume(queue=hello, on_message_callback=callback)
    run_consumer(connection, channel, callback)
    assert got == [b'a.task...']
    assert message_count(connection, hello) == 0  # unacked, not ready
    connection.close()
    other = pika.BlockingConnection(localhost())
    ch = other.channel()
    method, _, body = get_message(ch, hello)
    assert (body, method.redelivered) == (b'a.task...', True)
    ch.queue_delete(queue=hello)
    other.close()


def test_seed003_durable_persistent_fair_dispatch(localhost, uniq):
    task_queue = uniq('task_queue')
    connection = pika.BlockingConnection(localhost('localhost'))
    channel = connection.channel()
    channel.queue_declare(queue=task_queue, durable=True)
    channel.basic_publish(exchange='',
                          routing_key=task_queue,
                          body='message',
                          properties=pika.BasicProperties(
                              delivery_mode = 2, # make message persistent  # noqa
                          ))
    channel.basic_qos(prefetch_count=1)
    method, properties, body = get_message(channel, task_queue)
    assert (body, properties.delivery_mode) == (b'message', 2)
    channel.queue_delete(queue=task_queue)
    connection.close()


def test_seed003_queue_declare_without_queue_is_a_type_error(localhost, uniq):
    logs = uniq('logs')
    connection = pika.BlockingConnection(localhost('localhost'))
    channel = connection.channel()
    channel.exchange_declare(exchange=logs, exchange_type='fanout')
    # pika 0.x allowed queue_declare() for a server-named queue; pika 1.x requires `queue`.
    with pytest.raises(TypeError):
        result = channel.queue_declare()
    with pytest.raises(TypeError):
        result = channel.queue_declare(exclusive=True)
    assert channel.is_open  # nothing was sent
    result = channel.queue_declare(queue='', exclusive=True)  # the pika 1.x spelling
    channel.queue_bind(exchange=logs, queue=result.method.queue)
    channel.exchange_delete(exchange=logs)
    connection.close()


# --- 004: "Sending Steps / Receiving Steps" -------------------------------------------------

BAD_INDENT_CALLBACK = textwrap.dedent('''
    def callback(ch, method, properties, body):
    print(f" [x] Received {body}")
''')


def test_seed004_connection_parameter_typo_is_an_attribute_error():
    with pytest.raises(AttributeError):
        pika.ConnectionParameter('localhost')


def test_seed004_unindented_callback_does_not_compile():
    with pytest.raises(IndentationError):
        compile(BAD_INDENT_CALLBACK, 'seed004', 'exec')


def test_seed004_sending_and_receiving_steps(localhost, uniq):
    hello = uniq('hello')
    parameter = localhost('localhost')  # pika.ConnectionParameters, spelled right
    connection = pika.BlockingConnection(parameter)
    channel = connection.channel()
    channel.queue_declare(queue = hello )  # noqa: E251,E202
    channel.basic_publish(exchange='',  routing_key=hello,  body='Hello World!')
    connection.close()

    connection = pika.BlockingConnection(parameter)
    channel = connection.channel()
    channel.queue_declare(queue=hello)
    printed = []

    def callback(ch, method, properties, body):
        printed.append(f" [x] Received {body}")
        callback.stop_when_done()

    channel.basic_consume(queue=hello, auto_ack=True, on_message_callback=callback )
    run_consumer(connection, channel, callback)
    assert printed == [" [x] Received b'Hello World!'"]
    channel.queue_delete(queue=hello)
    connection.close()
