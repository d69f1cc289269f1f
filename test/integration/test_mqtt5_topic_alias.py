"""MQTT 5.0 topic aliases the broker sends (3.3.2.3.4): a subscriber that announces a
Topic Alias Maximum may get PUBLISHes whose topic is replaced by an alias.

The checks are the client's: every alias is between 1 and the maximum it announced
[MQTT-3.3.2-10], an empty topic only comes with an alias set earlier on this connection
[MQTT-3.3.2-12], and a client announcing none gets none [MQTT-3.3.2-11]. They hold for
Mosquitto 2.0 too, which sends no aliases at all; the tests that check mqgate does use
them are mqgate-only.
"""
import brokers
import mqtt_raw as R
from brokers import skip_if_mosquitto


class AliasingSubscriber:
    """A raw 5.0 subscriber that resolves topic aliases as a client must."""

    def __init__(self, test, client_id, maximum):
        self.test = test
        self.maximum = maximum
        self.table = {}
        self.aliased = 0
        c = R.RawClient5(test.broker.port, host=test.broker.host)
        test._clients.append(c)
        props = [(R.TOPIC_ALIAS_MAXIMUM, maximum)] if maximum else None
        test.assertEqual(c.connect(client_id, props=props).reason, 0)
        self.client = c

    def receive(self):
        """The next PUBLISH's (topic, payload), acknowledged, with its alias resolved."""
        p = self.client.next_publish()
        alias = R.prop(p, R.TOPIC_ALIAS)
        if alias is None:
            self.test.assertNotEqual(p.topic, "", "empty topic without an alias")
            return p.topic, p.payload
        self.test.assertGreater(self.maximum, 0, "alias sent to a client that accepts none")
        self.test.assertTrue(1 <= alias <= self.maximum, alias)
        self.aliased += 1
        if p.topic:
            self.table[alias] = p.topic
            return p.topic, p.payload
        self.test.assertIn(alias, self.table, "alias used before it was set")
        return self.table[alias], p.payload


class OutboundTopicAliasTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0}

    def publisher(self):
        c = R.RawClient5(self.broker.port, host=self.broker.host)
        self._clients.append(c)
        self.assertEqual(c.connect("").reason, 0)
        return c

    def exchange(self, sub, topics, qos):
        sub.client.subscribe([("alias/#", qos)])
        pub = self.publisher()
        sent = []
        for i, t in enumerate(topics):
            payload = f"{i}".encode()
            pub.publish(t, payload, qos=qos, packet_id=i % 60000 + 1)
            sent.append((t, payload))
        got = [sub.receive() for _ in sent]
        self.assertEqual(got, sent)

    def test_aliases_resolve_to_the_published_topics(self):
        # Few hot topics among many one-off ones, at QoS 0, 1 and 2: whatever the broker
        # chooses to alias, the subscriber reads every topic right.
        topics = []
        for i in range(120):
            topics.append("alias/hot/" + "x" * (i % 3))
            topics.append(f"alias/cold/{i}")
        for qos in (0, 1, 2):
            with self.subTest(qos=qos):
                sub = AliasingSubscriber(self, f"aliasing{qos}", 3)
                self.exchange(sub, topics, qos)

    def test_no_alias_without_topic_alias_maximum(self):
        sub = AliasingSubscriber(self, "noaliases", 0)
        self.exchange(sub, ["alias/same/topic"] * 20, 1)
        self.assertEqual(sub.aliased, 0)

    def test_a_3_1_1_subscriber_gets_topics(self):
        sub = R.RawClient(self.broker.port, host=self.broker.host)
        self._clients.append(sub)
        sub.connect("plain311")
        sub.subscribe([("alias/#", 1)])
        pub = self.publisher()
        for i in range(5):
            pub.publish("alias/plain/topic", b"%d" % i, qos=1, packet_id=i + 1)
        self.assertEqual([sub.next_publish().topic for _ in range(5)],
                         ["alias/plain/topic"] * 5)

    @skip_if_mosquitto("Mosquitto 2.0 sends no topic aliases")
    def test_repeated_topic_is_sent_as_alias(self):
        sub = AliasingSubscriber(self, "aliased", 10)
        sub.client.subscribe([("alias/#", 1)])
        pub = self.publisher()
        for i in range(10):
            pub.publish("alias/repeated/topic", b"%d" % i, qos=1, packet_id=i + 1)
        first = sub.client.next_publish()
        self.assertEqual(first.topic, "alias/repeated/topic")
        alias = R.prop(first, R.TOPIC_ALIAS)
        self.assertEqual(alias, 1)
        for _ in range(9):
            p = sub.client.next_publish()
            self.assertEqual((p.topic, R.prop(p, R.TOPIC_ALIAS)), ("", alias))

    @skip_if_mosquitto("Mosquitto 2.0 sends no topic aliases")
    def test_aliases_start_afresh_on_a_new_connection(self):
        # Aliases belong to a network connection [MQTT-3.3.2-7]: a message resent as DUP
        # to the resumed session carries its topic again, not the old connection's alias.
        props = [(R.TOPIC_ALIAS_MAXIMUM, 5), (R.SESSION_EXPIRY, 60)]
        sub = R.RawClient5(self.broker.port, host=self.broker.host)
        self._clients.append(sub)
        self.assertEqual(sub.connect("resumed", props=props).reason, 0)
        sub.subscribe([("alias/#", 1)])
        pub = self.publisher()
        pub.publish("alias/resume/topic", b"a", qos=1, packet_id=1)
        first = sub.next_publish()
        self.assertEqual(first.topic, "alias/resume/topic")
        pub.publish("alias/resume/topic", b"b", qos=1, packet_id=2)
        second = sub.next_publish(ack=False)
        self.assertEqual((second.topic, R.prop(second, R.TOPIC_ALIAS)),
                         ("", R.prop(first, R.TOPIC_ALIAS)))
        sub.close()
        again = R.RawClient5(self.broker.port, host=self.broker.host)
        self._clients.append(again)
        ack = again.connect("resumed", clean_start=False, props=props)
        self.assertTrue(ack.session_present)
        resent = again.next_publish()
        self.assertTrue(resent.dup)
        self.assertEqual((resent.topic, resent.payload), ("alias/resume/topic", b"b"))
