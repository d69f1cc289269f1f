"""Running without root (issue 26; docs/operations.md, "Running as a service"): started as
root, the broker binds, loads its plugins and opens its store, then drops to the `user`
(checked in /proc: uids, gids, groups and capabilities of every thread); clients still
connect; a SIGHUP reload of the password file still works, and a file the user cannot read
is reported as such. Without a `user`, started as root, it drops to `mqgate`, or refuses to
start when there is no such user. These need root (as the suite runs here and in CI): they
are skipped, with a line saying so, otherwise."""
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import unittest
import uuid

import mqtt_raw as R
import pki
from mqgate_test import BROKER_BIN, BUILD_DIR, Broker, mqgate_user_lock, thread_status

IS_ROOT = os.geteuid() == 0
MQGATE_PASSWD = os.path.join(BUILD_DIR, "pki-tools", "mqgate_passwd")


def connack(port, username, password):
    c = R.RawClient(port)
    try:
        c.send(R.connect("probe-" + uuid.uuid4().hex[:8], username=username, password=password))
        return c.expect(R.CONNACK, timeout=10).return_code
    finally:
        c.sock.close()


@unittest.skipUnless(IS_ROOT, "not root: dropping privileges needs a broker started as root")
class DropTest(unittest.TestCase):
    def setUp(self):
        # A system user of our own, removed afterwards (unique: suites may run side by side).
        self.user = "mqgt" + uuid.uuid4().hex[:8]
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "--user-group", self.user], check=True, capture_output=True, timeout=30)
        self.addCleanup(subprocess.run, ["userdel", self.user], capture_output=True, timeout=30)
        pw = pwd.getpwnam(self.user)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.dir = tempfile.mkdtemp(prefix="mqgate-priv-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        # The user reads its configuration (SIGHUP) and owns the store's directory; the
        # password file is root's but readable.
        os.chown(self.dir, self.uid, self.gid)
        os.chmod(self.dir, 0o750)
        self.passwd = os.path.join(self.dir, "passwd")
        self.add_user("alice", "alice pw", create=True)
        os.chmod(self.passwd, 0o644)

    def add_user(self, name, password, create=False):
        args = [MQGATE_PASSWD] + (["-c"] if create else []) + ["-b", self.passwd, name, password]
        subprocess.run(args, check=True, capture_output=True, timeout=30)

    def config(self, user_line):
        return f"""
log_level = "debug"
{user_line}
[listeners.default]
bind = "127.0.0.1:0"
plugins = ["passwd"]

[persistence]
path = "{self.dir}/store/mqgate.db"

[plugins.passwd]
password_file = "{self.passwd}"
"""

    def start(self, user_line, extra_args=()):
        os.makedirs(os.path.join(self.dir, "store"), exist_ok=True)
        os.chown(os.path.join(self.dir, "store"), self.uid, self.gid)
        # run_as=[]: not the --user root the rest of the suite runs with.
        b = Broker(self.config(user_line), workdir=self.dir, extra_args=extra_args, run_as=[])
        os.chown(b.config_path, 0, self.gid)
        os.chmod(b.config_path, 0o640)
        self.addCleanup(b.close)
        return b

    def check_dropped(self, b):
        b.wait_log(rf"running as user {self.user} \(uid {self.uid}, gid {self.gid}\); root dropped")
        threads = thread_status(b.proc.pid)
        self.assertGreater(len(threads), 1)  # TLS/store/plugin threads are dropped as well
        for t in threads:
            self.assertEqual(t["Uid"].split(), [str(self.uid)] * 4, t["Name"])
            self.assertEqual(t["Gid"].split(), [str(self.gid)] * 4, t["Name"])
            self.assertEqual(t["Groups"].split(), [str(self.gid)], t["Name"])
            for cap in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
                self.assertEqual(int(t[cap], 16), 0, f"{cap} of {t['Name']}")

    def test_drop_connect_reload(self):
        b = self.start(f'user = "{self.user}"')
        self.check_dropped(b)
        self.assertEqual(connack(b.port(), "alice", "alice pw"), 0)
        self.assertEqual(connack(b.port(), "alice", "wrong"), 4)
        # The store's files, made by root before the drop, are the user's.
        for name in ("mqgate.db", "mqgate.db-wal", "mqgate.db-shm"):
            st = os.stat(os.path.join(self.dir, "store", name))
            self.assertEqual((st.st_uid, st.st_gid), (self.uid, self.gid), name)

        # SIGHUP re-reads the password file as the user.
        self.add_user("bob", "bob pw")
        os.chmod(self.passwd, 0o644)
        b.signal(signal.SIGHUP)
        b.wait_log(r"reloaded .*passwd: 2 users", timeout=15)
        self.assertEqual(connack(b.port(), "bob", "bob pw"), 0)

        # A file the user cannot read: the reload says so, the old users stay.
        os.chmod(self.passwd, 0o600)
        b.signal(signal.SIGHUP)
        b.wait_log(r"reload: password_file: .*passwd: Permission denied \(not readable by user "
                   + self.user + r"\); keeping the previous users", timeout=15)
        self.assertEqual(connack(b.port(), "bob", "bob pw"), 0)

        # The configuration itself unreadable: the same, for the whole reload.
        os.chmod(b.config_path, 0o600)
        b.signal(signal.SIGHUP)
        b.wait_log(r"cannot open config file: Permission denied \(not readable by user "
                   + self.user + r"\)")
        b.wait_log(r"reload failed; keeping the running configuration")
        self.assertEqual(connack(b.port(), "bob", "bob pw"), 0)
        self.assertEqual(b.stop(), 0)

    def test_tls_reload_after_drop(self):
        d = os.path.join(self.dir, "pki")
        os.makedirs(d)
        os.chmod(d, 0o755)
        ca = pki.make_ca(d, key_type="ec")
        server = pki.make_server(d, key_type="ec", san_ip=["127.0.0.1"])
        device = pki.make_device(d, "d1", "my.domain.name", key_type="ec")
        crl = pki.revoke(d, device.cert)
        # root's files, readable by the user's group (the CA's key stays root's alone)
        for f in (server.key, server.cert, ca.cert, crl):
            os.chown(f, 0, self.gid)
            os.chmod(f, 0o640)
        tls = (f'[listeners.tls]\nbind = "127.0.0.1:0"\nssl = true\ncertfile = "{server.cert}"\n'
               f'keyfile = "{server.key}"\ncafile = "{ca.cert}"\ncrlfile = "{crl}"\n'
               'client_cert = "optional"\nplugins = ["passwd"]\n')
        os.makedirs(os.path.join(self.dir, "store"), exist_ok=True)
        os.chown(os.path.join(self.dir, "store"), self.uid, self.gid)
        b = Broker(self.config(f'user = "{self.user}"') + tls, workdir=self.dir, run_as=[])
        self.addCleanup(b.close)
        os.chmod(b.config_path, 0o644)
        self.check_dropped(b)
        self.assertNotIn("WARN", b.log())

        def handshake():
            ctx = ssl.create_default_context(cafile=ca.cert)
            with socket.create_connection(("127.0.0.1", b.port("tls")), timeout=10) as s:
                with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
                    return t.version()

        self.assertEqual(handshake(), "TLSv1.2")
        # SIGHUP re-reads the key, certificates and CRL as the user.
        b.signal(signal.SIGHUP)
        b.wait_log(r'reload: listener "tls": TLS ')
        self.assertEqual(handshake(), "TLSv1.2")
        # The key no longer readable by the user: the reload says so and keeps the old one.
        os.chmod(server.key, 0o600)
        b.signal(signal.SIGHUP)
        b.wait_log(r'reload: listener "tls": keyfile \S*server\.key: cannot open: Permission '
                   r"denied \(not readable by user " + self.user + r"\); keeping the previous TLS "
                   r"material", timeout=15)
        self.assertEqual(handshake(), "TLSv1.2")

    def test_user_flag_overrides_the_key(self):
        b = self.start('user = "root"', extra_args=["--user", self.user])
        self.check_dropped(b)
        self.assertEqual(connack(b.port(), "alice", "alice pw"), 0)

    def test_store_directory_not_writable_is_warned(self):
        store = os.path.join(self.dir, "store")
        os.makedirs(store, exist_ok=True)
        b = Broker(self.config(f'user = "{self.user}"'), workdir=self.dir, run_as=[], wait=False)
        self.addCleanup(b.close)
        b.wait_listening()
        self.check_dropped(b)
        b.wait_log(re.escape(store) + r": Permission denied \(not writable by user " + self.user +
                   r"\); the store's directory must be writable")
        self.assertEqual(connack(b.port(), "alice", "alice pw"), 0)


class UserKeyTest(unittest.TestCase):
    """The `user` key's values are checked whoever starts the broker."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mqgate-priv-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def run_broker(self, text, *args):
        return RefuseRootTest.run_broker(self, text, *args)

    def test_bad_user_values(self):
        for bad in ('""', '"-rf"', '"a b"', '"x/y"', "1", '"' + "a" * 33 + '"'):
            rc, out = self.run_broker(f"user = {bad}\n")
            self.assertEqual(rc, 1, out)
            self.assertRegex(out, r"mqgate\.toml:1:\d+: user: expected (a user name|a string)")
            self.assertNotIn("listening on", out)


@unittest.skipUnless(IS_ROOT, "not root: the refusal to run as root needs a broker started as root")
class RefuseRootTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mqgate-priv-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def run_broker(self, text, *args):
        path = os.path.join(self.dir, "mqgate.toml")
        with open(path, "w") as f:
            f.write(text + '[listeners.default]\nbind = "127.0.0.1:0"\n')
        p = subprocess.run([BROKER_BIN, "--config", path, *args], capture_output=True, text=True,
                           timeout=20)
        return p.returncode, p.stdout + p.stderr

    def test_no_default_user(self):
        with mqgate_user_lock():  # test_package.py creates the user for a while
            try:
                pwd.getpwnam("mqgate")
                self.skipTest("this machine has a user mqgate: the broker would drop to it")
            except KeyError:
                pass
            for args in ((), ("--check-config",)):
                rc, out = self.run_broker("", *args)
                self.assertEqual(rc, 1, out)
                self.assertIn('started as root, and there is no user "mqgate" to run as', out)
                self.assertIn('user = "root"', out)
                self.assertNotIn("listening on", out)

    def test_unknown_user(self):
        rc, out = self.run_broker('user = "no-such-user-26"\n')
        self.assertEqual(rc, 1, out)
        self.assertIn('mqgate.toml:1: user: there is no user "no-such-user-26" on this system', out)
        rc, out = self.run_broker("", "--user", "no-such-user-26")
        self.assertEqual(rc, 1, out)
        self.assertIn('--user: there is no user "no-such-user-26" on this system', out)

    def test_root_explicitly(self):
        rc, out = self.run_broker('user = "root"\n', "--check-config")
        self.assertEqual(rc, 0, out)


if __name__ == "__main__":
    unittest.main()
