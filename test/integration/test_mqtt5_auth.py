"""MQTT 5.0 through the plugin ABI: enhanced authentication (section 4.12) with the
`scram` test plugin (test/plugins/scram.c, SCRAM-SHA-256 over mbedTLS), the test being
the SCRAM client (hashlib, raw MQTT 5 packets); and plugins' reason codes, Reason
Strings and the CONNECT's user properties with the `v5probe` test plugin
(test/plugins/v5probe.c), seen by paho-mqtt 1.6 (MQTTv5) and raw 3.1.1/5.0 clients.

All mqgate-only: they need mqgate's plugins (Mosquitto offers enhanced authentication
and plugin reason codes only through plugins of its own ABI).
"""
import base64
import hashlib
import hmac
import os
import queue
import unittest

import mqtt_raw as R
from mqgate_test import BrokerTestCase, plugin_table

AUTH_DATA = 0x16
REQUEST_PROBLEM_INFO = 0x17
METHOD = "SCRAM-SHA-256"
USERS = {"alice": "wonderland", "bob": "builder"}


def auth_packet(reason, method=METHOD, data=None, props=None):
    p = list(props or [])
    if method is not None:
        p.append((R.AUTH_METHOD, method))
    if data is not None:
        p.append((AUTH_DATA, data))
    return R.packet(R.AUTH, 0, bytes([reason]) + R.encode_properties(p))


def b64(b):
    return base64.b64encode(b).decode()


class Scram:
    """The client side of SCRAM-SHA-256 (RFC 5802 / 7677), no channel binding."""

    def __init__(self, user, password, cnonce=None):
        self.user, self.password = user, password
        self.cnonce = cnonce or b64(os.urandom(18))
        self.bare = f"n={user},r={self.cnonce}"

    def first(self):
        return ("n,," + self.bare).encode()

    def final(self, server_first, nonce_override=None):
        """The client-final message for `server_first` (bytes)."""
        self.server_first = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in self.server_first.split(","))
        self.nonce = attrs["r"]
        salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce_override or self.nonce}"
        auth_message = f"{self.bare},{self.server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return f"{without_proof},p={b64(proof)}".encode()


