"""Lossless flow control (docs/operations.md, "Flow control"): publishers that write as fast as TCP
takes them, into subscribers slower than they are, lose nothing at QoS 0, 1 or 2 (the
broker stops reading the publishers instead of dropping); a subscriber that stops
reading is disconnected after its listener's grace period and the others go on; drops
for offline sessions are counted and logged once per episode.

The clients are plain sockets speaking MQTT (test/lib/mqtt_raw.py), on threads: an
open-loop publisher (a writer that never waits for acknowledgements beyond a bounded
window, and a reader that answers them) and a subscriber that reads a few KiB, then
sleeps. Only generous timeouts, no timing assertions.
"""
import socket
import struct
import threading
import time
import unittest

import mqtt_raw as r
from mqgate_test import BrokerTestCase, plain_config

# Small limits, so that a test-sized flood passes the marks many times over: high water
# at 50 queued messages / 32 KiB unsent, hard limits at 100 / 64 KiB.
LIMITS = "[limits]\nmax_queued_messages = 100\nmax_outgoing_bytes = 65536\nmax_inflight_messages = 10"


def split_packets(buf):
    """Whole packets at the front of `buf` -> ([Packet], rest)."""
    out = []
    pos = 0
    while True:
        if len(buf) - pos < 2:
            break
        mult, length, i = 1, 0, pos + 1
        while True:
            if i >= len(buf):
                return out, buf[pos:]
            b = buf[i]
            length += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        if len(buf) - i < length:
            break
        out.append(r.Packet(buf[pos], buf[i:i + length]))
        pos = i + length
    return out, buf[pos:]


class Publisher(threading.Thread):
    """Writes `count` PUBLISHes (payload `<name>:<seq>`) as fast as TCP takes them; QoS 1/2
    with at most `window` unacknowledged. Counts the acknowledgements it gets."""

    def __init__(self, port, name, topic, count, qos, window=500, payload_size=16):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(r.connect(name, keepalive=0))
        self.name_ = name
        self.topic, self.count, self.qos, self.window = topic, count, qos, window
        self.pad = b"." * max(0, payload_size - len(name) - 8)
        self.acked = 0
        self.error = None
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.connacked = threading.Event()

    def _read(self):
        buf = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                packets, buf = split_packets(buf + data)
                out = b""
                done = 0
                for p in packets:
                    if p.type == r.CONNACK:
                        self.connacked.set()
                    elif p.type == r.PUBACK or p.type == r.PUBCOMP:
                        done += 1
                    elif p.type == r.PUBREC:
                        out += r.pubrel(p.packet_id)
                if out:
                    self.sock.sendall(out)
                if done:
                    with self.cond:
                        self.acked += done
                        self.cond.notify_all()
        except OSError as e:
            self.error = e

    def run(self):
        self.reader.start()
        try:
            self.connacked.wait(30)
            seq = 0
            while seq < self.count:
                batch = []
                n = min(200, self.count - seq)
                if self.qos > 0:
                    with self.cond:
                        while seq - self.acked >= self.window:
                            self.cond.wait(60)
                        n = min(n, self.window - (seq - self.acked))
                for _ in range(n):
                    pid = seq % 65535 + 1 if self.qos else None
                    payload = f"{self.name_}:{seq}:".encode() + self.pad
                    batch.append(r.publish(self.topic, payload, qos=self.qos, packet_id=pid))
                    seq += 1
                self.sock.sendall(b"".join(batch))
            if self.qos > 0:
                with self.cond:
                    deadline = time.monotonic() + 120
                    while self.acked < self.count and time.monotonic() < deadline:
                        self.cond.wait(1)
        except OSError as e:
            self.error = e


class SlowSubscriber(threading.Thread):
    """Reads `chunk` bytes then sleeps `pause` seconds, answers QoS 1/2, and records every
    payload. `stall=True`: never reads after the SUBACK."""

    def __init__(self, port, name, topic, qos, chunk=2048, pause=0.002, stall=False,
                 small_buffer=True):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if small_buffer:  # before connect
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(60)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(r.connect(name, keepalive=0))
        self.sock.sendall(r.subscribe(1, [(topic, qos)]))
        self.chunk, self.pause, self.stall = chunk, pause, stall
        self.received = []
        self.closed = threading.Event()
        self.subacked = threading.Event()
        self.stop = False

    def run(self):
        buf = b""
        try:
            while not self.stop:
                if self.stall and self.subacked.is_set():
                    time.sleep(0.05)
                    continue
                data = self.sock.recv(self.chunk)
                if not data:
                    self.closed.set()
                    return
                packets, buf = split_packets(buf + data)
                out = b""
                for p in packets:
                    if p.type == r.SUBACK:
                        self.subacked.set()
                    elif p.type == r.PUBLISH:
                        self.received.append(p.payload.split(b":")[:2])
                        if p.qos == 1:
                            out += r.puback(p.packet_id)
                        elif p.qos == 2:
                            out += r.pubrec(p.packet_id)
                    elif p.type == r.PUBREL:
                        out += r.pubcomp(p.packet_id)
                if out:
                    self.sock.sendall(out)
                if self.pause:
                    time.sleep(self.pause)
        except OSError:
            self.closed.set()

    def wait_count(self, n, timeout=120):
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline and not self.closed.is_set():
            time.sleep(0.05)
        return len(self.received)


