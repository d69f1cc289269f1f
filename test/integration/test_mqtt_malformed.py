"""MQTT 3.1.1 conformance: fixed header, packet framing, UTF-8 validation and malformed
packets (spec sections 1.5.3, 2.2, 4.8). A protocol violation closes that connection only.
"""
import time
import unittest

import brokers
import mqtt_raw as R
from brokers import skip_if_mosquitto


class MalformedTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0}

    def setUp(self):
        super().setUp()
        # a bystander that must keep working whatever the offender does
        self.watch = self.raw_connect("bystander")
        self.watch.subscribe([("probe/#", 1)])

    def offender(self, client_id="offender", **kw):
        return self.raw_connect(client_id, **kw)

    def assertBystanderFine(self):
        """The broker is still up and routing for other clients."""
        pub = self.raw_connect("bystander-pub")
        pub.publish("probe/after", b"still routing", qos=1)
        m = self.watch.next_publish()
        self.assertEqual((m.topic, m.payload), ("probe/after", b"still routing"))
        pub.disconnect()

    def check_closes(self, data, msg=""):
        c = self.offender()
        c.send(data)
        self.assertClosed(c, msg=msg)
        self.assertBystanderFine()
        return c

    # -- reserved fixed-header flags [MQTT-2.2.2-1], [MQTT-2.2.2-2] ----------------------
    def test_subscribe_flags_must_be_0010(self):
        # [MQTT-3.8.1-1] Bits 3,2,1 and 0 of the fixed header of the SUBSCRIBE Control
        # Packet are reserved and MUST be set to 0,0,1 and 0 respectively. The Server
        # MUST treat any other value as malformed and close the Network Connection.
        for flags in (0x0, 0x3, 0xA, 0xF):
            with self.case(flags=flags):
                c = self.check_closes(R.subscribe(1, [("probe/x", 0)], flags=flags))
                for p in c.discarded:
                    self.assertNotEqual(p.type, R.SUBACK, "malformed SUBSCRIBE acknowledged")

    def test_unsubscribe_flags_must_be_0010(self):
        # [MQTT-3.10.1-1] (same rule for UNSUBSCRIBE)
        for flags in (0x0, 0x1, 0x6):
            with self.case(flags=flags):
                c = self.check_closes(R.unsubscribe(1, ["probe/x"], flags=flags))
                for p in c.discarded:
                    self.assertNotEqual(p.type, R.UNSUBACK)

    def test_pubrel_flags_must_be_0010(self):
        # [MQTT-3.6.1-1] Bits 3,2,1 and 0 of the fixed header in the PUBREL Control Packet
        # are reserved and MUST be set to 0,0,1 and 0 respectively. The Server MUST treat
        # any other value as malformed and close the Network Connection.
        c = self.offender()
        c.send(R.publish("probe/q2", b"x", qos=2, packet_id=5))
        self.assertEqual(c.expect(R.PUBREC).packet_id, 5)
        c.send(R.pubrel(5, flags=0x0))
        self.assertClosed(c)
        for p in c.discarded:
            self.assertNotEqual(p.type, R.PUBCOMP, "malformed PUBREL acknowledged")

    @skip_if_mosquitto("Mosquitto ignores reserved flag bits of PUBACK/PUBREC/PUBCOMP/"
                       "PINGREQ; [MQTT-2.2.2-2] If invalid flags are received, the receiver "
                       "MUST close the Network Connection")
    def test_other_packet_flags_must_be_0000(self):
        sub = self.raw_connect("flag-sub")
        sub.subscribe([("probe/f", 2)])
        cases = [("PINGREQ", R.pingreq(flags=0x1)), ("PINGREQ", R.pingreq(flags=0x8))]
        for name, pkt in cases:
            with self.case(packet=name, raw=pkt.hex()):
                self.check_closes(pkt)
        # acks with bad flags, each in a valid context
        for name in ("PUBACK", "PUBREC", "PUBCOMP"):
            with self.case(packet=name):
                p = self.raw_connect("flag-pub")
                qos = 1 if name == "PUBACK" else 2
                victim = self.raw_connect("flag-victim", clean=True)
                victim.subscribe([("probe/v", qos)])
                p.publish("probe/v", b"v", qos=qos)
                self.watch.next_publish()
                m = victim.next_publish(ack=False)
                if name == "PUBACK":
                    victim.send(R.puback(m.packet_id, flags=0x2))
                elif name == "PUBREC":
                    victim.send(R.pubrec(m.packet_id, flags=0x1))
                else:
                    victim.send(R.pubrec(m.packet_id))
                    victim.expect(R.PUBREL)
                    victim.send(R.pubcomp(m.packet_id, flags=0x4))
                self.assertClosed(victim)
                p.disconnect()

    def test_disconnect_with_flags_is_a_violation_and_publishes_will(self):
        # A DISCONNECT with invalid flags is not a clean DISCONNECT: the connection is
        # closed for a protocol error and the will is published (section 3.1.2.5).
        c = self.offender("bad-disconnect", will_topic="probe/will", will_payload=b"w")
        c.send(R.disconnect(flags=0x2))
        self.assertClosed(c)
        m = self.watch.next_publish()
        self.assertEqual((m.topic, m.payload), ("probe/will", b"w"))

    # -- remaining length and packet types ---------------------------------------------
    def test_remaining_length_of_five_bytes_closed(self):
        # The Remaining Length is at most four bytes (max 268,435,455).
        self.check_closes(bytes([0x30, 0x80, 0x80, 0x80, 0x80, 0x01]) + b"\x00" * 16)

    def test_packet_type_0_closed(self):
        self.check_closes(bytes([0x00, 0x00]))

    def test_packet_type_15_closed(self):
        self.check_closes(bytes([0xF0, 0x00]))

    def test_connack_from_client_closed(self):
        # CONNACK travels Server to Client only: a protocol violation (section 4.8).
        self.check_closes(R.packet(R.CONNACK, 0, b"\x00\x00"))

    @skip_if_mosquitto("Mosquitto ignores SUBACK/UNSUBACK/PINGRESP sent by a client; "
                       "they are Server-to-Client packets, and section 4.8: 'if either "
                       "the Server or Client encounters a protocol violation, it MUST "
                       "close the Network Connection'")
    def test_server_to_client_packets_from_client_closed(self):
        for name, pkt in (("SUBACK", R.packet(R.SUBACK, 0, b"\x00\x01\x00")),
                          ("UNSUBACK", R.packet(R.UNSUBACK, 0, b"\x00\x01")),
                          ("PINGRESP", R.packet(R.PINGRESP))):
            with self.case(packet=name):
                self.check_closes(pkt)

    @skip_if_mosquitto("Mosquitto answers a PINGREQ with a non-empty body and ignores a "
                       "PUBACK of the wrong length; both are malformed packets (4.8)")
    def test_fixed_size_packets_with_wrong_length_closed(self):
        for name, pkt in (("PINGREQ+1", R.packet(R.PINGREQ, 0, b"\x00")),
                          ("PUBACK len 3", R.packet(R.PUBACK, 0, b"\x00\x01\x00"))):
            with self.case(packet=name):
                self.check_closes(pkt)

    def test_short_acks_closed(self):
        for name, pkt in (("PUBACK len 1", R.packet(R.PUBACK, 0, b"\x00")),
                          ("DISCONNECT len 1", R.packet(R.DISCONNECT, 0, b"\x00"))):
            with self.case(packet=name):
                self.check_closes(pkt)

    # -- malformed PUBLISH / SUBSCRIBE bodies ------------------------------------------
    def test_publish_qos3_closed(self):
        # [MQTT-3.3.1-4] A PUBLISH Packet MUST NOT have both QoS bits set to 1. If a
        # Server or Client receives a PUBLISH Packet which has both QoS bits set to 1 it
        # MUST close the Network Connection.
        self.check_closes(R.publish("probe/q3", b"x", flags=0x06, packet_id=1))
        self.assertEqual(self.watch.read_all(0.3), [])

    def test_publish_topic_longer_than_packet_closed(self):
        self.check_closes(R.packet(R.PUBLISH, 0, b"\x00\x09probe"))

    def test_publish_qos1_without_packet_id_closed(self):
        self.check_closes(R.packet(R.PUBLISH, 0x02, R.encode_string("probe/x")))

    def test_subscribe_filter_without_qos_byte_closed(self):
        self.check_closes(R.packet(R.SUBSCRIBE, 2, b"\x00\x01" + R.encode_string("probe/x")))

    def test_truncated_packet_then_close(self):
        # Half a PUBLISH and then the TCP close: nothing is delivered, the broker lives.
        c = self.offender("truncated", will_topic="probe/will-trunc", will_payload=b"tw")
        pkt = R.publish("probe/trunc", b"p" * 100, qos=1)
        c.send(pkt[:40])
        time.sleep(0.1)
        c.close()
        m = self.watch.next_publish()  # abrupt close -> will
        self.assertEqual((m.topic, m.payload), ("probe/will-trunc", b"tw"))
        self.assertBystanderFine()

    def test_huge_announced_length_then_close(self):
        # A header announcing ~256 MB followed by a few bytes: the broker must neither
        # allocate/wait forever nor crash (mqgate closes it at once: above max_packet_size).
        c = self.offender("huge")
        c.try_send(bytes([0x30, 0xFF, 0xFF, 0xFF, 0x7F]) + b"\x00\x05probe" + b"z" * 1000)
        time.sleep(0.2)
        c.close()
        self.assertBystanderFine()

    # -- UTF-8 [MQTT-1.5.3-1], [MQTT-1.5.3-2] -------------------------------------------
    BAD_UTF8 = [
        ("U+0000", b"probe/a\x00b"),
        ("surrogate U+D800", b"probe/\xed\xa0\x80"),
        ("overlong NUL", b"probe/\xc0\x80"),
        ("overlong slash", b"probe\xc0\xafx"),
        ("above U+10FFFF", b"probe/\xf4\x90\x80\x80"),
        ("lone continuation", b"probe/\x80"),
        ("truncated sequence", b"probe/\xe2\x82"),
        ("invalid byte FF", b"probe/\xff"),
    ]

    def test_publish_topic_invalid_utf8_closed(self):
        for name, topic in self.BAD_UTF8:
            with self.case(case=name):
                self.check_closes(R.publish(topic, b"x"))
        self.assertEqual([p for p in self.watch.read_all(0.3)
                          if p.topic != "probe/after"], [])

    def test_subscribe_filter_invalid_utf8_closed(self):
        for name, flt in self.BAD_UTF8:
            with self.case(case=name):
                c = self.check_closes(R.subscribe(1, [(flt, 0)]))
                for p in c.discarded:
                    self.assertNotEqual(p.type, R.SUBACK, "SUBACK for an ill-formed filter")

    def test_unsubscribe_filter_invalid_utf8_closed(self):
        for name, flt in self.BAD_UTF8[:3]:
            with self.case(case=name):
                self.check_closes(R.unsubscribe(1, [flt]))

    def test_multibyte_topic_round_trips(self):
        # Valid multi-byte UTF-8 (2, 3 and 4 byte sequences) and U+FEFF, which
        # [MQTT-1.5.3-3] says MUST NOT be skipped over or stripped off.
        for topic in ("probe/ünïcødé/🙂", "probe/日本語", "probe/\ufeffbom", "probe/\u00a0"):
            with self.case(topic=topic):
                s = self.raw_connect("u8-sub")
                self.assertEqual(s.subscribe([(topic, 1)]), [1])
                p = self.raw_connect("u8-pub")
                p.publish(topic, "päylöad".encode(), qos=1)
                m = s.next_publish()
                self.assertEqual(m.topic_bytes, topic.encode("utf-8"))
                self.assertEqual(m.payload, "päylöad".encode())
                s.disconnect()
                p.disconnect()
                self.watch.next_publish()

    def test_nothing_processed_after_disconnect(self):
        # 3.14.4: on DISCONNECT the Server closes the connection; a PUBLISH the client
        # (wrongly, [MQTT-3.14.4-2]) sent behind it in the same segment is not routed.
        c = self.offender("leaver")
        c.send(R.disconnect() + R.publish("probe/after-disconnect", b"x", qos=1))
        self.assertClosed(c)
        self.assertEqual([p.type for p in c.discarded], [])
        self.assertEqual(self.watch.read_all(0.3), [])

    # -- framing ------------------------------------------------------------------------
    def test_packets_sent_byte_by_byte(self):
        # TCP is a byte stream: a packet split into 1-byte segments is still parsed.
        c = self.raw()
        c.send_slowly(R.connect("slow", keepalive=30))
        self.assertEqual(c.expect(R.CONNACK).return_code, 0)
        c.send_slowly(R.subscribe(7, [("probe/slow", 2)]))
        ack = c.expect(R.SUBACK)
        self.assertEqual((ack.packet_id, ack.granted), (7, [2]))
        body = bytes(range(256)) * 2
        c.send_slowly(R.publish("probe/slow", body, qos=1, packet_id=9), delay=0.0005)
        got = {}
        for _ in range(2):
            p = c.read_packet()
            got[p.type] = p
        self.assertEqual(got[R.PUBACK].packet_id, 9)
        self.assertEqual(got[R.PUBLISH].payload, body)
        c.ack(got[R.PUBLISH])
        self.assertEqual(self.watch.next_publish().payload, body)

    def test_several_packets_in_one_segment(self):
        # CONNECT, SUBSCRIBE, 3 PUBLISHes, PINGREQ, SUBSCRIBE and PINGREQ in one write:
        # all handled, in order.
        c = self.raw()
        blob = (R.connect("batch") + R.subscribe(1, [("probe/batch", 1)])
                + R.publish("probe/batch", b"m1", qos=1, packet_id=10)
                + R.publish("probe/batch", b"m2", qos=0)
                + R.publish("probe/batch", b"m3", qos=1, packet_id=11)
                + R.pingreq() + R.subscribe(2, [("probe/other", 0)]) + R.pingreq())
        c.send(blob)
        packets = []
        deadline = time.monotonic() + 5
        def count(t):
            return len([x for x in packets if x.type == t])
        while count(R.PINGRESP) < 2 or count(R.PUBLISH) < 3:
            p = c.read_packet(max(0.01, deadline - time.monotonic()))
            if p.type == R.PUBLISH and p.qos == 1:
                c.send(R.puback(p.packet_id))
            packets.append(p)
        kinds = [p.type for p in packets]
        self.assertEqual(kinds[0], R.CONNACK)
        self.assertEqual(kinds[1], R.SUBACK)
        self.assertEqual([p.packet_id for p in packets if p.type == R.PUBACK], [10, 11])
        self.assertEqual([p.payload for p in packets if p.type == R.PUBLISH],
                         [b"m1", b"m2", b"m3"])
        subacks = [p.packet_id for p in packets if p.type == R.SUBACK]
        self.assertEqual(subacks, [1, 2])
        second_suback = [i for i, p in enumerate(packets) if p.type == R.SUBACK][1]
        self.assertLess(kinds.index(R.PINGRESP), second_suback)
        self.assertEqual(kinds[-1] if kinds[-1] != R.PUBLISH else R.PINGRESP, R.PINGRESP)
        self.assertEqual([p.payload for p in self.watch.read_all(0.3, first=5)], [b"m1", b"m2", b"m3"])

    def test_packet_and_half_then_rest(self):
        c = self.raw_connect("halves")
        a = R.publish("probe/h", b"first", qos=0)
        b = R.publish("probe/h", b"second", qos=0)
        c.send(a + b[:4])
        time.sleep(0.1)
        c.send(b[4:])
        got = [self.watch.next_publish().payload for _ in range(2)]
        self.assertEqual(got, [b"first", b"second"])

    def test_malformed_client_does_not_disturb_a_subscriber(self):
        # A steady publisher's messages keep reaching the bystander while other
        # connections are closed for violations.
        pub = self.raw_connect("steady")
        for i in range(5):
            bad = self.offender(f"bad{i}")
            bad.send([R.publish("probe/+", b"x"), bytes([0xF0, 0]),
                      R.subscribe(1, [("probe", 3)]), R.publish(b"\xc0\x80", b""),
                      R.pubrel(1, flags=0)][i])
            pub.publish("probe/steady", str(i).encode(), qos=1, packet_id=i + 1)
            self.assertClosed(bad)
        self.assertEqual([self.watch.next_publish().payload for _ in range(5)],
                         [b"0", b"1", b"2", b"3", b"4"])


if __name__ == "__main__":
    unittest.main()
