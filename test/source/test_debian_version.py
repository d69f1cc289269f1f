"""debian/changelog's latest entry is for the project's version (meson.build): a version
bump without a changelog entry fails here, on any machine, not only where
scripts/package.sh (which refuses to build then) or test_package.py run."""
import pathlib
import re
import unittest

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


class DebianVersionTest(unittest.TestCase):
    def test_changelog_has_the_project_version(self):
        meson = re.search(r"^  version: '([^']+)',$", (ROOT / "meson.build").read_text(), re.M)
        entry = re.match(r"mqgate \(([^)]+)\) \w+; urgency=\w+\n",
                         (ROOT / "debian" / "changelog").read_text())
        self.assertIsNotNone(meson)
        self.assertIsNotNone(entry, "debian/changelog does not start with an mqgate entry")
        self.assertEqual(entry.group(1), meson.group(1),
                         "add a debian/changelog entry for the version in meson.build")


if __name__ == "__main__":
    unittest.main()
