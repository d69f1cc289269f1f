"""Device certificates over MQTT (issue 24, docs/provisioning.md), end to end: the
provision plugin and certauth on a TLS listener; devices make their key and CSR with
`openssl req`, ask with mosquitto_rr (MQTT 5 request/response) or a paho 3.1.1 client on
the fixed reply topic, then connect with the new certificate (mosquitto_pub). Then the
attacks of the issue, each refused with nothing issued and a log line.

The issuing CA and the claim certificate are made with openssl here (the PKI tools'
`ca_creds --issuing` and `device_creds --claim` come separately)."""
import datetime
import os
import queue
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import tempfile
import time
import unittest

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

import pki
from mqgate_test import BrokerTestCase, run_config_check
from test_http_metrics import get, http_port

DOMAIN = "my.domain.name"
ALLOW = "batchA dev-* sensor42\nbatchB other-*\n"


def provision_config(d, server, root, issuing, chain, extra=""):
    return (f'log_level = "info"\nsys_interval = 0\n'
            f'[listeners.tls]\nbind = "127.0.0.1:0"\nssl = true\ncertfile = "{server.cert}"\n'
            f'keyfile = "{server.key}"\ncafile = "{root.cert}"\n'
            'plugins = ["certauth", "provision"]\n'
            f'[plugins.certauth]\nuri_domain = "{DOMAIN}"\n'
            f'[plugins.provision]\nuri_domain = "{DOMAIN}"\n'
            f'issuing_ca_key = "{issuing.key}"\nissuing_ca_cert = "{issuing.cert}"\n'
            f'issuing_ca_chain = "{chain}"\nallow_list = "{d}/claims.allow"\n'
            f'state_file = "{d}/state-{os.urandom(4).hex()}.db"\n{extra}\n')


def make_csr(dir, name, key="ec:P-256", extra=()):
    """openssl req: dir/<name>.key (the device's own) and dir/<name>.csr (PEM)."""
    keyfile, csr = os.path.join(dir, name + ".key"), os.path.join(dir, name + ".csr")
    if key.startswith("ec:"):
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:" + key[3:]]
    else:
        newkey = ["-newkey", key]
    pki.openssl("req", "-new", *newkey, "-nodes", "-keyout", keyfile, "-subj", f"/CN={name}",
                "-out", csr, *extra)
    return keyfile, csr


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


class Device:
    """A paho client over TLS (3.1.1 or 5) that collects the messages it gets."""

    def __init__(self, port, creds, client_id, ca, v5=False, clean=True, expiry=None):
        self.v5 = v5
        self.expiry = expiry  # 5.0: a Session Expiry Interval to ask for
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        kw = {} if v5 else {"clean_session": clean}
        self.c = mqtt.Client(client_id=client_id, protocol=proto, reconnect_on_failure=False, **kw)
        self.c.tls_set(ca_certs=ca, certfile=creds[0], keyfile=creds[1])
        self.messages, self.events = queue.Queue(), queue.Queue()
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_connect = lambda c, u, f, rc, *p: self.events.put(("connack", rc))
        self.c.on_subscribe = lambda c, u, mid, granted, *p: self.events.put(("suback", granted))
        self.c.on_publish = lambda c, u, mid: self.events.put(("puback", mid))
        self.c.on_disconnect = lambda c, u, rc, *p: self.events.put(("disconnect", rc))
        self.port = port

    def connect(self):
        try:
            if self.v5:
                props = None
                if self.expiry is not None:
                    from paho.mqtt.packettypes import PacketTypes
                    from paho.mqtt.properties import Properties
                    props = Properties(PacketTypes.CONNECT)
                    props.SessionExpiryInterval = self.expiry
                self.c.connect("localhost", self.port, 30, clean_start=True, properties=props)
            else:
                self.c.connect("localhost", self.port, 30)
        except (ssl.SSLError, OSError):
            return "refused"
        self.c.loop_start()
        return self.event("connack")

    def event(self, kind, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                k, v = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if k == kind:
                return v
            if k == "disconnect":
                return ("disconnect", v)
        raise AssertionError(f"no {kind} in {timeout}s")

    def subscribe(self, topic):
        self.c.subscribe(topic, qos=1)
        granted = self.event("suback")
        code = granted[0]
        return getattr(code, "value", code)

    def publish(self, topic, payload, props=None):
        info = self.c.publish(topic, payload, qos=1, properties=props)
        return info

    def reply(self, timeout=15):
        return self.messages.get(timeout=timeout)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


class ProvisionPki(BrokerTestCase):
    """A root, an issuing intermediate, a server and one claim certificate (batchA) per
    class, made with openssl."""

    @classmethod
    def setUpClass(cls):
        cls.d = d = tempfile.mkdtemp(prefix="mqgate-prov-")
        cls.root = pki.openssl_ca(d, "root", key_type="ec")
        cls.issuing = pki.openssl_intermediate(d, cls.root, "issuing", key_type="ec")
        cls.chain = os.path.join(d, "issuing-chain.crt")
        with open(cls.chain, "w") as f:
            f.write(read(cls.issuing.cert) + read(cls.root.cert))
        cls.server = pki.openssl_server(d, cls.root, "server", key_type="ec")
        cls.claim = pki.openssl_device(d, cls.root, "claimA", DOMAIN, name="claim-a",
                                       key_type="ec", san=f"URI:spiffe://{DOMAIN}/claim/batchA")
        with open(os.path.join(d, "claims.allow"), "w") as f:
            f.write(ALLOW)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.d, ignore_errors=True)


