"""MQTT.js 5.16 (test/js, `npm ci`) speaking MQTT 5.0 from Node, over TCP and over
WebSocket: CONNECT with properties, subscription identifiers, a request/response round
trip with the PUBLISH properties that travel (content type, response topic, correlation
data, user properties, payload format, message expiry), QoS 1 and 2, and the topic aliases
MQTT.js sets by itself (autoAssignTopicAlias, autoUseTopicAlias). test/js/mqttjs5.js runs
the clients and reports what they saw; the checks are here.

Standard behaviour only: these tests pass against Mosquitto 2.0.11 as well (its
`protocol websockets` listener for the ws case), except the CONNACK's Topic Alias Maximum,
which is each broker's own (mqgate 16, Mosquitto 10)."""
import json
import os
import subprocess

import brokers
from mqgate_test import SOURCE_DIR

JS_DIR = os.path.join(SOURCE_DIR, "test", "js")


def mqttjs5(url, client_prefix, timeout=30):
    """Runs test/js/mqttjs5.js against `url`; returns its JSON result."""
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "mqtt")):
        raise AssertionError("MQTT.js is not installed: run `npm ci` in test/js (scripts/test.sh does)")
    p = subprocess.run(["node", os.path.join(JS_DIR, "mqttjs5.js"), url, "--id", client_prefix],
                       capture_output=True, text=True, timeout=timeout, cwd=JS_DIR)
    lines = p.stdout.strip().splitlines()
    if not lines:
        raise AssertionError(f"mqttjs5.js printed nothing (exit {p.returncode}): {p.stderr}")
    return json.loads(lines[-1])


class MqttJs5(brokers.MqttTestCase):
    broker_settings = {"websocket": True}

    def check(self, result, prefix):
        self.assertTrue(result["ok"], result)
        c = result["checks"]
        base = f"mqttjs5/{prefix}"
        # A 5.0 CONNACK with Success and the aliases the client may use [MQTT-3.2.2-17].
        self.assertEqual(c["connack"]["reasonCode"], 0)
        self.assertGreater(c["connack"]["topicAliasMaximum"], 0)
        self.assertEqual(c["granted"], [2, 2, 2])
        # The request reaches the responder with its properties unaltered [MQTT-3.3.2-15,
        # -16 (correlation data), -17 (user properties, in order), -4 (payload format)], its
        # expiry counted down [MQTT-3.3.2-6], and the subscription's identifier
        # [MQTT-3.3.4-3].
        req = c["request"]
        self.assertEqual(req["payload"], "ping?")
        self.assertEqual(req["qos"], 1)
        self.assertEqual(req["contentType"], "text/plain")
        self.assertEqual(req["responseTopic"], f"{base}/resp")
        self.assertEqual(req["correlationData"], [0, 1, 2, 255])
        self.assertEqual(req["userProperties"], {"trace": "t-1", "dup": ["a", "b"]})
        self.assertIs(req["payloadFormatIndicator"], True)
        self.assertGreater(req["messageExpiryInterval"], 100)
        self.assertLessEqual(req["messageExpiryInterval"], 120)
        self.assertEqual(req["subscriptionIdentifiers"], [7])
        # The response, on the response topic with the correlation data.
        self.assertEqual(c["response"], {"topic": f"{base}/resp", "payload": "pong!",
                                         "correlationData": [0, 1, 2, 255],
                                         "subscriptionIdentifiers": [8]})
        # QoS 1 and 2, with their properties; the delivery QoS is the publication's.
        qos = sorted(c["qos"], key=lambda m: m["topic"])
        self.assertEqual([(m["topic"], m["payload"], m["qos"]) for m in qos],
                         [(f"{base}/qos/1", "one", 1), (f"{base}/qos/2", "two", 2)])
        self.assertEqual(qos[0]["userProperties"], {"n": "1"})
        self.assertEqual(qos[1]["contentType"], "application/x-two")
        self.assertEqual([m["subscriptionIdentifiers"] for m in qos], [[9], [9]])
        # Topic aliases: MQTT.js sent the topic once, then only the alias [MQTT-3.3.2-12],
        # and every message arrived under its full topic.
        for name in ("assign", "use"):
            sent = [(s["topic"], s["alias"]) for s in c["aliasSent"] if s["client"] == name]
            topic = f"{base}/qos/alias-{name}"
            self.assertEqual(len(sent), 3, c["aliasSent"])
            self.assertEqual(sent[0][0], topic)
            self.assertEqual([t for t, _ in sent[1:]], ["", ""])
            self.assertTrue(sent[0][1] and sent[0][1] == sent[1][1] == sent[2][1], sent)
            self.assertEqual(sorted(c["alias_" + name]),
                             [[topic, f"{name}-{i}"] for i in (1, 2, 3)])

    def test_mqttjs5_over_tcp(self):
        result = mqttjs5(f"mqtt://{self.broker.host}:{self.broker.port}", "tcp5")
        self.check(result, "tcp5")

    def test_mqttjs5_over_websocket(self):
        result = mqttjs5(f"ws://{self.broker.host}:{self.broker.ws_port}/mqtt", "ws5")
        self.check(result, "ws5")
