"""MQTT 3.1.1 conformance: CONNECT / CONNACK (spec section 3.1, 3.2).

Runs against mqgate, or against Mosquitto with MQGATE_TEST_AGAINST=mosquitto.
"""
import socket
import struct
import time
import unittest

import brokers
import mqtt_raw as R
from brokers import skip_if_mosquitto


class ConnectTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0}

    def assertRefused(self, client, rc=None, timeout=5.0):
        """The broker closes without accepting: no CONNACK with return code 0 (and, when
        `rc` is given, any CONNACK carries exactly that code)."""
        self.assertClosed(client, timeout)
        for p in client.discarded:
            self.assertEqual(p.type, R.CONNACK, f"unexpected packet {p!r}")
            self.assertNotEqual(p.return_code, 0, "connection was accepted")
            if rc is not None:
                self.assertEqual(p.return_code, rc, repr(p))

    def assertRefusedWithCode(self, client, rc):
        """CONNACK with return code `rc`, then the broker closes [MQTT-3.2.2-5]."""
        ack = client.expect(R.CONNACK)
        self.assertEqual(ack.return_code, rc, repr(ack))
        # [MQTT-3.2.2-4] non-zero return code -> session present must be 0
        self.assertFalse(ack.session_present, repr(ack))
        self.assertClosed(client)

    # -- accepted connections -----------------------------------------------------------
    def test_connack_format(self):
        c = self.raw()
        c.send(R.connect("basic"))
        ack = c.expect(R.CONNACK)
        self.assertEqual(ack.flags, 0, "CONNACK fixed-header flags are reserved (0)")
        self.assertEqual(ack.body, b"\x00\x00", "CONNACK: session present 0, rc 0")
        self.assertOpen(c)

    def test_mqisdp_level_3_accepted(self):
        # MQTT 3.1 clients (protocol name "MQIsdp", level 3) are still accepted.
        c = self.raw()
        c.send(R.connect("old-client", proto_name="MQIsdp", proto_level=3))
        ack = c.expect(R.CONNACK)
        self.assertEqual(ack.return_code, 0)
        # and it works: subscribe and get its own message
        self.assertEqual(c.subscribe([("v31/t", 1)]), [1])
        c.publish("v31/t", b"hello 3.1", qos=1)
        m = c.next_publish()
        self.assertEqual((m.topic, m.payload), ("v31/t", b"hello 3.1"))

    def test_mqisdp_empty_client_id_rc2(self):
        # MQTT 3.1 requires a client id of 1-23 characters: an empty one is rejected
        # with CONNACK 2 whatever the clean session flag.
        c = self.raw()
        c.send(R.connect("", clean=True, proto_name="MQIsdp", proto_level=3))
        self.assertRefusedWithCode(c, 2)

    def test_paho_mqtt_3_1_client(self):
        import paho.mqtt.client as mqtt
        c = brokers.PahoClient(self.broker.host, self.broker.port, "paho31")
        c.c = mqtt.Client(client_id="paho31", protocol=mqtt.MQTTv31,
                          reconnect_on_failure=False)
        c.c.on_connect, c.c.on_message = c._on_connect, c._on_message
        c.c.on_subscribe, c.c.on_disconnect = c._on_subscribe, c._on_disconnect
        self._clients.append(c)
        rc, _ = c.connect()
        self.assertEqual(rc, 0)
        self.assertEqual(c.subscribe("v31/paho", 2), [2])
        c.publish("v31/paho", b"three one", qos=2)
        self.assertEqual(c.get().payload, b"three one")

    def test_username_and_password_accepted_anonymous_broker(self):
        # No authentication configured: credentials are accepted and ignored.
        c = self.raw()
        ack = c.connect("creds", username="üser", password=b"\x00\xffbinary")
        self.assertEqual(ack.return_code, 0)
        self.assertOpen(c)

    def test_username_without_password_accepted(self):
        c = self.raw()
        self.assertEqual(c.connect("user-only", username="bob").return_code, 0)
        self.assertOpen(c)

    def test_empty_username_and_password_accepted(self):
        # Zero-length strings are valid values for both fields.
        c = self.raw()
        self.assertEqual(c.connect("empties", username="", password=b"").return_code, 0)
        self.assertOpen(c)

    def test_maximum_keepalive_accepted(self):
        c = self.raw()
        self.assertEqual(c.connect("ka-max", keepalive=65535).return_code, 0)
        self.assertOpen(c)

    def test_client_id_of_23_alphanumerics_accepted(self):
        # [MQTT-3.1.3-5] The Server MUST allow ClientIds which are between 1 and 23 UTF-8
        # encoded bytes in length, and that contain only [0-9a-zA-Z].
        for cid in ("a", "0123456789abcdefghijABC", "Z9"):
            with self.case(cid=cid):
                c = self.raw()
                self.assertEqual(c.connect(cid).return_code, 0)
                c.disconnect()

    def test_client_id_unicode_and_long_accepted(self):
        # Longer ids and other characters MAY be allowed; mqgate allows up to 256 bytes.
        for cid in ("client-ü-🙂", "x" * 200, "with space/and+plus#hash"):
            with self.case(cid=cid):
                c = self.raw()
                self.assertEqual(c.connect(cid).return_code, 0)
                c.disconnect()

    def test_empty_client_id_with_clean_session_gets_a_session(self):
        # [MQTT-3.1.3-6] zero-byte ClientId: the Server MUST assign a unique ClientId and
        # process the CONNECT as if the client had provided it.
        c = self.raw()
        ack = c.connect("", clean=True)
        self.assertEqual(ack.return_code, 0)
        self.assertFalse(ack.session_present)
        self.assertEqual(c.subscribe([("anon/t", 1)]), [1])
        c.publish("anon/t", b"me", qos=1)
        self.assertEqual(c.next_publish().payload, b"me")

    def test_two_empty_client_ids_are_distinct_sessions(self):
        # Each gets its own unique id: the second must not take over the first.
        a = self.raw_connect("")
        a.subscribe([("anon/x", 0)])
        b = self.raw_connect("")
        b.subscribe([("anon/x", 0)])
        p = self.raw_connect("pub")
        p.publish("anon/x", b"both", qos=1)
        self.assertEqual(a.next_publish().payload, b"both")
        self.assertEqual(b.next_publish().payload, b"both")
        self.assertOpen(a)
        self.assertOpen(b)

    # -- refused with a CONNACK return code ----------------------------------------------
    def test_unacceptable_protocol_level_rc1(self):
        # [MQTT-3.1.2-2] The Server MUST respond to the CONNECT Packet with a CONNACK
        # return code 0x01 (unacceptable protocol level) and then disconnect the Client if
        # the Protocol Level is not supported by the Server.
        for level in (0, 1, 2, 6, 255):
            with self.case(level=level):
                c = self.raw()
                c.send(R.connect("lvl", proto_level=level))
                self.assertRefusedWithCode(c, 1)

    def test_protocol_level_5_spoken(self):
        # MQTT 5.0 is accepted (test_mqtt5.py covers it); a level-5 CONNECT shaped like
        # 3.1.1 (no property length) is a malformed 5.0 CONNECT: refused (a 5.0 CONNACK
        # with a reason code >= 0x80, if any) and closed.
        body = (R.encode_string("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 60)
                + b"\x00" + R.encode_string("v5client"))  # properties length 0
        c = self.raw()
        c.send(R.packet(R.CONNECT, 0, body))
        self.assertEqual(c.expect(R.CONNACK).return_code, 0)
        c = self.raw()
        c.send(R.connect("v5client", proto_level=5))
        self.assertClosed(c)
        for ack in c.discarded:
            self.assertEqual(ack.type, R.CONNACK)
            self.assertGreaterEqual(ack.return_code, 0x80, repr(ack))

    def test_protocol_name_mqtt_with_level_3_refused(self):
        # Level 3 belongs to "MQIsdp"; "MQTT" level 3 is not a supported combination.
        c = self.raw()
        c.send(R.connect("lvl3", proto_name="MQTT", proto_level=3))
        self.assertRefused(c, rc=1)

    def test_empty_client_id_without_clean_session_rc2(self):
        # [MQTT-3.1.3-8] zero-byte ClientId and CleanSession 0: CONNACK 0x02 (Identifier
        # rejected) and close the Network Connection.
        c = self.raw()
        c.send(R.connect("", clean=False))
        self.assertRefusedWithCode(c, 2)

    @skip_if_mosquitto("Mosquitto has no client id length limit to configure")
    def test_client_id_longer_than_limit_rc2(self):
        b = self.start_broker(sys_interval=0, max_client_id_length=256)
        c = self.raw(b)
        c.send(R.connect("i" * 257))
        self.assertRefusedWithCode(c, 2)
        c = self.raw(b)
        self.assertEqual(c.connect("i" * 256).return_code, 0)
        self.assertOpen(c)

    # -- closed without CONNACK ---------------------------------------------------------
    def test_bad_protocol_name_closed(self):
        # [MQTT-3.1.2-1] If the protocol name is incorrect the Server MAY disconnect the
        # Client [...] it MUST NOT continue to process the CONNECT packet in line with
        # this specification.
        for name in ("MQTX", "mqtt", "MQ", "MQTTT", ""):
            with self.case(name=name):
                c = self.raw()
                c.send(R.connect("badname", proto_name=name))
                self.assertRefused(c)

    def test_mqisdp_name_with_level_4_not_accepted(self):
        c = self.raw()
        c.send(R.connect("mix", proto_name="MQIsdp", proto_level=4))
        self.assertRefused(c)

    def test_reserved_connect_flag_closed(self):
        # [MQTT-3.1.2-3] The Server MUST validate that the reserved flag in the CONNECT
        # Control Packet is set to zero and disconnect the Client if it is not zero.
        c = self.raw()
        c.send(R.connect("rsv", reserved_bit=True))
        self.assertRefused(c)

    def test_connect_fixed_header_flags_closed(self):
        # [MQTT-2.2.2-2] If invalid flags are received, the receiver MUST close the
        # Network Connection (CONNECT's fixed-header flags are reserved 0000).
        c = self.raw()
        c.send(R.connect("hdr", header_flags=0x1))
        self.assertRefused(c)

    def test_password_without_username_closed(self):
        # [MQTT-3.1.2-22] If the User Name Flag is set to 0, the Password Flag MUST be
        # set to 0 -- a protocol violation, so the connection is not accepted.
        c = self.raw()
        c.send(R.connect("pw", password=b"secret"))
        self.assertRefused(c)

    def test_will_qos_3_closed(self):
        # [MQTT-3.1.2-14] If the Will Flag is set to 1, the value of Will QoS can be 0,
        # 1, or 2. It MUST NOT be 3.
        c = self.raw()
        c.send(R.connect("wq3", will_topic="w/t", will_payload=b"x", will_qos=3))
        self.assertRefused(c)

    def test_will_qos_without_will_flag_closed(self):
        # [MQTT-3.1.2-13] If the Will Flag is set to 0, then the Will QoS MUST be set to 0.
        for qos in (1, 2):
            with self.case(qos=qos):
                c = self.raw()
                c.send(R.connect("wq", will_qos=qos))
                self.assertRefused(c)

    def test_will_retain_without_will_flag_closed(self):
        # [MQTT-3.1.2-15] If the Will Flag is set to 0, then the Will Retain Flag MUST
        # be set to 0.
        c = self.raw()
        c.send(R.connect("wr", will_retain=True))
        self.assertRefused(c)

    def test_will_topic_with_wildcard_refused(self):
        # The Will Topic is a Topic Name: it MUST NOT contain wildcards [MQTT-3.3.2-2].
        for topic in ("will/+", "will/#", "#"):
            with self.case(topic=topic):
                c = self.raw()
                c.send(R.connect("ww", will_topic=topic, will_payload=b"x"))
                self.assertRefused(c)

    def test_empty_will_topic_refused(self):
        # [MQTT-4.7.3-1] All Topic Names and Topic Filters MUST be at least one
        # character long.
        c = self.raw()
        c.send(R.connect("we", will_topic="", will_payload=b"x"))
        self.assertRefused(c)

    def test_invalid_utf8_client_id_closed(self):
        # [MQTT-1.5.3-1]/[MQTT-1.5.3-2]: ill-formed UTF-8 or U+0000 -> close.
        for cid in (b"a\x00b", b"a\xc0\x80", b"\xed\xa0\x80", b"\xff\xfe"):
            with self.case(cid=cid):
                c = self.raw()
                c.send(R.connect(cid))
                self.assertRefused(c)

    def test_invalid_utf8_username_closed(self):
        c = self.raw()
        c.send(R.connect("u8", username=b"bad\xc0\x80"))
        self.assertRefused(c)

    def test_invalid_utf8_will_topic_closed(self):
        c = self.raw()
        c.send(R.connect("u8w", will_topic=b"w/\xed\xa0\x80", will_payload=b"x"))
        self.assertRefused(c)

    def test_connect_shorter_than_its_fields_closed(self):
        # The remaining length ends inside the client id: a malformed packet.
        pkt = R.connect("abcdefgh")
        # drop the last 3 bytes of the client id but keep its length prefix at 8
        truncated_body = pkt[2:-3]
        c = self.raw()
        c.send(R.packet(R.CONNECT, 0, truncated_body))
        self.assertRefused(c)

    def test_connect_with_missing_will_fields_closed(self):
        # Will flag set, but the payload ends after the client id.
        body = R.connect("nowill")[2:]
        flags_pos = 2 + 4 + 1
        body = body[:flags_pos] + bytes([body[flags_pos] | 0x04]) + body[flags_pos + 1:]
        c = self.raw()
        c.send(R.packet(R.CONNECT, 0, body))
        self.assertRefused(c)

    def test_first_packet_not_connect_closed(self):
        # [MQTT-3.1.0-1] After a Network Connection is established by a Client to a
        # Server, the first Packet sent from the Client to the Server MUST be a CONNECT.
        for name, pkt in (("PUBLISH", R.publish("t", b"x")),
                          ("SUBSCRIBE", R.subscribe(1, [("t", 0)])),
                          ("PINGREQ", R.pingreq()),
                          ("PUBREL", R.pubrel(1))):
            with self.case(first=name):
                c = self.raw()
                c.send(pkt)
                self.assertRefused(c)

    def test_first_packet_not_connect_does_not_deliver(self):
        sub = self.raw_connect("watcher")
        sub.subscribe([("sneak", 0)])
        c = self.raw()
        c.send(R.publish("sneak", b"no connect"))
        self.assertClosed(c)
        self.assertEqual(sub.read_all(0.3), [])

    def test_second_connect_closed(self):
        # [MQTT-3.1.0-2] The Server MUST process a second CONNECT Packet sent from a
        # Client as a protocol violation and disconnect the Client.
        c = self.raw_connect("twice")
        c.send(R.connect("twice"))
        self.assertClosed(c)
        for p in c.discarded:
            self.assertNotEqual(p.type, R.CONNACK, "second CONNECT must not be acknowledged")

    @skip_if_mosquitto("Mosquitto drops the will when it rejects a second CONNECT; spec "
                       "3.1.2.5: the will is published when 'The Server closes the Network "
                       "Connection because of a protocol error'")
    def test_second_connect_publishes_will(self):
        # A protocol violation closes the connection without DISCONNECT: the will is
        # published (section 3.1.2.5).
        w = self.raw_connect("will-watch")
        w.subscribe([("will/second", 0)])
        c = self.raw_connect("twice-will", will_topic="will/second", will_payload=b"died")
        c.send(R.connect("twice-will"))
        self.assertClosed(c)
        m = w.next_publish()
        self.assertEqual((m.topic, m.payload), ("will/second", b"died"))

    def test_connect_in_two_segments(self):
        c = self.raw()
        pkt = R.connect("split", keepalive=30)
        c.send(pkt[:5])
        time.sleep(0.1)
        c.send(pkt[5:])
        self.assertEqual(c.expect(R.CONNACK).return_code, 0)

    # -- session present ----------------------------------------------------------------
    def test_session_present_flag(self):
        # [MQTT-3.2.2-1] clean session 1 -> session present 0.
        # [MQTT-3.2.2-2] clean session 0 with stored session -> 1; [MQTT-3.2.2-3] no
        # stored session -> 0.
        steps = [(True, False), (False, False), (False, True), (False, True),
                 (True, False), (False, False), (False, True)]
        for i, (clean, expected) in enumerate(steps):
            with self.case(step=i, clean=clean):
                c = self.raw()
                ack = c.connect("sp-client", clean=clean)
                self.assertEqual(ack.return_code, 0)
                self.assertEqual(ack.session_present, expected, f"step {i}: {ack!r}")
                c.disconnect()

    def test_session_present_after_abrupt_close(self):
        c = self.raw_connect("sp-abrupt", clean=False, expect_session_present=False)
        c.subscribe([("x", 1)])
        c.close()
        d = self.raw()
        deadline = time.monotonic() + 5
        while True:
            # the broker may still be tearing the old connection down: retry until it
            # reports the session (it must not lose it)
            ack = d.connect("sp-abrupt", clean=False)
            if ack.session_present or time.monotonic() > deadline:
                break
            d.close()
            d = self.raw()
        self.assertTrue(ack.session_present)

    # -- no CONNECT at all --------------------------------------------------------------
    @skip_if_mosquitto("Mosquitto only closes a connection without CONNECT after its "
                       "default 60 s keep-alive x 1.5 -- too slow for this suite")
    def test_connection_without_connect_is_closed_eventually(self):
        # Section 3.1.4: "If the Server does not receive a CONNECT Packet within a
        # reasonable amount of time after the Network Connection is established, the
        # Server SHOULD close the connection." A generous bound: 30 s.
        # Two at once: one sends nothing, one sends half a CONNECT and then trickles a
        # byte every 0.5 s (trickling must not keep it alive).
        idle = socket.create_connection((self.broker.host, self.broker.port), timeout=5)
        self._clients.append(_Closer(idle))
        half = self.raw()
        pkt = R.connect("x" * 200)
        half.send(pkt[:10])
        pos = 10
        t0 = time.monotonic()
        idle_closed = half_closed = None
        idle.setblocking(False)
        while time.monotonic() - t0 < 30 and (idle_closed is None or half_closed is None):
            if idle_closed is None:
                try:
                    data = idle.recv(16)
                    self.assertEqual(data, b"", "broker sent data without a CONNECT")
                    idle_closed = time.monotonic() - t0
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    idle_closed = time.monotonic() - t0
            if half_closed is None:
                if pos < len(pkt) - 1 and not half.try_send(pkt[pos:pos + 1]):
                    half_closed = time.monotonic() - t0
                pos += 1
                try:
                    p = half.read_packet(0.5)
                    self.fail(f"answer to an incomplete CONNECT: {p!r}")
                except R.NoPacket:
                    pass
                except R.ConnectionClosed:
                    half_closed = time.monotonic() - t0
            else:
                time.sleep(0.5)
        self.assertIsNotNone(idle_closed, "idle connection without CONNECT kept for 30 s")
        self.assertIsNotNone(half_closed, "trickled partial CONNECT kept for 30 s")


class _Closer:
    def __init__(self, s):
        self.s = s

    def close(self):
        self.s.close()


if __name__ == "__main__":
    unittest.main()
