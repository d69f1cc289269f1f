"""The Debian package (issue 26; docs/operations.md, "The Debian package"): scripts/package.sh
builds mqgate and mqgate-dev once (lintian: no errors or warnings) and `dpkg -i` installs
them. Then: the files, the conffiles, the user mqgate, /var/lib/mqgate and the password
file's owner and mode are as the docs say; the installed unit passes `systemd-analyze
verify` and keeps its security score; the installed broker, started as root in the
foreground (not by systemd) on the packaged /etc/mqgate/mqgate.toml (only its port made 0),
runs as mqgate with no capability in any thread, a user added with mqgate_passwd gets in
after a SIGHUP, and a retained QoS 1 message survives a restart in /var/lib/mqgate;
installed again, the edited configuration stays; `dpkg -r` keeps the configuration and the
state, `dpkg -P` removes both. The packages are purged afterwards (and the user mqgate
removed if the test made it), even on failure.

Skipped, with a line saying why: not root, no dpkg-buildpackage, systemd running (the
package would start the service), mqgate already installed or /etc/mqgate or
/var/lib/mqgate already there (an operator's: never purged by a test), or
MQGATE_SKIP_PACKAGE=1. Building takes minutes the first time (ccache: about one after)."""
# run.py: timeout 1200
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import unittest

import mqtt_raw as R
from mqgate_test import SOURCE_DIR, Broker, mqgate_user_lock, thread_status

CONF = "/etc/mqgate/mqgate.toml"
PASSWD = "/etc/mqgate/passwd"
STATE = "/var/lib/mqgate"
UNIT = "/lib/systemd/system/mqgate.service"
# Left while the packages are installed: a run killed by the runner's timeout is cleaned
# up by the next one.
MARKER = "/var/tmp/mqgate-test-package.installed"


def run(*cmd, timeout=120, **kw):
    # stdin: none, so that a question (a conffile prompt) fails instead of waiting
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, **kw)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n"
                             f"{p.stderr[-3000:]}")
    return p.stdout


def installed(package):
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True,
                       text=True)
    status = p.stdout.strip()  # "install ok installed", "deinstall ok config-files", ...
    return "" if status.endswith("not-installed") else status


def purge():
    subprocess.run(["dpkg", "-P", "mqgate-dev", "mqgate"], capture_output=True, timeout=120)


def why_skip():
    if os.environ.get("MQGATE_SKIP_PACKAGE") == "1":
        return "MQGATE_SKIP_PACKAGE=1"
    if os.geteuid() != 0:
        return "not root: dpkg -i needs root"
    if not shutil.which("dpkg-buildpackage") or not shutil.which("dh"):
        return "no dpkg-buildpackage or debhelper (scripts/deps.sh package installs them)"
    if os.path.isdir("/run/systemd/system"):
        return "systemd is running: the package would start mqgate.service itself"
    if os.path.exists(MARKER):
        purge()  # left by a run that was killed
        os.unlink(MARKER)
    if installed("mqgate") or installed("mqgate-dev"):
        return "the mqgate package is installed on this machine: not replaced by a test"
    for path in ("/etc/mqgate", STATE):
        if os.path.exists(path):
            return f"{path} exists on this machine: a test would not purge it"
    return None


def connack(port, username, password):
    c = R.RawClient(port)
    try:
        c.send(R.connect("pkg-probe", username=username, password=password))
        return c.expect(R.CONNACK, timeout=10).return_code
    finally:
        c.sock.close()


SKIP = why_skip()


