"""MQTT over WebSocket listeners (ws and wss), with real clients: paho-mqtt with
transport="websockets", MQTT.js from Node (test/js, installed with `npm ci`), MQTT.js's
browser bundle in headless Chromium, and a hand-written RFC 6455 client for the bad
cases (refused upgrades, bad frames, ping, the close handshake)."""
import base64
import http.server
import json
import os
import queue
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

import paho.mqtt.client as paho

import mqtt_raw as r
import pki
from mqgate_test import SOURCE_DIR, BrokerTestCase, plain_config, run_config_check

JS_DIR = os.path.join(SOURCE_DIR, "test", "js")
DOMAIN = "my.domain.name"
WS_LISTENER = """
[listeners.ws]
bind = "127.0.0.1:0"
websocket = true
"""


def node_client(*args, timeout=30):
    """Runs test/js/roundtrip.js; returns its JSON result."""
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "mqtt")):
        raise AssertionError("MQTT.js is not installed: run `npm ci` in test/js (scripts/test.sh does)")
    p = subprocess.run(["node", os.path.join(JS_DIR, "roundtrip.js"), *args], capture_output=True,
                       text=True, timeout=timeout, cwd=JS_DIR)
    lines = p.stdout.strip().splitlines()
    if not lines:
        raise AssertionError(f"roundtrip.js printed nothing (exit {p.returncode}): {p.stderr}")
    return json.loads(lines[-1])


class RawWebSocket:
    """Just enough of an RFC 6455 client to send what real clients never would."""

    def __init__(self, port, path="/mqtt", headers=None, protocol="mqtt"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if protocol:
            lines.append(f"Sec-WebSocket-Protocol: {protocol}")
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode()

    def upgrade(self, extra=b""):
        self.sock.sendall(self.request + extra)
        return self.read_head()

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head.decode(errors="replace")

    @staticmethod
    def frame(opcode, payload, fin=True, mask=True):
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            head = bytes([b0, (0x80 if mask else 0) | n])
        elif n < 65536:
            head = bytes([b0, (0x80 if mask else 0) | 126]) + struct.pack("!H", n)
        else:
            head = bytes([b0, (0x80 if mask else 0) | 127]) + struct.pack("!Q", n)
        if not mask:
            return head + payload
        key = os.urandom(4)
        return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))

    def send(self, opcode, payload, **kw):
        self.sock.sendall(self.frame(opcode, payload, **kw))

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def read_frame(self):
        """(opcode, payload) of the next server frame, which must not be masked."""
        self._fill(2)
        b0, b1 = self.buf[0], self.buf[1]
        assert b1 & 0x80 == 0, "server frames are not masked"
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._fill(4)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._fill(10)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._fill(off + n)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return b0 & 0x0F, payload

    def read_mqtt(self, size):
        """`size` bytes of the MQTT stream, across binary frames."""
        data = b""
        while len(data) < size:
            op, payload = self.read_frame()
            assert op in (0x2, 0x0), f"expected binary data, got opcode {op}"
            data += payload
        return data

    def closed(self, timeout=5):
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(4096)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def paho_ws(port, client_id, headers=None, tls=None):
    c = paho.Client(client_id=client_id, transport="websockets", protocol=paho.MQTTv311)
    c.ws_set_options(path="/mqtt", headers=headers)
    if tls:
        c.tls_set(**tls)
    events = queue.Queue()
    c.on_connect = lambda cl, u, f, rc: events.put(("connack", rc))
    c.on_message = lambda cl, u, m: events.put(("message", m.topic, m.payload))
    c.on_subscribe = lambda cl, u, mid, q: events.put(("suback", q))
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    return c, events