class Mqtt5AuthTest(BrokerTestCase):
    def broker(self, extra="", connect_timeout=None, **probe):
        cfg = 'log_level = "debug"\n'
        if connect_timeout:
            cfg += f"[limits]\nconnect_timeout = {connect_timeout}\n"
        cfg += '[listeners.default]\nbind = "127.0.0.1:0"\n'
        cfg += plugin_table("scram", "scram", iterations=4096,
                            users=[f"{u}:{p}" for u, p in USERS.items()])
        if probe:
            cfg += plugin_table("probe", "v5probe", **probe)
        return self.start_broker(cfg + extra)

    def raw5(self, b):
        c = R.RawClient5(b.port())
        self.addCleanup(c.close)
        return c

    def start_scram(self, c, scram, client_id="s1", props=None):
        """Sends the CONNECT with the client-first message; returns the server-first."""
        p = [(R.AUTH_METHOD, METHOD), (AUTH_DATA, scram.first())] + list(props or [])
        c.send(R.connect5(client_id, props=p))
        auth = c.read_packet()
        self.assertEqual(auth.type, R.AUTH, auth)
        self.assertEqual(auth.reason, 0x18)
        self.assertEqual(R.prop(auth, R.AUTH_METHOD), METHOD)
        return R.prop(auth, AUTH_DATA)

    def scram_connect(self, b, user="alice", password=None, client_id="s1"):
        c = self.raw5(b)
        s = Scram(user, password or USERS[user])
        server_first = self.start_scram(c, s, client_id)
        c.send(auth_packet(0x18, data=s.final(server_first)))
        ack = c.expect(R.CONNACK)
        return c, s, ack

    # -- enhanced authentication --------------------------------------------------------
    def test_scram_exchange_succeeds_and_connack_carries_the_server_signature(self):
        """4.12: CONNECT with Authentication Method and Data, AUTH 0x18 both ways, CONNACK
        0x00 with the same method [MQTT-4.12.0-5] and the final server data."""
        b = self.broker()
        c, s, ack = self.scram_connect(b)
        self.assertEqual(ack.reason, 0, ack)
        self.assertEqual(R.prop(ack, R.AUTH_METHOD), METHOD)
        self.assertEqual(R.prop(ack, AUTH_DATA), b"v=" + b64(s.server_signature).encode())
        self.assertTrue(s.nonce.startswith(s.cnonce) and len(s.nonce) > len(s.cnonce))
        # The session works.
        self.assertEqual(c.subscribe([("t/#", 1)]), [1])
        self.assertEqual(c.publish("t/1", b"x", qos=1), 0)
        self.assertEqual(c.next_publish().payload, b"x")
        b.wait_log(r"scram: authenticated user alice")
        b.wait_log(r'client="s1" .*connected \(protocol level 5')
        # Authentication Data is never logged.
        self.assertNotIn(b64(s.server_signature), b.log())
        self.assertNotIn(s.cnonce, b.log())

    def test_auth_over_the_clients_maximum_packet_size_is_never_sent(self):
        """[MQTT-3.1.2-24]: the server-first message does not fit in the 48 bytes the
        client accepts: no AUTH, the exchange fails with a CONNACK that fits."""
        b = self.broker()
        c = self.raw5(b)
        s = Scram("alice", USERS["alice"])
        c.send(R.connect5("small", props=[(R.AUTH_METHOD, METHOD), (AUTH_DATA, s.first()),
                                          (R.MAXIMUM_PACKET_SIZE, 48)]))
        self.assertTrue(c.closed_by_peer())
        self.assertEqual([p.type for p in c.discarded], [R.CONNACK])
        self.assertGreaterEqual(c.discarded[0].reason, 0x80)
        self.assertLessEqual(2 + len(c.discarded[0].body), 48)
        b.wait_log(r"authentication data over the client's Maximum Packet Size")

    def test_wrong_password_gets_connack_0x86_with_reason_string(self):
        b = self.broker()
        c, _, ack = self.scram_connect(b, password="not-it")
        self.assertEqual(ack.reason, 0x86, ack)
        self.assertEqual(R.prop(ack, R.REASON_STRING), "authentication failed")
        self.assertTrue(c.closed_by_peer())
        b.wait_log(r'refused \(CONNACK 0x86\): not authorised: plugin "scram": SCRAM: wrong proof')

    def test_unknown_user_runs_a_fake_exchange_and_is_refused_the_same_way(self):
        b = self.broker()
        salts = []
        for _ in range(2):
            c = self.raw5(b)
            s = Scram("mallory", "guess")
            server_first = self.start_scram(c, s, "m")
            salts.append(dict(kv.split("=", 1) for kv in server_first.decode().split(","))["s"])
            c.send(auth_packet(0x18, data=s.final(server_first)))
            ack = c.expect(R.CONNACK)
            self.assertEqual(ack.reason, 0x86, ack)
            self.assertEqual(R.prop(ack, R.REASON_STRING), "authentication failed")
        self.assertEqual(salts[0], salts[1], "an unknown user's salt must not change")

    def test_tampered_nonce_is_refused(self):
        b = self.broker()
        c = self.raw5(b)
        s = Scram("alice", USERS["alice"])
        server_first = self.start_scram(c, s)
        # A proof computed (correctly) over another nonce.
        nonce = dict(kv.split("=", 1) for kv in server_first.decode().split(","))["r"]
        c.send(auth_packet(0x18, data=s.final(server_first, nonce_override=nonce[:-2] + "AA")))
        self.assertEqual(c.expect(R.CONNACK).reason, 0x86)
        b.wait_log(r"channel binding or nonce does not match")

    def test_malformed_client_first_is_refused(self):
        b = self.broker()
        for data in (b"", b"garbage", b"p=tls-unique,,n=alice,r=x", b"n,,n=alice", b"n,,n=a\x00b,r=x"):
            with self.subTest(data=data):
                c = self.raw5(b)
                c.send(R.connect5("mf", props=[(R.AUTH_METHOD, METHOD), (AUTH_DATA, data)]))
                ack = c.expect(R.CONNACK)
                self.assertEqual(ack.reason, 0x86, ack)

    def test_unknown_method_gets_connack_0x8c(self):
        """3.2.2.2: 0x8C Bad authentication method, when no plugin offers it."""
        b = self.broker()
        c = self.raw5(b)
        ack = c.connect("u", props=[(R.AUTH_METHOD, "KERBEROS"), (AUTH_DATA, b"x")])
        self.assertEqual(ack.reason, 0x8C)
        self.assertTrue(c.closed_by_peer())

    def test_auth_data_without_method_is_a_protocol_error(self):
        """3.1.2.11.10: "It is a Protocol Error to include Authentication Data if there is
        no Authentication Method"."""
        b = self.broker(deny_users=[])
        c = self.raw5(b)
        self.assertEqual(c.connect("d", props=[(AUTH_DATA, b"x")]).reason, 0x82)

    def test_auth_from_a_client_without_enhanced_authentication_is_a_protocol_error(self):
        """4.12: a client that sent no Authentication Method must not send AUTH
        [MQTT-4.12.0-7]; the broker answers DISCONNECT 0x82 (Protocol Error)."""
        b = self.broker(deny_users=[])  # v5probe lets plain clients in
        c = self.raw5(b)
        self.assertEqual(c.connect("plain").reason, 0)
        c.send(auth_packet(0x19, data=Scram("alice", "x").first()))
        d = c.expect(R.DISCONNECT)
        self.assertEqual(d.reason, 0x82)
        self.assertTrue(c.closed_by_peer())

    def test_auth_with_another_method_or_out_of_turn_is_a_protocol_error(self):
        """[MQTT-4.12.1-1]: re-authentication uses the CONNECT's method."""
        b = self.broker()
        c, _, ack = self.scram_connect(b)
        self.assertEqual(ack.reason, 0)
        c.send(auth_packet(0x19, method="SCRAM-SHA-1", data=b"n,,n=alice,r=abc"))
        self.assertEqual(c.expect(R.DISCONNECT).reason, 0x82)
        # AUTH 0x18 with nothing in progress.
        c, _, ack = self.scram_connect(b, client_id="s2")
        c.send(auth_packet(0x18, data=b"c=biws"))
        self.assertEqual(c.expect(R.DISCONNECT).reason, 0x82)

    def test_reauthentication_succeeds_and_the_session_goes_on(self):
        """4.12.1: AUTH 0x19 → AUTH 0x18 → AUTH 0x18 → AUTH 0x00, the connection and its
        subscriptions stay."""
        b = self.broker()
        c, _, ack = self.scram_connect(b)
        self.assertEqual(c.subscribe([("r/#", 1)]), [1])
        s = Scram("alice", USERS["alice"])
        c.send(auth_packet(0x19, data=s.first()))
        cont = c.read_packet()
        self.assertEqual((cont.type, cont.reason), (R.AUTH, 0x18))
        c.send(auth_packet(0x18, data=s.final(R.prop(cont, AUTH_DATA))))
        done = c.read_packet()
        self.assertEqual((done.type, done.reason), (R.AUTH, 0x00), done)
        self.assertEqual(R.prop(done, AUTH_DATA), b"v=" + b64(s.server_signature).encode())
        self.assertEqual(c.publish("r/1", b"after", qos=1), 0)
        self.assertEqual(c.next_publish().payload, b"after")
        b.wait_log(r"scram: re-authenticated user alice")

    def test_failed_reauthentication_disconnects(self):
        """4.12.1: "If the re-authentication fails, the Server will send DISCONNECT with
        an appropriate Reason Code" (0x86 is not a DISCONNECT code: 0x87)."""
        b = self.broker()
        c, _, ack = self.scram_connect(b)
        self.assertEqual(ack.reason, 0)
        s = Scram("alice", "wrong")
        c.send(auth_packet(0x19, data=s.first()))
        cont = c.expect(R.AUTH)
        c.send(auth_packet(0x18, data=s.final(R.prop(cont, AUTH_DATA))))
        d = c.expect(R.DISCONNECT)
        self.assertEqual(d.reason, 0x87)
        self.assertEqual(R.prop(d, R.REASON_STRING), "authentication failed")
        self.assertTrue(c.closed_by_peer())

    def test_reauthentication_as_another_user_is_refused(self):
        b = self.broker()
        c, _, _ = self.scram_connect(b)
        s = Scram("bob", USERS["bob"])
        c.send(auth_packet(0x19, data=s.first()))
        cont = c.expect(R.AUTH)
        c.send(auth_packet(0x18, data=s.final(R.prop(cont, AUTH_DATA))))
        self.assertEqual(c.expect(R.DISCONNECT).reason, 0x87)

    def test_a_client_that_never_answers_the_challenge_is_closed(self):
        """The exchange counts against connect_timeout."""
        b = self.broker(connect_timeout=1)
        c = self.raw5(b)
        self.start_scram(c, Scram("alice", USERS["alice"]))
        self.assertTrue(c.closed_by_peer(timeout=5))
        b.wait_log(r"authentication exchange not finished within connect_timeout")

    def test_other_packets_during_the_exchange_close_the_connection(self):
        b = self.broker()
        c = self.raw5(b)
        self.start_scram(c, Scram("alice", USERS["alice"]))
        c.send(R.subscribe5(1, [("t", 0)]))
        self.assertTrue(c.closed_by_peer())

    def test_mqttjs_does_scram_through_handle_auth(self):
        """MQTT.js 5 (test/js/scram.js) as the SCRAM client, through its handleAuth hook."""
        import json
        import subprocess
        js = os.path.join(os.path.dirname(__file__), "..", "js")
        if not os.path.isdir(os.path.join(js, "node_modules", "mqtt")):
            self.skipTest("MQTT.js not installed (npm ci in test/js)")
        b = self.broker()
        for password, ok in ((USERS["bob"], True), ("nope", False)):
            p = subprocess.run(["node", os.path.join(js, "scram.js"), f"mqtt://127.0.0.1:{b.port()}",
                                "bob", password], capture_output=True, text=True, timeout=30)
            result = json.loads(p.stdout.strip().splitlines()[-1])
            self.assertEqual(result["ok"], ok, result)
            if ok:
                self.assertEqual(result["received"], "hello")
            else:
                self.assertEqual(result.get("code"), 0x86, result)

    # -- plugins' reason codes, strings and user properties -----------------------------
    def test_plugin_reason_code_and_string_reach_a_paho_5_client(self):
        import paho.mqtt.client as mqtt
        b = self.broker(deny_users=["eve"], connack_reason=0x8A, reason_string="banned here")
        got = queue.Queue()
        cl = mqtt.Client(client_id="eve1", protocol=mqtt.MQTTv5)
        cl.username_pw_set("eve", "pw")
        cl.on_connect = lambda c, u, f, rc, props=None: got.put((rc, props))
        cl.connect("127.0.0.1", b.port())
        cl.loop_start()
        try:
            rc, props = got.get(timeout=5)
        finally:
            cl.loop_stop()
        self.assertEqual(rc.value, 0x8A)
        self.assertEqual(props.ReasonString, "banned here")

    def test_a_311_client_gets_the_nearest_311_code(self):
        """0x8A (banned) → 5 (not authorised); 0x86 → 4 (bad user name or password)."""
        for code, expected in ((0x8A, 5), (0x86, 4), (0x88, 3)):
            with self.subTest(code=code):
                b = self.broker(deny_users=["eve"], connack_reason=code)
                c = R.RawClient(b.port())
                self.addCleanup(c.close)
                self.assertEqual(c.connect("e", username="eve").return_code, expected)

    def test_illegal_connack_code_from_a_plugin_becomes_0x87(self):
        b = self.broker(deny_users=["eve"], connack_reason=0x04)
        c = self.raw5(b)
        self.assertEqual(c.connect("e", username="eve").reason, 0x87)
        b.wait_log(r"reason code 0x04 is not a failure code for a CONNACK")

    def test_publish_and_subscribe_denials_carry_the_plugins_code_and_string(self):
        b = self.broker(deny_topics=["secret/#"], ack_reason=0x97, reason_string="quota gone")
        c = self.raw5(b)
        self.assertEqual(c.connect("p").reason, 0)
        c.send(R.publish5("secret/a", b"x", qos=1, packet_id=3))
        ack = c.expect(R.PUBACK)
        self.assertEqual(ack.reason, 0x97)
        self.assertEqual(R.prop(ack, R.REASON_STRING), "quota gone")
        c.send(R.publish5("secret/a", b"x", qos=2, packet_id=4))
        rec = c.expect(R.PUBREC)
        self.assertEqual((rec.reason, R.prop(rec, R.REASON_STRING)), (0x97, "quota gone"))
        c.send(R.subscribe5(5, [("secret/#", 1), ("open/#", 1)]))
        sub = c.expect(R.SUBACK)
        self.assertEqual(sub.codes, [0x97, 1])
        self.assertEqual(R.prop(sub, R.REASON_STRING), "quota gone")

    def test_request_problem_information_0_suppresses_reason_strings(self):
        """[MQTT-3.1.2-29]: with Request Problem Information 0 no Reason String on any
        packet but PUBLISH, CONNACK and DISCONNECT."""
        b = self.broker(deny_topics=["secret/#"], ack_reason=0x87, reason_string="no")
        c = self.raw5(b)
        self.assertEqual(c.connect("p", props=[(REQUEST_PROBLEM_INFO, 0)]).reason, 0)
        c.send(R.publish5("secret/a", b"x", qos=1, packet_id=3))
        ack = c.expect(R.PUBACK)
        self.assertEqual(ack.reason, 0x87)
        self.assertIsNone(R.prop(ack, R.REASON_STRING))
        c.send(R.subscribe5(5, [("secret/#", 1)]))
        sub = c.expect(R.SUBACK)
        self.assertEqual(sub.codes, [0x87])
        self.assertIsNone(R.prop(sub, R.REASON_STRING))

    def test_a_311_client_denied_a_subscription_gets_0x80(self):
        b = self.broker(deny_topics=["secret/#"], ack_reason=0x97)
        c = R.RawClient(b.port())
        self.addCleanup(c.close)
        self.assertEqual(c.connect("p3").return_code, 0)
        self.assertEqual(c.subscribe([("secret/#", 1)]), [0x80])

    def test_user_properties_and_protocol_level_reach_the_plugin(self):
        b = self.broker(deny_users=[])
        c = self.raw5(b)
        props = [(R.USER_PROPERTY, ("region", "eu")), (R.USER_PROPERTY, ("tier", "gold")),
                 (R.USER_PROPERTY, ("region", "us"))]
        self.assertEqual(c.connect("up", props=props).reason, 0)
        b.wait_log(r"v5probe: authenticate client_id=up level=5 api_level=5 "
                   r"user_properties=\[region=eu;tier=gold;region=us\]")
        c3 = R.RawClient(b.port())
        self.addCleanup(c3.close)
        self.assertEqual(c3.connect("old").return_code, 0)
        b.wait_log(r"v5probe: authenticate client_id=old level=4 api_level=4 user_properties=\[\]")


