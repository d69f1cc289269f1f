"""The fleet console's JSON API (issue 25, docs/console.md) with real HTTP clients
(http.client) and real MQTT clients (mosquitto_pub/sub over TLS with device certificates,
raw MQTT for hostile client ids): authentication (bearer token, password-file logins with
a session cookie), roles, CSRF, the device list and details, disconnect, delete an offline
session, and revocation end to end (the CRL is signed anew, the device is cut off and
cannot come back; the others stay).

mqgate-only (Mosquitto has no console). Deterministic: every check follows the event it
depends on (an acknowledged packet, an HTTP answer, a log line)."""
import base64
import http.client
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.parse

import mqtt_raw as r
import pki
from cdp import Browser
from mqgate_test import BUILD_DIR, BrokerTestCase, pki_tool, run_config_check

DOMAIN = "console.example"
TOKEN = "s3cret-t0ken-0123456789abcdef0123456789"  # 32+: the HTTPS tests need that
LOGIN_FREE_FAILURES = 5  # LoginThrottle::kFreeFailures
HTTP_LISTENING = re.compile(r"http endpoint listening on (\S+) port (\d+)")
HOSTILE_ID = '<img src=x onerror=alert(1)>"\\\x01\x1f\x7f'
# The page must show it as text: if it ever ran as HTML, the title would change.
HTML_ID = "<img src=x onerror=\"document.title='pwned'\">"
SCREENSHOTS = os.path.join(BUILD_DIR, "test-output", "console")