class ProvisionTest(ProvisionPki):
    def setUp(self):
        super().setUp()
        self.b = self.start_broker(self.config())
        self.port = self.b.port("tls")

    def config(self, extra=""):
        return provision_config(self.d, self.server, self.root, self.issuing, self.chain, extra)

    def issued_rows(self):
        db = self.b.log().split("state_file=")[1].split()[0]
        with sqlite3.connect(db) as c:
            return c.execute("SELECT device_id, kind, claim FROM issued").fetchall()

    def device(self, client_id, creds=None, v5=False, clean=True, expiry=None):
        dev = Device(self.port, creds or (self.claim.cert, self.claim.key), client_id,
                     self.root.cert, v5=v5, clean=clean, expiry=expiry)
        self.addCleanup(dev.close)
        return dev

    def ask(self, client_id, csr_payload, v5=True, topic=None, creds=None):
        """Connects as `client_id` with the claim, subscribes to its reply topic, sends the
        CSR; returns the reply message."""
        dev = self.device(client_id, creds, v5=v5)
        self.assertEqual(dev.connect(), 0)
        self.assertEqual(dev.subscribe(f"$provision/{client_id}/#"), 1)
        props = None
        if v5:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = f"$provision/{client_id}/reply"
            props.CorrelationData = b"corr-1"
        dev.publish(topic or f"$provision/{client_id}/csr", csr_payload, props)
        return dev.reply()

    # --- the flow -------------------------------------------------------------------

    def test_claim_with_mosquitto_rr_then_connect_with_the_new_certificate(self):
        key, csr = make_csr(self.tmp, "dev-1")
        p = subprocess.run(
            ["mosquitto_rr", "-V", "mqttv5", "-h", "localhost", "-p", str(self.port),
             "--cafile", self.root.cert, "--cert", self.claim.cert, "--key", self.claim.key,
             "-i", "dev-1", "-t", "$provision/dev-1/csr", "-e", "$provision/dev-1/reply",
             "-m", read(csr), "-q", "1", "-W", "20", "-D", "publish", "correlation-data", "c1"],
            capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.startswith("-----BEGIN CERTIFICATE-----"), p.stdout[:200])
        chain = os.path.join(self.tmp, "dev-1-chain.crt")
        with open(chain, "w") as f:
            f.write(p.stdout)
        leaf = os.path.join(self.tmp, "dev-1.crt")
        with open(leaf, "w") as f:
            f.write(p.stdout[:p.stdout.index("-----END CERTIFICATE-----") + 26])
        text = pki.x509_text(leaf)
        self.assertIn(f"URI:spiffe://{DOMAIN}/device/dev-1", text)
        self.assertIn("CA:FALSE", text)
        self.assertIn("TLS Web Client Authentication", text)
        self.assertIn("CN = dev-1", pki.subject_of(leaf))
        pki.openssl_verify(self.root.cert, leaf, untrusted=self.issuing.cert)
        self.assertIn(("dev-1", "claim", "batchA"), self.issued_rows())
        self.b.wait_log(r'plugin "provision": issued: claim client=dev-1 peer=\S+ claim=batchA '
                        r'serial=')
        # The new certificate works on the certauth listener, the device's own key with it.
        pub = subprocess.run(
            ["mosquitto_pub", "-h", "localhost", "-p", str(self.port), "--cafile",
             self.root.cert, "--cert", chain, "--key", key, "-i", "dev-1", "-t", "devices/dev-1",
             "-m", "hello", "-q", "1"], capture_output=True, text=True, timeout=20)
        self.assertEqual(pub.returncode, 0, pub.stderr)

    def test_claim_with_paho_3_1_1_on_the_fixed_reply_topic(self):
        _, csr = make_csr(self.tmp, "dev-2", key="rsa:2048")
        msg = self.ask("dev-2", read(csr, "rb"), v5=False)
        self.assertEqual(msg.topic, "$provision/dev-2/reply")
        self.assertTrue(msg.payload.startswith(b"-----BEGIN CERTIFICATE-----"))
        self.assertEqual(msg.payload.count(b"BEGIN CERTIFICATE"), 3)  # leaf, issuing, root

    def test_a_5_0_reply_echoes_the_correlation_data(self):
        _, csr = make_csr(self.tmp, "dev-3")
        msg = self.ask("dev-3", read(csr, "rb"))
        user = dict(msg.properties.UserProperty)
        self.assertEqual(user.get("status"), "issued")
        self.assertEqual(msg.properties.CorrelationData, b"corr-1")
        self.assertEqual(msg.properties.ContentType, "application/pem-certificate-chain")

    def test_counters_in_metrics_and_a_reply_without_subscription_is_dropped(self):
        b = self.start_broker(self.config() + '[http]\nbind = "127.0.0.1:0"\n')
        self.port = b.port("tls")
        self.b = b
        _, csr = make_csr(self.tmp, "dev-40")
        self.ask("dev-40", read(csr, "rb"))
        dev = self.device("dev-41")  # asks without subscribing to its reply topic first
        self.assertEqual(dev.connect(), 0)
        dev.publish("$provision/dev-41/csr", read(csr, "rb"))
        b.wait_log(r"issued: claim client=dev-41 ")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            _, _, body = get(http_port(b))
            text = body.decode()
            if 'mqgate_plugin_replies_total{result="dropped"} 1' in text:
                break
            time.sleep(0.05)
        self.assertIn('mqgate_plugin_replies_total{result="dropped"} 1', text)
        self.assertIn('mqgate_plugin_events_total{plugin="provision",counter="issued"} 2', text)
        self.assertIn('mqgate_plugin_events_total{plugin="provision",counter="requests"} 2', text)
        self.assertIn('mqgate_claimed_messages_total{result="taken"} 2', text)
        self.assertIn('counter="refused_bad_csr"} 0', text)

    def test_claims_must_be_under_dollar_and_must_not_overlap(self):
        twice = self.config() + "\n" + self.config().split("[plugins.provision]")[1].join(
            ["[plugins.provision2]\nmodule = \"provision\"", ""])
        code, out = run_config_check(twice, self.tmp)
        self.assertNotEqual(code, 0)
        self.assertIn('plugin "provision2": cannot claim the topic filter "$provision/+/csr": it '
                      'overlaps "$provision/+/csr", claimed by plugin "provision"', out)
        with open(os.path.join(self.tmp, "open.key"), "w") as f:
            f.write(read(self.issuing.key))
        os.chmod(os.path.join(self.tmp, "open.key"), 0o644)
        code, out = run_config_check(self.config().replace(
            self.issuing.key, os.path.join(self.tmp, "open.key")), self.tmp)
        self.assertNotEqual(code, 0)
        self.assertRegex(out, r"issuing_ca_key: '\S*open\.key' is readable by others than its "
                              r"owner: chmod 600 it")
        self.assertNotIn("PRIVATE KEY", out)

    # --- attacks ---------------------------------------------------------------------

    def assertRefused(self, msg, code):
        self.assertTrue(msg.payload.startswith(f"refused: {code}: ".encode()), msg.payload)
        self.b.wait_log(rf'plugin "provision": refused: \S+ client=\S+ peer=\S+ claim=\S+ '
                        rf'reason={code}: ')

    def test_a_csr_with_a_bad_signature_is_refused(self):
        _, csr = make_csr(self.tmp, "dev-4")
        der = bytearray(subprocess.run(["openssl", "req", "-in", csr, "-outform", "DER"],
                                       capture_output=True, check=True).stdout)
        der[-5] ^= 0x55  # inside the signature
        self.assertRefused(self.ask("dev-4", bytes(der)), "bad-signature")
        self.assertEqual(self.issued_rows(), [])

    def test_a_weak_key_is_refused(self):
        _, csr = make_csr(self.tmp, "dev-5", key="rsa:1024")
        self.assertRefused(self.ask("dev-5", read(csr, "rb")), "weak-key")
        self.assertEqual(self.issued_rows(), [])

    def test_a_csr_asking_for_sans_or_ca_is_refused(self):
        _, csr = make_csr(self.tmp, "dev-6", extra=[
            "-addext", f"subjectAltName=URI:spiffe://{DOMAIN}/device/admin"])
        self.assertRefused(self.ask("dev-6", read(csr, "rb")), "bad-csr")
        _, csr = make_csr(self.tmp, "dev-7", extra=["-addext", "basicConstraints=critical,CA:TRUE"])
        self.assertRefused(self.ask("dev-7", read(csr, "rb")), "bad-csr")
        self.assertEqual(self.issued_rows(), [])

    def test_a_claim_may_not_ask_for_another_devices_id(self):
        _, csr = make_csr(self.tmp, "dev-9")
        dev = self.device("dev-8", v5=True)
        self.assertEqual(dev.connect(), 0)
        self.assertEqual(dev.subscribe("$provision/dev-8/#"), 1)
        dev.publish("$provision/dev-9/csr", read(csr, "rb"))
        self.b.wait_log(r'client="dev-8" .*publish to "\$provision/dev-9/csr" denied')
        with self.assertRaises(queue.Empty):
            dev.reply(timeout=1)
        self.assertEqual(self.issued_rows(), [])

    def test_an_id_outside_the_allow_list_cannot_connect(self):
        dev = self.device("intruder-1")
        self.assertNotEqual(dev.connect(), 0)
        self.b.wait_log(r'plugin "provision": refused: connect client=intruder-1 peer=\S+ '
                        r'claim=batchA: id-not-allowed')

    def test_sighup_reloads_the_allow_list_and_keeps_the_old_one_if_bad(self):
        allow = os.path.join(self.d, "claims.allow")
        self.addCleanup(lambda: open(allow, "w").write(ALLOW))
        self.assertNotEqual(self.device("reload-1").connect(), 0)
        with open(allow, "w") as f:
            f.write(ALLOW + "batchA reload-*\n")
        self.b.signal(signal.SIGHUP)
        self.b.wait_log(r'plugin "provision": reloaded: .* 2 claim batch')
        self.assertEqual(self.device("reload-1").connect(), 0)
        # A bad file is refused with its line, and the rules loaded before stay.
        with open(allow, "w") as f:
            f.write("batchA\n")
        self.b.signal(signal.SIGHUP)
        self.b.wait_log(r"claims\.allow:1: expected")
        self.assertEqual(self.device("reload-2").connect(), 0)
        # So is a line past the bound every bundled plugin's files have.
        with open(allow, "w") as f:
            f.write("batchA " + "x" * 5000 + "\n")
        self.b.signal(signal.SIGHUP)
        self.b.wait_log(r"claims\.allow:1: line longer than 4096 bytes")
        self.assertEqual(self.device("reload-3").connect(), 0)

    def test_a_claim_may_not_keep_a_session(self):
        dev = self.device("dev-10", clean=False)
        self.assertNotEqual(dev.connect(), 0)
        self.b.wait_log(r"a claim identity may not keep a session")
        # 5.0: Clean Start alone is not enough; a session that outlives the connection
        # (Session Expiry Interval) is refused too.
        dev5 = self.device("dev-10", v5=True, expiry=3600)
        self.assertNotEqual(dev5.connect(), 0)
        self.b.wait_log(r"client=dev-10 .*a claim identity may not keep a session", count=2)
        self.assertEqual(self.device("dev-10", v5=True, expiry=0).connect(), 0)

    def test_a_claim_may_not_subscribe_to_everything_or_other_devices(self):
        dev = self.device("dev-11")
        self.assertEqual(dev.connect(), 0)
        self.assertEqual(dev.subscribe("#"), 0x80)
        self.assertEqual(dev.subscribe("$provision/dev-12/#"), 0x80)
        self.assertEqual(dev.subscribe("$provision/+/reply"), 0x80)
        self.assertEqual(dev.subscribe("devices/dev-11"), 0x80)
        self.assertEqual(dev.subscribe("$provision/dev-11/reply"), 1)

    def test_a_response_topic_outside_the_devices_own_is_refused(self):
        _, csr = make_csr(self.tmp, "dev-13")
        dev = self.device("dev-13", v5=True)
        self.assertEqual(dev.connect(), 0)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "$provision/dev-14/reply"
        dev.publish("$provision/dev-13/csr", read(csr, "rb"), props)
        self.b.wait_log(r'client="dev-13" .*message to "\$provision/dev-13/csr" refused')
        self.assertEqual(self.issued_rows(), [])

    # --- single-use tokens -------------------------------------------------------------

    def test_a_token_enrols_once_and_a_replay_is_refused(self):
        tokens = os.path.join(self.tmp, "tokens")
        with open(tokens, "w") as f:
            f.write("tok-0123456789abcdef tdev-*\n")
        # certauth denies clients without a certificate: token devices use a listener of
        # their own, where provision decides alone.
        enrol = (f'[listeners.enrol]\nbind = "127.0.0.1:0"\nssl = true\n'
                 f'certfile = "{self.server.cert}"\nkeyfile = "{self.server.key}"\n'
                 'plugins = ["provision"]\n')
        b = self.start_broker(self.config(f'token_file = "{tokens}"\n') + enrol)
        self.port, self.b = b.port("enrol"), b
        _, csr = make_csr(self.tmp, "tdev-1")

        def token_device(client_id, token):
            c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv311, clean_session=True,
                            reconnect_on_failure=False)
            c.tls_set(ca_certs=self.root.cert)  # no client certificate: the token is the claim
            c.username_pw_set(client_id, token)
            dev = Device.__new__(Device)
            dev.v5, dev.c, dev.port = False, c, self.port
            dev.messages, dev.events = queue.Queue(), queue.Queue()
            c.on_message = lambda cl, u, m: dev.messages.put(m)
            c.on_connect = lambda cl, u, f, rc, *p: dev.events.put(("connack", rc))
            c.on_subscribe = lambda cl, u, mid, granted, *p: dev.events.put(("suback", granted))
            c.on_disconnect = lambda cl, u, rc, *p: dev.events.put(("disconnect", rc))
            self.addCleanup(dev.close)
            return dev

        dev = token_device("tdev-1", "tok-0123456789abcdef")
        self.assertEqual(dev.connect(), 0)
        self.assertEqual(dev.subscribe("$provision/tdev-1/#"), 1)
        dev.publish("$provision/tdev-1/csr", read(csr, "rb"))
        self.assertTrue(dev.reply().payload.startswith(b"-----BEGIN CERTIFICATE-----"))
        self.assertEqual(len([r for r in self.issued_rows() if r[0] == "tdev-1"]), 1)
        # The same request again on the same connection: the token is burnt.
        dev.publish("$provision/tdev-1/csr", read(csr, "rb"))
        self.assertRefused(dev.reply(), "token-used")
        # A new connection with it is refused at CONNECT (CONNACK 4), as is an unknown one.
        self.assertEqual(token_device("tdev-2", "tok-0123456789abcdef").connect(), 4)
        b.wait_log(r"refused: connect client=tdev-2 peer=\S+ claim=token:[0-9a-f]{12}: token-used")
        self.assertNotEqual(token_device("tdev-3", "tok-not-a-known-token").connect(), 0)
        b.wait_log(r"refused: connect client=tdev-3 peer=\S+ claim=token: token-unknown")
        self.assertNotIn("tok-0123456789abcdef", b.log())  # never logged
        self.assertEqual(len(self.issued_rows()), 1)

    # --- renewal -------------------------------------------------------------------------

    def own_device(self, device_id, days_left):
        now = datetime.datetime.now(datetime.timezone.utc)
        return pki.openssl_device(self.tmp, self.issuing, device_id, DOMAIN, key_type="ec",
                                  not_before=now - datetime.timedelta(days=300),
                                  not_after=now + datetime.timedelta(days=days_left))

    def test_renewal_within_the_window_and_its_refusals(self):
        soon = self.own_device("dev-20", days_left=5)
        far = self.own_device("dev-21", days_left=200)
        _, csr = make_csr(self.tmp, "dev-20-new")
        msg = self.ask("dev-20", read(csr, "rb"), topic="$provision/dev-20/renew",
                       creds=(soon.chain, soon.key))
        self.assertTrue(msg.payload.startswith(b"-----BEGIN CERTIFICATE-----"), msg.payload)
        self.assertIn(("dev-20", "renew", "-"), self.issued_rows())
        msg = self.ask("dev-21", read(csr, "rb"), topic="$provision/dev-21/renew",
                       creds=(far.chain, far.key))
        self.assertRefused(msg, "outside-renew-window")
        # Someone else's id: AUTHORIZE refuses the PUBLISH (5.0: PUBACK 0x87).
        dev = self.device("dev-21", creds=(far.chain, far.key), v5=True)
        self.assertEqual(dev.connect(), 0)
        dev.publish("$provision/dev-20/renew", read(csr, "rb"))
        self.b.wait_log(r'client="dev-21" .*publish to "\$provision/dev-20/renew" denied')
        self.assertEqual(len(self.issued_rows()), 1)


