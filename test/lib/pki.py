"""Test credentials: CAs, server and device keys and certificates, and CRLs.

Made with mqgate's own PKI tools (make_ca, make_server, make_device, revoke) or with the
openssl command line (openssl_ca, openssl_intermediate, openssl_server, openssl_device,
openssl_crl), always inside a directory the caller owns, normally a test's temp dir.
Every function returns paths; nothing is cached between calls, except the small openssl
`ca` database each openssl issuer keeps in a hidden folder beside its files.

    ca = make_ca(tmp)                                   # tmp/ca.key, tmp/ca.crt
    server = make_server(tmp, cn="localhost")           # tmp/server.key, tmp/server.crt
    dev = make_device(tmp, "dev1", "example.com")       # tmp/dev1.key, tmp/dev1.crt
    crl = revoke(tmp, dev.cert)                         # tmp/ca.crl

    root = openssl_ca(tmp, name="root", key_type="ec")
    inter = openssl_intermediate(tmp, root)             # signed by root
    old = openssl_device(tmp, inter, "dev2", "example.com", expired=True)
    # old.chain is dev2.crt + inter.crt: what a device presents.

RSA key generation is the slow part (mbedTLS: up to ~1 s for 2048 bits, openssl is
faster): make one CA per test file (setUpClass) and prefer key_type="ec" where the key
type does not matter.
"""
import datetime
import os
import shutil
import stat
import subprocess
import tempfile
import unittest
from dataclasses import dataclass
from typing import Optional, Sequence

from mqgate_test import pki_tool

OPENSSL = "/usr/bin/openssl"
TIMEOUT_S = 60


@dataclass(frozen=True)
class Creds:
    """A key and its certificate. `ca` is the issuer's certificate (None for a root);
    `chain` is a PEM file with the certificate followed by any intermediates, i.e. what
    its owner presents in a TLS handshake (the certificate alone when issued by a root).
    """
    key: str
    cert: str
    ca: Optional[str] = None
    chain: Optional[str] = None


class PkiError(AssertionError):
    """A tool or openssl command failed; the message carries its output."""


def _run(cmd, cwd=None, check=True, timeout=TIMEOUT_S, input=None, preexec_fn=None):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       input=input, preexec_fn=preexec_fn)
    if check and p.returncode != 0:
        raise PkiError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p


# --- mqgate's tools ---------------------------------------------------------------------

def run_tool(name, *args, cwd=None, check=True, timeout=TIMEOUT_S):
    """Runs one of ca_creds, server_creds, device_creds, revoke_creds (or pki_check).
    Returns the CompletedProcess (text); with check, raises PkiError on a non-zero exit."""
    return _run([pki_tool(name), *map(str, args)], cwd=cwd, check=check, timeout=timeout)


NOBODY = 65534


def _drop_to_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def run_tool_unprivileged(name, *args, cwd):
    """Runs a tool as user nobody when the tests run as root (root writes anywhere, so
    permission errors need another user). The binary is run from a copy in a fresh
    world-readable directory, in case the build directory is not readable by nobody; cwd
    and the files the tool reads must be. Returns the CompletedProcess, unchecked."""
    if os.geteuid() != 0:
        return run_tool(name, *args, cwd=cwd, check=False)
    bindir = tempfile.mkdtemp(prefix="mqgate-pki-bin-")
    try:
        os.chmod(bindir, 0o755)
        exe = os.path.join(bindir, name)
        shutil.copy(pki_tool(name), exe)
        os.chmod(exe, 0o755)
        return _run([exe, *map(str, args)], cwd=cwd, check=False, preexec_fn=_drop_to_nobody)
    finally:
        shutil.rmtree(bindir, ignore_errors=True)


def _common(key_type, days, output_dir, force):
    args = []
    if key_type:
        args += ["--key-type", key_type]
    if days is not None:
        args += ["--days", days]
    if output_dir is not None:
        args += ["--output-dir", output_dir]
    if force:
        args.append("--force")
    return args


def _ca_args(ca):
    return ["--ca-key", ca.key, "--ca-crt", ca.cert] if ca is not None else []


def default_ca(dir):
    """The CA make_ca(dir) writes: dir/ca.key and dir/ca.crt."""
    return Creds(os.path.join(dir, "ca.key"), os.path.join(dir, "ca.crt"))


def make_ca(dir, key_type="rsa", cn="mqgate test CA", org="mqgate tests", country="US",
            state="NY", locality="NY", days=None, force=False):
    """ca_creds: dir/ca.key, dir/ca.crt."""
    run_tool("ca_creds", "--country", country, "--state", state, "--locality", locality,
             "--org-name", org, "--cn", cn, *_common(key_type, days, None, force), cwd=dir)
    return default_ca(dir)


