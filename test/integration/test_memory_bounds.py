"""What a client's packets cost the broker's memory, for as long as the connection lives
(issue 22, item 1): a 5.0 CONNECT with 209,702 empty User Properties (1 MiB on the wire,
the most the default max_packet_size takes) used to leave ~13 MB per connection behind,
copied into the connection's state that nothing read; the inbound topic-alias table could
hold 16 topics of 64 KiB. Measured on the broker's RSS, with connections made one after
another (each CONNECT handled, CONNACK read, connection kept open)."""
import os
import socket
import unittest

import mqtt_raw as r
import mqgate_test
from mqgate_test import BrokerTestCase

CONNECTIONS = 30
# 209,702 x (identifier 0x26, empty name, empty value) = 1,048,510 bytes.
EMPTY_USER_PROPERTIES = b"\x26\x00\x00\x00\x00" * 209702


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def connect5_raw_properties(client_id, properties):
    body = (r.encode_string("MQTT") + bytes([5, 0x02, 0, 60]) + r.encode_varint(len(properties))
            + properties + r.encode_string(client_id))
    return bytes([0x10]) + r.encode_varint(len(body)) + body


class MemoryBoundsTest(BrokerTestCase):
    def setUp(self):
        super().setUp()
        # Freed memory must show as freed: no sanitizer quarantine in this broker.
        old = os.environ.get("ASAN_OPTIONS")
        os.environ["ASAN_OPTIONS"] = (old + ":" if old else "") + "quarantine_size_mb=0"
        self.addCleanup(lambda: os.environ.__setitem__("ASAN_OPTIONS", old) if old is not None
                        else os.environ.pop("ASAN_OPTIONS", None))

    def test_connect_user_properties_are_not_kept(self):
        b = self.start_broker(mqgate_test.plain_config(log_level="info"))
        pid = b.proc.pid
        # One connection first: what the first 1 MiB packet grows (allocator pools) is
        # not per connection.
        socks = []
        for i in range(CONNECTIONS + 1):
            s = socket.create_connection(("127.0.0.1", b.port()), timeout=10)
            self.addCleanup(s.close)
            s.sendall(connect5_raw_properties(f"c{i}", EMPTY_USER_PROPERTIES))
            self.assertEqual(s.recv(1)[0] >> 4, r.CONNACK)
            socks.append(s)
            if i == 0:
                base = rss_kib(pid)
        per_connection = (rss_kib(pid) - base) / CONNECTIONS
        # An idle 5.0 connection costs a few KiB; the wire size was 1,024 KiB.
        self.assertLess(per_connection, 128, f"{per_connection:.0f} KiB per connection")

    def test_topic_aliases_hold_at_most_64_kib_of_topics(self):
        b = self.start_broker()
        c = r.RawClient5(b.port())
        self.addCleanup(c.close)
        c.connect("aliaser")
        big = "t" * 32768
        c.send(r.publish5(big, b"1", props=[(0x23, 1)]))
        c.send(r.publish5(big, b"2", props=[(0x23, 2)]))
        c.send(r.publish5("t/x", b"3", props=[(0x23, 3)]))  # over: 64 KiB + 3 bytes
        p = c.expect(r.DISCONNECT)
        self.assertEqual(r.parse5(p).reason, 0x97)  # Quota exceeded
        self.assertTrue(c.closed_by_peer())
        b.wait_log(r"topic aliases would hold more than 64 KiB of topics")


if __name__ == "__main__":
    unittest.main()
