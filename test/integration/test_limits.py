"""Resource limits in [limits]: max_subscriptions_per_client (SUBACK 0x80 beyond it),
max_persistent_sessions (CONNACK 3 for a new persistent session beyond it),
max_retained_messages / max_retained_bytes (a retained PUBLISH beyond them is forwarded
but not stored), their $SYS counters, log lines and configuration checks.

Mosquitto 2.0.11 has none of these limits, so these tests run against mqgate only; the
clients are hand-built MQTT (test/lib/mqtt_raw.py), paho-mqtt and mosquitto_sub/_pub."""
import re
import signal
import subprocess
import time
import unittest

import mqtt_raw as R
from brokers import LineReader, PahoClient
from mqgate_test import BrokerTestCase, run_config_check


def limits_config(limits="", sys_interval=0, log_level="info"):
    return (f'log_level = "{log_level}"\nsys_interval = {sys_interval}\n'
            f'[limits]\n{limits}\n'
            '[listeners.default]\nbind = "127.0.0.1:0"\n')


class LimitsCase(BrokerTestCase):
    def setUp(self):
        super().setUp()
        self._open = []

    def tearDown(self):
        for c in self._open:
            try:
                c.close()
            except Exception:
                pass
        super().tearDown()

    def start(self, limits="", sys_interval=0):
        self.b = self.start_broker(limits_config(limits, sys_interval))
        return self.b

    def raw(self):
        c = R.RawClient(self.b.port(), timeout=10)
        self._open.append(c)
        return c

    def connect(self, client_id="", clean=True, expect=0, session_present=None, **kw):
        c = self.raw()
        ack = c.connect(client_id, clean=clean, **kw)
        self.assertEqual(ack.return_code, expect, f"CONNACK for {client_id!r}: {ack!r}")
        if session_present is not None:
            self.assertEqual(ack.session_present, session_present, repr(ack))
        if expect != 0:
            self.assertFalse(ack.session_present, repr(ack))
            self.assertTrue(c.closed_by_peer(5), "refused connection left open")
        return c

    def publish(self, topic, payload, qos=1, retain=False):
        p = self.connect("")
        p.publish(topic, payload, qos=qos, retain=retain)
        p.disconnect()

    def publishes(self, c, first=5.0, wait=0.4):
        got = [p for p in c.pending if p.type == R.PUBLISH]
        c.pending.clear()
        got += [p for p in c.read_all(wait, first=None if got else first) if p.type == R.PUBLISH]
        for p in got:
            c.ack(p)
        return got

    def retained_now(self, flt):
        """{topic: payload} of the retained messages a new subscriber to flt gets."""
        c = self.connect("")
        c.subscribe([(flt, 1)])
        got = self.publishes(c, first=1.0, wait=0.4)
        c.disconnect()
        for p in got:
            self.assertTrue(p.retain, f"not a retained copy: {p!r}")
        return {p.topic: p.payload for p in got}

    def sys_watcher(self, topics):
        w = self.connect("")
        w.subscribe([(t, 0) for t in topics])
        return w

    def sys_value(self, w, topic, pred=lambda v: True, timeout=10.0):
        """Reads $SYS updates until `topic`'s value satisfies pred; returns it."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                p = w.next_packet(timeout=max(0.1, deadline - time.monotonic()))
            except R.NoPacket:
                break
            if p.type == R.PUBLISH and p.topic == topic:
                last = int(re.match(rb"\d+", p.payload).group())
                if pred(last):
                    return last
        self.fail(f"{topic} never satisfied the condition in {timeout}s (last value {last})")

    def sys_last(self, w, topic, wait):
        """The last value of `topic` seen in the next `wait` seconds (updates come every
        sys_interval)."""
        last = None
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                p = w.next_packet(timeout=max(0.05, deadline - time.monotonic()))
            except R.NoPacket:
                break
            if p.type == R.PUBLISH and p.topic == topic:
                last = int(p.payload)
        return last

    def log_lines(self, *needles, level=None):
        out = []
        for line in self.b.log().splitlines():
            if all(n in line for n in needles) and (level is None or re.search(rf"\b{level}", line)):
                out.append(line)
        return out


class SubscriptionLimitTest(LimitsCase):
    def test_filters_beyond_the_limit_get_0x80(self):
        b = self.start("max_subscriptions_per_client = 5", sys_interval=1)
        w = self.sys_watcher(["$SYS/broker/subscriptions/refused"])
        self.assertEqual(self.sys_value(w, "$SYS/broker/subscriptions/refused"), 0)
        c = self.connect("subs")
        qos = [0, 1, 2, 1, 0, 2, 1, 0]
        granted = c.subscribe([(f"f/{i}", q) for i, q in enumerate(qos)])
        self.assertEqual(granted, qos[:5] + [0x80] * 3)
        b.wait_log(r'client="subs" .*subscriptions? refused')
        lines = self.log_lines('client="subs"', "refused (0x80)", level="WARN")
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("3 subscriptions refused (0x80)", lines[0])
        self.assertIn("max_subscriptions_per_client", lines[0])
        # The granted filters work, the refused ones do not exist.
        for i in range(8):
            self.publish(f"f/{i}", f"m{i}".encode(), qos=1)
        self.assertEqual(sorted(p.topic for p in self.publishes(c)), [f"f/{i}" for i in range(5)])
        # A re-subscription to a filter the client has succeeds at the limit, with the new
        # QoS; a new filter in the same packet does not.
        self.assertEqual(c.subscribe([("f/0", 2), ("f/new", 1)], packet_id=2), [2, 0x80])
        self.publish("f/0", b"upgraded", qos=2)
        got = self.publishes(c)
        self.assertEqual([(p.topic, p.qos) for p in got], [("f/0", 2)])
        b.wait_log(r'client="subs" .*refused \(0x80\)', count=2)
        self.assertIn("1 subscription refused (0x80)",
                      self.log_lines('client="subs"', "refused (0x80)")[1])
        # Unsubscribe one: room for exactly one more.
        c.send(R.unsubscribe(3, ["f/2"]))
        c.expect(R.UNSUBACK)
        self.assertEqual(c.subscribe([("g/1", 1), ("g/2", 1)], packet_id=4), [1, 0x80])
        self.publish("g/1", b"new one")
        self.publish("f/2", b"gone")
        self.assertEqual([p.payload for p in self.publishes(c)], [b"new one"])
        # A SUBSCRIBE wholly within the limit logs nothing.
        self.assertEqual(c.subscribe([("f/1", 1)], packet_id=5), [1])
        # The limit is per client: another client has its own five.
        other = PahoClient("127.0.0.1", b.port(), "other")
        self._open.append(other)
        self.assertEqual(other.connect()[0], 0)
        self.assertEqual(other.subscribe([(f"o/{i}", 1) for i in range(6)]),
                         [1, 1, 1, 1, 1, 0x80])
        other.disconnect()
        # 3 + 1 + 1 + 1 filters refused in all; one line per SUBSCRIBE packet with refusals.
        self.assertEqual(self.sys_value(w, "$SYS/broker/subscriptions/refused", lambda v: v >= 6), 6)
        self.assertEqual(len(self.log_lines("refused (0x80)", level="WARN")), 4, b.log()[-3000:])
        self.assertTrue(c.ping())

    def test_limit_survives_a_persistent_session_reconnect(self):
        self.start("max_subscriptions_per_client = 3")
        c = self.connect("keeper", clean=False)
        self.assertEqual(c.subscribe([("k/1", 1), ("k/2", 1), ("k/3", 1)]), [1, 1, 1])
        c.disconnect()
        time.sleep(0.1)
        c = self.connect("keeper", clean=False, session_present=True)
        self.assertEqual(c.subscribe([("k/4", 1), ("k/3", 0)]), [0x80, 0])
        c.disconnect()
        time.sleep(0.1)
        # A clean session starts empty.
        c = self.connect("keeper", clean=True, session_present=False)
        self.assertEqual(c.subscribe([("k/4", 1), ("k/5", 1), ("k/6", 1), ("k/7", 1)]),
                         [1, 1, 1, 0x80])

    def test_sighup_lowers_the_limit(self):
        b = self.start("max_subscriptions_per_client = 5")
        c = self.connect("reload")
        self.assertEqual(c.subscribe([("r/1", 0), ("r/2", 0), ("r/3", 0)]), [0, 0, 0])
        with open(b.config_path, "w") as f:
            f.write(limits_config("max_subscriptions_per_client = 2"))
        b.signal(signal.SIGHUP)
        b.wait_log(r"reload: log_level")
        self.assertEqual(c.subscribe([("r/4", 0), ("r/1", 1)], packet_id=2), [0x80, 1])

    def test_65000_filters_in_one_subscribe_against_the_default_limit(self):
        b = self.start("max_packet_size = 2097152")
        c = self.connect("bulk")
        n = 65000
        packet = R.subscribe(7, [(f"bulk/{i:05d}", 1) for i in range(n)])
        self.assertGreater(len(packet), 800000)
        t0 = time.monotonic()
        c.send(packet)
        ack = c.expect(R.SUBACK, timeout=30)
        elapsed = time.monotonic() - t0
        self.assertEqual(ack.packet_id, 7)
        self.assertEqual(len(ack.granted), n)
        self.assertEqual(ack.granted[:1000], [1] * 1000, "the first 1000 filters are granted")
        self.assertEqual(set(ack.granted[1000:]), {0x80})
        self.assertLess(elapsed, 30)
        b.wait_log(r'client="bulk" .*64000 subscriptions refused \(0x80\)')
        self.assertEqual(len(self.log_lines('client="bulk"', "refused (0x80)")), 1)
        # The connection and the broker stay usable.
        self.assertTrue(c.ping())
        self.publish("bulk/00999", b"granted")
        self.publish("bulk/01000", b"refused")
        self.assertEqual([p.payload for p in self.publishes(c)], [b"granted"])
        p = PahoClient("127.0.0.1", b.port(), "after")
        self._open.append(p)
        self.assertEqual(p.connect()[0], 0)
        self.assertEqual(p.subscribe("x/#", 1), [1])
        p.disconnect()


class PersistentSessionLimitTest(LimitsCase):
    def test_new_persistent_sessions_beyond_the_limit_get_connack_3(self):
        b = self.start("max_persistent_sessions = 3", sys_interval=1)
        topic = "$SYS/broker/connections/refused/session limit"
        w = self.sys_watcher([topic])
        self.assertEqual(self.sys_value(w, topic), 0)
        p1 = self.connect("p1", clean=False)
        p1.subscribe([("p/1", 1)])
        self.connect("p2", clean=False)
        self.connect("p3", clean=False).disconnect()  # offline sessions count too
        # Clean-session clients are not counted.
        for i in range(5):
            self.connect(f"c{i}", clean=True)
        self.connect("p4", clean=False, expect=3)
        proc = subprocess.run(["/usr/bin/mosquitto_sub", "-h", "127.0.0.1", "-p", str(b.port()),
                               "-V", "mqttv311", "-i", "p5", "-c", "-t", "x", "-C", "1",
                               "-W", "10"], capture_output=True, text=True, timeout=20)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("Connection Refused: broker unavailable", proc.stderr + proc.stdout)
        b.wait_log(r'client="p5" .*refused \(CONNACK 3\)')
        lines = self.log_lines('client="p4"', "CONNACK 3", level="ERROR")
        self.assertEqual(len(lines), 1, b.log()[-3000:])
        self.assertIn("max_persistent_sessions", lines[0])
        # A clean-session client may still use a new client id ...
        self.connect("p4", clean=True).disconnect()
        # ... and existing persistent sessions may be resumed and taken over.
        self.publish("p/1", b"queued for p1")
        self.connect("p3", clean=False, session_present=True)
        p1b = self.connect("p1", clean=False, session_present=True)
        self.assertTrue(p1.closed_by_peer(5), "no takeover")
        self.assertEqual([m.payload for m in self.publishes(p1b)], [b"queued for p1"])
        # An online clean session turned persistent would be a new persistent session.
        c0 = self.connect("c-live", clean=True)
        self.connect("c-live", clean=False, expect=3)
        # p3 ends its persistent session (clean session 1): room for one more.
        self.connect("p3", clean=True, session_present=False).disconnect()
        time.sleep(0.2)
        self.connect("p4", clean=False, session_present=False)
        self.connect("p6", clean=False, expect=3)
        self.assertEqual(self.sys_value(w, topic, lambda v: v >= 4), 4)
        del c0

    def test_zero_allows_clean_sessions_only(self):
        b = self.start("max_persistent_sessions = 0")
        self.connect("any", clean=False, expect=3)
        c = PahoClient("127.0.0.1", b.port(), "paho", clean_session=False)
        self._open.append(c)
        self.assertEqual(c.connect()[0], 3)
        self.connect("any", clean=True).disconnect()


class RetainedLimitTest(LimitsCase):
    def test_max_retained_messages(self):
        b = self.start("max_retained_messages = 3")
        live = self.connect("live")
        live.subscribe([("ret/#", 1)])
        for i in (1, 2, 3):
            self.publish(f"ret/{i}", f"v{i}".encode(), retain=True)
        self.assertEqual(len(self.publishes(live)), 3)
        self.publish("ret/4", b"v4", retain=True)
        self.publish("ret/5", b"v5", retain=True)
        got = self.publishes(live)
        self.assertEqual([(p.topic, p.payload, p.retain) for p in got],
                         [("ret/4", b"v4", False), ("ret/5", b"v5", False)],
                         "refused retained messages are still forwarded live")
        self.assertEqual(self.retained_now("ret/#"),
                         {"ret/1": b"v1", "ret/2": b"v2", "ret/3": b"v3"})
        b.wait_log(r"WARN .*max_retained")
        self.assertEqual(len(self.log_lines("max_retained", level="WARN")), 1,
                         "one warning per episode")
        # Replacing an existing retained message is fine at the limit.
        self.publish("ret/2", b"v2 again", retain=True)
        # Clearing always works, and makes room.
        self.publish("ret/1", b"", retain=True)
        self.assertEqual(self.retained_now("ret/#"), {"ret/2": b"v2 again", "ret/3": b"v3"})
        self.publish("ret/4", b"v4 stored", retain=True)
        self.publish("ret/6", b"v6", retain=True)  # full again: a new episode
        self.assertEqual(self.retained_now("ret/#"),
                         {"ret/2": b"v2 again", "ret/3": b"v3", "ret/4": b"v4 stored"})
        b.wait_log(r"WARN .*max_retained", count=2)
        self.assertEqual(len(self.log_lines("max_retained", level="WARN")), 2)
        # A retained QoS 0 PUBLISH beyond the limit with mosquitto_pub, seen live.
        sub = subprocess.Popen(["/usr/bin/stdbuf", "-oL", "/usr/bin/mosquitto_sub", "-h", "127.0.0.1", "-p",
                                str(b.port()), "-V", "mqttv311", "-t", "cli/#", "-C", "1",
                                "-W", "15", "-v", "-d"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        try:
            reader = LineReader(sub.stdout)
            reader.wait_for("received SUBACK", timeout=10)
            p = subprocess.run(["/usr/bin/mosquitto_pub", "-h", "127.0.0.1", "-p", str(b.port()),
                                "-V", "mqttv311", "-t", "cli/x", "-m", "not kept", "-r"],
                               capture_output=True, text=True, timeout=20)
            self.assertEqual(p.returncode, 0, p.stderr)
            line = reader.wait_for("not kept", timeout=10)
        finally:
            if sub.poll() is None:
                sub.kill()
                sub.wait()
        self.assertEqual(line.strip(), "cli/x not kept")
        self.assertEqual(self.retained_now("cli/#"), {})

    def test_refused_counter_in_sys(self):
        self.start("max_retained_messages = 3", sys_interval=1)
        topic = "$SYS/broker/retained messages/refused"
        w = self.sys_watcher([topic])
        self.assertEqual(self.sys_value(w, topic), 0)
        for i in range(8):
            self.publish(f"cnt/{i}", b"v", retain=True)
        stored = self.retained_now("cnt/#")
        self.assertLessEqual(len(stored), 3)
        # Whatever was not stored was counted (see the next test for how many should be).
        self.assertEqual(self.sys_value(w, topic, lambda v: v >= 8 - len(stored)),
                         8 - len(stored))
        self.publish("cnt/0", b"", retain=True)  # clearing is never a refusal
        self.publish("cnt/1", b"", retain=True)
        self.assertEqual(self.sys_last(w, topic, 2.5), 8 - len(stored))

    def test_broker_sys_messages_do_not_use_the_clients_budget(self):
        # The broker's ~18 retained $SYS messages (~600 bytes) are its own: with the
        # default sys_interval a budget of 3 messages or 100 bytes must still hold 3
        # messages or 100 bytes of the clients' retained messages.
        for limits, payload in (("max_retained_messages = 3", b"v"),
                                ("max_retained_bytes = 100", b"p" * 28)):
            self.start(limits, sys_interval=1)
            w = self.sys_watcher(["$SYS/broker/uptime"])
            self.sys_value(w, "$SYS/broker/uptime")  # $SYS is published and retained now
            w.disconnect()
            for i in (1, 2, 3):
                self.publish(f"ret/{i}", payload, retain=True)  # 3 x (5 + 28) = 99 bytes
            with self.subTest(limits=limits):
                self.assertEqual(self.retained_now("ret/#"),
                                 {f"ret/{i}": payload for i in (1, 2, 3)},
                                 f"{limits}: {self.log_lines('max_retained')}")

    def test_max_retained_bytes(self):
        # bytes = topic + payload: "b/1" + 40 = 43.
        self.start("max_retained_bytes = 100")
        live = self.connect("live")
        live.subscribe([("b/#", 1)])
        self.publish("b/1", b"x" * 40, retain=True)   # 43
        self.publish("b/2", b"y" * 40, retain=True)   # 86
        self.publish("b/3", b"z" * 15, retain=True)   # 104: refused
        self.assertEqual(self.retained_now("b/#"), {"b/1": b"x" * 40, "b/2": b"y" * 40})
        self.publish("b/3", b"z" * 11, retain=True)   # 100: exactly the budget
        self.assertEqual(set(self.retained_now("b/#")), {"b/1", "b/2", "b/3"})
        # Replacing within the budget (the old message's bytes are given back) works;
        # beyond it, the old message stays.
        self.publish("b/1", b"X" * 40, retain=True)   # still 100
        self.publish("b/2", b"Y" * 41, retain=True)   # 101: refused
        now = self.retained_now("b/#")
        self.assertEqual((now["b/1"], now["b/2"]), (b"X" * 40, b"y" * 40))
        self.publish("b/2", b"small", retain=True)    # 68
        self.publish("b/4", b"w" * 29, retain=True)   # 100
        self.assertEqual(self.retained_now("b/#"),
                         {"b/1": b"X" * 40, "b/2": b"small", "b/3": b"z" * 11, "b/4": b"w" * 29})
        # Clearing always works.
        self.publish("b/1", b"", retain=True)
        self.assertEqual(set(self.retained_now("b/#")), {"b/2", "b/3", "b/4"})
        # Every PUBLISH above was forwarded live, refused or not.
        got = self.publishes(live, wait=0.5)
        self.assertEqual([(p.topic, len(p.payload)) for p in got],
                         [("b/1", 40), ("b/2", 40), ("b/3", 15), ("b/3", 11), ("b/1", 40),
                          ("b/2", 41), ("b/2", 5), ("b/4", 29), ("b/1", 0)])
        self.assertFalse(any(p.retain for p in got))
        self.assertGreaterEqual(len(self.log_lines("max_retained", level="WARN")), 1)

    def test_a_single_message_over_the_byte_budget(self):
        self.start("max_retained_bytes = 64")
        live = PahoClient("127.0.0.1", self.b.port(), "live")
        self._open.append(live)
        live.connect()
        live.subscribe("big", 1)
        live.publish("big", b"b" * 100, qos=1, retain=True)
        m = live.get(timeout=5)
        self.assertEqual((len(m.payload), m.retain), (100, False))
        self.assertEqual(self.retained_now("big"), {})
        live.publish("big", b"fits", qos=1, retain=True)
        self.assertEqual(live.get(timeout=5).payload, b"fits")
        self.assertEqual(self.retained_now("big"), {"big": b"fits"})


class LimitsConfigTest(BrokerTestCase):
    KEYS = ("max_subscriptions_per_client", "max_persistent_sessions", "max_retained_messages",
            "max_retained_bytes")

    def check(self, limits):
        return run_config_check(limits_config(limits), self.tmp)

    def test_values_are_checked(self):
        rc, out = self.check("max_subscriptions_per_client = 1000\nmax_persistent_sessions = 100000\n"
                             "max_retained_messages = 3\nmax_retained_bytes = 100\n")
        self.assertEqual(rc, 0, out)
        for key in self.KEYS:
            for bad in ("-1", '"10"', "1.5"):
                rc, out = self.check(f"{key} = {bad}")
                self.assertEqual(rc, 1, f"{key} = {bad}: {out}")
                self.assertRegex(out, rf"check\.toml:4:\d+: limits\.{key}: expected an integer",
                                 f"{key} = {bad}")
        rc, out = self.check("max_subscriptions_per_client = 99999999999999999")
        self.assertEqual(rc, 1, out)
        self.assertIn("limits.max_subscriptions_per_client", out)
        rc, out = self.check("max_subscription_per_client = 5")
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"limits\.max_subscription_per_client: unknown key")


if __name__ == "__main__":
    unittest.main()