class DeviceEnrollTest(BrokerTestCase):
    """The PKI tools' side against the real plugin: an issuing CA from `ca_creds
    --issuing`, a claim certificate from `device_creds --claim`, `device_enroll` over MQTT
    5 and 3.1.1, and a refusal's exit code."""

    def test_device_enroll_gets_a_certificate_that_certauth_accepts(self):
        d = self.tmp
        dn = ["--country", "US", "--state", "NY", "--locality", "NY", "--org-name", "tests"]
        pki.run_tool("ca_creds", *dn, "--cn", "root", "--key-type", "ec", cwd=d)
        pki.run_tool("ca_creds", "--issuing", *dn, "--cn", "issuing", "--key-type", "ec", cwd=d)
        pki.run_tool("server_creds", "--country", "US", "--org-name", "tests", "--cn",
                     "localhost", "--key-type", "ec", cwd=d)
        pki.run_tool("device_creds", "--country", "US", "--org-name", "tests", "--claim",
                     "batchA", "--uri", DOMAIN, "--key-type", "ec", "--ca-key", "issuing.key",
                     "--ca-crt", "issuing.crt", cwd=d)
        with open(os.path.join(d, "claim.crt"), "w") as f:
            f.write(read(os.path.join(d, "claim-batchA.crt")) +
                    read(os.path.join(d, "issuing.crt")))
        with open(os.path.join(d, "claims.allow"), "w") as f:
            f.write(ALLOW)
        creds = pki.Creds
        b = self.start_broker(provision_config(
            d, creds(f"{d}/server.key", f"{d}/server.crt"), creds(f"{d}/ca.key", f"{d}/ca.crt"),
            creds(f"{d}/issuing.key", f"{d}/issuing.crt"), f"{d}/issuing.crt"))
        port = str(b.port("tls"))

        def enroll(device_id, *extra):
            return pki.run_tool("device_enroll", "--port", port, "--cafile", "ca.crt",
                                "--claim-cert", "claim.crt", "--claim-key", "claim-batchA.key",
                                "--device-id", device_id, "--timeout", "20", *extra, cwd=d,
                                check=False)

        for device_id, version in (("dev-50", "5"), ("dev-51", "3.1.1")):
            p = enroll(device_id, "--mqtt", version)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            pub = subprocess.run(
                ["mosquitto_pub", "-h", "localhost", "-p", port, "--cafile", f"{d}/ca.crt",
                 "--cert", f"{d}/{device_id}.crt", "--key", f"{d}/{device_id}.key", "-i",
                 device_id, "-t", f"devices/{device_id}", "-m", "hi", "-q", "1"],
                capture_output=True, text=True, timeout=20)
            self.assertEqual(pub.returncode, 0, pub.stderr)
        p = enroll("intruder-2")
        self.assertEqual(p.returncode, 3, p.stdout + p.stderr)