def wait_event(events, kind, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            e = events.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if e[0] == kind:
            return e
    raise AssertionError(f"no {kind} within {timeout}s")


class WebSocketPlainTest(BrokerTestCase):
    def start(self, ws_extra=""):
        return self.start_broker(plain_config(extra="", listener_extra="") + WS_LISTENER + ws_extra)

    def test_paho_over_websocket_talks_with_tcp_clients(self):
        b = self.start()
        c, events = paho_ws(b.port("ws"), "paho-ws")
        try:
            self.assertEqual(wait_event(events, "connack")[1], 0)
            c.subscribe("mixed/#", qos=1)
            wait_event(events, "suback")
            subprocess.run(["mosquitto_pub", "-p", str(b.port()), "-t", "mixed/from-tcp", "-q", "1",
                            "-m", "over tcp"], check=True, timeout=10)
            self.assertEqual(wait_event(events, "message")[1:], ("mixed/from-tcp", b"over tcp"))
            sub = subprocess.Popen(["mosquitto_sub", "-p", str(b.port()), "-t", "back/#", "-C", "1",
                                    "-W", "10", "-q", "1"], stdout=subprocess.PIPE, text=True)
            time.sleep(0.3)  # let the subscription land
            c.publish("back/x", b"over websocket", qos=1).wait_for_publish(5)
            out, _ = sub.communicate(timeout=15)
            self.assertEqual(out.strip(), "over websocket")
        finally:
            c.loop_stop()
            c.disconnect()
        self.assertRegex(b.log(), r'listener "ws" listening on 127\.0\.0\.1 port \d+ \(ws\)')

    def test_mqttjs_from_node_qos_0_1_2_and_a_message_over_many_frames(self):
        b = self.start()
        result = node_client(f"ws://127.0.0.1:{b.port('ws')}/mqtt", "--big", "300000")
        self.assertTrue(result["ok"], result)
        self.assertEqual(sorted(result["received"]), ["big:300000", "qos0", "qos1", "qos2"])

    def test_custom_path_and_allowed_origins(self):
        b = self.start('path = "/ws/mqtt"\norigins = ["https://app.example.com"]\n')
        port = b.port("ws")
        raw = RawWebSocket(port, path="/mqtt", headers={"Origin": "https://app.example.com"})
        self.assertIn(" 404 ", raw.upgrade().splitlines()[0])
        self.assertTrue(raw.closed())
        raw = RawWebSocket(port, path="/ws/mqtt", headers={"Origin": "https://evil.example.com"})
        self.assertIn(" 403 ", raw.upgrade().splitlines()[0])
        self.assertTrue(raw.closed())
        raw = RawWebSocket(port, path="/ws/mqtt", headers={"Origin": "https://app.example.com"})
        head = raw.upgrade()
        self.assertIn(" 101 ", head.splitlines()[0])
        raw.send(0x2, r.connect("origin-ok"))
        self.assertEqual(raw.read_mqtt(4), b"\x20\x02\x00\x00")
        raw.close()
        b.wait_log(r"WebSocket upgrade refused \(403\)")

    def test_refused_upgrades_get_an_http_error_and_the_connection_closes(self):
        b = self.start()
        port = b.port("ws")
        cases = [
            (RawWebSocket(port, protocol=None), " 400 "),           # no MQTT subprotocol
            (RawWebSocket(port, protocol="chat"), " 400 "),
            (RawWebSocket(port, path="/elsewhere"), " 404 "),
        ]
        for ws, status in cases:
            head = ws.upgrade()
            self.assertIn(status, head.splitlines()[0], head)
            self.assertTrue(ws.closed(), head)
            ws.close()
        # MQTT straight onto a WebSocket listener: an HTTP error, not a crash.
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(r.connect("plain-on-ws") + b"\r\n\r\n")
        self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 400 "))
        s.close()
        # A head that never ends: refused at the size limit (431), not buffered forever.
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 20000)
        self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 431 "))
        s.close()
        # The broker still serves.
        result = node_client(f"ws://127.0.0.1:{port}/mqtt")
        self.assertTrue(result["ok"], result)

    def test_packets_split_and_joined_across_frames_ping_and_close_handshake(self):
        b = self.start()
        port = b.port("ws")
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(b.port()), "-t", "wills/#", "-C", "1",
                                "-W", "15", "-v"], stdout=subprocess.PIPE, text=True)
        ws = RawWebSocket(port)
        connect = r.connect("framed", will_topic="wills/framed", will_payload=b"gone")
        # The CONNECT cut in three: two fragments of one message, with a ping between,
        # then a frame that ends the CONNECT and holds a whole PINGREQ too.
        head = ws.upgrade(extra=RawWebSocket.frame(0x2, connect[:3], fin=False))
        self.assertIn(" 101 ", head.splitlines()[0])
        self.assertIn("Sec-WebSocket-Protocol: mqtt", head)
        ws.send(0x9, b"are you there")
        ws.send(0x0, connect[3:7], fin=False)
        ws.send(0x0, connect[7:] + r.pingreq(), fin=True)
        self.assertEqual(ws.read_frame(), (0xA, b"are you there"))
        self.assertEqual(ws.read_mqtt(6), b"\x20\x02\x00\x00\xd0\x00")
        time.sleep(0.3)
        # Closing the WebSocket without DISCONNECT is a network close: the will goes.
        ws.send(0x8, struct.pack("!H", 1000) + b"bye")
        op, payload = ws.read_frame()
        self.assertEqual((op, payload[:2]), (0x8, struct.pack("!H", 1000)))
        self.assertTrue(ws.closed())
        out, _ = sub.communicate(timeout=20)
        self.assertEqual(out.strip(), "wills/framed gone")

    def test_bad_frames_close_with_the_matching_status(self):
        b = self.start()
        port = b.port("ws")
        cases = [
            (dict(opcode=0x1, payload=b"text"), 1003),                 # MQTT is binary
            (dict(opcode=0x2, payload=b"\x10", mask=False), 1002),     # unmasked client frame
            (dict(opcode=0x9, payload=b"p" * 126), 1002),              # control frame too big
            (dict(opcode=0x3, payload=b"x"), 1002),                    # reserved opcode
        ]
        for frame, code in cases:
            ws = RawWebSocket(port)
            self.assertIn(" 101 ", ws.upgrade().splitlines()[0])
            ws.send(frame["opcode"], frame["payload"], mask=frame.get("mask", True))
            op, payload = ws.read_frame()
            self.assertEqual(op, 0x8, frame)
            self.assertEqual(struct.unpack("!H", payload[:2])[0], code, frame)
            self.assertTrue(ws.closed())
            ws.close()
        b.wait_log(r"WebSocket protocol error \(1003\)")

    def test_malformed_mqtt_inside_frames_closes_that_connection_only(self):
        b = self.start()
        port = b.port("ws")
        good = RawWebSocket(port)
        good.upgrade()
        good.send(0x2, r.connect("good"))
        self.assertEqual(good.read_mqtt(4), b"\x20\x02\x00\x00")
        bad = RawWebSocket(port)
        bad.upgrade()
        bad.send(0x2, b"\xf0\x00")  # reserved packet type
        self.assertTrue(bad.closed())
        good.send(0x2, r.pingreq())
        self.assertEqual(good.read_mqtt(2), b"\xd0\x00")

    def test_metrics_count_upgrades_refusals_and_protocol_errors(self):
        b = self.start_broker(plain_config(extra='[http]\nbind = "127.0.0.1:0"\n') + WS_LISTENER)
        port = b.port("ws")
        ok = RawWebSocket(port)
        self.assertIn(" 101 ", ok.upgrade().splitlines()[0])
        refused = RawWebSocket(port, path="/nope")
        self.assertIn(" 404 ", refused.upgrade().splitlines()[0])
        bad = RawWebSocket(port)
        bad.upgrade()
        bad.send(0x1, b"text")
        self.assertTrue(bad.closed())
        http_port = int(re.search(r"http endpoint listening on \S+ port (\d+)", b.log()).group(1))
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        self.assertIn('mqgate_websocket_upgrades_total{listener="ws",result="upgraded"} 2', text)
        self.assertIn('mqgate_websocket_upgrades_total{listener="ws",result="refused"} 1', text)
        self.assertIn('mqgate_websocket_protocol_errors_total{listener="ws"} 1', text)
        self.assertNotIn('listener="default",result=', text)  # plain listeners have none

    def test_an_upgrade_that_never_completes_is_closed_at_connect_timeout(self):
        b = self.start_broker(plain_config(extra="[limits]\nconnect_timeout = 1\n") + WS_LISTENER)
        slow = socket.create_connection(("127.0.0.1", b.port("ws")), timeout=10)
        slow.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        upgraded = RawWebSocket(b.port("ws"))
        upgraded.upgrade()  # upgraded, but no CONNECT
        slow.settimeout(20)  # far past connect_timeout: the broker closes first
        self.assertEqual(slow.recv(100), b"")
        self.assertTrue(upgraded.closed(timeout=20))
        b.wait_log(r"no CONNECT|connect_timeout|CONNECT within")

    def test_config_keys(self):
        rc, out = run_config_check(plain_config(listener_extra='path = "/mqtt"'), self.tmp)
        self.assertNotEqual(rc, 0)
        self.assertRegex(out, r"check\.toml:\d+:\d+: listeners\.default\.path: is a WebSocket setting: "
                              r"it needs websocket = true")
        rc, out = run_config_check(plain_config(listener_extra='websocket = true\npath = "mqtt"'), self.tmp)
        self.assertIn('listeners.default.path: expected a URL path such as "/mqtt"', out)
        rc, out = run_config_check(plain_config(listener_extra='websocket = true\norigins = ["a, b"]'), self.tmp)
        self.assertIn("listeners.default.origins: expected origins", out)
        rc, out = run_config_check(plain_config(listener_extra='websocket = true\nwebsocket_path = "/x"'), self.tmp)
        self.assertRegex(out, r"listeners\.default\.websocket_path: unknown key \(expected one of: .*websocket")


