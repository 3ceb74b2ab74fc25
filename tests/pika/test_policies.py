"""Policies as a pika application meets them (issue 12): the retry-with-delay pattern with
its TTL and both dead-letter exchanges set by policies (over the management API) rather
than queue arguments, and a max-length policy applied to a queue that already holds
messages. Against RabbitMQ too (WARREN_TEST_PORT=5672); the policies' patterns match only
this test's uniquely named queues, and are deleted at the end."""

import base64
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import external_port, get_message, wait_count

HTTP_RE = re.compile(r"listening on 127\.0\.0\.1:(\d+) \(http\)")


@pytest.fixture
def api(broker):
    """(method, path, body) -> status against the broker's management API."""
    if external_port() is not None:
        base = "http://127.0.0.1:" + os.environ.get("WARREN_TEST_HTTP_PORT", "15672")
    else:
        deadline = time.monotonic() + 10
        while True:
            m = HTTP_RE.search(broker.output())
            if m:
                break
            assert time.monotonic() < deadline, "no http listener in:\n" + broker.output()
            time.sleep(0.05)
        base = f"http://127.0.0.1:{m.group(1)}"
    auth = "Basic " + base64.b64encode(b"guest:guest").decode()

    def call(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"authorization": auth,
                                              "content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
    return call


def put_policy(api, created, name, pattern, definition):
    path = "/api/policies/%2F/" + urllib.parse.quote(name, safe="")
    created.append(path)
    status = api("PUT", path, {"pattern": pattern, "definition": definition,
                               "apply-to": "queues"})
    assert status in (201, 204), status


def test_retry_with_delay_by_policy(connect, uniq, api):
    conn = connect()
    ch = conn.channel()
    work, retry = uniq("pwork"), uniq("pretry")
    created = []
    try:
        ch.queue_declare(work)
        ch.queue_declare(retry)
        put_policy(api, created, work, f"^{re.escape(work)}$",
                   {"dead-letter-exchange": "", "dead-letter-routing-key": retry})
        put_policy(api, created, retry, f"^{re.escape(retry)}$",
                   {"message-ttl": 50, "dead-letter-exchange": "",
                    "dead-letter-routing-key": work})
        ch.basic_publish('', work, b'job')
        for attempt in range(1, 4):
            m, props, body = get_message(ch, work, auto_ack=False)
            assert body == b'job'
            if attempt > 1:
                by_queue = {d['queue']: d for d in props.headers['x-death']}
                assert by_queue[work]['count'] == attempt - 1
                assert by_queue[work]['reason'] == 'rejected'
                assert by_queue[retry]['reason'] == 'expired'
                assert by_queue[retry]['count'] == attempt - 1
            ch.basic_reject(m.delivery_tag, requeue=False)
        m, props, _ = get_message(ch, work, auto_ack=True)
        assert props.headers['x-first-death-reason'] == 'rejected'
        assert props.headers['x-first-death-queue'] == work
    finally:
        for p in created:
            api("DELETE", p)
        ch.queue_delete(work)
        ch.queue_delete(retry)
        conn.close()


def test_max_length_policy_trims_an_existing_queue(connect, uniq, api):
    conn = connect()
    ch = conn.channel()
    q = uniq("pcap")
    created = []
    try:
        ch.queue_declare(q)
        for i in range(5):
            ch.basic_publish('', q, f"m{i}".encode())
        wait_count(conn, q, 5)
        put_policy(api, created, q, f"^{re.escape(q)}$", {"max-length": 2})
        wait_count(conn, q, 2)
        _, _, body = get_message(ch, q)
        assert body == b"m3"
        api("DELETE", created[0])
        for i in range(3):
            ch.basic_publish('', q, f"n{i}".encode())
        wait_count(conn, q, 4)
    finally:
        for p in created:
            api("DELETE", p)
        ch.queue_delete(q)
        conn.close()
