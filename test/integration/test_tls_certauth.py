"""mqtts listeners and the certauth plugin, end to end, with real clients:
mosquitto_pub/mosquitto_sub, paho-mqtt with an ssl context, Python's ssl module with
hand-built MQTT, and openssl s_client. Certificates are made per class in a temp dir, with
our pki-tools and with openssl."""
import concurrent.futures
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

import mqtt_raw as r
import pki
from brokers import PahoClient
from mqgate_test import Broker, BrokerTestCase, closed_by_peer, run_config_check

DOMAIN = "my.domain.name"


def _der_element(der, i):
    """(content start, end) of the DER element at der[i]."""
    n, j = der[i + 1], i + 2
    if n & 0x80:
        k = n & 0x7F
        n, j = int.from_bytes(der[j:j + k], "big"), j + k
    return j, j + n


def _der(tag, content):
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def crl_without_next_update(crl, issuer_key, out):
    """`crl` (PEM) re-signed by `issuer_key` without its nextUpdate, as DER in `out`: RFC
    5280 has issuers include one, but its syntax makes it optional and openssl always
    writes it."""
    der_path = out + ".orig"
    pki.openssl("crl", "-in", crl, "-outform", "DER", "-out", der_path)
    with open(der_path, "rb") as f:
        der = f.read()
    start, _ = _der_element(der, 0)  # CertificateList
    tbs_start, tbs_end = _der_element(der, start)
    elements, i = [], tbs_start
    while i < tbs_end:
        _, end = _der_element(der, i)
        elements.append(der[i:end])
        i = end
    times = [k for k, e in enumerate(elements) if e[0] in (0x17, 0x18)]  # UTC/GeneralizedTime
    assert len(times) == 2, "thisUpdate and nextUpdate"
    del elements[times[1]]
    tbs = _der(0x30, b"".join(elements))
    _, alg_end = _der_element(der, tbs_end)
    algorithm = der[tbs_end:alg_end]
    with open(out + ".tbs", "wb") as f:
        f.write(tbs)
    pki.openssl("dgst", "-sha256", "-sign", issuer_key, "-out", out + ".sig", out + ".tbs")
    with open(out + ".sig", "rb") as f:
        signature = f.read()
    with open(out, "wb") as f:
        f.write(_der(0x30, tbs + algorithm + _der(0x03, b"\x00" + signature)))
    return out


class HandshakeRefused(Exception):
    pass


def tls_context(ca, cert=None, key=None, hostname=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.check_hostname = hostname
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def tls_socket(port, ctx, session=None, timeout=10):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
        raw.close()
        raise HandshakeRefused(str(e))
    return s


def mqtt_over(sock, client_id, clean=True):
    """CONNECT on an established TLS socket; returns the CONNACK return code (or raises
    HandshakeRefused if TLS 1.2's deferred client-certificate alert arrives instead)."""
    c = r.RawClient.__new__(r.RawClient)
    c.sock, c.buf, c.eof, c.timeout, c.pending, c.discarded = sock, b"", False, 10, [], []
    try:
        c.send(r.connect(client_id, clean=clean))
        return c.expect(r.CONNACK).return_code, c
    except (ssl.SSLError, r.ConnectionClosed, ConnectionResetError) as e:
        raise HandshakeRefused(str(e))


def connack(port, ca, cert=None, key=None, client_id="c"):
    """TLS handshake + CONNECT; returns the CONNACK code, or 'refused' for a handshake
    the broker refused."""
    ctx = tls_context(ca, cert, key)
    try:
        s = tls_socket(port, ctx)
        code, _ = mqtt_over(s, client_id)
        s.close()
        return code
    except HandshakeRefused:
        return "refused"


def mosquitto_pub(port, creds, client_id, topic="t", message="x", ca=None, extra=()):
    args = ["mosquitto_pub", "-h", "localhost", "-p", str(port), "--cafile", ca or creds.ca,
            "-i", client_id, "-t", topic, "-m", message, "-q", "1", *extra]
    if creds is not None:
        args += ["--cert", creds.chain or creds.cert, "--key", creds.key]
    return subprocess.run(args, capture_output=True, text=True, timeout=20)


def tls_config(d, server, ca_file, client_cert=None, extra_listener="", extra="", log="info",
               plugins='plugins = ["certauth"]', uri_domain=DOMAIN, certauth_extra=""):
    cc = f'client_cert = "{client_cert}"\n' if client_cert else ""
    return (f'log_level = "{log}"\nsys_interval = 0\n{extra}\n'
            '[listeners.plain]\nbind = "127.0.0.1:0"\nplugins = ["anonymous"]\n'
            f'[listeners.tls]\nbind = "127.0.0.1:0"\nssl = true\ncertfile = "{server.cert}"\n'
            f'keyfile = "{server.key}"\ncafile = "{ca_file}"\n{cc}{plugins}\n{extra_listener}\n'
            '[plugins.anonymous]\nallow_anonymous = true\n'
            f'[plugins.certauth]\nuri_domain = "{uri_domain}"\n{certauth_extra}\n')


class PkiFixture(unittest.TestCase):
    """One CA (ours, EC for speed), a server certificate and a few devices per class."""

    @classmethod
    def setUpClass(cls):
        cls.pki_dir = tempfile.mkdtemp(prefix="mqgate-tls-")
        d = cls.pki_dir
        cls.ca = pki.make_ca(d, key_type="ec")
        cls.server = pki.make_server(d, cn="localhost", key_type="ec")
        cls.dev1 = pki.make_device(d, "dev1", DOMAIN, key_type="ec")
        cls.Dev2 = pki.make_device(d, "Dev2", DOMAIN, key_type="ec")
        cls.parent = pki.make_device(d, "parent", "domain.name", key_type="ec")
        cls.child = pki.make_device(d, "child", "sub.my.domain.name", key_type="ec")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki_dir, ignore_errors=True)


