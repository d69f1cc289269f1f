"""The [http] endpoint (issue 15): GET /metrics in the Prometheus text format, checked by
`promtool check metrics`, GET /healthz, an optional bearer token, strict and bounded
requests (bad heads, oversized heads, slowloris, too many connections), and
docs/metrics.md listing exactly the metrics the endpoint emits.

mqgate-only (Mosquitto has no such endpoint): like the other tests that start
mqgate_test.Broker, it always runs against mqgate.
Deterministic: counters are read after the events that move them are acknowledged (or
logged); slow clients are told apart by what they manage to send, not by a clock."""
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

import mqtt_raw as r
import pki
from mqgate_test import (SOURCE_DIR, TEST_PLUGIN_DIR, Broker, BrokerTestCase, closed_by_peer,
                         connect_raw, run_config_check)

HTTP_LISTENING = re.compile(r"http endpoint listening on (\S+) port (\d+)")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")
TYPE = re.compile(r"^# TYPE (\S+) (counter|gauge)$", re.M)
DOC_ROW = re.compile(r"^\| `([a-zA-Z_:][a-zA-Z0-9_:]*)` \| (counter|gauge) \|", re.M)

def http_config(http="", extra="", listeners=None):
    listeners = listeners or '[listeners.default]\nbind = "127.0.0.1:0"\n'
    return (f'log_level = "debug"\nsys_interval = 0\n{extra}\n{listeners}\n'
            f'[http]\nbind = "127.0.0.1:0"\n{http}\n')


def http_port(broker):
    for _ in range(500):
        m = HTTP_LISTENING.search(broker.log())
        if m:
            return int(m.group(2))
        time.sleep(0.02)
    raise AssertionError("no http endpoint line in the log:\n" + broker.log())


def get(port, path="/metrics", method="GET", headers=None):
    """(status, headers dict (lower-case names), body) through http.client."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, headers=headers or {})
        resp = c.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        c.close()


def raw_exchange(port, data, timeout=10):
    """Sends raw bytes, reads until the server closes; returns what it answered."""
    s = connect_raw(port, timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def parse_samples(text):
    """{(name, labels text): value} of an exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def value(samples, name, **labels):
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    return samples[(name, want)]


