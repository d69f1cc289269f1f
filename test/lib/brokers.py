"""Broker factory for the MQTT conformance tests: the same test runs against mqgate or,
with MQGATE_TEST_AGAINST=mosquitto, against Debian's Mosquitto (the reference used to
validate the tests themselves).

    class T(brokers.MqttTestCase):
        broker_settings = {"max_inflight_messages": 2}   # per class; or self.start_broker(...)
        def test_x(self):
            sub = self.paho("sub"); sub.subscribe("a/#", 1)
            raw = self.raw_connect("pub"); raw.publish("a/b", b"x", qos=1)
            self.assertEqual(sub.get().payload, b"x")

Settings (mqgate TOML key -> Mosquitto option):
    sys_interval            -> sys_interval            (0 = off)
    max_packet_size         -> max_packet_size         (whole packet; bigger closes the connection)
    max_inflight_messages   -> max_inflight_messages
    max_queued_messages     -> max_queued_messages
    max_client_id_length    -> (no Mosquitto equivalent; tests needing it skip on Mosquitto)
    max_keepalive           -> max_keepalive
    max_queued_bytes        -> max_queued_bytes
    ipv6=True               -> listen on [::1] instead of 127.0.0.1
    log_level               -> log_type
    websocket=True          -> a second listener for MQTT over WebSocket (path /mqtt) on
                               broker.ws_port (mqgate `websocket = true`, Mosquitto
                               `protocol websockets`)
"""
import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
from collections import namedtuple

import mqgate_test
import mqtt_raw

AGAINST = (os.environ.get("MQGATE_TEST_AGAINST") or "mqgate").strip().lower()
if AGAINST not in ("mqgate", "mosquitto"):
    raise RuntimeError(f"MQGATE_TEST_AGAINST must be mqgate or mosquitto, not {AGAINST!r}")
MOSQUITTO = AGAINST == "mosquitto"
MOSQUITTO_BIN = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")

DEFAULTS = {
    "sys_interval": 10,
    "max_packet_size": None,
    "max_inflight_messages": None,
    "max_queued_messages": None,
    "max_client_id_length": None,
    "max_keepalive": None,
    "max_queued_bytes": None,
    "session_expiry": None,  # mqgate's [limits] session_expiry (tests using it are mqgate-only)
    "ipv6": False,
    "log_level": "debug",
    "websocket": False,
}


# MQGATE_TEST_RUN_DEVIATIONS=1 runs the tests marked skip_if_mosquitto against Mosquitto
# anyway (to see them fail where, and only where, Mosquitto deviates).
RUN_DEVIATIONS = os.environ.get("MQGATE_TEST_RUN_DEVIATIONS") == "1"


def skip_if_mosquitto(reason):
    """Marks a test whose expectation (taken from the spec or from mqgate's documented
    behaviour) Mosquitto 2.0.11 does not meet; `reason` says why."""
    return unittest.skipIf(MOSQUITTO and not RUN_DEVIATIONS, "Mosquitto deviates: " + reason)


def has_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s.bind(("::1", 0))
            return True
        finally:
            s.close()
    except OSError:
        return False


