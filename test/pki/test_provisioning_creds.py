"""The PKI tools' side of provisioning (docs/pki-tools.md, docs/provisioning.md):
`ca_creds --issuing`, `device_creds --claim` and `device_creds --csr`, and the other tools
signing with an issuing CA."""
import os

from pki import (Creds, PkiTestCase, dir_listing, file_mode, issuer_of, make_ca, make_device,
                 make_server, openssl, openssl_verify, revoke, run_tool, subject_of,
                 x509_extensions, x509_text)

ORG = "My Org's Name"
DN = ["--country", "US", "--state", "NY", "--locality", "NY", "--org-name", ORG]


def read(path):
    with open(path) as f:
        return f.read()


class ProvisioningCredsTest(PkiTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        d = cls.shared
        cls.root = make_ca(d, key_type="ec", cn="root CA")
        cls.issuing_run = run_tool("ca_creds", "--issuing", *DN, "--cn", "issuing CA",
                                   "--key-type", "ec", cwd=d)
        cls.issuing = Creds(os.path.join(d, "issuing.key"), os.path.join(d, "issuing.crt"),
                            cls.root.cert)
        cls.root_ski = x509_extensions(x509_text(cls.root.cert))["X509v3 Subject Key Identifier"][1]

    def tool(self, name, *args):
        return run_tool(name, *args, cwd=self.tmp, check=False)

    def issuing_args(self):
        return ["--ca-key", self.issuing.key, "--ca-crt", self.issuing.cert]

    # --- ca_creds --issuing ------------------------------------------------------------------

    def test_issuing_ca_certificate(self):
        exts = x509_extensions(x509_text(self.issuing.cert))
        self.assertEqual(exts["X509v3 Basic Constraints"], (True, "CA:TRUE, pathlen:0"))
        self.assertEqual(exts["X509v3 Key Usage"], (True, "Certificate Sign, CRL Sign"))
        self.assertEqual(exts["X509v3 Authority Key Identifier"], (False, self.root_ski))
        self.assertIn("X509v3 Subject Key Identifier", exts)
        self.assertEqual(issuer_of(self.issuing.cert), subject_of(self.root.cert))
        p = openssl_verify(self.root.cert, self.issuing.cert)
        self.assertIn(": OK", p.stdout)
        p = run_tool("pki_check", "verify", self.root.cert, self.issuing.cert)
        self.assertEqual(p.stdout.strip(), "ok")
        # issuing-chain.crt: the issuing CA, then the root.
        chain = read(os.path.join(self.shared, "issuing-chain.crt"))
        self.assertEqual(chain, read(self.issuing.cert) + read(self.root.cert))
        self.assertEqual(file_mode(self.issuing.key), 0o600)
        self.assertIn("wrote issuing-chain.crt", self.issuing_run.stdout)

    def test_leaves_and_crls_signed_by_the_issuing_ca(self):
        server = make_server(self.tmp, cn="localhost", ca=self.issuing, key_type="ec")
        device = make_device(self.tmp, "dev1", "example.com", ca=self.issuing, key_type="ec")
        chain = os.path.join(self.tmp, "dev1-chain.crt")
        with open(chain, "w") as f:
            f.write(read(device.cert) + read(self.issuing.cert))
        for cert, purpose in ((server.cert, "sslserver"), (device.cert, "sslclient")):
            p = openssl_verify(self.root.cert, cert, purpose=purpose, untrusted=self.issuing.cert)
            self.assertIn(": OK", p.stdout)
            # Without the issuing CA there is no path to the root.
            self.assertNotEqual(openssl_verify(self.root.cert, cert).returncode, 0)
        p = run_tool("pki_check", "verify", self.root.cert, chain)
        self.assertEqual(p.stdout.strip(), "ok")
        crl = revoke(self.tmp, device.cert, ca=self.issuing, crl=os.path.join(self.tmp, "i.crl"))
        p = openssl_verify(self.root.cert, device.cert, crl=crl, untrusted=self.issuing.cert)
        self.assertIn("certificate revoked", p.stdout)

    def test_issuing_ca_refusals(self):
        # pathlen 0: an issuing CA may not sign another CA.
        p = self.tool("ca_creds", "--issuing", *DN, "--cn", "x", *self.issuing_args())
        self.assertToolFails(p, "ca_creds", 1, "has pathlen 0")
        p = self.tool("ca_creds", *DN, "--cn", "x", "--ca-key", self.root.key)
        self.assertToolFails(p, "ca_creds", 2, "--ca-key and --ca-crt go with --issuing")
        p = self.tool("ca_creds", "--issuing", *DN, "--cn", "x")  # no ca.key here
        self.assertToolFails(p, "ca_creds", 1, "ca.key")
        self.assertEqual(dir_listing(self.tmp), [])

    # --- device_creds --claim ----------------------------------------------------------------

    def test_claim_certificate(self):
        p = self.tool("device_creds", "--country", "US", "--org-name", ORG, "--claim", "batch_7.a",
                      "--uri", "Example.COM", *self.issuing_args(), "--key-type", "ec")
        self.assertEqual(p.returncode, 0, p.stderr)
        crt = os.path.join(self.tmp, "claim-batch_7.a.crt")
        self.assertEqual(file_mode(os.path.join(self.tmp, "claim-batch_7.a.key")), 0o600)
        exts = x509_extensions(x509_text(crt))
        self.assertEqual(exts["X509v3 Subject Alternative Name"],
                         (False, "URI:spiffe://example.com/claim/batch_7.a"))
        self.assertEqual(exts["X509v3 Basic Constraints"], (True, "CA:FALSE"))
        self.assertEqual(exts["X509v3 Extended Key Usage"], (False, "TLS Web Client Authentication"))
        self.assertEqual(subject_of(crt), f"C = US, O = {ORG}, CN = claim-batch_7.a")
        p = openssl_verify(self.root.cert, crt, purpose="sslclient", untrusted=self.issuing.cert)
        self.assertIn(": OK", p.stdout)

    def test_claim_refusals(self):
        base = ["--country", "US", "--org-name", ORG, "--uri", "example.com",
                *self.issuing_args()]
        for batch, phrase in (("", "must not be empty"), ("a/b", "must not contain '/'"),
                              ("..", "not a usable file name"), ("b" * 65, "at most 64"),
                              ("é", "non-ASCII")):
            with self.subTest(batch=batch):
                p = self.tool("device_creds", *base, "--claim", batch)
                self.assertToolFails(p, "device_creds", 2, "--claim", phrase)
        p = self.tool("device_creds", *base, "--claim", "b", "--device-id", "d")
        self.assertToolFails(p, "device_creds", 2, "no --device-id or --csr")
        self.assertEqual(dir_listing(self.tmp), [])

    # --- device_creds --csr ------------------------------------------------------------------

    def test_key_and_csr_without_a_ca(self):
        for key_type, pem in (("ec", "BEGIN EC PRIVATE KEY"), ("rsa", "BEGIN RSA PRIVATE KEY")):
            with self.subTest(key_type=key_type):
                out = os.path.join(self.tmp, key_type)
                p = self.tool("device_creds", "--csr", "--device-id", "dev-9", "--uri",
                              "example.com", "--key-type", key_type, "--output-dir", out)
                self.assertEqual(p.returncode, 0, p.stderr)
                key, csr = os.path.join(out, "dev-9.key"), os.path.join(out, "dev-9.csr")
                self.assertEqual(file_mode(key), 0o600)
                self.assertIn(pem, read(key))
                text = openssl("req", "-in", csr, "-noout", "-verify", "-text").stdout
                self.assertIn("Subject: CN = dev-9", text)
                self.assertIn("URI:spiffe://example.com/device/dev-9", text)
                # The request is for this key.
                csr_pub = openssl("req", "-in", csr, "-noout", "-pubkey").stdout
                key_pub = openssl("pkey", "-in", key, "-pubout").stdout
                self.assertEqual(csr_pub, key_pub)
        # --uri is only a hint: without it the request names the id alone.
        p = self.tool("device_creds", "--csr", "--device-id", "dev-8")
        self.assertEqual(p.returncode, 0, p.stderr)
        text = openssl("req", "-in", os.path.join(self.tmp, "dev-8.csr"), "-noout", "-text").stdout
        self.assertNotIn("URI:", text)

    def test_csr_refusals(self):
        for extra, phrase in ((["--ca-key", "ca.key"], "--ca-key does not go with --csr"),
                              (["--country", "US"], "--country does not go with --csr"),
                              (["--days", "3"], "--days does not go with --csr")):
            with self.subTest(extra=extra):
                p = self.tool("device_creds", "--csr", "--device-id", "d", *extra)
                self.assertToolFails(p, "device_creds", 2, phrase)
        p = self.tool("device_creds", "--csr")
        self.assertToolFails(p, "device_creds", 2, "--device-id")
        self.assertEqual(dir_listing(self.tmp), [])
        self.assertEqual(self.tool("device_creds", "--csr", "--device-id", "d").returncode, 0)
        p = self.tool("device_creds", "--csr", "--device-id", "d")
        self.assertToolFails(p, "device_creds", 1, "exists")
