"""revoke_creds: the CA's CRL (docs/pki-tools.md)."""
import base64
import datetime
import os
import re
import subprocess

from mqgate_test import pki_tool
from pki import (Creds, PkiTestCase, crl_text, dir_listing, file_mode, make_ca, make_device,
                 make_server, openssl, openssl_ca, openssl_crl, openssl_device, openssl_verify,
                 revoke, run_tool, serial_of, subject_of, x509_extensions, x509_text)

UTC = datetime.timezone.utc


def crl_entries(text):
    """{serial: revocation date text} from `openssl crl -text`."""
    return dict(re.findall(r"Serial Number: ([0-9A-F]+)\s+Revocation Date: ([^\n]+)", text))


def crl_dates(text):
    parse = lambda s: datetime.datetime.strptime(s.strip(), "%b %d %H:%M:%S %Y GMT").replace(
        tzinfo=UTC)
    last = re.search(r"Last Update: ([^\n]+)", text).group(1)
    nxt = re.search(r"Next Update: ([^\n]+)", text).group(1)
    return parse(last), parse(nxt)


class RevokeCredsTest(PkiTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        d = cls.shared
        cls.ca = make_ca(d, key_type="ec")
        cls.devs = [make_device(d, f"dev{i}", "example.com", key_type="ec") for i in (1, 2, 3)]
        cls.server = make_server(d, key_type="ec")
        cls.ca_ski = x509_extensions(x509_text(cls.ca.cert))["X509v3 Subject Key Identifier"][1]
        other = os.path.join(d, "other")
        os.mkdir(other)
        cls.other = make_ca(other, key_type="ec", cn="other CA")
        cls.stranger = make_device(other, "stranger", "example.com", key_type="ec")

    def revoke_tool(self, *args, ca=None, crl=None):
        ca = ca or self.ca
        crl = crl or self.crl
        return run_tool("revoke_creds", "--ca-key", ca.key, "--ca-crt", ca.cert, "--crl", crl,
                        *args, cwd=self.tmp, check=False)

    @property
    def crl(self):
        return os.path.join(self.tmp, "ca.crl")

    def assertCrlVerifies(self, crl, ca=None):
        p = openssl("crl", "-in", crl, "-CAfile", (ca or self.ca).cert, "-noout", "-verify",
                    check=False)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("verify OK", p.stdout + p.stderr)

    def assertRevoked(self, cert, crl, ca=None):
        ca = ca or self.ca
        p = openssl_verify(ca.cert, cert, crl=crl)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("certificate revoked", p.stdout)
        p = run_tool("pki_check", "verify", ca.cert, cert, crl, check=False)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("The certificate has been revoked (is on a CRL)", p.stdout)

    def assertNotRevoked(self, cert, crl, ca=None):
        ca = ca or self.ca
        p = openssl_verify(ca.cert, cert, crl=crl)
        self.assertEqual(p.returncode, 0, p.stdout)
        p = run_tool("pki_check", "verify", ca.cert, cert, crl, check=False)
        self.assertEqual(p.stdout.strip(), "ok")

    # --- revoking ---------------------------------------------------------------------------

    def test_first_revocation_creates_the_crl(self):
        started = datetime.datetime.now(UTC).replace(microsecond=0)
        p = self.revoke_tool("--cert", self.devs[0].cert)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f"revoked certificate '{self.devs[0].cert}' (serial ", p.stdout)
        self.assertIn(f"wrote {self.crl} (CRL number 1, 1 revoked, next update", p.stdout)
        self.assertEqual(dir_listing(self.tmp), ["ca.crl"])
        self.assertEqual(file_mode(self.crl), 0o644)
        with open(self.crl) as f:
            self.assertTrue(f.read().startswith("-----BEGIN X509 CRL-----\n"))

        self.assertCrlVerifies(self.crl)
        text = crl_text(self.crl)
        self.assertIn("Version 2 (0x1)", text)
        self.assertIn("Signature Algorithm: ecdsa-with-SHA256", text)
        self.assertIn(f"Issuer: {subject_of(self.ca.cert)}\n", text)
        exts = x509_extensions(text)
        self.assertEqual(exts, {"X509v3 Authority Key Identifier": (False, self.ca_ski),
                                "X509v3 CRL Number": (False, "1")})
        self.assertEqual(list(crl_entries(text)), [serial_of(self.devs[0].cert)])
        last, nxt = crl_dates(text)
        self.assertLessEqual(abs((last - started).total_seconds()), 60)
        self.assertEqual(nxt - last, datetime.timedelta(days=30))

        self.assertRevoked(self.devs[0].cert, self.crl)
        self.assertNotRevoked(self.devs[1].cert, self.crl)

    def test_mbedtls_reads_the_crl(self):
        revoke(self.tmp, self.devs[0].cert, self.devs[1].cert, ca=self.ca, crl=self.crl)
        p = run_tool("pki_check", "crl", self.crl)
        self.assertEqual(p.stdout.splitlines()[:4], [
            "version 2",
            "revoked " + ":".join(re.findall("..", serial_of(self.devs[0].cert))),
            "revoked " + ":".join(re.findall("..", serial_of(self.devs[1].cert))),
            "crl_number 1"])

    def test_second_revocation_keeps_the_first(self):
        revoke(self.tmp, self.devs[0].cert, ca=self.ca, crl=self.crl)
        first = crl_entries(crl_text(self.crl))
        p = self.revoke_tool("--cert", self.devs[1].cert)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f"updated {self.crl} (CRL number 2, 2 revoked", p.stdout)
        text = crl_text(self.crl)
        entries = crl_entries(text)
        self.assertEqual(list(entries),
                         [serial_of(self.devs[0].cert), serial_of(self.devs[1].cert)])
        self.assertEqual(entries[serial_of(self.devs[0].cert)],
                         first[serial_of(self.devs[0].cert)])
        self.assertEqual(x509_extensions(text)["X509v3 CRL Number"], (False, "2"))
        self.assertCrlVerifies(self.crl)
        self.assertRevoked(self.devs[0].cert, self.crl)
        self.assertRevoked(self.devs[1].cert, self.crl)
        self.assertNotRevoked(self.devs[2].cert, self.crl)

    def test_revoking_twice_is_a_no_op(self):
        revoke(self.tmp, self.devs[0].cert, ca=self.ca, crl=self.crl)
        with open(self.crl, "rb") as f:
            before = f.read()
        p = self.revoke_tool("--cert", self.devs[0].cert)
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        self.assertIn(f"certificate '{self.devs[0].cert}' (serial", p.stdout)
        self.assertIn(f"is already revoked in {self.crl}", p.stdout)
        self.assertIn(f"nothing to do: {self.crl} is unchanged", p.stdout)
        with open(self.crl, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_several_certificates_and_days(self):
        p = self.revoke_tool("--cert", self.devs[0].cert, "--cert", self.server.cert,
                             "--days", "7")
        self.assertEqual(p.returncode, 0, p.stderr)
        text = crl_text(self.crl)
        self.assertEqual(set(crl_entries(text)),
                         {serial_of(self.devs[0].cert), serial_of(self.server.cert)})
        last, nxt = crl_dates(text)
        self.assertEqual(nxt - last, datetime.timedelta(days=7))
        self.assertRevoked(self.server.cert, self.crl)

    def test_refresh(self):
        p = self.revoke_tool("--refresh")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("(CRL number 1, 0 revoked", p.stdout)
        text = crl_text(self.crl)
        self.assertIn("No Revoked Certificates.", text)
        self.assertCrlVerifies(self.crl)
        self.assertNotRevoked(self.devs[0].cert, self.crl)
        self.assertEqual(run_tool("pki_check", "crl", self.crl).stdout.splitlines()[:2],
                         ["version 2", "crl_number 1"])

        revoke(self.tmp, self.devs[0].cert, ca=self.ca, crl=self.crl)
        p = self.revoke_tool("--refresh", "--days", "1")
        self.assertEqual(p.returncode, 0, p.stderr)
        text = crl_text(self.crl)
        self.assertEqual(x509_extensions(text)["X509v3 CRL Number"], (False, "3"))
        self.assertEqual(list(crl_entries(text)), [serial_of(self.devs[0].cert)])
        last, nxt = crl_dates(text)
        self.assertEqual(nxt - last, datetime.timedelta(days=1))
        self.assertRevoked(self.devs[0].cert, self.crl)

    def test_rsa_ca(self):
        ca = make_ca(self.tmp)
        dev = make_device(self.tmp, "rsa-dev", "example.com", ca=ca, key_type="ec")
        crl = revoke(self.tmp, dev.cert, ca=ca)
        self.assertIn("Signature Algorithm: sha256WithRSAEncryption", crl_text(crl))
        self.assertCrlVerifies(crl, ca)
        self.assertRevoked(dev.cert, crl, ca)

    def test_openssl_ca_and_crl(self):
        # A CA made by openssl (PKCS#8 key) whose CRL openssl started: revoke_creds keeps
        # openssl's entries and continues its CRL number.
        root = openssl_ca(self.tmp, name="root", key_type="ec")
        theirs = openssl_device(self.tmp, root, "theirs", "example.com", key_type="ec")
        ours = make_device(self.tmp, "ours", "example.com", ca=root, key_type="ec")
        crl = openssl_crl(self.tmp, root, [theirs.cert])
        number = int(x509_extensions(crl_text(crl))["X509v3 CRL Number"][1])
        p = self.revoke_tool("--cert", ours.cert, ca=root, crl=crl)
        self.assertEqual(p.returncode, 0, p.stderr)
        text = crl_text(crl)
        self.assertEqual(list(crl_entries(text)), [serial_of(theirs.cert), serial_of(ours.cert)])
        self.assertEqual(x509_extensions(text)["X509v3 CRL Number"][1], str(number + 1))
        self.assertCrlVerifies(crl, root)
        self.assertRevoked(theirs.cert, crl, root)
        self.assertRevoked(ours.cert, crl, root)

    def test_concurrent_runs_lose_nothing(self):
        procs = [subprocess.Popen([pki_tool("revoke_creds"), "--ca-key", self.ca.key,
                                   "--ca-crt", self.ca.cert, "--crl", self.crl, "--cert", d.cert],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for d in self.devs]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, 0, err)
        entries = crl_entries(crl_text(self.crl))
        self.assertEqual(set(entries), {serial_of(d.cert) for d in self.devs})
        self.assertEqual(x509_extensions(crl_text(self.crl))["X509v3 CRL Number"], (False, "3"))

    # --- bad input ----------------------------------------------------------------------------

    def assertRejected(self, exit_code, phrases, *args, **kw):
        before = dir_listing(self.tmp)
        contents = {}
        for name in before:
            path = os.path.join(self.tmp, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    contents[name] = f.read()
        p = self.revoke_tool(*args, **kw)
        self.assertToolFails(p, "revoke_creds", exit_code, *phrases)
        self.assertEqual(dir_listing(self.tmp), before)
        for name, data in contents.items():
            with open(os.path.join(self.tmp, name), "rb") as f:
                self.assertEqual(f.read(), data, f"{name} changed")

    def test_usage_errors(self):
        self.assertRejected(2, ["missing required option --cert (or --refresh"])
        self.assertRejected(2, ["--days '0' must be a whole number from 1 to 3650"], "--cert",
                            self.devs[0].cert, "--days", "0")
        self.assertRejected(2, ["--days '3651'"], "--refresh", "--days", "3651")
        self.assertRejected(2, ["option --crl is missing an argument"], "--refresh", "--crl")

    def test_certificates_it_must_refuse(self):
        garbage = os.path.join(self.tmp, "garbage.crt")
        with open(garbage, "w") as f:
            f.write("garbage\n")
        self.assertRejected(1, [f"certificate '{self.stranger.cert}' was not issued by CA "
                                f"certificate '{self.ca.cert}'"], "--cert", self.stranger.cert)
        self.assertRejected(1, [f"certificate '{self.ca.cert}' is the CA certificate itself"],
                            "--cert", self.ca.cert)
        self.assertRejected(1, ["cannot read certificate '/nonexistent.crt'"], "--cert",
                            "/nonexistent.crt")
        self.assertRejected(1, [f"certificate '{garbage}' is not a PEM or DER X.509 certificate"],
                            "--cert", garbage)
        # One bad certificate among good ones: nothing is revoked.
        self.assertRejected(1, ["was not issued by"], "--cert", self.devs[0].cert, "--cert",
                            self.stranger.cert)

    def test_crls_it_must_refuse(self):
        foreign = revoke(self.tmp, self.stranger.cert, ca=self.other,
                         crl=os.path.join(self.tmp, "foreign.crl"))
        self.assertRejected(1, [f"CRL '{foreign}' was not issued by CA certificate"], "--cert",
                            self.devs[0].cert, crl=foreign)

        garbage = os.path.join(self.tmp, "garbage.crl")
        with open(garbage, "w") as f:
            f.write("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
        self.assertRejected(1, [f"CRL '{garbage}' is not a PEM or DER X.509 CRL"], "--cert",
                            self.devs[0].cert, crl=garbage)

        # A CRL of this CA whose signature was tampered with.
        revoke(self.tmp, self.devs[0].cert, ca=self.ca, crl=self.crl)
        with open(self.crl) as f:
            body = "".join(f.read().splitlines()[1:-1])
        der = bytearray(base64.b64decode(body))
        der[-1] ^= 0x01
        tampered = os.path.join(self.tmp, "tampered.crl")
        with open(tampered, "wb") as f:
            f.write(bytes(der))
        self.assertRejected(1, [f"CRL '{tampered}' was not issued by CA certificate"], "--cert",
                            self.devs[1].cert, crl=tampered)

        self.assertRejected(1, ["cannot open directory '/nonexistent'"], "--cert",
                            self.devs[0].cert, crl="/nonexistent/ca.crl")

    def test_ca_that_may_not_sign_crls(self):
        ca = openssl_ca(self.tmp, name="certonly", key_type="ec", extensions=(
            "basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign\n"))
        dev = make_device(self.tmp, "d1", "example.com", ca=ca, key_type="ec")
        self.assertRejected(1, ["may not sign CRLs (its keyUsage lacks cRLSign)"], "--cert",
                            dev.cert, ca=ca)
        not_ca = Creds(self.devs[0].key, self.devs[0].cert)
        self.assertRejected(1, ["is not a CA certificate"], "--cert", self.devs[1].cert, ca=not_ca)
