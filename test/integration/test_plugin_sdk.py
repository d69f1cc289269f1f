"""What a third-party plugin author gets: the installed header and pkg-config file, a
header that compiles on its own as C99 and C++, and the documented example plugin built
out of tree against the installed header alone, loaded into the broker and checked with
real clients."""
import glob
import os
import shutil
import subprocess
import tempfile
import unittest

import mqtt_raw as r
from brokers import PahoClient
from mqgate_test import BUILD_DIR, RUN_AS, SOURCE_DIR, Broker

HEADER = os.path.join(SOURCE_DIR, "plugins", "mqgate_plugin.h")
EXAMPLE = os.path.join(SOURCE_DIR, "docs", "examples", "devices_acl.c")
SLOW_EXAMPLE = os.path.join(SOURCE_DIR, "docs", "examples", "slow_lookup.c")


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


class InstalledSdkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="mqgate-sdk-")
        cls.destdir = os.path.join(cls.tmp, "root")
        run(["meson", "install", "-C", BUILD_DIR, "--no-rebuild", "--quiet", "--destdir", cls.destdir])
        pcs = glob.glob(os.path.join(cls.destdir, "**", "mqgate-plugin.pc"), recursive=True)
        assert len(pcs) == 1, pcs
        cls.pc_dir = os.path.dirname(pcs[0])
        cls.env = dict(os.environ, PKG_CONFIG_PATH=cls.pc_dir, PKG_CONFIG_SYSROOT_DIR=cls.destdir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def pkg_config(self, *args):
        return run(["pkg-config", *args, "mqgate-plugin"], env=self.env).stdout.strip()

    def test_installed_layout(self):
        headers = glob.glob(os.path.join(self.destdir, "**", "include", "mqgate", "mqgate_plugin.h"),
                            recursive=True)
        self.assertEqual(len(headers), 1)
        # The worker-queue helper slow_lookup.c includes, beside it.
        self.assertTrue(os.path.isfile(os.path.join(os.path.dirname(headers[0]),
                                                    "mqgate_work_queue.h")))
        plugins = glob.glob(os.path.join(self.destdir, "**", "lib", "**", "mqgate", "plugins",
                                         "anonymous.so"), recursive=True)
        self.assertEqual(len(plugins), 1, "anonymous.so not under lib/.../mqgate/plugins")
        self.assertTrue(self.pkg_config("--variable=plugindir").endswith("/mqgate/plugins"))
        self.assertEqual(self.pkg_config("--variable=abi_version"), "2")

    def test_example_builds_out_of_tree_and_works(self):
        work = os.path.join(self.tmp, "example")
        os.makedirs(work)
        src = shutil.copy(EXAMPLE, work)  # only the example file, away from the source tree
        so = os.path.join(work, "devices_acl.so")
        cflags = self.pkg_config("--cflags").split()
        self.assertTrue(any(f.startswith("-I") and self.destdir in f for f in cflags), cflags)
        run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-shared", "-fPIC",
             *cflags, src, "-o", so], cwd=work)

        b = Broker('log_level = "info"\n[listeners.default]\nbind = "127.0.0.1:0"\n'
                   '[plugins.anonymous]\nallow_anonymous = true\n'
                   f'[plugins.devices_acl]\npath = "{so}"\n')
        try:
            b.wait_log(r'plugin "devices_acl": clients may publish only under devices/<client id>/')
            watcher = PahoClient("127.0.0.1", b.port(), "watcher")
            self.assertEqual(watcher.connect()[0], 0)
            self.assertEqual(watcher.subscribe("#", 1), [1])
            dev = PahoClient("127.0.0.1", b.port(), "sensor-7")
            self.assertEqual(dev.connect()[0], 0)
            dev.publish("devices/sensor-7/temperature", b"21.5", qos=1)
            dev.publish("devices/sensor-8/temperature", b"spoofed", qos=1)
            dev.publish("devices/sensor-77/x", b"prefix trick", qos=1)
            dev.publish("alerts", b"nope", qos=1)
            dev.publish("devices/sensor-7", b"own root", qos=1)
            got = [(m.topic, m.payload) for m in watcher.drain(0.5)]
            self.assertEqual(got, [("devices/sensor-7/temperature", b"21.5"),
                                   ("devices/sensor-7", b"own root")])
            b.wait_log(r'client="sensor-7" .*publish to "alerts" denied \(not forwarded\): '
                       r'plugin "devices_acl": may publish only under devices/sensor-7/')
            dev.disconnect()
            watcher.disconnect()
        finally:
            b.close()

    def test_deferred_example_builds_out_of_tree_and_works(self):
        """docs/examples/slow_lookup.c: ABI 2, hidden visibility, answers from a thread."""
        work = os.path.join(self.tmp, "slow")
        os.makedirs(work)
        src = shutil.copy(SLOW_EXAMPLE, work)
        so = os.path.join(work, "slow_lookup.so")
        run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-shared", "-fPIC",
             "-fvisibility=hidden", "-pthread", *self.pkg_config("--cflags").split(), src, "-o", so],
            cwd=work)
        users = os.path.join(work, "users.txt")
        with open(users, "w") as f:
            f.write("alice\nbob\n")
        b = Broker('log_level = "info"\n[listeners.default]\nbind = "127.0.0.1:0"\n'
                   f'[plugins.slow_lookup]\npath = "{so}"\nusers_file = "{users}"\n'
                   "delay_ms = 300\n")
        try:
            b.wait_log(r'plugin "slow_lookup" loaded from .* \(ABI 2\)')
            alice = PahoClient("127.0.0.1", b.port(), "a1", username="alice", password="x")
            self.assertEqual(alice.connect()[0], 0)
            for cid, user, code in (("m1", "mallory", 4),  # bad user name or password
                                    ("n1", None, 5)):      # abstained, nobody else allowed
                raw = r.RawClient(b.port())
                try:
                    self.assertEqual(raw.connect(cid, username=user).return_code, code)
                finally:
                    raw.close()
            b.wait_log(r'client="m1" .*refused \(CONNACK 4\): not authorised: plugin "slow_lookup": '
                       r"unknown user")
            alice.disconnect()
        finally:
            b.close()

    def test_example_refuses_bad_options(self):
        work = os.path.join(self.tmp, "example2")
        os.makedirs(work)
        src = shutil.copy(EXAMPLE, work)
        so = os.path.join(work, "devices_acl.so")
        run(["cc", "-std=c99", "-shared", "-fPIC", *self.pkg_config("--cflags").split(), src, "-o", so])
        cfg = os.path.join(work, "bad.toml")
        with open(cfg, "w") as f:
            f.write(f'[listeners.a]\nbind = "127.0.0.1:0"\n[plugins.acl]\npath = "{so}"\nprefix = "a/#"\n')
        p = subprocess.run([os.path.join(BUILD_DIR, "core", "mqgate"), "--config", cfg, "--check-config", *RUN_AS],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"bad\.toml:5:1: prefix: expected a non-empty topic prefix")