def check_complete(test, received, publishers, count):
    """Every publisher's messages arrived, each once, in order (QoS 2: exactly once; QoS 1
    may repeat only after a reconnect, which these tests do not do)."""
    per = {}
    for name, seq in received:
        per.setdefault(name.decode(), []).append(int(seq))
    for p in publishers:
        seqs = per.get(p, [])
        test.assertEqual(len(seqs), count, f"{p}: {len(seqs)} of {count} delivered")
        test.assertEqual(seqs, list(range(count)), f"{p}: out of order or duplicated")


class FlowControlTest(BrokerTestCase):
    def flood(self, qos, publishers, count):
        b = self.start_broker(plain_config(extra=LIMITS, log_level="info"))
        port = b.port()
        sub = SlowSubscriber(port, "slow-sub", "flow/t", qos=2)
        sub.start()
        self.assertTrue(sub.subacked.wait(10))
        pubs = [Publisher(port, f"pub{i}", "flow/t", count, qos) for i in range(publishers)]
        for p in pubs:
            p.start()
        for p in pubs:
            p.join(180)
            self.assertFalse(p.is_alive(), f"{p.name_} did not finish")
            self.assertIsNone(p.error)
            if qos:
                self.assertEqual(p.acked, count, f"{p.name_}: acknowledgements")
        total = publishers * count
        got = sub.wait_count(total)
        sub.stop = True
        self.assertEqual(got, total, "messages lost:\n" + b.log()[-3000:])
        check_complete(self, sub.received, [p.name_ for p in pubs], count)
        self.assertNotIn("dropping messages", b.log())
        # The publishers really were held (the flood passed the marks).
        self.assertIn("slow-sub", b.log())
        for p in pubs:
            p.sock.close()
        sub.sock.close()

    def test_qos0_one_to_one_slow_subscriber_loses_nothing(self):
        self.flood(0, 1, 20000)

    def test_qos1_one_to_one_slow_subscriber_loses_nothing(self):
        self.flood(1, 1, 5000)

    def test_qos2_one_to_one_slow_subscriber_loses_nothing(self):
        self.flood(2, 1, 3000)

    def test_qos0_four_to_one_loses_nothing(self):
        self.flood(0, 4, 5000)

    def test_qos1_four_to_one_loses_nothing(self):
        self.flood(1, 4, 2000)

    def test_qos2_four_to_one_loses_nothing(self):
        self.flood(2, 4, 1000)

    def test_subscriber_that_is_its_own_publisher_does_not_deadlock(self):
        # It publishes QoS 1 to a topic it subscribes to, reading slowly. Holding it would
        # also hold the PUBACKs that drain its own queue, so it is never held for itself:
        # a burst past its own queue limit is dropped (and logged), never a deadlock.
        b = self.start_broker(plain_config(extra=LIMITS, log_level="info"))
        c = r.RawClient(b.port(), timeout=60)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect("loop", keepalive=0)
        c.subscribe([("loop/t", 1)])
        c.send(b"".join(r.publish("loop/t", b"m%d" % i, qos=1, packet_id=i + 1) for i in range(500)))
        acks = 0
        while acks < 500:
            p = c.read_packet(timeout=60)
            if p.type == r.PUBLISH:
                c.send(r.puback(p.packet_id))
            acks += 1 if p.type == r.PUBACK else 0
        b.wait_log(r'client="loop" .*dropping messages to this client')
        try:  # the rest of what was queued for it
            while True:
                p = c.read_packet(timeout=2)
                if p.type == r.PUBLISH:
                    c.send(r.puback(p.packet_id))
        except r.NoPacket:
            pass
        # Within its window it loses nothing, and it is still served.
        for i in range(40):
            c.send(r.publish("loop/t", b"w%d" % i, qos=1, packet_id=1000 + i))
        seen = []
        while len(seen) < 40:
            p = c.read_packet(timeout=60)
            if p.type == r.PUBLISH:
                c.send(r.puback(p.packet_id))
                if p.payload.startswith(b"w"):
                    seen.append(p.payload)
        self.assertEqual(seen, [b"w%d" % i for i in range(40)])
        c.close()

    def test_stalled_subscriber_in_fanout_is_disconnected_after_grace(self):
        b = self.start_broker(plain_config(extra=LIMITS, log_level="info",
                                           listener_extra="slow_subscriber_grace = 1"))
        port = b.port()
        stalled = SlowSubscriber(port, "stalled", "fan/t", qos=0, stall=True)
        stalled.start()
        others = [SlowSubscriber(port, f"reader{i}", "fan/t", qos=0, chunk=65536, pause=0,
                                 small_buffer=False) for i in range(3)]
        for s in others:
            s.start()
        for s in [stalled] + others:
            self.assertTrue(s.subacked.wait(10))
        count = 4000
        pub = Publisher(port, "fanpub", "fan/t", count, 0, payload_size=4096)
        pub.start()
        b.wait_log(r'client="stalled" .*slow subscriber: .*disconnecting \(slow_subscriber = '
                   r'"disconnect", slow_subscriber_grace = 1 s\)', timeout=60)
        b.wait_log(r'client="stalled" .*disconnected \(slow subscriber\)', timeout=30)
        pub.join(120)
        self.assertFalse(pub.is_alive())
        for s in others:
            self.assertEqual(s.wait_count(count), count, f"{s.name}: lost messages")
            s.stop = True
        check_complete(self, [x for s in others[:1] for x in s.received], ["fanpub"], count)
        stalled.stop = True
        pub.sock.close()

    def test_drop_qos0_policy_sheds_a_stalled_subscribers_qos0_only(self):
        b = self.start_broker(plain_config(
            extra=LIMITS, log_level="info",
            listener_extra='slow_subscriber = "drop_qos0"\nslow_subscriber_grace = 1'))
        port = b.port()
        stalled = SlowSubscriber(port, "stalled0", "shed/t", qos=0, stall=True)
        stalled.start()
        reader = SlowSubscriber(port, "reader", "shed/t", qos=0, chunk=65536, pause=0,
                                small_buffer=False)
        reader.start()
        for s in (stalled, reader):
            self.assertTrue(s.subacked.wait(10))
        count = 4000
        pub = Publisher(port, "shedpub", "shed/t", count, 0, payload_size=4096)
        pub.start()
        b.wait_log(r'client="stalled0" .*slow subscriber: .*dropping QoS 0 messages to it until '
                   r'it catches up \(slow_subscriber = "drop_qos0"\)', timeout=60)
        pub.join(120)
        self.assertFalse(pub.is_alive())
        self.assertEqual(reader.wait_count(count), count, "the reader lost messages")
        check_complete(self, reader.received, ["shedpub"], count)
        self.assertFalse(stalled.closed.is_set(), "drop_qos0 keeps it connected")
        stalled.stop = reader.stop = True
        pub.sock.close()

    def test_offline_drops_are_counted_and_logged_once_per_episode(self):
        b = self.start_broker(plain_config(extra="sys_interval = 1\n" + LIMITS, log_level="info"))
        sub = r.RawClient(b.port())
        sub.connect("offline-sub", clean=False)
        sub.subscribe([("off/t", 1)])
        sub.disconnect()
        sub.close()
        b.wait_log(r'client="offline-sub" .*disconnected')
        pub = r.RawClient(b.port(), timeout=30)
        pub.connect("off-pub")
        pub.send(b"".join(r.publish("off/t", b"%d" % i, qos=1, packet_id=i + 1) for i in range(150)))
        acks = 0
        while acks < 150:
            acks += 1 if pub.read_packet().type == r.PUBACK else 0
        b.wait_log(r'client "offline-sub" \(offline\): dropping messages to its persistent session: '
                   r'100 queued \(max_queued_messages 100\)')
        self.assertEqual(b.log().count("dropping messages"), 1, "logged once per episode")
        sub = r.RawClient(b.port(), timeout=30)
        self.assertEqual(sub.connect("offline-sub", clean=False).session_present, True)
        b.wait_log(r'client "offline-sub": 50 messages dropped over [\d.]+ s \(until it reconnected\)')
        sys = r.RawClient(b.port(), timeout=30)
        sys.connect("sys-reader")
        sys.subscribe([("$SYS/broker/publish/messages/dropped/offline", 0)])
        values = [sys.next_publish(timeout=10).payload for _ in range(3)]  # retained, then each second
        self.assertIn(b"50", values)
        sys.close()
        got = 0
        while got < 100:
            p = sub.read_packet()
            if p.type == r.PUBLISH:
                self.assertEqual(p.payload, b"%d" % got)
                sub.send(r.puback(p.packet_id))
                got += 1
        pub.close()
        sub.close()


if __name__ == "__main__":
    unittest.main()
