"""Sessions belong to identities: a client id is not a credential. A CONNECT whose
identity (certauth's SPIFFE id + issuer, or the username, or anonymous) differs from the
owner of an existing session with that client id gets CONNACK 2 and leaves the owner's
connection and session untouched; the same identity takes over and resumes as MQTT says.
`session_owner = "client_id"` restores MQTT's (and Mosquitto's) rule.

Real clients: mosquitto_pub/mosquitto_sub, paho-mqtt, hand-built MQTT over plain TCP and
over Python's ssl. Certificates are made per class with the pki helpers: CA "A" (dev1,
dev2, the server) and CA "B" (another dev1), both EC.

The class at the end runs the identity-independent expectations with the default config
against Mosquitto as well (MQGATE_TEST_AGAINST=mosquitto)."""
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

import brokers
import mqtt_raw as R
import pki
from brokers import PahoClient, skip_if_mosquitto
from mqgate_test import BrokerTestCase, run_config_check

DOMAIN = "my.domain.name"
CA_A_CN = "Identity Test CA A"
CA_B_CN = "Identity Test CA B"


# -- clients ----------------------------------------------------------------------------
def tls_context(ca, creds=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    if creds is not None:
        ctx.load_cert_chain(creds.chain or creds.cert, creds.key)
    return ctx


def raw_over(sock, timeout=10.0):
    """A mqtt_raw.RawClient on an already connected (TLS) socket."""
    c = R.RawClient.__new__(R.RawClient)
    c.sock, c.buf, c.eof, c.timeout, c.pending, c.discarded = sock, b"", False, timeout, [], []
    return c


def is_closed(c, timeout=5.0):
    """True if the broker closes c (EOF, reset or a TLS error on a closed socket)."""
    try:
        return c.closed_by_peer(timeout)
    except (ssl.SSLError, OSError):
        return True


def works(c, timeout=5.0):
    """The connection still answers PINGREQ (PUBLISHes meanwhile go to c.pending)."""
    try:
        c.send(R.pingreq())
        deadline = time.monotonic() + timeout
        while True:
            p = c.read_packet(max(0.1, deadline - time.monotonic()))
            if p.type == R.PINGRESP:
                return True
            c.pending.append(p)
    except (R.ConnectionClosed, R.NoPacket, ssl.SSLError, OSError):
        return False


class IdentityCase(BrokerTestCase):
    """Certificates per class; one broker per test with the listeners

        plain   anonymous plugin (allow_anonymous = true)
        plain2  plugins "anonymous" and "anon2" (another anonymous instance)
        tls     cafile A, certauth instance "certauth"
        tls_b   cafile B, certauth instance "cert_b" (same uri_domain)
        tls_ab  cafile A+B bundle, certauth instance "certauth"
    """

    @classmethod
    def setUpClass(cls):
        cls.pki_dir = tempfile.mkdtemp(prefix="mqgate-identity-")
        a = os.path.join(cls.pki_dir, "a")
        b = os.path.join(cls.pki_dir, "b")
        os.makedirs(a)
        os.makedirs(b)
        cls.ca_a = pki.make_ca(a, key_type="ec", cn=CA_A_CN)
        cls.ca_b = pki.make_ca(b, key_type="ec", cn=CA_B_CN)
        cls.server = pki.make_server(a, cn="localhost", key_type="ec")
        cls.dev1 = pki.make_device(a, "dev1", DOMAIN, key_type="ec")
        cls.dev2 = pki.make_device(a, "dev2", DOMAIN, key_type="ec")
        cls.dev1_b = pki.make_device(b, "dev1", DOMAIN, key_type="ec")
        cls.bundle = os.path.join(cls.pki_dir, "bundle.crt")
        with open(cls.bundle, "w") as f:
            for path in (cls.ca_a.cert, cls.ca_b.cert):
                with open(path) as src:
                    f.write(src.read())

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki_dir, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self._open = []
        self._procs = []

    def tearDown(self):
        for c in self._open:
            try:
                c.close()
            except Exception:
                pass
        for p in self._procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        super().tearDown()

    def config(self, extra="", sys_interval=0):
        s = self.server
        tls = f'ssl = true\ncertfile = "{s.cert}"\nkeyfile = "{s.key}"\n'
        return (f'log_level = "info"\nsys_interval = {sys_interval}\n{extra}\n'
                '[listeners.plain]\nbind = "127.0.0.1:0"\nplugins = ["anonymous"]\n'
                '[listeners.plain2]\nbind = "127.0.0.1:0"\nplugins = ["anonymous", "anon2"]\n'
                f'[listeners.tls]\nbind = "127.0.0.1:0"\n{tls}cafile = "{self.ca_a.cert}"\n'
                'plugins = ["certauth"]\n'
                f'[listeners.tls_b]\nbind = "127.0.0.1:0"\n{tls}cafile = "{self.ca_b.cert}"\n'
                'plugins = ["cert_b"]\n'
                f'[listeners.tls_ab]\nbind = "127.0.0.1:0"\n{tls}cafile = "{self.bundle}"\n'
                'plugins = ["certauth"]\n'
                '[plugins.anonymous]\nallow_anonymous = true\n'
                '[plugins.anon2]\nmodule = "anonymous"\nallow_anonymous = true\n'
                f'[plugins.certauth]\nuri_domain = "{DOMAIN}"\n'
                f'[plugins.cert_b]\nmodule = "certauth"\nuri_domain = "{DOMAIN}"\n')

    def start(self, **kw):
        self.b = self.start_broker(self.config(**kw))
        return self.b

    # -- connecting ---------------------------------------------------------------------
    def plain(self, client_id, clean=True, listener="plain", **kw):
        """(CONNACK, raw client) on a plain listener."""
        c = R.RawClient(self.b.port(listener), timeout=10)
        self._open.append(c)
        return c.connect(client_id, clean=clean, **kw), c

    def tls(self, creds, client_id, clean=True, listener="tls", **kw):
        """(CONNACK, raw client) over TLS with `creds`' certificate."""
        sock = socket.create_connection(("127.0.0.1", self.b.port(listener)), timeout=10)
        s = tls_context(self.ca_a.cert, creds).wrap_socket(sock, server_hostname="localhost")
        c = raw_over(s)
        self._open.append(c)
        return c.connect(client_id, clean=clean, **kw), c

    def ok(self, pair, session_present=None):
        ack, c = pair
        self.assertEqual(ack.return_code, 0, repr(ack))
        if session_present is not None:
            self.assertEqual(ack.session_present, session_present, repr(ack))
        return c

    def refused(self, pair, code=2):
        ack, c = pair
        self.assertEqual(ack.return_code, code, repr(ack))
        self.assertFalse(ack.session_present, f"session present with a refusal: {ack!r}")
        self.assertTrue(is_closed(c), "refused connection left open")
        return c

    def watcher(self, filters=(("wills/#", 1),), client_id="watcher"):
        w = self.ok(self.plain(client_id))
        w.subscribe(list(filters))
        return w

    def publish(self, topic, payload, qos=1, retain=False):
        p = self.ok(self.plain(""))
        p.publish(topic, payload, qos=qos, retain=retain)
        p.disconnect()

    def payloads(self, c, first=5.0, wait=0.5):
        got = list(c.pending)
        c.pending.clear()
        got += c.read_all(wait, first=None if got else first)
        out = []
        for p in got:
            if p.type == R.PUBLISH:
                c.ack(p)
                out.append((p.topic, p.payload))
        return out

    def device_session(self, creds=None, listener="tls", topic="devices/dev1/cmd", **kw):
        """dev1 (by default) with clean session 0, subscribed to `topic` at QoS 1."""
        c = self.ok(self.tls(creds or self.dev1, "dev1", clean=False, listener=listener, **kw))
        self.assertEqual(c.subscribe([(topic, 1)]), [1])
        return c

    def offline(self, c, client_id):
        """DISCONNECT, and wait until the broker has seen it (the session is stored)."""
        pattern = rf'client="{client_id}" .*: disconnected'
        n = len(re.findall(pattern, self.b.log()))
        c.disconnect()
        self.b.wait_log(pattern, count=n + 1, timeout=10)

    def identity_a(self, instance="certauth", device="dev1"):
        return f"{instance}:spiffe://{DOMAIN}/device/{device} issuer="

    def refusal_lines(self, client_id):
        return [l for l in self.b.log().splitlines()
                if f'client="{client_id}"' in l and "refused (CONNACK 2)" in l]

    def cli(self, tool, port, *args, tls_creds=None):
        cmd = [f"/usr/bin/{tool}", "-h", "localhost" if tls_creds else "127.0.0.1", "-p",
               str(port), "-V", "mqttv311", *args]
        if tls_creds:
            cmd += ["--cafile", self.ca_a.cert, "--cert", tls_creds.cert, "--key", tls_creds.key]
        return cmd

    def run_cli(self, tool, port, *args, tls_creds=None, timeout=20):
        return subprocess.run(self.cli(tool, port, *args, tls_creds=tls_creds),
                              capture_output=True, text=True, timeout=timeout)


class SessionIdentityTest(IdentityCase):
    def test_anonymous_client_cannot_take_an_offline_device_session(self):
        b = self.start()
        dev = self.device_session()
        dev.disconnect()
        self.publish("devices/dev1/cmd", b"queued-1")
        # mosquitto_sub with the device's client id, persistent and clean.
        for extra in (["-c"], []):
            p = self.run_cli("mosquitto_sub", b.port("plain"), "-i", "dev1", "-q", "1", "-t", "#",
                             "-C", "1", "-W", "10", *extra)
            self.assertNotEqual(p.returncode, 0, p.stdout)
            self.assertIn("Connection Refused: identifier rejected", p.stderr + p.stdout)
        # paho, and hand-built CONNECTs (clean 0 and 1, with a will that must not fire).
        c = PahoClient("127.0.0.1", b.port("plain"), "dev1", clean_session=True)
        self._open.append(c)
        self.assertEqual(c.connect()[0], 2)
        c.close()
        for clean in (False, True):
            self.refused(self.plain("dev1", clean=clean, will_topic="devices/dev1/cmd",
                                    will_payload=b"intruder will", will_qos=1))
        b.wait_log(r'client="dev1" .*refused \(CONNACK 2\)', count=5)
        self.assertEqual(len(self.refusal_lines("dev1")), 5, self.b.log()[-3000:])
        # The device resumes its session: the queued message, and only it.
        dev = self.ok(self.tls(self.dev1, "dev1", clean=False), session_present=True)
        self.assertEqual(self.payloads(dev), [("devices/dev1/cmd", b"queued-1")])
        # ... and the subscription is still there for live messages.
        self.publish("devices/dev1/cmd", b"live")
        self.assertEqual(self.payloads(dev), [("devices/dev1/cmd", b"live")])

    def test_anonymous_client_cannot_take_over_an_online_device(self):
        b = self.start()
        w = self.watcher()
        dev = self.device_session(will_topic="wills/dev1", will_payload=b"dev1 died", will_qos=1)
        p = self.run_cli("mosquitto_pub", b.port("plain"), "-i", "dev1", "-t", "x", "-m", "y",
                         "-q", "1")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("Connection Refused: identifier rejected", p.stderr + p.stdout)
        for clean in (True, False):
            self.refused(self.plain("dev1", clean=clean, will_topic="wills/intruder",
                                    will_payload=b"intruder", will_qos=1))
        self.assertTrue(works(dev), "the device's connection was closed")
        self.publish("devices/dev1/cmd", b"still yours")
        self.assertEqual(self.payloads(dev), [("devices/dev1/cmd", b"still yours")])
        self.assertEqual(self.payloads(w, first=1.0), [], "a will was published")
        self.assertRegex(self.b.log(), r'client="dev1" .*refused \(CONNACK 2\): client id belongs '
                                       r'to a connected session')
        # The device leaves without DISCONNECT: now its will is published (it was kept).
        dev.close()
        self.assertEqual(self.payloads(w), [("wills/dev1", b"dev1 died")])

    def test_warning_line_names_both_identities_client_and_peer(self):
        b = self.start()
        self.offline(self.device_session(), "dev1")
        _, intruder = pair = self.plain("dev1")
        port = intruder.sock.getsockname()[1]
        self.refused(pair)
        b.wait_log(r'refused \(CONNACK 2\)')
        lines = self.refusal_lines("dev1")
        self.assertEqual(len(lines), 1, lines)
        line = lines[0]
        self.assertRegex(line, r"\bWARN")
        self.assertIn(f'client="dev1" peer=127.0.0.1:{port} listener=plain: ', line)
        owner = re.escape(self.identity_a()) + ".*CN=" + re.escape(CA_A_CN)
        self.assertRegex(line, r'refused \(CONNACK 2\): client id belongs to a stored session of '
                               rf'identity "{owner}", this connection is identity '
                               r'"anonymous:anonymous"')
        # Online owner; the intruder is another CA's dev1 on another certauth instance.
        dev = self.ok(self.tls(self.dev1, "dev1", clean=False))
        _, intruder = pair = self.tls(self.dev1_b, "dev1", listener="tls_b")
        port = intruder.sock.getsockname()[1]
        self.refused(pair)
        b.wait_log(r'refused \(CONNACK 2\)', count=2)
        line = self.refusal_lines("dev1")[1]
        self.assertIn(f'client="dev1" peer=127.0.0.1:{port} listener=tls_b: ', line)
        self.assertRegex(line, rf'connected session of identity "{owner}", this connection is '
                               + re.escape(f'identity "cert_b:spiffe://{DOMAIN}/device/dev1 '
                                           'issuer=') + ".*CN=" + re.escape(CA_B_CN) + '.*"')
        self.assertTrue(works(dev))

    def test_same_device_from_another_ca(self):
        b = self.start()
        w = self.watcher()
        self.device_session().disconnect()
        self.publish("devices/dev1/cmd", b"queued")
        # dev1 of CA B on its own listener (instance cert_b) ...
        p = self.run_cli("mosquitto_sub", b.port("tls_b"), "-i", "dev1", "-c", "-q", "1", "-t",
                         "devices/dev1/cmd", "-C", "1", "-W", "10", tls_creds=self.dev1_b)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("Connection Refused: identifier rejected", p.stderr + p.stdout)
        self.refused(self.tls(self.dev1_b, "dev1", clean=True, listener="tls_b"))
        # ... and on the listener that trusts both CAs with the same instance: the issuer
        # alone tells them apart.
        self.refused(self.tls(self.dev1_b, "dev1", clean=False, listener="tls_ab"))
        self.refused(self.tls(self.dev1_b, "dev1", clean=True, listener="tls_ab"))
        self.assertRegex(self.b.log(), r'listener=tls_ab: refused \(CONNACK 2\): .*this connection '
                                       rf'is identity "certauth:spiffe://{DOMAIN}/device/dev1 '
                                       rf'issuer=.*CN={CA_B_CN}')
        dev = self.ok(self.tls(self.dev1, "dev1", clean=False), session_present=True)
        self.assertEqual(self.payloads(dev), [("devices/dev1/cmd", b"queued")])
        # The other way round, online: A's dev1 ends its session (clean session 1), B's
        # dev1 makes one, and now A's dev1 is the stranger.
        dev.disconnect()
        self.ok(self.tls(self.dev1, "dev1", clean=True), session_present=False).disconnect()
        time.sleep(0.2)
        dev_b = self.ok(self.tls(self.dev1_b, "dev1", clean=False, listener="tls_b",
                                 will_topic="wills/b", will_payload=b"b died", will_qos=1),
                        session_present=False)
        self.assertEqual(dev_b.subscribe([("b/#", 1)]), [1])
        self.refused(self.tls(self.dev1, "dev1", clean=False))
        self.refused(self.tls(self.dev1, "dev1", clean=False, listener="tls_ab"))
        self.assertTrue(works(dev_b))
        self.publish("b/x", b"for B")
        self.assertEqual(self.payloads(dev_b), [("b/x", b"for B")])
        self.assertEqual(self.payloads(w, first=1.0), [], "a will was published")

    def test_device_certificate_of_another_device_gets_connack_5(self):
        b = self.start()
        w = self.watcher()
        self.device_session().disconnect()
        self.publish("devices/dev1/cmd", b"queued")
        # certauth refuses dev2's certificate with client id dev1 before any session
        # question arises; the session stays as it was.
        self.refused(self.tls(self.dev2, "dev1", clean=False), code=5)
        self.refused(self.tls(self.dev2, "dev1", clean=True), code=5)
        p = self.run_cli("mosquitto_pub", b.port("tls"), "-i", "dev1", "-t", "x", "-m", "y",
                         tls_creds=self.dev2)
        self.assertNotEqual(p.returncode, 0)
        self.assertRegex(p.stderr, r"not authori[sz]ed")
        dev = self.ok(self.tls(self.dev1, "dev1", clean=False, will_topic="wills/dev1",
                               will_payload=b"dev1 died", will_qos=1), session_present=True)
        self.assertEqual(self.payloads(dev), [("devices/dev1/cmd", b"queued")])
        # Online: still refused with 5, the device keeps its connection, no will.
        self.refused(self.tls(self.dev2, "dev1", clean=True), code=5)
        self.assertTrue(works(dev))
        self.assertEqual(self.payloads(w, first=1.0), [])
        self.assertEqual(self.refusal_lines("dev1"), [], "a CONNACK 2 line for a CONNACK 5")
        # dev2 as itself is fine, beside dev1.
        self.ok(self.tls(self.dev2, "dev2"))

    def test_same_device_takes_over_with_will_and_resumes(self):
        b = self.start()
        w = self.watcher()
        first = self.device_session(will_topic="wills/dev1", will_payload=b"first gone",
                                    will_qos=1)
        # The same certificate again, via paho over TLS: takeover.
        second = PahoClient("localhost", b.port("tls"), "dev1", clean_session=False,
                            will=("wills/dev1", b"second gone", 1))
        second.c.tls_set_context(tls_context(self.ca_a.cert, self.dev1))
        self._open.append(second)
        rc, flags = second.connect()
        self.assertEqual(rc, 0)
        self.assertEqual(flags.get("session present"), 1, flags)
        self.assertTrue(is_closed(first), "the older connection was not closed")
        self.assertEqual(self.payloads(w), [("wills/dev1", b"first gone")])
        self.publish("devices/dev1/cmd", b"to the new one")
        self.assertEqual(second.get(timeout=5).payload, b"to the new one")
        second.disconnect()
        self.publish("devices/dev1/cmd", b"while offline")
        # Resume with mosquitto_sub (clean session off), the same certificate.
        p = self.run_cli("mosquitto_sub", b.port("tls"), "-i", "dev1", "-c", "-q", "1", "-t",
                         "devices/dev1/cmd", "-C", "1", "-W", "10", "-v", tls_creds=self.dev1)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "devices/dev1/cmd while offline")
        # The same identity through another listener with the same certauth instance.
        self.publish("devices/dev1/cmd", b"via the bundle listener")
        dev = self.ok(self.tls(self.dev1, "dev1", clean=False, listener="tls_ab"),
                      session_present=True)
        self.assertEqual(self.payloads(dev), [("devices/dev1/cmd", b"via the bundle listener")])
        self.assertEqual(self.refusal_lines("dev1"), [])
        self.assertEqual(self.payloads(w, first=0.5), [])  # clean DISCONNECTs: no more wills

    def test_usernames_on_the_plain_listener(self):
        b = self.start()
        w = self.watcher()
        alice = self.ok(self.plain("shared", clean=False, username="alice", password=b"pw"),
                        session_present=False)
        alice.subscribe([("t/#", 1)])
        alice.disconnect()
        self.publish("t/1", b"for alice")
        # bob, and nobody, are refused; alice's session is intact.
        p = self.run_cli("mosquitto_sub", b.port("plain"), "-i", "shared", "-u", "bob", "-c",
                         "-t", "t/#", "-q", "1", "-C", "1", "-W", "10")
        self.assertIn("Connection Refused: identifier rejected", p.stderr + p.stdout)
        self.refused(self.plain("shared", clean=True, username="bob"))
        self.refused(self.plain("shared", clean=False))
        lines = self.refusal_lines("shared")
        self.assertEqual(len(lines), 3, lines)
        self.assertIn('identity "anonymous:user:alice", this connection is identity '
                      '"anonymous:user:bob"', lines[0])
        self.assertIn('this connection is identity "anonymous:anonymous"', lines[2])
        # alice again (the anonymous plugin checks no password): resumes.
        alice = self.ok(self.plain("shared", clean=False, username="alice", password=b"other",
                                   will_topic="wills/shared", will_payload=b"alice 1 gone",
                                   will_qos=1), session_present=True)
        self.assertEqual(self.payloads(alice), [("t/1", b"for alice")])
        # ... and takes over from herself, with the will of the older connection.
        alice2 = self.ok(self.plain("shared", clean=False, username="alice"),
                         session_present=True)
        self.assertTrue(is_closed(alice))
        self.assertEqual(self.payloads(w), [("wills/shared", b"alice 1 gone")])
        # bob cannot take over the online session either; a username differing only in
        # case is another identity.
        self.refused(self.plain("shared", clean=True, username="Alice"))
        self.assertTrue(works(alice2))
        alice2.disconnect()

    def test_identity_names_the_listeners_auth_plugins(self):
        b = self.start()
        self.ok(self.plain("x", clean=False), session_present=False).disconnect()
        self.ok(self.plain("y", clean=False, listener="plain2", username="alice")).disconnect()
        self.refused(self.plain("x", clean=False, listener="plain2"))
        self.refused(self.plain("y", clean=True, username="alice"))
        b.wait_log(r"refused \(CONNACK 2\)", count=2)
        self.assertIn('client id belongs to a stored session of identity "anonymous:anonymous", '
                      'this connection is identity "anonymous,anon2:anonymous"',
                      self.refusal_lines("x")[0])
        self.assertIn('client id belongs to a stored session of identity '
                      '"anonymous,anon2:user:alice", this connection is identity '
                      '"anonymous:user:alice"', self.refusal_lines("y")[0])
        self.ok(self.plain("x", clean=False), session_present=True)
        self.ok(self.plain("y", clean=False, listener="plain2", username="alice"),
                session_present=True)

    def test_clean_session_owner_is_protected_while_online_only(self):
        b = self.start()
        w = self.watcher()
        alice = self.ok(self.plain("c1", clean=True, username="alice", will_topic="wills/c1",
                                   will_payload=b"alice died", will_qos=1))
        self.refused(self.plain("c1", clean=True, username="bob"))
        self.refused(self.plain("c1", clean=False, username="bob"))
        self.assertTrue(works(alice))
        self.assertEqual(self.payloads(w, first=1.0), [])
        alice.disconnect()
        # A clean session ends with its connection: the client id is free again.
        b.wait_log(r'client="c1" .*listener=plain: disconnected', timeout=10)
        bob = self.ok(self.plain("c1", clean=False, username="bob"), session_present=False)
        bob.disconnect()

    def test_anonymous_clients_take_over_each_other_as_before(self):
        b = self.start()
        w = self.watcher()
        one = self.ok(self.plain("anon", clean=False, will_topic="wills/anon",
                                 will_payload=b"one gone", will_qos=1))
        one.subscribe([("a/#", 1)])
        # mosquitto_sub with the same client id and no username: takes over.
        sub = subprocess.Popen(self.cli("mosquitto_sub", b.port("plain"), "-i", "anon", "-c",
                                        "-q", "1", "-t", "a/#", "-C", "1", "-W", "15", "-v"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._procs.append(sub)
        self.assertTrue(is_closed(one), "no takeover")
        self.assertEqual(self.payloads(w), [("wills/anon", b"one gone")])
        self.publish("a/x", b"hello")
        out, err = sub.communicate(timeout=20)
        self.assertEqual(sub.returncode, 0, err)
        self.assertEqual(out.strip(), "a/x hello")

    def test_identity_refusal_counter_in_sys(self):
        self.start(sys_interval=1)
        topic = "$SYS/broker/connections/refused/identity"
        w = self.ok(self.plain("sys-watch"))
        w.subscribe([(topic, 0)])

        def value(at_least, timeout=10.0):
            deadline = time.monotonic() + timeout
            last = None
            while time.monotonic() < deadline:
                try:
                    p = w.next_packet(timeout=max(0.1, deadline - time.monotonic()))
                except R.NoPacket:
                    break
                if p.type == R.PUBLISH and p.topic == topic:
                    last = int(p.payload)
                    if last >= at_least:
                        return last
            self.fail(f"{topic} never reached {at_least} (last {last})")

        self.assertEqual(value(0), 0)
        self.device_session().disconnect()
        self.refused(self.plain("dev1"))
        self.refused(self.tls(self.dev1_b, "dev1", listener="tls_b"))
        self.refused(self.tls(self.dev2, "dev1"), code=5)  # not an identity refusal
        self.assertEqual(value(2), 2)
        # Retained: a newcomer gets the current value at once.
        late = self.ok(self.plain("late"))
        late.subscribe([(topic, 0)])
        p = late.next_packet(timeout=5)
        self.assertEqual((p.type, p.retain, int(p.payload)), (R.PUBLISH, True, 2))


class SessionOwnerClientIdTest(IdentityCase):
    def test_client_id_rule_lets_anyone_take_over_and_resume(self):
        b = self.start_broker(self.config(extra='session_owner = "client_id"'))
        self.b = b
        w = self.watcher()
        dev = self.device_session(will_topic="wills/dev1", will_payload=b"dev1 died", will_qos=1)
        # An anonymous client takes the device's session over (MQTT's rule).
        anon = self.ok(self.plain("dev1", clean=False), session_present=True)
        self.assertTrue(is_closed(dev))
        self.assertEqual(self.payloads(w), [("wills/dev1", b"dev1 died")])
        self.publish("devices/dev1/cmd", b"anyone's now")
        self.assertEqual(self.payloads(anon), [("devices/dev1/cmd", b"anyone's now")])
        anon.disconnect()
        self.publish("devices/dev1/cmd", b"queued")
        # Another CA's dev1 resumes it offline.
        dev_b = self.ok(self.tls(self.dev1_b, "dev1", clean=False, listener="tls_b"),
                        session_present=True)
        self.assertEqual(self.payloads(dev_b), [("devices/dev1/cmd", b"queued")])
        dev_b.disconnect()
        # Usernames do not matter either.
        self.ok(self.plain("u", clean=False, username="alice")).disconnect()
        p = self.run_cli("mosquitto_pub", b.port("plain"), "-i", "u", "-u", "bob", "-t", "x",
                         "-m", "y", "-q", "1")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("refused (CONNACK 2)", b.log())

    def test_session_owner_values_are_checked(self):
        base = '[listeners.a]\nbind = "127.0.0.1:0"\n'
        for value in ('"identity"', '"client_id"'):
            rc, out = run_config_check(f"session_owner = {value}\n" + base, self.tmp)
            self.assertEqual(rc, 0, f"session_owner = {value}: {out}")
        rc, out = run_config_check('session_owner = "bogus"\n' + base, self.tmp)
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"check\.toml:1:\d+: session_owner: ")
        self.assertIn("bogus", out)
        rc, out = run_config_check("session_owner = 1\n" + base, self.tmp)
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"check\.toml:1:\d+: session_owner: ")
        # A [limits] key in the wrong place is not silently taken.
        rc, out = run_config_check('[limits]\nsession_owner = "client_id"\n' + base, self.tmp)
        self.assertEqual(rc, 1, out)
        self.assertIn("session_owner", out)


