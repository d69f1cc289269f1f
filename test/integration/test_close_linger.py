"""A last packet before a close the broker initiates reaches a client that is still
sending (issue 21). Closing a socket with unread input makes the kernel reset the
connection: a client still sending then sees ECONNRESET, on a send or after the last
bytes, and may never read the DISCONNECT that says why. So the broker writes its last
packet (then TLS's close_notify, a WebSocket close frame), shuts down its write side,
and reads and drops what still comes until the client closes, or sends nothing for 0.5 s
(Server::kLingerQuietMs), for at most 2 s (Server::kLingerMs), at most 1024 sockets at
once (Server::kMaxLingering).

The clients here are made to exceed the broker's Receive Maximum with QoS 2 PUBLISHes
(DISCONNECT 0x93, [MQTT-3.3.4-8]) in one burst, and keep sending for 200 ms after it,
several times per test so that the race is real. mqgate only: Mosquitto 2.0.11 answers
a QoS 2 PUBLISH over its Receive Maximum with PUBREC 0x97 and does not disconnect."""
import base64
import http.client
import os
import queue
import re
import resource
import shutil
import signal
import socket
import ssl
import struct
import tempfile
import time
import unittest

import paho.mqtt.client as paho

import mqtt_raw as R
import pki
from mqgate_test import BrokerTestCase

RECEIVE_MAXIMUM = 2
ROUNDS = 5
KEEP_SENDING_S = 0.2
HTTP_LISTENING = re.compile(r"http endpoint listening on (\S+) port (\d+)")


def config(extra_listeners="", http=False, listener_extra=""):
    text = ('log_level = "debug"\nsys_interval = 0\n'
            f'[limits]\nmax_inflight_messages = {RECEIVE_MAXIMUM}\n'
            f'[listeners.default]\nbind = "127.0.0.1:0"\n{listener_extra}\n{extra_listeners}\n')
    if http:
        text += '[http]\nbind = "127.0.0.1:0"\n'
    return text


def over_receive_maximum(first_id=1):
    """One more unacknowledged QoS 2 PUBLISH than the broker's Receive Maximum."""
    return b"".join(R.publish5("linger/q2", b"q" * 16, qos=2, packet_id=first_id + i)
                    for i in range(RECEIVE_MAXIMUM + 1))


FILLER = b"".join(R.publish5("linger/more", b"m" * 200, qos=0) for _ in range(40))


