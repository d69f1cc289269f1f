"""$SYS broker statistics (not part of the MQTT spec; mqgate follows Mosquitto's names):
published retained every sys_interval seconds; 0 turns them off. Topics beginning with
'$' are not matched by filters starting with a wildcard [MQTT-4.7.2-1]."""
import re
import time
import unittest

import brokers
import mqtt_raw as R

SYS_TOPICS = [
    "$SYS/broker/version",
    "$SYS/broker/uptime",
    "$SYS/broker/clients/connected",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
    "$SYS/broker/bytes/received",
    "$SYS/broker/bytes/sent",
    "$SYS/broker/subscriptions/count",
    "$SYS/broker/retained messages/count",
]


def number(payload):
    m = re.search(rb"\d+", payload)
    if not m:
        raise AssertionError(f"no number in $SYS payload {payload!r}")
    return int(m.group(0))


class SysTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 1}

    def sys_watcher(self, topics, client_id="sys-watch"):
        c = self.raw_connect(client_id)
        granted = c.subscribe([(t, 0) for t in topics])
        self.assertEqual(granted, [0] * len(topics))
        return c

    def wait_value(self, c, topic, predicate, timeout=6.0):
        """Reads PUBLISHes until `topic` carries a value for which predicate(n) holds;
        returns that value. Values of other topics are remembered in c.latest."""
        latest = getattr(c, "latest", {})
        c.latest = latest
        if topic in latest and predicate(latest[topic]):
            return latest[topic]
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                p = c.next_packet(max(0.01, deadline - time.monotonic()))
            except R.NoPacket:
                break
            if p.type != R.PUBLISH:
                continue
            latest[p.topic] = number(p.payload) if p.topic != "$SYS/broker/version" else 0
            if p.topic == topic:
                seen.append(latest[topic])
                if predicate(latest[topic]):
                    return latest[topic]
        raise AssertionError(f"{topic}: no satisfying value in {timeout}s, saw {seen}")

    def test_all_sys_topics_published(self):
        c = self.sys_watcher(["$SYS/#"])
        seen = {}
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline and not set(SYS_TOPICS) <= set(seen):
            try:
                p = c.next_packet(0.5)
            except R.NoPacket:
                continue
            if p.type == R.PUBLISH:
                seen.setdefault(p.topic, p)
        missing = [t for t in SYS_TOPICS if t not in seen]
        self.assertEqual(missing, [], f"seen: {sorted(seen)}")
        self.assertTrue(seen["$SYS/broker/version"].payload.strip(), "empty version")
        for t in SYS_TOPICS[1:]:
            number(seen[t].payload)

    def test_sys_messages_are_retained(self):
        # Once published, a new subscriber gets them at once with RETAIN 1.
        first = self.sys_watcher(["$SYS/broker/uptime"], "first")
        self.wait_value(first, "$SYS/broker/uptime", lambda v: True)
        late = self.raw_connect("late")
        late.subscribe([("$SYS/broker/version", 0), ("$SYS/broker/uptime", 0)])
        got = [late.next_publish(timeout=1.0) for _ in range(2)]
        self.assertEqual(sorted(m.topic for m in got),
                         ["$SYS/broker/uptime", "$SYS/broker/version"])
        self.assertTrue(all(m.retain for m in got))

    def test_uptime_increases(self):
        c = self.sys_watcher(["$SYS/broker/uptime"])
        first = self.wait_value(c, "$SYS/broker/uptime", lambda v: True)
        later = self.wait_value(c, "$SYS/broker/uptime", lambda v: v > first, timeout=4.0)
        self.assertLess(later - first, 30)

    def test_clients_connected_follows_connections(self):
        c = self.sys_watcher(["$SYS/broker/clients/connected"])
        base = self.wait_value(c, "$SYS/broker/clients/connected", lambda v: v >= 1)
        extra = [self.raw_connect(f"extra{i}") for i in range(3)]
        self.wait_value(c, "$SYS/broker/clients/connected", lambda v: v == base + 3)
        for e in extra:
            e.disconnect()
        self.wait_value(c, "$SYS/broker/clients/connected", lambda v: v == base)

    def test_clients_connected_bookkeeping(self):
        # Takeovers do not leak a connection; abrupt closes and refused CONNECTs are
        # accounted for; two empty client ids are two clients.
        t = "$SYS/broker/clients/connected"
        c = self.sys_watcher([t])
        base = self.wait_value(c, t, lambda v: v >= 1)
        a = self.raw_connect("same")
        b = self.raw_connect("same", clean=False)  # takes over a
        self.assertClosed(a)
        e1 = self.raw_connect("")
        e2 = self.raw_connect("")
        refused = self.raw()
        refused.send(R.connect("", clean=False))
        refused.expect(R.CONNACK)
        self.wait_value(c, t, lambda v: v == base + 3)
        b.close()  # abrupt
        e1.disconnect()
        self.wait_value(c, t, lambda v: v == base + 1)
        e2.close()
        self.wait_value(c, t, lambda v: v == base)

    def test_message_and_byte_counters_grow(self):
        topics = ["$SYS/broker/messages/received", "$SYS/broker/messages/sent",
                  "$SYS/broker/bytes/received", "$SYS/broker/bytes/sent"]
        c = self.sys_watcher(topics)
        before = {t: self.wait_value(c, t, lambda v: True) for t in topics}
        p = self.raw_connect("counter-pub")
        s = self.raw_connect("counter-sub")
        s.subscribe([("count/me", 1)])
        for i in range(10):
            p.publish("count/me", b"x" * 100, qos=1, packet_id=i + 1)
            s.next_publish()
        self.wait_value(c, "$SYS/broker/messages/received",
                        lambda v: v >= before["$SYS/broker/messages/received"] + 10)
        self.wait_value(c, "$SYS/broker/messages/sent",
                        lambda v: v >= before["$SYS/broker/messages/sent"] + 10)
        self.wait_value(c, "$SYS/broker/bytes/received",
                        lambda v: v >= before["$SYS/broker/bytes/received"] + 1000)
        self.wait_value(c, "$SYS/broker/bytes/sent",
                        lambda v: v >= before["$SYS/broker/bytes/sent"] + 1000)

    def test_subscription_count_grows(self):
        c = self.sys_watcher(["$SYS/broker/subscriptions/count"])
        base = self.wait_value(c, "$SYS/broker/subscriptions/count", lambda v: v >= 1)
        s = self.raw_connect("subscriber")
        s.subscribe([(f"sc/{i}", 0) for i in range(5)])
        self.wait_value(c, "$SYS/broker/subscriptions/count", lambda v: v >= base + 5)

    def test_subscription_count_shrinks(self):
        t = "$SYS/broker/subscriptions/count"
        c = self.sys_watcher([t])
        base = self.wait_value(c, t, lambda v: v >= 1)
        s = self.raw_connect("unsubscriber")
        s.subscribe([(f"sc/{i}", 0) for i in range(6)])
        self.wait_value(c, t, lambda v: v == base + 6)
        s.send(R.unsubscribe(2, ["sc/0", "sc/1"]))
        s.expect(R.UNSUBACK)
        self.wait_value(c, t, lambda v: v == base + 4)
        s.close()  # clean session: its subscriptions go away with the connection
        self.wait_value(c, t, lambda v: v == base)

    def test_retained_count_grows_and_shrinks(self):
        # (Mosquitto counts its own retained $SYS topics too, and adds some of them
        # lazily, so only relative changes are checked.)
        t = "$SYS/broker/retained messages/count"
        c = self.sys_watcher([t])
        base = self.wait_value(c, t, lambda v: True)
        p = self.raw_connect("ret-pub")
        for i in range(5):
            p.publish(f"rc/{i}", b"keep", qos=1, retain=True, packet_id=i + 1)
        peak = self.wait_value(c, t, lambda v: v >= base + 5)
        for i in range(3):
            p.publish(f"rc/{i}", b"", qos=1, retain=True, packet_id=10 + i)
        self.wait_value(c, t, lambda v: v <= peak - 3)

    def test_sys_not_matched_by_leading_wildcards(self):
        # [MQTT-4.7.2-1] "#" and "+/..." do not match $SYS topics ...
        wild = self.raw_connect("wild")
        wild.subscribe([("#", 0), ("+/broker/#", 0), ("+/broker/uptime", 0)])
        # ... but "$SYS/#" and "$SYS/broker/+" do
        direct = self.sys_watcher(["$SYS/broker/+"], "direct")
        first = self.wait_value(direct, "$SYS/broker/uptime", lambda v: True)
        self.wait_value(direct, "$SYS/broker/uptime", lambda v: v > first)
        got = [p.topic for p in wild.read_all(0.5) if p.type == R.PUBLISH]
        self.assertEqual([t for t in got if t.startswith("$")], [])


class SysOffTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0}

    def test_sys_interval_0_publishes_nothing(self):
        c = self.raw_connect("nosys")
        c.subscribe([("$SYS/#", 0)])
        self.assertEqual(c.read_all(1.5), [])

    def test_sighup_reload_turns_sys_on(self):
        # sys_interval is re-read on SIGHUP (mqgate and Mosquitto).
        c = self.raw_connect("reload")
        c.subscribe([("$SYS/broker/uptime", 0)])
        self.assertEqual(c.read_all(1.0), [])
        self.broker.reload(sys_interval=1)
        m = c.next_publish(timeout=5)
        self.assertEqual(m.topic, "$SYS/broker/uptime")
        self.assertOpen(c, "clients survive a reload")


class SysDroppedTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 1, "max_inflight_messages": 2,
                       "max_queued_messages": 3}

    def test_dropped_messages_counted(self):
        t = "$SYS/broker/publish/messages/dropped"
        c = self.raw_connect("watch")
        c.subscribe([(t, 0)])
        base = SysTest.wait_value(self, c, t, lambda v: True)
        if brokers.MOSQUITTO:
            # An online subscriber that does not ack: 2 in flight + 3 queued, 5 dropped.
            stalled = self.raw_connect("stalled")
            stalled.subscribe([("drop/me", 1)])
            dropped = 5
        else:
            # mqgate holds the publishers of an online subscriber instead of dropping
            # (docs/operations.md, "Flow control"); an offline session cannot push back: 3 queued, 7
            # dropped.
            stalled = self.raw_connect("stalled", clean=False)
            stalled.subscribe([("drop/me", 1)])
            stalled.disconnect()
            time.sleep(0.1)
            dropped = 7
        p = self.raw_connect("pub")
        for i in range(10):
            p.publish("drop/me", b"x", qos=1, packet_id=i + 1)
        SysTest.wait_value(self, c, t, lambda v: v == base + dropped)


if __name__ == "__main__":
    unittest.main()
