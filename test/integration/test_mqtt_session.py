"""MQTT 3.1.1 conformance: sessions (clean session 0/1, offline queueing, redelivery on
reconnect, session takeover) and the per-client in-flight window and queue bounds
(spec 3.1.2.4, 3.1.4, 4.1, 4.4)."""
import threading
import time
import unittest

import brokers
import mqtt_raw as R
from brokers import skip_if_mosquitto


class SessionTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0}

    def persistent(self, client_id, expect_session_present=None, **kw):
        return self.raw_connect(client_id, clean=False,
                                expect_session_present=expect_session_present, **kw)

    def reconnect(self, client_id, expect_session_present=True):
        """Reconnects with clean session 0; retries while the broker may still be
        processing the previous connection's close (only for an abrupt close)."""
        return self.persistent(client_id, expect_session_present=expect_session_present)

    def go_offline(self, c):
        c.disconnect()
        time.sleep(0.05)

    def test_subscriptions_survive_disconnect(self):
        c = self.persistent("keep", expect_session_present=False)
        c.subscribe([("keep/#", 1)])
        self.go_offline(c)
        c = self.reconnect("keep")
        p = self.raw_connect("pub")
        p.publish("keep/x", b"no resubscribe needed", qos=1)
        self.assertEqual(c.next_publish().payload, b"no resubscribe needed")

    def test_offline_qos1_qos2_queued_in_order_qos0_not(self):
        # 3.1.2.4: the session state includes "QoS 1 and QoS 2 messages which have not
        # been sent to the Client"; QoS 0 MAY be stored (mqgate, like Mosquitto's
        # default, does not).
        c = self.persistent("offline", expect_session_present=False)
        c.subscribe([("off/#", 2)])
        self.go_offline(c)
        p = self.raw_connect("pub")
        plan = [(0, b"q0-a"), (1, b"q1-a"), (2, b"q2-a"), (0, b"q0-b"), (1, b"q1-b"),
                (2, b"q2-b"), (1, b"q1-c")]
        for i, (q, payload) in enumerate(plan):
            p.publish("off/t", payload, qos=q, packet_id=i + 1)
        c = self.reconnect("offline")
        got = []
        while True:
            try:
                got.append(c.next_publish(timeout=0.5))
            except R.NoPacket:
                break
        self.assertEqual([(m.payload, m.qos) for m in got],
                         [(pl, q) for q, pl in plan if q > 0])
        for m in got:
            # matched an established subscription -> RETAIN 0; first delivery -> DUP 0
            self.assertFalse(m.retain)
            self.assertFalse(m.dup)

    def test_offline_messages_use_subscription_qos(self):
        c = self.persistent("offq", expect_session_present=False)
        c.subscribe([("offq/1", 1), ("offq/2", 2)])
        self.go_offline(c)
        p = self.raw_connect("pub")
        p.publish("offq/1", b"two-to-one", qos=2)
        p.publish("offq/2", b"one-stays-one", qos=1, packet_id=2)
        c = self.reconnect("offq")
        got = sorted((m.topic, m.qos) for m in (c.next_publish(), c.next_publish()))
        self.assertEqual(got, [("offq/1", 1), ("offq/2", 1)])

    def test_offline_retained_publish_delivered_with_retain_0(self):
        # It matched an established subscription [MQTT-3.3.1-9].
        c = self.persistent("offret", expect_session_present=False)
        c.subscribe([("offret", 1)])
        self.go_offline(c)
        p = self.raw_connect("pub")
        p.publish("offret", b"r", qos=1, retain=True)
        c = self.reconnect("offret")
        m = c.next_publish()
        self.assertEqual((m.payload, m.retain), (b"r", False))

    def test_clean_session_1_discards_stored_session(self):
        # [MQTT-3.1.2-6] CleanSession 1: discard any previous Session and start a new one.
        c = self.persistent("wipe", expect_session_present=False)
        c.subscribe([("wipe/#", 1)])
        self.go_offline(c)
        p = self.raw_connect("pub")
        p.publish("wipe/a", b"queued", qos=1)
        c = self.raw_connect("wipe", clean=True, expect_session_present=False)
        p.publish("wipe/b", b"not subscribed any more", qos=1, packet_id=2)
        self.assertEqual(c.read_all(0.5), [], "old session's queue or subscription")
        self.go_offline(c)
        c = self.persistent("wipe", expect_session_present=False)
        p.publish("wipe/c", b"nor now", qos=1, packet_id=3)
        self.assertEqual(c.read_all(0.5), [])

    def test_clean_session_1_leaves_nothing_behind(self):
        # [MQTT-3.1.2-6] the Session lasts as long as the Network Connection.
        c = self.raw_connect("transient", clean=True)
        c.subscribe([("tr", 1)])
        self.go_offline(c)
        p = self.raw_connect("pub")
        p.publish("tr", b"nobody", qos=1)
        c = self.persistent("transient", expect_session_present=False)
        self.assertEqual(c.read_all(0.5), [])

    def test_unsubscribe_persists_across_reconnect(self):
        c = self.persistent("unsubp")
        c.subscribe([("up/a", 1), ("up/b", 1)])
        c.send(R.unsubscribe(2, ["up/a"]))
        c.expect(R.UNSUBACK)
        self.go_offline(c)
        c = self.reconnect("unsubp")
        p = self.raw_connect("pub")
        p.publish("up/a", b"a", qos=1)
        p.publish("up/b", b"b", qos=1, packet_id=2)
        self.assertEqual([m.payload for m in c.read_all(0.5, first=5)], [b"b"])

    def test_retained_not_resent_on_session_resume(self):
        # Retained messages are sent in response to SUBSCRIBE [MQTT-3.3.1-6]; resuming a
        # session re-sends nothing that was already delivered.
        p = self.raw_connect("pub")
        p.publish("resume/r", b"retained", qos=1, retain=True)
        c = self.persistent("resumer")
        c.subscribe([("resume/#", 1)])
        self.assertEqual(c.next_publish().payload, b"retained")
        self.go_offline(c)
        c = self.reconnect("resumer")
        self.assertEqual(c.read_all(0.5), [])

    def test_session_kept_after_keepalive_timeout(self):
        # A persistent client dropped for keep-alive keeps its session: messages
        # published meanwhile are waiting when it comes back.
        c = self.persistent("dozy", keepalive=1)
        c.subscribe([("dozy/#", 1)])
        self.assertTrue(c.closed_by_peer(10.0), "not dropped for keep-alive")
        p = self.raw_connect("pub")
        p.publish("dozy/x", b"while you slept", qos=1)
        c = self.reconnect("dozy")
        self.assertEqual(c.next_publish().payload, b"while you slept")

    def test_will_queued_for_offline_persistent_subscriber(self):
        s = self.persistent("heir")
        s.subscribe([("testament/#", 2)])
        self.go_offline(s)
        d = self.raw_connect("dying", will_topic="testament/x", will_payload=b"all yours",
                             will_qos=2)
        d.close()
        time.sleep(0.2)
        s = self.reconnect("heir")
        m = s.next_publish()
        self.assertEqual((m.topic, m.payload, m.qos), ("testament/x", b"all yours", 2))

    # -- redelivery on reconnect [MQTT-4.4.0-1] ----------------------------------------
    def test_unacked_qos1_redelivered_with_dup_and_same_id(self):
        # [MQTT-4.4.0-1] When a Client reconnects with CleanSession set to 0, both the
        # Client and Server MUST re-send any unacknowledged PUBLISH Packets (where QoS >
        # 0) and PUBREL Packets using their original Packet Identifiers.
        # [MQTT-3.3.1-1] The DUP flag MUST be set to 1 when re-delivering a PUBLISH.
        c = self.persistent("redeliver1")
        c.subscribe([("rd/1", 1)])
        p = self.raw_connect("pub")
        p.publish("rd/1", b"ack me", qos=1)
        first = c.next_publish(ack=False)
        self.assertFalse(first.dup)
        c.close()  # no PUBACK, abrupt
        c = self.reconnect("redeliver1")
        again = c.next_publish(ack=False)
        self.assertEqual((again.topic, again.payload, again.qos),
                         ("rd/1", b"ack me", 1))
        self.assertTrue(again.dup, "DUP must be 1 on re-delivery")
        self.assertEqual(again.packet_id, first.packet_id, "original packet id")
        c.send(R.puback(again.packet_id))
        self.assertEqual(c.read_all(0.5), [])
        self.go_offline(c)
        c = self.reconnect("redeliver1")
        self.assertEqual(c.read_all(0.5), [], "acknowledged message delivered again")

    def test_unreceived_qos2_publish_redelivered_with_dup(self):
        c = self.persistent("redeliver2")
        c.subscribe([("rd/2", 2)])
        p = self.raw_connect("pub")
        p.publish("rd/2", b"exactly once", qos=2)
        first = c.next_publish(ack=False)
        c.close()  # no PUBREC
        c = self.reconnect("redeliver2")
        again = c.next_publish(ack=False)
        self.assertEqual((again.payload, again.qos, again.packet_id),
                         (b"exactly once", 2, first.packet_id))
        self.assertTrue(again.dup)
        c.ack(again)
        self.assertEqual(c.read_all(0.5), [])

    def test_redelivered_retained_message_keeps_retain_flag(self):
        # A retained message sent in response to SUBSCRIBE (RETAIN=1) and not
        # acknowledged is re-sent on reconnect as the same packet: DUP=1, same id,
        # RETAIN still 1.
        p = self.raw_connect("pub")
        p.publish("rr/t", b"ret", qos=1, retain=True)
        c = self.persistent("rr")
        c.subscribe([("rr/t", 1)])
        first = c.next_publish(ack=False)
        self.assertTrue(first.retain)
        c.close()
        c = self.reconnect("rr")
        again = c.next_publish(ack=False)
        self.assertEqual((again.payload, again.packet_id, again.dup, again.retain),
                         (b"ret", first.packet_id, True, True))

    def test_qos2_in_pubrel_state_resumed_with_pubrel(self):
        c = self.persistent("resume-rel")
        c.subscribe([("rd/rel", 2)])
        p = self.raw_connect("pub")
        p.publish("rd/rel", b"released", qos=2)
        m = c.next_publish(ack=False)
        c.send(R.pubrec(m.packet_id))
        rel = c.expect(R.PUBREL)
        self.assertEqual(rel.packet_id, m.packet_id)
        c.close()  # no PUBCOMP
        c = self.reconnect("resume-rel")
        nxt = c.read_packet()
        self.assertEqual(nxt.type, R.PUBREL, f"expected PUBREL, got {nxt!r} (the PUBLISH "
                         "must not be sent again once PUBREC was received)")
        self.assertEqual((nxt.packet_id, nxt.flags), (m.packet_id, 0x2))
        c.send(R.pubcomp(m.packet_id))
        self.assertEqual(c.read_all(0.5), [])

    def test_incoming_qos2_state_survives_publisher_reconnect(self):
        # The publisher got PUBREC, lost the connection and sends PUBREL on its resumed
        # session: PUBCOMP comes back and the message is delivered exactly once.
        s = self.raw_connect("s")
        s.subscribe([("in2", 2)])
        p = self.persistent("pub2")
        p.send(R.publish("in2", b"just once", qos=2, packet_id=33))
        self.assertEqual(p.expect(R.PUBREC).packet_id, 33)
        p.close()
        time.sleep(0.1)
        p = self.reconnect("pub2")
        p.send(R.pubrel(33))
        self.assertEqual(p.expect(R.PUBCOMP).packet_id, 33)
        got = [s.next_publish()] + [x for x in s.read_all(0.5) if x.type == R.PUBLISH]
        self.assertEqual([m.payload for m in got], [b"just once"])

    def test_queued_then_inflight_order_after_reconnect(self):
        # An unacked in-flight message and messages queued while offline come back in
        # their original order.
        c = self.persistent("mix")
        c.subscribe([("mix", 1)])
        p = self.raw_connect("pub")
        p.publish("mix", b"0", qos=1)
        c.next_publish(ack=False)
        c.close()
        time.sleep(0.1)
        for i in range(1, 5):
            p.publish("mix", str(i).encode(), qos=1, packet_id=i + 1)
        c = self.reconnect("mix")
        got = [c.next_publish() for _ in range(5)]
        self.assertEqual([m.payload for m in got], [b"0", b"1", b"2", b"3", b"4"])
        self.assertTrue(got[0].dup)

    # -- session takeover [MQTT-3.1.4-2] -----------------------------------------------
    def test_takeover_closes_first_connection(self):
        # [MQTT-3.1.4-2] If the ClientId represents a Client already connected to the
        # Server then the Server MUST disconnect the existing Client.
        a = self.raw_connect("dup-id")
        b = self.raw_connect("dup-id")
        self.assertClosed(a, msg="old connection must be closed")
        self.assertOpen(b)
        b.subscribe([("take/t", 1)])
        p = self.raw_connect("pub")
        p.publish("take/t", b"to the new one", qos=1)
        self.assertEqual(b.next_publish().payload, b"to the new one")

    def test_takeover_carries_persistent_session(self):
        a = self.persistent("carry", expect_session_present=False)
        a.subscribe([("carry/#", 1)])
        b = self.persistent("carry", expect_session_present=True)
        self.assertClosed(a)
        p = self.raw_connect("pub")
        p.publish("carry/x", b"carried", qos=1)
        self.assertEqual(b.next_publish().payload, b"carried")

    def test_takeover_redelivers_inflight(self):
        a = self.persistent("inflight-carry")
        a.subscribe([("ic", 1)])
        p = self.raw_connect("pub")
        p.publish("ic", b"pending", qos=1)
        first = a.next_publish(ack=False)
        b = self.persistent("inflight-carry", expect_session_present=True)
        self.assertClosed(a)
        m = b.next_publish(ack=False)
        self.assertEqual((m.payload, m.packet_id, m.dup), (b"pending", first.packet_id, True))

    def test_takeover_with_clean_session_1_drops_session(self):
        a = self.persistent("carry-clean")
        a.subscribe([("cc", 1)])
        b = self.raw_connect("carry-clean", clean=True, expect_session_present=False)
        self.assertClosed(a)
        p = self.raw_connect("pub")
        p.publish("cc", b"nobody", qos=1)
        self.assertEqual(b.read_all(0.5), [])

    def test_repeated_takeovers(self):
        conns = [self.persistent("flappy") for _ in range(10)]
        for old in conns[:-1]:
            self.assertClosed(old)
        self.assertOpen(conns[-1])

    def test_no_qos1_loss_across_repeated_takeovers(self):
        # A persistent QoS 1 subscriber whose connection is replaced every few messages,
        # leaving the last message of each connection unacknowledged: every message
        # still arrives at least once (duplicates allowed, and only with DUP=1).
        p = self.raw_connect("pub")
        c = self.persistent("hopper")
        c.subscribe([("hop", 1)])
        received = []
        n, per = 60, 6
        for start in range(0, n, per):
            for i in range(start, start + per):
                p.publish("hop", str(i).encode(), qos=1, packet_id=i % 1000 + 1)
            # read what this connection gets; ack all but the last one
            got = []
            while True:
                try:
                    got.append(c.next_publish(timeout=0.3, ack=False))
                except (R.NoPacket, R.ConnectionClosed):
                    break
            for m in got[:-1]:
                c.send(R.puback(m.packet_id))
            received += got
            nxt = self.persistent("hopper", expect_session_present=True)
            self.assertClosed(c)
            c = nxt
        received += [c.next_publish(timeout=0.5) for _ in range(1)]
        received += [m for m in c.read_all(0.5) if m.type == R.PUBLISH]
        payloads = [int(m.payload) for m in received]
        self.assertEqual(sorted(set(payloads)), list(range(n)), "QoS 1 message lost")
        first_seen = set()
        for m in received:
            v = int(m.payload)
            if v in first_seen:
                self.assertTrue(m.dup, f"duplicate of {v} without DUP=1")
            first_seen.add(v)

    def test_takeover_of_a_stalled_connection(self):
        # The old connection has a large unsent backlog (more than the socket buffers
        # hold) when it is taken over.
        old = self.raw()
        old.send(R.connect("stalled-id", clean=False) + R.subscribe(1, [("st/#", 1)]))
        time.sleep(0.2)
        p = self.raw_connect("pub")
        # Sent from a thread, without waiting for PUBACKs: mqgate stops reading the
        # publisher while the stalled subscriber is over its high-water mark (until the
        # takeover, or its slow_subscriber grace), and TCP then blocks the writer.
        # The new connection is read at once: left unread it would hold the publisher
        # up in turn (and be disconnected as a slow subscriber after its grace).
        data = b"".join(R.publish("st/x", bytes([i]) * 200000, qos=1 if i % 2 else 0,
                                  packet_id=i + 1) for i in range(60))
        data += R.publish("st/after", b"after", qos=1, packet_id=100)
        p.sock.settimeout(60)
        writer = threading.Thread(target=p.send, args=(data,), daemon=True)
        writer.start()
        time.sleep(0.5)
        new = self.persistent("stalled-id", expect_session_present=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = new.next_publish(timeout=10)
            if m.topic == "st/after":
                break
        self.assertEqual(m.payload, b"after")
        self.assertClosed(old, timeout=10)
        writer.join(10)

    def test_paho_persistent_session(self):
        sub = self.paho("paho-persist", clean_session=False)
        sub.subscribe("pp/#", 2)
        sub.disconnect()
        pub = self.paho("paho-pub")
        for q in (0, 1, 2):
            pub.publish("pp/x", f"q{q}".encode(), qos=q)
        sub = self.paho("paho-persist", clean_session=False)
        self.assertEqual(sub.flags.get("session present"), 1)
        self.assertEqual([m.payload for m in sub.get_n(2)], [b"q1", b"q2"])
        sub.expect_nothing(0.3)

    def test_many_persistent_sessions(self):
        n = 20
        for i in range(n):
            c = self.persistent(f"many{i}")
            c.subscribe([(f"many/{i}", 1), ("many/all", 2)])
            c.disconnect()
        p = self.raw_connect("pub")
        p.publish("many/all", b"everyone", qos=2)
        for i in range(n):
            p.publish(f"many/{i}", str(i).encode(), qos=1, packet_id=i + 2)
        for i in range(n):
            c = self.reconnect(f"many{i}")
            got = [c.next_publish() for _ in range(2)]
            self.assertEqual([m.payload for m in got], [b"everyone", str(i).encode()])
            c.disconnect()


class QueueLimitTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0, "max_inflight_messages": 2,
                       "max_queued_messages": 5}

    def drain(self, c, ack=True):
        got = []
        while True:
            try:
                got.append(c.next_publish(timeout=0.5, ack=ack))
            except (R.NoPacket, R.ConnectionClosed):
                return got

    def test_offline_queue_bounded_drops_newest(self):
        c = self.raw_connect("bounded", clean=False)
        c.subscribe([("bq", 1)])
        c.disconnect()
        time.sleep(0.05)
        p = self.raw_connect("pub")
        for i in range(12):
            p.publish("bq", str(i).encode(), qos=1, packet_id=i + 1)
        c = self.raw_connect("bounded", clean=False, expect_session_present=True)
        got = [int(m.payload) for m in self.drain(c)]
        self.assertEqual(got, [0, 1, 2, 3, 4], "oldest max_queued_messages kept, in order")

    def test_offline_queue_counts_qos2_too(self):
        c = self.raw_connect("bounded2", clean=False)
        c.subscribe([("bq2", 2)])
        c.disconnect()
        time.sleep(0.05)
        p = self.raw_connect("pub")
        for i in range(9):
            p.publish("bq2", str(i).encode(), qos=1 + i % 2, packet_id=i + 1)
        c = self.raw_connect("bounded2", clean=False, expect_session_present=True)
        self.assertEqual([int(m.payload) for m in self.drain(c)], [0, 1, 2, 3, 4])

    def test_online_slow_consumer_gets_window_plus_queue(self):
        # Connected but not acking: max_inflight_messages in flight plus queued ones.
        # Mosquitto queues max_queued_messages and drops the newest beyond; mqgate stops
        # reading the publisher instead (docs/operations.md, "Flow control"), so nothing is lost.
        c = self.raw_connect("slow")
        c.subscribe([("sq", 1)])
        p = self.raw_connect("pub")
        p.send(b"".join(R.publish("sq", str(i).encode(), qos=1, packet_id=i + 1)
                        for i in range(20)))  # pipelined: the PUBACKs may wait
        time.sleep(0.3)
        got = [int(m.payload) for m in self.drain(c, ack=True)]
        self.assertEqual(got, list(range(7)) if brokers.MOSQUITTO else list(range(20)))

    def test_inflight_window_limits_unacked_messages(self):
        c = self.raw_connect("window")
        c.subscribe([("win", 1)])
        p = self.raw_connect("pub")
        for i in range(5):
            p.publish("win", str(i).encode(), qos=1, packet_id=i + 1)
        first = c.read_all(0.5, first=5)
        self.assertEqual([m.payload for m in first], [b"0", b"1"],
                         "max_inflight_messages=2 unacknowledged PUBLISHes")
        c.send(R.puback(first[0].packet_id))
        nxt = c.next_publish(ack=False)
        self.assertEqual(nxt.payload, b"2")
        # everything arrives, in order, once acked
        rest = [nxt] + self.drain(c, ack=False)
        for m in [first[1]] + rest:
            c.send(R.puback(m.packet_id))
        rest += self.drain(c)
        self.assertEqual([m.payload for m in rest], [b"2", b"3", b"4"])

    @skip_if_mosquitto("Mosquitto 2.0.11 sends two more PUBLISHes after one PUBACK, so "
                       "three are unacknowledged with max_inflight_messages=2")
    def test_inflight_window_refills_one_per_ack(self):
        c = self.raw_connect("window1")
        c.subscribe([("win1", 1)])
        p = self.raw_connect("pub")
        # Pipelined: past half the queue mqgate holds the publisher (and its PUBACKs).
        p.send(b"".join(R.publish("win1", str(i).encode(), qos=1, packet_id=i + 1)
                        for i in range(6)))
        inflight = c.read_all(0.5, first=5)
        self.assertEqual(len(inflight), 2)
        for expected in (b"2", b"3", b"4", b"5"):
            c.send(R.puback(inflight.pop(0).packet_id))
            more = c.read_all(0.3)
            self.assertEqual([m.payload for m in more], [expected])
            inflight += more

    def test_out_of_order_acks_free_the_window(self):
        c = self.raw_connect("ooo")
        c.subscribe([("ooo", 1)])
        p = self.raw_connect("pub")
        for i in range(5):
            p.publish("ooo", str(i).encode(), qos=1, packet_id=i + 1)
        first = c.read_all(0.5, first=5)
        self.assertEqual([m.payload for m in first], [b"0", b"1"])
        c.send(R.puback(first[1].packet_id))  # the second one first
        self.assertEqual(c.next_publish(ack=False).payload, b"2")
        c.send(R.puback(first[0].packet_id))
        self.assertEqual(c.next_publish(ack=False).payload, b"3")

    def test_bogus_puback_does_not_open_the_window(self):
        c = self.raw_connect("bogus")
        c.subscribe([("bogus", 1)])
        p = self.raw_connect("pub")
        for i in range(4):
            p.publish("bogus", str(i).encode(), qos=1, packet_id=i + 1)
        first = c.read_all(0.5, first=5)
        self.assertEqual(len(first), 2)
        used = {m.packet_id for m in first}
        bogus = next(i for i in range(1000, 2000) if i not in used)
        c.send(R.puback(bogus))
        self.assertEqual([x for x in c.read_all(0.4) if x.type == R.PUBLISH], [],
                         "a PUBACK for an unknown id freed a window slot")

    @skip_if_mosquitto("Mosquitto 2.0.11 logs 'Reloading config.' on SIGHUP but keeps "
                       "the old max_inflight_messages, although its manual says it is "
                       "reloaded (not an MQTT spec matter)")
    def test_sighup_reload_changes_the_window(self):
        # [limits] are re-read on SIGHUP (mqgate and Mosquitto): a window of 4 applies
        # to the next subscriber.
        self.broker.reload(max_inflight_messages=4)
        time.sleep(0.5)
        c = self.raw_connect("reloaded")
        c.subscribe([("rl", 1)])
        p = self.raw_connect("pub")
        p.send(b"".join(R.publish("rl", str(i).encode(), qos=1, packet_id=i + 1)
                        for i in range(8)))  # pipelined: past half the queue mqgate holds it
        self.assertEqual([m.payload for m in c.read_all(0.5, first=5)], [b"0", b"1", b"2", b"3"])

    def test_qos2_inflight_until_pubcomp(self):
        c = self.raw_connect("window2")
        c.subscribe([("win2", 2)])
        p = self.raw_connect("pub")
        for i in range(4):
            p.publish("win2", str(i).encode(), qos=2, packet_id=i + 1)
        first = c.read_all(0.5, first=5)
        self.assertEqual([m.payload for m in first], [b"0", b"1"])
        c.send(R.pubrec(first[0].packet_id))
        self.assertEqual([x.type for x in c.read_all(0.3, first=5)], [R.PUBREL],
                         "a message awaiting PUBCOMP is still in flight")
        c.send(R.pubcomp(first[0].packet_id))
        self.assertEqual(c.next_publish(ack=False).payload, b"2")

    def test_window_does_not_lose_messages(self):
        s = self.paho("eager")
        s.subscribe("flow", 2)
        p = self.raw_connect("pub")
        got = []
        for chunk in range(0, 50, 5):  # never more than window + queue outstanding
            for i in range(chunk, chunk + 5):
                p.publish("flow", str(i).encode(), qos=1 + i % 2, packet_id=i + 1)
            got += [int(m.payload) for m in s.get_n(5, timeout=10)]
        self.assertEqual(sorted(got), list(range(50)))


if __name__ == "__main__":
    unittest.main()


class QueuedBytesLimitTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0, "max_queued_bytes": 8192}

    def test_offline_queue_is_bounded_in_bytes(self):
        # max_queued_bytes (Mosquitto has the same option): a persistent session that is
        # offline keeps messages up to that many bytes, not max_queued_messages x
        # max_packet_size; the ones beyond are dropped.
        sub = self.raw_connect("bytes-sub", clean=False)
        sub.subscribe([("qb/t", 1)])
        sub.disconnect()
        pub = self.raw_connect("bytes-pub")
        for i in range(20):
            pub.publish("qb/t", bytes([65 + i]) * 1000, qos=1, packet_id=i + 1)
        again = self.raw_connect("bytes-sub", clean=False)
        got = []
        for p in again.read_all(1.0):
            if p.type == R.PUBLISH:
                got.append(p.payload[:1])
                again.send(R.puback(p.packet_id))
        # 8192 B hold 8 of them with their topics (mqgate); Mosquitto counts payloads
        # and admits one more past the limit (it checks before adding): 9.
        self.assertTrue(7 <= len(got) <= 9, got)
        self.assertEqual(got, [bytes([65 + i]) for i in range(len(got))])  # the oldest kept
