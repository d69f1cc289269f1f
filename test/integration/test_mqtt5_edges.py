"""MQTT 5.0 edge cases found by a conformance review, one normative statement each.

Mosquitto 2.0.11 deviates where marked: it accepts a Response Topic with wildcards,
resends every unacknowledged message at once to a resumed session whatever its new
Receive Maximum, sends a QoS 1 PUBLISH one byte over the client's Maximum Packet Size,
and takes topics deeper than 200 levels; and there is no ACL here to
deny a QoS 2 PUBLISH with (it accepts '$' topics). Those tests are mqgate-only.
"""
import struct

import brokers
import mqtt_raw as R
from brokers import skip_if_mosquitto


def wire_size(p):
    """A received packet's size on the wire."""
    return 1 + len(R.encode_remaining_length(len(p.body))) + len(p.body)


class Mqtt5EdgeTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0}

    def raw5(self, client_id, props=None, **kw):
        c = R.RawClient5(self.broker.port, host=self.broker.host)
        self._clients.append(c)
        self.assertEqual(c.connect(client_id, props=props, **kw).reason, 0)
        return c

    def assertDisconnected(self, c, reasons):
        self.assertTrue(c.closed_by_peer())
        got = [p.reason for p in c.discarded if p.type == R.DISCONNECT]
        if not brokers.MOSQUITTO or got:  # the server's DISCONNECT is a MAY
            self.assertEqual(len(got), 1)
            self.assertIn(got[0], reasons)

    @skip_if_mosquitto("no ACL to deny with: Mosquitto accepts '$' topics from clients")
    def test_refused_qos2_frees_its_packet_id(self):
        # After a PUBREC with a failure code the exchange is over (4.3.3): no PUBREL
        # follows, the id is free for the next message and not counted against the
        # Receive Maximum.
        sub = self.raw5("q2sub")
        sub.subscribe([("q2/#", 2)])
        pub = self.raw5("q2pub")
        for i in range(25):
            self.assertEqual(pub.publish("$denied/x", b"no", qos=2, packet_id=7), 0x87)
        self.assertEqual(pub.publish("q2/a", b"after", qos=2, packet_id=7), 0)
        got = sub.next_publish()
        self.assertEqual((got.topic, got.payload), ("q2/a", b"after"))

    @skip_if_mosquitto("Mosquitto 2.0.11 sent a 101-byte QoS 1 PUBLISH to a client whose "
                       "Maximum Packet Size is 100")
    def test_alias_never_takes_a_publish_over_maximum_packet_size(self):
        # [MQTT-3.1.2-24]: whatever the broker adds (a topic alias), a PUBLISH to the
        # client is at most its Maximum Packet Size.
        sub = self.raw5("mpsalias", props=[(R.MAXIMUM_PACKET_SIZE, 100),
                                           (R.TOPIC_ALIAS_MAXIMUM, 10)])
        sub.subscribe([("big/topic", 1)])
        pub = self.raw5("mpspub")
        for size in (80, 84, 85, 86, 87):
            pub.publish("big/topic", b"p" * size, qos=1, packet_id=size)
        got = []
        for p in sub.read_all(1.0):
            if p.type == R.PUBLISH:
                self.assertLessEqual(wire_size(p), 100, p)
                got.append(len(p.payload))
                sub.send(R.ack5(R.PUBACK, p.packet_id))
        self.assertIn(80, got)

    def test_no_local_does_not_lend_its_qos(self):
        # [MQTT-3.8.4-8]: the delivery's QoS is the highest of the subscriptions that
        # apply; a No Local one skipped for the client's own message does not.
        c = self.raw5("nlqos")
        c.subscribe([("nl/a", 2 | 0x04)], packet_id=1)  # QoS 2, No Local
        c.subscribe([("nl/#", 0)], packet_id=2)
        c.publish("nl/a", b"own", qos=1, packet_id=3)
        p = c.next_publish()
        self.assertEqual((p.topic, p.payload, p.qos), ("nl/a", b"own", 0))

    def test_message_expiry_zero_reaches_connected_subscribers(self):
        # [MQTT-3.3.2-5] deletes only the copies whose delivery has not started: one to a
        # connected subscriber starts at once.
        sub = self.raw5("exp0sub")
        sub.subscribe([("e/0", 1)])
        pub = self.raw5("exp0pub")
        pub.publish("e/0", b"zero", qos=1, packet_id=1, props=[(R.MESSAGE_EXPIRY, 0)])
        p = sub.next_publish()
        self.assertEqual(p.payload, b"zero")
        self.assertIn(R.prop(p, R.MESSAGE_EXPIRY, 0), (0, None))

    def test_non_minimal_variable_byte_integer_is_malformed(self):
        # [MQTT-1.5.5-1]: a property identifier 0x81 0x00 (0x01 in two bytes), and a
        # property length 0x80 0x00.
        for props in (b"\x03\x81\x00\x00", b"\x80\x00"):
            with self.subTest(props=props):
                c = self.raw5("varint")
                body = R.encode_string("a/b") + props + b"x"
                c.send(R.packet(R.PUBLISH, 0, body))
                self.assertDisconnected(c, (0x81, 0x82))

    def test_property_identifier_over_one_byte_is_malformed(self):
        # 2.2.2.2: every property identifier of this version is one byte long. 257
        # (0x81 0x02) is not the Payload Format Indicator, nor 0x126 (0xA6 0x02) a user
        # property, whatever their low byte: a Malformed Packet.
        for ident, value in ((b"\x81\x02", b"\x01"),
                             (b"\xa6\x02", R.encode_string("k") + R.encode_string("v"))):
            with self.subTest(ident=ident):
                props = ident + value
                c = self.raw5("propid")
                body = R.encode_string("a/b") + R.encode_varint(len(props)) + props + b"x"
                c.send(R.packet(R.PUBLISH, 0, body))
                self.assertDisconnected(c, (0x81,))

    def test_property_identifier_over_one_byte_refuses_the_connect(self):
        # The same in a CONNECT: no successful CONNACK (a CONNACK 0x81, or a close).
        props = b"\xa6\x02" + R.encode_string("k") + R.encode_string("v")
        body = (R.encode_string("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 60) +
                R.encode_varint(len(props)) + props + R.encode_string("propidc"))
        c = R.RawClient5(self.broker.port, host=self.broker.host)
        self._clients.append(c)
        c.send(R.packet(R.CONNECT, 0, body))
        try:
            p = c.read_packet()
        except (R.ConnectionClosed, R.NoPacket):
            return
        self.assertEqual(p.type, R.CONNACK)
        self.assertEqual(p.body[1], 0x81)
        self.assertTrue(c.closed_by_peer())

    @skip_if_mosquitto("Mosquitto 2.0.11 forwards a Response Topic with wildcards")
    def test_response_topic_with_wildcards_is_a_protocol_error(self):
        # [MQTT-3.3.2-14]: the Response Topic is a topic name, without wildcards.
        c = self.raw5("resptopic")
        c.send(R.publish5("a/b", b"x", props=[(R.RESPONSE_TOPIC, "a/#")]))
        self.assertDisconnected(c, (0x82,))

    def unacked_session(self, client_id, payloads):
        """A persistent session with `payloads` sent to it at QoS 1 and never
        acknowledged, its connection then dropped."""
        sub = self.raw5(client_id, props=[(R.SESSION_EXPIRY, 300)])
        sub.subscribe([(f"{client_id}/x", 1)])
        pub = self.raw5(client_id + "pub")
        for i, payload in enumerate(payloads):
            pub.publish(f"{client_id}/x", payload, qos=1, packet_id=i + 1)
        for _ in payloads:
            sub.next_publish(ack=False)
        sub.close()

    def resume(self, client_id, props):
        c = R.RawClient5(self.broker.port, host=self.broker.host)
        self._clients.append(c)
        ack = c.connect(client_id, clean_start=False, props=props)
        self.assertEqual(ack.reason, 0)
        self.assertTrue(ack.session_present)
        return c

    @skip_if_mosquitto("Mosquitto 2.0.11 resends every unacknowledged message at once")
    def test_resend_on_resume_respects_the_new_receive_maximum(self):
        # [MQTT-3.3.4-9]: never more unacknowledged PUBLISHes than the client's Receive
        # Maximum, also when resending a resumed session's.
        payloads = [b"m%d" % i for i in range(4)]
        self.unacked_session("rmax", payloads)
        c = self.resume("rmax", [(R.RECEIVE_MAXIMUM, 1)])
        got = []
        for _ in payloads:
            burst = [p for p in c.read_all(0.3) if p.type == R.PUBLISH]
            self.assertEqual(len(burst), 1, burst)
            self.assertTrue(burst[0].dup)
            got.append(burst[0].payload)
            c.send(R.ack5(R.PUBACK, burst[0].packet_id))
        self.assertEqual(got, payloads)

    def test_resend_on_resume_respects_the_new_maximum_packet_size(self):
        # [MQTT-3.1.2-25]: a message too large for the client is discarded, also one
        # in flight when the session resumes with a smaller Maximum Packet Size.
        payloads = [b"B" * 150, b"s1", b"B" * 150, b"s2"]
        self.unacked_session("rmps", payloads)
        c = self.resume("rmps", [(R.MAXIMUM_PACKET_SIZE, 64)])
        got = []
        for p in c.read_all(1.0):
            if p.type == R.PUBLISH:
                self.assertLessEqual(wire_size(p), 64)
                got.append(p.payload)
                c.send(R.ack5(R.PUBACK, p.packet_id))
        self.assertEqual(got, [b"s1", b"s2"])

    @skip_if_mosquitto("Mosquitto 2.0.11 accepts topics deeper than mqgate's max_topic_levels")
    def test_topic_over_max_topic_levels_is_told_quota_exceeded(self):
        # max_topic_levels (200) guards the router; a 5.0 client going over it is told
        # why: DISCONNECT 0x97 (an administrative limit), not a bare close.
        deep = "/".join(["l"] * 201)
        for send in (lambda c: c.send(R.subscribe5(1, [(deep, 0)])),
                     lambda c: c.send(R.publish5(deep, b"x", qos=1))):
            c = self.raw5("deep")
            send(c)
            self.assertDisconnected(c, (0x97,))

    @skip_if_mosquitto("Mosquitto 2.0.11 sends a SUBACK or UNSUBACK over the client's "
                       "Maximum Packet Size")
    def test_suback_and_unsuback_within_the_clients_maximum_packet_size(self):
        # [MQTT-3.1.2-25]: with a Maximum Packet Size of 20, a SUBACK or UNSUBACK with 15
        # reason codes (20 bytes) is sent; one with 16 or 50 cannot be. mqgate then refuses
        # the SUBSCRIBE or UNSUBSCRIBE, before acting on it, with DISCONNECT 0x95.
        mps = 20
        c = self.raw5("mpsack", props=[(R.MAXIMUM_PACKET_SIZE, mps)])
        fifteen = [f"ok/{i}" for i in range(15)]
        self.assertEqual(c.subscribe([(f, 1) for f in fifteen]), [1] * 15)
        c.send(R.unsubscribe5(2, fifteen))
        self.assertEqual(wire_size(c.expect(R.UNSUBACK)), mps)
        for n in (16, 50):
            for kind in ("subscribe", "unsubscribe"):
                with self.subTest(n=n, kind=kind):
                    c = self.raw5(f"mpsack{kind}{n}", props=[(R.MAXIMUM_PACKET_SIZE, mps)])
                    filters = [f"big/{i}" for i in range(n)]
                    c.send(R.subscribe5(3, [(f, 1) for f in filters]) if kind == "subscribe"
                           else R.unsubscribe5(3, filters))
                    self.assertDisconnected(c, (0x95,))
                    for p in c.discarded:
                        self.assertLessEqual(wire_size(p), mps, p)

    @skip_if_mosquitto("Mosquitto 2.0.11 sends a SUBACK over the client's Maximum Packet Size")
    def test_subscribe_whose_suback_cannot_fit_makes_no_subscription(self):
        # The refused SUBSCRIBE above leaves nothing behind in a session that outlives the
        # connection: the client never learnt of those subscriptions.
        c = self.raw5("mpsnosub", props=[(R.MAXIMUM_PACKET_SIZE, 20),
                                         (R.SESSION_EXPIRY, 300)])
        c.send(R.subscribe5(1, [(f"nosub/{i}", 1) for i in range(20)]))
        self.assertDisconnected(c, (0x95,))
        c = R.RawClient5(self.broker.port, host=self.broker.host)
        self._clients.append(c)
        connack = c.connect("mpsnosub", clean_start=False, props=[(R.SESSION_EXPIRY, 300)])
        self.assertEqual(connack.reason, 0)
        pub = self.raw5("mpsnosubpub")
        pub.publish("nosub/0", b"x", qos=1)
        self.assertEqual(c.read_all(timeout=0.5), [])

    def test_connack_within_the_clients_maximum_packet_size(self):
        # [MQTT-3.1.2-24] holds for the CONNACK too: it fits, or the server sends none
        # and closes (Mosquitto's choice for an assigned client id that cannot fit).
        for client_id, mps in (("cid1", 16), ("cid1", 20), ("", 16), ("", 24)):
            with self.subTest(client_id=client_id, mps=mps):
                c = R.RawClient5(self.broker.port, host=self.broker.host)
                self._clients.append(c)
                c.send(R.connect5(client_id, props=[(R.MAXIMUM_PACKET_SIZE, mps)]))
                try:
                    p = c.read_packet()
                except (R.ConnectionClosed, R.NoPacket):
                    continue
                self.assertEqual(p.type, R.CONNACK)
                self.assertLessEqual(wire_size(p), mps)