def request(port, path, method="GET", headers=None):
    """(status, headers dict (lower-case names), parsed JSON or raw bytes, raw bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        c.request(method, path, headers=headers or {})
        resp = c.getresponse()
        body = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        parsed = body
        if hdrs.get("content-type", "").startswith("application/json"):
            parsed = json.loads(body)
        return resp.status, hdrs, parsed, body
    finally:
        c.close()


def bearer(token=TOKEN):
    return {"Authorization": "Bearer " + token}


def basic(user, password):
    return {"Authorization": "Basic " +
            base64.b64encode(f"{user}:{password}".encode()).decode()}


def quoted(client_id):
    return urllib.parse.quote(client_id, safe="")


def make_pki(prefix, **server):
    """A temporary directory with an EC CA and a server certificate for localhost (more
    make_server arguments in `server`): (directory, ca, server)."""
    d = tempfile.mkdtemp(prefix=prefix)
    return d, pki.make_ca(d, key_type="ec"), pki.make_server(d, cn="localhost", key_type="ec",
                                                             **server)


def write_passwd(d):
    """<d>/console.passwd with alice (alice-pw) and bob (bob-pw); returns its path."""
    path = os.path.join(d, "console.passwd")
    for user, password, first in (("alice", "alice-pw", True), ("bob", "bob-pw", False)):
        subprocess.run([pki_tool("mqgate_passwd"), *(["-c"] if first else []), "-b", path,
                        user, password], check=True, capture_output=True)
    return path


def mosquitto_pub(port, creds, client_id, ca):
    return subprocess.run(
        ["mosquitto_pub", "-h", "localhost", "-p", str(port), "--cafile", ca, "-i", client_id,
         "-t", f"devices/{client_id}/x", "-m", "1", "-q", "1", "--cert", creds.cert, "--key",
         creds.key], capture_output=True, text=True, timeout=20)


class ConsoleTest(BrokerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki_dir, cls.ca, cls.server = make_pki("mqgate-console-")
        d = cls.pki_dir
        cls.dev1 = pki.make_device(d, "dev1", DOMAIN, key_type="ec")
        cls.dev2 = pki.make_device(d, "dev2", DOMAIN, key_type="ec")
        cls.crl = pki.revoke(d, refresh=True)
        cls.passwd = write_passwd(d)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki_dir, ignore_errors=True)

    def config(self, http_extra=None):
        crl = os.path.join(self.tmp, "ca.crl")
        shutil.copy(self.crl, crl)
        self.crl_copy = crl
        if http_extra is None:
            http_extra = (f'console = true\ntoken = "{TOKEN}"\nconsole_users = "{self.passwd}"\n'
                          'console_admins = ["alice"]\n')
        return ('log_level = "debug"\nsys_interval = 0\n'
                '[listeners.plain]\nbind = "127.0.0.1:0"\nplugins = ["anonymous"]\n'
                f'[listeners.tls]\nbind = "127.0.0.1:0"\nssl = true\n'
                f'certfile = "{self.server.cert}"\nkeyfile = "{self.server.key}"\n'
                f'cafile = "{self.ca.cert}"\nclient_cert = "required"\ncrlfile = "{crl}"\n'
                f'crl_ca_certfile = "{self.ca.cert}"\ncrl_ca_keyfile = "{self.ca.key}"\n'
                'plugins = ["certauth"]\n'
                '[plugins.anonymous]\nallow_anonymous = true\n'
                f'[plugins.certauth]\nuri_domain = "{DOMAIN}"\n'
                f'[http]\nbind = "127.0.0.1:0"\n{http_extra}\n')

    def start(self, http_extra=None):
        b = self.start_broker(self.config(http_extra))
        m = None
        for _ in range(500):
            m = HTTP_LISTENING.search(b.log())
            if m:
                break
            time.sleep(0.02)
        self.assertIsNotNone(m, b.log())
        self.http = int(m.group(2))
        self.b = b
        return b

    def login(self, user, password):
        status, hdrs, body, _ = request(self.http, "/api/v1/login", "POST", basic(user, password))
        self.assertEqual(status, 200, body)
        cookie = hdrs["set-cookie"]
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=Strict", cookie)
        return {"Cookie": cookie.split(";")[0]}, body["csrf"]

    def device_sub(self, creds, client_id):
        """mosquitto_sub with a persistent session, connected once the broker logs it."""
        p = subprocess.Popen(
            ["mosquitto_sub", "-h", "localhost", "-p", str(self.b.port("tls")), "--cafile",
             self.ca.cert, "--cert", creds.cert, "--key", creds.key, "-i", client_id, "-c",
             "-q", "1", "-t", f"devices/{client_id}/#"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (p.kill(), p.wait()))
        self.b.wait_log(rf'client="{client_id}" .*subscribed to', timeout=20)
        return p

    def raw_client(self, client_id, clean=True, subscribe=None):
        c = r.RawClient(self.b.port("plain"))
        self.addCleanup(c.close)
        c.send(r.connect(client_id, clean=clean))
        c.expect(r.CONNACK)
        if subscribe:
            c.send(r.subscribe(1, [(subscribe, 1)]))
            c.expect(r.SUBACK)
        return c

    # --- off, and configuration ------------------------------------------------------

    def test_off_unless_configured(self):
        self.start(http_extra="")
        status, _, _, _ = request(self.http, "/api/v1/clients", headers=bearer())
        self.assertEqual(status, 404)

    def test_configuration_errors(self):
        for http_extra, pattern in (
                ("console = true\n", r"console: needs token"),
                (f'console = true\ntoken = "{TOKEN}"\nconsole_admins = ["a"]\n',
                 r"console_admins: needs console_users"),
                ('console_users = "x"\n', r"console_users: needs console = true")):
            code, out = run_config_check(self.config(http_extra), self.tmp)
            self.assertNotEqual(code, 0)
            self.assertRegex(out, pattern)
        text = self.config(f'console = true\ntoken = "{TOKEN}"\n').replace(
            '[http]\nbind = "127.0.0.1:0"', '[http]\nbind = "0.0.0.0:0"')
        code, out = run_config_check(text, self.tmp)
        self.assertNotEqual(code, 0)
        self.assertRegex(out, r"console: is served over plain HTTP on loopback binds only")

    # --- authentication ----------------------------------------------------------------

    def test_every_call_needs_credentials(self):
        self.start()
        calls = (("GET", "/api/v1/clients"), ("GET", "/api/v1/clients/x"),
                 ("GET", "/api/v1/broker"), ("GET", "/api/v1/session"),
                 ("POST", "/api/v1/clients/x/disconnect"), ("POST", "/api/v1/clients/x/revoke"),
                 ("DELETE", "/api/v1/sessions/x"), ("POST", "/api/v1/logout"))
        for i, (method, path) in enumerate(calls):
            status, _, body, _ = request(self.http, path, method)
            self.assertEqual(status, 401, (method, path, body))
            status, _, body, _ = request(self.http, path, method,
                                         {"Cookie": "mqgate_console=" + "0" * 64})
            self.assertEqual(status, 401, (method, path, body))
            if i % 2:  # a wrong token counts as a failed login: at most 4 here
                status, _, body, _ = request(self.http, path, method, bearer("wrong"))
                self.assertEqual(status, 401, (method, path, body))
        status, _, body, _ = request(self.http, "/api/v1/clients", headers=bearer())
        self.assertEqual(status, 200, body)

    def test_wrong_tokens_are_throttled_and_logged_once(self):
        self.start()
        for i in range(LOGIN_FREE_FAILURES):
            status, _, body, _ = request(self.http, "/api/v1/clients", headers=bearer(f"guess{i}"))
            self.assertEqual(status, 401, body)
        # The 5th made the address wait: the right token too, and a password login.
        status, hdrs, body, _ = request(self.http, "/api/v1/clients", headers=bearer())
        self.assertEqual(status, 429, body)
        self.assertGreaterEqual(int(hdrs["retry-after"]), 1)
        status, _, _, _ = request(self.http, "/api/v1/login", "POST", basic("alice", "alice-pw"))
        self.assertEqual(status, 429)
        self.b.wait_log(r"console: 5 failed logins from 127\.0\.0\.1: its next tries wait")
        log = self.b.log()
        self.assertEqual(len(re.findall(r"console: bad credentials \(Authorization\) from "
                                        r"127\.0\.0\.1:\d+: counted", log)), 1)
        self.assertNotIn("guess", log)
        self.assertNotIn(TOKEN, log)

    def test_short_token_refused_when_exposed(self):
        # Over HTTPS or beyond loopback a token is an admin's key on a network: 32+.
        text = self.config('token = "short-token"\n').replace(
            '[http]\nbind = "127.0.0.1:0"', '[http]\nbind = "0.0.0.0:0"')
        code, out = run_config_check(text, self.tmp)
        self.assertNotEqual(code, 0)
        self.assertRegex(out, r"http\.token: must be at least 32 characters when \[http\] has "
                              r"ssl = true or binds beyond loopback")
        self.assertNotIn("short-token", out)
        code, out = run_config_check(self.config('token = "short-token"\n'), self.tmp)
        self.assertEqual(code, 0, out)  # loopback, plain HTTP: as before

    def test_login_logout_and_roles(self):
        self.start()
        status, _, body, _ = request(self.http, "/api/v1/login", "POST", basic("alice", "nope"))
        self.assertEqual(status, 401)
        status, _, body, _ = request(self.http, "/api/v1/login", "POST", basic("eve", "x"))
        self.assertEqual(status, 401)
        self.b.wait_log(r"console: login of user \"eve\" from 127\.0\.0\.1:\d+ refused")
        self.assertNotIn("alice-pw", self.b.log())
        status, _, _, _ = request(self.http, "/api/v1/login", "GET", basic("alice", "alice-pw"))
        self.assertEqual(status, 405)

        cookie, csrf = self.login("bob", "bob-pw")
        status, _, body, _ = request(self.http, "/api/v1/session", headers=cookie)
        self.assertEqual((status, body["role"], body["csrf"]), (200, "read-only", csrf))
        self.raw_client("victim")
        status, _, body, _ = request(self.http, "/api/v1/clients/victim/disconnect", "POST",
                                     {**cookie, "X-CSRF-Token": csrf})
        self.assertEqual(status, 403, body)
        self.b.wait_log(r"console: user bob \(read-only\) from .*: disconnect \"victim\": "
                        r"refused: read-only")

        admin, admin_csrf = self.login("alice", "alice-pw")
        status, _, body, _ = request(self.http, "/api/v1/session", headers=admin)
        self.assertEqual(body["role"], "admin")
        # Without the CSRF header, or with another login's: refused, nothing done.
        for extra in ({}, {"X-CSRF-Token": csrf}, {"X-CSRF-Token": ""}):
            status, _, body, _ = request(self.http, "/api/v1/clients/victim/disconnect", "POST",
                                         {**admin, **extra})
            self.assertEqual(status, 403, body)
        status, _, body, _ = request(self.http, "/api/v1/clients/victim", headers=admin)
        self.assertEqual((status, body["connected"]), (200, True))

        status, hdrs, body, _ = request(self.http, "/api/v1/logout", "POST",
                                        {**admin, "X-CSRF-Token": admin_csrf})
        self.assertEqual(status, 200, body)
        self.assertIn("Max-Age=0", hdrs["set-cookie"])
        status, _, _, _ = request(self.http, "/api/v1/session", headers=admin)
        self.assertEqual(status, 401)

    # --- the device list ------------------------------------------------------------

    def test_list_search_sort_pages_and_hostile_ids(self):
        self.start()
        self.device_sub(self.dev1, "dev1")
        hostile = self.raw_client(HOSTILE_ID)
        self.addCleanup(hostile.close)
        for i in range(12):
            self.raw_client(f"sensor-{i:02d}", clean=False, subscribe=f"s/{i}/#")
        # An offline persistent session with a queued message.
        off = self.raw_client("offline-1", clean=False, subscribe="q/#")
        off.send(r.disconnect())
        self.b.wait_log(r'client="offline-1" .*(disconnect|closed)')
        pub = self.raw_client("pub")
        pub.send(r.publish("q/1", b"hello", qos=1, packet_id=1))
        pub.expect(r.PUBACK)

        status, _, body, raw = request(self.http, "/api/v1/clients?limit=500", headers=bearer())
        self.assertEqual(status, 200)
        ids = [c["client_id"] for c in body["clients"]]
        self.assertIn(HOSTILE_ID, ids)  # JSON carries it exactly...
        self.assertNotIn(b"<img", raw)  # ...with nothing active in the raw text
        self.assertNotIn(b"\x01", raw)
        self.assertEqual(body["total"], len(ids))
        dev1 = next(c for c in body["clients"] if c["client_id"] == "dev1")
        self.assertEqual(dev1["listener"], "tls")
        self.assertTrue(dev1["connected"])
        self.assertEqual(dev1["subscriptions"], 1)
        self.assertIn("dev1", dev1["certificate"]["subject"])
        self.assertIn("mqgate test CA", dev1["certificate"]["issuer"])
        self.assertRegex(dev1["certificate"]["serial"], r"^[0-9A-F]{2}(:[0-9A-F]{2})+$")
        self.assertGreater(dev1["certificate"]["days_left"], 30)
        self.assertTrue(dev1["identity"].startswith("certauth:"), dev1)
        offline = next(c for c in body["clients"] if c["client_id"] == "offline-1")
        self.assertEqual((offline["connected"], offline["queued"]), (False, 1))
        self.assertIn("last_seen", offline)

        # Search (case-insensitive, id or identity), state, sort, pages.
        _, _, body, _ = request(self.http, "/api/v1/clients?search=SENSOR-0", headers=bearer())
        self.assertEqual(body["total"], 10)
        _, _, body, _ = request(self.http, "/api/v1/clients?search=certauth", headers=bearer())
        self.assertEqual([c["client_id"] for c in body["clients"]], ["dev1"])
        _, _, body, _ = request(self.http, "/api/v1/clients?state=offline", headers=bearer())
        self.assertEqual([c["client_id"] for c in body["clients"]], ["offline-1"])
        pages = []
        for offset in (0, 5, 10):
            _, _, body, _ = request(self.http, f"/api/v1/clients?search=sensor&sort=client_id"
                                    f"&order=desc&offset={offset}&limit=5", headers=bearer())
            self.assertEqual(body["total"], 12)
            pages += [c["client_id"] for c in body["clients"]]
        self.assertEqual(pages, [f"sensor-{i:02d}" for i in range(11, -1, -1)])
        _, _, body, _ = request(self.http, "/api/v1/clients?sort=queued&order=desc&limit=1",
                                headers=bearer())
        self.assertEqual(body["clients"][0]["client_id"], "offline-1")
        _, _, body, _ = request(self.http, "/api/v1/clients?offset=10000000", headers=bearer())
        self.assertEqual(body["clients"], [])

        # Hostile parameters: a clear 400 with a JSON error, never a huge answer.
        for query in ("limit=501", "limit=-1", "limit=0", "limit=99999999999999999999999",
                      "limit=abc", "offset=-5", "offset=10000001", "sort=password",
                      "order=up", "state=x", "nope=1", "search=%zz", "search=" + "a" * 1025):
            status, _, body, _ = request(self.http, "/api/v1/clients?" + query, headers=bearer())
            self.assertEqual(status, 400, query)
            self.assertIn("error", body)

        # The details: subscriptions, session, the chain in PEM; odd ids in the path.
        status, _, body, raw = request(self.http, "/api/v1/clients/" + quoted(HOSTILE_ID),
                                       headers=bearer())
        self.assertEqual((status, body["client_id"]), (200, HOSTILE_ID))
        self.assertNotIn(b"<img", raw)
        status, _, body, _ = request(self.http, "/api/v1/clients/dev1", headers=bearer())
        self.assertEqual(status, 200)
        self.assertEqual(body["subscription_list"], [{"filter": "devices/dev1/#", "qos": 1}])
        self.assertEqual(len(body["chain"]), 2)  # the verified chain: the device, its CA
        self.assertIn("BEGIN CERTIFICATE", body["chain"][0]["pem"])
        self.assertIn("mqgate test CA", body["chain"][1]["subject"])
        with open(self.dev1.cert) as f:
            self.assertEqual(body["chain"][0]["pem"].split(), f.read().split())
        status, _, body, _ = request(self.http, "/api/v1/clients/nobody", headers=bearer())
        self.assertEqual(status, 404)
        status, _, body, _ = request(self.http, "/api/v1/clients/%zz", headers=bearer())
        self.assertEqual(status, 400)

    # --- actions -------------------------------------------------------------------

    def test_disconnect_and_delete_session(self):
        self.start()
        c = self.raw_client("keeper", clean=False, subscribe="k/#")
        status, _, body, _ = request(self.http, "/api/v1/sessions/keeper", "DELETE", bearer())
        self.assertEqual(status, 409, body)  # connected: disconnect it first
        status, _, body, _ = request(self.http, "/api/v1/clients/keeper/disconnect", "POST",
                                     bearer())
        self.assertEqual(status, 200, body)
        self.assertTrue(c.closed_by_peer())
        self.b.wait_log(r"console: token \(admin\) from 127\.0\.0\.1:\d+: disconnect "
                        r"\"keeper\": disconnected")
        status, _, body, _ = request(self.http, "/api/v1/clients/keeper", headers=bearer())
        self.assertEqual((status, body["connected"]), (200, False))
        status, _, body, _ = request(self.http, "/api/v1/clients/keeper/disconnect", "POST",
                                     bearer())
        self.assertEqual(status, 404, body)

        admin, csrf = self.login("alice", "alice-pw")
        status, _, body, _ = request(self.http, "/api/v1/sessions/keeper", "DELETE",
                                     {**admin, "X-CSRF-Token": csrf})
        self.assertEqual((status, body), (200, {"deleted": "keeper"}))
        self.b.wait_log(r"session of client \"keeper\" deleted by \"user alice\"")
        status, _, _, _ = request(self.http, "/api/v1/clients/keeper", headers=bearer())
        self.assertEqual(status, 404)
        status, _, _, _ = request(self.http, "/api/v1/sessions/keeper", "DELETE", bearer())
        self.assertEqual(status, 404)
        # The session is really gone: a new connection finds none.
        c2 = r.RawClient(self.b.port("plain"))
        self.addCleanup(c2.close)
        c2.send(r.connect("keeper", clean=False))
        self.assertEqual(c2.expect(r.CONNACK).body[0] & 1, 0)  # session present = 0

    def test_revoke_end_to_end(self):
        self.start()
        sub1 = self.device_sub(self.dev1, "dev1")
        sub2 = self.device_sub(self.dev2, "dev2")
        bob, bob_csrf = self.login("bob", "bob-pw")
        status, _, body, _ = request(self.http, "/api/v1/clients/dev2/revoke", "POST",
                                     {**bob, "X-CSRF-Token": bob_csrf})
        self.assertEqual(status, 403, body)
        status, _, body, _ = request(self.http, "/api/v1/clients/pub/revoke", "POST", bearer())
        self.assertEqual(status, 409, body)  # no such connected device with a certificate

        admin, csrf = self.login("alice", "alice-pw")
        status, _, body, _ = request(self.http, "/api/v1/clients/dev2/revoke", "POST",
                                     {**admin, "X-CSRF-Token": csrf})
        self.assertEqual(status, 200, body)
        serial = pki.serial_of(self.dev2.cert)
        self.assertEqual(body["serial"].replace(":", "").lstrip("0"), serial.lstrip("0"))
        self.assertEqual((body["already_revoked"], body["crl_written"], body["crl_entries"],
                          body["listener"], body["listener_reloaded"], body["disconnected"]),
                         (False, True, 1, "tls", True, 1))
        sub2.wait(timeout=20)  # cut off (mosquitto_sub then tries again, refused, and exits)
        self.b.wait_log(r"console: user alice \(admin\) from .*: revoke \"dev2\": serial .* "
                        r"listener reloaded yes, 1 connection\(s\) closed")
        self.assertIn(serial.upper().lstrip("0"),
                      pki.crl_text(self.crl_copy).replace(":", "").upper())

        # dev2 cannot come back; dev1 is untouched: still connected, still receiving.
        p = mosquitto_pub(self.b.port("tls"), self.dev2, "dev2", self.ca.cert)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.b.wait_log(r"CN=dev2\) rejected: The certificate has been revoked")
        self.assertIsNone(sub1.poll())
        pub = self.raw_client("pub")
        pub.send(r.publish("devices/dev1/cmd", b"still-here", qos=1, packet_id=1))
        pub.expect(r.PUBACK)
        ready, _, _ = select.select([sub1.stdout], [], [], 20)
        self.assertTrue(ready)
        self.assertEqual(sub1.stdout.readline().strip(), "still-here")
        _, _, body, _ = request(self.http, "/api/v1/clients/dev1", headers=bearer())
        self.assertTrue(body["connected"])

        # The broker page shows the CRL's new state.
        status, _, body, _ = request(self.http, "/api/v1/broker", headers=bearer())
        tls = next(listener for listener in body["listeners"] if listener["name"] == "tls")
        self.assertEqual(tls["crl"]["entries"], 1)
        self.assertTrue(tls["crl"]["console_can_sign"])

    def test_revoke_offline_device_after_restart(self):
        # The certificate is kept with the persistent session (and in the store): shown
        # while the device is offline, after a restart too, and revocable.
        persistence = f'[persistence]\npath = "{os.path.join(self.tmp, "store.db")}"\n'
        self.start_broker = (lambda start=self.start_broker:  # noqa: E731
                             lambda text: start(text + persistence))()
        self.start()
        sub = self.device_sub(self.dev2, "dev2")
        sub.kill()
        sub.wait()
        self.b.wait_log(r'client="dev2" .*(closed|disconnect)')
        status, _, body, _ = request(self.http, "/api/v1/clients/dev2", headers=bearer())
        self.assertEqual((status, body["connected"]), (200, False), body)
        self.assertIn("CN=dev2", body["certificate"]["subject"])
        self.b.stop()
        self._brokers.remove(self.b)

        self.start()
        self.b.wait_log(r"restored 1 persistent session")
        status, _, body, _ = request(self.http, "/api/v1/clients?state=offline", headers=bearer())
        row = body["clients"][0]
        self.assertEqual((row["client_id"], row["connected"], row["certificate_listener"]),
                         ("dev2", False, "tls"))
        self.assertIn("CN=dev2", row["certificate"]["subject"])
        status, _, body, _ = request(self.http, "/api/v1/clients/dev2", headers=bearer())
        self.assertEqual(len(body["chain"]), 2)
        with open(self.dev2.cert) as f:
            self.assertEqual(body["chain"][0]["pem"].split(), f.read().split())

        # Revoked while offline: the CRL lists it and the device cannot come back.
        admin, csrf = self.login("alice", "alice-pw")
        status, _, body, _ = request(self.http, "/api/v1/clients/dev2/revoke", "POST",
                                     {**admin, "X-CSRF-Token": csrf})
        self.assertEqual(status, 200, body)
        self.assertEqual((body["crl_written"], body["listener"], body["listener_reloaded"],
                          body["disconnected"]), (True, "tls", True, 0))
        serial = pki.serial_of(self.dev2.cert)
        self.assertIn(serial.upper().lstrip("0"),
                      pki.crl_text(self.crl_copy).replace(":", "").upper())
        p = mosquitto_pub(self.b.port("tls"), self.dev2, "dev2", self.ca.cert)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.b.wait_log(r"CN=dev2\) rejected: The certificate has been revoked")
        # A session without a certificate still has nothing to revoke.
        off = self.raw_client("plain-off", clean=False)
        off.send(r.disconnect())
        self.b.wait_log(r'client="plain-off" .*(disconnect|closed)')
        status, _, body, _ = request(self.http, "/api/v1/clients/plain-off/revoke", "POST",
                                     bearer())
        self.assertEqual(status, 409, body)

    def test_broker_page(self):
        self.start()
        self.raw_client("one")
        status, hdrs, body, _ = request(self.http, "/api/v1/broker", headers=bearer())
        self.assertEqual(status, 200)
        self.assertEqual(hdrs["cache-control"], "no-store")
        self.assertEqual(body["counters"]["clients_connected"], 1)
        names = [listener["name"] for listener in body["listeners"]]
        self.assertEqual(names, ["plain", "tls"])
        plain, tls = body["listeners"]
        self.assertEqual(plain["plugins"], ["anonymous"])
        self.assertEqual(tls["plugins"], ["certauth"])
        self.assertEqual(tls["client_cert"], "required")
        self.assertIn("CN=localhost", tls["certificates"][0]["subject"])
        self.assertRegex(tls["crl"]["next_update"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(tls["crl"]["entries"], 0)
        self.assertIsNone(body["cluster"])  # no [cluster] here (test_cluster has one)

    def test_page_files(self):
        self.start()
        status, hdrs, _, _ = request(self.http, "/console")
        self.assertEqual((status, hdrs["location"]), (301, "/console/"))
        status, hdrs, _, body = request(self.http, "/console/")
        self.assertEqual((status, hdrs["content-type"]), (200, "text/html; charset=utf-8"))
        self.assertIn(b"<title>mqgate console</title>", body)
        self.assertIn("default-src 'self'", hdrs["content-security-policy"])
        self.assertEqual(hdrs["x-frame-options"], "DENY")
        for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
            status, hdrs, _, body = request(self.http, "/console/" + name)
            self.assertEqual(status, 200)
            self.assertTrue(hdrs["content-type"].startswith(kind))
            self.assertGreater(len(body), 1000)
        self.assertNotIn(b"innerHTML", request(self.http, "/console/app.js")[3])
        status, hdrs, _, body = request(self.http, "/console/", "HEAD")
        self.assertEqual((status, body), (200, b""))
        for path in ("/console/nope.js", "/console/../api/v1/broker", "/console/%2e%2e/x"):
            self.assertEqual(request(self.http, path)[0], 404, path)
        self.assertEqual(request(self.http, "/console/", "POST")[0], 405)
        self.assertEqual(request(self.http, "/api/v2/clients", headers=bearer())[0], 404)

    # --- the page, in headless chromium -------------------------------------------

    def test_page_in_chromium(self):
        self.assertTrue(os.path.exists("/usr/bin/chromium"),
                        "Debian's chromium is needed (scripts/deps.sh test installs it)")
        os.makedirs(SCREENSHOTS, exist_ok=True)
        self.start()
        self.device_sub(self.dev1, "dev1")
        self.device_sub(self.dev2, "dev2")
        self.raw_client(HTML_ID, clean=False)
        self.raw_client(HOSTILE_ID)
        browser = Browser()
        self.addCleanup(browser.close)
        shot = lambda name: browser.screenshot(os.path.join(SCREENSHOTS, name))  # noqa: E731

        browser.navigate(f"http://127.0.0.1:{self.http}/console/")
        browser.wait_for("!document.getElementById('view-login').hidden")
        shot("1-login.png")
        browser.evaluate("document.getElementById('login-user').value = 'alice';"
                         "document.getElementById('login-password').value = 'alice-pw';"
                         "document.querySelector('#login-form button').click()")
        browser.wait_for("document.querySelectorAll('#devices tbody tr').length >= 4")
        shot("2-devices.png")
        links = browser.evaluate("[...document.querySelectorAll('#devices tbody a')]"
                                 ".map(a => a.textContent)")
        self.assertIn(HTML_ID, links)  # shown as text...
        self.assertIn(HOSTILE_ID, links)
        self.assertEqual(browser.evaluate("document.querySelectorAll('#devices img').length"), 0)
        self.assertEqual(browser.evaluate("document.title"), "mqgate console")  # ...never run

        # Find a device, open it.
        browser.evaluate("document.getElementById('search').value = 'dev2';"
                         "document.querySelector('#device-filter button').click()")
        browser.wait_for("document.querySelectorAll('#devices tbody tr').length === 1")
        browser.evaluate("document.querySelector('#devices tbody a').click()")
        browser.wait_for("document.querySelectorAll('#device-chain pre').length === 2")
        self.assertIn("CN=dev2", browser.evaluate("document.getElementById('device-chain')"
                                                  ".textContent"))
        self.assertEqual(browser.evaluate("document.querySelector('#device-subs td')"
                                          ".textContent"), "devices/dev2/#")
        shot("3-device.png")

        # Revoke it (the confirmation is accepted), see what was done.
        browser.evaluate("document.getElementById('act-revoke').click()")
        result = browser.wait_for("!document.getElementById('action-result').hidden && "
                                  "document.getElementById('action-result').textContent")
        self.assertIn("HTTP 200", result)
        self.assertIn('"disconnected": 1', result)
        self.assertEqual(len(browser.dialogs), 1)
        self.assertIn("Revoke", browser.dialogs[0])
        shot("4-revoked.png")
        self.b.wait_log(r"console: user alice \(admin\) from .*: revoke \"dev2\": serial")

        # Gone: among the connected devices it is no longer listed.
        browser.navigate(f"http://127.0.0.1:{self.http}/console/#devices")
        browser.wait_for("!document.getElementById('view-devices').hidden")
        browser.evaluate("document.getElementById('state').value = 'connected';"
                         "document.getElementById('search').value = 'dev';"
                         "document.querySelector('#device-filter button').click()")
        browser.wait_for("[...document.querySelectorAll('#devices tbody a')]"
                         ".map(a => a.textContent).join(',') === 'dev1'")
        shot("5-after-revoke.png")

        # The broker page with its charts and listeners.
        browser.navigate(f"http://127.0.0.1:{self.http}/console/#broker")
        browser.wait_for("document.querySelectorAll('#charts canvas').length > 0 && "
                         "document.getElementById('listeners').textContent.includes('tls')")
        self.assertIn("1 revoked", browser.evaluate(
            "document.getElementById('listeners').textContent"))
        shot("6-broker.png")
        print(f"screenshots in {SCREENSHOTS}")


if __name__ == "__main__":
    unittest.main()