@unittest.skipIf(SKIP, SKIP)
class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        out = run(os.path.join(SOURCE_DIR, "scripts", "package.sh"), timeout=1100,
                  cwd=SOURCE_DIR)
        cls.debs = [line for line in out.splitlines() if line.endswith(".deb")]
        assert len(cls.debs) == 2, out
        cls.lock = mqgate_user_lock()
        cls.lock.__enter__()
        cls.addClassCleanup(cls.lock.__exit__, None, None, None)
        try:
            pwd.getpwnam("mqgate")
            had_user = True
        except KeyError:
            had_user = False
        if not had_user:
            cls.addClassCleanup(subprocess.run, ["userdel", "mqgate"], capture_output=True)
        cls.addClassCleanup(lambda: os.path.exists(MARKER) and os.unlink(MARKER))
        cls.addClassCleanup(purge)
        open(MARKER, "w").close()
        run("dpkg", "-i", *cls.debs)

    def test_a_installed_files(self):
        files = run("dpkg", "-L", "mqgate").split()
        for f in ("/usr/sbin/mqgate", "/usr/bin/mqgate_passwd", "/usr/bin/ca_creds",
                  "/usr/bin/server_creds", "/usr/bin/device_creds", "/usr/bin/revoke_creds",
                  "/usr/bin/device_enroll",
                  UNIT, CONF, PASSWD, "/usr/share/man/man8/mqgate.8.gz",
                  "/usr/share/man/man5/mqgate.toml.5.gz",
                  "/usr/share/man/man1/mqgate_passwd.1.gz", "/usr/share/man/man1/ca_creds.1.gz"):
            self.assertIn(f, files)
            self.assertTrue(os.path.exists(f), f)
        plugins = [f for f in files if f.endswith(".so")]
        self.assertEqual(sorted(os.path.basename(f) for f in plugins),
                         ["acl.so", "anonymous.so", "certauth.so", "passwd.so"])
        conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "mqgate")
        self.assertIn(CONF, conffiles)
        self.assertIn(PASSWD, conffiles)

        user = pwd.getpwnam("mqgate")
        self.assertEqual((user.pw_dir, user.pw_shell), (STATE, "/usr/sbin/nologin"))
        self.assertLess(user.pw_uid, 1000)  # a system user
        st = os.stat(STATE)
        self.assertEqual((st.st_uid, st.st_gid, st.st_mode & 0o7777),
                         (user.pw_uid, user.pw_gid, 0o750))
        st = os.stat(PASSWD)
        self.assertEqual((st.st_uid, st.st_gid, st.st_mode & 0o7777), (0, user.pw_gid, 0o640))

        # mqgate-dev: plugin authors find the header and the broker's plugin directory.
        self.assertTrue(os.path.isfile("/usr/include/mqgate/mqgate_plugin.h"))
        self.assertEqual(run("pkg-config", "--variable=plugindir", "mqgate-plugin").strip(),
                         os.path.dirname(plugins[0]))

    def test_b_unit(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze is not installed")
        p = subprocess.run(["systemd-analyze", "verify", UNIT], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertNotIn("mqgate.service:", p.stdout + p.stderr)
        out = run("systemd-analyze", "security", "--offline=true", UNIT, timeout=60)
        score = re.search(r"Overall exposure level for mqgate\.service: (\d+\.\d+)", out)
        with open(os.path.join(SOURCE_DIR, "docs", "operations.md")) as f:
            documented = re.search(r"exposure level \*\*(\d+\.\d+) OK\*\*", f.read())
        self.assertLessEqual(float(score.group(1)), float(documented.group(1)), score.group(0))

    def test_c_broker_as_root(self):
        with open(CONF) as f:
            text = f.read()
        self.assertIn('bind = "127.0.0.1:1883"', text)
        # The only change: any free port (the operator's edit dpkg -r must keep).
        with open(CONF, "w") as f:
            f.write(text.replace('bind = "127.0.0.1:1883"', 'bind = "127.0.0.1:0"'))
        user = pwd.getpwnam("mqgate")
        work = tempfile.mkdtemp(prefix="mqgate-pkg-")  # the broker's log only
        self.addCleanup(shutil.rmtree, work, True)

        def start():
            # As root, no --user: the packaged configuration has no `user` either.
            b = Broker(None, config_file=CONF, workdir=work, run_as=[],
                       binary="/usr/sbin/mqgate")
            self.addCleanup(b.close)
            b.wait_log(rf"running as user mqgate \(uid {user.pw_uid}, gid {user.pw_gid}\); "
                       r"root dropped")
            return b

        b = start()
        self.assertNotIn("WARN", b.log())
        threads = thread_status(b.proc.pid)
        for t in threads:
            self.assertEqual(t["Uid"].split(), [str(user.pw_uid)] * 4, t["Name"])
            self.assertEqual(t["Gid"].split(), [str(user.pw_gid)] * 4, t["Name"])
            for cap in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
                self.assertEqual(int(t[cap], 16), 0, f"{cap} of {t['Name']}")

        # Installed with no users: nobody gets in; mqgate_passwd + SIGHUP lets alice in.
        self.assertNotEqual(connack(b.port(), "alice", "alice pw"), 0)
        run("/usr/bin/mqgate_passwd", "-b", PASSWD, "alice", "alice pw")
        b.signal(signal.SIGHUP)
        b.wait_log(r"reloaded .*passwd: 1 users?", timeout=15)
        self.assertEqual(connack(b.port(), "alice", "alice pw"), 0)
        self.assertEqual(connack(b.port(), "alice", "wrong"), 4)

        c = R.RawClient(b.port())
        self.assertEqual(c.connect("pkg-pub", username="alice", password="alice pw").return_code,
                         0)
        c.send(R.publish("pkg/state", b"kept", qos=1, retain=True, packet_id=1))
        c.expect(R.PUBACK)  # durability "sync": on disk in /var/lib/mqgate
        c.sock.close()
        self.assertEqual(b.stop(), 0)
        st = os.stat(os.path.join(STATE, "mqgate.db"))
        self.assertEqual((st.st_uid, st.st_gid), (user.pw_uid, user.pw_gid))

        b = start()
        c = R.RawClient(b.port())
        self.assertEqual(c.connect("pkg-sub", username="alice", password="alice pw").return_code,
                         0)
        c.subscribe([("pkg/state", 1)])
        p = c.next_publish(timeout=10)
        self.assertEqual((p.topic, p.payload, p.retain), ("pkg/state", b"kept", True))
        c.sock.close()
        self.assertEqual(b.stop(), 0)

    def test_d_reinstall_remove_purge(self):
        # Installed again (as an upgrade is): the operator's edited configuration is kept
        # without a question, and the maintainer scripts run twice without harm.
        with open(CONF, "a") as f:
            f.write("# edited by the operator\n")
        run("dpkg", "-i", *self.debs)
        with open(CONF) as f:
            self.assertTrue(f.read().endswith("# edited by the operator\n"))
        self.assertEqual(os.stat(PASSWD).st_mode & 0o777, 0o640)

        run("dpkg", "-r", "mqgate-dev", "mqgate")
        self.assertEqual(installed("mqgate"), "deinstall ok config-files")
        self.assertFalse(os.path.exists("/usr/sbin/mqgate"))
        self.assertTrue(os.path.isfile(CONF))
        self.assertTrue(os.path.isdir(STATE))
        run("dpkg", "-P", "mqgate")
        self.assertEqual(installed("mqgate"), "")
        for path in ("/etc/mqgate", STATE, UNIT):
            self.assertFalse(os.path.exists(path), path)
        self.assertNotIn("/etc/mqgate/passwd", run("dpkg-statoverride", "--list"))


if __name__ == "__main__":
    unittest.main()