class ProvisionBurstTest(ProvisionPki):
    """1,000 CSRs at once: the bounded queue answers `busy` beyond max_pending, and the
    loop keeps serving a bystander (its PINGRESP latency is printed for bench/, not
    asserted)."""

    def test_a_burst_of_csrs_is_bounded(self):
        cfg = provision_config(self.d, self.server, self.root, self.issuing, self.chain,
                               "max_pending = 2\nthreads = 1\n")
        b = self.start_broker(cfg)
        port = b.port("tls")
        _, csr = make_csr(self.tmp, "dev-30")
        payload = read(csr, "rb")
        dev = Device(port, (self.claim.cert, self.claim.key), "dev-30", self.root.cert)
        self.addCleanup(dev.close)
        self.assertEqual(dev.connect(), 0)
        self.assertEqual(dev.subscribe("$provision/dev-30/#"), 1)
        by = Device(port, (self.claim.cert, self.claim.key), "dev-31", self.root.cert)
        self.addCleanup(by.close)
        self.assertEqual(by.connect(), 0)
        for _ in range(1000):
            dev.c.publish("$provision/dev-30/csr", payload, qos=1)
        # A bystander's round trip during the burst (for bench/RESULTS.md, not asserted).
        t0 = time.monotonic()
        self.assertEqual(by.subscribe("$provision/dev-31/reply"), 1)
        print(f"\nbystander SUBACK during a burst of 1000 CSRs: "
              f"{(time.monotonic() - t0) * 1000:.1f} ms")
        replies = [dev.reply(timeout=60).payload for _ in range(1000)]
        busy = sum(r.startswith(b"refused: busy: ") for r in replies)
        issued = sum(r.startswith(b"-----BEGIN CERTIFICATE-----") for r in replies)
        self.assertEqual(busy + issued, 1000)
        self.assertGreater(busy, 0)
        self.assertGreater(issued, 0)
        b.wait_log(r"reason=busy: too many requests are waiting")


if __name__ == "__main__":
    unittest.main()
