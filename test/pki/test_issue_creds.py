"""server_creds and device_creds: certificates signed by a CA (docs/pki-tools.md)."""
import datetime
import os
import shutil

from pki import (Creds, PkiTestCase, cert_dates, dir_listing, file_mode, issuer_of, make_ca,
                 make_device, make_server, openssl, openssl_ca, openssl_intermediate,
                 openssl_verify, run_tool, run_tool_unprivileged, serial_of, subject_of,
                 x509_extensions, x509_text)

ORG = "My Org's Name"
UTC = datetime.timezone.utc
SERVER_ARGS = ["--country", "US", "--org-name", ORG, "--cn", "my.domain.name"]
DEVICE_ARGS = ["--country", "US", "--org-name", ORG, "--device-id", "myUniqueDeviceId",
               "--uri", "my.domain.name"]


class IssueCredsTest(PkiTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        d = cls.shared
        # The seed's quick start: CA, server, one device, all with default options.
        run_tool("ca_creds", "--country", "US", "--state", "NY", "--locality", "NY",
                 "--org-name", ORG, "--cn", "my.domain.name", cwd=d)
        cls.ca = Creds(os.path.join(d, "ca.key"), os.path.join(d, "ca.crt"))
        cls.server_run = run_tool("server_creds", *SERVER_ARGS, cwd=d)
        cls.device_run = run_tool("device_creds", *DEVICE_ARGS, cwd=d)
        cls.server = os.path.join(d, "server.crt")
        cls.device = os.path.join(d, "myUniqueDeviceId.crt")
        cls.ca_ski = x509_extensions(x509_text(cls.ca.cert))["X509v3 Subject Key Identifier"][1]
        cls.other = make_ca(cls.make_dir("other"), key_type="ec", cn="other CA")

    @classmethod
    def make_dir(cls, name):
        path = os.path.join(cls.shared, name)
        os.makedirs(path, exist_ok=True)
        return path

    def tool(self, name, *args, cwd=None):
        return run_tool(name, *args, cwd=cwd or self.tmp, check=False)

    def ca_args(self, ca=None):
        ca = ca or self.ca
        return ["--ca-key", ca.key, "--ca-crt", ca.cert]

    def assertVerifies(self, ca, cert, purpose, untrusted=None):
        p = openssl_verify(ca, cert, purpose=purpose, untrusted=untrusted)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn(": OK", p.stdout)

    # --- help --------------------------------------------------------------------------------

    def test_help_lists_the_seed_options(self):
        seed = {
            "server_creds": [("--country TEXT", "x509 'country_name' attribute [required]"),
                             ("--org-name TEXT", "x509 'organization_name' attribute [required]"),
                             ("--cn TEXT", "x509 'common_name' attribute"),
                             ("--output-dir TEXT", "output directory"),
                             ("--ca-key TEXT", "[default: ca.key]"),
                             ("--ca-crt TEXT", "[default: ca.crt]")],
            "device_creds": [("--country TEXT", "x509 'country_name' attribute [required]"),
                             ("--org-name TEXT", "x509 'organization_name' attribute [required]"),
                             ("--device-id TEXT", "device id for the SAN [required]"),
                             ("--uri TEXT", "domain name for device SAN [required]"),
                             ("--output-dir TEXT", "output directory"),
                             ("--ca-key TEXT", "root key filename used for signing. [default: ca.key]"),
                             ("--ca-crt TEXT", "root cert filename used for signing. [default: ca.crt]")],
        }
        for tool, options in seed.items():
            p = self.tool(tool, "--help")
            self.assertEqual(p.returncode, 0, p.stderr)
            for option, description in options + [("--help", "Show this message and exit.")]:
                line = next((l for l in p.stdout.splitlines() if option in l), None)
                self.assertIsNotNone(line, f"{tool}: {option} missing:\n{p.stdout}")
                self.assertIn(description, line)
        self.assertIn("[required]", p.stdout)
        self.assertEqual(dir_listing(self.tmp), [])

    # --- the seed's server and device ----------------------------------------------------------

    def test_server_certificate(self):
        text = x509_text(self.server)
        self.assertEqual(subject_of(self.server), f"C = US, O = {ORG}, CN = my.domain.name")
        self.assertEqual(issuer_of(self.server), subject_of(self.ca.cert))
        self.assertIn("Signature Algorithm: sha256WithRSAEncryption", text)
        self.assertIn("Public-Key: (2048 bit)", text)
        exts = x509_extensions(text)
        self.assertEqual(exts["X509v3 Basic Constraints"], (True, "CA:FALSE"))
        self.assertEqual(exts["X509v3 Key Usage"], (True, "Digital Signature, Key Encipherment"))
        self.assertEqual(exts["X509v3 Extended Key Usage"], (False, "TLS Web Server Authentication"))
        self.assertEqual(exts["X509v3 Subject Alternative Name"],
                         (False, "DNS:my.domain.name, IP Address:127.0.0.1"))
        self.assertEqual(exts["X509v3 Authority Key Identifier"], (False, self.ca_ski))
        self.assertIn("X509v3 Subject Key Identifier", exts)
        self.assertVerifies(self.ca.cert, self.server, "sslserver")
        # serverAuth only: it is not a client certificate.
        self.assertNotEqual(openssl_verify(self.ca.cert, self.server, "sslclient").returncode, 0)

    def test_device_certificate(self):
        text = x509_text(self.device)
        self.assertEqual(subject_of(self.device), f"C = US, O = {ORG}, CN = myUniqueDeviceId")
        self.assertEqual(issuer_of(self.device), subject_of(self.ca.cert))
        exts = x509_extensions(text)
        self.assertEqual(exts["X509v3 Basic Constraints"], (True, "CA:FALSE"))
        self.assertEqual(exts["X509v3 Key Usage"], (True, "Digital Signature"))
        self.assertEqual(exts["X509v3 Extended Key Usage"], (False, "TLS Web Client Authentication"))
        self.assertEqual(
            exts["X509v3 Subject Alternative Name"],
            (False, "URI:spiffe://my.domain.name/device/myUniqueDeviceId, "
                    "DNS:myUniqueDeviceId.local"))
        self.assertEqual(exts["X509v3 Authority Key Identifier"], (False, self.ca_ski))
        self.assertVerifies(self.ca.cert, self.device, "sslclient")
        self.assertNotEqual(openssl_verify(self.ca.cert, self.device, "sslserver").returncode, 0)

    def test_files_modes_validity_and_serials(self):
        names = ["server.key", "server.crt", "myUniqueDeviceId.key", "myUniqueDeviceId.crt"]
        for name in names:
            path = os.path.join(self.shared, name)
            self.assertEqual(file_mode(path), 0o600 if name.endswith(".key") else 0o644, name)
            if name.endswith(".key"):
                with open(path) as f:
                    self.assertTrue(f.read().startswith("-----BEGIN RSA PRIVATE KEY-----\n"))
        self.assertFalse([n for n in os.listdir(self.shared) if ".tmp-" in n])
        ca_end = cert_dates(self.ca.cert)[1]
        for cert in (self.server, self.device):
            not_before, not_after = cert_dates(cert)
            self.assertLessEqual(abs((datetime.datetime.now(UTC) - not_before).total_seconds()), 120)
            # 365 days, capped at the CA's own end (both made seconds apart: no warning).
            self.assertEqual(not_after, min(not_before + datetime.timedelta(days=365), ca_end))
            self.assertRegex(serial_of(cert), r"^[4-7][0-9A-F]{39}$")
        self.assertEqual(self.server_run.stderr + self.device_run.stderr, "")
        self.assertEqual(len({serial_of(c) for c in (self.ca.cert, self.server, self.device)}), 3)

    def test_mbedtls_accepts_them(self):
        for cert, key in ((self.server, "server.key"), (self.device, "myUniqueDeviceId.key")):
            p = run_tool("pki_check", "verify", self.ca.cert, cert)
            self.assertEqual(p.stdout.strip(), "ok")
            p = run_tool("pki_check", "keypair", os.path.join(self.shared, key), cert)
            self.assertEqual(p.stdout.strip(), "ok RSA 2048")

    # --- options --------------------------------------------------------------------------------

    def test_server_extra_names_and_ec_key(self):
        p = self.tool("server_creds", *SERVER_ARGS, *self.ca_args(), "--key-type", "ec",
                      "--san-dns", "Broker.Example.com", "--san-dns", "*.mqtt.example.com",
                      "--san-ip", "::1", "--san-ip", "192.0.2.7", "--san-ip", "127.0.0.1")
        self.assertEqual(p.returncode, 0, p.stderr)
        cert = os.path.join(self.tmp, "server.crt")
        exts = x509_extensions(x509_text(cert))
        self.assertEqual(exts["X509v3 Subject Alternative Name"][1],
                         "DNS:my.domain.name, DNS:broker.example.com, DNS:*.mqtt.example.com, "
                         "IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:192.0.2.7")
        # RFC 5480: no keyEncipherment for an EC key.
        self.assertEqual(exts["X509v3 Key Usage"], (True, "Digital Signature"))
        with open(os.path.join(self.tmp, "server.key")) as f:
            self.assertTrue(f.read().startswith("-----BEGIN EC PRIVATE KEY-----\n"))
        self.assertVerifies(self.ca.cert, cert, "sslserver")

    def test_server_cn_may_be_an_ip_address(self):
        p = self.tool("server_creds", "--country", "US", "--org-name", "O", "--cn", "192.0.2.10",
                      *self.ca_args(), "--key-type", "ec")
        self.assertEqual(p.returncode, 0, p.stderr)
        exts = x509_extensions(x509_text(os.path.join(self.tmp, "server.crt")))
        self.assertEqual(exts["X509v3 Subject Alternative Name"][1],
                         "IP Address:192.0.2.10, IP Address:127.0.0.1")

    def test_device_id_characters_and_uri_case(self):
        p = self.tool("device_creds", "--country", "de", "--org-name", "O", "--device-id",
                      "Sensor-01.floor_2", "--uri", "Plant.Example.COM", *self.ca_args(),
                      "--key-type", "ec", "--output-dir", "devices")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = os.path.join(self.tmp, "devices")
        self.assertEqual(sorted(os.listdir(out)), ["Sensor-01.floor_2.crt", "Sensor-01.floor_2.key"])
        cert = os.path.join(out, "Sensor-01.floor_2.crt")
        self.assertEqual(subject_of(cert), "C = DE, O = O, CN = Sensor-01.floor_2")
        self.assertEqual(x509_extensions(x509_text(cert))["X509v3 Subject Alternative Name"][1],
                         "URI:spiffe://plant.example.com/device/Sensor-01.floor_2, "
                         "DNS:Sensor-01.floor_2.local")
        self.assertVerifies(self.ca.cert, cert, "sslclient")

    def test_ca_paths_are_relative_to_the_current_directory(self):
        # Defaults ca.key/ca.crt come from the cwd, not from --output-dir.
        out = os.path.join(self.tmp, "out")
        p = self.tool("device_creds", "--country", "US", "--org-name", "O", "--device-id", "d1",
                      "--uri", "example.com", "--key-type", "ec", "--output-dir", out,
                      cwd=self.shared)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(os.listdir(out)), ["d1.crt", "d1.key"])
        self.assertFalse(os.path.exists(os.path.join(self.shared, "d1.key")))

    def test_validity_is_capped_at_the_cas_end(self):
        short = make_ca(os.path.join(self.tmp), key_type="ec", days=2)
        p = self.tool("device_creds", "--country", "US", "--org-name", "O", "--device-id", "d1",
                      "--uri", "example.com", "--key-type", "ec", "--days", "30")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("device_creds: warning: --days 30 would outlive the CA certificate", p.stderr)
        self.assertEqual(cert_dates(os.path.join(self.tmp, "d1.crt"))[1], cert_dates(short.cert)[1])
        p = self.tool("device_creds", "--country", "US", "--org-name", "O", "--device-id", "d2",
                      "--uri", "example.com", "--key-type", "ec", "--days", "1")
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        not_before, not_after = cert_dates(os.path.join(self.tmp, "d2.crt"))
        self.assertEqual(not_after - not_before, datetime.timedelta(days=1))

    # --- CAs made by openssl -----------------------------------------------------------------

    def test_openssl_ca_with_pkcs8_keys(self):
        for key_type in ("rsa", "ec"):
            with self.subTest(key_type=key_type):
                d = os.path.join(self.tmp, key_type)
                os.mkdir(d)
                ca = openssl_ca(d, key_type=key_type)
                with open(ca.key) as f:
                    self.assertTrue(f.read().startswith("-----BEGIN PRIVATE KEY-----"))
                server = make_server(d, key_type="ec", ca=ca)
                device = make_device(d, "dev1", "example.com", ca=ca, key_type="ec")
                self.assertVerifies(ca.cert, server.cert, "sslserver")
                self.assertVerifies(ca.cert, device.cert, "sslclient")
                ski = x509_extensions(x509_text(ca.cert))["X509v3 Subject Key Identifier"][1]
                aki = x509_extensions(x509_text(device.cert))["X509v3 Authority Key Identifier"][1]
                self.assertEqual(aki, ski)
                self.assertEqual(issuer_of(device.cert), subject_of(ca.cert))

    def test_openssl_intermediate_ca(self):
        root = openssl_ca(self.tmp, name="root", key_type="ec")
        inter = openssl_intermediate(self.tmp, root)
        device = make_device(self.tmp, "dev1", "example.com", ca=inter, key_type="ec")
        self.assertVerifies(root.cert, device.cert, "sslclient", untrusted=inter.cert)
        chain = os.path.join(self.tmp, "dev1-chain.pem")
        with open(chain, "w") as out:
            for part in (device.cert, inter.cert):
                with open(part) as f:
                    out.write(f.read())
        self.assertEqual(run_tool("pki_check", "verify", root.cert, chain).stdout.strip(), "ok")

    # --- bad input ------------------------------------------------------------------------------

    def assertDeviceRejected(self, exit_code, phrases, *args, cwd=None):
        cwd = cwd or self.tmp
        before = dir_listing(cwd)
        p = self.tool("device_creds", *args, cwd=cwd)
        line = self.assertToolFails(p, "device_creds", exit_code, *phrases)
        self.assertEqual(dir_listing(cwd), before)
        return line

    def test_missing_required_options(self):
        for i in range(0, len(DEVICE_ARGS), 2):
            option = DEVICE_ARGS[i]
            with self.subTest(option=option):
                self.assertDeviceRejected(2, [f"missing required option {option}"],
                                          *DEVICE_ARGS[:i], *DEVICE_ARGS[i + 2:], *self.ca_args())
        p = self.tool("server_creds", "--country", "US", "--org-name", "O", *self.ca_args())
        self.assertToolFails(p, "server_creds", 2, "missing required option --cn")
        self.assertEqual(dir_listing(self.tmp), [])

    def test_bad_device_ids(self):
        cases = [("", "must not be empty"),
                 ("a/b", "must not contain '/'"),
                 ("../etc/x", "must not contain '/'"),
                 ("a b", "must not contain whitespace"),
                 ("a\tb", "must not contain whitespace"),
                 ("a\nb", "must not contain whitespace"),
                 ("a\x01b", "must not contain control characters"),
                 ("a\x7fb", "must not contain control characters"),
                 (".", "not a usable file name"),
                 ("..", "not a usable file name"),
                 ("-dev", "must start with a letter or digit"),
                 (".hidden", "must start with a letter or digit"),
                 ("dev.", "must not end with '.'"),
                 ("a..b", "contain '..'"),
                 ("dev@home", "contains '@'"),
                 ("dév", "contains a non-ASCII character"),
                 ("x" * 64, "at most 63")]
        for device_id, phrase in cases:
            with self.subTest(device_id=device_id):
                self.assertDeviceRejected(2, ["--device-id", phrase], "--country", "US",
                                          "--org-name", "O", "--device-id", device_id, "--uri",
                                          "example.com", *self.ca_args())

    def test_bad_uris(self):
        cases = [("", "must not be empty"),
                 ("spiffe://example.com", "must be a bare domain name, not a URI"),
                 ("example.com/device", "must be a bare domain name"),
                 ("a..b", "has an empty label"),
                 (".example.com", "has an empty label"),
                 ("example.com.", "must not end with '.'"),
                 ("-a.example.com", "invalid label '-a'"),
                 ("a-.example.com", "invalid label 'a-'"),
                 ("a_b.example.com", "invalid label 'a_b'"),
                 ("a b.example.com", "invalid label 'a b'"),
                 ("*.example.com", "invalid label '*'"),
                 ("x" * 64 + ".com", "label longer than 63"),
                 (".".join(["a" * 60] * 5), "longer than 253"),
                 ("192.0.2.1", "looks like an IP address")]
        for uri, phrase in cases:
            with self.subTest(uri=uri):
                self.assertDeviceRejected(2, ["--uri", "not a valid DNS name", phrase],
                                          "--country", "US", "--org-name", "O", "--device-id",
                                          "d1", "--uri", uri, *self.ca_args())

    def test_bad_country_and_org(self):
        self.assertDeviceRejected(2, ["--country 'USA' must be exactly 2 letters"], "--country",
                                  "USA", "--org-name", "O", "--device-id", "d1", "--uri",
                                  "example.com", *self.ca_args())
        self.assertDeviceRejected(2, ["--org-name must not be empty"], "--country", "US",
                                  "--org-name", "", "--device-id", "d1", "--uri", "example.com",
                                  *self.ca_args())

    def test_bad_server_names(self):
        cases = [(["--cn", "My Server"], "--cn 'My Server' is neither a DNS name nor an IP address"),
                 (["--cn", "x.example", "--san-dns", "bad_name"], "--san-dns 'bad_name'"),
                 (["--cn", "x.example", "--san-dns", ""], "--san-dns"),
                 (["--cn", "x.example", "--san-ip", "1.2.3"], "--san-ip '1.2.3' is not an IPv4"),
                 (["--cn", "x.example", "--san-ip", "localhost"], "--san-ip 'localhost'")]
        for args, phrase in cases:
            with self.subTest(args=args):
                p = self.tool("server_creds", "--country", "US", "--org-name", "O", *args,
                              *self.ca_args())
                self.assertToolFails(p, "server_creds", 2, phrase)
                self.assertEqual(dir_listing(self.tmp), [])

    def garbage(self, name, content="this is not PEM\n"):
        path = os.path.join(self.tmp, "input", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content)
        return path

    def test_bad_ca_files(self):
        encrypted = os.path.join(self.tmp, "input", "encrypted.key")
        os.makedirs(os.path.dirname(encrypted))
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-aes256", "-pass", "pass:secret", "-out", encrypted)
        not_ca = Creds(os.path.join(self.shared, "server.key"), self.server)
        with open(self.ca.cert) as f:
            ca_pem = f.read()
        cases = [
            ("missing key", ["--ca-key", "/nonexistent/ca.key", "--ca-crt", self.ca.cert],
             ["cannot read CA key '/nonexistent/ca.key'", "No such file or directory"]),
            ("missing cert", ["--ca-key", self.ca.key, "--ca-crt", "/nonexistent/ca.crt"],
             ["cannot read CA certificate '/nonexistent/ca.crt'", "No such file"]),
            ("key is a directory", ["--ca-key", self.shared, "--ca-crt", self.ca.cert],
             ["cannot read CA key", "not a regular file"]),
            ("key not PEM", ["--ca-key", self.garbage("k.key"), "--ca-crt", self.ca.cert],
             ["CA key '", "k.key' is not a PEM or DER private key"]),
            ("cert not PEM", ["--ca-key", self.ca.key, "--ca-crt", self.garbage("c.crt")],
             ["CA certificate '", "c.crt' is not a PEM or DER X.509 certificate"]),
            ("truncated cert", ["--ca-key", self.ca.key, "--ca-crt",
                                self.garbage("t.crt", ca_pem[:300])],
             ["t.crt' is not a PEM or DER X.509 certificate"]),
            ("swapped", ["--ca-key", self.ca.cert, "--ca-crt", self.ca.key],
             ["CA key '", "' holds a certificate, not a private key"]),
            ("mismatched key", ["--ca-key", self.other.key, "--ca-crt", self.ca.cert],
             [f"CA key '{self.other.key}' does not match CA certificate '{self.ca.cert}'"]),
            ("not a CA", ["--ca-key", not_ca.key, "--ca-crt", not_ca.cert],
             ["is not a CA certificate (no basicConstraints CA:TRUE)"]),
            ("encrypted key", ["--ca-key", encrypted, "--ca-crt", self.ca.cert],
             ["is encrypted"]),
        ]
        for name, ca_args, phrases in cases:
            with self.subTest(name):
                self.assertDeviceRejected(1, phrases, "--country", "US", "--org-name", "O",
                                          "--device-id", "d1", "--uri", "example.com",
                                          "--output-dir", "new-dir", *ca_args)
                p = self.tool("server_creds", "--country", "US", "--org-name", "O", "--cn",
                              "x.example", "--output-dir", "new-dir", *ca_args)
                self.assertToolFails(p, "server_creds", 1, *phrases)
                self.assertFalse(os.path.exists(os.path.join(self.tmp, "new-dir")))

    def test_ca_without_keycertsign_or_expired(self):
        crl_only = openssl_ca(self.tmp, name="crlonly", key_type="ec", extensions=(
            "basicConstraints = critical, CA:TRUE\nkeyUsage = critical, cRLSign\n"))
        self.assertDeviceRejected(1, ["may not sign certificates", "keyCertSign"], "--country",
                                  "US", "--org-name", "O", "--device-id", "d1", "--uri",
                                  "example.com", *self.ca_args(crl_only))
        root = openssl_ca(self.tmp, name="root", key_type="ec")
        old = openssl_intermediate(self.tmp, root, name="old", expired=True)
        self.assertDeviceRejected(1, [f"CA certificate '{old.cert}' expired on"], "--country",
                                  "US", "--org-name", "O", "--device-id", "d1", "--uri",
                                  "example.com", *self.ca_args(old))

    def test_existing_outputs(self):
        with open(os.path.join(self.tmp, "d1.crt"), "w") as f:
            f.write("keep\n")
        args = ["--country", "US", "--org-name", "O", "--device-id", "d1", "--uri",
                "example.com", "--key-type", "ec", *self.ca_args()]
        self.assertDeviceRejected(1, ["'d1.crt' already exists; use --force"], *args)
        p = self.tool("device_creds", *args, "--force")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertVerifies(self.ca.cert, os.path.join(self.tmp, "d1.crt"), "sslclient")

    def test_unwritable_output_dir(self):
        # The CA must be readable by the unprivileged user; the output dir is not writable.
        ca_dir = os.path.join(self.tmp, "ca")
        os.mkdir(ca_dir)
        for path in (self.ca.key, self.ca.cert):
            shutil.copy(path, ca_dir)
            os.chmod(os.path.join(ca_dir, os.path.basename(path)), 0o644)
        out = os.path.join(self.tmp, "locked")
        os.mkdir(out, 0o555)
        os.chmod(self.tmp, 0o755)
        p = run_tool_unprivileged("device_creds", "--country", "US", "--org-name", "O",
                                  "--device-id", "d1", "--uri", "example.com", "--output-dir",
                                  out, "--ca-key", "ca/ca.key", "--ca-crt", "ca/ca.crt",
                                  cwd=self.tmp)
        self.assertToolFails(p, "device_creds", 1, f"cannot write to directory '{out}'",
                             "Permission denied")
        self.assertEqual(os.listdir(out), [])