class DeferredExchangeTest(BrokerTestCase):
    """Every step answered later, from the `deferred` test plugin's thread (method
    "ECHO"): api->complete carries CONTINUE, the Authentication Data and the MQTT 5
    reason code and string."""

    def broker(self, **options):
        cfg = 'log_level = "debug"\n[listeners.default]\nbind = "127.0.0.1:0"\n'
        cfg += plugin_table("d", "deferred", tag="d", delay_ms=100, auth_method="ECHO", **options)
        return self.start_broker(cfg)

    def raw5(self, b):
        c = R.RawClient5(b.port())
        self.addCleanup(c.close)
        return c

    def echo_connect(self, b, answer):
        c = self.raw5(b)
        c.send(R.connect5("e1", props=[(R.AUTH_METHOD, "ECHO"), (AUTH_DATA, b"hi")]))
        cont = c.expect(R.AUTH)
        self.assertEqual((cont.reason, R.prop(cont, AUTH_DATA)), (0x18, b"challenge:hi"))
        c.send(auth_packet(0x18, method="ECHO", data=answer))
        return c, c.expect(R.CONNACK)

    def test_deferred_exchange_succeeds_and_reauthenticates(self):
        b = self.broker()
        c, ack = self.echo_connect(b, b"answer")
        self.assertEqual(ack.reason, 0)
        self.assertEqual(R.prop(ack, AUTH_DATA), b"welcome")
        self.assertEqual(R.prop(ack, R.AUTH_METHOD), "ECHO")
        c.send(auth_packet(0x19, method="ECHO", data=b"again"))
        cont = c.expect(R.AUTH)
        self.assertEqual((cont.reason, R.prop(cont, AUTH_DATA)), (0x18, b"challenge:again"))
        c.send(auth_packet(0x18, method="ECHO", data=b"answer"))
        done = c.expect(R.AUTH)
        self.assertEqual((done.reason, R.prop(done, AUTH_DATA)), (0x00, b"welcome"))
        c.ping()
        b.wait_log(r"deferred d: exchange client_id=e1 method=ECHO step=1 reauthenticate=1")

    def test_deferred_exchange_denial_carries_code_and_string(self):
        b = self.broker()
        c, ack = self.echo_connect(b, b"wrong")
        self.assertEqual(ack.reason, 0x8A)
        self.assertEqual(R.prop(ack, R.REASON_STRING), "wrong answer")

    def test_deferred_denial_of_a_plain_client_carries_code_and_string(self):
        b = self.broker(deny_users=["mallory"], deny_reason_code=0x8A,
                        deny_reason_string="banned")
        c = self.raw5(b)
        ack = c.connect("m5", username="mallory")
        self.assertEqual((ack.reason, R.prop(ack, R.REASON_STRING)), (0x8A, "banned"))
        c3 = R.RawClient(b.port())
        self.addCleanup(c3.close)
        self.assertEqual(c3.connect("m3", username="mallory").return_code, 5)


