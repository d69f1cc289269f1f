"""bench/provision, so it cannot rot: provision_bench with a handful of requests and
enroll_e2e with one enrolment per issuing CA, against the test build, checking only that
they print rows of positive figures. Never timing: the figures are the bench's business.
"""
import os
import re
import subprocess
import unittest

from mqgate_test import BROKER_BIN, BUILD_DIR, SOURCE_DIR

PROVISION_BENCH = os.path.join(BUILD_DIR, "bench", "provision_bench")
ENROLL_E2E = os.path.join(SOURCE_DIR, "bench", "provision", "enroll_e2e")
FIGURE = r"\s+(\d+(?:\.\d+)?)"


@unittest.skipUnless(os.access(PROVISION_BENCH, os.X_OK), f"{PROVISION_BENCH} is not built")
class BenchProvisionSmokeTest(unittest.TestCase):
    def test_provision_bench_prints_a_row_per_key_and_thread_count(self):
        p = subprocess.run([PROVISION_BENCH, "--ec", "6", "--rsa", "4", "--runs", "1",
                            "--pool", "2", "--threads", "1,2"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        rows = re.findall(r"^(EC P-256|RSA-2048)\s+(\d)\s+(\d+)" + FIGURE * 4, p.stdout, re.M)
        self.assertEqual([(r[0], r[1]) for r in rows],
                         [("EC P-256", "1"), ("EC P-256", "2"), ("RSA-2048", "1"),
                          ("RSA-2048", "2")], p.stdout)
        for row in rows:
            self.assertTrue(all(float(x) > 0 for x in row[3:]), row)

    @unittest.skipUnless(os.access(BROKER_BIN, os.X_OK), f"{BROKER_BIN} is not built")
    def test_enroll_e2e_enrols_with_both_issuing_cas(self):
        p = subprocess.run(["/usr/bin/python3", ENROLL_E2E, "--build-dir", BUILD_DIR, "--n", "1"],
                           capture_output=True, text=True, timeout=90)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        rows = re.findall(r"^(EC P-256|RSA-2048)\s+1" + FIGURE * 4, p.stdout, re.M)
        self.assertEqual([r[0] for r in rows], ["EC P-256", "RSA-2048"], p.stdout)
        self.assertIn("load average", p.stdout)
