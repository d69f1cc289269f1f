"""bench/attack, so it cannot rot: a small subscribe-flood, http-idle and the
connect-props, passwd-slow and store-oversize attacks against mqgate alone (the test
build), checking only that the table has rows with numbers and that the JSON holds
the bystander's and the attacks' figures. Never timing: what the figures say is bench/attack's business.
"""
import json
import os
import re
import subprocess
import tempfile
import unittest

from mqgate_test import BROKER_BIN, BUILD_DIR, SANITIZER_REPORT, SOURCE_DIR

ATTACK = os.path.join(SOURCE_DIR, "bench", "attack")
ROW = re.compile(r"^subscribe-flood.*?\s+mqgate\s+(>= )?([\d,.]+)\s+([\d,.]+)\s+([\d,.]+)\s+"
                 r"([+-][\d,.]+)\s+(.*)$", re.M)


@unittest.skipUnless(os.access(BROKER_BIN, os.X_OK), f"{BROKER_BIN} is not built")
class BenchAttackSmokeTest(unittest.TestCase):
    def test_subscribe_flood_against_mqgate_prints_a_row(self):
        with tempfile.TemporaryDirectory(prefix="attack-smoke-") as d:
            out_json = os.path.join(d, "attack.json")
            cmd = ["/usr/bin/python3", ATTACK, "--brokers", "mqgate", "--only", "subscribe-flood",
                   "--duration", "2", "--quick", "--quiet-wait", "0", "--no-build",
                   "--build-dir", BUILD_DIR,
                   "--json", out_json]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 0, f"{' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
            rows = ROW.findall(p.stdout)
            # One row, or two when mqgate has max_subscriptions_per_client (raised, default).
            self.assertIn(len(rows), (1, 2), p.stdout)
            for row in rows:
                self.assertGreater(float(row[1].replace(",", "")), 0, row)
                self.assertIn("SUBACK", row[5], row)
            with open(out_json) as f:
                results = json.load(f)["results"]
            self.assertEqual(len(results), len(rows), results)
            for r in results:
                self.assertNotIn("error", r, r)
                self.assertEqual(r["broker"], "mqgate", r)
                self.assertGreater(r["bystander"]["count"], 0, r)
                self.assertGreater(r["rss_peak_mib"], 0, r)
                self.assertIsNone(SANITIZER_REPORT.search(r["broker_log_tail"]), r)

    def test_http_idle_connect_props_passwd_slow_store_oversize_rows(self):
        # One run for the attacks that need no subscribe-flood setup (one test method:
        # docs/conformance.md counts them).
        with tempfile.TemporaryDirectory(prefix="attack-smoke-") as d:
            out_json = os.path.join(d, "attack.json")
            cmd = ["/usr/bin/python3", ATTACK, "--brokers", "mqgate",
                   "--only", "http-idle,connect-props,passwd-slow,store-oversize",
                   "--duration", "2", "--quick", "--quiet-wait", "0", "--no-build",
                   "--build-dir", BUILD_DIR, "--json", out_json]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            self.assertEqual(p.returncode, 0, f"{' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
            with open(out_json) as f:
                results = json.load(f)["results"]
            # mqgate only (Mosquitto has no HTTP endpoint, and --brokers mqgate anyway).
            self.assertEqual([(r["attack"], r["variant"]) for r in results],
                             [("http-idle", "20 idle"), ("http-idle", "100 idle"),
                              ("connect-props", "user properties"),
                              ("connect-props", "topic aliases"), ("passwd-slow", ""),
                              ("store-oversize", "persistent subscriber"),
                              ("store-oversize", "no subscriber")], results)
            for r in results:
                self.assertNotIn("error", r, r)
                self.assertEqual(r["broker"], "mqgate", r)
                self.assertNotIn("attack error", " ".join(r["notes"]), r)
                self.assertGreater(r["bystander"]["count"], 0, r)
                self.assertIsNone(SANITIZER_REPORT.search(r["broker_log_tail"]), r)
                x = r["extra"]
                if r["attack"] == "http-idle":
                    self.assertGreater(x["probes"], 0, r)
                    self.assertEqual(x["ok"], x["probes"], r)
                elif r["attack"] == "connect-props":
                    self.assertEqual(x["connections"], 3, r)  # --quick
                    self.assertIsNotNone(x["kib_per_conn"], r)
                elif r["attack"] == "passwd-slow":
                    self.assertEqual(x["bad_logins_sent"], 5, r)
                    self.assertGreater(x["probes"], 0, r)
                else:
                    self.assertGreater(x["sent"], 0, r)
            # The rows are in the table too.
            for name in ("http-idle (20 idle)", "connect-props (user properties)",
                         "connect-props (topic aliases)", "passwd-slow",
                         "store-oversize (persistent subscriber)",
                         "store-oversize (no subscriber)"):
                self.assertRegex(p.stdout, rf"(?m)^{re.escape(name)}\s+mqgate\s", p.stdout)

    def test_bad_usage_is_refused(self):
        for args in (["--only", "nope"], ["--brokers", "hivemq"], ["--duration", "0"],
                     ["--props-conns", "0"], ["--bad-logins", "1001"],
                     ["--mqgate-bin", "/nonexistent/mqgate", "--brokers", "mqgate"]):
            p = subprocess.run(["/usr/bin/python3", ATTACK, "--no-build", *args],
                               capture_output=True, text=True, timeout=60)
            self.assertNotEqual(p.returncode, 0, args)
            self.assertIn("attack:", p.stderr, args)


if __name__ == "__main__":
    unittest.main()