def promtool_check(text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


class MetricsTest(BrokerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki_dir = d = tempfile.mkdtemp(prefix="mqgate-http-")
        cls.ca = pki.make_ca(d, key_type="ec")
        cls.server = pki.make_server(d, cn="localhost", key_type="ec")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki_dir, ignore_errors=True)

    def broker_with_tls(self):
        listeners = ('[listeners.plain]\nbind = "127.0.0.1:0"\n'
                     f'[listeners.tls]\nbind = "127.0.0.1:0"\nssl = true\n'
                     f'certfile = "{self.server.cert}"\nkeyfile = "{self.server.key}"\n')
        plugins = '[plugins.anon]\nmodule = "anonymous"\nallow_anonymous = true\n'
        b = self.start_broker(http_config(listeners=listeners + plugins))
        return b, http_port(b)

    def test_metrics_pass_promtool_and_count_what_happened(self):
        b, port = self.broker_with_tls()
        plain = b.port("plain")
        # A persistent subscriber goes offline: a QoS 0 message for it is dropped
        # (qos0_offline) and a QoS 1 one is queued.
        sub = r.RawClient(plain)
        sub.connect("sub", clean=False)
        sub.subscribe([("t/#", 1)])
        sub.send(r.disconnect())
        self.assertTrue(sub.closed_by_peer())
        pub = r.RawClient(plain)
        pub.connect("pub")
        pub.publish("t/0", b"zero", qos=0)
        pub.publish("t/1", b"one", qos=1)  # PUBACK: routed
        pub.ping()  # the QoS 0 one is routed too (in order)

        # TLS: a full handshake, then one resuming its session, then garbage.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.ca.cert)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        tls_port = b.port("tls")
        session = None
        for expect_reused in (False, True):
            raw = socket.create_connection(("127.0.0.1", tls_port), timeout=10)
            s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
            s.sendall(r.connect("tls-" + str(expect_reused)))
            self.assertEqual(s.recv(4)[:1], b"\x20")  # CONNACK
            self.assertEqual(s.session_reused, expect_reused)
            session = s.session
            s.close()
        g = connect_raw(tls_port)
        g.sendall(b"\x16\x03\x01\x00\x05hello" + b"\x00" * 64)
        self.assertTrue(closed_by_peer(g))
        g.close()
        b.wait_log(r"TLS handshake failed")

        # The TLS clients' closes are processed in their own time: wait for them.
        deadline = time.monotonic() + 10
        while True:
            status, headers, body = get(port)
            text = body.decode()
            if (value(parse_samples(text), "mqgate_clients_connected") == 1
                    or time.monotonic() > deadline):
                break
            time.sleep(0.05)
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        rc, out = promtool_check(text)
        self.assertEqual(rc, 0, out + "\n" + text)
        m = parse_samples(text)
        self.assertEqual(value(m, "mqgate_clients_connected"), 1)  # pub
        self.assertEqual(value(m, "mqgate_messages_received_total"), 2)
        self.assertEqual(value(m, "mqgate_messages_dropped_total", reason="qos0_offline"), 1)
        self.assertEqual(value(m, "mqgate_messages_dropped_total", reason="queue_full"), 0)
        self.assertEqual(value(m, "mqgate_messages_queued"), 1)
        self.assertEqual(value(m, "mqgate_messages_inflight"), 0)
        self.assertEqual(value(m, "mqgate_sessions_persistent"), 1)
        self.assertEqual(value(m, "mqgate_listener_connections_accepted_total", listener="plain"), 2)
        self.assertEqual(value(m, "mqgate_listener_connections_accepted_total", listener="tls"), 3)
        self.assertEqual(value(m, "mqgate_listener_connections", listener="plain"), 1)
        self.assertEqual(value(m, "mqgate_tls_handshakes_total", listener="tls", kind="full"), 1)
        self.assertEqual(value(m, "mqgate_tls_handshakes_total", listener="tls", kind="resumed"), 1)
        self.assertEqual(value(m, "mqgate_tls_handshake_failures_total", listener="tls",
                               reason="protocol"), 1)
        # Every CONNECT asked the plugin once: sub, pub, two TLS clients.
        self.assertEqual(value(m, "mqgate_auth_decisions_total", plugin="anon",
                               phase="authenticate", verdict="allow"), 4)
        self.assertGreaterEqual(value(m, "mqgate_loop_lag_samples_total"), 0)
        self.assertGreater(value(m, "process_resident_memory_bytes"), 0)

        # The queued message goes out when the subscriber comes back, and is acknowledged.
        sub = r.RawClient(plain)
        sub.connect("sub", clean=False)
        p = sub.next_publish()
        self.assertEqual(p.payload, b"one")
        sub.ping()
        m = parse_samples(get(port)[2].decode())
        self.assertEqual(value(m, "mqgate_messages_queued"), 0)
        self.assertEqual(value(m, "mqgate_messages_inflight"), 0)
        pub.close()
        sub.close()

    def test_tls_failures_by_reason(self):
        d = self.pki_dir
        good = pki.make_device(d, "good", "my.domain.name", key_type="ec")
        bad = pki.make_device(d, "bad", "my.domain.name", key_type="ec")
        crl = pki.revoke(d, bad.cert)
        other_dir = os.path.join(d, "other")
        os.makedirs(other_dir, exist_ok=True)
        pki.make_ca(other_dir, key_type="ec", cn="another CA")
        stranger = pki.make_device(other_dir, "stranger", "my.domain.name", key_type="ec")
        listeners = ('[listeners.mtls]\nbind = "127.0.0.1:0"\nssl = true\n'
                     f'certfile = "{self.server.cert}"\nkeyfile = "{self.server.key}"\n'
                     f'cafile = "{self.ca.cert}"\ncrlfile = "{crl}"\nclient_cert = "required"\n')
        b = self.start_broker(http_config(listeners=listeners))
        port = http_port(b)
        tls_port = b.port("mtls")

        def handshake(creds):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(self.ca.cert)
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(creds.cert, creds.key)
            raw = socket.create_connection(("127.0.0.1", tls_port), timeout=10)
            try:
                s = ctx.wrap_socket(raw, server_hostname="localhost")
                s.sendall(r.connect("c"))
                return s.recv(4)[:1] == b"\x20"
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                return False
            finally:
                raw.close()

        self.assertTrue(handshake(good))
        self.assertFalse(handshake(bad))
        self.assertFalse(handshake(stranger))
        b.wait_log(r"TLS handshake failed", count=2)
        m = parse_samples(get(port)[2].decode())
        self.assertEqual(value(m, "mqgate_tls_handshakes_total", listener="mtls", kind="full"), 1)
        for reason, n in [("certificate_revoked", 1), ("certificate", 1), ("protocol", 0)]:
            self.assertEqual(value(m, "mqgate_tls_handshake_failures_total", listener="mtls",
                                   reason=reason), n, reason)

    def test_certificate_expiry_of_clients_and_listeners(self):
        d = self.pki_dir
        soon = pki.make_device(d, "soon", "my.domain.name", key_type="ec", days=5)
        later = pki.make_device(d, "later", "my.domain.name", key_type="ec", days=200)
        crl = pki.revoke(d, pki.make_device(d, "gone", "my.domain.name", key_type="ec").cert)
        listeners = ('[listeners.mtls]\nbind = "127.0.0.1:0"\nssl = true\n'
                     f'certfile = "{self.server.cert}"\nkeyfile = "{self.server.key}"\n'
                     f'cafile = "{self.ca.cert}"\ncrlfile = "{crl}"\nclient_cert = "required"\n'
                     '[listeners.plain]\nbind = "127.0.0.1:0"\n')
        b = self.start_broker(http_config(listeners=listeners))
        port = http_port(b)

        def connect(creds, client_id):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(self.ca.cert)
            ctx.load_cert_chain(creds.cert, creds.key)
            raw = socket.create_connection(("127.0.0.1", b.port("mtls")), timeout=10)
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            self.addCleanup(s.close)
            s.sendall(r.connect(client_id))
            self.assertEqual(s.recv(4)[:1], b"\x20")
            return s

        def windows():
            m = parse_samples(get(port)[2].decode())
            return {w: value(m, "mqgate_clients_by_certificate_expiry", window=w)
                    for w in ("expired", "7d", "30d", "90d", "later")}, m

        connect(soon, "soon")
        gone_later = connect(later, "later")
        got, m = windows()
        self.assertEqual(got, {"expired": 0, "7d": 1, "30d": 0, "90d": 0, "later": 1})
        # The served certificate (make_server's default: 365 days) and the CRL's nextUpdate.
        served = value(m, "mqgate_listener_certificate_expiry_timestamp_seconds", listener="mtls")
        self.assertAlmostEqual(served, time.time() + 365 * 86400, delta=2 * 86400)
        self.assertGreater(
            value(m, "mqgate_listener_crl_next_update_timestamp_seconds", listener="mtls"),
            time.time())
        self.assertNotIn('listener="plain"',
                         "\n".join(l for l in get(port)[2].decode().splitlines()
                                   if l.startswith("mqgate_listener_certificate_expiry")))
        # A client that leaves is no longer counted.
        gone_later.close()
        b.wait_log(r'client="later".*disconnected')
        got, _ = windows()
        self.assertEqual(got["later"], 0)
        self.assertEqual(got["7d"], 1)

    def test_auth_decisions_by_plugin_and_verdict(self):
        deferred = os.path.join(TEST_PLUGIN_DIR, "deferred.so")
        config = ('auth_timeout = 1\n'
                  '[listeners.open]\nbind = "127.0.0.1:0"\nplugins = ["anon"]\n'
                  '[listeners.slow]\nbind = "127.0.0.1:0"\nplugins = ["d"]\n'
                  '[plugins.anon]\nmodule = "anonymous"\nallow_anonymous = false\n'
                  f'[plugins.d]\npath = "{deferred}"\ntag = "d"\ndelay_ms = 2500\n')
        b = self.start_broker(http_config(extra=config, listeners=" "))
        port = http_port(b)
        denied = r.RawClient(b.port("open"))
        self.assertEqual(denied.connect("nobody").return_code, 5)
        allowed = r.RawClient(b.port("open"))
        self.assertEqual(allowed.connect("alice", username="alice").return_code, 0)
        slow = r.RawClient(b.port("slow"))
        self.assertEqual(slow.connect("slow", timeout=10).return_code, 5)  # auth_timeout
        m = parse_samples(get(port)[2].decode())

        def decisions(plugin, verdict):
            return value(m, "mqgate_auth_decisions_total", plugin=plugin, phase="authenticate",
                         verdict=verdict)

        self.assertEqual(decisions("anon", "deny"), 1)
        self.assertEqual(decisions("anon", "allow"), 1)
        self.assertEqual(decisions("anon", "error"), 0)
        self.assertEqual(decisions("d", "timeout"), 1)
        self.assertEqual(decisions("d", "deny"), 0)
        for c in (denied, allowed, slow):
            c.close()

    def test_docs_list_exactly_the_metrics_emitted(self):
        b, port = self.broker_with_tls()
        emitted = dict(TYPE.findall(get(port)[2].decode()))
        with open(os.path.join(SOURCE_DIR, "docs", "metrics.md")) as f:
            documented = dict(DOC_ROW.findall(f.read()))
        self.assertTrue(documented, "no metric rows found in docs/metrics.md")
        self.assertEqual(sorted(set(emitted) - set(documented)), [],
                         "emitted but not in docs/metrics.md")
        self.assertEqual(sorted(set(documented) - set(emitted)), [],
                         "in docs/metrics.md but not emitted")
        for name, kind in emitted.items():
            self.assertEqual(documented[name], kind, name)

    def test_healthz_and_nothing_else(self):
        b = self.start_broker(http_config())
        port = http_port(b)
        status, _, body = get(port, "/healthz")
        self.assertEqual((status, body), (200, b"ok\n"))
        status, headers, body = get(port, "/metrics", method="HEAD")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"")
        self.assertGreater(int(headers["content-length"]), 100)  # the GET's length
        self.assertEqual(get(port, "/")[0], 404)
        self.assertEqual(get(port, "/metrics/")[0], 404)
        self.assertEqual(get(port, "/healthz?x=1")[0], 200)
        status, headers, _ = get(port, "/metrics", method="POST")
        self.assertEqual(status, 405)
        self.assertEqual(headers["allow"], "GET, HEAD")
        self.assertEqual(get(port, "/metrics", method="DELETE")[0], 405)

    def test_bearer_token_from_token_file(self):
        token = "t0ken-" + "x" * 40
        path = os.path.join(self.tmp, "token")
        with open(path, "w") as f:
            f.write(token + "\n")
        b = self.start_broker(http_config(http=f'token_file = "{path}"\n'))
        port = http_port(b)
        status, headers, body = get(port)
        self.assertEqual(status, 401)
        self.assertIn("Bearer", headers["www-authenticate"])
        self.assertNotIn(b"mqgate_", body)
        self.assertEqual(get(port, headers={"Authorization": "Bearer wrong"})[0], 401)
        self.assertEqual(get(port, headers={"Authorization": "Bearer " + token[:-1]})[0], 401)
        self.assertEqual(get(port, headers={"Authorization": "Basic " + token})[0], 401)
        status, _, body = get(port, headers={"Authorization": "Bearer " + token})
        self.assertEqual(status, 200)
        self.assertIn(b"mqgate_clients_connected", body)
        self.assertEqual(get(port, headers={"Authorization": "bearer " + token})[0], 200)
        self.assertEqual(get(port, "/healthz")[0], 200)  # health needs no token
        self.assertNotIn(token, b.log())

    def test_healthz_is_503_while_shutting_down(self):
        b = self.start_broker(http_config())
        port = http_port(b)
        # A subscriber that never reads keeps the broker in its shutdown grace (its
        # backlog cannot be flushed), long enough to ask.
        sub = r.RawClient(b.port("default"))
        sub.connect("slow")
        sub.subscribe([("big", 0)])
        pub = r.RawClient(b.port("default"))
        pub.connect("pub")
        pub.sock.settimeout(2)
        try:
            for _ in range(300):  # 30 MB: more than socket buffers and max_outgoing_bytes hold
                pub.send(r.publish("big", b"x" * 100000))
        except (TimeoutError, socket.timeout):
            pass  # flow control holds the publisher once the subscriber is congested
        self.assertEqual(get(port, "/healthz")[0], 200)
        b.signal(signal.SIGTERM)
        b.wait_log(r"SIGTERM received")
        status, _, body = get(port, "/healthz")
        self.assertEqual((status, body), (503, b"not listening\n"))
        sub.sock.close()
        pub.sock.close()

    def test_sighup_rereads_the_token(self):
        path = os.path.join(self.tmp, "token")
        with open(path, "w") as f:
            f.write("first-token\n")
        b = self.start_broker(http_config(http=f'token_file = "{path}"\n'))
        port = http_port(b)
        self.assertEqual(get(port, headers={"Authorization": "Bearer first-token"})[0], 200)
        with open(path, "w") as f:
            f.write("second-token\n")
        b.signal(signal.SIGHUP)
        b.wait_log(r"reload: \[http\] bearer token replaced")
        self.assertEqual(get(port, headers={"Authorization": "Bearer first-token"})[0], 401)
        self.assertEqual(get(port, headers={"Authorization": "Bearer second-token"})[0], 200)
        self.assertNotIn("second-token", b.log())

    def test_bad_requests(self):
        b = self.start_broker(http_config())
        port = http_port(b)
        cases = [
            (b"GET /metrics HTTP/1.1\nHost: x\n\n", b"400"),  # bare LF
            (b"GET /metrics HTTP/1.1\r\n\r\n", b"400"),  # no Host
            (b"GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", b"400"),
            (b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n", b"505"),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", b"413"),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
            (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * 9000 + b"\r\n\r\n",
             b"431"),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 100 + b"\r\n", b"431"),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100 + b"\r\n\r\n", b"400"),
        ]
        for request, status in cases:
            with self.subTest(request=request[:40]):
                answer = raw_exchange(port, request)
                self.assertTrue(answer.startswith(b"HTTP/1.1 " + status + b" "), answer[:200])
                self.assertIn(b"\r\nConnection: close\r\n", answer)
        # Still serving.
        self.assertEqual(get(port, "/healthz")[0], 200)
        b.wait_log(r"http: 127\.0\.0\.1:\d+: bad request: request head over 8192 bytes; 431")

    def test_slowloris_is_cut_off(self):
        b = self.start_broker(http_config(http="request_timeout = 1\n"))
        port = http_port(b)
        # A head sent a byte at a time, far slower than the whole-head deadline allows:
        # the server answers 408 and closes before the client gets to the end.
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"s" * 200 + b"\r\n\r\n"
        s = connect_raw(port)
        sent = 0
        answer = b""
        s.settimeout(0.05)
        for byte in head:
            try:
                s.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            try:
                chunk = s.recv(4096)
                answer += chunk
                if not chunk or answer:
                    break
            except socket.timeout:
                pass
        s.settimeout(10)
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        s.close()
        self.assertLess(sent, len(head))
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)
        # A client that sends nothing at all is closed too.
        idle = connect_raw(port)
        self.assertTrue(closed_by_peer(idle, timeout=20))
        idle.close()
        self.assertEqual(get(port, "/healthz")[0], 200)

    def test_connection_limit_evicts_the_oldest_idle(self):
        b = self.start_broker(http_config(http="max_connections = 2\nrequest_timeout = 30\n"))
        port = http_port(b)
        held = [connect_raw(port), connect_raw(port)]
        for s in held:
            s.sendall(b"GET /metr")  # half a request each: both places taken
        time.sleep(0.2)
        # A third evicts the older of them (closed without an answer) and is answered.
        self.assertEqual(get(port, "/healthz")[0], 200)
        self.assertTrue(closed_by_peer(held[0]))
        held[0].close()
        b.wait_log(r"connections limited \(max_connections 2, 2 per address\)")
        s = held[1]
        s.sendall(b"ics HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 200 "))
        s.close()
        m = parse_samples(get(port)[2].decode())
        self.assertGreaterEqual(value(m, "mqgate_http_connections_evicted_total"), 1)
        self.assertEqual(value(m, "mqgate_http_connections_refused_total"), 0)

    def test_per_address_share_and_crowded_timeout_are_configurable(self):
        b = self.start_broker(http_config(
            http="max_connections = 8\nmax_connections_per_address = 2\n"
                 "crowded_request_timeout_ms = 300\nrequest_timeout = 30\n"))
        port = http_port(b)
        held = [connect_raw(port), connect_raw(port)]
        for s in held:
            s.sendall(b"GET /metr")
        time.sleep(0.2)
        # The pool has room, but this address has used its 2: its own oldest goes.
        self.assertEqual(get(port, "/healthz")[0], 200)
        self.assertTrue(closed_by_peer(held[0]))
        b.wait_log(r"connections limited \(max_connections 8, 2 per address\): .* heads get 300 ms")
        for s in held:
            s.close()

    def probe_healthz_while_held(self, b, port, held, trickle=None, probes=30):
        """Probes /healthz `probes` times (every 50 ms) while `held` sockets stay open
        (`trickle(sock)` sends each a byte between probes); every probe must get 200 within
        a second. Returns the latencies."""
        lat, failures = [], []
        for i in range(probes):
            if trickle:
                for s in held:
                    try:
                        trickle(s)
                    except OSError:
                        pass
            t = time.monotonic()
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/healthz")
                status = c.getresponse().status
                c.close()
            except (OSError, http.client.HTTPException) as e:
                status = repr(e)
            lat.append(time.monotonic() - t)
            if status != 200:
                failures.append((i, status))
            time.sleep(0.05)
        self.assertEqual(failures, [], f"{len(failures)} of {probes} /healthz probes failed")
        self.assertLess(max(lat), 1.0, lat)
        return lat

    def test_idle_sockets_do_not_starve_healthz(self):
        # Issue 22: 20 idle sockets (max_connections 16) made every /healthz probe fail.
        b = self.start_broker(http_config())
        port = http_port(b)
        held = [connect_raw(port) for _ in range(24)]
        try:
            self.probe_healthz_while_held(b, port, held)
        finally:
            for s in held:
                s.close()
        m = parse_samples(get(port)[2].decode())
        self.assertGreaterEqual(value(m, "mqgate_http_connections_evicted_total"), 8)
        # Logged once for the episode, not per connection.
        self.assertEqual(len(re.findall(r"http: connections limited", b.log())), 1, b.log())
        b.wait_log(r"http: connections no longer limited: \d+ idle ones evicted, 0 refused")

    def test_trickled_requests_do_not_starve_healthz(self):
        b = self.start_broker(http_config())
        port = http_port(b)
        held = [connect_raw(port) for _ in range(24)]
        for s in held:
            try:
                s.sendall(b"GET /metrics HTTP/1.1\r\n")
            except OSError:
                pass
        try:
            self.probe_healthz_while_held(b, port, held, trickle=lambda s: s.send(b"X"))
        finally:
            for s in held:
                s.close()

    def test_half_closed_client_gets_its_answer(self):
        b = self.start_broker(http_config())
        port = http_port(b)
        s = connect_raw(port)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
        s.close()
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK\r\n"), out)
        self.assertTrue(out.endswith(b"\r\n\r\nok\n"), out)

    def test_config_errors_name_the_key_and_never_the_token(self):
        token_path = os.path.join(self.tmp, "empty")
        open(token_path, "w").close()
        for extra, expected in [
            ('bind = "localhost:9183"', r"http\.bind: \"localhost\" is not an IPv4 address"),
            ('bind = "127.0.0.1:0"\ntoken = "two words"', r"http\.token: expected 1 to 4096"),
            (f'bind = "127.0.0.1:0"\ntoken_file = "{token_path}"', r"http\.token_file: .* is empty"),
            ('bind = "127.0.0.1:0"\nbearer = "x"', r"http\.bearer: unknown key"),
        ]:
            with self.subTest(extra=extra):
                rc, out = run_config_check(
                    f'[listeners.default]\nbind = "127.0.0.1:0"\n[http]\n{extra}\n', self.tmp)
                self.assertNotEqual(rc, 0, out)
                self.assertRegex(out, expected)
                self.assertNotIn("two words", out)

    def test_port_taken_refuses_to_start(self):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        try:
            port = taken.getsockname()[1]
            config = ('[listeners.default]\nbind = "127.0.0.1:0"\n'
                      f'[http]\nbind = "127.0.0.1:{port}"\n')
            b = Broker(config, wait=False)
            try:
                self.assertEqual(b.proc.wait(timeout=20), 1)
                self.assertRegex(b.log(), r"mqgate\.toml:3: http\.bind: cannot listen on "
                                          r"127\.0\.0\.1 port \d+: address already in use")
                self.assertIn("not started", b.log())
            finally:
                b._log.close()
                shutil.rmtree(b.dir, ignore_errors=True)
        finally:
            taken.close()

    def test_ipv6_bind(self):
        if not socket.has_ipv6:
            self.skipTest("no IPv6")
        try:
            probe = socket.socket(socket.AF_INET6)
            probe.bind(("::1", 0))
            probe.close()
        except OSError:
            self.skipTest("no ::1")
        b = self.start_broker(http_config().replace('[http]\nbind = "127.0.0.1:0"',
                                                    '[http]\nbind = "[::1]:0"'))
        port = http_port(b)
        c = http.client.HTTPConnection("::1", port, timeout=10)
        c.request("GET", "/healthz")
        self.assertEqual(c.getresponse().status, 200)
        c.close()


if __name__ == "__main__":
    unittest.main()
