"""The man pages (issue 26; man/): each tool's page names exactly the options its --help
prints (the built tool's, so the page cannot drift from the code), the broker's included;
every page renders with scdoc without an error, and mqgate.toml(5), generated from
docs/configuration.md, has every key of that page's tables. The scdoc checks are skipped,
with a line saying so, without scdoc."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from mqgate_test import BROKER_BIN, PKI_DIR, SOURCE_DIR

MAN = os.path.join(SOURCE_DIR, "man")
TOOLS = {"mqgate": (BROKER_BIN, "mqgate.8.scd.in"),
         "mqgate_passwd": (os.path.join(PKI_DIR, "mqgate_passwd"), "mqgate_passwd.1.scd.in")}
for tool in ("ca_creds", "server_creds", "device_creds", "revoke_creds", "device_enroll"):
    TOOLS[tool] = (os.path.join(PKI_DIR, tool), tool + ".1.scd")
# --long options; mqgate_passwd's are mosquitto_passwd's single letters (" -b : ...").
LONG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
SHORT_HELP = re.compile(r"^ (-[A-Za-z]) :", re.M)
SHORT_MAN = re.compile(r"^\*(-[A-Za-z])\*", re.M)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


class ManPagesTest(unittest.TestCase):
    def test_options_match_help(self):
        for tool, (binary, page) in TOOLS.items():
            with self.subTest(tool=tool):
                p = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
                text = read(os.path.join(MAN, page))
                if tool == "mqgate_passwd":
                    helped = set(SHORT_HELP.findall(p.stdout + p.stderr))
                    documented = set(SHORT_MAN.findall(text))
                else:
                    helped = set(LONG.findall(p.stdout))
                    documented = set(LONG.findall(text))
                self.assertTrue(helped, p.stdout + p.stderr)
                self.assertEqual(documented, helped, f"man/{page} against {tool} --help")

    @unittest.skipUnless(shutil.which("scdoc"), "scdoc is not installed: pages not rendered")
    def test_pages_render(self):
        with tempfile.TemporaryDirectory() as d:
            generated = os.path.join(d, "mqgate.toml.5.scd")
            with open(generated, "w") as out:
                subprocess.run(["/usr/bin/python3", os.path.join(MAN, "config_to_scdoc.py"),
                                os.path.join(SOURCE_DIR, "docs", "configuration.md")],
                               stdout=out, check=True, timeout=30)
            pages = [os.path.join(MAN, page) for _, page in TOOLS.values()] + [generated]
            for page in pages:
                with open(page, "rb") as f:
                    p = subprocess.run(["scdoc"], stdin=f, capture_output=True, timeout=30)
                self.assertEqual(p.returncode, 0, f"{page}: {p.stderr.decode()}")
                self.assertIn(b".TH", p.stdout)
            roff = read(generated)
        keys = re.findall(r"^\| `([a-z_]+)` \|", read(os.path.join(SOURCE_DIR, "docs",
                                                                   "configuration.md")), re.M)
        self.assertGreater(len(keys), 40)
        for key in keys:
            self.assertIn("*" + key.replace("_", "\\_") + "*", roff, key)


if __name__ == "__main__":
    unittest.main()