class WebSocketBrowserTest(BrokerTestCase):
    def test_mqttjs_browser_bundle_in_headless_chromium(self):
        chromium = shutil.which("chromium")
        self.assertIsNotNone(chromium, "Debian's chromium is needed (scripts/deps.sh test installs it)")

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=JS_DIR, **kw)

            def log_message(self, *a):
                pass

        web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        threading.Thread(target=web.serve_forever, daemon=True).start()
        origin = f"http://127.0.0.1:{web.server_port}"
        b = self.start_broker(plain_config() + WS_LISTENER + f'origins = ["{origin}"]\n')
        out = paho.Client(client_id="watcher", protocol=paho.MQTTv311)
        got = queue.Queue()
        out.on_message = lambda cl, u, m: got.put((m.topic, m.payload.decode()))
        out.connect("127.0.0.1", b.port())
        out.subscribe([("browser/out", 1), ("browser/echo", 1)])
        out.loop_start()
        profile = tempfile.mkdtemp(prefix="mqgate-chromium-")
        url = f"{origin}/browser.html?url=ws://127.0.0.1:{b.port('ws')}/mqtt&id=chromium-1"
        browser = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                                    "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
                                    url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            topic, text = got.get(timeout=60)
            self.assertEqual(topic, "browser/out")
            self.assertRegex(text, r"^hello from (Headless)?Chrome/\d+")
            out.publish("browser/in", "ping from python", qos=1)
            self.assertEqual(got.get(timeout=20), ("browser/echo", "echo:ping from python"))
        finally:
            browser.kill()
            browser.wait(timeout=10)
            out.loop_stop()
            out.disconnect()
            web.shutdown()
            shutil.rmtree(profile, ignore_errors=True)
        b.wait_log(r"client chromium-1 .*connected|chromium-1")


