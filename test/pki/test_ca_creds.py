"""ca_creds: the self-signed root CA (docs/pki-tools.md)."""
import datetime
import os
import signal
import subprocess
import time

from mqgate_test import pki_tool
from pki import (PkiTestCase, cert_dates, dir_listing, file_mode, openssl, openssl_verify,
                 run_tool, run_tool_unprivileged, serial_of, subject_of, x509_extensions,
                 x509_text)

SEED_ARGS = ["--country", "US", "--state", "NY", "--locality", "NY", "--org-name",
             "My Org's Name", "--cn", "my.domain.name"]
SEED_SUBJECT = "C = US, ST = NY, L = NY, O = My Org's Name, CN = my.domain.name"
EC_ARGS = ["--country", "us", "--state", "Bavaria", "--locality", "München",
           "--org-name", "Ünïcode, Inc.", "--cn", "EC test CA", "--key-type", "ec"]
UTC = datetime.timezone.utc


class CaCredsTest(PkiTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # The seed's quick-start command, defaults everywhere (RSA 2048, 365 days).
        cls.started = datetime.datetime.now(UTC).replace(microsecond=0)
        cls.result = run_tool("ca_creds", *SEED_ARGS, cwd=cls.shared)
        cls.key = os.path.join(cls.shared, "ca.key")
        cls.crt = os.path.join(cls.shared, "ca.crt")
        cls.text = x509_text(cls.crt)
        cls.ec_dir = os.path.join(cls.shared, "ec")
        os.mkdir(cls.ec_dir)
        run_tool("ca_creds", *EC_ARGS, cwd=cls.ec_dir)
        cls.ec_crt = os.path.join(cls.ec_dir, "ca.crt")

    def ca_creds(self, *args, cwd=None, **kw):
        return run_tool("ca_creds", *args, cwd=cwd or self.tmp, check=False, **kw)

    # --- what it writes ------------------------------------------------------------------

    def test_help_lists_the_seed_options(self):
        p = self.ca_creds("--help")
        self.assertEqual(p.returncode, 0, p.stderr)
        for option, description in [
                ("--country TEXT", "x509 'country_name' attribute [required]"),
                ("--state TEXT", "x509 'state_or_province_name' attribute [required]"),
                ("--locality TEXT", "x509 'locality_name' attribute [required]"),
                ("--org-name TEXT", "x509 'organization_name' attribute [required]"),
                ("--cn TEXT", "x509 'common_name' attribute [required]"),
                ("--output-dir TEXT", "output directory"),
                ("--help", "Show this message and exit.")]:
            line = next((l for l in p.stdout.splitlines() if option in l), None)
            self.assertIsNotNone(line, f"{option} missing from --help:\n{p.stdout}")
            self.assertIn(description, line)
        for extra in ("--force", "--key-type", "--key-bits", "--days"):
            self.assertIn(extra, p.stdout)
        self.assertEqual(dir_listing(self.tmp), [], "--help must write nothing")

    def test_writes_key_0600_and_certificate_0644(self):
        self.assertEqual(sorted(os.listdir(self.shared)), ["ca.crt", "ca.key", "ec"])
        self.assertEqual(file_mode(self.key), 0o600)
        self.assertEqual(file_mode(self.crt), 0o644)
        with open(self.key) as f:
            self.assertTrue(f.read().startswith("-----BEGIN RSA PRIVATE KEY-----\n"))
        self.assertIn("wrote ca.key", self.result.stdout)
        self.assertIn("wrote ca.crt", self.result.stdout)

    def test_certificate_is_the_seeds_root(self):
        self.assertIn("Version: 3 (0x2)", self.text)
        self.assertIn("Signature Algorithm: sha256WithRSAEncryption", self.text)
        self.assertIn("Public-Key: (2048 bit)", self.text)
        self.assertIn("Exponent: 65537 (0x10001)", self.text)
        self.assertEqual(subject_of(self.crt), SEED_SUBJECT)
        self.assertIn(f"Issuer: {SEED_SUBJECT}\n", self.text)
        exts = x509_extensions(self.text)
        self.assertEqual(set(exts), {"X509v3 Basic Constraints", "X509v3 Key Usage",
                                     "X509v3 Subject Key Identifier"})
        self.assertEqual(exts["X509v3 Basic Constraints"], (True, "CA:TRUE"))
        self.assertEqual(exts["X509v3 Key Usage"], (True, "Certificate Sign, CRL Sign"))
        self.assertRegex(exts["X509v3 Subject Key Identifier"][1], r"^([0-9A-F]{2}:){19}[0-9A-F]{2}$")
        p = openssl_verify(self.crt, self.crt)
        self.assertEqual(p.returncode, 0, p.stdout)

    def test_validity_is_one_year_from_now(self):
        not_before, not_after = cert_dates(self.crt)
        self.assertLessEqual(abs((not_before - self.started).total_seconds()), 60)
        self.assertEqual(not_after - not_before, datetime.timedelta(days=365))

    def test_serial_is_random_positive_159_bits(self):
        serials = {serial_of(self.crt), serial_of(self.ec_crt)}
        self.assertEqual(len(serials), 2)
        for serial in serials:
            self.assertRegex(serial, r"^[4-7][0-9A-F]{39}$")  # 20 bytes, top bits 01

    def test_ec_key_and_unicode_subject(self):
        with open(os.path.join(self.ec_dir, "ca.key")) as f:
            self.assertTrue(f.read().startswith("-----BEGIN EC PRIVATE KEY-----\n"))
        text = x509_text(self.ec_crt)
        self.assertIn("Signature Algorithm: ecdsa-with-SHA256", text)
        self.assertIn("NIST CURVE: P-256", text)
        # --country is normalized to upper case; UTF-8 values survive as UTF8String.
        subject = openssl("x509", "-in", self.ec_crt, "-noout", "-subject", "-nameopt",
                          "utf8,sep_comma_plus_space").stdout
        self.assertIn("C=US, ST=Bavaria, L=München, O=Ünïcode, Inc., CN=EC test CA", subject)

    def test_ecdsa_signature_algorithm_has_no_parameters(self):
        # RFC 5758 3.2: ecdsa-with-SHA256 MUST omit the parameters. mbedTLS 2.28's own
        # certificate writer adds a NULL there, which strict verifiers reject.
        dump = openssl("asn1parse", "-in", self.ec_crt).stdout.splitlines()
        for i, line in enumerate(dump):
            if "ecdsa-with-SHA256" in line and i + 1 < len(dump):
                self.assertNotIn("NULL", dump[i + 1], "\n".join(dump[:12]))

    def test_mbedtls_parses_key_and_certificate(self):
        p = run_tool("pki_check", "keypair", self.key, self.crt)
        self.assertEqual(p.stdout.strip(), "ok RSA 2048")

    def test_days_and_output_dir_created(self):
        out = os.path.join(self.tmp, "a", "b")
        p = self.ca_creds(*EC_ARGS, "--days", "10", "--output-dir", "a/b")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(os.listdir(out)), ["ca.crt", "ca.key"])
        not_before, not_after = cert_dates(os.path.join(out, "ca.crt"))
        self.assertEqual(not_after - not_before, datetime.timedelta(days=10))

    def test_modes_do_not_depend_on_the_umask(self):
        for umask in (0o000, 0o077):
            with self.subTest(umask=oct(umask)):
                out = os.path.join(self.tmp, oct(umask))
                p = subprocess.run([pki_tool("ca_creds"), *EC_ARGS, "--output-dir", out],
                                   capture_output=True, text=True, timeout=60,
                                   preexec_fn=lambda: os.umask(umask))
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(file_mode(os.path.join(out, "ca.key")), 0o600)
                self.assertEqual(file_mode(os.path.join(out, "ca.crt")), 0o644)

    def test_rsa_3072(self):
        p = self.ca_creds(*SEED_ARGS, "--key-bits", "3072")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("Public-Key: (3072 bit)", x509_text(os.path.join(self.tmp, "ca.crt")))

    # --- existing files ----------------------------------------------------------------------

    def test_refuses_to_overwrite_without_force(self):
        for existing in ("ca.key", "ca.crt"):
            with self.subTest(existing=existing):
                d = os.path.join(self.tmp, existing)
                os.mkdir(d)
                with open(os.path.join(d, existing), "w") as f:
                    f.write("precious\n")
                p = self.ca_creds(*EC_ARGS, cwd=d)
                self.assertToolFails(p, "ca_creds", 1, f"'{existing}' already exists", "--force")
                self.assertEqual(dir_listing(d), [existing])
                with open(os.path.join(d, existing)) as f:
                    self.assertEqual(f.read(), "precious\n")

    def test_force_overwrites(self):
        with open(os.path.join(self.tmp, "ca.key"), "w") as f:
            f.write("old\n")
        os.chmod(os.path.join(self.tmp, "ca.key"), 0o644)
        p = self.ca_creds(*EC_ARGS, "--force")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(dir_listing(self.tmp), ["ca.crt", "ca.key"])
        self.assertEqual(file_mode(os.path.join(self.tmp, "ca.key")), 0o600)
        run_tool("pki_check", "keypair", os.path.join(self.tmp, "ca.key"),
                 os.path.join(self.tmp, "ca.crt"))

    def test_interrupted_run_leaves_nothing(self):
        # The temporary files exist while the (slow) RSA-4096 key is generated; SIGTERM
        # then must remove them and leave no output behind.
        # The output directory it created goes too.
        proc = subprocess.Popen([pki_tool("ca_creds"), *SEED_ARGS, "--key-bits", "4096",
                                 "--output-dir", "new/ca"],
                                cwd=self.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not any(".tmp-" in n for n in dir_listing(self.tmp)):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.communicate()
                self.skipTest("key generation finished before it could be interrupted")
            time.sleep(0.002)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        if proc.returncode == 0:
            self.skipTest("key generation finished before the signal arrived")
        self.assertEqual(proc.returncode, -signal.SIGTERM)
        self.assertEqual(dir_listing(self.tmp), [])

    # --- bad input: one clear line, exit code, nothing written -------------------------

    def test_missing_required_option(self):
        for i in range(0, 10, 2):
            option = SEED_ARGS[i]
            with self.subTest(option=option):
                args = SEED_ARGS[:i] + SEED_ARGS[i + 2:]
                p = self.ca_creds(*args)
                self.assertToolFails(p, "ca_creds", 2, f"missing required option {option}")
                self.assertEqual(dir_listing(self.tmp), [])

    def test_country_must_be_two_letters(self):
        for country in ("USA", "U", "1A", "", "U-"):
            with self.subTest(country=country):
                args = list(SEED_ARGS)
                args[1] = country
                p = self.ca_creds(*args)
                self.assertToolFails(p, "ca_creds", 2, "--country", "exactly 2 letters")
                self.assertEqual(dir_listing(self.tmp), [])

    def test_bad_subject_values(self):
        cases = [("--cn", "", "must not be empty"),
                 ("--org-name", "Bad\x07Org", "control characters"),
                 ("--state", "   ", "must not be blank"),
                 ("--cn", "x" * 65, "at most 64"),
                 ("--locality", "Bad\udcffUTF-8", "not valid UTF-8")]  # raw byte 0xff
        for option, value, phrase in cases:
            with self.subTest(option=option, value=value):
                args = list(SEED_ARGS)
                args[args.index(option) + 1] = value
                p = self.ca_creds(*args)
                self.assertToolFails(p, "ca_creds", 2, option, phrase)
                self.assertEqual(dir_listing(self.tmp), [])

    def test_bad_options(self):
        cases = [(["--days", "0"], "--days '0' must be a whole number from 1 to 36500"),
                 (["--days", "36501"], "--days"),
                 (["--days", "ten"], "--days 'ten'"),
                 (["--key-type", "dsa"], "--key-type 'dsa' must be rsa or ec"),
                 (["--key-bits", "1024"], "--key-bits '1024' must be 2048, 3072 or 4096"),
                 (["--key-type", "ec", "--key-bits", "2048"], "--key-bits applies to"),
                 (["--bogus"], "option --bogus does not exist"),
                 (["stray"], "unexpected argument 'stray'"),
                 (["--cn", "again"], "--cn given more than once"),
                 (["--country"], "option --country is missing an argument")]
        for extra, phrase in cases:
            with self.subTest(extra=extra):
                p = self.ca_creds(*SEED_ARGS, *extra)
                self.assertToolFails(p, "ca_creds", 2, phrase)
                self.assertEqual(dir_listing(self.tmp), [])

    def test_output_dir_that_is_a_file(self):
        path = os.path.join(self.tmp, "file")
        with open(path, "w") as f:
            f.write("x")
        p = self.ca_creds(*EC_ARGS, "--output-dir", "file/sub")
        self.assertToolFails(p, "ca_creds", 1, "file/sub", "not a directory")
        self.assertEqual(dir_listing(self.tmp), ["file"])

    def test_unwritable_output_dir(self):
        out = os.path.join(self.tmp, "locked")
        os.mkdir(out, 0o555)
        os.chmod(self.tmp, 0o755)
        p = run_tool_unprivileged("ca_creds", *EC_ARGS, "--output-dir", out, cwd=self.tmp)
        self.assertToolFails(p, "ca_creds", 1, f"'{out}'", "Permission denied")
        self.assertEqual(dir_listing(self.tmp), ["locked"])

        p = run_tool_unprivileged("ca_creds", *EC_ARGS, "--output-dir", out + "/new",
                                  cwd=self.tmp)
        self.assertToolFails(p, "ca_creds", 1, "cannot create output directory", "new")
        self.assertEqual(dir_listing(self.tmp), ["locked"])
