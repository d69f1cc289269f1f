"""max_keepalive: the longest keep-alive a client may ask for.

MQTT 5.0 clients asking for more, or for none (0), are told the one that applies in the
CONNACK's Server Keep Alive, which they must use [MQTT-3.2.2-21]; the broker then holds
them to it. MQTT 3.1.1 cannot say so: such a client is refused with CONNACK 2, as
Mosquitto does since 2.0.12. Debian 12's Mosquitto 2.0.11 still lets them in, and
refuses a max_keepalive under 10 s: those two tests are mqgate-only.
"""
import brokers
import mqtt_raw as R
from brokers import skip_if_mosquitto


class MaxKeepaliveTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0, "max_keepalive": 30}

    def raw5(self, client_id, keepalive):
        c = R.RawClient5(self.broker.port, host=self.broker.host)
        self._clients.append(c)
        ack = c.connect(client_id, keepalive=keepalive)
        self.assertEqual(ack.reason, 0)
        return c, ack

    def test_v5_over_the_maximum_is_told_the_maximum(self):
        for asked in (31, 65535, 0):
            with self.subTest(keepalive=asked):
                c, ack = self.raw5(f"ka{asked}", asked)
                self.assertEqual(R.prop(ack, R.SERVER_KEEP_ALIVE), 30)
                self.assertEqual(c.ping().type, R.PINGRESP)

    def test_v5_within_the_maximum_keeps_its_own(self):
        for asked in (1, 30):
            with self.subTest(keepalive=asked):
                _, ack = self.raw5(f"own{asked}", asked)
                self.assertIsNone(R.prop(ack, R.SERVER_KEEP_ALIVE))

    @skip_if_mosquitto("Mosquitto 2.0.11 applies max_keepalive to MQTT 5 clients only")
    def test_v3_over_the_maximum_is_refused(self):
        for asked in (31, 0):
            with self.subTest(keepalive=asked):
                c = R.RawClient(self.broker.port, host=self.broker.host)
                self._clients.append(c)
                c.send(R.connect(f"v3ka{asked}", keepalive=asked))
                ack = c.expect(R.CONNACK)
                self.assertEqual(ack.return_code, 2)
                self.assertTrue(c.closed_by_peer())

    def test_v3_within_the_maximum_is_accepted(self):
        c = R.RawClient(self.broker.port, host=self.broker.host)
        self._clients.append(c)
        c.send(R.connect("v3ok", keepalive=30))
        self.assertEqual(c.expect(R.CONNACK).return_code, 0)


class ServerKeepAliveEnforcedTest(brokers.MqttTestCase):
    broker_settings = {"sys_interval": 0, "max_keepalive": 1}

    @skip_if_mosquitto("Mosquitto 2.0.11 refuses a max_keepalive under 10 s")
    def test_server_keep_alive_is_enforced(self):
        # A 5.0 client that asked for no keep-alive is held to the server's: silent for
        # more than 1.5 times it, the connection is closed [MQTT-3.1.2-22].
        c = R.RawClient5(self.broker.port, host=self.broker.host)
        self._clients.append(c)
        ack = c.connect("silent", keepalive=0)
        self.assertEqual(R.prop(ack, R.SERVER_KEEP_ALIVE), 1)
        self.assertTrue(c.closed_by_peer(timeout=5))