def free_port(host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def port_accepts(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class MosquittoBroker:
    """/usr/sbin/mosquitto with a config equivalent to the mqgate settings."""

    def __init__(self, workdir, settings, timeout=10.0):
        self.dir = workdir
        self.settings = settings
        self.host = "::1" if settings["ipv6"] else "127.0.0.1"
        self.log_path = os.path.join(workdir, "mosquitto.log")
        self.proc = None
        self.ws_port = None
        for _attempt in range(5):
            self.port = free_port(self.host)
            if settings["websocket"]:
                self.ws_port = free_port(self.host)
            conf = os.path.join(workdir, "mosquitto.conf")
            with open(conf, "w") as f:
                f.write(self._config(settings))
            self._log = open(self.log_path, "wb")
            self.proc = subprocess.Popen([MOSQUITTO_BIN, "-c", conf], stdout=self._log,
                                         stderr=subprocess.STDOUT, cwd=workdir)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if port_accepts(self.host, self.port):
                    return
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.close()
                raise mqgate_test.BrokerError(f"mosquitto did not listen in {timeout}s:\n"
                                              + self.log())
            self._log.close()
            if "Address already in use" not in self.log():
                raise mqgate_test.BrokerError(f"mosquitto exited with {self.proc.returncode}:\n"
                                              + self.log())
        raise mqgate_test.BrokerError("mosquitto could not get a free port")

    def _config(self, s):
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence false",
            "log_dest stdout",
            "log_timestamp_format %H:%M:%S",
            f"sys_interval {s['sys_interval']}",
        ]
        if os.geteuid() == 0:
            # stay root: the temp dir (0700) must stay readable for SIGHUP reloads
            lines.append("user root")
        if s["log_level"] == "debug":
            lines.append("log_type all")
        elif s["log_level"] == "info":
            lines += ["log_type error", "log_type warning", "log_type notice",
                      "log_type information"]
        else:
            lines += ["log_type error", "log_type warning"]
        if s["max_packet_size"] is not None:
            lines.append(f"max_packet_size {s['max_packet_size']}")
        if s["max_inflight_messages"] is not None:
            lines.append(f"max_inflight_messages {s['max_inflight_messages']}")
        if s["max_queued_messages"] is not None:
            lines.append(f"max_queued_messages {s['max_queued_messages']}")
        if s["max_keepalive"] is not None:
            lines.append(f"max_keepalive {s['max_keepalive']}")
        if s["max_queued_bytes"] is not None:
            lines.append(f"max_queued_bytes {s['max_queued_bytes']}")
        if s["websocket"]:
            lines += [f"listener {self.ws_port} {self.host}", "protocol websockets"]
        return "\n".join(lines) + "\n"

    def reload(self, **changes):
        """Rewrites the config with `changes` and sends SIGHUP (a config reload)."""
        self.settings = dict(self.settings, **changes)
        with open(os.path.join(self.dir, "mosquitto.conf"), "w") as f:
            f.write(self._config(self.settings))
        self.proc.send_signal(signal.SIGHUP)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self._log.close()


class MqgateBroker:
    """mqgate via mqgate_test.Broker, with a config built from the settings."""

    def __init__(self, workdir, settings, timeout=10.0):
        self.dir = workdir
        self.settings = settings
        self.impl = mqgate_test.Broker(self._config(settings), workdir=workdir, timeout=timeout)
        self.port = self.impl.port("default")
        self.ws_port = self.impl.port("ws") if settings["websocket"] else None
        self.host = "::1" if settings["ipv6"] else "127.0.0.1"

    @staticmethod
    def _config(settings):
        limits = []
        for key in ("max_packet_size", "max_inflight_messages", "max_queued_messages",
                    "max_client_id_length", "max_keepalive", "session_expiry",
                    "max_queued_bytes"):
            if settings[key] is not None:
                limits.append(f"{key} = {int(settings[key])}")
        bind = "[::1]:0" if settings["ipv6"] else "127.0.0.1:0"
        config = f'log_level = "{settings["log_level"]}"\n'
        config += f"sys_interval = {int(settings['sys_interval'])}\n"
        if limits:
            config += "\n[limits]\n" + "\n".join(limits) + "\n"
        config += f'\n[listeners.default]\nbind = "{bind}"\n'
        if settings["websocket"]:
            config += f'\n[listeners.ws]\nbind = "{bind}"\nwebsocket = true\n'
        return config

    def reload(self, **changes):
        """Rewrites the config with `changes` and sends SIGHUP (a config reload)."""
        self.settings = dict(self.settings, **changes)
        with open(self.impl.config_path, "w") as f:
            f.write(self._config(self.settings))
        self.impl.signal(signal.SIGHUP)

    def log(self):
        return self.impl.log()

    def close(self):
        """Stops mqgate; raises BrokerError on a non-zero exit or a sanitizer report."""
        rc = self.impl.stop()
        if rc not in (0, None):
            raise mqgate_test.BrokerError(f"mqgate exited with {rc}:\n{self.impl.log()[-4000:]}")


def start_broker(workdir, **settings):
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown broker settings {sorted(unknown)}")
    merged = dict(DEFAULTS, **settings)
    os.makedirs(workdir, exist_ok=True)
    if MOSQUITTO:
        return MosquittoBroker(workdir, merged)
    return MqgateBroker(workdir, merged)


# -- paho-mqtt client wrapper -----------------------------------------------------------
Message = namedtuple("Message", "topic payload qos retain dup mid")


class PahoClient:
    """paho-mqtt 1.6 (MQTT 3.1.1) with a background loop and blocking helpers."""

    def __init__(self, host, port, client_id="", clean_session=True, keepalive=60,
                 will=None, username=None, password=None):
        import paho.mqtt.client as mqtt
        self.mqtt = mqtt
        self.host, self.port, self.keepalive = host, port, keepalive
        self.c = mqtt.Client(client_id=client_id, clean_session=clean_session,
                             protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        if will:
            self.c.will_set(*will)
        if username is not None:
            self.c.username_pw_set(username, password)
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.disconnects = queue.Queue()
        self._acks = {}
        self._cond = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_disconnect = self._on_disconnect
        self.started = False

    def _on_connect(self, client, userdata, flags, rc):
        self.connacks.put((rc, flags))

    def _on_message(self, client, userdata, msg):
        self.messages.put(Message(msg.topic, msg.payload, msg.qos, bool(msg.retain),
                                  bool(msg.dup), msg.mid))

    def _on_subscribe(self, client, userdata, mid, granted):
        with self._cond:
            self._acks[mid] = list(granted)
            self._cond.notify_all()

    def _on_unsubscribe(self, client, userdata, mid):
        with self._cond:
            self._acks[mid] = True
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, rc):
        self.disconnects.put(rc)

    def _wait_ack(self, mid, timeout):
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._acks, timeout):
                raise AssertionError(f"no SUBACK/UNSUBACK for mid {mid} in {timeout}s")
            return self._acks.pop(mid)

    def connect(self, timeout=5.0):
        """Connects; returns (return code, flags dict). Fails if no CONNACK in time."""
        self.c.connect(self.host, self.port, self.keepalive)
        self.c.loop_start()
        self.started = True
        try:
            return self.connacks.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no CONNACK in {timeout}s")

    def subscribe(self, topic, qos=0, timeout=5.0):
        """topic: a filter, or a list of (filter, qos). Returns the granted QoS list."""
        if isinstance(topic, list):
            rc, mid = self.c.subscribe(topic)
        else:
            rc, mid = self.c.subscribe(topic, qos)
        assert rc == 0, f"subscribe failed locally: {rc}"
        return self._wait_ack(mid, timeout)

    def unsubscribe(self, topic, timeout=5.0):
        rc, mid = self.c.unsubscribe(topic)
        assert rc == 0, f"unsubscribe failed locally: {rc}"
        self._wait_ack(mid, timeout)

    def publish(self, topic, payload=b"", qos=0, retain=False, timeout=5.0):
        """Publishes and waits until the QoS flow is complete (sent, for QoS 0)."""
        info = self.c.publish(topic, payload, qos, retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise AssertionError(f"publish to {topic!r} (QoS {qos}) not completed in {timeout}s")
        return info.mid

    def get(self, timeout=5.0):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout}s")

    def get_n(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            try:
                out.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                shown = out if len(out) <= 10 else out[:3] + ["..."] + out[-5:]
                raise AssertionError(f"got {len(out)} of {n} messages within {timeout}s: "
                                     f"{shown}")
        return out

    def drain(self, wait=0.5):
        """All messages arriving until none came for `wait` seconds."""
        out = []
        while True:
            try:
                out.append(self.messages.get(timeout=wait))
            except queue.Empty:
                return out

    def expect_nothing(self, wait=0.5):
        got = self.drain(wait)
        if got:
            raise AssertionError(f"unexpected messages: {got}")

    def disconnect(self, timeout=5.0):
        if not self.started:
            return
        self.c.disconnect()
        try:
            self.disconnects.get(timeout=timeout)
        except queue.Empty:
            pass
        self.c.loop_stop()
        self.started = False

    def kill(self):
        """Drops the TCP connection without DISCONNECT (an abrupt close)."""
        if self.started:
            self.c.loop_stop()
            self.started = False
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        try:
            self.disconnect(timeout=1.0)
        except Exception:
            pass
        try:
            self.c.loop_stop()
        except Exception:
            pass


# -- test case base ---------------------------------------------------------------------
class MqttTestCase(unittest.TestCase):
    """Starts one broker per test (self.broker) with `broker_settings` unless
    `auto_broker` is False; cleans up clients, brokers and the temp dir afterwards."""

    broker_settings = {}
    auto_broker = True

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mqgate-mqtt-")
        self._clients = []
        self._brokers = []
        self._procs = []
        self.broker = self.start_broker(**self.broker_settings) if self.auto_broker else None

    def tearDown(self):
        for c in reversed(self._clients):
            try:
                c.close()
            except Exception:
                pass
        for p in self._procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        errors = []
        for b in self._brokers:
            try:
                b.close()
            except mqgate_test.BrokerError as e:
                errors.append(str(e))
        shutil.rmtree(self.tmp, ignore_errors=True)
        if errors:
            self.fail("\n".join(errors))

    @contextlib.contextmanager
    def case(self, **info):
        """Labels one case of a looped test in its failure message. (Not subTest: the
        runner counts each failing subtest as a failure of its own.)"""
        try:
            yield
        except AssertionError as e:
            raise AssertionError(f"[{', '.join(f'{k}={v!r}' for k, v in info.items())}] "
                                 f"{e}") from None

    # -- brokers ------------------------------------------------------------------------
    def start_broker(self, **settings):
        workdir = os.path.join(self.tmp, f"broker{len(self._brokers)}")
        b = start_broker(workdir, **settings)
        self._brokers.append(b)
        return b

    # -- raw clients --------------------------------------------------------------------
    def raw(self, broker=None, timeout=5.0):
        """An unconnected raw TCP client (no CONNECT sent)."""
        b = broker or self.broker
        c = mqtt_raw.RawClient(b.port, host=b.host, timeout=timeout)
        self._clients.append(c)
        return c

    def raw_connect(self, client_id="", clean=True, keepalive=60, broker=None,
                    expect_session_present=None, **kw):
        """A raw client that sent CONNECT and got CONNACK with return code 0."""
        c = self.raw(broker)
        ack = c.connect(client_id, clean=clean, keepalive=keepalive, **kw)
        self.assertEqual(ack.return_code, 0, f"CONNACK for {client_id!r}: {ack!r}")
        if expect_session_present is not None:
            self.assertEqual(ack.session_present, expect_session_present, repr(ack))
        c.connack = ack
        return c

    def assertClosed(self, client, timeout=5.0, msg=""):
        """The broker closes the raw connection within timeout (packets before are ok,
        except a CONNACK with return code 0 when `msg` says so: check discarded)."""
        if not client.closed_by_peer(timeout):
            self.fail(f"broker did not close the connection within {timeout}s. {msg}")

    def assertOpen(self, client, msg=""):
        """The raw connection still works: PINGREQ gets PINGRESP (PUBLISHes in between
        are kept in client.pending)."""
        try:
            client.send(mqtt_raw.pingreq())
            while True:
                p = client.read_packet(5.0)
                if p.type == mqtt_raw.PINGRESP:
                    return
                client.pending.append(p)
        except (mqtt_raw.ConnectionClosed, mqtt_raw.NoPacket, OSError) as e:
            self.fail(f"connection no longer works ({e}). {msg}")

    # -- paho clients -------------------------------------------------------------------
    def paho(self, client_id="", clean_session=True, keepalive=60, will=None, broker=None,
             connect=True, **kw):
        """A paho-mqtt client, connected (CONNACK rc 0 asserted) unless connect=False."""
        b = broker or self.broker
        c = PahoClient(b.host, b.port, client_id, clean_session=clean_session,
                       keepalive=keepalive, will=will, **kw)
        self._clients.append(c)
        if connect:
            rc, flags = c.connect()
            self.assertEqual(rc, 0, f"paho CONNACK rc for {client_id!r}")
            c.flags = flags
        return c

    # -- mosquitto_pub / mosquitto_sub --------------------------------------------------
    def cli(self, tool, *args, broker=None):
        """Argument list for mosquitto_pub/_sub against the broker (MQTT 3.1.1)."""
        b = broker or self.broker
        # line-buffered stdout, so tests can follow mosquitto_sub -d as it happens
        return ["/usr/bin/stdbuf", "-oL", f"/usr/bin/{tool}", "-h", b.host, "-p", str(b.port), "-V", "mqttv311", *args]

    def run_cli(self, tool, *args, timeout=10, broker=None):
        p = subprocess.run(self.cli(tool, *args, broker=broker), capture_output=True,
                           timeout=timeout)
        return p

    def start_cli(self, tool, *args, broker=None):
        p = subprocess.Popen(self.cli(tool, *args, broker=broker), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self._procs.append(p)
        return p


class LineReader:
    """Reads a subprocess pipe line by line with deadlines (no blocking forever)."""

    def __init__(self, pipe):
        self.fd = pipe.fileno()
        self.buf = b""
        self.lines = []
        self.pos = 0
        self.eof = False

    def _read(self, timeout):
        import select
        if self.eof:
            return False
        r, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not r:
            return False
        chunk = os.read(self.fd, 65536)
        if not chunk:
            self.eof = True
            if self.buf:
                self.lines.append(self.buf.decode(errors="replace"))
                self.buf = b""
            return False
        self.buf += chunk
        *done, self.buf = self.buf.split(b"\n")
        self.lines += [d.decode(errors="replace") for d in done]
        return True

    def wait_for(self, text, timeout=5.0):
        """Waits for a line containing `text`; returns it and moves past it."""
        deadline = time.monotonic() + timeout
        while True:
            while self.pos < len(self.lines):
                line = self.lines[self.pos]
                self.pos += 1
                if text in line:
                    return line
            if self.eof or time.monotonic() >= deadline:
                raise AssertionError(f"no line with {text!r} in {timeout}s: {self.lines}")
            self._read(deadline - time.monotonic())

    def rest(self, timeout=5.0):
        """The lines after the last wait_for, up to EOF (or the timeout)."""
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self._read(deadline - time.monotonic())
        out = self.lines[self.pos:]
        self.pos = len(self.lines)
        return out

    def text(self):
        return "\n".join(self.lines)


def wait_until(predicate, timeout=5.0, interval=0.02):
    """Polls predicate until true; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)