def make_server(dir, cn="localhost", ca=None, key_type="rsa", san_dns=(), san_ip=(),
                org="mqgate tests", country="US", days=None, output_dir=None, force=False):
    """server_creds signed by `ca` (default: dir/ca.*): <output_dir or dir>/server.*"""
    ca = ca or default_ca(dir)
    args = ["--country", country, "--org-name", org, "--cn", cn, *_ca_args(ca)]
    for name in san_dns:
        args += ["--san-dns", name]
    for ip in san_ip:
        args += ["--san-ip", ip]
    run_tool("server_creds", *args, *_common(key_type, days, output_dir, force), cwd=dir)
    out = dir if output_dir is None else os.path.join(dir, output_dir)
    cert = os.path.join(out, "server.crt")
    return Creds(os.path.join(out, "server.key"), cert, ca.cert, cert)


def make_device(dir, device_id, uri, ca=None, key_type="rsa", org="mqgate tests",
                country="US", days=None, output_dir=None, force=False):
    """device_creds signed by `ca` (default: dir/ca.*): <output_dir or dir>/<id>.*"""
    ca = ca or default_ca(dir)
    run_tool("device_creds", "--country", country, "--org-name", org, "--device-id",
             device_id, "--uri", uri, *_ca_args(ca),
             *_common(key_type, days, output_dir, force), cwd=dir)
    out = dir if output_dir is None else os.path.join(dir, output_dir)
    cert = os.path.join(out, device_id + ".crt")
    return Creds(os.path.join(out, device_id + ".key"), cert, ca.cert, cert)


def revoke(dir, *certs, ca=None, crl=None, days=None, refresh=False):
    """revoke_creds: adds each certificate to the CRL (default dir/ca.crl); returns its path."""
    ca = ca or default_ca(dir)
    crl = crl or os.path.join(dir, "ca.crl")
    args = [*_ca_args(ca), "--crl", crl]
    for cert in certs:
        args += ["--cert", cert]
    if days is not None:
        args += ["--days", days]
    if refresh:
        args.append("--refresh")
    run_tool("revoke_creds", *args, cwd=dir)
    return crl


# --- openssl ----------------------------------------------------------------------------

def openssl(*args, cwd=None, check=True, input=None):
    return _run([OPENSSL, *map(str, args)], cwd=cwd, check=check, input=input)


def openssl_key(path, key_type="rsa", bits=2048):
    """A PKCS#8 PEM key ("BEGIN PRIVATE KEY"), as openssl 3 writes by default."""
    if key_type == "rsa":
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}",
                "-out", path)
    elif key_type == "ec":
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", path)
    else:
        raise ValueError(key_type)
    os.chmod(path, 0o600)
    return path


_CA_EXTENSIONS = """
basicConstraints = critical, CA:TRUE{pathlen}
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
{aki}
"""


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def _read(path):
    with open(path) as f:
        return f.read()


def _subject(cn, org="openssl tests", country="US"):
    return f"/C={country}/O={org}/CN={cn}"


def openssl_ca(dir, name="ca", key_type="rsa", cn=None, days=365, extensions=None):
    """A self-signed root made with `openssl req -x509`: dir/<name>.key (PKCS#8), .crt.
    `extensions` replaces the v3 extensions (an openssl extension section body)."""
    key = openssl_key(os.path.join(dir, name + ".key"), key_type)
    cert = os.path.join(dir, name + ".crt")
    ext = extensions if extensions is not None else _CA_EXTENSIONS.format(pathlen="", aki="")
    cfg = _write(os.path.join(dir, f".{name}-req.cnf"),
                 "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n[ext]\n" + ext)
    openssl("req", "-x509", "-new", "-config", cfg, "-extensions", "ext", "-key", key,
            "-subj", _subject(cn or f"openssl {name}"), "-days", days, "-sha256",
            "-set_serial", "0x" + os.urandom(16).hex(), "-out", cert)
    return Creds(key, cert)


def _issuer_dir(issuer):
    """The openssl `ca` database of an issuer: a hidden folder beside its certificate."""
    base = os.path.splitext(issuer.cert)[0]
    d = os.path.join(os.path.dirname(base), "." + os.path.basename(base) + "-openssl-ca")
    if not os.path.isdir(d):
        os.makedirs(os.path.join(d, "newcerts"))
        _write(os.path.join(d, "index.txt"), "")
        _write(os.path.join(d, "crlnumber"), "1000\n")
        _write(os.path.join(d, "serial"), "1000\n")  # unused: -rand_serial
        _write(os.path.join(d, "openssl.cnf"), f"""
[ca]
default_ca = issuer
[issuer]
dir = {d}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
crlnumber = $dir/crlnumber
serial = $dir/serial
default_md = sha256
default_crl_days = 30
policy = policy_any
unique_subject = no
email_in_dn = no
[policy_any]
countryName = optional
organizationName = optional
commonName = supplied
[crl_ext]
authorityKeyIdentifier = keyid:always
""")
    return d


