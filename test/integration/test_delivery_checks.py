"""ABI 2.3: the RECEIVE question for live deliveries, with the `deferred` test plugin
(test/plugins/deferred.c): a plugin asks for it at SUBSCRIBE (delivery_check), answers
per topic are remembered (or not: MQGATE_CHECK_EVERY), a plugin can stop the questions,
a deferred SUBSCRIBE can ask too, messages queued for an offline session are asked about
when its client is back, shared subscriptions pass over members that may not read, and
a reload makes every subscription's deliveries checked until it is decided again."""
import os
import signal
import unittest

import mqtt_raw as r
import mqgate_test
from mqgate_test import BrokerTestCase


class DeliveryCheckTest(BrokerTestCase):
    def broker(self, **options):
        options = {"tag": "d", "delay_ms": 50, "receive_deny": ["d/secret"], **options}
        cfg = 'log_level = "debug"\n[listeners.default]\nbind = "127.0.0.1:0"\n'
        cfg += mqgate_test.plugin_table("d", "deferred", **options)
        return self.start_broker(cfg)

    def connected(self, b, cid, **kw):
        c = r.RawClient(b.port())
        self.addCleanup(c.close)
        self.assertEqual(c.connect(cid, **kw).return_code, 0)
        return c

    def received(self, sub, pub, topics, qos=0):
        """Publishes `topics` then a sentinel; returns the topics `sub` got before it."""
        for i, t in enumerate(topics):
            pub.publish(t, b"x", qos=qos, packet_id=i + 1)
        pub.publish("d/end", b"", qos=qos, packet_id=100)
        got = []
        while True:
            p = sub.next_publish()
            if p.topic == "d/end":
                return got
            got.append(p.topic)

    def live_questions(self, b, topic):
        return b.log().count(f"action=3 topic={topic} filter=d/# retain=0 deferrable=0 live=1")

    def test_no_check_asked_for_is_the_fast_path(self):
        b = self.broker()
        sub, pub = self.connected(b, "sub"), self.connected(b, "pub")
        self.assertEqual(sub.subscribe([("d/#", 0)]), [0])
        # The plugin would deny d/secret, but it never asked to check deliveries.
        self.assertEqual(self.received(sub, pub, ["d/a", "d/secret"]), ["d/a", "d/secret"])
        self.assertNotIn("live=1", b.log())

    def test_per_topic_checks_withhold_and_are_remembered(self):
        b = self.broker(delivery_check="per_topic")
        sub, pub = self.connected(b, "sub"), self.connected(b, "pub")
        self.assertEqual(sub.subscribe([("d/#", 1)]), [1])
        self.assertEqual(self.received(sub, pub, ["d/a", "d/secret", "d/a", "d/secret"], qos=1),
                         ["d/a", "d/a"])
        self.assertEqual(self.live_questions(b, "d/a"), 1)  # then remembered
        self.assertEqual(self.live_questions(b, "d/secret"), 1)
        self.assertRegex(b.log(), r"action=3 topic=d/a filter=d/# retain=0 deferrable=0 live=1 "
                                  r"check=1")

    def test_every_asks_each_time(self):
        b = self.broker(delivery_check="every")
        sub, pub = self.connected(b, "sub"), self.connected(b, "pub")
        sub.subscribe([("d/#", 0)])
        self.assertEqual(self.received(sub, pub, ["d/a", "d/a", "d/secret", "d/a"]),
                         ["d/a", "d/a", "d/a"])
        self.assertEqual(self.live_questions(b, "d/a"), 3)

    def test_a_plugin_stops_the_questions(self):
        b = self.broker(delivery_check="every", stop_checks_topic="d/stop")
        sub, pub = self.connected(b, "sub"), self.connected(b, "pub")
        sub.subscribe([("d/#", 0)])
        self.assertEqual(self.received(sub, pub, ["d/secret", "d/stop", "d/secret"]),
                         ["d/stop", "d/secret"])
        self.assertEqual(self.live_questions(b, "d/secret"), 1)

    def test_a_deferred_subscribe_asks_for_checks_too(self):
        b = self.broker(delivery_check="per_topic", defer_topics=["d/#"])
        sub, pub = self.connected(b, "sub"), self.connected(b, "pub")
        self.assertEqual(sub.subscribe([("d/#", 0)]), [0])
        self.assertEqual(self.received(sub, pub, ["d/a", "d/secret"]), ["d/a"])

    def test_queued_while_offline_is_asked_about_when_the_client_is_back(self):
        b = self.broker(delivery_check="per_topic")
        sub = self.connected(b, "keeper", clean=False)
        sub.subscribe([("d/#", 1)])
        sub.disconnect()
        pub = self.connected(b, "pub")
        for i, t in enumerate(["d/a", "d/secret", "d/b"]):
            pub.publish(t, b"q", qos=1, packet_id=i + 1)
        back = r.RawClient(b.port())
        self.addCleanup(back.close)
        self.assertEqual(back.connect("keeper", clean=False).session_present, 1)
        self.assertEqual([back.next_publish().topic for _ in range(2)], ["d/a", "d/b"])
        back.ping()
        self.assertEqual(back.pending, [])
        b.wait_log(r"client=\"keeper\" .*1 message queued while it was offline withheld")

    def test_shared_subscription_members_that_may_not_read_get_nothing(self):
        b = self.broker(delivery_check="per_topic")
        m1, m2, pub = self.connected(b, "m1"), self.connected(b, "m2"), self.connected(b, "pub")
        self.assertEqual(m1.subscribe([("$share/g/d/#", 0)]), [0])
        self.assertEqual(m2.subscribe([("$share/g/d/#", 0)]), [0])
        for i in range(4):
            pub.publish("d/secret", b"s", packet_id=i + 1)
            pub.publish("d/a", b"a", packet_id=i + 1)
        pub.publish("d/a", b"last")
        got = []
        for c in (m1, m2):
            got += [p.topic for p in c.read_all(timeout=0.5) if p.type == r.PUBLISH]
        self.assertEqual(sorted(got), ["d/a"] * 5)

    def test_publish_answers_that_hold_per_topic_are_remembered(self):
        b = self.broker(same_answer=True, receive_deny=[])
        pub = self.connected(b, "pub")
        for i in range(3):
            pub.publish("d/a", b"x", qos=1, packet_id=i + 1)
        pub.publish("d/b", b"x", qos=1, packet_id=9)
        pub.publish("d/a", b"x", qos=1, packet_id=10)  # another topic came between
        pub.publish("d/a", b"x", qos=0)  # another QoS
        pub.ping()
        def asked(topic):
            return b.log().count(f"action=1 topic={topic} filter=(none) retain=0 deferrable=1")

        # d/a QoS 1 once, then remembered; again after d/b; again at QoS 0.
        self.assertEqual(asked("d/a"), 3)
        self.assertEqual(asked("d/b"), 1)
        b.signal(signal.SIGHUP)
        b.wait_log(r"SIGHUP received")
        pub.ping()
        pub.publish("d/a", b"x", qos=0)  # the options may have changed: asked again
        pub.ping()
        self.assertEqual(asked("d/a"), 4)

    def test_publish_answers_are_asked_each_time_by_default(self):
        b = self.broker(receive_deny=[])
        pub = self.connected(b, "pub")
        for i in range(3):
            pub.publish("d/a", b"x", qos=1, packet_id=i + 1)
        self.assertEqual(b.log().count("action=1 topic=d/a "), 3)

    def test_after_a_reload_subscriptions_are_decided_again(self):
        b = self.broker()  # no check asked for: d/secret flows
        sub, pub = self.connected(b, "sub"), self.connected(b, "pub")
        sub.subscribe([("d/#", 1)])
        self.assertEqual(self.received(sub, pub, ["d/secret"]), ["d/secret"])
        b.signal(signal.SIGHUP)
        b.wait_log(r'reload: plugin "d" took its new options|SIGHUP received')
        # The SUBSCRIBE is asked again, not deferrable.
        b.wait_log(r"action=2 topic=d/# filter=\(none\) retain=0 deferrable=0")
        self.assertEqual(self.received(sub, pub, ["d/secret", "d/a"]), ["d/secret", "d/a"])

    def test_a_shared_member_is_asked_once_per_message(self):
        # One RECEIVE question per message and member: not one to choose the member and
        # another to confirm it (the plugin's work and mqgate_delivery_checks_total twice).
        b = self.broker(delivery_check="every")
        m, pub = self.connected(b, "m"), self.connected(b, "pub")
        self.assertEqual(m.subscribe([("$share/g/d/#", 0)]), [0])
        for _ in range(3):
            pub.publish("d/a", b"x")
        self.assertEqual([m.next_publish().topic for _ in range(3)], ["d/a"] * 3)
        self.assertEqual(self.live_questions(b, "d/a"), 3)


