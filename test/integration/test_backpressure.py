"""A client that publishes QoS 1 without reading its PUBACKs is throttled (the broker
stops reading from it) instead of growing the broker's memory; others keep being served."""
import socket
import time
import unittest

import mqtt_raw as r
from brokers import PahoClient
from mqgate_test import BrokerTestCase, plain_config


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


class BackpressureTest(BrokerTestCase):
    def test_publisher_that_never_reads_is_throttled(self):
        b = self.start_broker(plain_config(extra="[limits]\nmax_outgoing_bytes = 65536"))
        flood = r.RawClient(b.port())
        flood.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        flood.send(r.connect("flooder"))
        flood.expect(r.CONNACK)
        flood.sock.settimeout(0.2)
        packet = r.publish("sink/x", b"p", qos=1, packet_id=1)
        sent = 0
        deadline = time.monotonic() + 20
        stalled = False
        while time.monotonic() < deadline:
            try:
                flood.sock.sendall(packet * 1000)
                sent += 1000
            except socket.timeout:
                stalled = True  # the broker stopped reading: TCP pushed back
                break
        self.assertTrue(stalled, f"the broker kept reading {sent} unread-acked publishes")
        b.wait_log(r'client="flooder" .*not reading: \d+ bytes wait to be written')
        # The broker's own memory stays bounded by the backlog limit, not by the flood.
        self.assertLess(rss_kib(b.proc.pid), 400 * 1024)
        other = PahoClient("127.0.0.1", b.port(), "bystander")
        self.assertEqual(other.connect()[0], 0)
        other.subscribe("t", 1)
        other.publish("t", b"still served", qos=1)
        self.assertEqual(other.get().payload, b"still served")
        other.disconnect()
        # Reading again drains the backlog and the broker reads the client again.
        flood.sock.settimeout(5)
        acks = 0
        while acks < 2000:
            acks += 1 if flood.read_packet().type == r.PUBACK else 0
        flood.sock.close()


if __name__ == "__main__":
    unittest.main()
