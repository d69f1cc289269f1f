"""[persistence]: durable sessions, queues and retained messages across a restart and a
kill -9, with real clients (raw MQTT) against the broker binary; the bad cases (a
corrupt file, a second broker on the same file, a full store)."""
import os
import re
import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time

import mqtt_raw as R
import pki
import subprocess
from mqgate_test import BROKER_BIN, RUN_AS, BrokerTestCase, plain_config


def persistence_config(path, extra="", limits="", log_level="info"):
    return plain_config(extra=f"""
sys_interval = 0
[limits]
max_queued_messages = 100000
{limits}
[persistence]
path = "{path}"
{extra}
""", log_level=log_level)


class Receiver:
    """A persistent subscriber that keeps its own QoS 2 state across connections (the
    ids it answered PUBREC to and awaits PUBREL for), as a real client must for
    exactly-once, and records every message it delivers."""

    def __init__(self, client_id):
        self.client_id = client_id
        self.got = []
        self.awaiting_rel = set()
        self.client = None

    def connect(self, port, expect_present=None):
        self.client = R.RawClient(port)
        ack = self.client.connect(self.client_id, clean=False)
        assert ack.return_code == 0, ack
        if expect_present is not None:
            assert ack.session_present == expect_present, ack
        return self.client

    def pump(self, stop=None, idle=None):
        """Handles packets until `stop` is set, the connection breaks, or nothing came
        for `idle` seconds."""
        last = time.monotonic()
        while True:
            try:
                p = self.client.read_packet(timeout=0.2)
            except R.NoPacket:
                if stop is not None and stop.is_set():
                    return
                if idle is not None and time.monotonic() - last > idle:
                    return
                continue
            except (R.ConnectionClosed, OSError):
                return
            last = time.monotonic()
            try:
                if p.type == R.PUBLISH:
                    if p.qos == 2:
                        if p.packet_id not in self.awaiting_rel:
                            self.got.append(p.payload)
                            self.awaiting_rel.add(p.packet_id)
                        self.client.send(R.pubrec(p.packet_id))
                    else:
                        self.got.append(p.payload)
                        if p.qos == 1:
                            self.client.send(R.puback(p.packet_id))
                elif p.type == R.PUBREL:
                    self.awaiting_rel.discard(p.packet_id)
                    self.client.send(R.pubcomp(p.packet_id))
            except OSError:
                return


def publisher(port, client_id, qos, acked, stop):
    """Publishes until stopped or cut off; `acked` gets each payload the broker
    acknowledged (PUBACK, or PUBREC for QoS 2)."""
    try:
        c = R.RawClient(port)
        c.connect(client_id, clean=False)
        i = 0
        while not stop.is_set():
            payload = f"{client_id}-{i}".encode()
            pid = i % 65000 + 1
            c.send(R.publish("busy/t", payload, qos=qos, packet_id=pid))
            ack = c.read_packet(timeout=10)
            assert ack.type == (R.PUBACK if qos == 1 else R.PUBREC) and ack.packet_id == pid, ack
            acked.append(payload)
            if qos == 2:
                c.send(R.pubrel(pid))
                c.read_packet(timeout=10)
            i += 1
    except (R.ConnectionClosed, R.NoPacket, OSError):
        pass