class AclDeliveryTest(BrokerTestCase):
    """The acl plugin (checks per topic) with the deferred test plugin after it (which
    authenticates everyone, and defers what it is told to): paths by which a message
    could reach a subscriber the rules in force do not let read it."""

    def broker(self, acl, top="", **d_options):
        self.acl = os.path.join(self.tmp, "acl")
        with open(self.acl, "w") as f:
            f.write(acl)
        cfg = ('log_level = "debug"\n' + top + '[listeners.default]\nbind = "127.0.0.1:0"\n'
               'plugins = ["acl", "d"]\n[plugins.acl]\nacl_file = "acl"\n')
        cfg += mqgate_test.plugin_table("d", "deferred", tag="d", allow_at_once=True, **d_options)
        return self.start_broker(cfg, workdir=self.tmp)

    def connected(self, b, cid, user=None, clean=True):
        c = r.RawClient(b.port())
        self.addCleanup(c.close)
        kw = {"username": user} if user else {}
        self.assertEqual(c.connect(cid, clean=clean, **kw).return_code, 0)
        return c

    def until(self, c, sentinel):
        """The topics `c` receives up to `sentinel` (acknowledged)."""
        got = []
        while True:
            p = c.next_publish()
            if p.topic == sentinel:
                return got
            got.append(p.topic)

    def test_a_shared_message_moves_only_to_a_member_that_may_read_it(self):
        b = self.broker("user reader\ntopic read #\n"
                        "user limited\ntopic read #\ntopic deny secret/#\n"
                        "user writer\ntopic write #\n")
        m1 = self.connected(b, "m1", "reader")
        m2 = self.connected(b, "m2", "limited")
        w = self.connected(b, "w", "writer")
        self.assertEqual(m1.subscribe([("$share/g/#", 1)]), [1])
        self.assertEqual(m2.subscribe([("$share/g/#", 1)]), [1])
        w.publish("secret/x", b"s", qos=1)
        self.assertEqual(m1.next_publish(ack=False).topic, "secret/x")  # m2 may not read it
        m1.close()  # unacknowledged: the message moves to another member
        b.wait_log(r'client="m1" .*disconnected \(')
        w.publish("public/end", b"", qos=1, packet_id=2)
        self.assertEqual(self.until(m2, "public/end"), [])

    def test_a_subscribe_deferred_across_a_reload_is_decided_under_the_new_rules(self):
        # acl answers the SUBSCRIBE (every topic readable: no checks), then d defers it;
        # the file changes meanwhile: its answer is not one under the rules in force.
        writer = "user writer\ntopic write #\n"
        b = self.broker("topic readwrite #\n" + writer, defer_topics=["sensors/#"],
                        delay_ms=2000)
        sub = self.connected(b, "sub")
        w = self.connected(b, "w", "writer")
        sub.send(r.subscribe(1, [("sensors/#", 0)]))
        b.wait_log(r"deferred d: authorize client_id=sub action=2 topic=sensors/#")
        with open(self.acl, "w") as f:
            f.write("topic readwrite #\ntopic deny sensors/#\n" + writer)
        b.signal(signal.SIGHUP)
        b.wait_log(r'reload: plugin "acl" took its new options')
        sub.expect(r.SUBACK, timeout=10)  # granted or refused: either way, nothing flows
        self.assertEqual(sub.subscribe([("public/#", 0)], packet_id=2), [0])
        w.publish("sensors/a", b"x")  # deferred by d too, then allowed: written
        w.publish("public/end", b"")
        self.assertEqual(self.until(sub, "public/end"), [])

    def test_a_session_resumed_by_another_user_is_decided_for_that_user(self):
        # session_owner = "client_id" (Mosquitto's rule): bob may resume alice's session;
        # her subscription to alice/# (all readable for her: no checks) is not his.
        b = self.broker("user alice\ntopic read alice/#\nuser bob\ntopic read bob/#\n"
                        "user writer\ntopic write #\n", top='session_owner = "client_id"\n')
        alice = self.connected(b, "dev", "alice", clean=False)
        self.assertEqual(alice.subscribe([("alice/#", 1)]), [1])
        alice.disconnect()
        b.wait_log(r'client="dev" .*disconnected \(')
        w = self.connected(b, "w", "writer")
        w.publish("alice/queued", b"hers", qos=1)  # queued for her, read by her rules
        bob = r.RawClient(b.port())
        self.addCleanup(bob.close)
        self.assertEqual(bob.connect("dev", clean=False, username="bob").session_present, 1)
        self.assertEqual(bob.subscribe([("bob/#", 1)]), [1])
        w.publish("alice/x", b"hers", qos=1, packet_id=3)
        w.publish("bob/end", b"", qos=1, packet_id=2)
        self.assertEqual(self.until(bob, "bob/end"), [])


if __name__ == "__main__":
    unittest.main()
