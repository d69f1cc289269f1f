"""MQTT 3.1.1 conformance: retained messages (spec 3.3.1.3, 3.8.4)."""
import time
import unittest

import brokers
import mqtt_raw as R


class RetainTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0}

    def publish_retained(self, topic, payload, qos=0, client_id="retainer"):
        p = self.raw_connect(client_id)
        p.publish(topic, payload, qos=qos, retain=True)
        p.disconnect()

    def subscribe_and_collect(self, filters, client_id="late", wait=0.3):
        """Subscribes a fresh client; returns the PUBLISHes that arrive (acked)."""
        s = self.raw_connect(client_id)
        s.subscribe(filters)
        got = []
        while True:
            try:
                got.append(s.next_publish(timeout=wait))
            except (R.NoPacket, R.ConnectionClosed):
                break
        s.disconnect()
        return got

    def test_retained_delivered_on_subscribe_with_retain_flag(self):
        # [MQTT-3.3.1-5] store; [MQTT-3.3.1-6] send to new subscribers; [MQTT-3.3.1-8]
        # with RETAIN set to 1.
        for q in (0, 1, 2):
            self.publish_retained(f"ret/q{q}", f"kept{q}".encode(), qos=q)
        got = self.subscribe_and_collect([("ret/#", 2)])
        got.sort(key=lambda m: m.topic)
        self.assertEqual([(m.topic, m.payload, m.qos, m.retain) for m in got],
                         [(f"ret/q{q}", f"kept{q}".encode(), q, True) for q in (0, 1, 2)])
        for m in got:
            self.assertFalse(m.dup)

    def test_retained_replaced_by_newer(self):
        self.publish_retained("ret/x", b"old", qos=1)
        self.publish_retained("ret/x", b"new", qos=1)
        got = self.subscribe_and_collect([("ret/x", 1)])
        self.assertEqual([m.payload for m in got], [b"new"])

    def test_qos0_retained_replaces_and_is_stored(self):
        # [MQTT-3.3.1-7] a QoS 0 retained message discards the previous one; it SHOULD be
        # stored as the new retained message.
        self.publish_retained("ret/z", b"q2 first", qos=2)
        self.publish_retained("ret/z", b"q0 second", qos=0)
        got = self.subscribe_and_collect([("ret/z", 2)])
        self.assertEqual([(m.payload, m.qos) for m in got], [(b"q0 second", 0)])

    def test_non_retained_publish_keeps_retained(self):
        # [MQTT-3.3.1-12] If the RETAIN flag is 0, the Server MUST NOT store the message
        # and MUST NOT remove or replace any existing retained message.
        self.publish_retained("ret/keep", b"retained", qos=1)
        p = self.raw_connect("plain")
        p.publish("ret/keep", b"not retained", qos=1)
        p.publish("ret/keep", b"", qos=1)  # empty but not retained: no clearing either
        got = self.subscribe_and_collect([("ret/keep", 1)])
        self.assertEqual([m.payload for m in got], [b"retained"])

    def test_empty_retained_clears_and_is_forwarded(self):
        # [MQTT-3.3.1-10] a zero-byte retained message removes the retained message;
        # [MQTT-3.3.1-11] it MUST NOT be stored; 3.3.1.3: it is "processed as normal by
        # the Server and sent to Clients with a subscription matching the topic name".
        self.publish_retained("ret/clear", b"soon gone", qos=1)
        current = self.raw_connect("current")
        current.subscribe([("ret/clear", 1)])
        self.assertEqual(current.next_publish().payload, b"soon gone")
        for q in (0, 1, 2):
            with self.case(clear_qos=q):
                self.publish_retained("ret/clear", b"", qos=q)
                m = current.next_publish()
                self.assertEqual(m.payload, b"")
                # [MQTT-3.3.1-9] live forwarding: RETAIN 0
                self.assertFalse(m.retain, "forwarded to an established subscription")
                self.assertEqual(self.subscribe_and_collect([("ret/clear", 2)]), [])
                self.publish_retained("ret/clear", b"back", qos=1)
                self.assertEqual(current.next_publish().payload, b"back")

    def test_clearing_nonexistent_retained_is_harmless(self):
        self.publish_retained("ret/never", b"", qos=1)
        self.assertEqual(self.subscribe_and_collect([("ret/#", 1)]), [])

    def test_live_forwarding_has_retain_0(self):
        # [MQTT-3.3.1-9] The Server MUST set the RETAIN flag to 0 when a PUBLISH Packet
        # is sent to a Client because it matches an established subscription regardless
        # of how the flag was set in the message it received.
        s = self.raw_connect("live")
        s.subscribe([("ret/live", 2)])
        for q in (0, 1, 2):
            self.publish_retained("ret/live", f"r{q}".encode(), qos=q)
            m = s.next_publish()
            self.assertEqual((m.payload, m.retain), (f"r{q}".encode(), False))

    def test_retained_for_wildcard_subscriptions(self):
        topics = ["w/a", "w/b", "w/a/deep", "w", "other/a", "/w"]
        for t in topics:
            self.publish_retained(t, t.encode(), qos=1)
        cases = {
            "w/+": ["w/a", "w/b"],
            "w/#": ["w", "w/a", "w/a/deep", "w/b"],
            "#": sorted(topics),
            "+/a": ["other/a", "w/a"],
            "+": ["w"],
            "+/+": ["/w", "other/a", "w/a", "w/b"],
            "/#": ["/w"],
        }
        for flt, expected in cases.items():
            with self.case(filter=flt):
                got = self.subscribe_and_collect([(flt, 1)], client_id="wild")
                self.assertEqual(sorted(m.topic for m in got), expected)
                self.assertTrue(all(m.retain for m in got))

    def test_retained_dollar_topic_not_matched_by_leading_wildcards(self):
        # [MQTT-4.7.2-1] applies to retained messages as well. Clients may not publish to
        # '$' topics (4.7.2), so the '$' message is the broker's own retained $SYS one.
        self.broker = self.start_broker(sys_interval=1)
        self.publish_retained("app/state", b"plain", qos=1)
        deadline = time.monotonic() + 5
        direct = []
        while not direct and time.monotonic() < deadline:
            direct = self.subscribe_and_collect([("$SYS/broker/version", 1)], client_id="direct")
        self.assertEqual([m.topic for m in direct], ["$SYS/broker/version"])
        self.assertTrue(direct[0].retain)
        got = self.subscribe_and_collect([("#", 1), ("+/state", 1), ("+/+/+", 1)],
                                         client_id="wild")
        self.assertEqual({m.payload for m in got}, {b"plain"})  # once per matching filter

    def test_retained_qos_is_min_of_stored_and_subscription(self):
        self.publish_retained("ret/q", b"q2", qos=2)
        self.publish_retained("ret/q0", b"q0", qos=0)
        for sub_qos in (0, 1, 2):
            with self.case(sub_qos=sub_qos):
                got = self.subscribe_and_collect([("ret/q", sub_qos)], client_id="qq")
                self.assertEqual([(m.payload, m.qos) for m in got], [(b"q2", sub_qos)])
                got = self.subscribe_and_collect([("ret/q0", sub_qos)], client_id="qq")
                self.assertEqual([(m.payload, m.qos) for m in got], [(b"q0", 0)])

    def test_retained_survives_publisher_disconnect(self):
        p = self.raw_connect("gone")
        p.publish("ret/abrupt", b"still here", qos=1, retain=True)
        p.close()  # abrupt
        q = self.raw_connect("gone-clean")
        q.publish("ret/clean", b"also here", qos=0, retain=True)
        q.disconnect()
        time.sleep(0.1)
        got = self.subscribe_and_collect([("ret/#", 1)])
        self.assertEqual(sorted(m.payload for m in got), [b"also here", b"still here"])

    def test_resubscribe_resends_retained(self):
        # [MQTT-3.8.4-3] a SUBSCRIBE with an existing filter replaces it, and "any
        # existing retained messages matching the Topic Filter MUST be re-sent".
        self.publish_retained("ret/re", b"again", qos=1)
        s = self.raw_connect("resub")
        s.subscribe([("ret/re", 0)])
        m = s.next_publish()
        self.assertEqual((m.payload, m.qos, m.retain), (b"again", 0, True))
        self.assertEqual(s.subscribe([("ret/re", 1)], packet_id=2), [1])
        m = s.next_publish()
        self.assertEqual((m.payload, m.qos, m.retain), (b"again", 1, True))
        self.assertEqual(s.read_all(0.3), [])

    def test_many_retained_topics_each_once(self):
        p = self.raw_connect("bulk")
        n = 150
        for i in range(n):
            p.publish(f"bulk/{i}", str(i).encode(), qos=1, retain=True, packet_id=i + 1)
        got = self.subscribe_and_collect([("bulk/#", 1)])
        self.assertEqual(sorted(int(m.payload) for m in got), list(range(n)))

    def test_retained_not_sent_for_unrelated_filter(self):
        self.publish_retained("ret/a", b"a")
        self.assertEqual(self.subscribe_and_collect([("ret/b", 1), ("re/a", 1)]), [])

    def test_retained_with_paho_and_cli(self):
        pub = self.paho("paho-ret")
        pub.publish("cli/ret", b"from paho", qos=1, retain=True)
        r = self.run_cli("mosquitto_sub", "-t", "cli/ret", "-C", "1", "-W", "5",
                         "-F", "%r %q %t %p")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode().strip(), "1 0 cli/ret from paho")
        r = self.run_cli("mosquitto_pub", "-t", "cli/ret2", "-m", "from cli", "-r", "-q", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        sub = self.paho("paho-late")
        sub.subscribe("cli/ret2", 2)
        m = sub.get()
        self.assertEqual((m.topic, m.payload, m.qos, m.retain),
                         ("cli/ret2", b"from cli", 2, True))


if __name__ == "__main__":
    unittest.main()
