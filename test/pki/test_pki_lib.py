"""test/lib/pki.py itself: the openssl-made fixtures other tests rely on are what they say."""
import os

from pki import (PkiTestCase, make_ca, make_device, make_server, openssl_ca, openssl_crl,
                 openssl_device, openssl_intermediate, openssl_server, openssl_verify, revoke,
                 run_tool, x509_extensions, x509_text)


class PkiLibTest(PkiTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = openssl_ca(cls.shared, name="root", key_type="ec")
        cls.inter = openssl_intermediate(cls.shared, cls.root)

    def test_intermediate_chain(self):
        dev = openssl_device(self.tmp, self.inter, "dev1", "example.com", key_type="ec")
        self.assertEqual(dev.ca, self.inter.cert)
        with open(dev.chain) as f:
            self.assertEqual(f.read().count("BEGIN CERTIFICATE"), 2)
        p = openssl_verify(self.root.cert, dev.cert, purpose="sslclient", untrusted=self.inter.cert)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(run_tool("pki_check", "verify", self.root.cert, dev.chain).stdout, "ok\n")
        self.assertEqual(
            x509_extensions(x509_text(dev.cert))["X509v3 Subject Alternative Name"][1],
            "URI:spiffe://example.com/device/dev1, DNS:dev1.local")

    def test_expired_device(self):
        dev = openssl_device(self.tmp, self.root, "old", "example.com", key_type="ec",
                             expired=True)
        p = openssl_verify(self.root.cert, dev.cert)
        self.assertIn("certificate has expired", p.stdout)
        p = run_tool("pki_check", "verify", self.root.cert, dev.cert, check=False)
        self.assertIn("The certificate validity has expired", p.stdout)

    def test_openssl_server_and_crl(self):
        server = openssl_server(self.tmp, self.root, key_type="ec")
        self.assertEqual(openssl_verify(self.root.cert, server.cert, "sslserver").returncode, 0)
        dev = openssl_device(self.tmp, self.root, "dev2", "example.com", key_type="ec",
                             san="DNS:dev2.local")
        self.assertNotIn("URI:", x509_text(dev.cert))
        crl = openssl_crl(self.tmp, self.root, [dev.cert])
        self.assertIn("certificate revoked", openssl_verify(self.root.cert, dev.cert, crl=crl).stdout)
        self.assertEqual(openssl_verify(self.root.cert, server.cert, crl=crl).returncode, 0)
        p = run_tool("pki_check", "verify", self.root.cert, dev.cert, crl, check=False)
        self.assertIn("revoked", p.stdout)

    def test_our_tools_with_output_dirs(self):
        ca = make_ca(self.tmp, key_type="ec")
        server = make_server(self.tmp, key_type="ec", output_dir="srv")
        dev = make_device(self.tmp, "dev3", "example.com", key_type="ec", output_dir="devs")
        self.assertEqual(server.key, os.path.join(self.tmp, "srv", "server.key"))
        self.assertEqual(dev.cert, os.path.join(self.tmp, "devs", "dev3.crt"))
        self.assertEqual((server.ca, dev.ca), (ca.cert, ca.cert))
        crl = revoke(self.tmp, dev.cert)
        self.assertEqual(crl, os.path.join(self.tmp, "ca.crl"))
        self.assertIn("certificate revoked", openssl_verify(ca.cert, dev.cert, crl=crl).stdout)