def _utc(dt):
    return dt.strftime("%Y%m%d%H%M%SZ")


def openssl_sign(dir, issuer, name, subject, extensions, key_type="rsa",
                 not_before=None, not_after=None, days=365):
    """Signs a new key with `openssl ca`: dir/<name>.key (PKCS#8), dir/<name>.crt.
    `extensions` is an openssl extension section body; validity defaults to now .. +days
    (not_before/not_after are datetimes, e.g. in the past for an expired certificate)."""
    d = _issuer_dir(issuer)
    key = openssl_key(os.path.join(dir, name + ".key"), key_type)
    csr = os.path.join(d, name + ".csr")
    cert = os.path.join(dir, name + ".crt")
    openssl("req", "-new", "-key", key, "-subj", subject, "-out", csr,
            "-config", _write(os.path.join(d, "req.cnf"),
                              "[req]\ndistinguished_name = dn\n[dn]\n"))
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = not_before or now - datetime.timedelta(minutes=5)
    not_after = not_after or now + datetime.timedelta(days=days)
    ext = _write(os.path.join(d, name + ".ext"), "[ext]\n" + extensions)
    openssl("ca", "-batch", "-config", os.path.join(d, "openssl.cnf"), "-cert", issuer.cert,
            "-keyfile", issuer.key, "-in", csr, "-out", cert, "-notext", "-rand_serial",
            "-startdate", _utc(not_before), "-enddate", _utc(not_after),
            "-extfile", ext, "-extensions", "ext")
    chain = cert
    if issuer.ca:  # an intermediate issued it: present the intermediates too
        chain = os.path.join(dir, name + ".chain.pem")
        _write(chain, _read(cert) + _read(issuer.chain))
    return Creds(key, cert, issuer.cert, chain)


def openssl_intermediate(dir, parent, name="intermediate", key_type="ec", cn=None, days=365,
                         expired=False):
    """An intermediate CA signed by `parent` (pathlen 0). Leaves it signs get a `chain` of
    leaf + intermediate."""
    ext = _CA_EXTENSIONS.format(pathlen=", pathlen:0",
                                aki="authorityKeyIdentifier = keyid:always")
    return openssl_sign(dir, parent, name, _subject(cn or f"openssl {name}"), ext,
                        key_type=key_type, days=days, **_expired(expired))