class CertauthTest(PkiFixture, BrokerTestCase):
    def setUp(self):
        super().setUp()
        self.b = self.start_broker(tls_config(self.pki_dir, self.server, self.ca.cert))
        self.port = self.b.port("tls")

    def test_right_certificate_and_client_id_and_messages_flow(self):
        sub = subprocess.Popen(["mosquitto_sub", "-h", "localhost", "-p", str(self.port),
                                "--cafile", self.ca.cert, "--cert", self.Dev2.cert, "--key",
                                self.Dev2.key, "-i", "Dev2", "-t", "devices/#", "-C", "1", "-v",
                                "-q", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.b.wait_log(r'client="Dev2" .*connected')
        p = mosquitto_pub(self.port, self.dev1, "dev1", topic="devices/dev1/temp", message="21.5")
        self.assertEqual(p.returncode, 0, p.stderr)
        out, err = sub.communicate(timeout=10)
        self.assertEqual(out.strip(), "devices/dev1/temp 21.5", err)

    def test_wrong_client_id_gets_connack_5(self):
        self.assertEqual(connack(self.port, self.ca.cert, self.dev1.cert, self.dev1.key, "dev2"), 5)
        p = mosquitto_pub(self.port, self.dev1, "someoneElse")
        self.assertNotEqual(p.returncode, 0)
        self.assertRegex(p.stderr, r"not authori[sz]ed")
        self.b.wait_log(r'client="someoneElse" .*refused \(CONNACK 5\): not authorised: plugin '
                        r'"certauth"')

    def test_client_id_case_matters(self):
        self.assertEqual(connack(self.port, self.ca.cert, self.dev1.cert, self.dev1.key, "DEV1"), 5)
        self.assertEqual(connack(self.port, self.ca.cert, self.Dev2.cert, self.Dev2.key, "dev2"), 5)
        self.assertEqual(connack(self.port, self.ca.cert, self.Dev2.cert, self.Dev2.key, "Dev2"), 0)

    def test_no_certificate_with_optional_gets_connack_5(self):
        self.assertEqual(connack(self.port, self.ca.cert, client_id="dev1"), 5)
        self.b.wait_log(r'client="dev1" .*refused \(CONNACK 5\)')

    def test_server_certificate_as_client_certificate(self):
        # A certificate from the right CA but for servers only (extendedKeyUsage serverAuth):
        # refused in the handshake, "optional" or not (test_tls_limits.py has the details).
        self.assertEqual(connack(self.port, self.ca.cert, self.server.cert, self.server.key,
                                 "localhost"), "refused")
        # One meant for clients but without a URI SAN reaches certauth: denied, never a crash.
        nouri = pki.openssl_device(self.tmp, self.ca, "nouri", DOMAIN, key_type="ec",
                                   san="DNS:nouri.local")
        self.assertEqual(connack(self.port, self.ca.cert, nouri.cert, nouri.key, "nouri"), 5)
        self.assertEqual(connack(self.port, self.ca.cert, self.dev1.cert, self.dev1.key, "dev1"), 0)

    def test_parent_and_child_domains_are_refused(self):
        self.assertEqual(connack(self.port, self.ca.cert, self.parent.cert, self.parent.key,
                                 "parent"), 5)
        self.assertEqual(connack(self.port, self.ca.cert, self.child.cert, self.child.key,
                                 "child"), 5)

    def test_plain_listener_beside_is_anonymous(self):
        c = PahoClient("127.0.0.1", self.b.port("plain"), "plain-one")
        self.assertEqual(c.connect()[0], 0)
        c.disconnect()

    def test_paho_with_ssl_context(self):
        c = PahoClient("localhost", self.port, "dev1")
        c.c.tls_set_context(tls_context(self.ca.cert, self.dev1.cert, self.dev1.key))
        self.assertEqual(c.connect()[0], 0)
        self.assertEqual(c.subscribe("devices/dev1/#", 1), [1])
        c.publish("devices/dev1/x", b"loop", qos=1)
        self.assertEqual(c.get().payload, b"loop")
        c.disconnect()

    def test_openssl_s_client_sees_the_certificate_request(self):
        p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{self.port}",
                            "-CAfile", self.ca.cert, "-verify_return_error", "-brief"],
                           input="", capture_output=True, text=True, timeout=20)
        self.assertIn("Verification: OK", p.stderr)
        self.assertIn("Protocol version: TLSv1.2", p.stderr)

    def test_ecdhe_prefers_x25519_whatever_the_client_lists_first(self):
        # mbedTLS takes the server's first curve the client offers: X25519 is the cheapest
        # for the broker (bench/RESULTS.md), P-256 still works for a client without it.
        def server_temp_key(groups):
            p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{self.port}",
                                "-CAfile", self.ca.cert, "-groups", groups, "-brief"],
                               input="", capture_output=True, text=True, timeout=20)
            m = re.search(r"(?:Server|Peer) Temp Key: ([^\n]*)", p.stderr)
            self.assertIsNotNone(m, p.stderr)
            return m.group(1)
        self.assertTrue(server_temp_key("P-256:X25519").startswith("X25519"))
        self.assertTrue(server_temp_key("X25519:P-256").startswith("X25519"))
        self.assertIn("prime256v1", server_temp_key("P-256"))

    def test_plugins_get_the_peer_chain_and_tls_details(self):
        b = self.start_broker(tls_config(
            self.pki_dir, self.server, self.ca.cert,
            plugins='plugins = ["certauth", "probe"]',
            extra=f"") + "[plugins.probe]\npath = \"" + os.path.join(
                os.environ.get("MQGATE_BUILD_DIR", ""), "test", "plugins", "scripted.so")
            + '"\ntag = "probe"\nauthenticate = "abstain"\n')
        self.assertEqual(connack(b.port("tls"), self.ca.cert, self.dev1.cert, self.dev1.key,
                                 "dev1"), 0)
        # Leaf and our root: the verified chain.
        b.wait_log(r"scripted probe: authenticate client_id=dev1 .*listener=tls .*chain=2 -> 0")


    def test_deferred_decision_over_tls_and_tls_details_for_abi2(self):
        """An ABI 2 plugin defers a TLS client's CONNECT after certauth allowed it, then
        reads the connection's TLS version and cipher through the host API."""
        plugin = os.path.join(os.environ.get("MQGATE_BUILD_DIR", ""), "test", "plugins",
                              "deferred.so")
        b = self.start_broker(tls_config(
            self.pki_dir, self.server, self.ca.cert, plugins='plugins = ["certauth", "d"]')
            + f'[plugins.d]\npath = "{plugin}"\ntag = "d"\ndelay_ms = 200\n')
        start = time.monotonic()
        self.assertEqual(connack(b.port("tls"), self.ca.cert, self.dev1.cert, self.dev1.key,
                                 "dev1"), 0)
        self.assertGreaterEqual(time.monotonic() - start, 0.18)
        b.wait_log(r"deferred d: connected client_id=dev1 identity=certauth:spiffe://"
                   r"my\.domain\.name/device/dev1 .*clean_session=1 tls=TLSv1\.[23] cipher=TLS-")