def scrape(port):
    """GET /metrics as {name{labels}: value}."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
    finally:
        c.close()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def http_port(broker):
    broker.wait_log(HTTP_LISTENING.pattern)
    return int(HTTP_LISTENING.search(broker.log()).group(2))


class Reset(AssertionError):
    pass


class Stream:
    """The MQTT byte stream over a plain socket; `tcp` is the socket below."""

    def __init__(self, sock):
        self.tcp = sock
        self.sock = sock
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def recv(self):
        """Bytes of the MQTT stream; b"" at its clean end."""
        return self.sock.recv(65536)

    def end(self, timeout):
        """Waits for the clean end of the stream after the last packet."""
        self.sock.settimeout(timeout)
        rest = self.recv()
        if rest:
            raise AssertionError(f"bytes after the DISCONNECT: {rest[:40]!r}")

    def close(self):
        self.sock.close()  # an SSLSocket owns the socket it wraps
        self.tcp.close()


class TlsStream(Stream):
    def __init__(self, port, ca):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(ca)
        tcp = socket.create_connection(("127.0.0.1", port), timeout=10)
        super().__init__(tcp)
        # A FIN without close_notify raises SSLEOFError: only the broker's close_notify
        # reads as a clean end.
        self.sock = ctx.wrap_socket(tcp, server_hostname="localhost",
                                    suppress_ragged_eofs=False)


class WebSocketStream(Stream):
    """MQTT in masked binary frames; the broker's close frame, then the TCP end."""

    def __init__(self, port):
        super().__init__(socket.create_connection(("127.0.0.1", port), timeout=10))
        key = base64.b64encode(os.urandom(16)).decode()
        self.tcp.sendall((f"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                          "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                          "Sec-WebSocket-Protocol: mqtt\r\n\r\n").encode())
        self.wire = b""
        while b"\r\n\r\n" not in self.wire:
            chunk = self.tcp.recv(4096)
            if not chunk:
                raise AssertionError("no upgrade response")
            self.wire += chunk
        head, _, self.wire = self.wire.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.closed_with = None

    def send(self, data):
        n = len(data)
        head = bytes([0x82])  # FIN, binary
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        body = (int.from_bytes(data, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")
                ).to_bytes(n, "big") if n else b""
        self.tcp.sendall(head + mask + body)

    def _frame(self):
        """(opcode, payload), or None at the TCP end."""
        while True:
            if len(self.wire) >= 2:
                n, off = self.wire[1] & 0x7F, 2
                if n == 126 and len(self.wire) >= 4:
                    n, off = struct.unpack("!H", self.wire[2:4])[0], 4
                elif n == 127 and len(self.wire) >= 10:
                    n, off = struct.unpack("!Q", self.wire[2:10])[0], 10
                if n < 126 and len(self.wire) >= off + n:
                    op, payload = self.wire[0] & 0x0F, self.wire[off:off + n]
                    self.wire = self.wire[off + n:]
                    return op, payload
            chunk = self.tcp.recv(65536)
            if not chunk:
                if self.wire:
                    raise AssertionError(f"the connection ended inside a frame: {self.wire!r}")
                return None
            self.wire += chunk

    def recv(self):
        while True:
            frame = self._frame()
            if frame is None:
                return b""
            op, payload = frame
            if op == 0x8:
                self.closed_with = payload
                continue  # the TCP end comes next
            if op in (0x0, 0x2):
                return payload

    def end(self, timeout):
        self.tcp.settimeout(timeout)
        super().end(timeout)
        if self.closed_with is None:
            raise AssertionError("no WebSocket close frame before the end")


def read_packet(stream, timeout):
    """The next MQTT packet (parse5()d), or None at the clean end of the stream."""
    deadline = time.monotonic() + timeout
    while True:
        if len(stream.buf) >= 2:
            length, pos = 0, 1
            for shift in range(4):
                if pos >= len(stream.buf):
                    break
                byte = stream.buf[pos]
                pos += 1
                length |= (byte & 0x7F) << (7 * shift)
                if not byte & 0x80:
                    if len(stream.buf) >= pos + length:
                        p = R.Packet(stream.buf[0], stream.buf[pos:pos + length])
                        stream.buf = stream.buf[pos + length:]
                        return R.parse5(p)
                    break
        stream.sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = stream.recv()
        if not chunk:
            if stream.buf:
                raise AssertionError(f"the stream ended inside a packet: {stream.buf!r}")
            return None
        stream.buf += chunk


def told_to_go(test, stream, client_id, keep_sending_s=KEEP_SENDING_S):
    """Connects, exceeds the Receive Maximum in one burst, keeps sending for
    `keep_sending_s`, then reads: PUBRECs, DISCONNECT 0x93, and the clean end of the
    stream. Any reset fails the test."""
    try:
        stream.send(R.connect5(client_id, keepalive=0))
        ack = read_packet(stream, 10)
        test.assertEqual((ack.type, ack.reason), (R.CONNACK, 0), ack)
        test.assertEqual(R.prop(ack, R.RECEIVE_MAXIMUM), RECEIVE_MAXIMUM)
        stream.send(over_receive_maximum() + FILLER)
        deadline = time.monotonic() + keep_sending_s
        while time.monotonic() < deadline:
            stream.send(FILLER)
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError) as e:
        raise Reset(f"{client_id}: sending after the burst: {e!r}; the broker closed with "
                    "the client's packets unread") from None
    got = []
    try:
        while True:
            p = read_packet(stream, 10)
            test.assertIsNotNone(p, f"{client_id}: the stream ended before a DISCONNECT: {got}")
            got.append(p)
            if p.type == R.DISCONNECT:
                break
            test.assertEqual(p.type, R.PUBREC, p)
        test.assertEqual(p.reason, 0x93, f"{client_id}: {got}")  # Receive Maximum exceeded
        stream.end(timeout=10)
    except (ConnectionResetError, ssl.SSLEOFError) as e:
        raise Reset(f"{client_id}: reading after {got}: {e!r}") from None
    return got