_LEAF_EXTENSIONS = """
basicConstraints = critical, CA:FALSE
keyUsage = critical, {ku}
extendedKeyUsage = {eku}
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


def openssl_server(dir, issuer, name="server", cn="localhost", san=None, key_type="rsa",
                   expired=False, **kw):
    """A server certificate (serverAuth) like server_creds makes, signed by openssl."""
    san = san or f"DNS:{cn}, IP:127.0.0.1"
    ku = "digitalSignature, keyEncipherment" if key_type == "rsa" else "digitalSignature"
    ext = _LEAF_EXTENSIONS.format(ku=ku, eku="serverAuth", san=san)
    return openssl_sign(dir, issuer, name, _subject(cn), ext, key_type=key_type,
                        **_expired(expired), **kw)


def openssl_device(dir, issuer, device_id, uri, name=None, key_type="rsa", san=None,
                   expired=False, **kw):
    """A device certificate (clientAuth, CN and SPIFFE URI from the id) like device_creds
    makes, signed by openssl. `san` overrides the subjectAltName (openssl syntax), e.g.
    to test certificates without a URI."""
    san = san or f"URI:spiffe://{uri}/device/{device_id}, DNS:{device_id}.local"
    ext = _LEAF_EXTENSIONS.format(ku="digitalSignature", eku="clientAuth", san=san)
    return openssl_sign(dir, issuer, name or device_id, _subject(device_id), ext,
                        key_type=key_type, **_expired(expired), **kw)


def _expired(expired):
    if not expired:
        return {}
    now = datetime.datetime.now(datetime.timezone.utc)
    return {"not_before": now - datetime.timedelta(days=30),
            "not_after": now - datetime.timedelta(days=1)}


def openssl_crl(dir, issuer, revoked: Sequence[str] = (), name="openssl", days=30):
    """A CRL by `openssl ca -gencrl` for an issuer made here, revoking the certificates in
    `revoked` (which that issuer signed with openssl_sign): dir/<name>.crl."""
    d = _issuer_dir(issuer)
    cfg = os.path.join(d, "openssl.cnf")
    for cert in revoked:
        openssl("ca", "-config", cfg, "-cert", issuer.cert, "-keyfile", issuer.key,
                "-revoke", cert)
    crl = os.path.join(dir, name + ".crl")
    openssl("ca", "-gencrl", "-config", cfg, "-cert", issuer.cert, "-keyfile", issuer.key,
            "-crldays", days, "-crlexts", "crl_ext", "-out", crl)
    return crl


# --- inspection -------------------------------------------------------------------------

def x509_text(cert):
    """`openssl x509 -text` of a certificate."""
    return openssl("x509", "-in", cert, "-noout", "-text").stdout


def crl_text(crl):
    return openssl("crl", "-in", crl, "-noout", "-text").stdout


def serial_of(cert):
    """The serial as openssl prints it: upper-case hex without separators."""
    out = openssl("x509", "-in", cert, "-noout", "-serial").stdout.strip()
    return out.split("=", 1)[1].upper()


def subject_of(cert):
    """`C = US, O = ..., CN = ...` as openssl prints it."""
    return openssl("x509", "-in", cert, "-noout", "-subject").stdout.strip().split("=", 1)[1]


def issuer_of(cert):
    return openssl("x509", "-in", cert, "-noout", "-issuer").stdout.strip().split("=", 1)[1]


def cert_dates(cert):
    """(notBefore, notAfter) as aware UTC datetimes."""
    out = openssl("x509", "-in", cert, "-noout", "-startdate", "-enddate").stdout
    dates = dict(line.split("=", 1) for line in out.strip().splitlines())
    parse = lambda text: datetime.datetime.strptime(text, "%b %d %H:%M:%S %Y GMT").replace(
        tzinfo=datetime.timezone.utc)
    return parse(dates["notBefore"]), parse(dates["notAfter"])


def x509_extensions(text):
    """The v3 extensions in `openssl x509 -text` or `openssl crl -text` output, as
    {name: (critical, value)}, e.g. {"X509v3 Key Usage": (True, "Certificate Sign, CRL
    Sign")}. Multi-line values are joined with newlines."""
    lines = text.splitlines()
    found = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() in ("X509v3 extensions:", "CRL extensions:"):
            indent = len(line) - len(line.lstrip())
            i += 1
            while i < len(lines):
                head = lines[i]
                head_indent = len(head) - len(head.lstrip())
                if head_indent <= indent or not head.strip():
                    break
                name, _, flag = head.strip().partition(":")
                values = []
                i += 1
                while i < len(lines) and len(lines[i]) - len(lines[i].lstrip()) > head_indent:
                    values.append(lines[i].strip())
                    i += 1
                found[name] = (flag.strip() == "critical", "\n".join(values))
            continue
        i += 1
    return found


def openssl_verify(ca, cert, purpose=None, crl=None, untrusted=None):
    """`openssl verify`; returns the CompletedProcess (check .returncode, .stdout)."""
    args = ["verify", "-CAfile", ca]
    if purpose:
        args += ["-purpose", purpose]
    if crl:
        args += ["-crl_check", "-CRLfile", crl]
    if untrusted:
        args += ["-untrusted", untrusted]
    p = openssl(*args, cert, check=False)
    p.stdout += p.stderr
    return p


def file_mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def dir_listing(dir):
    """Every entry under dir (hidden ones too), as sorted relative paths."""
    found = []
    for root, dirs, files in os.walk(dir):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(root, name), dir))
    return sorted(found)


# --- unittest base ----------------------------------------------------------------------

class PkiTestCase(unittest.TestCase):
    """A test case with a temp dir per test (self.tmp) and one per class (cls.shared, for
    the CAs a class makes once in setUpClass; call super().setUpClass() first)."""

    @classmethod
    def setUpClass(cls):
        cls.shared = tempfile.mkdtemp(prefix="mqgate-pki-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.shared, ignore_errors=True)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mqgate-pki-case-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def assertToolFails(self, result, tool, exit_code, *phrases):
        """A clean failure: the exit code, and exactly one line `<tool>: error: ...` on
        stderr containing every phrase; no crash, trace or sanitizer report."""
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, exit_code, output)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, f"expected one error line, got:\n{result.stderr}")
        self.assertTrue(lines[0].startswith(f"{tool}: error: "), lines[0])
        for phrase in phrases:
            self.assertIn(phrase, lines[0])
        return lines[0]

    def assertFilesUnchanged(self, dir, before):
        """dir holds exactly `before` (a dir_listing taken earlier): nothing was added."""
        self.assertEqual(dir_listing(dir), before)
