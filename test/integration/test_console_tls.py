"""The console and the [http] endpoint over HTTPS (issue 25, docs/console.md): TLS with the
listeners' material (mbedTLS, handshakes on the TLS threads), /metrics and /healthz over
it, Secure cookies, non-loopback binds allowed only with TLS, SIGHUP reloading the
certificate, and the page in headless Chromium over https. Real clients: curl, openssl
s_client, Python's ssl, Chromium.

mqgate-only. Deterministic: every check follows the event it depends on."""
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import time
import unittest

import pki
import test_console as base  # a module: its test cases stay out of this file
from cdp import Browser
from mqgate_test import BrokerTestCase, closed_by_peer, connect_raw, run_config_check

TOKEN = base.TOKEN


def https(port, path, method="GET", headers=None, cafile=None, cert=None):
    """(status, headers dict (lower-case names), parsed JSON or raw bytes) over TLS; `cert`
    (certificate, key) is the client certificate."""
    ctx = ssl.create_default_context(cafile=cafile)
    if cert:
        ctx.load_cert_chain(*cert)
    c = http.client.HTTPSConnection("localhost", port, timeout=20, context=ctx)
    try:
        c.request(method, path, headers=headers or {})
        resp = c.getresponse()
        body = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        if hdrs.get("content-type", "").startswith("application/json"):
            body = json.loads(body)
        return resp.status, hdrs, body
    finally:
        c.close()


