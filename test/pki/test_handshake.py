"""Our certificates in real TLS handshakes: openssl s_server/s_client, and Debian's
Mosquitto broker (require_certificate, crlfile) with Python's ssl module and paho-mqtt.
Everything listens on 127.0.0.1 ports picked by the kernel and stops by itself."""
import os
import re
import socket
import ssl
import subprocess
import time

import paho.mqtt.client as mqtt

from pki import (PkiTestCase, make_ca, make_device, make_server, openssl_device, revoke)

OPENSSL = "/usr/bin/openssl"
MOSQUITTO = "/usr/sbin/mosquitto"
TIMEOUT_S = 15


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def mqtt_connect(port, ca, creds, client_id, timeout=10):
    """Connects with paho-mqtt over TLS (server verified against `ca`, hostname 127.0.0.1
    checked against the certificate's IP SAN) presenting `creds`. Returns {"rc": CONNACK
    return code} or {"error": text}."""
    result = {}
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho 2.x
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, client_id=client_id)
    else:
        client = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv311)
    client.tls_set(ca_certs=ca, certfile=creds.chain, keyfile=creds.key,
                   tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.on_connect = lambda c, userdata, flags, rc: result.setdefault("rc", rc)
    try:
        client.connect("127.0.0.1", port, keepalive=10)
        deadline = time.monotonic() + timeout
        while "rc" not in result and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                result.setdefault("error", "connection lost before CONNACK")
    except (ssl.SSLError, OSError) as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        try:
            client.disconnect()
        except Exception:  # the connection may already be gone
            pass
    if not result:
        result["error"] = "no CONNACK in time"
    return result


class HandshakeTest(PkiTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        d = cls.shared
        # The seed's defaults: RSA 2048 everywhere; one EC device and one EC server too.
        cls.ca = make_ca(d, cn="my.domain.name")
        cls.server = make_server(d, cn="my.domain.name")
        ec_dir = os.path.join(d, "ec-server")
        os.mkdir(ec_dir)
        cls.ec_server = make_server(ec_dir, cn="my.domain.name", ca=cls.ca, key_type="ec")
        cls.rsa_dev = make_device(d, "rsa-dev", "my.domain.name")
        cls.ec_dev = make_device(d, "ec-dev", "my.domain.name", key_type="ec")
        cls.revoked_dev = make_device(d, "revoked-dev", "my.domain.name", key_type="ec")
        cls.crl = revoke(d, cls.revoked_dev.cert)
        cls.expired_dev = openssl_device(d, cls.ca, "expired-dev", "my.domain.name",
                                         key_type="ec", expired=True)
        other = os.path.join(d, "other")
        os.mkdir(other)
        make_ca(other, key_type="ec", cn="other CA")
        cls.stranger = make_device(other, "stranger", "my.domain.name", key_type="ec")

    def setUp(self):
        super().setUp()
        self.procs = []

    def tearDown(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        super().tearDown()

    def spawn(self, args, log):
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=self.tmp)
        self.procs.append(proc)
        return proc

    # --- openssl s_server / s_client -------------------------------------------------------

    def s_server(self, *extra):
        """openssl s_server requiring a client certificate, for one connection."""
        port = free_port()
        log = os.path.join(self.tmp, f"s_server-{port}.log")
        proc = self.spawn([OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}",
                           "-cert", self.server.cert, "-key", self.server.key,
                           "-CAfile", self.ca.cert, "-Verify", "1", "-verify_return_error",
                           "-naccept", "1", "-www", *extra], log)
        wait_for(lambda: "ACCEPT" in read(log), TIMEOUT_S, "s_server", proc)
        return port, proc, log

    def s_client(self, port, device):
        return subprocess.run(
            [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", self.ca.cert,
             "-cert", device.cert, "-key", device.key, "-verify_return_error",
             "-verify_hostname", "my.domain.name", "-ign_eof"],
            input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True, timeout=TIMEOUT_S)

    def test_openssl_handshake_with_our_certificates(self):
        for device in (self.rsa_dev, self.ec_dev):
            with self.subTest(device=os.path.basename(device.cert)):
                port, proc, log = self.s_server()
                p = self.s_client(port, device)
                out = p.stdout.decode(errors="replace")
                self.assertEqual(p.returncode, 0, out + p.stderr.decode(errors="replace"))
                self.assertIn("Verify return code: 0 (ok)", out)
                proc.wait(TIMEOUT_S)
                server_log = read(log)
                cn = os.path.splitext(os.path.basename(device.cert))[0]
                self.assertRegex(server_log, rf"depth=0 C = US, O = [^\n]*CN = {cn}\nverify return:1")
                self.assertNotIn("error", server_log.lower())

    def test_openssl_server_refuses_other_ca(self):
        port, proc, log = self.s_server()
        p = self.s_client(port, self.stranger)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"unknown ca", p.stdout + p.stderr)
        proc.wait(TIMEOUT_S)
        self.assertIn("unable to get local issuer certificate", read(log))

    def test_openssl_server_refuses_revoked_device(self):
        port, proc, log = self.s_server("-crl_check", "-CRL", self.crl)
        p = self.s_client(port, self.revoked_dev)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"certificate revoked", p.stdout + p.stderr)
        proc.wait(TIMEOUT_S)
        self.assertIn("verify error:num=23:certificate revoked", read(log))

        port, proc, log = self.s_server("-crl_check", "-CRL", self.crl)
        p = self.s_client(port, self.ec_dev)
        self.assertEqual(p.returncode, 0, p.stdout.decode(errors="replace"))

    # --- Mosquitto --------------------------------------------------------------------------

    def mosquitto(self, server=None, crlfile=None):
        server = server or self.server
        port = free_port()
        conf = os.path.join(self.tmp, f"mosquitto-{port}.conf")
        log = os.path.join(self.tmp, f"mosquitto-{port}.log")
        lines = [f"listener {port} 127.0.0.1", f"cafile {self.ca.cert}",
                 f"certfile {server.cert}", f"keyfile {server.key}",
                 "require_certificate true", "allow_anonymous true"]
        if crlfile:
            lines.append(f"crlfile {crlfile}")
        if os.geteuid() == 0:
            lines.append("user root")  # keep root, which alone may read the 0600 key
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        proc = self.spawn([MOSQUITTO, "-c", conf], log)
        wait_for(lambda: re.search(r"mosquitto version \S+ running", read(log)), TIMEOUT_S,
                 f"mosquitto to start:\n{read(log)}", proc)
        return port, log

    def test_mosquitto_accepts_our_devices(self):
        for server in (self.server, self.ec_server):
            port, log = self.mosquitto(server)
            for device in (self.rsa_dev, self.ec_dev):
                name = os.path.splitext(os.path.basename(device.cert))[0]
                with self.subTest(server=server.key, device=name):
                    result = mqtt_connect(port, self.ca.cert, device, name)
                    self.assertEqual(result, {"rc": 0}, read(log))
                    self.wait_log(log, f"New client connected from 127.0.0.1:\\d+ as {name}")

    def wait_log(self, log, pattern, count=1):
        """Mosquitto's log reaches the file a little after the client saw the outcome."""
        wait_for(lambda: len(re.findall(pattern, read(log))) >= count, TIMEOUT_S,
                 f"{pattern!r} x{count} in the mosquitto log:\n{read(log)}")

    def assertRefused(self, result, alert):
        # The broker's alert usually reaches the client; it may also just see the close.
        self.assertNotIn("rc", result)
        self.assertRegex(result["error"], f"{alert}|EOF occurred|Connection reset|connection lost")

    def test_mosquitto_refuses_other_ca_and_expired(self):
        port, log = self.mosquitto()
        for device, alert in ((self.stranger, "UNKNOWN_CA"), (self.expired_dev, "EXPIRED")):
            with self.subTest(device=os.path.basename(device.cert)):
                self.assertRefused(mqtt_connect(port, self.ca.cert, device, "x"), alert)
        self.wait_log(log, "certificate verify failed", count=2)
        self.assertNotIn("New client connected", read(log))

    def test_mosquitto_crlfile_refuses_revoked_device(self):
        # Without a CRL the device is welcome; with our CRL it is refused, others are not.
        port, log = self.mosquitto()
        self.assertEqual(mqtt_connect(port, self.ca.cert, self.revoked_dev, "revoked-dev"),
                         {"rc": 0}, read(log))
        port, log = self.mosquitto(crlfile=self.crl)
        result = mqtt_connect(port, self.ca.cert, self.revoked_dev, "revoked-dev")
        self.assertRefused(result, "CERTIFICATE_REVOKED")
        self.wait_log(log, "certificate verify failed")
        self.assertEqual(mqtt_connect(port, self.ca.cert, self.ec_dev, "ec-dev"), {"rc": 0},
                         read(log))

    def test_server_names_checked_by_python_ssl(self):
        port, log = self.mosquitto()
        for name, ok in (("my.domain.name", True), ("127.0.0.1", True),
                         ("other.domain.name", False)):
            with self.subTest(name=name):
                ctx = ssl.create_default_context(cafile=self.ca.cert)
                ctx.load_cert_chain(self.ec_dev.cert, self.ec_dev.key)
                with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as raw:
                    if ok:
                        with ctx.wrap_socket(raw, server_hostname=name) as tls:
                            self.assertEqual(tls.getpeercert()["subject"][-1],
                                             (("commonName", "my.domain.name"),))
                    else:
                        with self.assertRaisesRegex(ssl.SSLCertVerificationError,
                                                    "Hostname mismatch"):
                            ctx.wrap_socket(raw, server_hostname=name)
