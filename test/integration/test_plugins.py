"""The plugin host: loading (and every way it fails), the auth chains, the anonymous
plugin, per-listener plugin lists, instances, events, and SIGHUP reloads.

The test plugins in test/plugins answer from their options (see scripted.c)."""
import os
import re
import signal
import subprocess
import time
import unittest

import mqgate_test
import mqtt_raw as r
from brokers import PahoClient
from mqgate_test import (BROKER_BIN, RUN_AS, PLUGIN_DIR, TEST_PLUGIN_DIR, Broker, BrokerTestCase,
                         run_config_check)


def test_plugin(name):
    return os.path.join(TEST_PLUGIN_DIR, name + ".so")


def scripted(instance, **options):
    """A [plugins.<instance>] table for the scripted test plugin."""
    return mqgate_test.plugin_table(instance, "scripted", tag=instance, **options)


def connack(port, client_id="c", username=None, password=None):
    """CONNECTs with a raw client; returns the CONNACK return code."""
    c = r.RawClient(port)
    try:
        c.send(r.connect(client_id, username=username, password=password))
        return c.expect(r.CONNACK).return_code
    finally:
        c.sock.close()


class RelativePathTest(BrokerTestCase):
    def test_relative_plugin_dir_and_path_with_a_relative_config_path(self):
        # Both are relative to the configuration file, resolved once, also when the
        # configuration file itself is given as a relative path.
        os.makedirs(os.path.join(self.tmp, "etc"))
        os.symlink(PLUGIN_DIR, os.path.join(self.tmp, "plugs"))
        with open(os.path.join(self.tmp, "etc", "mqgate.toml"), "w") as f:
            f.write('plugin_dir = "../plugs"\n[listeners.default]\nbind = "127.0.0.1:0"\n'
                    '[plugins.anonymous]\nallow_anonymous = true\n'
                    '[plugins.second]\npath = "../plugs/anonymous.so"\nallow_anonymous = false\n')
        p = subprocess.run([BROKER_BIN, "--check-config", "--config", "etc/mqgate.toml", *RUN_AS],
                           cwd=self.tmp, capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        # (--check-config loads and initialises every plugin)
        self.assertIn("configuration is valid", p.stdout + p.stderr)


class LoaderFailureTest(BrokerTestCase):
    """Each way loading can fail stops the broker before it listens, naming the plugin,
    the file and the reason, with exit code 1."""

    def check_refused(self, plugin_table, *expected):
        cfg = '[listeners.default]\nbind = "127.0.0.1:0"\n' + plugin_table
        rc, out = run_config_check(cfg, self.tmp)
        self.assertEqual(rc, 1, out)
        for e in expected:
            self.assertRegex(out, e)
        self.assertIn("not started", out)
        # The real start fails the same way, before listening.
        path = os.path.join(self.tmp, "start.toml")
        with open(path, "w") as f:
            f.write(cfg)
        p = subprocess.run([BROKER_BIN, "--config", path, *RUN_AS], capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertNotIn("listening on", p.stderr)
        return out

    def test_missing_file(self):
        self.check_refused(
            "[plugins.ghost]\n",
            r'check\.toml:3: plugin "ghost": cannot find .*/ghost\.so',
            r"set `path`, or `plugin_dir`")

    def test_missing_explicit_path(self):
        self.check_refused('[plugins.p]\npath = "/nonexistent/p.so"\n',
                           r'plugin "p": cannot find /nonexistent/p\.so \(No such file')

    def test_not_a_shared_object(self):
        bogus = os.path.join(self.tmp, "bogus.so")
        with open(bogus, "w") as f:
            f.write("not an ELF file\n")
        self.check_refused(f'[plugins.bogus]\npath = "{bogus}"\n',
                           r'plugin "bogus": cannot load .*bogus\.so')

    def test_missing_version_symbol(self):
        self.check_refused(f'[plugins.np]\npath = "{test_plugin("not_a_plugin")}"\n',
                           r'plugin "np" \(.*not_a_plugin\.so\): does not export the symbol '
                           r'mqgate_plugin_version')

    def test_missing_init_symbol(self):
        self.check_refused(f'[plugins.ni]\npath = "{test_plugin("no_init")}"\n',
                           r'plugin "ni" \(.*no_init\.so\): does not export the symbol '
                           r'mqgate_plugin_init')

    def test_abi_version_mismatch(self):
        self.check_refused(f'[plugins.old]\npath = "{test_plugin("bad_version")}"\n',
                           r'plugin "old" \(.*bad_version\.so\): plugin ABI version mismatch: the '
                           r'plugin was built for version 99, this broker hosts versions 2, 1')

    def test_init_error_message(self):
        self.check_refused(scripted("failing", fail_init=True),
                           r'plugin "failing" \(.*scripted\.so\): init failed \(invalid plugin '
                           r'configuration\): .*check\.toml:\d+:\d+: fail_init is set')

    def test_anonymous_option_errors(self):
        self.check_refused("[plugins.anonymous]\n",
                           r'plugin "anonymous" .*allow_anonymous: missing')
        self.check_refused('[plugins.anonymous]\nallow_anonymous = "yes"\n',
                           r"check\.toml:4:\d+: allow_anonymous: expected true or false")
        self.check_refused("[plugins.anonymous]\nallow_anonymous = true\nallow_anon = false\n",
                           r'check\.toml:5:1: unknown option "allow_anon"')

    def test_listener_naming_an_unknown_plugin(self):
        rc, out = run_config_check('[listeners.a]\nbind = "127.0.0.1:0"\nplugins = ["nope"]\n',
                                   self.tmp)
        self.assertEqual(rc, 1)
        self.assertIn('"nope" is not a configured plugin', out)

    def test_check_config_loads_and_unloads_plugins(self):
        rc, out = run_config_check(
            '[listeners.a]\nbind = "127.0.0.1:0"\n' + scripted("ok", authenticate="allow"), self.tmp)
        self.assertEqual(rc, 0, out)
        self.assertIn("configuration is valid", out)


class ChainTest(BrokerTestCase):
    """The combination rules as a table: one listener per case, each naming its own
    chain of scripted instances (one broker serves every case)."""

    CASES = {
        # listener: (plugin instances, expected CONNACK return code)
        "allow": (["allow1"], 0),
        "abstain": (["abstain1"], 5),
        "allow_abstain": (["allow1", "abstain1"], 0),
        "abstain_allow": (["abstain1", "allow1"], 0),
        "allow_deny": (["allow1", "deny1"], 5),
        "deny_allow": (["deny1", "allow1"], 5),
        "abstain_abstain": (["abstain1", "abstain2"], 5),
        "invalid": (["invalid1"], 5),
        "allow_invalid": (["allow1", "invalid1"], 5),
        "two_allows": (["allow1", "allow2"], 0),
        "observer_only": (["observer"], 0),  # no auth plugin at all: everyone may connect
    }

    @classmethod
    def setUpClass(cls):
        cfg = 'log_level = "info"\n'
        for name, (chain, _) in cls.CASES.items():
            cfg += f'[listeners.{name}]\nbind = "127.0.0.1:0"\nplugins = [' + ", ".join(
                f'"{p}"' for p in chain) + "]\n"
        cfg += scripted("allow1", authenticate="allow")
        cfg += scripted("allow2", authenticate="allow")
        cfg += scripted("abstain1", authenticate="abstain")
        cfg += scripted("abstain2", authenticate="abstain")
        cfg += scripted("deny1", authenticate="deny", reason="deny1 says no")
        cfg += scripted("invalid1", authenticate="invalid")
        cfg += scripted("observer")  # registers no decision events
        cls.broker = Broker(cfg)

    @classmethod
    def tearDownClass(cls):
        cls.broker.close()

    def test_table(self):
        for listener, (chain, expected) in self.CASES.items():
            with self.subTest(listener=listener, chain=chain):
                self.assertEqual(connack(self.broker.port(listener), f"c-{listener}"), expected)

    def test_every_plugin_is_asked_in_order(self):
        connack(self.broker.port("abstain_allow"), "order-check")
        log = self.broker.log()
        first = log.index("scripted abstain1: authenticate client_id=order-check")
        second = log.index("scripted allow1: authenticate client_id=order-check")
        self.assertLess(first, second)
        # Asked even after a deny: every auth plugin sees every attempt.
        connack(self.broker.port("deny_allow"), "after-deny")
        self.broker.wait_log(r"scripted allow1: authenticate client_id=after-deny")

    def test_denial_log_names_plugin_and_reason(self):
        self.assertEqual(connack(self.broker.port("allow_deny"), "who-denied"), 5)
        self.broker.wait_log(r'client="who-denied" .*refused \(CONNACK 5\): not authorised: '
                             r'plugin "deny1": deny1 says no')

    def test_invalid_decision_is_deny_and_logged(self):
        self.assertEqual(connack(self.broker.port("invalid"), "garbage"), 5)
        self.broker.wait_log(r'ERROR plugin "invalid1": authenticate returned 42, not a decision; '
                             r"treated as DENY")

    def test_all_abstain_reason(self):
        self.assertEqual(connack(self.broker.port("abstain_abstain"), "nobody"), 5)
        self.broker.wait_log(r'client="nobody" .*refused \(CONNACK 5\): not authorised: no plugin '
                             r"allowed the client \(all abstained\)")

    def test_abi1_plugin_gets_the_abi1_host_table(self):
        log = self.broker.log()
        self.assertIn('plugin "allow1" loaded from', log)
        self.assertRegex(log, r"scripted allow1: abi=1 api_has_identity=1 api_has_defer=0")
        self.assertRegex(log, r'plugin "allow1" loaded from .*scripted\.so \(ABI 1\)')

    def test_listener_without_auth_plugin_is_warned_about(self):
        self.assertRegex(self.broker.log(),
                         r'WARN  listener "observer_only" has no authentication plugin')

    def test_event_fields(self):
        c = PahoClient("127.0.0.1", self.broker.port("allow"), "fields", username="u1",
                       password="pw")
        rc, _ = c.connect()
        self.assertEqual(rc, 0)
        port = c.c.socket().getsockname()[1]
        c.disconnect()
        self.broker.wait_log(r"scripted allow1: disconnected client_id=fields reason=client sent "
                             r"DISCONNECT")
        log = self.broker.log()
        self.assertRegex(log, r"scripted allow1: authenticate client_id=fields generated=0 "
                              r"username=u1 password_len=2 level=4 listener=allow "
                              rf"peer=127\.0\.0\.1:{port} chain=0 -> 1")
        self.assertRegex(log, r"scripted allow1: connected client_id=fields username=u1 "
                              rf"listener=allow peer=127\.0\.0\.1:{port} session_present=0")
        self.assertNotIn("scripted abstain1: connected client_id=fields", log)  # not on its listener


class AuthorizationTest(BrokerTestCase):
    def setUp(self):
        super().setUp()
        self.b = self.start_broker(
            'log_level = "info"\n[listeners.default]\nbind = "127.0.0.1:0"\n'
            + scripted("acl", authenticate="allow", deny_topics=["secret/#"], reason="acl says no")
            + scripted("watcher", authorize="abstain"))

    def client(self, cid, **kw):
        c = PahoClient("127.0.0.1", self.b.port(), cid, **kw)
        self.assertEqual(c.connect()[0], 0)
        self.addCleanup(c.disconnect)
        return c

    def test_denied_filter_gets_0x80_and_the_others_are_granted(self):
        c = self.client("subber")
        self.assertEqual(c.subscribe([("public/#", 1), ("secret/x", 1), ("other", 2)]),
                         [1, 128, 2])
        self.b.wait_log(r'client="subber" .*subscription to "secret/x" denied: plugin "acl": '
                        r"acl says no")

    def test_denied_publish_is_acked_not_forwarded(self):
        sub = self.client("listener-all")
        sub.subscribe("#", 1)
        pub = self.client("pub")
        pub.publish("secret/data", b"leak", qos=1)  # returns once PUBACK arrived
        pub.publish("public/data", b"fine", qos=1)
        self.assertEqual(sub.get().payload, b"fine")
        sub.expect_nothing(0.3)
        self.b.wait_log(r'client="pub" .*publish to "secret/data" denied \(not forwarded\)')

    def test_denied_qos2_publish_completes_its_flow(self):
        pub = self.client("pub2")
        pub.publish("secret/q2", b"x", qos=2)

    def test_denied_will_is_not_published(self):
        sub = self.client("will-watch")
        sub.subscribe("#", 0)
        raw = r.RawClient(self.b.port())
        raw.send(r.connect("dies", will_topic="secret/will", will_payload=b"bye"))
        raw.expect(r.CONNACK)
        raw.sock.close()
        self.b.wait_log(r'client="dies" .*will to "secret/will" denied')
        sub.expect_nothing(0.3)

    def test_retained_delivery_is_checked(self):
        # Stored before the rule applies to the reader: publish as a client the ACL allows,
        # on a topic the reader may not receive through a wildcard.
        self.b.close()
        self._brokers.remove(self.b)
        self.b = self.start_broker(
            'log_level = "debug"\n[listeners.default]\nbind = "127.0.0.1:0"\n'
            + scripted("acl", authenticate="allow", deny_topics=["hidden/#"]))
        raw = r.RawClient(self.b.port())
        raw.send(r.connect("writer"))
        raw.expect(r.CONNACK)
        raw.send(r.publish("open/a", b"visible", retain=True))
        raw.send(r.disconnect())
        raw.sock.close()
        reader = self.client("reader")
        self.assertEqual(reader.subscribe("#", 0), [0])
        msg = reader.get()
        self.assertEqual((msg.topic, msg.payload, msg.retain), ("open/a", b"visible", True))
        self.b.wait_log(r"scripted acl: authorize client_id=reader action=2 topic=open/a qos=0 "
                        r"retain=1")


class AnonymousPluginTest(BrokerTestCase):
    def anonymous_broker(self, allow):
        return self.start_broker(
            'log_level = "info"\n[listeners.default]\nbind = "127.0.0.1:0"\n'
            f"[plugins.anonymous]\nallow_anonymous = {'true' if allow else 'false'}\n")

    def mosquitto_pub(self, port, *args):
        return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", "t",
                               "-m", "x", "-i", "anon-test", *args],
                              capture_output=True, text=True, timeout=10)

    def test_allow_anonymous_false(self):
        b = self.anonymous_broker(False)
        p = self.mosquitto_pub(b.port())
        self.assertNotEqual(p.returncode, 0)
        self.assertRegex(p.stderr, r"[Nn]ot authori[sz]ed")
        b.wait_log(r'refused \(CONNACK 5\): not authorised: plugin "anonymous": no username and '
                   r"allow_anonymous is false")
        p = self.mosquitto_pub(b.port(), "-u", "someone", "-P", "whatever")
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_allow_anonymous_true(self):
        b = self.anonymous_broker(True)
        self.assertEqual(self.mosquitto_pub(b.port()).returncode, 0)
        self.assertEqual(self.mosquitto_pub(b.port(), "-u", "someone").returncode, 0)

    def test_sighup_flips_allow_anonymous(self):
        b = self.anonymous_broker(True)
        self.assertEqual(connack(b.port(), "before"), 0)
        with open(b.config_path) as f:
            text = f.read()
        with open(b.config_path, "w") as f:
            f.write(text.replace("allow_anonymous = true", "allow_anonymous = false"))
        b.signal(signal.SIGHUP)
        b.wait_log(r'reload: plugin "anonymous" took its new options')
        self.assertEqual(connack(b.port(), "after"), 5)
        self.assertEqual(connack(b.port(), "after-user", username="u"), 0)

    def test_sighup_with_bad_options_keeps_the_old_ones(self):
        b = self.anonymous_broker(False)
        with open(b.config_path) as f:
            text = f.read()
        with open(b.config_path, "w") as f:
            f.write(text.replace("allow_anonymous = false", 'allow_anonymous = "maybe"'))
        b.signal(signal.SIGHUP)
        b.wait_log(r'reload: plugin "anonymous" refused its new options \(invalid plugin '
                   r"configuration\): .*allow_anonymous: expected true or false; it keeps the old")
        self.assertEqual(connack(b.port(), "still-strict"), 5)


