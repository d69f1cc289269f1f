"""The systemd unit etc/systemd/mqgate.service.in (issue 26; docs/operations.md, "Running
as a service"), rendered with the build's broker as ExecStart (systemd-analyze verify wants
an executable that exists): `systemd-analyze verify` finds nothing to say, and the exposure
score of `systemd-analyze security --offline=true` is at most the one docs/operations.md
states. Skipped, with a line saying so, without systemd-analyze."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from mqgate_test import BROKER_BIN, SOURCE_DIR

ANALYZE = shutil.which("systemd-analyze")
TEMPLATE = os.path.join(SOURCE_DIR, "etc", "systemd", "mqgate.service.in")
DOCS = os.path.join(SOURCE_DIR, "docs", "operations.md")


@unittest.skipUnless(ANALYZE, "systemd-analyze is not installed: the unit is not checked")
class UnitTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mqgate-unit-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        with open(TEMPLATE) as f:
            text = f.read()
        self.text = text.replace("@SBINDIR@", os.path.dirname(BROKER_BIN)).replace(
            "@SYSCONFDIR@", "/etc")
        self.unit = os.path.join(self.dir, "mqgate.service")
        with open(self.unit, "w") as f:
            f.write(self.text)

    def test_settings(self):
        for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "StateDirectory=mqgate",
                     "User=mqgate", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                     "AmbientCapabilities=CAP_NET_BIND_SERVICE", "NoNewPrivileges=yes",
                     "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                     "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes",
                     "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "UMask=0077"):
            self.assertIn("\n" + line + "\n", self.text)
        self.assertRegex(self.text, r"\nWatchdogSec=\d+s\n")
        self.assertRegex(self.text, r"\nExecStart=\S+/mqgate --config /etc/mqgate/mqgate\.toml\n")

    def test_verify(self):
        # --man=no: the unit's Documentation= pages are installed with it, not in the build
        # (test_package.py verifies the installed unit, man pages included).
        p = subprocess.run([ANALYZE, "verify", "--man=no", self.unit], capture_output=True,
                           text=True, timeout=60)
        out = (p.stdout + p.stderr).strip()
        self.assertEqual(p.returncode, 0, out)
        self.assertNotIn("mqgate.service:", out)

    def test_security_score(self):
        p = subprocess.run([ANALYZE, "security", "--offline=true", self.unit],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for mqgate\.service: (\d+\.\d+) (\w+)",
                      p.stdout + p.stderr)
        self.assertIsNotNone(m, p.stdout[-2000:] + p.stderr[-2000:])
        with open(DOCS) as f:
            documented = re.search(r"exposure level \*\*(\d+\.\d+) OK\*\*", f.read())
        self.assertIsNotNone(documented, "docs/operations.md states no exposure level")
        self.assertLessEqual(float(m.group(1)), float(documented.group(1)), m.group(0))
        self.assertLessEqual(float(documented.group(1)), 4.9)  # "OK" or better


if __name__ == "__main__":
    unittest.main()