class PersistenceTest(BrokerTestCase):
    def setUp(self):
        super().setUp()
        self.db = os.path.join(self.tmp, "state", "mqgate.db")
        os.makedirs(os.path.dirname(self.db))

    def start(self, **kw):
        return self.start_broker(persistence_config(self.db, **kw))

    def kill9(self, broker):
        broker.proc.send_signal(signal.SIGKILL)
        broker.proc.wait()
        broker._log.close()
        self._brokers.remove(broker)

    def refused(self, **kw):
        """Runs a broker that must refuse to start; returns its output."""
        return self.refused_at(self.db, **kw)

    def refused_at(self, db, **kw):
        path = os.path.join(self.tmp, "refused.toml")
        with open(path, "w") as f:
            f.write(persistence_config(db, **kw))
        p = subprocess.run([BROKER_BIN, "--config", path, *RUN_AS], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        return (p.stdout + p.stderr).decode(errors="replace")

    def restart(self, broker, **kw):
        broker.close()
        self._brokers.remove(broker)
        return self.start(**kw)

    def test_kill9_while_busy_loses_nothing_acknowledged(self):
        b = self.start()
        online = Receiver("online-sub")
        online.connect(b.port()).subscribe([("busy/#", 2)])
        offline = Receiver("offline-sub")
        offline.connect(b.port()).subscribe([("busy/#", 1)])
        offline.client.disconnect()
        offline.client.close()

        stop = threading.Event()
        acked1, acked2 = [], []
        threads = [threading.Thread(target=online.pump, args=(stop,)),
                   threading.Thread(target=publisher, args=(b.port(), "pub-q1", 1, acked1, stop)),
                   threading.Thread(target=publisher, args=(b.port(), "pub-q2", 2, acked2, stop))]
        for t in threads:
            t.start()
        # Busy: kill once both publishers have had a good number acknowledged.
        deadline = time.monotonic() + 30
        while (len(acked1) < 200 or len(acked2) < 100) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.kill9(b)
        stop.set()
        for t in threads:
            t.join(20)
        online.client.close()
        self.assertGreater(len(acked1), 0)
        self.assertGreater(len(acked2), 0)

        b = self.start()
        b.wait_log(r"persistence: restored 4 persistent sessions")
        online.connect(b.port(), expect_present=True)
        online.pump(idle=2.0)
        offline.connect(b.port(), expect_present=True)
        offline.pump(idle=2.0)

        for r in (online, offline):
            got = set(r.got)
            missing1 = [p for p in acked1 if p not in got]
            missing2 = [p for p in acked2 if p not in got]
            self.assertEqual(missing1, [], f"{r.client_id}: acknowledged QoS 1 messages lost")
            self.assertEqual(missing2, [], f"{r.client_id}: acknowledged QoS 2 messages lost")
        # QoS 2 end to end (QoS 2 subscription): each message once, acknowledged or not.
        q2 = [p for p in online.got if p.startswith(b"pub-q2-")]
        dups = sorted({p for p in q2 if q2.count(p) > 1})
        self.assertEqual(dups, [], "QoS 2 messages delivered twice")

    def test_retained_subscriptions_and_queue_survive_a_restart(self):
        b = self.start()
        p = R.RawClient(b.port())
        p.connect("pub")
        p.publish("r/a", b"retained qos1", qos=1, retain=True, packet_id=1)
        p.publish("r/b", b"retained qos0", qos=0, retain=True)
        p.publish("r/c", b"soon cleared", qos=1, retain=True, packet_id=2)
        p.publish("r/c", b"", qos=1, retain=True, packet_id=3)
        s = R.RawClient(b.port())
        s.connect("subber", clean=False)
        s.subscribe([("s/#", 1), ("s2/+", 2)])
        s.send(R.unsubscribe(7, ["s2/+"]))
        s.expect(R.UNSUBACK)
        s.disconnect()
        p.publish("s/queued", b"queued while offline", qos=1, packet_id=4)
        p.ping()  # the PUBACK came, so the message is on disk
        p.close()
        b = self.restart(b)
        b.wait_log(r"restored 1 persistent session .* 1 subscription, 1 queued or in-flight "
                   r"message, 2 retained messages")
        s = R.RawClient(b.port())
        ack = s.connect("subber", clean=False)
        self.assertTrue(ack.session_present)
        m = s.next_publish()
        self.assertEqual((m.topic, m.payload, m.qos), ("s/queued", b"queued while offline", 1))
        p = R.RawClient(b.port())
        p.connect("pub2")
        p.publish("s/live", b"no resubscribe needed", qos=1)
        self.assertEqual(s.next_publish().payload, b"no resubscribe needed")
        p.publish("s2/x", b"unsubscribed before the restart", qos=1, packet_id=2)
        with self.assertRaises(R.NoPacket):
            s.next_packet(timeout=0.5)
        r = R.RawClient(b.port())
        r.connect("reader")
        r.subscribe([("r/#", 1)])
        got = {m.topic: (m.payload, m.qos, m.retain) for m in
               (r.next_publish(), r.next_publish())}
        self.assertEqual(got, {"r/a": (b"retained qos1", 1, True),
                               "r/b": (b"retained qos0", 0, True)})
        with self.assertRaises(R.NoPacket):
            r.next_packet(timeout=0.5)

    def test_in_flight_state_and_qos2_ids_survive_kill9(self):
        b = self.start()
        sub = R.RawClient(b.port())
        sub.connect("sub", clean=False)
        sub.subscribe([("f/#", 2)])
        pub = R.RawClient(b.port())
        pub.connect("pub", clean=False)
        # Outgoing QoS 1 in flight (never acknowledged) and QoS 2 past PUBREC.
        pub.publish("f/one", b"qos1 unacked", qos=1, packet_id=1)
        m1 = sub.next_publish(ack=False)
        pub.publish("f/two", b"qos2 half done", qos=2, packet_id=2)
        m2 = sub.next_publish(ack=False)
        sub.send(R.pubrec(m2.packet_id))
        rel = sub.expect(R.PUBREL)
        self.assertEqual(rel.packet_id, m2.packet_id)
        # Incoming QoS 2: PUBREC received, PUBREL not sent yet.
        pub.send(R.publish("f/three", b"qos2 exactly once", qos=2, packet_id=3))
        self.assertEqual(pub.expect(R.PUBREC).packet_id, 3)
        m3 = sub.next_publish(ack=False)
        sub.send(R.pubrec(m3.packet_id))
        sub.expect(R.PUBREL)
        sub.send(R.pubcomp(m3.packet_id))
        time.sleep(0.3)  # the unacknowledged changes (PUBREC from sub...) reach the disk
        self.kill9(b)
        sub.close()
        pub.close()

        b = self.start()
        sub = R.RawClient(b.port())
        self.assertTrue(sub.connect("sub", clean=False).session_present)
        first = sub.read_packet()
        self.assertEqual((first.type, first.packet_id, first.dup, first.payload),
                         (R.PUBLISH, m1.packet_id, True, b"qos1 unacked"))
        second = sub.read_packet()
        self.assertEqual((second.type, second.packet_id), (R.PUBREL, m2.packet_id))
        sub.send(R.puback(m1.packet_id))
        sub.send(R.pubcomp(m2.packet_id))
        pub = R.RawClient(b.port())
        self.assertTrue(pub.connect("pub", clean=False).session_present)
        # The publisher resends its QoS 2 PUBLISH: acknowledged, not delivered again.
        pub.send(R.publish("f/three", b"qos2 exactly once", qos=2, packet_id=3, dup=True))
        self.assertEqual(pub.expect(R.PUBREC).packet_id, 3)
        pub.send(R.pubrel(3))
        self.assertEqual(pub.expect(R.PUBCOMP).packet_id, 3)
        with self.assertRaises(R.NoPacket):
            sub.read_packet(timeout=0.5)

    def test_batched_durability_loses_nothing_acknowledged_on_a_broker_crash(self):
        # "batched" skips the fsync per commit, not the write: a crash of the broker (not
        # of the machine) keeps everything acknowledged.
        b = self.start(extra='durability = "batched"\nflush_interval_ms = 60000')
        s = R.RawClient(b.port())
        s.connect("parked", clean=False)
        s.subscribe([("b/#", 1)])
        s.disconnect()
        p = R.RawClient(b.port())
        p.connect("pub")
        for i in range(50):
            p.publish("b/x", f"m{i}".encode(), qos=1, packet_id=i + 1)
        self.kill9(b)
        b = self.start()
        s = R.RawClient(b.port())
        s.connect("parked", clean=False)
        self.assertEqual([s.next_publish().payload for _ in range(50)],
                         [f"m{i}".encode() for i in range(50)])

    def test_session_expiry_is_absolute_across_a_restart(self):
        b = self.start(limits="session_expiry = 4")
        for cid in ("old", "new"):
            c = R.RawClient(b.port())
            c.connect(cid, clean=False)
            c.subscribe([(f"{cid}/#", 1)])
            c.disconnect()
            if cid == "old":
                time.sleep(2.5)
        b.wait_log(r'client="new".*disconnected')
        time.sleep(0.3)  # unacknowledged changes are on disk within one commit
        self.kill9(b)
        b = self.start(limits="session_expiry = 4")
        # "old" went offline 4 s ago counting the time the broker was down: it expires
        # about 1.5 s after the restart, not 4 s after it.
        b.wait_log(r'session of client "old" expired', timeout=3.5)
        c = R.RawClient(b.port())
        self.assertTrue(c.connect("new", clean=False).session_present)
        c = R.RawClient(b.port())
        self.assertFalse(c.connect("old", clean=False).session_present)

    def test_session_expired_while_down_is_dropped_at_start(self):
        b = self.start(limits="session_expiry = 1")
        c = R.RawClient(b.port())
        c.connect("gone", clean=False)
        c.subscribe([("g/#", 1)])
        c.disconnect()
        b.wait_log(r'client="gone".*disconnected')
        time.sleep(0.3)  # unacknowledged changes are on disk within one commit
        self.kill9(b)
        time.sleep(1.2)
        b = self.start(limits="session_expiry = 1")
        b.wait_log(r"restored 0 persistent sessions \(1 expired while the broker was down\)")

    def test_corrupt_file_stops_the_broker_naming_it(self):
        with open(self.db, "wb") as f:
            f.write(b"this is not a database" * 500)
        log = self.refused()
        self.assertIn(self.db, log)
        self.assertIn("from a backup, or move it", log)
        self.assertIn("not started", log)
        with open(self.db, "rb") as f:  # never wiped
            self.assertEqual(f.read(22), b"this is not a database")

    def test_unreadable_file_stops_the_broker(self):
        if os.geteuid() == 0:
            self.skipTest("root reads any file")
        with open(self.db, "wb"):
            pass
        os.chmod(self.db, 0)
        try:
            self.assertIn(self.db, self.refused())
        finally:
            os.chmod(self.db, 0o600)

    def test_second_broker_on_the_same_file_refuses(self):
        self.start()
        self.assertIn("another mqgate process uses this persistence file", self.refused())

    def test_second_broker_through_a_symlink_refuses(self):
        self.start()
        link = os.path.join(self.tmp, "other.db")
        os.symlink(self.db, link)
        log = self.refused_at(link)
        self.assertIn("another mqgate process uses this persistence file", log)
        self.assertIn(link, log)
        self.assertIn(self.db, log)

    def test_second_broker_through_a_hard_link_refuses(self):
        self.start()
        link = os.path.join(self.tmp, "hard.db")
        os.link(self.db, link)
        self.assertIn("another mqgate process uses this persistence file", self.refused_at(link))

    def test_store_files_are_private(self):
        b = self.start()
        c = R.RawClient(b.port())
        c.connect("keeper", clean=False)
        c.publish("t/retained", b"secret", qos=1, retain=True, packet_id=1)
        for suffix in ("", "-wal", "-shm"):
            mode = os.stat(self.db + suffix).st_mode & 0o777
            self.assertEqual(mode, 0o600, f"{self.db + suffix}: {oct(mode)}")
        c.close()
        self.assertNotIn("accessible to group or others", b.log())
        self.assertNotIn("is empty", b.log())  # a new store is not worth a warning

    def test_store_readable_by_others_is_warned_about(self):
        b = self.start()
        b.close()
        self._brokers.remove(b)
        os.chmod(self.db, 0o644)
        b = self.start()
        b.wait_log(re.escape(self.db) + r".*mode 0?644")

    def test_zero_length_store_file_is_logged(self):
        with open(self.db, "wb"):
            pass
        b = self.start()
        b.wait_log(re.escape(self.db) + r".*empty")

    def park(self, port, client_id, filters):
        """A persistent session subscribed to `filters`, then offline: what matches is
        queued for it, so it needs the store."""
        s = R.RawClient(port)
        s.connect(client_id, clean=False)
        s.subscribe(filters)
        s.disconnect()

    def test_oversized_retained_qos0_does_not_wedge_the_store(self):
        # Issue 22, item 4: with max_bytes = 65536, one 200 KB retained QoS 0 message
        # left every later PUBACK withheld for good (clearing it did not help).
        b = self.start(extra="max_bytes = 65536")
        self.park(b.port(), "parked", [("a/#", 1)])
        attacker = R.RawClient(b.port())
        attacker.connect("attacker")
        attacker.send(R.publish("r/big", os.urandom(200000), qos=0, retain=True))
        b.wait_log(r"WARN .*client=\"attacker\".*message to \"r/big\" refused: it needs about \d+ "
                   r"bytes of the store, \d+ are left under \[persistence\] max_bytes")
        pub = R.RawClient(b.port())
        pub.connect("pub", clean=False)
        for n in range(1, 6):  # queued for "parked": each one is written before its PUBACK
            pub.publish("a/b", b"small %d" % n, qos=1, packet_id=n, timeout=5)
        attacker.ping()  # a QoS 0 publisher is not closed: its message is only not kept
        late = R.RawClient(b.port())
        late.connect("late")
        late.subscribe([("r/#", 0)])
        with self.assertRaises(R.NoPacket):
            late.read_packet(timeout=0.5)  # nothing retained in memory either
        self.assertNotIn("cannot write", b.log())
        pub.disconnect()
        self.kill9(b)  # what was PUBACKed is on disk, whatever else the store refused
        b = self.start(extra="max_bytes = 65536")
        r = Receiver("parked")
        r.connect(b.port(), expect_present=True)
        r.pump(idle=1.0)
        self.assertEqual(r.got, [b"small %d" % n for n in range(1, 6)])

    def test_qos1_message_the_store_cannot_take_is_refused_alone_3_1_1(self):
        # 3.1.1 has no negative acknowledgement: the publisher is disconnected without a
        # PUBACK (it keeps the message and sends it again), and everyone else goes on.
        b = self.start(extra="max_bytes = 131072")
        self.park(b.port(), "parked", [("big/#", 1)])
        p = R.RawClient(b.port())
        p.connect("pub", clean=False)
        p.send(R.publish("big/x", b"x" * 400000, qos=1, packet_id=11))
        self.assertTrue(p.closed_by_peer(timeout=5))
        self.assertEqual(p.discarded, [])  # no PUBACK
        b.wait_log(r"client=\"pub\".*disconnected \(store full\)")
        # ...and the broker still serves, also messages that need the store.
        q = R.RawClient(b.port())
        q.connect("pub", clean=False)
        q.publish("big/y", b"small", qos=1, packet_id=12, timeout=5)
        live = R.RawClient(b.port())
        live.connect("")
        live.subscribe([("live/#", 0)])
        live.publish("live/x", b"still here", qos=0)
        self.assertEqual(live.next_publish().payload, b"still here")
        self.assertNotIn("cannot write", b.log())

    def test_refused_qos2_packet_id_is_free_for_the_resend_3_1_1(self):
        # The refused QoS 2 message's packet id must not stay recorded: a resend with the
        # same id would be taken for a duplicate and acknowledged without delivery.
        b = self.start(extra="max_bytes = 131072")
        self.park(b.port(), "parked", [("q2/#", 2)])
        live = R.RawClient(b.port())
        live.connect("live")
        live.subscribe([("q2/#", 2)])
        p = R.RawClient(b.port())
        p.connect("pub2", clean=False)
        p.send(R.publish("q2/x", b"x" * 400000, qos=2, packet_id=5))
        self.assertTrue(p.closed_by_peer(timeout=5))
        self.assertEqual(p.discarded, [])  # no PUBREC
        with self.assertRaises(R.NoPacket):
            live.read_packet(timeout=0.5)  # refused before routing: nobody got it
        p = R.RawClient(b.port())
        p.connect("pub2", clean=False)
        p.send(R.publish("q2/x", b"fits now", qos=2, packet_id=5, dup=True))
        self.assertEqual(p.expect(R.PUBREC).packet_id, 5)
        p.send(R.pubrel(5))
        self.assertEqual(p.expect(R.PUBCOMP).packet_id, 5)
        self.assertEqual(live.next_publish().payload, b"fits now")


class Mqtt5PersistenceTest(BrokerTestCase):
    """MQTT 5.0 state across restarts: properties, Message Expiry as absolute time,
    subscription options and identifiers, delayed wills; and a store written before the
    5.0 fields existed. mqgate-only (Mosquitto writes its state at intervals)."""

    def setUp(self):
        super().setUp()
        self.db = os.path.join(self.tmp, "state", "mqgate.db")
        os.makedirs(os.path.dirname(self.db))

    start = PersistenceTest.start
    kill9 = PersistenceTest.kill9
    restart = PersistenceTest.restart

    def raw5(self, port, client_id, **kw):
        c = R.RawClient5(port)
        c.connack = c.connect(client_id, **kw)
        assert c.connack.reason == 0, c.connack
        return c

    def test_publish_the_store_cannot_take_gets_quota_exceeded(self):
        # Issue 22, item 4: refused on its own, with a reason code; nothing waits on it.
        b = self.start(extra="max_bytes = 131072")
        s = self.raw5(b.port(), "parked", clean_start=False, props=[(R.SESSION_EXPIRY, 300)])
        s.subscribe([("big/#", 1, False, False, 0)])
        s.send(R.disconnect5())
        live = self.raw5(b.port(), "live")
        live.subscribe([("clean/#", 1, False, False, 0)])
        p = self.raw5(b.port(), "pub")
        big = b"x" * 300000
        self.assertEqual(p.publish("big/x", big, qos=1, packet_id=1), 0x97)  # a queue needs it
        self.assertEqual(p.publish("clean/x", big, qos=1, retain=True, packet_id=2), 0x97)
        self.assertEqual(p.publish("big/x", big, qos=2, packet_id=3), 0x97)  # PUBREC 0x97
        # The same packet id is free again (a failed PUBREC ends that exchange) and what
        # fits is taken; what needs no store (a clean subscriber only) is not refused.
        self.assertEqual(p.publish("big/x", b"small", qos=2, packet_id=3), 0)
        self.assertEqual(p.publish("clean/x", big, qos=1, packet_id=4), 0)
        self.assertEqual(live.next_publish().payload, big)
        b.wait_log(r'WARN .*client="pub".*message to "big/x" refused')
        self.assertNotIn("cannot write", b.log())
        s = self.raw5(b.port(), "parked", clean_start=False, props=[(R.SESSION_EXPIRY, 300)])
        self.assertEqual(s.next_publish().payload, b"small")
        with self.assertRaises(R.NoPacket):
            s.read_packet(timeout=0.5)

    def test_properties_subscription_options_and_ids_survive_a_restart(self):
        b = self.start()
        s = self.raw5(b.port(), "p5", clean_start=False, props=[(R.SESSION_EXPIRY, 300)])
        s.subscribe([("p5/#", 1, True, True, 0)], props=[(R.SUBSCRIPTION_ID, 7)])
        s.send(R.disconnect5())
        p = self.raw5(b.port(), "p5pub")
        props = [(R.PAYLOAD_FORMAT, 1), (R.MESSAGE_EXPIRY, 300), (R.CONTENT_TYPE, "text/plain"),
                 (R.RESPONSE_TOPIC, "p5/reply"), (R.CORRELATION_DATA, b"\x01\x02"),
                 (R.USER_PROPERTY, ("k", "v1")), (R.USER_PROPERTY, ("k", "v2"))]
        p.publish("p5/a", b"with properties", qos=1, props=props)
        p.publish("p5/r", b"retained", qos=1, retain=True, packet_id=2)
        p.close()
        b = self.restart(b)
        s = self.raw5(b.port(), "p5", clean_start=False, props=[(R.SESSION_EXPIRY, 300)])
        self.assertTrue(s.connack.session_present)
        m = s.next_publish()
        self.assertEqual((m.topic, m.payload), ("p5/a", b"with properties"))
        self.assertEqual(R.prop(m, R.PAYLOAD_FORMAT), 1)
        self.assertEqual(R.prop(m, R.CONTENT_TYPE), "text/plain")
        self.assertEqual(R.prop(m, R.RESPONSE_TOPIC), "p5/reply")
        self.assertEqual(R.prop(m, R.CORRELATION_DATA), b"\x01\x02")
        self.assertEqual([v for k, v in m.props if k == R.USER_PROPERTY],
                         [("k", "v1"), ("k", "v2")])
        self.assertEqual(R.prop(m, R.SUBSCRIPTION_ID), 7)
        self.assertTrue(0 < R.prop(m, R.MESSAGE_EXPIRY) <= 300)
        r = s.next_publish()
        # Retain As Published survived: the queued copy keeps RETAIN 1 [MQTT-3.3.1-12].
        self.assertEqual((r.topic, r.retain), ("p5/r", True))
        # No Local survived [MQTT-3.8.3-3]; the identifier still comes with new messages.
        s.publish("p5/own", b"mine", qos=1, packet_id=9)
        p = self.raw5(b.port(), "p5pub")
        p.publish("p5/b", b"after", qos=1)
        m = s.next_publish()
        self.assertEqual((m.topic, R.prop(m, R.SUBSCRIPTION_ID)), ("p5/b", 7))

    def test_message_expiry_counts_the_time_the_broker_was_down(self):
        # [MQTT-3.3.2-5]: expiry is stored as an absolute time, so downtime counts.
        b = self.start()
        s = self.raw5(b.port(), "mx", clean_start=False, props=[(R.SESSION_EXPIRY, 300)])
        s.subscribe([("mx/#", 1)])
        s.send(R.disconnect5())
        p = self.raw5(b.port(), "mxpub")
        p.publish("mx/short", b"expires while down", qos=1, props=[(R.MESSAGE_EXPIRY, 2)])
        p.publish("mx/long", b"kept", qos=1, packet_id=2, props=[(R.MESSAGE_EXPIRY, 300)])
        p.publish("mxr/short", b"retained, expires", qos=1, retain=True, packet_id=3,
                  props=[(R.MESSAGE_EXPIRY, 2)])
        p.close()
        b.stop()
        self._brokers.remove(b)
        time.sleep(2.3)
        b = self.start()
        b.wait_log(r"1 retained message expired while the broker was down")
        s = self.raw5(b.port(), "mx", clean_start=False, props=[(R.SESSION_EXPIRY, 300)])
        got = [p for p in s.read_all(0.7) if p.type == R.PUBLISH]
        self.assertEqual([m.topic for m in got], ["mx/long"])
        self.assertTrue(0 < R.prop(got[0], R.MESSAGE_EXPIRY) <= 298)
        r = self.raw5(b.port(), "mxreader")
        r.subscribe([("mxr/#", 1)])
        self.assertEqual([p for p in r.read_all(0.5) if p.type == R.PUBLISH], [])

    def test_expired_retained_message_is_removed_from_disk(self):
        import sqlite3
        b = self.start(log_level="debug")
        p = self.raw5(b.port(), "rxpub")
        p.publish("rx/t", b"x", qos=1, retain=True, props=[(R.MESSAGE_EXPIRY, 1)])
        p.publish("rx/kept", b"y", qos=1, retain=True, packet_id=2)
        b.wait_log(r'retained message on "rx/t" expired', timeout=5)
        time.sleep(0.3)  # unacknowledged changes are on disk within one commit
        db = sqlite3.connect(self.db)
        rows = db.execute("SELECT topic FROM retained ORDER BY topic").fetchall()
        db.close()
        self.assertEqual(rows, [("rx/kept",)])

    def test_delayed_will_survives_a_restart(self):
        # [MQTT-3.1.3-9] across a restart: the will's due time is absolute.
        b = self.start()
        w = R.RawClient(b.port())
        w.connect("willwatch", clean=False)
        w.subscribe([("dw/#", 1)])
        w.disconnect()
        c = self.raw5(b.port(), "dw", clean_start=False, props=[(R.SESSION_EXPIRY, 60)],
                      will_topic="dw/gone", will_payload=b"bye", will_qos=1,
                      will_props=[(0x18, 3), (R.USER_PROPERTY, ("why", "lost"))])
        c.close()  # the connection is lost: the will waits 3 s
        b.wait_log(r'client="dw".*disconnected')
        time.sleep(0.3)  # unacknowledged changes are on disk within one commit
        b = self.restart(b)
        b.wait_log(r"1 delayed will restored, 0 published")
        w = R.RawClient(b.port())
        self.assertTrue(w.connect("willwatch", clean=False).session_present)
        m = w.next_publish(timeout=5)
        self.assertEqual((m.topic, m.payload), ("dw/gone", b"bye"))

    def test_absurd_will_due_time_in_the_store_starts_cleanly(self):
        import sqlite3
        b = self.start()
        c = self.raw5(b.port(), "far", clean_start=False, props=[(R.SESSION_EXPIRY, 600)],
                      will_topic="far/gone", will_payload=b"bye", will_qos=1,
                      will_props=[(0x18, 300)])
        c.close()
        b.wait_log(r'client="far".*disconnected')
        time.sleep(0.3)
        b.close()
        self._brokers.remove(b)
        for due in (2**63 - 1, -2**63):
            db = sqlite3.connect(self.db)
            db.execute("UPDATE wills SET due_at = ?", (due,))
            db.commit()
            db.close()
            b = self.start()
            b.wait_log(r"1 delayed will restored")
            b.close()  # fails on a sanitizer report in the log
            self._brokers.remove(b)

    def test_delayed_will_of_a_session_expired_while_down_is_published_at_start(self):
        b = self.start()
        w = R.RawClient(b.port())
        w.connect("willwatch2", clean=False)
        w.subscribe([("dx/#", 1)])
        w.disconnect()
        c = self.raw5(b.port(), "dx", clean_start=False, props=[(R.SESSION_EXPIRY, 1)],
                      will_topic="dx/gone", will_payload=b"bye", will_qos=1,
                      will_props=[(0x18, 60)])
        c.close()
        b.wait_log(r'client="dx".*disconnected')
        time.sleep(0.3)
        self.kill9(b)
        time.sleep(1.2)
        b = self.start()
        b.wait_log(r"0 delayed wills restored, 1 published")
        w = R.RawClient(b.port())
        w.connect("willwatch2", clean=False)
        self.assertEqual(w.next_publish().topic, "dx/gone")

    def test_store_from_schema_1_is_migrated(self):
        # A file written before the MQTT 5 fields existed (schema 1) loads, and is
        # migrated in place: its sessions, queue and retained messages are all there.
        import sqlite3
        db = sqlite3.connect(self.db)
        db.executescript(SCHEMA_1 + """
            INSERT INTO meta VALUES('schema', 1);
            INSERT INTO sessions VALUES('old', '(no auth plugin):anonymous', 0, 0);
            INSERT INTO subscriptions VALUES('old', 'm/#', 1);
            INSERT INTO messages VALUES(1, 'm/q', X'717565756564', 1, 0);
            INSERT INTO outgoing VALUES('old', 1, 1, 1, 0, 0, 0);
            INSERT INTO retained VALUES('m/r', X'726574', 1, 0);
        """)
        db.close()
        b = self.start()
        b.wait_log(r"migrated from schema 1 to 3")
        b.wait_log(r"restored 1 persistent session .* 1 subscription, 1 queued or in-flight "
                   r"message, 1 retained message")
        s = R.RawClient(b.port())
        ack = s.connect("old", clean=False)
        self.assertTrue(ack.session_present, b.log())
        self.assertEqual(s.next_publish().payload, b"queued")
        p = self.raw5(b.port(), "newpub")
        p.publish("m/new", b"5.0", qos=1, props=[(R.USER_PROPERTY, ("a", "b"))])
        self.assertEqual(s.next_publish().payload, b"5.0")
        r = R.RawClient(b.port())
        r.connect("reader")
        r.subscribe([("m/r", 1)])
        self.assertEqual(r.next_publish().payload, b"ret")
        b.stop()
        self._brokers.remove(b)
        db = sqlite3.connect(self.db)
        self.assertEqual(db.execute("SELECT value FROM meta WHERE key='schema'").fetchone(), (3,))
        # A 3.1.1 message's rows are as before (5.0 properties live in a table of their own).
        for table in ("messages", "retained"):
            columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
            self.assertEqual(len(columns), 5 if table == "messages" else 4, columns)
        db.close()
        b = self.start()  # and the migrated file opens again as it is
        b.wait_log(r"restored 1 persistent session")


    def test_store_from_schema_2_is_migrated(self):
        # A file written before sessions kept their client certificate (schema 2): its
        # 5.0 session loads, and the sessions table gains the certificate's columns.
        import sqlite3
        db = sqlite3.connect(self.db)
        db.executescript(SCHEMA_2 + """
            INSERT INTO meta VALUES('schema', 2);
            INSERT INTO sessions VALUES('old5', '(no auth plugin):anonymous', 0, 0, 5, 3600);
            INSERT INTO subscriptions VALUES('old5', 'm/#', 1, 0, NULL);
        """)
        db.close()
        b = self.start()
        b.wait_log(r"migrated from schema 2 to 3 \(sessions' certificates\)")
        b.wait_log(r"restored 1 persistent session .* 1 subscription")
        s = self.raw5(b.port(), "old5", clean_start=False, props=[(R.SESSION_EXPIRY, 300)])
        self.assertTrue(s.connack.session_present, b.log())
        b.stop()
        self._brokers.remove(b)
        db = sqlite3.connect(self.db)
        self.assertEqual(db.execute("SELECT value FROM meta WHERE key='schema'").fetchone(), (3,))
        columns = [r[1] for r in db.execute("PRAGMA table_info(sessions)")]
        self.assertEqual(columns[-2:], ["cert_listener", "cert_chain"])
        db.close()


# The tables as main wrote them before MQTT 5 (schema 1), for the migration test.
SCHEMA_1 = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE sessions(client_id TEXT PRIMARY KEY, owner TEXT NOT NULL,
  expires_at INTEGER NOT NULL, last_packet_id INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE subscriptions(client_id TEXT NOT NULL, filter TEXT NOT NULL,
  qos INTEGER NOT NULL, PRIMARY KEY(client_id, filter)) WITHOUT ROWID;
CREATE TABLE messages(id INTEGER PRIMARY KEY, topic TEXT NOT NULL,
  payload BLOB NOT NULL, qos INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE outgoing(client_id TEXT NOT NULL, seq INTEGER NOT NULL,
  message_id INTEGER NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,
  packet_id INTEGER NOT NULL, state INTEGER NOT NULL, PRIMARY KEY(client_id, seq)) WITHOUT ROWID;
CREATE TABLE incoming(client_id TEXT NOT NULL, packet_id INTEGER NOT NULL,
  PRIMARY KEY(client_id, packet_id)) WITHOUT ROWID;
CREATE TABLE retained(topic TEXT PRIMARY KEY, payload BLOB NOT NULL,
  qos INTEGER NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
"""


class TlsResumptionTest(BrokerTestCase):
    """Session-ticket keys kept beside the store: a device resumes its TLS session with a
    broker that restarted in between."""

    @classmethod
    def setUpClass(cls):
        cls.pki_dir = tempfile.mkdtemp(prefix="mqgate-persist-tls-")
        cls.ca = pki.make_ca(cls.pki_dir, key_type="ec")
        cls.server = pki.make_server(cls.pki_dir, cn="localhost", key_type="ec")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki_dir, ignore_errors=True)

    def config(self, persistence):
        table = f'[persistence]\npath = "{self.tmp}/mqgate.db"\n' if persistence else ""
        return (f'log_level = "info"\nsys_interval = 0\n{table}'
                f'[listeners.tls]\nbind = "127.0.0.1:0"\nssl = true\n'
                f'certfile = "{self.server.cert}"\nkeyfile = "{self.server.key}"\n')

    def handshake(self, port, session=None):
        if not hasattr(self, "ctx"):
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.ctx.load_verify_locations(self.ca.cert)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        s = self.ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        s.sendall(R.connect("device", clean=True))
        s.recv(4)  # CONNACK: the ticket has arrived with the handshake
        reused, session = s.session_reused, s.session
        s.close()
        return reused, session

    def resumed_after_restart(self, persistence):
        b = self.start_broker(self.config(persistence))
        _, session = self.handshake(b.port("tls"))
        self.assertTrue(session.has_ticket)
        for _ in range(5):  # more tickets issued (and resumptions) before the restart
            self.handshake(b.port("tls"), session)
            self.handshake(b.port("tls"))
        b.close()
        self._brokers.remove(b)
        b = self.start_broker(self.config(persistence))
        reused, _ = self.handshake(b.port("tls"), session)
        return reused

    def test_tls_session_resumes_after_a_restart(self):
        self.assertTrue(self.resumed_after_restart(True))
        keys = os.path.join(self.tmp, "mqgate.db.tls-tickets-tls")
        self.assertEqual(os.stat(keys).st_mode & 0o777, 0o600)

    def test_without_persistence_a_restart_forgets_the_ticket_keys(self):
        self.assertFalse(self.resumed_after_restart(False))

# Schema 2 (MQTT 5 fields, before sessions' certificates): the tables whose columns
# schema 3 changed, as main wrote them (the others are created as they are).
SCHEMA_2 = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE sessions(client_id TEXT PRIMARY KEY, owner TEXT NOT NULL,
  expires_at INTEGER NOT NULL, last_packet_id INTEGER NOT NULL, protocol_level INTEGER,
  expiry_interval INTEGER) WITHOUT ROWID;
CREATE TABLE subscriptions(client_id TEXT NOT NULL, filter TEXT NOT NULL,
  qos INTEGER NOT NULL, options INTEGER, subscription_id INTEGER,
  PRIMARY KEY(client_id, filter)) WITHOUT ROWID;
"""