class HandshakeTest(PkiFixture, BrokerTestCase):
    """Certificates the TLS layer itself refuses, before any plugin runs."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        d = cls.pki_dir
        other = os.path.join(d, "other")
        os.makedirs(other)
        cls.other_ca = pki.make_ca(other, key_type="ec", cn="someone else's CA")
        cls.stranger = pki.make_device(other, "dev1", DOMAIN, key_type="ec")
        # openssl-made: a root, an intermediate, a device under it, an expired device.
        cls.oroot = pki.openssl_ca(d, name="oroot", key_type="ec")
        cls.ointer = pki.openssl_intermediate(d, cls.oroot, name="ointer")
        cls.odev = pki.openssl_device(d, cls.ointer, "odev", DOMAIN, key_type="ec")
        cls.odirect = pki.openssl_device(d, cls.oroot, "odirect", DOMAIN, key_type="ec")
        cls.expired = pki.openssl_device(d, cls.oroot, "old", DOMAIN, key_type="ec", expired=True)
        cls.bundle = os.path.join(d, "bundle.crt")
        with open(cls.bundle, "w") as f:
            for path in (cls.ca.cert, cls.oroot.cert):
                with open(path) as src:
                    f.write(src.read())

    def start(self, client_cert=None, **kw):
        b = self.start_broker(tls_config(self.pki_dir, self.server, self.bundle, client_cert, **kw))
        return b, b.port("tls")

    def test_another_cas_certificate_is_refused_in_the_handshake(self):
        b, port = self.start()
        self.assertEqual(connack(port, self.ca.cert, self.stranger.cert, self.stranger.key, "dev1"),
                         "refused")
        b.wait_log(r"TLS handshake failed: certificate at depth 0 .*rejected: .*not correctly signed")
        self.assertEqual(connack(port, self.ca.cert, self.dev1.cert, self.dev1.key, "dev1"), 0)

    def test_another_cas_certificate_with_required(self):
        _, port = self.start("required")
        self.assertEqual(connack(port, self.ca.cert, self.stranger.cert, self.stranger.key, "dev1"),
                         "refused")

    def test_expired_certificate_is_refused(self):
        b, port = self.start()
        self.assertEqual(connack(port, self.ca.cert, self.expired.cert, self.expired.key, "old"),
                         "refused")
        b.wait_log(r"TLS handshake failed: .*expired")

    def test_no_certificate_with_required_is_refused(self):
        b, port = self.start("required")
        self.assertEqual(connack(port, self.ca.cert, client_id="dev1"), "refused")
        b.wait_log(r"TLS handshake failed")

    def test_device_signed_by_an_intermediate_ca(self):
        _, port = self.start()
        # The device presents leaf + intermediate; the broker trusts only the root.
        self.assertEqual(connack(port, self.ca.cert, self.odev.chain, self.odev.key, "odev"), 0)
        # Without the intermediate the chain cannot be built.
        self.assertEqual(connack(port, self.ca.cert, self.odev.cert, self.odev.key, "odev"), "refused")

    def test_certificates_made_by_openssl(self):
        _, port = self.start()
        p = mosquitto_pub(port, self.odirect, "odirect", ca=self.ca.cert)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_openssl_server_certificate_and_key(self):
        # A server certificate and PKCS#8 key made by openssl, with our device.
        srv = pki.openssl_server(self.pki_dir, self.oroot, name="osrv", key_type="rsa")
        b = self.start_broker(tls_config(self.pki_dir, srv, self.bundle))
        self.assertEqual(connack(b.port("tls"), self.oroot.cert, self.dev1.cert, self.dev1.key,
                                 "dev1"), 0)

    def test_client_cert_none_asks_for_nothing(self):
        b = self.start_broker(tls_config(self.pki_dir, self.server, self.ca.cert, "none",
                                         plugins='plugins = ["anonymous"]'))
        self.assertEqual(connack(b.port("tls"), self.ca.cert, client_id="anyone"), 0)

    def test_session_resumption(self):
        _, port = self.start()
        ctx = tls_context(self.ca.cert, self.dev1.cert, self.dev1.key)
        s = tls_socket(port, ctx)
        code, _ = mqtt_over(s, "dev1")
        self.assertEqual(code, 0)
        session = s.session
        s.close()
        s2 = tls_socket(port, ctx, session=session)
        self.assertTrue(s2.session_reused, "the broker did not resume the session")
        code, _ = mqtt_over(s2, "dev1")
        self.assertEqual(code, 0)  # certauth still sees the certificate of a resumed session
        s2.close()

    def test_tls_min_version_and_ciphers(self):
        b = self.start_broker(tls_config(
            self.pki_dir, self.server, self.ca.cert,
            extra_listener='ciphers = ["TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384"]'))
        ctx = tls_context(self.ca.cert, self.dev1.cert, self.dev1.key)
        s = tls_socket(b.port("tls"), ctx)
        self.assertEqual(s.cipher()[0], "ECDHE-ECDSA-AES256-GCM-SHA384")
        self.assertEqual(s.version(), "TLSv1.2")
        s.close()
        ctx11 = tls_context(self.ca.cert, self.dev1.cert, self.dev1.key)
        ctx11.minimum_version = ctx11.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx11.set_ciphers("ALL:@SECLEVEL=0")
        with self.assertRaises((HandshakeRefused, ssl.SSLError)):
            tls_socket(b.port("tls"), ctx11)


class RevocationTest(PkiFixture, BrokerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        d = cls.pki_dir
        cls.victim = pki.make_device(d, "victim", DOMAIN, key_type="ec")
        cls.oroot = pki.openssl_ca(d, name="oroot2", key_type="ec")
        cls.ovictim = pki.openssl_device(d, cls.oroot, "ovictim", DOMAIN, key_type="ec")
        cls.ogood = pki.openssl_device(d, cls.oroot, "ogood", DOMAIN, key_type="ec")

    def crl_config(self, ca_file, crl, extra_listener=""):
        return tls_config(self.pki_dir, self.server, ca_file,
                          extra_listener=f'crlfile = "{crl}"\n{extra_listener}')

    def test_revoked_by_revoke_creds(self):
        crl = pki.revoke(self.tmp, self.victim.cert, ca=self.ca, crl=os.path.join(self.tmp, "ca.crl"))
        b = self.start_broker(self.crl_config(self.ca.cert, crl))
        port = b.port("tls")
        self.assertEqual(connack(port, self.ca.cert, self.victim.cert, self.victim.key, "victim"),
                         "refused")
        b.wait_log(r"TLS handshake failed: .*revoked")
        self.assertEqual(connack(port, self.ca.cert, self.dev1.cert, self.dev1.key, "dev1"), 0)

    def test_revoked_by_openssl_ca(self):
        crl = pki.openssl_crl(self.tmp, self.oroot, [self.ovictim.cert], name="o")
        b = self.start_broker(self.crl_config(self.oroot.cert, crl))
        port = b.port("tls")
        self.assertEqual(connack(port, self.ca.cert, self.ovictim.cert, self.ovictim.key,
                                 "ovictim"), "refused")
        self.assertEqual(connack(port, self.ca.cert, self.ogood.cert, self.ogood.key, "ogood"), 0)

    def test_crl_reload_disconnects_revoked_clients(self):
        crl = os.path.join(self.tmp, "ca.crl")
        pki.revoke(self.tmp, ca=self.ca, crl=crl, refresh=True)  # an empty CRL
        b = self.start_broker(self.crl_config(self.ca.cert, crl, "disconnect_revoked = true"))
        port = b.port("tls")
        s = tls_socket(port, tls_context(self.ca.cert, self.victim.cert, self.victim.key))
        code, victim = mqtt_over(s, "victim")
        self.assertEqual(code, 0)
        s2 = tls_socket(port, tls_context(self.ca.cert, self.dev1.cert, self.dev1.key))
        code, keeper = mqtt_over(s2, "dev1")
        self.assertEqual(code, 0)
        pki.revoke(self.tmp, self.victim.cert, ca=self.ca, crl=crl)
        b.signal(signal.SIGHUP)
        b.wait_log(r'reload: listener "tls": 1 client with a revoked certificate disconnected')
        self.assertTrue(closed_by_peer(s, 5))
        keeper.send(r.pingreq())
        self.assertEqual(keeper.read_packet().type, r.PINGRESP)  # the others stay
        self.assertEqual(connack(port, self.ca.cert, self.victim.cert, self.victim.key, "victim"),
                         "refused")
        s2.close()

    def test_stale_crl_is_logged_and_does_not_lock_everyone_out(self):
        # A CRL whose nextUpdate is one second away, then waited out.
        root = pki.openssl_ca(self.tmp, name="sroot", key_type="ec")
        victim = pki.openssl_device(self.tmp, root, "svictim", DOMAIN, key_type="ec")
        good = pki.openssl_device(self.tmp, root, "sgood", DOMAIN, key_type="ec")
        pki.openssl_crl(self.tmp, root, [victim.cert], name="fresh")
        crl = os.path.join(self.tmp, "stale.crl")
        cfg = os.path.join(pki._issuer_dir(root), "openssl.cnf")
        pki.openssl("ca", "-gencrl", "-config", cfg, "-cert", root.cert, "-keyfile", root.key,
                    "-crlsec", "1", "-crlexts", "crl_ext", "-out", crl)
        time.sleep(2.1)  # CRL times have whole seconds
        b = self.start_broker(self.crl_config(root.cert, crl))
        b.wait_log(r"ERROR .*CRL in .*stale\.crl is STALE: its nextUpdate .* has passed")
        port = b.port("tls")
        self.assertEqual(connack(port, self.ca.cert, good.cert, good.key, "sgood"), 0)
        self.assertEqual(connack(port, self.ca.cert, victim.cert, victim.key, "svictim"), "refused")


    def test_crl_without_next_update_is_loaded_and_never_stale(self):
        # mbedTLS leaves an absent nextUpdate all zeros: no date, not one in year 0 that
        # has long passed.
        root = pki.openssl_ca(self.tmp, name="nroot", key_type="ec")
        victim = pki.openssl_device(self.tmp, root, "nvictim", DOMAIN, key_type="ec")
        good = pki.openssl_device(self.tmp, root, "ngood", DOMAIN, key_type="ec")
        crl = crl_without_next_update(pki.openssl_crl(self.tmp, root, [victim.cert], name="n"),
                                      root.key, os.path.join(self.tmp, "no_next.crl"))
        text = pki.openssl("crl", "-in", crl, "-inform", "DER", "-CAfile", root.cert,
                           "-noout", "-text")
        self.assertIn("Next Update: NONE", text.stdout)
        self.assertIn("verify OK", text.stderr + text.stdout)
        b = self.start_broker(self.crl_config(root.cert, crl))
        b.wait_log(r"WARN .*CRL in .*no_next\.crl has no nextUpdate: it is never reported as stale")
        port = b.port("tls")
        self.assertEqual(connack(port, self.ca.cert, good.cert, good.key, "ngood"), 0)
        self.assertEqual(connack(port, self.ca.cert, victim.cert, victim.key, "nvictim"), "refused")
        time.sleep(1.5)  # past a sweep, which reports stale CRLs
        self.assertNotRegex(b.log(), r"is STALE|is stale \(")

class AllowedTopicsTest(PkiFixture, BrokerTestCase):
    def test_devices_keep_to_their_topics(self):
        b = self.start_broker(tls_config(
            self.pki_dir, self.server, self.ca.cert,
            certauth_extra='allowed_topics = ["devices/{device_id}/#"]\nclient_id_from_cert = true'))
        port = b.port("tls")
        watcher = PahoClient("127.0.0.1", b.port("plain"), "watcher")
        watcher.connect()
        watcher.subscribe("#", 1)
        dev = PahoClient("localhost", port, "dev1")
        dev.c.tls_set_context(tls_context(self.ca.cert, self.dev1.cert, self.dev1.key))
        self.assertEqual(dev.connect()[0], 0)
        self.assertEqual(dev.subscribe([("devices/dev1/#", 1), ("devices/Dev2/#", 1), ("#", 0)]),
                         [1, 128, 128])
        dev.publish("devices/dev1/ok", b"mine", qos=1)
        dev.publish("devices/Dev2/spoof", b"not mine", qos=1)
        got = [(m.topic, m.payload) for m in watcher.drain(0.5)]
        self.assertIn(("devices/dev1/ok", b"mine"), got)
        self.assertNotIn(("devices/Dev2/spoof", b"not mine"), got)
        dev.disconnect()
        # client_id_from_cert: an empty client id becomes the certificate's device id.
        s = tls_socket(port, tls_context(self.ca.cert, self.Dev2.cert, self.Dev2.key))
        code, _ = mqtt_over(s, "")
        self.assertEqual(code, 0)
        b.wait_log(r'client="Dev2" .*connected')
        s.close()
        watcher.disconnect()


class ReloadAndLoadTest(PkiFixture, BrokerTestCase):
    def fingerprint(self, port):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        ctx = tls_context(self.ca.cert, self.dev1.cert, self.dev1.key)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        der = s.getpeercert(binary_form=True)
        s.close()
        return hashlib.sha256(der).hexdigest()

    def test_sighup_swaps_the_server_certificate_and_keeps_clients(self):
        d = self.tmp
        srv_dir = os.path.join(d, "srv")
        os.makedirs(srv_dir)
        live = pki.Creds(os.path.join(srv_dir, "live.key"), os.path.join(srv_dir, "live.crt"))
        shutil.copy(self.server.key, live.key)
        shutil.copy(self.server.cert, live.cert)
        b = self.start_broker(tls_config(self.pki_dir, live, self.ca.cert))
        port = b.port("tls")
        before = self.fingerprint(port)
        with open(self.server.cert, "rb") as f:
            self.assertEqual(before, hashlib.sha256(
                ssl.PEM_cert_to_DER_cert(f.read().decode())).hexdigest())
        s = tls_socket(port, tls_context(self.ca.cert, self.dev1.cert, self.dev1.key))
        code, stay = mqtt_over(s, "dev1")
        self.assertEqual(code, 0)
        fresh = pki.make_server(d, cn="localhost", ca=self.ca, key_type="ec", output_dir="new")
        shutil.copy(fresh.key, live.key)
        shutil.copy(fresh.cert, live.cert)
        b.signal(signal.SIGHUP)
        b.wait_log(r'reload: listener "tls": TLS certificate .*live connections keep theirs')
        after = self.fingerprint(port)
        self.assertNotEqual(before, after)
        with open(fresh.cert) as f:
            self.assertEqual(after, hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest())
        stay.send(r.pingreq())  # the client connected before the reload is still served
        self.assertEqual(stay.read_packet().type, r.PINGRESP)
        s.close()

    def test_failed_reload_keeps_the_old_material(self):
        d = self.tmp
        key = os.path.join(d, "k.key")
        crt = os.path.join(d, "k.crt")
        shutil.copy(self.server.key, key)
        shutil.copy(self.server.cert, crt)
        b = self.start_broker(tls_config(self.pki_dir, pki.Creds(key, crt), self.ca.cert))
        with open(crt, "w") as f:
            f.write("garbage\n")
        b.signal(signal.SIGHUP)
        b.wait_log(r'ERROR reload: listener "tls": certfile .*k\.crt: .*keeping the previous TLS')
        self.assertEqual(connack(b.port("tls"), self.ca.cert, self.dev1.cert, self.dev1.key,
                                 "dev1"), 0)

    def check_refused(self, cfg, *patterns):
        rc, out = run_config_check(cfg, self.tmp)
        self.assertEqual(rc, 1, out)
        for p in patterns:
            self.assertRegex(out, p)
        return out

    def test_tls_configuration_errors_stop_the_broker(self):
        d = self.pki_dir
        listener = '[listeners.tls]\nbind = "127.0.0.1:0"\nssl = true\n'
        self.check_refused(listener + f'certfile = "{d}/nope.crt"\nkeyfile = "{self.server.key}"\n',
                           r'listener "tls": certfile .*/nope\.crt: ')
        self.check_refused(listener + f'certfile = "{self.server.cert}"\nkeyfile = "{self.dev1.key}"\n',
                           r'listener "tls": keyfile .*dev1\.key: does not match the certificate')
        bad_ca = os.path.join(self.tmp, "bad-ca.crt")
        with open(bad_ca, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
        self.check_refused(listener + f'certfile = "{self.server.cert}"\nkeyfile = "{self.server.key}"\n'
                           f'cafile = "{bad_ca}"\n', r'listener "tls": cafile .*bad-ca\.crt: ')
        other = os.path.join(self.tmp, "other")
        os.makedirs(other)
        other_ca = pki.make_ca(other, key_type="ec")
        foreign_crl = pki.revoke(other, ca=other_ca, crl=os.path.join(other, "o.crl"), refresh=True)
        self.check_refused(listener + f'certfile = "{self.server.cert}"\nkeyfile = "{self.server.key}"\n'
                           f'cafile = "{self.ca.cert}"\ncrlfile = "{foreign_crl}"\n',
                           r"crlfile .*o\.crl: a CRL in it is not signed by any CA in cafile")
        self.check_refused(listener + f'keyfile = "{self.server.key}"\n',
                           r"listeners\.tls\.certfile: missing")
        self.check_refused(listener + f'certfile = "{self.server.cert}"\nkeyfile = "{self.server.key}"\n'
                           'client_cert = "required"\n', r"client_cert: asks for client certificates "
                           r"but there is no cafile")
        self.check_refused('[listeners.p]\nbind = "127.0.0.1:0"\ncafile = "ca.crt"\n',
                           r"listeners\.p\.cafile: is a TLS setting: it needs ssl = true")
        self.check_refused(listener + f'certfile = "{self.server.cert}"\nkeyfile = "{self.server.key}"\n'
                           'tls_min_version = "1.3"\n', r"TLS 1\.3 is not available")
        self.check_refused(listener + f'certfile = "{self.server.cert}"\nkeyfile = "{self.server.key}"\n'
                           'ciphers = ["AES-ROT13"]\n', r'"AES-ROT13" is not a cipher suite')
        self.check_refused(tls_config(self.pki_dir, self.server, self.ca.cert, uri_domain=""),
                           r'plugin "certauth" .*uri_domain')


class StormTest(PkiFixture, BrokerTestCase):
    def test_200_concurrent_mtls_connects_while_plain_traffic_flows(self):
        b = self.start_broker(tls_config(self.pki_dir, self.server, self.ca.cert,
                                         extra_listener="", log="info",
                                         extra="[limits]\nconnect_timeout = 60"))
        port, plain = b.port("tls"), b.port("plain")
        sub = PahoClient("127.0.0.1", plain, "plain-sub")
        sub.connect()
        sub.subscribe("ticks", 1)
        pub = PahoClient("127.0.0.1", plain, "plain-pub")
        pub.connect()
        stop = threading.Event()
        sent = []
        storm_window = []

        def ticker():
            i = 0
            while not stop.is_set():
                pub.publish("ticks", str(i).encode(), qos=1)
                sent.append((i, time.monotonic()))
                i += 1
                time.sleep(0.02)

        t = threading.Thread(target=ticker)
        t.start()
        ctx = tls_context(self.ca.cert, self.dev1.cert, self.dev1.key)

        def one(_):
            s = tls_socket(port, ctx, timeout=60)
            code, _c = mqtt_over(s, "dev1", clean=True)
            s.close()
            return code

        try:
            storm_window.append(time.monotonic())
            with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
                codes = list(pool.map(one, range(200)))
            storm_window.append(time.monotonic())
        finally:
            stop.set()
            t.join()
        self.assertEqual(codes.count(0), 200, codes)
        received = sub.get_n(len(sent), timeout=20)
        self.assertEqual([int(m.payload) for m in received], [i for i, _ in sent])
        during = [i for i, at in sent if storm_window[0] <= at <= storm_window[1]]
        self.assertTrue(during, "no plain message was even published during the storm")
        pub.disconnect()
        sub.disconnect()


if __name__ == "__main__":
    unittest.main()