class LingeringCloseTest(BrokerTestCase):
    def test_disconnect_0x93_reaches_a_client_that_keeps_sending(self):
        b = self.start_broker(config())
        for i in range(ROUNDS):
            s = Stream(socket.create_connection(("127.0.0.1", b.port()), timeout=10))
            try:
                told_to_go(self, s, f"keeps-sending-{i}")
            finally:
                s.close()
        # The broker lingered, read what still came, and closed when the client did.
        b.wait_log(r'client="keeps-sending-4" .*socket closed after lingering \d+ ms: the client '
                   r'closed \(\d+ bytes read and dropped\)')

    def test_a_client_that_never_stops_is_closed_after_the_linger_time(self):
        b = self.start_broker(config(http=True))
        port = http_port(b)
        s = Stream(socket.create_connection(("127.0.0.1", b.port()), timeout=10))
        self.addCleanup(s.close)
        s.send(R.connect5("endless", keepalive=0))
        self.assertEqual(read_packet(s, 10).type, R.CONNACK)
        s.send(over_receive_maximum())
        while True:
            p = read_packet(s, 10)
            if p.type == R.DISCONNECT:
                break
        told = time.monotonic()
        self.assertEqual(p.reason, 0x93)
        self.assertIsNone(read_packet(s, 10))  # the write side is shut down: a clean end
        metrics = scrape(port)
        self.assertEqual(metrics["mqgate_connections_lingering"], 1, metrics)
        # No longer one of the listener's connections (max_connections).
        self.assertEqual(metrics['mqgate_listener_connections{listener="default"}'], 0)
        # It keeps sending and never closes: the broker closes after about 2 s.
        ended = None
        while time.monotonic() - told < 10:
            try:
                s.send(FILLER)
            except (ConnectionResetError, BrokenPipeError):
                ended = time.monotonic() - told
                break
            time.sleep(0.005)
        self.assertIsNotNone(ended, "still open after 10 s")
        self.assertGreater(ended, 1.5)
        self.assertLess(ended, 4.0)
        b.wait_log(r'client="endless" .*socket closed after lingering \d+ ms: the linger time is '
                   r'over \(\d+ bytes read and dropped\)')
        self.assertEqual(scrape(port)["mqgate_connections_lingering"], 0)

    def test_lingering_sockets_do_not_count_against_max_connections(self):
        b = self.start_broker(config(listener_extra="max_connections = 1"))
        first = Stream(socket.create_connection(("127.0.0.1", b.port()), timeout=10))
        self.addCleanup(first.close)
        first.send(R.connect5("first", keepalive=0) + over_receive_maximum())
        while read_packet(first, 10).type != R.DISCONNECT:
            pass
        self.assertIsNone(read_packet(first, 10))  # the broker's FIN: it lingers now
        first.send(b"x")  # and is not quiet
        # "first" lingers (it has not closed); the one place is free again.
        second = R.RawClient5(b.port())
        self.addCleanup(second.close)
        self.assertEqual(second.connect("second").reason, 0)
        self.assertNotIn("max_connections (1) reached", b.log())

    def test_a_quiet_client_is_closed_once_nothing_comes_for_half_a_second(self):
        b = self.start_broker(config())
        s = Stream(socket.create_connection(("127.0.0.1", b.port()), timeout=10))
        self.addCleanup(s.close)
        s.send(R.connect5("quiet", keepalive=0) + over_receive_maximum())
        while read_packet(s, 10).type != R.DISCONNECT:
            pass
        self.assertIsNone(read_packet(s, 10))
        # It neither sends nor closes (a dead client, say): nothing it sent can be lost,
        # the broker closes after 0.5 s of quiet (the sweep: up to 0.25 s later).
        b.wait_log(r'client="quiet" .*socket closed after lingering \d+ ms: the client sent '
                   r'nothing more \(0 bytes read and dropped\)')
        ms = int(re.search(r'client="quiet" .*socket closed after lingering (\d+) ms',
                           b.log()).group(1))
        self.assertGreaterEqual(ms, 500)
        self.assertLess(ms, 2000)

    def test_shutdown_waits_for_lingering_sockets_at_most_the_linger_time(self):
        b = self.start_broker(config())
        sending = Stream(socket.create_connection(("127.0.0.1", b.port()), timeout=10))
        self.addCleanup(sending.close)
        sending.send(R.connect5("sending", keepalive=0))
        self.assertEqual(read_packet(sending, 10).type, R.CONNACK)
        idle = Stream(socket.create_connection(("127.0.0.1", b.port()), timeout=10))
        self.addCleanup(idle.close)
        idle.send(R.connect5("idle", keepalive=0))
        self.assertEqual(read_packet(idle, 10).type, R.CONNACK)
        # Neither client closes, one keeps sending: the broker stops within the linger
        # time anyway, and both read their DISCONNECT 0x8B (Server shutting down) and a
        # clean end.
        start = time.monotonic()
        b.signal(signal.SIGTERM)
        p = read_packet(idle, 10)
        self.assertEqual((p.type, p.reason), (R.DISCONNECT, 0x8B), p)
        self.assertIsNone(read_packet(idle, 10))
        while b.proc.poll() is None and time.monotonic() - start < 10:
            try:
                sending.send(FILLER)
            except (ConnectionResetError, BrokenPipeError):
                break
            time.sleep(0.005)
        b.proc.wait(10)
        self.assertLess(time.monotonic() - start, 3.5)
        self.assertEqual(b.proc.returncode, 0)
        p = read_packet(sending, 10)
        self.assertEqual((p.type, p.reason), (R.DISCONNECT, 0x8B), p)
        self.assertIsNone(read_packet(sending, 10))
        self.assertRegex(b.log(), r'client="sending" .*socket closed after lingering \d+ ms: '
                                  r'the linger time is over')

    def test_at_most_1024_sockets_linger(self):
        # A flood of clients provoking disconnects, never closing, and sending a byte now
        # and then (so that they do not go quiet): 1024 linger, the rest are closed at once.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 1024 + 40 + 200
        if soft < want:
            if hard != resource.RLIM_INFINITY and hard < want:
                self.skipTest(f"RLIMIT_NOFILE hard limit {hard} < {want}")
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        b = self.start_broker(config(http=True))
        port = http_port(b)
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        last_trickle = [time.monotonic()]

        def trickle(force=False):
            if not force and time.monotonic() - last_trickle[0] < 0.1:
                return
            last_trickle[0] = time.monotonic()
            for s in socks:
                try:
                    s.send(b"x")
                except OSError:  # one of those closed at once
                    pass

        # A CONNECT with Receive Maximum 0: refused with CONNACK 0x82, and closed.
        refused = R.connect5("", props=[(R.RECEIVE_MAXIMUM, 0)])
        start = time.monotonic()
        for _ in range(1024 + 40):
            s = socket.create_connection(("127.0.0.1", b.port()), timeout=10)
            s.sendall(refused)
            socks.append(s)
            trickle()
        pattern = re.compile(r"1024 closing connections linger already \(the most\); "
                             r"closing at once")
        while len(pattern.findall(b.log())) < 40 and time.monotonic() - start < 1.5:
            trickle()
            time.sleep(0.01)
        trickle(force=True)
        lingering = scrape(port)["mqgate_connections_lingering"]
        if time.monotonic() - start >= 1.5:
            self.skipTest("too slow to keep 1024 sockets lingering at once (2 s each)")
        self.assertEqual(lingering, 1024)
        self.assertEqual(len(pattern.findall(b.log())), 40)
        # Fine with a bystander: not counted, and the loop goes on.
        c = R.RawClient5(b.port())
        self.addCleanup(c.close)
        self.assertEqual(c.connect("bystander").reason, 0)