class DefaultConfigTakeoverTest(brokers.MqttTestCase):
    """With the default config (no auth plugin): anonymous clients and same-username
    clients take over and resume as MQTT says; validated against Mosquitto too."""
    broker_settings = {"sys_interval": 0}

    def test_anonymous_takeover_publishes_will(self):
        # (Mosquitto 2.0 publishes a will on takeover only when a clean session is
        # involved, so clean sessions here; mqgate's persistent case is tested above.)
        w = self.raw_connect("w")
        w.subscribe([("wills/#", 1)])
        one = self.raw_connect("same", will_topic="wills/same", will_payload=b"gone",
                               will_qos=1)
        two = self.raw_connect("same")
        self.assertClosed(one)
        self.assertEqual(w.next_publish(timeout=5).payload, b"gone")
        self.assertOpen(two)

    def test_anonymous_takeover_and_resume_of_a_persistent_session(self):
        one = self.raw_connect("same", clean=False)
        one.subscribe([("q/#", 1)])
        two = self.raw_connect("same", clean=False, expect_session_present=True)
        self.assertClosed(one)
        two.disconnect()
        time.sleep(0.1)
        self.raw_connect("pub").publish("q/1", b"queued", qos=1)
        three = self.raw_connect("same", clean=False, expect_session_present=True)
        self.assertEqual(three.next_publish(timeout=5).payload, b"queued")

    def test_same_username_takes_over(self):
        one = self.raw_connect("u1", clean=False, username="carol")
        one.subscribe([("c/#", 1)])
        two = self.raw_connect("u1", clean=False, username="carol",
                               expect_session_present=True)
        self.assertClosed(one)
        self.assertOpen(two)

    @skip_if_mosquitto("any client with the client id takes the session over")
    def test_other_username_is_refused(self):
        one = self.raw_connect("u2", clean=False, username="carol")
        one.subscribe([("c/#", 1)])
        intruder = self.raw()
        ack = intruder.connect("u2", clean=False, username="dave")
        self.assertEqual((ack.return_code, ack.session_present), (2, False))
        self.assertClosed(intruder)
        self.assertOpen(one)
        intruder = self.raw()
        self.assertEqual(intruder.connect("u2", clean=True).return_code, 2)
        self.assertOpen(one)


if __name__ == "__main__":
    unittest.main()