class ConsoleTlsTest(BrokerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki_dir, cls.ca, cls.server = base.make_pki("mqgate-console-tls-",
                                                        san_ip=["127.0.0.1"])
        d = cls.pki_dir
        cls.server2 = pki.make_server(d, cn="localhost", key_type="ec", san_ip=["127.0.0.1"],
                                      output_dir="second")
        cls.server3 = pki.make_server(d, cn="localhost", key_type="ec", san_ip=["127.0.0.1"],
                                      output_dir="third")
        # Operators have a CA of their own (docs/console.md); their certificates: CN = the
        # id, SAN URI spiffe://<domain>/device/<id>. A device of the devices' CA named
        # like an operator must not get in.
        ops = os.path.join(d, "operators")
        os.makedirs(ops)
        cls.op_ca = pki.make_ca(ops, key_type="ec", cn="mqgate test operators CA")
        cls.op_admin = pki.make_device(ops, "op-admin", base.DOMAIN, key_type="ec")
        cls.op_admin2 = pki.make_device(ops, "op-admin", base.DOMAIN, key_type="ec",
                                        output_dir="second", force=True)
        cls.op_reader = pki.make_device(ops, "op-reader", base.DOMAIN, key_type="ec")
        cls.stranger = pki.make_device(ops, "stranger", base.DOMAIN, key_type="ec")
        cls.impostor = pki.make_device(d, "op-admin", base.DOMAIN, key_type="ec")
        cls.passwd = base.write_passwd(d)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki_dir, ignore_errors=True)

    def config(self, bind="127.0.0.1:0", tls=True, extra=""):
        # Copies: the reload test replaces them.
        self.cert = os.path.join(self.tmp, "http.crt")
        self.key = os.path.join(self.tmp, "http.key")
        shutil.copy(self.server.cert, self.cert)
        shutil.copy(self.server.key, self.key)
        tls_keys = (f'ssl = true\ncertfile = "{self.cert}"\nkeyfile = "{self.key}"\n'
                    f'cafile = "{self.op_ca.cert}"\nclient_cert = "optional"\n') if tls else ""
        return ('log_level = "debug"\nsys_interval = 0\n'
                '[listeners.plain]\nbind = "127.0.0.1:0"\nplugins = ["anonymous"]\n'
                '[plugins.anonymous]\nallow_anonymous = true\n'
                f'[http]\nbind = "{bind}"\ntoken = "{TOKEN}"\nconsole = true\n'
                f'console_users = "{self.passwd}"\nconsole_admins = ["alice"]\n{tls_keys}{extra}')

    def start(self, **kw):
        b = self.start_broker(self.config(**kw))
        m = b.wait_log(base.HTTP_LISTENING.pattern) and base.HTTP_LISTENING.search(b.log())
        self.http = int(m.group(2))
        self.b = b
        return b

    def curl(self, path, *args):
        p = subprocess.run(["curl", "-sS", "--cacert", self.ca.cert, "-o", "-", "-w",
                            "\n%{http_code}", *args, f"https://localhost:{self.http}{path}"],
                           capture_output=True, text=True, timeout=20)
        body, _, code = p.stdout.rpartition("\n")
        return int(code or 0), body

    def test_configuration(self):
        # TLS lets the console bind beyond loopback; plain HTTP does not.
        code, out = run_config_check(self.config(bind="0.0.0.0:0"), self.tmp)
        self.assertEqual(code, 0, out)
        code, out = run_config_check(self.config(bind="0.0.0.0:0", tls=False), self.tmp)
        self.assertNotEqual(code, 0)
        self.assertRegex(out, r"http\.console: is served over plain HTTP on loopback binds only")
        for text, pattern in (
                (self.config(tls=False, extra='certfile = "x.crt"\n'),
                 r"http\.certfile: is a TLS setting: it needs ssl = true in \[http\]"),
                (self.config(extra='crl_ca_certfile = "x.crt"\n'),
                 r"http\.crl_ca_certfile: unknown key"),
                (self.config(extra='disconnect_revoked = true\n'),
                 r"http\.disconnect_revoked: unknown key"),
                (self.config(tls=False, extra='console_cert_admins = ["op"]\n'),
                 r"http\.console_cert_admins: needs client certificates on \[http\]"),
                (self.config(extra='console_cert_readers = [""]\n'),
                 r"http\.console_cert_readers: identities are 1 to 1024 bytes"),
                (self.config(extra='console_cert_admins = ["op-admin"]\n'),
                 r'http\.console_cert_admins: identities are typed: cn:<subject CN>, '
                 r'dns:<SAN DNS name> or uri:<SAN URI>, got "op-admin"'),
                (self.config(extra='console_cert_readers = ["cn:"]\n'),
                 r"http\.console_cert_readers: identities are typed"),
                (self.config(extra='console_cert_readers = ["email:a@b"]\n'),
                 r"http\.console_cert_readers: identities are typed"),
                (self.config().replace(TOKEN, "short-token"),
                 r"http\.token: must be at least 32 characters when \[http\] has ssl = true"),
                (self.config().replace('ssl = true\n', 'ssl = true\ntls_min_version = "1.3"\n'),
                 r"http\.tls_min_version: TLS 1\.3 is not available"),
                (self.config().replace(f'keyfile = "{self.key}"',
                                       f'keyfile = "{self.ca.key}"'),
                 r"\[http\]: keyfile .*does not match the certificate")):
            code, out = run_config_check(text, self.tmp)
            self.assertNotEqual(code, 0, text)
            self.assertRegex(out, pattern)

    def test_warning_when_operators_share_the_devices_ca(self):
        devices = (f'[listeners.devices]\nbind = "127.0.0.1:0"\nssl = true\n'
                   f'certfile = "{self.server.cert}"\nkeyfile = "{self.server.key}"\n'
                   f'cafile = "{self.ca.cert}"\nclient_cert = "required"\n'
                   'plugins = ["anonymous"]\n')
        warning = (r"\[http\] cafile .* is also listener devices's cafile: a device certificate "
                   r"that CA signs can log in to the console")
        text = self.config(extra='console_cert_admins = ["cn:op-admin"]\n') + devices
        code, out = run_config_check(text.replace(self.op_ca.cert, self.ca.cert), self.tmp)
        self.assertEqual(code, 0, out)  # a warning, not an error
        self.assertRegex(out, warning)
        code, out = run_config_check(text, self.tmp)  # the operators' own CA: no warning
        self.assertEqual(code, 0, out)
        self.assertNotRegex(out, r"is also listener")

    def test_metrics_health_and_console_over_https(self):
        self.start(extra="request_timeout = 1\n")
        self.b.wait_log(r"\[http\]: TLS ")
        self.b.wait_log(r"http endpoint listening on 127\.0\.0\.1 port \d+, HTTPS ")
        self.assertEqual(self.curl("/healthz"), (200, "ok\n"))
        code, _ = self.curl("/metrics")
        self.assertEqual(code, 401)
        code, body = self.curl("/metrics", "-H", f"Authorization: Bearer {TOKEN}")
        self.assertEqual(code, 200)
        self.assertIn("mqgate_build_info", body)

        # A browser login: the cookie is Secure; CSRF as over plain HTTP.
        status, hdrs, body = https(self.http, "/api/v1/login", "POST",
                                   base.basic("alice", "alice-pw"), cafile=self.ca.cert)
        self.assertEqual(status, 200, body)
        self.assertRegex(hdrs["set-cookie"],
                         r"^__Host-mqgate_console=\w+; Path=/; HttpOnly; SameSite=Strict; Secure; "
                         r"Max-Age=")
        self.assertEqual(hdrs["strict-transport-security"], "max-age=31536000")
        cookie = {"Cookie": hdrs["set-cookie"].split(";")[0]}
        status, _, body = https(self.http, "/api/v1/clients", headers=cookie, cafile=self.ca.cert)
        self.assertEqual((status, body["total"]), (200, 0))
        status, _, _ = https(self.http, "/api/v1/logout", "POST", cookie, cafile=self.ca.cert)
        self.assertEqual(status, 403)  # no X-CSRF-Token

        # openssl s_client verifies the chain; plain HTTP gets no answer, only a close.
        p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{self.http}",
                            "-CAfile", self.ca.cert, "-verify_return_error"],
                           input="", capture_output=True, text=True, timeout=20)
        self.assertIn("Verify return code: 0 (ok)", p.stdout)
        with self.assertRaises((ConnectionError, http.client.RemoteDisconnected)):
            base.request(self.http, "/healthz")
        self.b.wait_log(r"http: 127\.0\.0\.1:\d+: TLS handshake failed")
        # A client that never starts (or finishes) its handshake is closed at request_timeout.
        silent = connect_raw(self.http)
        self.addCleanup(silent.close)
        half = connect_raw(self.http)
        self.addCleanup(half.close)
        half.sendall(bytes.fromhex("160301"))  # the start of a record, no more
        self.assertTrue(closed_by_peer(silent, timeout=10))
        self.assertTrue(closed_by_peer(half, timeout=10))
        self.assertEqual(self.curl("/healthz"), (200, "ok\n"))

    def test_certificate_login(self):
        self.start(extra='console_cert_admins = ["cn:op-admin"]\n'
                         f'console_cert_readers = ["uri:spiffe://{base.DOMAIN}/device/op-reader"]\n')
        ca = self.ca.cert
        admin = (self.op_admin.cert, self.op_admin.key)
        status, hdrs, body = https(self.http, "/api/v1/login", "POST", cafile=ca, cert=admin)
        self.assertEqual((status, body["user"], body["role"]), (200, "certificate cn:op-admin",
                                                                  "admin"), body)
        self.assertIn("; Secure", hdrs["set-cookie"])
        cookie = {"Cookie": hdrs["set-cookie"].split(";")[0]}
        self.b.wait_log(r'console: certificate "cn:op-admin" \(admin\) logged in from 127\.0\.0\.1')
        # The login is a session as a password login's: the cookie, CSRF for changes; each
        # call presents the same certificate.
        status, _, me = https(self.http, "/api/v1/session", headers=cookie, cafile=ca, cert=admin)
        self.assertEqual((status, me["user"], me["role"]),
                         (200, "certificate cn:op-admin", "admin"))
        status, _, _ = https(self.http, "/api/v1/clients/x/disconnect", "POST", cookie, cafile=ca,
                             cert=admin)
        self.assertEqual(status, 403)  # no X-CSRF-Token
        status, _, _ = https(self.http, "/api/v1/clients/x/disconnect", "POST",
                             {**cookie, "X-CSRF-Token": me["csrf"]}, cafile=ca, cert=admin)
        self.assertEqual(status, 404)  # past CSRF and the role: no such client

        # By a SAN URI, read-only: actions refused.
        reader_cert = (self.op_reader.cert, self.op_reader.key)
        status, hdrs, body = https(self.http, "/api/v1/login", "POST", cafile=ca, cert=reader_cert)
        self.assertEqual((status, body["role"]), (200, "read-only"), body)
        reader = {"Cookie": hdrs["set-cookie"].split(";")[0], "X-CSRF-Token": body["csrf"]}
        status, _, body = https(self.http, "/api/v1/clients/x/disconnect", "POST", reader,
                                cafile=ca, cert=reader_cert)
        self.assertEqual(status, 403, body)

        # The login's cookie with another certificate (the same CN, another key), or none:
        # the login ends.
        status, _, body = https(self.http, "/api/v1/session", headers=reader, cafile=ca,
                                cert=admin)
        self.assertEqual((status, body["error"]), (401, "the login has ended: log in again"))
        status, _, _ = https(self.http, "/api/v1/session", headers=reader, cafile=ca,
                             cert=reader_cert)
        self.assertEqual(status, 401)  # ended for good
        status, _, _ = https(self.http, "/api/v1/session", headers=cookie, cafile=ca,
                             cert=(self.op_admin2.cert, self.op_admin2.key))
        self.assertEqual(status, 401)
        self.b.wait_log(r'console: certificate "cn:op-admin" from 127\.0\.0\.1:\d+: the call does '
                        r'not present the login\'s certificate: the login ends')
        status, hdrs, _ = https(self.http, "/api/v1/login", "POST", cafile=ca, cert=admin)
        cookie = {"Cookie": hdrs["set-cookie"].split(";")[0]}
        status, _, _ = https(self.http, "/api/v1/session", headers=cookie, cafile=ca)
        self.assertEqual(status, 401)

        # A certificate the operators' CA signed but no list names: 403, logged.
        status, _, body = https(self.http, "/api/v1/login", "POST", cafile=ca,
                                cert=(self.stranger.cert, self.stranger.key))
        self.assertEqual((status, body["error"]), (403, "this certificate is not a console user"))
        self.b.wait_log(r"console: certificate login from 127\.0\.0\.1:\d+ refused: "
                        r"\".*CN=stranger\" is not in console_cert_admins")
        # A device of the devices' CA with the CN op-admin: refused in the handshake.
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            https(self.http, "/api/v1/login", "POST", cafile=ca,
                  cert=(self.impostor.cert, self.impostor.key))
        self.b.wait_log(r"http: 127\.0\.0\.1:\d+: TLS handshake failed: .* rejected")
        # curl --cert works the same; the password login stays.
        code, body = self.curl("/api/v1/login", "-X", "POST", "--cert", self.op_admin.cert,
                               "--key", self.op_admin.key)
        self.assertEqual((code, json.loads(body)["role"]), (200, "admin"))
        status, _, body = https(self.http, "/api/v1/login", "POST",
                                base.basic("alice", "alice-pw"), cafile=ca, cert=admin)
        self.assertEqual((status, body["user"]), (200, "user alice"))  # Basic wins

    def test_certificate_login_ends_when_revoked_or_unlisted(self):
        ops = os.path.dirname(self.op_ca.cert)
        crl = pki.revoke(ops, self.stranger.cert, crl=os.path.join(self.tmp, "operators.crl"))
        lists = ('console_cert_admins = ["cn:op-admin"]\n'
                 f'console_cert_readers = ["uri:spiffe://{base.DOMAIN}/device/op-reader"]\n')
        self.start(extra=lists + f'crlfile = "{crl}"\n')
        ca = self.ca.cert
        admin = (self.op_admin.cert, self.op_admin.key)
        reader = (self.op_reader.cert, self.op_reader.key)
        logins = {}
        for name, cert in (("admin", admin), ("reader", reader)):
            status, hdrs, body = https(self.http, "/api/v1/login", "POST", cafile=ca, cert=cert)
            self.assertEqual(status, 200, body)
            logins[name] = {"Cookie": hdrs["set-cookie"].split(";")[0]}
        # The reader's identity leaves the lists on SIGHUP: its login ends.
        with open(self.b.config_path) as f:
            text = f.read()
        with open(self.b.config_path, "w") as f:
            f.write(text.replace(f'console_cert_readers = ["uri:spiffe://{base.DOMAIN}/device/'
                                 'op-reader"]\n', ""))
        self.b.signal(signal.SIGHUP)
        self.b.wait_log(r"console: reloaded")
        status, _, body = https(self.http, "/api/v1/session", headers=logins["reader"],
                                cafile=ca, cert=reader)
        self.assertEqual((status, body["error"]), (401, "the login has ended: log in again"))
        # The admin's certificate is revoked in [http]'s CRL: refused in the handshake, and
        # the cookie alone ends the login.
        self.b.wait_log(r"reload: \[http\]: TLS ")  # the first SIGHUP's
        pki.revoke(ops, self.op_admin.cert, crl=crl)
        self.b.signal(signal.SIGHUP)
        self.b.wait_log(r"reload: \[http\]: TLS ", count=2)
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            https(self.http, "/api/v1/session", headers=logins["admin"], cafile=ca, cert=admin)
        self.b.wait_log(r"http: 127\.0\.0\.1:\d+: TLS handshake failed: .*revoked")
        status, _, _ = https(self.http, "/api/v1/session", headers=logins["admin"], cafile=ca)
        self.assertEqual(status, 401)

    def test_failed_logins_back_off(self):
        self.start()
        ca = self.ca.cert
        wrong = base.basic("alice", "wrong")
        for _ in range(5):
            status, _, _ = https(self.http, "/api/v1/login", "POST", wrong, cafile=ca)
            self.assertEqual(status, 401)
        status, hdrs, body = https(self.http, "/api/v1/login", "POST",
                                   base.basic("alice", "alice-pw"), cafile=ca)
        self.assertEqual(status, 429, body)  # even the right password waits
        wait = int(hdrs["retry-after"])
        self.assertGreaterEqual(wait, 1)
        self.b.wait_log(r"console: 5 failed logins from 127\.0\.0\.1: its next tries wait "
                        r"\(429\)")
        # Certificates count too: an unknown one is a failure.
        time.sleep(wait)
        status, _, _ = https(self.http, "/api/v1/login", "POST", cafile=ca,
                             cert=(self.stranger.cert, self.stranger.key))
        self.assertEqual(status, 403)
        status, hdrs, _ = https(self.http, "/api/v1/login", "POST", wrong, cafile=ca)
        self.assertEqual(status, 429)
        self.assertGreaterEqual(int(hdrs["retry-after"]), 2)  # doubled
        time.sleep(int(hdrs["retry-after"]))
        status, _, _ = https(self.http, "/api/v1/login", "POST",
                             base.basic("alice", "alice-pw"), cafile=ca)
        self.assertEqual(status, 200)  # alice's own failures are forgiven, not the certificate's
        # A reader who guesses alice's password and logs in as himself in between does not
        # clear those guesses: 1 (certificate) + 4 guesses make 5.
        bob = base.basic("bob", "bob-pw")
        for i in range(4):
            status, _, _ = https(self.http, "/api/v1/login", "POST", wrong, cafile=ca)
            self.assertEqual(status, 401)
            status, _, _ = https(self.http, "/api/v1/login", "POST", bob, cafile=ca)
            self.assertEqual(status, 429 if i == 3 else 200)
        self.assertEqual(len(re.findall(r"failed logins from", self.b.log())), 2)

    def test_sighup_reloads_the_certificate(self):
        self.start()
        served = lambda: subprocess.run(  # noqa: E731
            ["openssl", "s_client", "-connect", f"127.0.0.1:{self.http}", "-showcerts"],
            input="", capture_output=True, text=True, timeout=20).stdout
        first = pki.serial_of(self.server.cert)
        second = pki.serial_of(self.server2.cert)
        self.assertNotEqual(first, second)
        before = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=served(),
                                capture_output=True, text=True).stdout

        def served_serial():
            out = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=served(),
                                 capture_output=True, text=True).stdout
            return out.strip().split("=")[-1].upper()

        self.assertIn(first.upper(), before.upper())
        shutil.copy(self.server2.cert, self.cert)
        shutil.copy(self.server2.key, self.key)
        self.b.signal(signal.SIGHUP)
        self.b.wait_log(r"reload: \[http\]: TLS ")
        after = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=served(),
                               capture_output=True, text=True).stdout
        self.assertIn(second.upper(), after.upper())
        self.assertEqual(self.curl("/healthz"), (200, "ok\n"))
        # A broken file on reload keeps the previous material.
        with open(self.key, "w") as f:
            f.write("not a key\n")
        self.b.signal(signal.SIGHUP)
        self.b.wait_log(r"reload: \[http\]: keyfile .*; keeping the previous TLS material")
        self.assertEqual(self.curl("/healthz"), (200, "ok\n"))
        # SIGHUPs in a row: one load at a time, the latest files win.
        shutil.copy(self.server.cert, self.cert)
        shutil.copy(self.server.key, self.key)
        self.b.signal(signal.SIGHUP)
        self.b.wait_log(r"reload: \[http\]: TLS ", count=2)
        self.assertEqual(served_serial(), first.upper())
        shutil.copy(self.server2.cert, self.cert)
        shutil.copy(self.server2.key, self.key)
        self.b.signal(signal.SIGHUP)
        self.b.wait_log(r"SIGHUP received", count=4)
        shutil.copy(self.server3.cert, self.cert)
        shutil.copy(self.server3.key, self.key)
        self.b.signal(signal.SIGHUP)
        third = pki.serial_of(self.server3.cert).upper()
        for _ in range(200):
            if served_serial() == third:
                break
            time.sleep(0.05)
        self.assertEqual(served_serial(), third, self.b.log())

    def test_page_in_chromium_over_https(self):
        """Over https; a read-only user sees the actions disabled, and the server refuses
        them anyway."""
        self.start()
        c = base.r.RawClient(self.b.port("plain"))
        self.addCleanup(c.close)
        c.send(base.r.connect("sensor-1", clean=False))
        c.expect(base.r.CONNACK)
        browser = Browser(extra_args=["--ignore-certificate-errors"])
        self.addCleanup(browser.close)
        os.makedirs(base.SCREENSHOTS, exist_ok=True)
        browser.navigate(f"https://localhost:{self.http}/console/")
        browser.wait_for("!document.getElementById('view-login').hidden")
        self.assertFalse(browser.evaluate("document.getElementById('login-cert-box').hidden"))
        browser.evaluate("document.getElementById('login-user').value = 'bob';"
                         "document.getElementById('login-password').value = 'bob-pw';"
                         "document.querySelector('#login-form button').click()")
        browser.wait_for("!document.getElementById('view-devices').hidden")
        self.assertEqual(browser.evaluate("location.protocol"), "https:")
        self.b.wait_log(r'console: user "bob" \(read-only\) logged in from 127\.0\.0\.1')
        browser.wait_for("document.querySelectorAll('#devices tbody a').length === 1")
        browser.screenshot(os.path.join(base.SCREENSHOTS, "tls-1-devices.png"))
        browser.evaluate("document.querySelector('#devices tbody a').click()")
        browser.wait_for("document.getElementById('device-id').textContent === 'sensor-1' && "
                         "document.querySelectorAll('#device-session dt').length > 0 && "
                         "document.getElementById('act-revoke').title !== ''")
        buttons = browser.evaluate(
            "['act-disconnect', 'act-revoke', 'act-delete'].map(id => "
            "[document.getElementById(id).disabled, document.getElementById(id).title])")
        self.assertEqual(buttons, [[True, "read-only login: actions need an admin"]] * 3)
        browser.screenshot(os.path.join(base.SCREENSHOTS, "tls-2-read-only-device.png"))
        # The page's own credentials, forced past the disabled button: refused.
        status = browser.evaluate(
            "fetch('/api/v1/session').then(r => r.json()).then(me => "
            "fetch('/api/v1/clients/sensor-1/disconnect', {method: 'POST', "
            "headers: {'X-CSRF-Token': me.csrf}})).then(r => r.status)")
        self.assertEqual(status, 403)
        self.b.wait_log(r'console: user bob \(read-only\) from .*: disconnect "sensor-1": '
                        r'refused: read-only')


if __name__ == "__main__":
    unittest.main()
