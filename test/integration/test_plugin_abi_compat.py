"""Old plugin binaries keep working: plugins built against the frozen headers of ABI
1.1 (test/plugins/abi1: the scripted test plugin and the documented devices_acl example
as they were when the broker hosted ABI 1 only) and of ABI 2.1 (test/plugins/abi2_1: the
test plugins as they were before the header became ABI 2.2) are loaded beside plugins
built against the current header, in the same chains, and their decisions are checked
end to end with real clients: CONNACK codes (3.1.1 and 5.0), identities, SUBACK and
PUBACK codes, deferred decisions, retained deliveries, enhanced authentication. And the
headers agree on the layout: every field offset and size and every constant value of
the old headers is the current header's too (test/plugins/abi_layout.c)."""
import os
import subprocess
import unittest

import mqtt_raw as R
import mqgate_test
from mqgate_test import BUILD_DIR, Broker

LAYOUT = os.path.join(BUILD_DIR, "test", "plugins", "abi_layout_{}")
AUTH_DATA = 0x16


def plugin(instance, module, **options):
    # The scripted and deferred plugins tag their log lines with the instance name.
    if module.endswith("scripted") or module.endswith("deferred"):
        options = {"tag": instance, **options}
    return mqgate_test.plugin_table(instance, module, **options)


def listener(name, plugins):
    return (f'[listeners.{name}]\nbind = "127.0.0.1:0"\nplugins = [' +
            ", ".join(f'"{p}"' for p in plugins) + "]\n")


class LayoutTest(unittest.TestCase):
    def layout(self, which):
        p = subprocess.run([LAYOUT.format(which)], capture_output=True, text=True, timeout=20,
                           check=True)
        lines = p.stdout.splitlines()
        self.assertGreater(len(lines), 50)
        return lines

    def test_old_headers_layout_is_the_current_one(self):
        current = self.layout("current")
        sizes = {l.rsplit(" ", 1)[0]: int(l.rsplit(" ", 1)[1]) for l in current
                 if l.startswith("sizeof ")}
        for old in ("abi1", "abi2_1", "abi2_4"):
            with self.subTest(header=old):
                # The minor version is the one value that grows by design.
                lines = [l for l in self.layout(old)
                         if not l.startswith("MQGATE_PLUGIN_ABI_MINOR =")]
                # Fields and constants stay where and what they were; structs only grow
                # (at their end: the fields' offsets above say so).
                missing = [l for l in lines if not l.startswith("sizeof ") and l not in current]
                shrunk = [l for l in lines if l.startswith("sizeof ") and
                          sizes.get(l.rsplit(" ", 1)[0], -1) < int(l.rsplit(" ", 1)[1])]
                self.assertEqual(missing + shrunk, [], f"the {old} header's layout changed")


