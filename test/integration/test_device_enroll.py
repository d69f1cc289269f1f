"""device_enroll, the device side of provisioning (docs/provisioning.md), against
Mosquitto with a TLS listener that requires client certificates (cafile = our root) and a
fake provisioning service (test/lib/provision_fake.py) that signs with our issuing CA.
Also the stock-tools path: `openssl req` + `mosquitto_rr`.

The service is started by start_service() only: to run these against mqgate's own
provisioning, replace it (the device-side checks stay the same).
"""
import os
import re
import subprocess
import tempfile
import time
import shutil
import socket
import unittest

from mqgate_test import pki_tool
from pki import Creds, file_mode, make_ca, make_device, make_server, openssl, run_tool
from provision_fake import ProvisionFake

MOSQUITTO = "/usr/sbin/mosquitto"
DOMAIN = "example.com"
ORG = "mqgate tests"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def chain_file(path, *parts):
    with open(path, "w") as f:
        for part in parts:
            f.write(read(part))
    return path


def issuing_ca(d, root):
    """ca_creds --issuing under `root`: d/issuing.key, d/issuing.crt."""
    run_tool("ca_creds", "--issuing", "--country", "US", "--state", "NY", "--locality", "NY",
             "--org-name", ORG, "--cn", "mqgate test issuing CA", "--key-type", "ec",
             "--ca-key", root.key, "--ca-crt", root.cert, cwd=d)
    return Creds(os.path.join(d, "issuing.key"), os.path.join(d, "issuing.crt"), root.cert)


class DeviceEnrollTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.mkdtemp(prefix="mqgate-enroll-")
        d = cls.pki
        cls.root = make_ca(d, key_type="ec", cn="mqgate test root")
        cls.issuing = issuing_ca(d, cls.root)
        cls.server = make_server(d, cn="localhost", key_type="ec")
        # The factory credential: a claim certificate from the issuing CA, presented with it.
        run_tool("device_creds", "--country", "US", "--org-name", ORG, "--claim", "batch-1",
                 "--uri", DOMAIN, "--ca-key", cls.issuing.key, "--ca-crt", cls.issuing.cert,
                 "--key-type", "ec", cwd=d)
        cls.claim = Creds(os.path.join(d, "claim-batch-1.key"),
                          chain_file(os.path.join(d, "claim-chain.crt"),
                                     os.path.join(d, "claim-batch-1.crt"), cls.issuing.cert))
        cls.service_creds = make_device(d, "provision-service", DOMAIN, key_type="ec")
        stranger_dir = os.path.join(d, "stranger")
        os.mkdir(stranger_dir)
        cls.stranger = make_ca(stranger_dir, key_type="ec", cn="someone else's CA")
        cls.stranger_claim = make_device(stranger_dir, "claim-x", DOMAIN, key_type="ec")
        cls.procs = []
        cls.port = cls.start_service()

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()
        for proc in cls.procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(cls.pki, ignore_errors=True)

    @classmethod
    def start_service(cls):
        """Mosquitto requiring client certificates of our root, and the provisioning fake."""
        port = free_port()
        conf = os.path.join(cls.pki, "mosquitto.conf")
        cls.mosquitto_log = os.path.join(cls.pki, "mosquitto.log")
        lines = [f"listener {port} 127.0.0.1", f"cafile {cls.root.cert}",
                 f"certfile {cls.server.cert}", f"keyfile {cls.server.key}",
                 "require_certificate true", "allow_anonymous true"]
        if os.geteuid() == 0:
            lines.append("user root")  # keep root, which alone may read the 0600 key
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(cls.mosquitto_log, "wb") as log:
            proc = subprocess.Popen([MOSQUITTO, "-c", conf], stdout=log, stderr=subprocess.STDOUT)
        cls.procs.append(proc)
        deadline = time.monotonic() + 15
        while not re.search(r"mosquitto version \S+ running", read(cls.mosquitto_log)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("mosquitto did not start:\n" + read(cls.mosquitto_log))
            time.sleep(0.02)
        cls.fake = ProvisionFake(port, cls.root.cert, cls.service_creds, cls.issuing, DOMAIN,
                                 stranger=cls.stranger)
        return port

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mqgate-enroll-case-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def enroll(self, device_id, *extra, cafile=None, claim=None, timeout=20):
        claim = claim or self.claim
        args = [pki_tool("device_enroll"), "--host", "localhost", "--port", self.port,
                "--cafile", cafile or self.root.cert, "--device-id", device_id, *extra]
        if "--renew" not in extra:
            args += ["--claim-cert", claim.cert, "--claim-key", claim.key]
        return subprocess.run(list(map(str, args)), cwd=self.tmp, capture_output=True, text=True,
                              timeout=timeout)

    def assertEnrolled(self, p, device_id):
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        key, crt = (os.path.join(self.tmp, device_id + ext) for ext in (".key", ".crt"))
        self.assertEqual(file_mode(key), 0o600)
        self.assertEqual(read(crt).count("BEGIN CERTIFICATE"), 2, "leaf + issuing CA")
        v = openssl("verify", "-CAfile", self.root.cert, "-untrusted", crt, "-purpose",
                    "sslclient", crt, check=False)
        self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
        pair = run_tool("pki_check", "keypair", key, crt, check=False)
        self.assertEqual(pair.stdout.split()[0], "ok", pair.stdout)
        text = openssl("x509", "-in", crt, "-noout", "-ext", "subjectAltName").stdout
        self.assertIn(f"URI:spiffe://{DOMAIN}/device/{device_id}", text)
        return Creds(key, crt)

    def assertFailed(self, p, exit_code, pattern, device_id):
        self.assertEqual(p.returncode, exit_code, p.stdout + p.stderr)
        lines = p.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertRegex(lines[0], pattern)
        self.assertEqual(os.listdir(self.tmp), [], f"{device_id}: nothing may be written")

    def mosquitto_pub(self, creds, client_id):
        return subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(self.port),
                               "--cafile", self.root.cert, "--cert", creds.cert, "--key",
                               creds.key, "-i", client_id, "-t", "t", "-m", "hello", "-q", "1"],
                              capture_output=True, text=True, timeout=20)

    # --- success ----------------------------------------------------------------------------

    def test_enrol_with_mqtt5_and_use_the_certificate(self):
        p = self.enroll("dev1")
        creds = self.assertEnrolled(p, "dev1")
        self.assertIn("wrote dev1.key", p.stdout)
        topic, props = self.fake.requests[-1]
        self.assertEqual(topic, "$provision/dev1/csr")
        self.assertEqual(props.ResponseTopic, "$provision/dev1/reply")
        self.assertEqual(len(props.CorrelationData), 16)
        # The key is EC P-256 by default and the chain file works as a client certificate.
        self.assertIn("BEGIN EC PRIVATE KEY", read(creds.key))
        pub = self.mosquitto_pub(creds, "dev1")
        self.assertEqual(pub.returncode, 0, pub.stderr)

    def test_enrol_with_mqtt311_uses_the_fixed_reply_topic(self):
        p = self.enroll("dev311", "--mqtt", "3.1.1", "--key-type", "rsa")
        creds = self.assertEnrolled(p, "dev311")
        self.assertIn("BEGIN RSA PRIVATE KEY", read(creds.key))
        topic, props = self.fake.requests[-1]
        self.assertEqual(topic, "$provision/dev311/csr")
        self.assertIsNone(getattr(props, "ResponseTopic", None))

    def test_renew_with_the_current_certificate(self):
        old = self.assertEnrolled(self.enroll("dev-renew"), "dev-renew")
        old_pem = read(old.cert)
        p = self.enroll("dev-renew", "--renew", "--cert", old.cert, "--key", old.key, "--force")
        new = self.assertEnrolled(p, "dev-renew")
        self.assertEqual(self.fake.requests[-1][0], "$provision/dev-renew/renew")
        self.assertNotEqual(read(new.cert), old_pem)

    def test_out_prefix_and_existing_files(self):
        p = self.enroll("dev-out", "--out", "device")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "device.crt")))
        p = self.enroll("dev-out", "--out", "device")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("exists", p.stderr)

    # --- refusals and failures: an exit code each, one line, nothing written ------------------

    def test_refusal_is_reported_with_its_code(self):
        p = self.enroll("refuse-me")
        self.assertFailed(p, 3, r"^device_enroll: refused: id-not-allowed: device 'refuse-me' "
                                r"is not on the allow-list$", "refuse-me")
        p = self.enroll("refuse-me", "--mqtt", "3.1.1")
        self.assertFailed(p, 3, r"^device_enroll: refused: id-not-allowed: ", "refuse-me")

    def test_no_reply_times_out(self):
        p = self.enroll("silent-1", "--timeout", "2")
        self.assertFailed(p, 6, r"^device_enroll: error: timed out waiting for the reply",
                          "silent-1")

    def test_certificate_for_another_key_is_rejected(self):
        p = self.enroll("wrongkey-1")
        self.assertFailed(p, 7, r"not for this device's new key", "wrongkey-1")

    def test_certificate_from_another_ca_is_rejected(self):
        p = self.enroll("badca-1")
        self.assertFailed(p, 7, r"does not verify against --cafile", "badca-1")

    def test_certificate_for_another_device_is_rejected(self):
        p = self.enroll("otherid-1")
        self.assertFailed(p, 7, r"does not name device 'otherid-1'", "otherid-1")

    def test_reply_with_other_correlation_data_is_ignored(self):
        # The decoy (a certificate for another key) comes first and would be rejected.
        self.assertEnrolled(self.enroll("decoy-1"), "decoy-1")

    def test_broker_not_under_cafile_is_a_tls_error(self):
        p = self.enroll("dev-x", cafile=self.stranger.cert)
        self.assertFailed(p, 5, r"certificate of localhost:\d+ does not verify against --cafile",
                          "dev-x")

    def test_claim_the_broker_does_not_accept_is_a_tls_error(self):
        claim_leaf = os.path.join(self.pki, "claim-batch-1.crt")  # without the issuing CA
        for name, claim in (("stranger", self.stranger_claim),
                            ("leaf only", Creds(self.claim.key, claim_leaf))):
            with self.subTest(claim=name):
                p = self.enroll("dev-z", claim=claim)
                self.assertFailed(p, 5, r"TLS handshake with localhost:\d+ failed: .*does the "
                                        r"broker accept --claim-cert", "dev-z")

    def test_claim_key_that_does_not_match(self):
        p = self.enroll("dev-k", claim=Creds(self.stranger_claim.key, self.claim.cert))
        self.assertFailed(p, 1, r"--claim-key '.*claim-x\.key' is not the key of --claim-cert",
                          "dev-k")

    def test_nothing_listening_is_a_network_error(self):
        args = [pki_tool("device_enroll"), "--port", str(free_port()), "--cafile",
                self.root.cert, "--device-id", "dev-y", "--claim-cert", self.claim.cert,
                "--claim-key", self.claim.key]
        p = subprocess.run(args, cwd=self.tmp, capture_output=True, text=True, timeout=20)
        self.assertFailed(p, 4, r"cannot connect to localhost:\d+", "dev-y")

    def test_bad_options_and_files(self):
        cases = [
            (["a/b"], 2, r"--device-id 'a/b' must not contain '/'"),
            (["d", "--mqtt", "4"], 2, r"--mqtt '4' must be 5 or 3.1.1"),
            (["d", "--cert", "x.crt"], 2, r"--cert/--key go with --renew"),
            (["d", "--timeout", "0"], 2, r"--timeout '0' must be"),
        ]
        for args, code, pattern in cases:
            with self.subTest(args=args):
                p = self.enroll(*args)
                self.assertFailed(p, code, pattern, args)
        p = self.enroll("d", cafile=os.path.join(self.tmp, "missing.crt"))
        self.assertFailed(p, 1, r"cannot load --cafile '.*missing\.crt'", "d")

    # --- the stock tools ---------------------------------------------------------------------

    def test_openssl_req_and_mosquitto_rr(self):
        # mosquitto_rr 2.0.11 sends an empty payload with -f or -s: the CSR goes with -m.
        key, csr = os.path.join(self.tmp, "dev.key"), os.path.join(self.tmp, "dev.csr")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", key, "-subj", "/CN=stock1", "-out", csr)
        p = subprocess.run(["mosquitto_rr", "-h", "localhost", "-p", str(self.port), "--cafile",
                            self.root.cert, "--cert", self.claim.cert, "--key", self.claim.key,
                            "-i", "stock1", "-V", "5", "-q", "1", "-t", "$provision/stock1/csr",
                            "-e", "$provision/stock1/reply", "-m", read(csr), "-W", "20"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        crt = os.path.join(self.tmp, "dev.crt")
        with open(crt, "w") as f:
            f.write(p.stdout)
        v = openssl("verify", "-CAfile", self.root.cert, "-untrusted", crt, crt, check=False)
        self.assertEqual(v.returncode, 0, v.stdout + v.stderr + p.stdout)
        self.assertEqual(self.mosquitto_pub(Creds(key, crt), "stock1").returncode, 0)


if __name__ == "__main__":
    unittest.main()
