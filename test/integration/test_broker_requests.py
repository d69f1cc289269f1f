"""The broker acts on connections through requests the server carries out after each of
its calls (closing, holding and resuming input: Server::carry_out_requests): held input
is always dispatched again, promptly and in order, whatever held it (a plugin's
deferred decision, a SUBSCRIBE decided in slices, flow control); requests made from a
timer callback (a decision that times out in the sweep's tick) are carried out at once
too; a client that closes or is taken over while held leaves nothing behind.

Real clients against the real broker, with the `deferred` test plugin
(test/plugins/deferred.c), which answers from its own thread after delay_ms.
"""
import calendar
import re
import socket
import time
import unittest

import mqtt_raw as r
import mqgate_test
import test_flow_control as fc
from mqgate_test import BrokerTestCase

LOG_TIME = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z ")


def log_time(line):
    """The wall-clock time (seconds since the epoch) of a broker log line."""
    m = LOG_TIME.match(line)
    assert m, line
    y, mo, d, h, mi, s, ms = (int(g) for g in m.groups())
    return calendar.timegm((y, mo, d, h, mi, s)) + ms / 1000.0


def first_line(text, pattern):
    rx = re.compile(pattern)
    for line in text.splitlines():
        if rx.search(line):
            return line
    raise AssertionError(f"no log line matches {pattern!r}")


class MixedPublisher(fc.Publisher):
    """fc.Publisher, with every `every`th message to flow/slow/x (a plugin decides those),
    its session persistent (clean session 0) when `clean` is False."""

    def __init__(self, port, name, topic, count, qos, window=200, every=50, clean=True,
                 payload_size=16):
        super().__init__(port, name, topic, count, qos, window, payload_size)
        if not clean:  # the CONNECT again, on a fresh socket: clean session 0
            self.sock.close()
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
            self.sock.sendall(r.connect(name, clean=False, keepalive=0))
        self.every = every

    def run(self):
        self.reader.start()
        try:
            self.connacked.wait(30)
            seq = 0
            while seq < self.count:
                with self.cond:
                    while seq - self.acked >= self.window:
                        self.cond.wait(60)
                    n = min(200, self.count - seq, self.window - (seq - self.acked))
                batch = []
                for _ in range(n):
                    topic = "flow/slow/x" if seq % self.every == 0 else self.topic
                    payload = f"{self.name_}:{seq}:".encode() + self.pad
                    batch.append(r.publish(topic, payload, qos=self.qos, packet_id=seq % 65535 + 1))
                    seq += 1
                self.sock.sendall(b"".join(batch))
            with self.cond:
                deadline = time.monotonic() + 120
                while self.acked < self.count and time.monotonic() < deadline:
                    self.cond.wait(1)
        except OSError as e:
            self.error = e


