"""`meson install` (issue 26; docs/operations.md, "Running as a service"): a build of its
own (build-install/, plain, no tests, prefix build-install-prefix/; incremental after
the first run) installed with
--destdir puts every file where the docs say; installed into its prefix, the installed
broker starts from the installed configuration (adapted: an ephemeral port, a temp store)
and finds the passwd plugin in the installed plugin directory (a client with a password
made by the installed mqgate_passwd gets in, a wrong one does not), and pkg-config finds
mqgate-plugin.pc. Skipped, with a line saying why, without meson or ninja."""
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import unittest

import mqtt_raw as R
from mqgate_test import SOURCE_DIR, Broker

BUILD = os.path.join(SOURCE_DIR, "build-install")
# Outside the build dir: a broker run from inside it takes the build's plugins.
PREFIX = os.path.join(SOURCE_DIR, "build-install-prefix")
HAVE_TOOLS = all(shutil.which(t) for t in ("meson", "ninja", "pkg-config"))
HAVE_SCDOC = shutil.which("scdoc") is not None


def run(*cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=540, **kw)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n"
                             f"{p.stderr[-3000:]}")
    return p.stdout


def introspect_dirs():
    import json
    opts = json.loads(run("meson", "introspect", BUILD, "--buildoptions"))
    return {o["name"]: o["value"] for o in opts}