class LingeringTlsWebSocketTest(BrokerTestCase):
    """The same over TLS (the DISCONNECT, then close_notify) and WebSocket (the
    DISCONNECT, then a close frame)."""

    @classmethod
    def setUpClass(cls):
        cls.pki_dir = d = tempfile.mkdtemp(prefix="mqgate-linger-")
        cls.ca = pki.make_ca(d, key_type="ec")
        cls.server = pki.make_server(d, cn="localhost", key_type="ec")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki_dir, ignore_errors=True)

    def broker(self):
        return self.start_broker(config(
            f'[listeners.tls]\nbind = "127.0.0.1:0"\nssl = true\n'
            f'certfile = "{self.server.cert}"\nkeyfile = "{self.server.key}"\n'
            '[listeners.ws]\nbind = "127.0.0.1:0"\nwebsocket = true\n'))

    def test_tls_disconnect_then_close_notify_reach_a_client_that_keeps_sending(self):
        b = self.broker()
        for i in range(ROUNDS):
            s = TlsStream(b.port("tls"), self.ca.cert)
            try:
                told_to_go(self, s, f"tls-{i}")
            finally:
                s.close()
        b.wait_log(r'client="tls-4" .*socket closed after lingering \d+ ms: the client closed')

    def test_websocket_disconnect_then_close_frame_reach_a_client_that_keeps_sending(self):
        b = self.broker()
        for i in range(ROUNDS):
            s = WebSocketStream(b.port("ws"))
            try:
                told_to_go(self, s, f"ws-{i}")
                self.assertEqual(s.closed_with[:2], struct.pack("!H", 1000))
            finally:
                s.close()
        b.wait_log(r'client="ws-4" .*socket closed after lingering \d+ ms: the client closed')