class WebSocketTlsTest(BrokerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki_dir = tempfile.mkdtemp(prefix="mqgate-wss-")
        pki.make_ca(cls.pki_dir, key_type="ec", cn=DOMAIN)
        pki.make_server(cls.pki_dir, cn="localhost", key_type="ec", san_ip=("127.0.0.1",))
        pki.make_device(cls.pki_dir, "wssDevice", DOMAIN, key_type="ec")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki_dir, ignore_errors=True)

    def config(self):
        d = self.pki_dir
        return f"""
log_level = "debug"
[listeners.default]
bind = "127.0.0.1:0"
[listeners.wss]
bind = "127.0.0.1:0"
websocket = true
ssl = true
certfile = "{d}/server.crt"
keyfile = "{d}/server.key"
cafile = "{d}/ca.crt"
client_cert = "required"
plugins = ["certauth"]
[plugins.certauth]
uri_domain = "{DOMAIN}"
"""

    def test_mqttjs_over_wss_with_a_client_certificate_and_certauth(self):
        b = self.start_broker(self.config())
        d = self.pki_dir
        url = f"wss://127.0.0.1:{b.port('wss')}/mqtt"
        tls = ["--ca", f"{d}/ca.crt", "--cert", f"{d}/wssDevice.crt", "--key", f"{d}/wssDevice.key"]
        result = node_client(url, *tls, "--id", "wssDevice", "--big", "100000")
        self.assertTrue(result["ok"], result)
        self.assertRegex(b.log(), r'listener "wss" listening on 127\.0\.0\.1 port \d+ \(wss\)')
        # The certificate names the device: another client id is refused, as on mqtts.
        result = node_client(url, *tls, "--id", "someoneElse")
        self.assertFalse(result["ok"], result)
        self.assertRegex(result.get("error", ""), r"[Nn]ot authori[sz]ed|Connection refused")

    def test_paho_over_wss_and_no_certificate_is_refused(self):
        b = self.start_broker(self.config())
        d = self.pki_dir
        c, events = paho_ws(b.port("wss"), "wssDevice",
                            tls=dict(ca_certs=f"{d}/ca.crt", certfile=f"{d}/wssDevice.crt",
                                     keyfile=f"{d}/wssDevice.key"))
        try:
            self.assertEqual(wait_event(events, "connack")[1], 0)
            c.subscribe("devices/wssDevice/#", qos=1)
            wait_event(events, "suback")
            c.publish("devices/wssDevice/x", b"hi", qos=1)
            self.assertEqual(wait_event(events, "message")[1:], ("devices/wssDevice/x", b"hi"))
        finally:
            c.loop_stop()
            c.disconnect()
        result = node_client(f"wss://127.0.0.1:{b.port('wss')}/mqtt", "--ca", f"{d}/ca.crt", "--id", "anon")
        self.assertFalse(result["ok"], result)


if __name__ == "__main__":
    unittest.main()
