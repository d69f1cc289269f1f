"""MQTT 5.0 session state: each session's own Session Expiry Interval (CONNECT, changed by
DISCONNECT, capped by the broker's session_expiry), the Will Delay Interval, will
properties, and retained messages whose Message Expiry passed. Raw 5.0 packets
(mqtt_raw.RawClient5) so every property on the wire is checked. Restart cases are in
test_persistence.py (Mosquitto writes its state only at intervals).

Where Mosquitto deviates the test is marked skip_if_mosquitto:
- the broker's cap on Session Expiry Interval is mqgate's [limits] session_expiry.
- $SYS retained counts: mqgate's topic names.
- A delayed will when the session ends at once: Mosquitto 2.0.11 waits for the Will
  Delay Interval even when the session ends with the connection (Session Expiry 0) or
  is discarded by a Clean Start reconnection; the spec publishes it when the session
  ends, if that comes first (3.1.3.2.2).
"""
import time

import brokers
import mqtt_raw as R
from brokers import skip_if_mosquitto

WILL_DELAY = 0x18


class Mqtt5SessionTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0}

    def raw5(self, client_id="", **kw):
        c = R.RawClient5(self.broker.port, host=self.broker.host)
        self._clients.append(c)
        c.connack = c.connect(client_id, **kw)
        self.assertEqual(c.connack.reason, 0, repr(c.connack.props))
        return c

    def persistent(self, client_id, expiry, **kw):
        return self.raw5(client_id, clean_start=False, props=[(R.SESSION_EXPIRY, expiry)], **kw)

    def present(self, client_id):
        """Reconnects without Clean Start: whether the session was still there."""
        c = self.raw5(client_id, clean_start=False, props=[(R.SESSION_EXPIRY, 300)])
        present = c.connack.session_present
        c.send(R.disconnect5())
        return present

    def publishes(self, client, wait):
        """PUBLISHes received (some may have come before a SUBACK) until `wait` s of quiet."""
        got, client.pending = client.pending, []
        return [p for p in got + client.read_all(wait) if p.type == R.PUBLISH]

    def watcher(self, topic):
        w = self.raw5("")
        w.subscribe([(topic, 1)])
        return w

    def drop(self, client):
        """The network connection is lost (no DISCONNECT)."""
        client.close()

    # -- Session Expiry Interval [MQTT-3.1.2-23] ---------------------------------------
    def test_each_session_expires_after_its_own_interval(self):
        # [MQTT-3.1.2-23]: the session is kept for its Session Expiry Interval; a short
        # one expiring does not take a long one with it.
        for cid, expiry in (("short", 2), ("long", 300)):
            c = self.persistent(cid, expiry)
            c.subscribe([(f"{cid}/#", 1)])
            c.send(R.disconnect5())
            self.assertClosed(c)
        time.sleep(3.3)
        self.assertFalse(self.present("short"))
        self.assertTrue(self.present("long"))

    def test_zero_expiry_session_ends_when_the_network_connection_drops(self):
        # [MQTT-3.1.2-23] with 0 (the default): the session ends with the connection.
        c = self.raw5("zero", clean_start=False)
        c.subscribe([("zero/#", 1)])
        self.drop(c)
        time.sleep(0.3)
        self.assertFalse(self.present("zero"))

    def test_disconnect_shortens_the_expiry(self):
        # 3.14.2.2.2: the DISCONNECT's Session Expiry Interval replaces the CONNECT's.
        c = self.persistent("shorten", 300)
        c.subscribe([("shorten/#", 1)])
        c.send(R.disconnect5(0, [(R.SESSION_EXPIRY, 1)]))
        self.assertClosed(c)
        time.sleep(2.3)
        self.assertFalse(self.present("shorten"))

    def test_disconnect_lengthens_the_expiry(self):
        c = self.persistent("lengthen", 1)
        c.subscribe([("lengthen/#", 1)])
        c.send(R.disconnect5(0, [(R.SESSION_EXPIRY, 300)]))
        self.assertClosed(c)
        time.sleep(2.3)
        self.assertTrue(self.present("lengthen"))

    @skip_if_mosquitto("the cap is mqgate's [limits] session_expiry")
    def test_broker_cap_is_reported_in_connack(self):
        # [MQTT-3.2.2-21]: a Session Expiry Interval other than the client's is sent in
        # CONNACK, and that one applies.
        self.broker = self.start_broker(sys_interval=0, session_expiry=2)
        for asked in (100, 0xFFFFFFFF):
            c = self.persistent(f"cap{asked}", asked)
            self.assertEqual(R.prop(c.connack, R.SESSION_EXPIRY), 2)
            c.send(R.disconnect5())
        under = self.persistent("under", 1)
        self.assertIsNone(R.prop(under.connack, R.SESSION_EXPIRY))  # granted as asked
        under.send(R.disconnect5())
        time.sleep(3.3)
        self.assertFalse(self.present("cap100"))

    # -- Will Delay Interval [MQTT-3.1.3-9] -----------------------------------------------
    def will_client(self, cid, delay, expiry=60, **kw):
        return self.persistent(cid, expiry, will_topic=f"wills/{cid}", will_payload=b"gone",
                               will_qos=1, will_props=[(WILL_DELAY, delay)], **kw)

    def test_will_is_published_after_its_delay(self):
        # [MQTT-3.1.3-9]: published once the Will Delay Interval has passed.
        w = self.watcher("wills/#")
        c = self.will_client("late", 2)
        self.drop(c)
        self.assertEqual(self.publishes(w, 1.0), [])  # not at once
        m = w.next_publish(timeout=4)
        self.assertEqual((m.topic, m.payload), ("wills/late", b"gone"))

    def test_will_is_not_published_when_the_client_comes_back_in_time(self):
        # [MQTT-3.1.3-9]: a new connection to the session before the delay: no will.
        w = self.watcher("wills/#")
        c = self.will_client("back", 2)
        self.drop(c)
        time.sleep(0.3)
        again = self.raw5("back", clean_start=False, props=[(R.SESSION_EXPIRY, 60)])
        self.assertTrue(again.connack.session_present)
        self.assertEqual(self.publishes(w, 3.0), [])

    def test_will_is_published_when_the_session_ends_first(self):
        # 3.1.3.2.2: the delay or the end of the session, whichever comes first.
        w = self.watcher("wills/#")
        c = self.will_client("ends", 30, expiry=1)
        self.drop(c)
        m = w.next_publish(timeout=4)
        self.assertEqual(m.topic, "wills/ends")

    @skip_if_mosquitto("Mosquitto 2.0.11 waits for the delay though the session ended")
    def test_will_is_published_at_once_when_the_session_ends_with_the_connection(self):
        w = self.watcher("wills/#")
        c = self.will_client("nosession", 30, expiry=0)
        self.drop(c)
        self.assertEqual(w.next_publish(timeout=2).topic, "wills/nosession")

    @skip_if_mosquitto("Mosquitto 2.0.11 waits for the delay though the session ended")
    def test_clean_start_ends_the_session_and_sends_its_delayed_will(self):
        # A new connection with Clean Start 1 discards the session [MQTT-3.1.2-4]: the
        # session ends, so its delayed will goes (3.1.3.2.2).
        w = self.watcher("wills/#")
        c = self.will_client("restart", 30)
        self.drop(c)
        time.sleep(0.3)
        fresh = self.raw5("restart", clean_start=True)
        self.assertFalse(fresh.connack.session_present)
        self.assertEqual(w.next_publish(timeout=2).topic, "wills/restart")

    def test_disconnect_with_will_waits_for_the_delay(self):
        # DISCONNECT 0x04 sends the will [3.14.2.1], after its Will Delay Interval.
        w = self.watcher("wills/#")
        c = self.will_client("leaving", 2)
        c.send(R.disconnect5(0x04))
        self.assertClosed(c)
        self.assertEqual(self.publishes(w, 1.0), [])
        self.assertEqual(w.next_publish(timeout=4).topic, "wills/leaving")

    def test_normal_disconnect_discards_a_delayed_will(self):
        # [MQTT-3.1.2-8]: DISCONNECT 0x00 removes the will.
        w = self.watcher("wills/#")
        c = self.will_client("polite", 1)
        c.send(R.disconnect5(0x00))
        self.assertClosed(c)
        self.assertEqual(self.publishes(w, 2.5), [])

    # -- will properties [3.1.3.2] -----------------------------------------------------
    def test_will_properties_are_delivered(self):
        # 3.1.3.2.3-.8: Payload Format Indicator, Message Expiry Interval, Content Type,
        # Response Topic, Correlation Data and user properties go with the will.
        w = self.watcher("wills/#")
        c = self.persistent(
            "props", 60, will_topic="wills/props", will_payload="gone".encode(), will_qos=1,
            will_props=[(R.PAYLOAD_FORMAT, 1), (R.MESSAGE_EXPIRY, 60),
                        (R.CONTENT_TYPE, "text/plain"), (R.RESPONSE_TOPIC, "reply/to"),
                        (R.CORRELATION_DATA, b"\x00c1"), (R.USER_PROPERTY, ("a", "1")),
                        (R.USER_PROPERTY, ("b", "2"))])
        self.drop(c)
        m = w.next_publish()
        self.assertEqual(R.prop(m, R.PAYLOAD_FORMAT), 1)
        self.assertEqual(R.prop(m, R.CONTENT_TYPE), "text/plain")
        self.assertEqual(R.prop(m, R.RESPONSE_TOPIC), "reply/to")
        self.assertEqual(R.prop(m, R.CORRELATION_DATA), b"\x00c1")
        self.assertEqual([v for k, v in m.props if k == R.USER_PROPERTY], [("a", "1"), ("b", "2")])
        self.assertTrue(0 < R.prop(m, R.MESSAGE_EXPIRY) <= 60)

    def test_will_message_expiry_counts_from_publication(self):
        # The will's Message Expiry Interval: an offline session that comes back after it
        # does not get the will [MQTT-3.3.2-5].
        s = self.persistent("willsub", 300)
        s.subscribe([("wills/#", 1)])
        s.send(R.disconnect5())
        self.assertClosed(s)
        c = self.persistent("shortwill", 0, will_topic="wills/shortwill", will_payload=b"x",
                            will_qos=1, will_props=[(R.MESSAGE_EXPIRY, 1)])
        self.drop(c)
        time.sleep(2.2)
        again = self.raw5("willsub", clean_start=False, props=[(R.SESSION_EXPIRY, 300)])
        self.assertTrue(again.connack.session_present)
        self.assertEqual(self.publishes(again, 0.5), [])

    # -- expired retained messages -------------------------------------------------------
    def test_expired_retained_message_is_not_delivered(self):
        # [MQTT-3.3.2-5]: after its Message Expiry Interval a retained message is not
        # delivered to new subscribers.
        p = self.raw5("retpub")
        p.publish("ret/short", b"soon gone", qos=1, retain=True, props=[(R.MESSAGE_EXPIRY, 1)])
        p.publish("ret/long", b"kept", qos=1, retain=True, props=[(R.MESSAGE_EXPIRY, 300)])
        time.sleep(2.2)
        s = self.raw5("retsub")
        s.subscribe([("ret/#", 1)])
        got = self.publishes(s, 0.7)
        self.assertEqual([(m.topic, m.payload) for m in got], [("ret/long", b"kept")])
        self.assertTrue(0 < R.prop(got[0], R.MESSAGE_EXPIRY) <= 300)

    @skip_if_mosquitto("mqgate's log line and $SYS count")
    def test_expired_retained_message_is_removed_from_the_store(self):
        # Not only withheld: removed, so expired retained messages do not pile up.
        self.broker = self.start_broker(sys_interval=1)
        p = self.raw5("retpub2")
        p.publish("gone/t", b"x", qos=1, retain=True, props=[(R.MESSAGE_EXPIRY, 1)])
        deadline = time.monotonic() + 5
        while 'retained message on "gone/t" expired: removed' not in self.broker.log():
            self.assertLess(time.monotonic(), deadline, "not removed in time")
            time.sleep(0.2)
        # $SYS counts it no more: only the broker's own $SYS topics are retained.
        s = self.raw5("sysreader")
        s.subscribe([("$SYS/broker/retained messages/count", 0), ("$SYS/#", 0)])
        got, end = list(s.pending), time.monotonic() + 1.2  # $SYS never goes quiet
        while time.monotonic() < end:
            try:
                got.append(s.read_packet(timeout=max(0.01, end - time.monotonic())))
            except R.NoPacket:
                break
        got = [m for m in got if m.type == R.PUBLISH]
        topics = {m.topic: m.payload for m in got}
        retained_sys = len({m.topic for m in got if m.retain})
        self.assertEqual(int(topics["$SYS/broker/retained messages/count"]), retained_sys)