class LingeringPahoTest(BrokerTestCase):
    def test_paho_reads_the_reason_code(self):
        # paho-mqtt 1.6 does not keep to the broker's Receive Maximum: a burst of QoS 2
        # PUBLISHes exceeds it, and paho is still writing when the DISCONNECT comes. Its
        # on_disconnect gets the reason code (a ReasonCodes), not a lost connection (7).
        b = self.start_broker(config())
        for i in range(ROUNDS):
            c = paho.Client(client_id=f"paho-{i}", protocol=paho.MQTTv5)
            c.max_inflight_messages_set(0)  # no limit of its own
            events = queue.Queue()
            c.on_connect = lambda cl, u, flags, rc, props=None: events.put(("connack", rc))
            c.on_disconnect = lambda cl, u, rc, props=None: events.put(("disconnect", rc))
            c.connect("127.0.0.1", b.port(), keepalive=60)
            c.loop_start()
            try:
                self.assertEqual(events.get(timeout=10)[0], "connack")
                for _ in range(300):
                    c.publish("linger/paho", b"p" * 2000, qos=2)
                kind, rc = events.get(timeout=10)
                self.assertEqual(kind, "disconnect")
                self.assertIsInstance(rc, paho.ReasonCodes, f"paho-{i}: on_disconnect rc {rc!r}")
                self.assertEqual(rc.value, 0x93, f"paho-{i}: {rc}")
            finally:
                c.loop_stop()
                c.disconnect()
