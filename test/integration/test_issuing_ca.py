"""An issuing CA made by `ca_creds --issuing` under a root, with mqgate's certauth
listener trusting only the root (docs/pki-tools.md, "Issuing CAs and chains"): devices
and the broker present their certificate followed by the issuing CA's, made with `cat`."""
import os
import shutil
import subprocess
import tempfile

import pki
from mqgate_test import BrokerTestCase

DOMAIN = "example.com"


def cat(path, *parts):
    with open(path, "w") as out:
        for part in parts:
            with open(part) as f:
                out.write(f.read())
    return path


def tls_config(server_cert, server_key, cafile):
    return ('log_level = "info"\nsys_interval = 0\n'
            '[listeners.tls]\nbind = "127.0.0.1:0"\nssl = true\n'
            f'certfile = "{server_cert}"\nkeyfile = "{server_key}"\ncafile = "{cafile}"\n'
            'plugins = ["certauth"]\n'
            f'[plugins.certauth]\nuri_domain = "{DOMAIN}"\n')


class IssuingCaTest(BrokerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = d = tempfile.mkdtemp(prefix="mqgate-issuing-")
        cls.root = pki.make_ca(d, key_type="ec", cn="mqgate test root")
        pki.run_tool("ca_creds", "--issuing", "--country", "US", "--state", "NY", "--locality",
                     "NY", "--org-name", "mqgate tests", "--cn", "mqgate issuing CA",
                     "--key-type", "ec", cwd=d)
        cls.issuing = pki.Creds(os.path.join(d, "issuing.key"), os.path.join(d, "issuing.crt"),
                                cls.root.cert)
        cls.dev = pki.make_device(d, "dev1", DOMAIN, ca=cls.issuing, key_type="ec")
        cls.dev_chain = cat(os.path.join(d, "dev1-chain.crt"), cls.dev.cert, cls.issuing.cert)
        cls.server = pki.make_server(d, cn="localhost", ca=cls.issuing, key_type="ec")
        cls.server_chain = cat(os.path.join(d, "server-chain.crt"), cls.server.cert,
                               cls.issuing.cert)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki, ignore_errors=True)

    def mosquitto_pub(self, port, cert, key, client_id):
        return subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(port), "--cafile",
                               self.root.cert, "--cert", cert, "--key", key, "-i", client_id,
                               "-t", "t", "-m", "x", "-q", "1"],
                              capture_output=True, text=True, timeout=20)

    def test_issuing_ca_verifies_under_the_root(self):
        for tool in ("openssl", "mbedtls"):
            with self.subTest(tool=tool):
                if tool == "openssl":
                    p = pki.openssl("verify", "-CAfile", self.root.cert, "-untrusted",
                                    self.issuing.cert, "-purpose", "sslclient", self.dev.cert,
                                    check=False)
                    self.assertIn(": OK", p.stdout, p.stderr)
                else:
                    p = pki.run_tool("pki_check", "verify", self.root.cert, self.dev_chain,
                                     check=False)
                    self.assertEqual(p.stdout.strip(), "ok", p.stdout)
        p = pki.run_tool("pki_check", "verify", self.root.cert, self.issuing.cert, check=False)
        self.assertEqual(p.stdout.strip(), "ok", p.stdout)

    def test_device_chain_connects_to_certauth_trusting_the_root(self):
        # Both sides present leaf + issuing CA: the broker's certfile and the device's --cert.
        b = self.start_broker(tls_config(self.server_chain, self.server.key, self.root.cert))
        port = b.port("tls")
        p = self.mosquitto_pub(port, self.dev_chain, self.dev.key, "dev1")
        self.assertEqual(p.returncode, 0, p.stderr)
        b.wait_log(r'client="dev1" .*listener=tls: connected')
        # The leaf alone does not lead to the root.
        p = self.mosquitto_pub(port, self.dev.cert, self.dev.key, "dev1")
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_server_leaf_alone_is_not_enough_for_clients_trusting_the_root(self):
        b = self.start_broker(tls_config(self.server.cert, self.server.key, self.root.cert))
        p = self.mosquitto_pub(b.port("tls"), self.dev_chain, self.dev.key, "dev1")
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
