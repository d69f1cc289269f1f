"""ABI 2 deferred decisions, with the `deferred` test plugin (test/plugins/deferred.c,
built with -fvisibility=hidden), which answers from its own thread after delay_ms: the
client waits without blocking the loop, its next packets are held in order, timeouts
deny, completions for clients that are gone are ignored. Also the other ABI 2 host
calls (disconnect, CONNACK 4) and the RECEIVE action, next to an ABI 1 plugin."""
import time
import unittest

import mqtt_raw as r
import mqgate_test
from mqgate_test import BrokerTestCase


def plugin_table(instance, module, **options):
    # The test plugins that log decisions tag their lines with the instance name.
    if module in ("deferred", "scripted"):
        options = {"tag": instance, **options}
    return mqgate_test.plugin_table(instance, module, **options)


class DeferredTest(BrokerTestCase):
    DELAY = 0.3

    def broker(self, auth_timeout=10, delay_ms=300, extra="", chain=None, **options):
        cfg = f'log_level = "debug"\nauth_timeout = {auth_timeout}\n'
        cfg += '[listeners.default]\nbind = "127.0.0.1:0"\n'
        if chain:
            cfg += "plugins = [" + ", ".join(f'"{p}"' for p in chain) + "]\n"
        cfg += plugin_table("d", "deferred", delay_ms=delay_ms, **options) + extra
        return self.start_broker(cfg)

    def connected(self, b, cid, **kw):
        c = r.RawClient(b.port())
        self.addCleanup(c.close)
        self.assertEqual(c.connect(cid, **kw).return_code, 0)
        return c

    def test_connect_waits_and_later_packets_keep_their_order(self):
        b = self.broker()
        c = r.RawClient(b.port())
        self.addCleanup(c.close)
        start = time.monotonic()
        # CONNECT and what follows in one write: held while the plugin decides.
        c.send(r.connect("early", username="alice") + r.publish("t/x", b"1", qos=1, packet_id=7)
               + r.pingreq() + r.subscribe(2, [("t/#", 0)]))
        ack = c.expect(r.CONNACK)
        self.assertEqual(ack.return_code, 0)
        self.assertGreaterEqual(time.monotonic() - start, self.DELAY * 0.9)
        self.assertEqual([p.type for p in (c.read_packet(), c.read_packet(), c.read_packet())],
                         [r.PUBACK, r.PINGRESP, r.SUBACK])
        b.wait_log(r"deferred d: connected client_id=early identity=d:alice clean_session=1")
        self.assertRegex(b.log(), r"deferred d: authenticate client_id=early username=alice "
                                  r"clean_session=1 level=4")

    def test_deny_with_connack_4(self):
        b = self.broker(deny_users=["mallory"])
        c = r.RawClient(b.port())
        self.addCleanup(c.close)
        self.assertEqual(c.connect("m", username="mallory").return_code, 4)
        self.assertTrue(c.closed_by_peer())
        b.wait_log(r'client="m" .*refused \(CONNACK 4\): not authorised: plugin "d": unknown user')

    def test_abi2_callback_returning_mqgate_ok_is_a_deny_not_an_abstain(self):
        b = self.broker(return_ok_users=["sloppy"])
        c = r.RawClient(b.port())
        self.addCleanup(c.close)
        self.assertEqual(c.connect("s", username="sloppy").return_code, 5)
        b.wait_log(r'ERROR plugin "d": authenticate returned 0, an error code, not a decision '
                   r"\(ABI 2 callbacks return MQGATE_ALLOW, MQGATE_DENY, MQGATE_ABSTAIN or "
                   r"MQGATE_DEFER\); treated as DENY")

    def test_shutdown_with_decisions_pending(self):
        b = self.broker(delay_ms=5000, defer_topics=["slow/#"])
        waiting = []
        for i in range(5):
            c = r.RawClient(b.port())
            self.addCleanup(c.close)
            c.send(r.connect(f"pending-{i}"))
            waiting.append(c)
        b.wait_log(r"deferred d: authenticate client_id=pending-4")
        t = time.monotonic()
        self.assertEqual(b.stop(), 0)  # also checks the log for sanitizer reports
        self.assertLess(time.monotonic() - t, 5.0)
        self.assertIn("deferred d: shutdown", b.log())

    def test_many_deferred_connects_while_others_get_pingresp(self):
        b = self.broker(delay_ms=1500)
        bystander = r.RawClient(b.port())
        self.addCleanup(bystander.close)
        self.assertEqual(bystander.connect("bystander").return_code, 0)
        waiting = []
        for i in range(60):
            c = r.RawClient(b.port())
            self.addCleanup(c.close)
            c.send(r.connect(f"many-{i}"))
            waiting.append(c)
        start = time.monotonic()
        worst = 0.0
        while time.monotonic() - start < 1.0:  # the decisions are all pending meanwhile
            t = time.monotonic()
            bystander.ping(timeout=2)
            worst = max(worst, time.monotonic() - t)
            time.sleep(0.02)
        self.assertLess(worst, 0.25, "the loop blocked while decisions were pending")
        for c in waiting:
            self.assertEqual(c.expect(r.CONNACK, timeout=10).return_code, 0)

    def test_timeout_denies_and_the_late_completion_is_ignored(self):
        b = self.broker(auth_timeout=1, delay_ms=2500)
        c = r.RawClient(b.port())
        self.addCleanup(c.close)
        start = time.monotonic()
        self.assertEqual(c.connect("slow", timeout=5).return_code, 5)
        self.assertLess(time.monotonic() - start, 2.4)
        b.wait_log(r'plugin "d": no decision within auth_timeout \(1 s\); treated as DENY')
        b.wait_log(r"deferred d: completing -> 17 \(rc 0\)", timeout=5)
        b.wait_log(r"a deferred decision arrived for a client that is gone or timed out; ignored")
        # Still serving.
        other = r.RawClient(b.port())
        self.addCleanup(other.close)
        other.send(r.connect("after"))
        self.assertEqual(other.expect(r.CONNACK, timeout=5).return_code, 5)  # times out too

    def test_completion_after_the_client_went_away(self):
        b = self.broker(delay_ms=400)
        for i in range(20):
            c = r.RawClient(b.port())
            # Half of them leave packets behind: those are held (input is not read
            # meanwhile), so their close is seen once the decision is in.
            c.send(r.connect(f"gone-{i}") + (r.publish("x", b"y", qos=1) if i % 2 else b""))
            c.close()
        b.wait_log(r"deferred d: completing -> 17", count=20, timeout=10)
        b.wait_log(r"a deferred decision arrived for a client that is gone", count=10)
        b.wait_log(r'client="gone-\d+" .*gone while plugin "d" owed a decision', count=10)
        self.connected(b, "still-alive").ping()

    def test_deferred_publish_is_acked_when_decided_in_order(self):
        b = self.broker(delay_ms=200, defer_topics=["slow/#"], deny_topics=["slow/no/#"])
        sub = self.connected(b, "sub")
        self.assertEqual(sub.subscribe([("#", 1)]), [1])
        pub = self.connected(b, "pub")
        start = time.monotonic()
        pub.send(r.publish("slow/a", b"1", qos=1, packet_id=1) + r.publish("fast", b"2", qos=1, packet_id=2)
                 + r.publish("slow/no/x", b"3", qos=1, packet_id=3) + r.publish("fast", b"4", qos=1, packet_id=4))
        acks = [pub.expect(r.PUBACK, timeout=5).packet_id for _ in range(4)]
        self.assertEqual(acks, [1, 2, 3, 4])
        self.assertGreaterEqual(time.monotonic() - start, 0.35)  # two deferred decisions
        got = [sub.next_publish().payload for _ in range(3)]
        self.assertEqual(got, [b"1", b"2", b"4"])  # 3 was denied, nothing overtook anything
        b.wait_log(r'client="pub" .*publish to "slow/no/x" denied \(not forwarded\): plugin "d": '
                   r"topic denied later")

    def test_deferred_subscribe(self):
        b = self.broker(delay_ms=150, defer_topics=["slow/#"], deny_topics=["slow/no/#"])
        c = self.connected(b, "s")
        self.assertEqual(c.subscribe([("slow/a", 1), ("slow/no/x", 1), ("other", 2), ("slow/b", 0)]),
                         [1, 0x80, 2, 0])
        c.ping()

    def test_disconnect_from_a_callback(self):
        b = self.broker(disconnect_topic="revoke/me")
        c = self.connected(b, "victim")
        c.send(r.publish("revoke/me", b"", qos=0))
        self.assertTrue(c.closed_by_peer())
        b.wait_log(r'deferred d: disconnected client_id=victim reason=disconnected by plugin "d": '
                   r"revoked")

    def test_retained_delivery_is_a_receive_action_with_its_filter(self):
        b = self.broker(receive_deny=["r/secret"])
        w = self.connected(b, "writer")
        w.publish("r/secret", b"s", qos=1, retain=True)
        w.publish("r/open", b"o", qos=1, retain=True)
        reader = self.connected(b, "reader")
        self.assertEqual(reader.subscribe([("r/#", 0)]), [0])
        p = reader.next_publish()
        self.assertEqual((p.topic, p.retain), ("r/open", True))
        reader.ping()  # nothing else came first
        self.assertEqual(reader.pending, [])
        b.wait_log(r"deferred d: authorize client_id=reader action=3 topic=r/secret filter=r/# "
                   r"retain=1 deferrable=0")

    def test_abi1_and_abi2_plugins_in_one_chain(self):
        extra = plugin_table("s", "scripted", authenticate="abstain", authorize="abstain")
        b = self.broker(extra=extra, chain=["d", "s"])
        self.assertIn("(ABI 1)", b.log())
        self.assertIn("(ABI 2)", b.log())
        c = self.connected(b, "mixed", username="bob")
        log = b.log()
        # The ABI 1 plugin is asked after the ABI 2 one has completed.
        self.assertLess(log.index("deferred d: completing"), log.index("scripted s: authenticate "
                                                                       "client_id=mixed"))
        w = self.connected(b, "w2")
        w.publish("q/1", b"x", qos=1, retain=True)
        self.assertEqual(c.subscribe([("q/#", 0)]), [0])
        c.next_publish()
        # ABI 1 keeps seeing a retained delivery as SUBSCRIBE with retain 1.
        b.wait_log(r"scripted s: authorize client_id=mixed action=2 topic=q/1 qos=0 retain=1")

    def test_two_deferring_plugins_in_one_chain(self):
        """The second plugin defers after the first one completed: the decision still
        arrives (the host once dropped the job there and the client waited forever)."""
        b = self.broker(extra=plugin_table("d2", "deferred", delay_ms=100), chain=["d", "d2"])
        self.connected(b, "twice", username="carol")
        b.wait_log(r"deferred d2: completing")


if __name__ == "__main__":
    unittest.main()
