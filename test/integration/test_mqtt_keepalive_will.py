"""MQTT 3.1.1 conformance: keep-alive (3.1.2.10, 3.12, 3.13) and will messages
(3.1.2.5-3.1.2.7, 3.14)."""
import time
import unittest

import brokers
import mqtt_raw as R
from brokers import skip_if_mosquitto


class KeepAliveTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0}

    def test_pingreq_gets_pingresp(self):
        c = self.raw_connect("pinger")
        for _ in range(3):
            c.send(R.pingreq())
            resp = c.expect(R.PINGRESP)
            self.assertEqual((resp.flags, resp.body), (0, b""))

    def start_sleepy(self, watcher_qos=1):
        w = self.raw_connect("watcher")
        w.subscribe([("ka/will", watcher_qos)])
        c = self.raw()
        c.send(R.connect("sleepy", keepalive=1, will_topic="ka/will", will_payload=b"timeout",
                         will_qos=1))
        self.assertEqual(c.expect(R.CONNACK).return_code, 0)
        return w, c, time.monotonic()

    @skip_if_mosquitto("Mosquitto 2.0.11 only checks keep-alives every few seconds when "
                       "idle: keepalive 1 s is enforced after ~5-6 s, not 1.5 s. "
                       "[MQTT-3.1.2-24] ... within one and a half times the Keep Alive "
                       "time period, it MUST disconnect")
    def test_silent_client_disconnected_after_one_and_a_half_keepalive(self):
        # [MQTT-3.1.2-24] If the Keep Alive value is non-zero and the Server does not
        # receive a Control Packet from the Client within one and a half times the Keep
        # Alive time period, it MUST disconnect the Network Connection to the Client as
        # if the network had failed (so the will is published).
        w, c, t0 = self.start_sleepy()
        self.assertTrue(c.closed_by_peer(4.0), "not disconnected within 4 s")
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 1.0, "disconnected before the keep-alive expired")
        self.assertLessEqual(elapsed, 3.0, "1.5 x keep-alive is 1.5 s")
        m = w.next_publish()
        self.assertEqual((m.topic, m.payload, m.qos), ("ka/will", b"timeout", 1))

    def test_silent_client_eventually_disconnected_with_will(self):
        # The same with a bound loose enough for Mosquitto (8 s).
        w, c, t0 = self.start_sleepy()
        self.assertTrue(c.closed_by_peer(8.0), "not disconnected within 8 s")
        self.assertGreaterEqual(time.monotonic() - t0, 1.0)
        m = w.next_publish()
        self.assertEqual((m.topic, m.payload, m.qos), ("ka/will", b"timeout", 1))

    def test_pings_keep_the_connection_alive(self):
        c = self.raw_connect("alive", keepalive=1)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            time.sleep(0.5)
            c.send(R.pingreq())
            c.expect(R.PINGRESP)
        self.assertOpen(c)

    def test_keepalive_grace_of_one_and_a_half(self):
        # A client may be up to 1.5 x its keep-alive between packets: PINGREQ every
        # 1.15 s with keep-alive 1 s must not be cut off.
        c = self.raw_connect("graceful", keepalive=1)
        for _ in range(3):
            time.sleep(1.15)
            c.send(R.pingreq())
            c.expect(R.PINGRESP)
        self.assertOpen(c)

    def test_any_control_packet_resets_keepalive(self):
        c = self.raw_connect("busy", keepalive=1)
        deadline = time.monotonic() + 3.0
        i = 0
        while time.monotonic() < deadline:
            time.sleep(0.5)
            c.send(R.publish("ka/busy", str(i).encode(), qos=0))
            i += 1
        self.assertOpen(c)

    def test_receiving_does_not_count_as_client_activity(self):
        # Only packets *from* the client count: a subscriber that just receives
        # messages is still disconnected when it sends nothing.
        c = self.raw_connect("listener", keepalive=1)
        c.subscribe([("ka/feed", 0)])
        p = self.raw_connect("feeder")
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 8.0:  # loose: see the Mosquitto note above
            p.publish("ka/feed", b"tick", qos=0)
            try:
                while True:
                    c.read_packet(0.25)
            except R.NoPacket:
                pass
            except R.ConnectionClosed:
                closed = True
                break
        self.assertTrue(closed, "subscriber that sends nothing kept alive by traffic")
        self.assertGreaterEqual(time.monotonic() - t0, 1.0)

    @skip_if_mosquitto("Mosquitto 2.0.11's idle keep-alive check is coarse and erratic "
                       "here (closed after ~6 s in some runs, not within 10 s in others)")
    def test_trickled_partial_packet_does_not_reset_keepalive(self):
        # Keep-alive counts Control Packets [MQTT-3.1.2-24], not bytes: a client that
        # trickles one byte of a never-finished PUBLISH every 0.3 s is still
        # disconnected after 1.5 x keep-alive (bound: 2 x + 1 s slack).
        w, c, t0 = self.start_sleepy()
        pkt = R.publish("ka/slow", b"s" * 2000)
        closed = False
        i = 0
        while time.monotonic() - t0 < 3.0 and i < len(pkt) - 1:
            if not c.try_send(pkt[i:i + 1]):
                closed = True
                break
            i += 1
            try:
                c.read_packet(0.3)
            except R.NoPacket:
                pass
            except R.ConnectionClosed:
                closed = True
                break
        self.assertTrue(closed, "a partial packet trickled byte by byte kept the "
                        "connection alive past 1.5 x keep-alive")
        m = w.next_publish()
        self.assertEqual(m.payload, b"timeout")

    def test_keepalive_zero_never_times_out(self):
        # Keep Alive 0 turns the mechanism off.
        c = self.raw_connect("forever", keepalive=0)
        time.sleep(3.0)
        self.assertOpen(c)

    def test_paho_keeps_itself_alive(self):
        sub = self.paho("paho-ka", keepalive=1)
        sub.subscribe("ka/paho", 1)
        time.sleep(3.0)
        pub = self.paho("paho-ka-pub")
        pub.publish("ka/paho", b"still here", qos=1)
        self.assertEqual(sub.get().payload, b"still here")
        self.assertTrue(sub.disconnects.empty(), "paho client was disconnected")


class WillTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0}

    def watcher(self, flt="will/#", qos=2):
        w = self.raw_connect("watcher")
        w.subscribe([(flt, qos)])
        return w

    def late_subscriber(self, flt="will/#"):
        s = self.raw_connect("late")
        s.subscribe([(flt, 2)])
        return [x for x in s.read_all(0.3) if x.type == R.PUBLISH]

    def test_will_published_on_abrupt_close_with_its_qos(self):
        w = self.watcher()
        for q in (0, 1, 2):
            with self.case(will_qos=q):
                c = self.raw_connect(f"dying{q}", will_topic=f"will/q{q}",
                                     will_payload=f"bye{q}".encode(), will_qos=q)
                c.close()
                m = w.next_publish()
                self.assertEqual((m.topic, m.payload, m.qos, m.retain),
                                 (f"will/q{q}", f"bye{q}".encode(), q, False))

    def test_will_qos_limited_by_subscription(self):
        w = self.watcher(qos=1)
        c = self.raw_connect("dying", will_topic="will/x", will_payload=b"b", will_qos=2)
        c.close()
        self.assertEqual(w.next_publish().qos, 1)

    def test_no_will_after_disconnect(self):
        # [MQTT-3.1.2-10] the Will Message MUST be removed [...] once the Server has
        # received a DISCONNECT packet; [MQTT-3.14.4-3] the Server MUST discard any Will
        # Message associated with the current connection without publishing it.
        w = self.watcher()
        c = self.raw_connect("polite", will_topic="will/polite", will_payload=b"no",
                             will_retain=True)
        c.disconnect()
        self.assertEqual(w.read_all(0.5), [])
        self.assertEqual(self.late_subscriber(), [])

    def test_will_retain_stored_as_retained(self):
        # [MQTT-3.1.2-17] Will Retain 1: the Server MUST publish the Will Message as a
        # retained message.
        w = self.watcher()
        c = self.raw_connect("ret-dying", will_topic="will/ret", will_payload=b"last words",
                             will_qos=1, will_retain=True)
        c.close()
        live = w.next_publish()
        self.assertEqual((live.payload, live.retain), (b"last words", False),
                         "live subscribers get RETAIN 0 [MQTT-3.3.1-9]")
        got = self.late_subscriber()
        self.assertEqual([(m.topic, m.payload, m.qos, m.retain) for m in got],
                         [("will/ret", b"last words", 1, True)])

    def test_will_without_retain_not_stored(self):
        # [MQTT-3.1.2-16] Will Retain 0: published as a non-retained message.
        w = self.watcher()
        c = self.raw_connect("plain-dying", will_topic="will/plain", will_payload=b"x")
        c.close()
        w.next_publish()
        self.assertEqual(self.late_subscriber(), [])

    def test_empty_will_payload(self):
        w = self.watcher()
        c = self.raw_connect("empty-will", will_topic="will/empty", will_payload=b"")
        c.close()
        m = w.next_publish()
        self.assertEqual((m.topic, m.payload), ("will/empty", b""))

    def test_empty_retained_will_clears_retained(self):
        p = self.raw_connect("pub")
        p.publish("will/slot", b"occupied", qos=1, retain=True)
        c = self.raw_connect("clearer", will_topic="will/slot", will_payload=b"",
                             will_retain=True)
        c.close()
        time.sleep(0.2)
        self.assertEqual(self.late_subscriber(), [])

    def test_binary_will_payload(self):
        w = self.watcher()
        payload = bytes(range(256))
        c = self.raw_connect("bin-will", will_topic="will/bin", will_payload=payload)
        c.close()
        self.assertEqual(w.next_publish().payload, payload)

    def test_will_published_once(self):
        w = self.watcher()
        c = self.raw_connect("once", will_topic="will/once", will_payload=b"1")
        c.close()
        w.next_publish()
        self.assertEqual(w.read_all(0.5), [])

    def test_will_published_on_session_takeover(self):
        # mqgate (like Mosquitto) treats the connection closed by a takeover as a
        # close without DISCONNECT: its will is published.
        w = self.watcher()
        a = self.raw_connect("taken", will_topic="will/taken", will_payload=b"replaced")
        b = self.raw_connect("taken")
        self.assertClosed(a)
        m = w.next_publish()
        self.assertEqual((m.topic, m.payload), ("will/taken", b"replaced"))
        b.disconnect()
        self.assertEqual(w.read_all(0.3), [], "the new connection has no will")

    def test_will_not_published_for_a_refused_connection(self):
        # CONNACK rc != 0: no session, so no will either.
        w = self.watcher()
        c = self.raw()
        c.send(R.connect("", clean=False, will_topic="will/refused", will_payload=b"x"))
        self.assertEqual(c.expect(R.CONNACK).return_code, 2)
        self.assertEqual(w.read_all(0.5), [])

    def test_paho_will(self):
        w = self.paho("paho-watch")
        w.subscribe("will/paho", 2)
        c = self.paho("paho-will", will=("will/paho", b"paho died", 2, False))
        c.kill()
        m = w.get()
        self.assertEqual((m.topic, m.payload, m.qos), ("will/paho", b"paho died", 2))
        # and paho's clean disconnect sends DISCONNECT: no will
        d = self.paho("paho-nowill", will=("will/paho", b"should not", 1, False))
        d.disconnect()
        w.expect_nothing(0.5)


if __name__ == "__main__":
    unittest.main()
