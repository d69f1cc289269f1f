"""docs/conformance.md (which tests check which normative statements, and where
Mosquitto deviates) is generated from the tests: it must say what they say."""
import pathlib
import subprocess
import sys
import unittest

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


class ConformanceIndexTest(unittest.TestCase):
    def test_index_is_up_to_date(self):
        r = subprocess.run([sys.executable, str(ROOT / "scripts" / "conformance_index.py"),
                            "--check"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