class MixedAbiTest(unittest.TestCase):
    """One broker; each listener's chain mixes old and new binaries."""

    @classmethod
    def setUpClass(cls):
        cfg = 'log_level = "debug"\n'
        # The mixed chain: ABI 1 built against the 1.1 header; ABI 1 against the 2.1
        # header; ABI 1 against this one; ABI 2 against 2.1 and against this one.
        cfg += listener("mixed", ["old1", "old21", "new1", "d21", "dnew", "p21"])
        cfg += listener("devices", ["old1", "devacl"])
        cfg += listener("echo", ["echo21"])
        # An ABI 2.4 binary (built against the frozen 2.4 header) beside 2.5 hosts.
        cfg += listener("abi24", ["d24"])
        cfg += plugin("d24", "abi2_4/deferred", delay_ms=20, deny_users=["oscar"])
        cfg += plugin("old1", "abi1/scripted", authenticate="allow", deny_clients=["bad1"],
                      deny_topics=["old1/#"], reason="old1 says no")
        cfg += plugin("old21", "abi2_1/scripted", authenticate="abstain",
                      deny_clients=["bad21"], deny_topics=["old21/#"])
        cfg += plugin("new1", "scripted", authorize="abstain", deny_topics=["new1/#"])
        cfg += plugin("d21", "abi2_1/deferred", delay_ms=100, deny_users=["mallory"],
                      defer_topics=["slow/#"], deny_topics=["slow/no/#"],
                      receive_deny=["r/secret21"])
        cfg += plugin("dnew", "deferred", delay_ms=100, deny_users=["trudy"],
                      receive_deny=["r/secretnew"])
        cfg += plugin("p21", "abi2_1/v5probe", deny_users=["eve"], connack_reason=0x8A,
                      deny_topics=["v5/#"], ack_reason=0x97, reason_string="old probe says no")
        cfg += plugin("devacl", "abi1/devices_acl", prefix="devices")
        cfg += plugin("echo21", "abi2_1/deferred", delay_ms=50, auth_method="ECHO")
        cls.broker = Broker(cfg)

    @classmethod
    def tearDownClass(cls):
        cls.broker.close()

    def raw(self, listener="mixed", v5=False):
        c = (R.RawClient5 if v5 else R.RawClient)(self.broker.port(listener))
        self.addCleanup(c.close)
        return c

    def connack(self, client_id, username=None, listener="mixed"):
        return self.raw(listener).connect(client_id, username=username).return_code

    def test_each_plugin_is_hosted_with_the_abi_it_was_built_for(self):
        log = self.broker.log()
        for name, module, abi in (("old1", "abi1/scripted", 1), ("old21", "abi2_1/scripted", 1),
                                  ("new1", "scripted", 1), ("d21", "abi2_1/deferred", 2),
                                  ("dnew", "deferred", 2), ("p21", "abi2_1/v5probe", 2),
                                  ("devacl", "abi1/devices_acl", 1)):
            self.assertRegex(log, rf'plugin "{name}" loaded from \S*/{module}\.so \(ABI {abi}\)')
        # Both ABI 1 plugins built against an ABI 2 header get the ABI 1.1 host table.
        self.assertIn("scripted old21: abi=1 api_has_identity=1 api_has_defer=0", log)
        self.assertIn("scripted new1: abi=1 api_has_identity=1 api_has_defer=0", log)

    def test_connect_allowed_by_every_kind_of_plugin(self):
        self.assertEqual(self.connack("good", username="alice"), 0)
        b = self.broker
        for line in ("scripted old1: authenticate client_id=good", "scripted old21: authenticate "
                     "client_id=good", "deferred d21: authenticate client_id=good username=alice "
                     "clean_session=1 level=4", "deferred dnew: authenticate client_id=good",
                     "v5probe: authenticate client_id=good level=4"):
            b.wait_log(line)
        # The identity the old ABI 2 binary vouched for through api->complete (the first
        # ALLOW with one), as the new binary reads it back.
        b.wait_log(r"deferred dnew: connected client_id=good identity=d21:alice")

    def test_an_abi_2_4_binary_loads_and_decides(self):
        self.assertRegex(self.broker.log(),
                         r'plugin "d24" loaded from \S*/abi2_4/deferred\.so \(ABI 2\)')
        self.assertEqual(self.connack("ok24", username="alice", listener="abi24"), 0)
        self.assertEqual(self.connack("no24", username="oscar", listener="abi24"), 4)

    def test_connect_denied_by_old_and_new_binaries(self):
        self.assertEqual(self.connack("bad1"), 5)  # ABI 1 binary, 1.1 header
        self.assertEqual(self.connack("bad21"), 5)  # ABI 1 binary, 2.1 header
        self.assertEqual(self.connack("m", username="mallory"), 4)  # ABI 2.1 binary, deferred
        self.assertEqual(self.connack("t", username="trudy"), 4)  # ABI 2.2 binary, deferred
        self.broker.wait_log(r'client="bad1" .*refused \(CONNACK 5\): not authorised: '
                             r'plugin "old1": old1 says no')
        self.broker.wait_log(r'client="m" .*refused \(CONNACK 4\): not authorised: '
                             r'plugin "d21": unknown user')

    def test_mqtt5_fields_written_and_read_by_an_abi_2_1_binary(self):
        c = self.raw(v5=True)
        ack = c.connect("e5", username="eve",
                        props=[(R.USER_PROPERTY, ("k", "v"))])
        self.assertEqual((ack.reason, R.prop(ack, R.REASON_STRING)), (0x8A, "old probe says no"))
        self.broker.wait_log(r"v5probe: authenticate client_id=e5 level=5 api_level=5 "
                             r"user_properties=\[k=v\]")
        ok = self.raw(v5=True)
        self.assertEqual(ok.connect("ok5", username="alice").reason, 0)
        self.assertEqual(ok.publish("v5/x", b"x", qos=1), 0x97)  # the old binary's PUBACK code
        self.assertIn(ok.publish("free/x", b"x", qos=1), (0, 0x10))  # allowed

    def test_subscriptions_decided_by_old_and_new_binaries(self):
        c = self.raw()
        self.assertEqual(c.connect("subber", username="alice").return_code, 0)
        self.assertEqual(
            c.subscribe([("old1/a", 1), ("old21/a", 1), ("new1/a", 1), ("slow/no/a", 1),
                         ("slow/ok", 1), ("free/a", 2)]),
            [0x80, 0x80, 0x80, 0x80, 1, 2])
        self.broker.wait_log(r"deferred d21: completing -> 18")  # the deferred DENY

    def test_retained_deliveries_as_each_abi_sees_them(self):
        w = self.raw()
        self.assertEqual(w.connect("writer", username="alice").return_code, 0)
        for topic in ("r/secret21", "r/secretnew", "r/open"):
            w.publish(topic, b"x", qos=1, retain=True)
        reader = self.raw()
        self.assertEqual(reader.connect("reader", username="alice").return_code, 0)
        self.assertEqual(reader.subscribe([("r/#", 0)]), [0])
        p = reader.next_publish()
        self.assertEqual((p.topic, p.retain), ("r/open", True))
        reader.ping()
        self.assertEqual(reader.pending, [])
        b = self.broker
        # ABI 1 binaries: a SUBSCRIBE with retain 1; ABI 2: RECEIVE with the filter.
        b.wait_log(r"scripted old1: authorize client_id=reader action=2 topic=r/open qos=0 "
                   r"retain=1")
        b.wait_log(r"deferred d21: authorize client_id=reader action=3 topic=r/secret21 "
                   r"filter=r/# retain=1 deferrable=0")

    def test_deferred_publish_by_an_abi_2_1_binary(self):
        c = self.raw()
        self.assertEqual(c.connect("pub", username="alice").return_code, 0)
        self.assertEqual(c.subscribe([("slow/#", 1)]), [1])
        c.publish("slow/yes", b"1", qos=1)
        c.publish("slow/no/x", b"2", qos=1)
        self.assertEqual(c.next_publish().payload, b"1")
        self.broker.wait_log(r'client="pub" .*publish to "slow/no/x" denied \(not forwarded\): '
                             r'plugin "d21": topic denied later')

    def test_enhanced_authentication_by_an_abi_2_1_binary(self):
        c = self.raw("echo", v5=True)
        c.send(R.connect5("ex", props=[(R.AUTH_METHOD, "ECHO"), (AUTH_DATA, b"hi")]))
        cont = c.expect(R.AUTH)
        self.assertEqual((cont.reason, R.prop(cont, AUTH_DATA)), (0x18, b"challenge:hi"))
        c.send(R.packet(R.AUTH, 0, bytes([0x18]) + R.encode_properties(
            [(R.AUTH_METHOD, "ECHO"), (AUTH_DATA, b"answer")])))
        ack = c.expect(R.CONNACK)
        self.assertEqual((ack.reason, R.prop(ack, AUTH_DATA)), (0, b"welcome"))

    def test_the_abi_1_example_plugin_as_built_back_then(self):
        dev = self.raw("devices")
        self.assertEqual(dev.connect("sensor-1").return_code, 0)
        watcher = self.raw("devices")
        self.assertEqual(watcher.connect("watcher").return_code, 0)
        self.assertEqual(watcher.subscribe([("devices/#", 1)]), [1])
        dev.publish("devices/sensor-1/t", b"ok", qos=1)
        dev.publish("devices/sensor-2/t", b"spoofed", qos=1)
        p = watcher.next_publish()
        self.assertEqual((p.topic, p.payload), ("devices/sensor-1/t", b"ok"))
        watcher.ping()
        self.assertEqual(watcher.pending, [])
        self.broker.wait_log(r'client="sensor-1" .*publish to "devices/sensor-2/t" denied '
                             r'\(not forwarded\): plugin "devacl": may publish only under '
                             r"devices/sensor-1/")


if __name__ == "__main__":
    unittest.main()
