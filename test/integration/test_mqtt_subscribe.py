"""MQTT 3.1.1 conformance: SUBSCRIBE / SUBACK / UNSUBSCRIBE / UNSUBACK and topic
matching (spec 3.8-3.11, 4.7)."""
import unittest

import brokers
import mqtt_raw as R
from brokers import skip_if_mosquitto

TOPICS = ["a", "a/b", "a/b/c", "/a", "a/", "/", "b/a", "a//c", "b", "A/b", "a b"]

MATCHES = {
    "a": {"a"},
    "a/+": {"a/b", "a/"},
    "a/#": {"a", "a/b", "a/b/c", "a/", "a//c"},
    "#": set(TOPICS),
    "+/+": {"a/b", "/a", "a/", "/", "b/a", "A/b"},
    "+/a": {"/a", "b/a"},
    "/a": {"/a"},
    "+": {"a", "b", "a b"},
    "/+": {"/a", "/"},
    "a/+/c": {"a/b/c", "a//c"},
    "+/+/+": {"a/b/c", "a//c"},
    "a/b/#": {"a/b", "a/b/c"},
    "+/#": set(TOPICS),
    "/#": {"/a", "/"},
    "A/+": {"A/b"},
    "a b": {"a b"},
    "a/+/#": {"a/b", "a/b/c", "a/", "a//c"},
}


class SubscribeTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0}

    def test_suback_granted_per_filter_in_order(self):
        # [MQTT-3.8.4-2] same Packet Identifier; [MQTT-3.8.4-5] one return code per
        # filter, in order; [MQTT-3.9.3-1] the order of return codes MUST match the order
        # of Topic Filters.
        c = self.raw_connect("suback")
        c.send(R.subscribe(0x4321, [("s/a", 0), ("s/b", 1), ("s/c", 2), ("s/d", 1),
                                    ("s/e", 0)]))
        ack = c.expect(R.SUBACK)
        self.assertEqual(ack.flags, 0)
        self.assertEqual(ack.packet_id, 0x4321)
        self.assertEqual(ack.granted, [0, 1, 2, 1, 0])

    def test_many_filters_in_one_subscribe(self):
        c = self.raw_connect("many")
        filters = [(f"many/{i}", i % 3) for i in range(60)]
        self.assertEqual(c.subscribe(filters), [i % 3 for i in range(60)])
        p = self.raw_connect("pub")
        p.publish("many/59", b"last", qos=2)
        m = c.next_publish()
        self.assertEqual((m.topic, m.qos), ("many/59", 2))

    def test_topic_matching(self):
        # 4.7.1: '/' separates levels, '+' matches exactly one level (possibly empty),
        # '#' matches the parent and any number of child levels; topics are
        # case-sensitive and may contain spaces (4.7.3).
        subs = {}
        for i, flt in enumerate(MATCHES):
            s = self.raw_connect(f"m{i}")
            self.assertEqual(s.subscribe([(flt, 1)]), [1], flt)
            subs[flt] = s
        p = self.raw_connect("pub")
        for t in TOPICS:
            p.publish(t, t.encode(), qos=1)
        p.publish("end/marker", b"", qos=1)  # nothing matches it except # and +/#
        for flt, expected in MATCHES.items():
            with self.case(filter=flt):
                got = [m.topic for m in subs[flt].read_all(0.2, first=5) if m.type == R.PUBLISH]
                got = [t for t in got if t != "end/marker"]
                self.assertEqual(sorted(got), sorted(expected))
                self.assertEqual(len(got), len(set(got)), "duplicate delivery")

    def test_topics_compared_byte_for_byte(self):
        # No Unicode normalisation (4.7.3): U+00E9 and "e" + U+0301 are different topics.
        c = self.raw_connect("nfc")
        c.subscribe([("caf\u00e9", 1)])
        p = self.raw_connect("pub")
        p.publish("cafe\u0301", b"decomposed", qos=1)
        p.publish("caf\u00e9", b"composed", qos=1, packet_id=2)
        p.publish("CAF\u00c9", b"upper", qos=1, packet_id=3)
        self.assertEqual([m.payload for m in c.read_all(0.3, first=5)], [b"composed"])

    def test_dollar_topics_not_matched_by_leading_wildcards(self):
        # [MQTT-4.7.2-1] The Server MUST NOT match Topic Filters starting with a
        # wildcard character (# or +) with Topic Names beginning with a $ character.
        # The '$' messages are the broker's $SYS updates (clients may not publish there).
        self.broker = self.start_broker(sys_interval=1)
        wild = self.raw_connect("wild")
        wild.subscribe([("#", 0), ("+/broker/uptime", 0), ("+/+/+", 0), ("+", 0)])
        dollar = self.raw_connect("dollar")
        dollar.subscribe([("$SYS/broker/uptime", 0)])
        plus = self.raw_connect("dollar-plus")
        plus.subscribe([("$SYS/+/uptime", 0)])
        dollar.next_publish(timeout=5)  # the retained copy
        plus.next_publish(timeout=5)
        p = self.raw_connect("pub")
        p.publish("normal/x", b"normal", qos=1)
        # a live update, a sys_interval later
        self.assertEqual(dollar.next_publish(timeout=5).topic, "$SYS/broker/uptime")
        self.assertEqual(plus.next_publish(timeout=5).topic, "$SYS/broker/uptime")
        got = [m.topic for m in wild.read_all(0.3, first=5) if m.type == R.PUBLISH]
        self.assertFalse([t for t in got if t.startswith("$")], got)
        self.assertIn("normal/x", got)

    def test_clients_cannot_publish_to_dollar_sys(self):
        # 4.7.2: "The Server SHOULD prevent Clients from using such Topic Names to
        # exchange messages with other Clients." A fake $SYS value is acknowledged (3.1.1
        # has no negative acknowledgement) but neither stored nor forwarded.
        self.broker = self.start_broker(sys_interval=0)
        sub = self.raw_connect("sub")
        sub.subscribe([("$SYS/#", 1)])
        p = self.raw_connect("faker")
        p.publish("$SYS/broker/version", b"fake", qos=1, retain=True)  # asserts the PUBACK
        self.assertOpen(p)
        self.assertEqual([m for m in sub.read_all(0.3, first=1) if m.type == R.PUBLISH], [])
        late = self.raw_connect("late")
        late.subscribe([("$SYS/broker/version", 1)])
        self.assertEqual([m for m in late.read_all(0.3, first=1) if m.type == R.PUBLISH], [])

    @brokers.skip_if_mosquitto("it lets clients publish to '$' topics other than $SYS")
    def test_clients_cannot_publish_to_any_dollar_topic(self):
        sub = self.raw_connect("sub")
        sub.subscribe([("$app/#", 1)])
        p = self.raw_connect("pub")
        p.publish("$app/x", b"dollar", qos=1)
        will = self.raw_connect("will", will_topic="$app/will", will_payload=b"gone", will_qos=1)
        will.sock.close()
        self.assertEqual([m for m in sub.read_all(0.5, first=1) if m.type == R.PUBLISH], [])
        self.assertIn("topics starting with '$' are reserved", self.broker.log())

    def test_overlapping_subscriptions_delivered_once(self):
        # mqgate delivers one copy per message even when several of a client's filters
        # match (3.3.5 allows either one copy or one per subscription).
        c = self.raw_connect("overlap")
        self.assertEqual(c.subscribe([("o/#", 2), ("o/b", 1), ("o/+", 0), ("#", 1)]),
                         [2, 1, 0, 1])
        p = self.raw_connect("pub")
        p.publish("o/b", b"once", qos=2)
        got = [m for m in c.read_all(0.5, first=5) if m.type == R.PUBLISH]
        self.assertEqual(len(got), 1, f"copies: {got}")

    @skip_if_mosquitto("Mosquitto 2.0.11 sends its single copy with the QoS of the last "
                       "matching subscription; [MQTT-3.3.5-1] the Server MUST deliver the "
                       "message to the Client respecting the maximum QoS of all the "
                       "matching subscriptions")
    def test_overlapping_subscriptions_use_highest_qos(self):
        for order in ([("o/#", 2), ("o/b", 1)], [("o/b", 1), ("o/#", 2)],
                      [("o/+", 0), ("o/#", 2), ("o/b", 1)]):
            with self.case(order=order):
                c = self.raw_connect("overlap")
                c.subscribe(order)
                p = self.raw_connect("pub")
                p.publish("o/b", b"max", qos=2)
                got = [m for m in c.read_all(0.5, first=5) if m.type == R.PUBLISH]
                self.assertTrue(got)
                self.assertEqual(max(m.qos for m in got), 2, f"copies: {got}")
                if not brokers.MOSQUITTO:
                    self.assertEqual(len(got), 1)
                c.disconnect()

    def test_resubscribe_replaces_qos(self):
        # [MQTT-3.8.4-3] a new subscription with the same filter replaces the old one.
        c = self.raw_connect("resub")
        p = self.raw_connect("pub")
        for i, q in enumerate((0, 2, 1, 0)):
            with self.case(qos=q):
                self.assertEqual(c.subscribe([("re/t", q)], packet_id=i + 1), [q])
                p.publish("re/t", f"at{q}".encode(), qos=2, packet_id=i + 1)
                m = c.next_publish()
                self.assertEqual((m.payload, m.qos), (f"at{q}".encode(), q))
                self.assertEqual(c.read_all(0.2), [], "old subscription still active")

    def test_same_filter_twice_in_one_subscribe(self):
        # Each filter gets its return code; the later one replaces the earlier
        # [MQTT-3.8.4-3], so there is one subscription, at QoS 2.
        c = self.raw_connect("twice")
        self.assertEqual(c.subscribe([("tw", 0), ("tw", 2)]), [0, 2])
        p = self.raw_connect("pub")
        p.publish("tw", b"x", qos=2)
        got = [m for m in c.read_all(0.5, first=5) if m.type == R.PUBLISH]
        self.assertEqual([(m.payload, m.qos) for m in got], [(b"x", 2)])

    def test_invalid_topic_filters(self):
        # 4.7.1.2: '#' MUST be the last character and on its own in its level
        # [MQTT-4.7.1-2]; '+' MUST occupy an entire level [MQTT-4.7.1-3]. The broker
        # either closes the connection (Mosquitto) or answers 0x80 for that filter
        # [MQTT-3.9.3-2]; it never matches anything with it.
        for flt in ("a/#/b", "a#", "a/b+", "#/", "+a", "a+/b", "##", "a/#b", "+#", ""):
            with self.case(filter=flt):
                c = self.raw_connect("inv")
                c.send(R.subscribe(5, [(flt, 1)]))
                try:
                    p = c.read_packet(5.0)
                except R.ConnectionClosed:
                    continue
                self.assertEqual(p.type, R.SUBACK, repr(p))
                self.assertEqual((p.packet_id, p.granted), (5, [0x80]))
                pub = self.raw_connect("pub")
                for t in ("a/x/b", "a", "a/b", "a/b+", "a#", "b"):
                    pub.publish(t, b"x", qos=1)
                self.assertEqual(c.read_all(0.2), [])
                c.disconnect()

    def test_subscribe_without_payload_closed(self):
        # [MQTT-3.8.3-3] The payload of a SUBSCRIBE packet MUST contain at least one
        # Topic Filter / QoS pair. A SUBSCRIBE packet with no payload is a protocol
        # violation.
        c = self.raw_connect("nopayload")
        c.send(R.packet(R.SUBSCRIBE, 2, b"\x00\x01"))
        self.assertClosed(c)
        self.assertEqual([p for p in c.discarded if p.type == R.SUBACK], [])

    def test_subscribe_qos3_or_reserved_bits_closed(self):
        # [MQTT-3-8.3-4] The Server MUST treat a SUBSCRIBE packet as malformed and close
        # the Network Connection if any of Reserved bits in the payload are non-zero, or
        # QoS is not 0,1 or 2.
        for qos_byte in (3, 0x04, 0x80, 0x41):
            with self.case(qos_byte=qos_byte):
                c = self.raw_connect("q3")
                c.send(R.subscribe(1, [("ok/first", 1), ("bad", qos_byte)]))
                self.assertClosed(c)
                self.assertEqual([p for p in c.discarded if p.type == R.SUBACK], [])

    def test_subscribe_and_unsubscribe_packet_id_zero_closed(self):
        # [MQTT-2.3.1-1] SUBSCRIBE, UNSUBSCRIBE [...] MUST contain a non-zero 16-bit
        # Packet Identifier.
        for name, pkt in (("SUBSCRIBE", R.subscribe(0, [("z", 0)])),
                          ("UNSUBSCRIBE", R.unsubscribe(0, ["z"]))):
            with self.case(packet=name):
                c = self.raw_connect("pid0")
                c.send(pkt)
                self.assertClosed(c)
                self.assertEqual([p for p in c.discarded
                                  if p.type in (R.SUBACK, R.UNSUBACK)], [])

    def test_unsubscribe_stops_delivery(self):
        c = self.raw_connect("unsub")
        c.subscribe([("u/a", 1), ("u/b", 1)])
        p = self.raw_connect("pub")
        p.publish("u/a", b"before", qos=1)
        self.assertEqual(c.next_publish().payload, b"before")
        c.send(R.unsubscribe(0x0102, ["u/a"]))
        ack = c.expect(R.UNSUBACK)
        # [MQTT-3.10.4-4] same Packet Identifier; UNSUBACK has flags 0 and length 2
        self.assertEqual((ack.packet_id, ack.flags, ack.body), (0x0102, 0, b"\x01\x02"))
        p.publish("u/a", b"after", qos=1)
        p.publish("u/b", b"other", qos=1)
        m = c.next_publish()
        self.assertEqual((m.topic, m.payload), ("u/b", b"other"))
        self.assertEqual(c.read_all(0.3), [])

    def test_unsubscribe_unknown_filter_gets_unsuback(self):
        # [MQTT-3.10.4-5] the Server MUST respond with UNSUBACK even if no Topic Filters
        # are matched.
        c = self.raw_connect("unknown")
        c.send(R.unsubscribe(77, ["never/subscribed", "#"]))
        self.assertEqual(c.expect(R.UNSUBACK).packet_id, 77)
        self.assertOpen(c)

    def test_unsubscribe_several_filters_one_unsuback(self):
        c = self.raw_connect("several")
        c.subscribe([("v/1", 0), ("v/2", 0), ("v/3", 0)])
        c.send(R.unsubscribe(9, ["v/1", "v/3"]))
        self.assertEqual(c.expect(R.UNSUBACK).packet_id, 9)
        p = self.raw_connect("pub")
        for i in (1, 2, 3):
            p.publish(f"v/{i}", b"x", qos=1)
        self.assertEqual([m.topic for m in c.read_all(0.3, first=5)], ["v/2"])

    def test_unsubscribe_matches_filter_text_exactly(self):
        # [MQTT-3.10.4-1] Topic Filters are compared character-by-character: removing
        # "x/b" does not remove "x/+" (and vice versa).
        c = self.raw_connect("exact")
        c.subscribe([("x/+", 1)])
        c.send(R.unsubscribe(2, ["x/b"]))
        c.expect(R.UNSUBACK)
        p = self.raw_connect("pub")
        p.publish("x/b", b"still", qos=1)
        self.assertEqual(c.next_publish().payload, b"still")

    def test_unsubscribe_empty_filter_closed(self):
        # [MQTT-4.7.3-1] Topic Filters MUST be at least one character long.
        c = self.raw_connect("unsub-empty")
        c.send(R.unsubscribe(1, [""]))
        self.assertClosed(c)

    def test_unsubscribe_without_payload_closed(self):
        # [MQTT-3.10.3-2] The Payload of an UNSUBSCRIBE packet MUST contain at least one
        # Topic Filter. An UNSUBSCRIBE packet with no payload is a protocol violation.
        c = self.raw_connect("nopayload")
        c.send(R.packet(R.UNSUBSCRIBE, 2, b"\x00\x01"))
        self.assertClosed(c)
        self.assertEqual([p for p in c.discarded if p.type == R.UNSUBACK], [])

    def test_subscribe_again_after_unsubscribe(self):
        c = self.raw_connect("again")
        c.subscribe([("g", 1)])
        c.send(R.unsubscribe(2, ["g"]))
        c.expect(R.UNSUBACK)
        c.subscribe([("g", 2)], packet_id=3)
        p = self.raw_connect("pub")
        p.publish("g", b"back", qos=2)
        m = c.next_publish()
        self.assertEqual((m.payload, m.qos), (b"back", 2))

    def test_paho_and_cli_wildcards(self):
        sub = self.paho("paho-wild")
        self.assertEqual(sub.subscribe([("sensors/+/temp", 1), ("alerts/#", 2)]), [1, 2])
        for t in ("sensors/k1/temp", "sensors/k1/hum", "alerts", "alerts/fire/now"):
            r = self.run_cli("mosquitto_pub", "-t", t, "-m", t, "-q", "1")
            self.assertEqual(r.returncode, 0, r.stderr)
        got = sorted(m.topic for m in sub.get_n(3))
        self.assertEqual(got, ["alerts", "alerts/fire/now", "sensors/k1/temp"])
        sub.expect_nothing(0.3)
        sub.unsubscribe("alerts/#")
        r = self.run_cli("mosquitto_pub", "-t", "alerts/x", "-m", "x", "-q", "1")
        sub.expect_nothing(0.3)


if __name__ == "__main__":
    unittest.main()