class ResponseAndProblemInformationTest(BrokerTestCase):
    """Request Response Information and the broker's own Reason Strings (mqgate-only:
    `response_information` is mqgate configuration, and Mosquitto 2.0 sends neither)."""

    def broker(self, extra=""):
        cfg = 'log_level = "debug"\n' + extra + '[listeners.default]\nbind = "127.0.0.1:0"\n'
        return self.start_broker(cfg)

    def raw5(self, b):
        c = R.RawClient5(b.port())
        self.addCleanup(c.close)
        return c

    def test_response_information_only_when_requested_and_configured(self):
        """3.1.2.11.7 / 3.2.2.3.15: Response Information in CONNACK only for a client that
        set Request Response Information 1 [MQTT-3.1.2-28]."""
        b = self.broker('response_information = "reply/%c/"\n')
        c = self.raw5(b)
        ack = c.connect("rr1", props=[(0x19, 1)])
        self.assertEqual(R.prop(ack, 0x1A), "reply/rr1/")
        c2 = self.raw5(b)
        self.assertIsNone(R.prop(c2.connect("rr2"), 0x1A))
        # Not configured: never sent.
        b2 = self.broker()
        c3 = self.raw5(b2)
        self.assertIsNone(R.prop(c3.connect("rr3", props=[(0x19, 1)]), 0x1A))

    def test_server_disconnects_and_refusals_say_why(self):
        b = self.broker()
        old = self.raw5(b)
        self.assertEqual(old.connect("same").reason, 0)
        new = self.raw5(b)
        self.assertEqual(new.connect("same").reason, 0)
        d = old.expect(R.DISCONNECT)
        self.assertEqual((d.reason, R.prop(d, R.REASON_STRING)), (0x8E, "session taken over"))
        # A protocol error, also with Request Problem Information 0 (DISCONNECT may).
        c = self.raw5(b)
        self.assertEqual(c.connect("pe", props=[(REQUEST_PROBLEM_INFO, 0)]).reason, 0)
        c.send(auth_packet(0x19, method="X"))
        d = c.expect(R.DISCONNECT)
        self.assertEqual(d.reason, 0x82)
        self.assertIn("AUTH without enhanced authentication", R.prop(d, R.REASON_STRING))
        # A refusal: the CONNACK says why.
        c = self.raw5(b)
        ack = c.connect("m", props=[(R.AUTH_METHOD, "NOPE")])
        self.assertEqual(ack.reason, 0x8C)
        self.assertIn("no plugin offers the authentication method", R.prop(ack, R.REASON_STRING))


if __name__ == "__main__":
    unittest.main()