@unittest.skipUnless(HAVE_TOOLS, "meson, ninja or pkg-config missing: meson install not tested")
class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.isfile(os.path.join(BUILD, "build.ninja")):
            # plain: no optimisation, the quickest build; the tests are not installed.
            run("meson", "setup", BUILD, f"--prefix={PREFIX}", "--buildtype=plain",
                "-Dtests=false", cwd=SOURCE_DIR)
        elif introspect_dirs()["prefix"] != PREFIX:
            run("meson", "configure", BUILD, f"--prefix={PREFIX}")
        run("ninja", "-C", BUILD, "-j2")
        o = introspect_dirs()
        cls.dirs = {k: os.path.join(PREFIX, o[k]) for k in
                    ("bindir", "sbindir", "libdir", "includedir", "sysconfdir")}
        cls.plugin_dir = os.path.join(cls.dirs["libdir"], "mqgate", "plugins")
        cls.unit_dir = os.path.join(PREFIX, "lib", "systemd", "system")

    def expected_files(self, root):
        d = {k: root + v for k, v in self.dirs.items()}
        files = [os.path.join(d["sbindir"], "mqgate")]
        files += [os.path.join(d["bindir"], t) for t in
                  ("mqgate_passwd", "ca_creds", "server_creds", "device_creds", "revoke_creds",
                   "device_enroll")]
        files += [os.path.join(root + self.plugin_dir, p + ".so")
                  for p in ("anonymous", "certauth", "passwd", "acl")]
        files += [os.path.join(d["includedir"], "mqgate", "mqgate_plugin.h"),
                  os.path.join(d["libdir"], "pkgconfig", "mqgate-plugin.pc"),
                  os.path.join(d["sysconfdir"], "mqgate", "mqgate.toml"),
                  os.path.join(d["sysconfdir"], "mqgate", "passwd"),
                  os.path.join(root + self.unit_dir, "mqgate.service")]
        if HAVE_SCDOC:  # without it the build skips the man pages, saying so
            man = os.path.join(PREFIX, "share", "man")
            files += [root + os.path.join(man, page) for page in
                      ("man8/mqgate.8", "man5/mqgate.toml.5", "man1/mqgate_passwd.1",
                       "man1/ca_creds.1", "man1/server_creds.1", "man1/device_creds.1",
                       "man1/revoke_creds.1", "man1/device_enroll.1")]
        return files

    def test_destdir_layout(self):
        dest = tempfile.mkdtemp(prefix="mqgate-destdir-")
        self.addCleanup(shutil.rmtree, dest, True)
        run("meson", "install", "-C", BUILD, "--no-rebuild", "--destdir", dest, "--quiet")
        for f in self.expected_files(dest):
            self.assertTrue(os.path.isfile(f), f"{f} not installed")
        for tool in ("mqgate_passwd", "ca_creds"):
            self.assertTrue(os.access(os.path.join(dest + self.dirs["bindir"], tool), os.X_OK))
        conf = os.path.join(dest + self.dirs["sysconfdir"], "mqgate")
        self.assertEqual(os.stat(os.path.join(conf, "passwd")).st_mode & 0o777, 0o640)
        with open(os.path.join(dest + self.unit_dir, "mqgate.service")) as f:
            unit = f.read()
        self.assertIn(f"ExecStart={self.dirs['sbindir']}/mqgate --config "
                      f"{self.dirs['sysconfdir']}/mqgate/mqgate.toml\n", unit)
        self.assertIn("Type=notify\n", unit)
        # The operator's configuration survives a reinstall.
        with open(os.path.join(conf, "mqgate.toml"), "a") as f:
            f.write("# changed by the operator\n")
        run("meson", "install", "-C", BUILD, "--no-rebuild", "--destdir", dest, "--quiet")
        with open(os.path.join(conf, "mqgate.toml")) as f:
            self.assertTrue(f.read().endswith("# changed by the operator\n"))

    def test_installed_broker_finds_its_plugins(self):
        shutil.rmtree(PREFIX, ignore_errors=True)
        run("meson", "install", "-C", BUILD, "--no-rebuild", "--quiet")
        for f in self.expected_files(""):
            self.assertTrue(os.path.isfile(f), f"{f} not installed")
        work = tempfile.mkdtemp(prefix="mqgate-installed-")
        self.addCleanup(shutil.rmtree, work, True)
        os.chmod(work, 0o755)
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(work, nobody.pw_uid, nobody.pw_gid)  # the store's directory
        conf_dir = os.path.join(self.dirs["sysconfdir"], "mqgate")
        with open(os.path.join(conf_dir, "mqgate.toml")) as f:
            text = f.read()
        self.assertIn('bind = "127.0.0.1:1883"', text)  # loopback only, as documented
        self.assertNotIn("anonymous", re.sub(r"#.*", "", text))
        text = text.replace('bind = "127.0.0.1:1883"', 'bind = "127.0.0.1:0"')
        text = text.replace("/var/lib/mqgate/", work + "/")
        text = text.replace('password_file = "passwd"',
                            f'password_file = "{os.path.join(conf_dir, "passwd")}"')
        run(os.path.join(self.dirs["bindir"], "mqgate_passwd"), "-b",
            os.path.join(conf_dir, "passwd"), "operator", "op pw")
        os.chmod(os.path.join(conf_dir, "passwd"), 0o644)
        binary = os.path.join(self.dirs["sbindir"], "mqgate")
        # As root: drop to nobody (the suite's other brokers keep root explicitly).
        run_as = ["--user", "nobody"] if os.geteuid() == 0 else []
        b = Broker(text, workdir=work, run_as=run_as, binary=binary)
        self.addCleanup(b.close)
        b.wait_log(r'plugin "passwd" loaded from ' + re.escape(self.plugin_dir) + r"/passwd\.so")
        if os.geteuid() == 0:
            b.wait_log(r"running as user nobody .*root dropped")
        self.assertNotIn("WARN", b.log())
        for password, rc in (("op pw", 0), ("wrong", 4)):
            c = R.RawClient(b.port())
            c.send(R.connect("installed", username="operator", password=password))
            self.assertEqual(c.expect(R.CONNACK, timeout=10).return_code, rc)
            c.sock.close()
        self.assertEqual(b.stop(), 0)

        # Third parties build plugins with pkg-config.
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(self.dirs["libdir"], "pkgconfig"))
        cflags = run("pkg-config", "--cflags", "mqgate-plugin", env=env).split()
        self.assertIn("-I" + os.path.join(self.dirs["includedir"], "mqgate"), cflags)
        self.assertEqual(run("pkg-config", "--variable=plugindir", "mqgate-plugin", env=env).strip(),
                         self.plugin_dir)


if __name__ == "__main__":
    unittest.main()
