"""Broker robustness under many clients, floods, slow consumers and abrupt closes, and
the IPv6 listener. No timing assertions beyond generous bounded waits."""
import os
import socket
import struct
import threading
import time
import unittest

import brokers
import mqtt_raw as R


class RobustnessTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0}

    def test_200_clients_connect_at_once(self):
        n = 200
        clients = [self.raw() for _ in range(n)]
        for i, c in enumerate(clients):
            c.send(R.connect(f"crowd{i}") + R.subscribe(1, [("crowd/all", 0)]))
        for i, c in enumerate(clients):
            ack = c.expect(R.CONNACK, timeout=10)
            self.assertEqual(ack.return_code, 0, f"client {i}")
            self.assertEqual(c.expect(R.SUBACK, timeout=10).granted, [0])
        p = self.raw_connect("crowd-pub")
        p.publish("crowd/all", b"hello crowd", qos=1)
        for i, c in enumerate(clients):
            m = c.next_publish(timeout=10)
            self.assertEqual(m.payload, b"hello crowd", f"client {i}")

    def test_very_deep_topics_do_not_crash_the_broker(self):
        # Topics and filters with thousands of levels (a 65535-byte topic of '/'s has
        # 65536 levels): the broker may refuse them by closing that connection
        # (Mosquitto does beyond ~200 levels) or route them, but must not crash.
        watch = self.raw_connect("watch-all")
        watch.subscribe([("#", 0)])

        def attempt(fn):
            try:
                fn()
                return "ok"
            except R.ConnectionClosed:
                return "closed"

        for depth in (300, 5000, 65534):
            with self.case(depth=depth):
                topic = "/" * depth + "x"
                s = self.raw_connect("deep-sub")
                attempt(lambda: s.subscribe([("/".join(["+"] * min(depth, 30000)), 0),
                                             ("/" * depth + "#", 0)]))
                p = self.raw_connect("deep-pub")
                attempt(lambda: p.publish(topic, b"deep", qos=1, retain=True))
                late = self.raw_connect("deep-late")
                attempt(lambda: late.subscribe([("#", 0), ("+/#", 0)]))
                watch.read_all(0.2)
                # the broker is alive and still routing
                ok = self.raw_connect("ok-pub")
                ok.publish("alive/check", str(depth).encode(), qos=1)
                got = [m.payload for m in watch.read_all(0.3)
                       if m.type == R.PUBLISH and m.topic == "alive/check"]
                self.assertEqual(got, [str(depth).encode()])
                for c in (s, p, late, ok):
                    c.close()

    def test_connect_disconnect_churn(self):
        for i in range(300):
            c = self.raw()
            c.send(R.connect(f"churn{i % 7}") + R.disconnect())
            c.expect(R.CONNACK)
            c.close()
        stable = self.raw_connect("stable")
        stable.subscribe([("churn", 1)])
        stable.publish("churn", b"alive", qos=1)
        self.assertEqual(stable.next_publish().payload, b"alive")

    def test_abrupt_resets_mid_packet(self):
        watch = self.raw_connect("watch")
        watch.subscribe([("rst/#", 1)])
        for i in range(30):
            c = self.raw_connect(f"rst{i}")
            c.send(R.publish("rst/x", b"y" * 5000, qos=1)[:2000])
            # RST instead of FIN
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        p = self.raw_connect("after")
        p.publish("rst/ok", b"fine", qos=1)
        got = [m.payload for m in watch.read_all(0.5, first=5) if m.type == R.PUBLISH]
        self.assertEqual(got, [b"fine"])

    def test_reset_while_broker_has_backlog_for_the_client(self):
        # A reader stops reading while the broker is sending it a large backlog, then
        # resets the connection: the broker drops that client's state cleanly.
        watch = self.raw_connect("watch")
        watch.subscribe([("backlog/end", 1)])
        for round_ in range(5):
            slow = self.raw()
            slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.send(R.connect(f"slow{round_}", clean=round_ % 2 == 0)
                      + R.subscribe(1, [("backlog/#", round_ % 3)]))
            time.sleep(0.1)
            p = self.raw_connect("pub")
            for i in range(30):
                p.publish("backlog/x", b"b" * 50000, qos=i % 3, packet_id=i + 1)
            slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            slow.close()
            p.publish("backlog/end", str(round_).encode(), qos=1, packet_id=99)
            self.assertEqual(watch.next_publish().payload, str(round_).encode())
            p.disconnect()

    def test_burst_of_qos1_messages_all_delivered_in_order(self):
        s = self.raw_connect("burst-sub")
        s.subscribe([("burst", 1)])
        p = self.paho("burst-pub")
        n = 1000
        infos = [p.c.publish("burst", str(i).encode(), 1) for i in range(n)]
        got = []
        while len(got) < n:
            got.append(int(s.next_publish(timeout=10).payload))
        self.assertEqual(got, list(range(n)))
        for info in infos:
            info.wait_for_publish(5)
            self.assertTrue(info.is_published())

    def test_sigterm_with_busy_clients(self):
        # The broker stops cleanly (exit 0, no sanitizer report for mqgate) while
        # clients are connected with in-flight and queued messages.
        stalled = self.raw_connect("stalled", clean=False)
        stalled.subscribe([("busy/#", 2)])
        fast = self.paho("fast")
        fast.subscribe("busy/#", 1)
        p = self.raw_connect("pub", will_topic="busy/will", will_payload=b"w")
        for i in range(50):
            p.publish("busy/t", b"z" * 1000, qos=1 + i % 2, packet_id=i + 1)
        half = self.raw_connect("half")
        half.send(R.publish("busy/t", b"q" * 100, qos=1)[:30])
        self.broker.close()
        for c in (stalled, p, half):
            self.assertClosed(c, timeout=10)

    def test_outgoing_packet_ids_wrap_around_without_zero(self):
        # More than 65535 QoS 1 messages to one subscriber: the broker's packet ids wrap
        # and never use 0 [MQTT-2.3.1-1]; nothing is lost or reordered.
        s = self.raw_connect("wrap-sub")
        s.subscribe([("wrap", 1)])
        p = self.raw_connect("wrap-pub")
        total, batch = 66000, 500
        seen_ids = set()
        wrapped = False
        received = 0
        for start in range(0, total, batch):
            p.send(b"".join(R.publish("wrap", str(i).encode(), qos=1,
                                      packet_id=i % 65535 + 1)
                            for i in range(start, start + batch)))
            while received < start + batch:
                m = s.read_packet(10)
                self.assertEqual(m.type, R.PUBLISH)
                self.assertNotEqual(m.packet_id, 0, "packet id 0 after wrap")
                self.assertEqual(int(m.payload), received, "lost or reordered")
                if m.packet_id in seen_ids:
                    wrapped = True
                seen_ids.add(m.packet_id)
                s.send(R.puback(m.packet_id))
                received += 1
            for _ in range(batch):
                p.expect(R.PUBACK, timeout=10)
        # 66,000 messages need more ids than there are: the broker went up to the last
        # one and came round again (0 was checked for on every message).
        self.assertIn(65535, seen_ids, "packet ids never reached 65535")
        self.assertTrue(wrapped, "no packet id was used twice in 66,000 messages")
        self.assertEqual(received, total)

    def test_stalled_qos1_subscriber_does_not_block_publisher(self):
        # A QoS 1 subscriber that never acks: its window and queue fill up and further
        # messages for it are dropped, but the publisher's QoS 1 flow keeps completing
        # and a healthy subscriber gets everything. (The publisher goes in chunks the
        # healthy subscriber can keep up with, so only the stalled one overflows.)
        stalled = self.raw_connect("stalled-q1")
        stalled.subscribe([("q1flood", 1)])
        healthy = self.paho("healthy")
        healthy.subscribe("q1flood", 1)
        p = self.paho("q1-flooder")
        got = []
        for chunk in range(0, 2500, 250):
            infos = [p.c.publish("q1flood", str(i).encode(), 1)
                     for i in range(chunk, chunk + 250)]
            for info in infos:
                info.wait_for_publish(20)
                self.assertTrue(info.is_published(),
                                "publisher blocked by a stalled subscriber")
            got += [int(m.payload) for m in healthy.get_n(250, timeout=20)]
        self.assertEqual(got, list(range(2500)))

    def test_stalled_reader_does_not_stall_others(self):
        # A subscriber that never reads while a publisher floods its topic: other
        # clients (on that topic and on others) keep being served.
        stalled = self.raw()
        stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.send(R.connect("stalled") + R.subscribe(1, [("flood/#", 0)]))
        time.sleep(0.2)  # let CONNECT/SUBSCRIBE be processed; never read again
        reader = self.paho("reader")
        reader.subscribe("flood/#", 0)
        other_sub = self.raw_connect("other-sub")
        other_sub.subscribe([("quiet/t", 1)])
        other_pub = self.raw_connect("other-pub")

        flooder = self.raw_connect("flooder")
        chunk = os.urandom(10 * 1024)
        stop = threading.Event()
        sent = [0]

        def flood():
            try:
                while not stop.is_set() and sent[0] < 3000:
                    flooder.send(R.publish("flood/data", chunk, qos=0))
                    sent[0] += 1
            except OSError:
                pass

        t = threading.Thread(target=flood, daemon=True)
        t.start()
        try:
            # during the flood, an unrelated pair still gets through within 5 s each
            for i in range(5):
                other_pub.publish("quiet/t", str(i).encode(), qos=1, packet_id=i + 1,
                                  timeout=5)
                self.assertEqual(other_sub.next_publish(timeout=5).payload, str(i).encode())
                time.sleep(0.1)
        finally:
            t.join(30)
            stop.set()
        self.assertGreater(sent[0], 500, "flooder could hardly send")
        # the reading subscriber of the flooded topic catches up (QoS 0 to it may be
        # dropped while its backlog is large, so the end marker is repeated)
        deadline = time.monotonic() + 30
        done = False
        while not done and time.monotonic() < deadline:
            flooder.send(R.publish("flood/end", b"end", qos=0))
            for m in reader.drain(0.5):
                done = done or m.topic == "flood/end"
        self.assertTrue(done, "reader never got the end marker")
        self.assertOpen(other_pub)


@unittest.skipUnless(brokers.has_ipv6_loopback(), "no ::1 on this host")
class IPv6Test(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0, "ipv6": True}

    def test_ipv6_listener(self):
        self.assertEqual(self.broker.host, "::1")
        s = self.raw_connect("v6-sub")
        s.subscribe([("v6/#", 2)])
        p = self.raw_connect("v6-pub")
        p.publish("v6/raw", b"over ::1", qos=2)
        self.assertEqual(s.next_publish().payload, b"over ::1")
        ps = self.paho("v6-paho")
        ps.subscribe("v6/#", 1)
        p.publish("v6/paho", b"paho too", qos=1, packet_id=2)
        self.assertEqual(ps.get().payload, b"paho too")
        r = self.run_cli("mosquitto_pub", "-t", "v6/cli", "-m", "cli", "-q", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(ps.get().payload, b"cli")

    def test_ipv4_not_served_by_ipv6_only_listener(self):
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", self.broker.port), timeout=2).close()


if __name__ == "__main__":
    unittest.main()