class BrokerRequestsTest(BrokerTestCase):
    def broker(self, cfg_head="", limits="", **plugin):
        cfg = f'log_level = "debug"\n{cfg_head}'
        if limits:
            cfg += f"[limits]\n{limits}\n"
        cfg += '[listeners.default]\nbind = "127.0.0.1:0"\n'
        if plugin:
            cfg += mqgate_test.plugin_table("d", "deferred", tag="d", **plugin)
        return self.start_broker(cfg)

    def client(self, b):
        c = r.RawClient(b.port())
        self.addCleanup(c.close)
        return c

    def connected(self, b, cid, **kw):
        c = self.client(b)
        self.assertEqual(c.connect(cid, **kw).return_code, 0)
        return c

    # -- a decision that times out is carried out at once ------------------------------
    def test_a_connect_denied_by_auth_timeout_is_answered_at_once(self):
        """The decision times out in the sweep's tick (a timer callback): the refusal
        and the close it requests must not wait for the next loop wake-up (up to a
        sweep later, 250 ms, when nothing else happens)."""
        b = self.broker(cfg_head="auth_timeout = 1\n", delay_ms=5000)
        c = self.client(b)
        c.send(r.connect("slow"))
        self.assertEqual(c.expect(r.CONNACK, timeout=5).return_code, 5)
        received = time.time()
        line = first_line(b.log(), r'plugin "d": no decision within auth_timeout')
        late = received - log_time(line)
        self.assertLess(late, 0.15, f"CONNACK {late * 1000:.0f} ms after the timeout")

    def test_packets_behind_a_publish_denied_by_auth_timeout_go_on_at_once(self):
        b = self.broker(cfg_head="auth_timeout = 1\n", delay_ms=5000, allow_at_once=True,
                        defer_topics=["slow/#"])
        c = self.connected(b, "pub")
        c.send(r.publish("slow/a", b"1", qos=1, packet_id=1)
               + r.publish("fast", b"2", qos=1, packet_id=2) + r.pingreq())
        self.assertEqual(c.expect(r.PUBACK, timeout=5).packet_id, 1)  # denied, acked (3.1.1)
        self.assertEqual(c.expect(r.PUBACK).packet_id, 2)
        c.expect(r.PINGRESP)
        received = time.time()
        line = first_line(b.log(), r'plugin "d": no decision within auth_timeout')
        late = received - log_time(line)
        self.assertLess(late, 0.15, f"PINGRESP {late * 1000:.0f} ms after the timeout")

    # -- order -----------------------------------------------------------------------------
    def test_packets_pipelined_behind_deferred_connect_and_publishes_keep_their_order(self):
        b = self.broker(delay_ms=150, defer_topics=["slow/#"])
        sub = self.connected(b, "sub")
        self.assertEqual(sub.subscribe([("#", 1)]), [1])
        c = self.client(b)
        c.send(r.connect("pipelined")
               + r.publish("slow/a", b"1", qos=1, packet_id=1)
               + r.publish("fast", b"2", qos=1, packet_id=2)
               + r.publish("slow/b", b"3", qos=0)
               + r.publish("slow/c", b"4", qos=1, packet_id=3)
               + r.subscribe(4, [("own/#", 1), ("slow/own", 1)])
               + r.publish("own/x", b"5", qos=1, packet_id=5)
               + r.pingreq())
        got = [c.read_packet(timeout=5) for _ in range(8)]
        self.assertEqual(
            [(p.type, p.packet_id) for p in got[:5]],
            [(r.CONNACK, None), (r.PUBACK, 1), (r.PUBACK, 2), (r.PUBACK, 3), (r.SUBACK, 4)])
        self.assertEqual(got[4].granted, [1, 1])
        # Its own message comes back before the PUBACK that follows the routing.
        self.assertEqual([p.type for p in got[5:]], [r.PUBLISH, r.PUBACK, r.PINGRESP])
        self.assertEqual(got[5].payload, b"5")
        self.assertEqual([sub.next_publish().payload for _ in range(5)],
                         [b"1", b"2", b"3", b"4", b"5"])

    def test_subscribe_of_20000_filters_then_pipelined_publishes(self):
        """A SUBSCRIBE decided in slices (several loop iterations) with two filters a
        plugin decides later, in the middle of it; the PUBLISHes that follow it in the
        same write wait for its SUBACK and go to the new subscriptions."""
        n = 20000
        b = self.broker(limits=f"max_subscriptions_per_client = {n}", delay_ms=100,
                        defer_topics=["slow/#"])
        c = self.connected(b, "wide")
        filters = [(f"f/{i}", 1) for i in range(n)]
        filters[5000] = ("slow/a", 1)
        filters[15000] = ("slow/b", 0)
        c.send(r.subscribe(3, filters)
               + r.publish(f"f/{n - 1}", b"last", qos=1, packet_id=10)
               + r.publish("f/0", b"first", qos=1, packet_id=11)
               + r.publish("slow/a", b"deferred", qos=1, packet_id=12)
               + r.pingreq())
        ack = c.read_packet(timeout=30)
        self.assertEqual((ack.type, ack.packet_id), (r.SUBACK, 3))
        self.assertEqual(len(ack.granted), n)
        self.assertEqual((ack.granted[0], ack.granted[5000], ack.granted[15000]), (1, 1, 0))
        rest = [c.read_packet(timeout=10) for _ in range(7)]
        self.assertEqual([(p.type, p.packet_id if p.type != r.PUBLISH else p.payload)
                          for p in rest],
                         [(r.PUBLISH, b"last"), (r.PUBACK, 10), (r.PUBLISH, b"first"),
                          (r.PUBACK, 11), (r.PUBLISH, b"deferred"), (r.PUBACK, 12),
                          (r.PINGRESP, None)])
        b.wait_log(r'deferred d: authorize client_id=wide action=1 topic=slow/a')

    # -- flow control and decisions ------------------------------------------------------------
    def mixed_flood(self, qos, count, every, persistent=False, payload_size=1000, chunk=2048,
                    delay_ms=20):
        """A publisher into a slow subscriber is held and resumed by flow control many
        times, while every `every`th of its messages waits for a plugin's decision:
        resumes by flow control must not release it before a decision, nor a decision
        before the subscriber drained. Every message arrives once, in order."""
        cfg = 'log_level = "info"\n' + fc.LIMITS + "\n"
        if persistent:  # QoS 2 of a persistent session: routed once durable, later
            cfg += f'[persistence]\npath = "{self.tmp}/mqgate.db"\n'
        cfg += '[listeners.default]\nbind = "127.0.0.1:0"\n'
        cfg += mqgate_test.plugin_table("d", "deferred", tag="d", delay_ms=delay_ms,
                                        defer_topics=["flow/slow/#"])
        b = self.start_broker(cfg)
        port = b.port()
        sub = fc.SlowSubscriber(port, "slow-sub", "flow/#", qos=1, chunk=chunk, pause=0.005)
        sub.start()
        self.assertTrue(sub.subacked.wait(10))
        pub = MixedPublisher(port, "mixed", "flow/t", count, qos, every=every,
                             clean=not persistent, payload_size=payload_size)
        pub.start()
        pub.join(120)
        self.assertFalse(pub.is_alive(), "the publisher did not finish")
        self.assertIsNone(pub.error)
        self.assertEqual(pub.acked, count, "acknowledgements:\n" + b.log()[-3000:])
        got = sub.wait_count(count)
        sub.stop = True
        self.assertEqual(got, count, "messages lost:\n" + b.log()[-3000:])
        fc.check_complete(self, sub.received, ["mixed"], count)
        b.wait_log(r"deferred d: completing -> 17", count=count // every)
        pub.sock.close()
        sub.sock.close()

    def test_deferred_publishes_of_a_publisher_held_by_flow_control(self):
        self.mixed_flood(1, 1500, 50)

    def test_deferred_publishes_of_a_persistent_qos2_publisher_held_by_flow_control(self):
        """Its QoS 2 messages are routed when their ids are durable (a barrier of the
        store's, through the loop's deferred queue): flow control holds it then, while a
        later message of its own may be waiting for the plugin."""
        self.mixed_flood(2, 480, 80, persistent=True, delay_ms=300)

    # -- closing while held, takeover -------------------------------------------------------------
    def test_takeover_while_the_old_connection_awaits_a_decision(self):
        b = self.broker(delay_ms=1500, allow_at_once=True, defer_topics=["slow/#"])
        sub = self.connected(b, "watcher")
        self.assertEqual(sub.subscribe([("#", 1)]), [1])
        old = self.client(b)
        self.assertEqual(old.connect("twin", will_topic="will/twin", will_payload=b"bye")
                         .return_code, 0)
        old.send(r.publish("slow/x", b"held", qos=1, packet_id=1)
                 + r.publish("fast", b"behind", qos=1, packet_id=2))
        b.wait_log(r"deferred d: authorize client_id=twin action=1 topic=slow/x")
        new = self.connected(b, "twin")  # while the old one still awaits the decision
        self.assertTrue(old.closed_by_peer())
        self.assertEqual([p.type for p in old.discarded], [])  # no PUBACK, nothing behind
        will = sub.next_publish()
        self.assertEqual((will.topic, will.payload), ("will/twin", b"bye"))
        new.publish("fast", b"new", qos=1, packet_id=7)
        self.assertEqual(sub.next_publish().payload, b"new")
        # The old decision arrives later, for a connection that is gone.
        b.wait_log(r"deferred d: completing -> 17", timeout=5)
        b.wait_log(r"a deferred decision arrived for a client that is gone or timed out")
        new.ping()
        sub.ping()
        self.assertEqual(sub.pending, [])  # "held" and "behind" were never routed

    def test_clients_that_close_while_held(self):
        """Closing while held for a decision (CONNECT, PUBLISH, a SUBSCRIBE decided in
        slices) leaves nothing behind (the sanitizers check the broker's log); a
        publisher held by flow control that hangs up is released when its subscriber
        goes, and then reads its end. (Closing while held by flow control itself:
        broker_test.cpp, as a held connection with kept bytes stops reading.)"""
        b = self.start_broker(
            'log_level = "debug"\n' + fc.LIMITS + "\nmax_subscriptions_per_client = 20000\n"
            '[listeners.default]\nbind = "127.0.0.1:0"\n'
            + mqgate_test.plugin_table("d", "deferred", tag="d", delay_ms=300,
                                       defer_topics=["slow/#"]))
        port = b.port()
        for i in range(6):
            c = r.RawClient(port)
            data = r.connect(f"gone-{i}")
            if i % 3 == 1:
                data += r.publish("slow/x", b"1", qos=1, packet_id=1) + r.pingreq()
            elif i % 3 == 2:
                # Decided in slices, then a filter waits for the plugin.
                data += (r.subscribe(1, [(f"w/{k}", 0) for k in range(12000)] + [("slow/y", 0)])
                         + r.pingreq())
            c.send(data)
            if i >= 3:
                time.sleep(0.35)  # decided: held for the PUBLISH or SUBSCRIBE now
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            c.close()  # a reset
        # A publisher held by flow control hangs up.
        sub = fc.SlowSubscriber(port, "stalled", "flow/t", qos=1, stall=True)
        sub.start()
        self.assertTrue(sub.subacked.wait(10))
        pub = fc.Publisher(port, "held-pub", "flow/t", 400, 1, payload_size=2000)
        pub.start()
        time.sleep(1.0)  # 800 KB into a subscriber that reads nothing: held long since
        pub.sock.shutdown(socket.SHUT_RDWR)  # (wakes its reader thread: the FIN goes)
        pub.sock.close()
        sub.stop = True
        sub.sock.close()
        alive = r.RawClient(port)
        self.addCleanup(alive.close)
        self.assertEqual(alive.connect("alive", timeout=5).return_code, 0)
        alive.ping()
        b.wait_log(r'client="gone-\d+" .*(gone while plugin "d" owed a decision|disconnected)',
                   count=6, timeout=5)
        # Released when its subscriber went, it read its reset and closed.
        b.wait_log(r'client="held-pub" .*disconnected', timeout=10)


if __name__ == "__main__":
    unittest.main()