class InstancesTest(BrokerTestCase):
    def test_one_so_two_instances_two_states(self):
        b = self.start_broker(
            'log_level = "info"\n'
            '[listeners.left]\nbind = "127.0.0.1:0"\nplugins = ["left"]\n'
            '[listeners.right]\nbind = "127.0.0.1:0"\nplugins = ["right"]\n'
            + scripted("left", authenticate="allow", deny_clients=["bob"])
            + scripted("right", authenticate="allow", deny_clients=["alice"]))
        self.assertEqual(connack(b.port("left"), "alice"), 0)
        self.assertEqual(connack(b.port("left"), "bob"), 5)
        self.assertEqual(connack(b.port("right"), "alice"), 5)
        self.assertEqual(connack(b.port("right"), "bob"), 0)
        # Reloading one instance leaves the other alone.
        with open(b.config_path) as f:
            text = f.read()
        with open(b.config_path, "w") as f:
            f.write(text.replace('deny_clients = ["bob"]', 'deny_clients = ["carol"]'))
        b.signal(signal.SIGHUP)
        b.wait_log(r"scripted left: reloaded")
        self.assertEqual(connack(b.port("left"), "bob"), 0)
        self.assertEqual(connack(b.port("left"), "carol"), 5)
        self.assertEqual(connack(b.port("right"), "alice"), 5)
        b.stop()
        # Each instance is shut down once.
        self.assertEqual(len(re.findall(r"scripted left: shutdown", b.log())), 1)
        self.assertEqual(len(re.findall(r"scripted right: shutdown", b.log())), 1)

    def test_listener_without_plugin_list_uses_every_plugin(self):
        b = self.start_broker(
            'log_level = "info"\n[listeners.default]\nbind = "127.0.0.1:0"\n'
            + scripted("one", authenticate="allow") + scripted("two", deny_clients=["x"]))
        self.assertEqual(connack(b.port(), "y"), 0)
        self.assertEqual(connack(b.port(), "x"), 5)

    def test_plugin_assigns_a_client_id(self):
        b = self.start_broker(
            'log_level = "info"\n[listeners.default]\nbind = "127.0.0.1:0"\n'
            + scripted("assigner", authenticate="allow", assign_client_id="device-42"))
        c = r.RawClient(b.port())
        c.send(r.connect(""))
        self.assertEqual(c.expect(r.CONNACK).return_code, 0)
        b.wait_log(r'client="device-42" .*connected')
        c.sock.close()

    def test_tick_event(self):
        b = self.start_broker(
            'log_level = "debug"\n[listeners.default]\nbind = "127.0.0.1:0"\n' + scripted("ticker"))
        b.wait_log(r"scripted ticker: tick", timeout=5, count=2)


if __name__ == "__main__":
    unittest.main()