class HeaderTest(unittest.TestCase):
    """The header is self-contained C99 (also usable from C89) and compiles as C++."""

    def compile(self, compiler, std, source, extra=()):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t." + ("c" if compiler == "cc" else "cpp"))
            with open(path, "w") as f:
                f.write(source)
            run([compiler, f"-std={std}", "-Wall", "-Wextra", "-Werror", "-pedantic", *extra,
                 "-I", os.path.dirname(HEADER), "-c", path, "-o", os.path.join(d, "t.o")])

    def test_c99_alone(self):
        self.compile("cc", "c99", '#include "mqgate_plugin.h"\nint x;\n')

    def test_c89_plugin_with_declare_version(self):
        """The header promises C89 code can include it (given a <stdint.h>): its
        declarations and DECLARE_VERSION's expansion use no C99-only syntax."""
        self.compile("cc", "c89", '#include "mqgate_plugin.h"\nMQGATE_PLUGIN_DECLARE_VERSION(2)\n'
                     "static int on_event(int event, void *data, void *instance) {\n"
                     "  mqgate_evt_authenticate *e = (mqgate_evt_authenticate *)data;\n"
                     "  (void)instance;\n"
                     "  if (event != MQGATE_EVT_AUTHENTICATE) return MQGATE_OK;\n"
                     "  if (MQGATE_HAS_FIELD(e, mqgate_evt_authenticate, connack_code))\n"
                     "    e->connack_code = MQGATE_CONNACK_BAD_CREDENTIALS;\n"
                     "  return MQGATE_DENY;\n"
                     "}\n"
                     "int (*keep)(int, void *, void *) = on_event;\n")

    def test_cplusplus(self):
        self.compile("c++", "c++11", '#include "mqgate_plugin.h"\nMQGATE_PLUGIN_DECLARE_VERSION(1)\n'
                     'static_assert(MQGATE_DECISION_DENY == 2, "stable");\n'
                     'static_assert(int{MQGATE_VERDICT_DENY} == int{MQGATE_DENY}, "deprecated alias");\n')

    def test_includes_only_standard_headers(self):
        with open(HEADER) as f:
            includes = [line.split()[1] for line in f if line.startswith("#include")]
        self.assertEqual(sorted(includes), ["<stddef.h>", "<stdint.h>"])

    def test_work_queue_header_alone(self):
        """plugins/common/mqgate_work_queue.h, installed beside the ABI header, compiles
        on its own as strict C99 with POSIX threads."""
        self.compile("cc", "c99", "#define _POSIX_C_SOURCE 200809L\n"
                     '#include "mqgate_work_queue.h"\nint x;\n',
                     extra=["-I", os.path.join(SOURCE_DIR, "plugins", "common")])


if __name__ == "__main__":
    unittest.main()
