"""bench/cluster, so it cannot rot: a cross-node QoS 1 run, a local one and the takeover
probe against mqgate's cluster (three nats-server processes, three nodes; the test build),
and one cross-node row against nats-server's own MQTT support. Checks only that the rows
exist with numbers, that nothing was lost where nothing may be, and that every process
the script started is gone. Never timing: what the figures say is bench/cluster's business.
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from mqgate_test import BROKER_BIN, BUILD_DIR, SOURCE_DIR

CLUSTER = os.path.join(SOURCE_DIR, "bench", "cluster")
BENCH = os.path.join(BUILD_DIR, "bench", "mqgate-bench")
NATS_BIN = shutil.which("nats-server") or "/usr/sbin/nats-server"


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@unittest.skipUnless(os.access(BROKER_BIN, os.X_OK) and os.access(BENCH, os.X_OK),
                     f"{BROKER_BIN} or {BENCH} is not built")
@unittest.skipUnless(os.access(NATS_BIN, os.X_OK), "nats-server is not installed")
class BenchClusterSmokeTest(unittest.TestCase):
    def run_cluster(self, *args):
        with tempfile.TemporaryDirectory(prefix="cluster-smoke-") as d:
            out_json = os.path.join(d, "cluster.json")
            cmd = ["/usr/bin/python3", CLUSTER, "--quick", "--no-build", "--build-dir", BUILD_DIR,
                   "--json", out_json, *args]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            self.assertEqual(p.returncode, 0, f"{' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
            with open(out_json) as f:
                report = json.load(f)
        for dep in report["deployments"]:
            for pid in dep["pids"]:
                self.assertFalse(alive(pid), f"{dep['kind']} process {pid} left running")
        return p, report

    def test_mqgate_cluster_cross_node_local_and_takeover(self):
        p, report = self.run_cluster("--brokers", "mqgate",
                                     "--only", "x-qos1-1to1,local-qos0-1to1,takeover")
        got = {(r["workload"], r["broker"]): r for r in report["results"]}
        self.assertEqual(set(got), {("x-qos1-1to1", "mqgate-cluster"),
                                    ("local-qos0-1to1", "mqgate-cluster"),
                                    ("local-qos0-1to1", "mqgate-single"),
                                    ("takeover", "mqgate-cluster"),
                                    ("takeover", "mqgate-single")}, report["results"])
        for key in (("x-qos1-1to1", "mqgate-cluster"), ("local-qos0-1to1", "mqgate-cluster"),
                    ("local-qos0-1to1", "mqgate-single")):
            r = got[key]
            self.assertNotIn("error", r, r)
            self.assertGreater(r["delivery_rate"], 0, r)
            if r["qos"] > 0:  # (QoS 0 may lose; not the point here)
                self.assertEqual(r["verify"]["missing"], 0, r)
                self.assertTrue(r["verify"]["ok"], r)
            self.assertEqual(r["procs"], 6 if key[1] == "mqgate-cluster" else 1, r)
            self.assertGreater(r["rss_peak_kib"], 0, r)
        cross = got[("x-qos1-1to1", "mqgate-cluster")]
        self.assertNotEqual(cross["target"], cross["sub_target"], cross)  # two nodes
        tk = got[("takeover", "mqgate-cluster")]
        self.assertTrue(tk["cross_node"], tk)
        self.assertEqual(tk["error_count"], 0, tk)
        self.assertGreater(len(tk["connack_ms"]), 0, tk)
        # A takeover on one node closes the first connection.
        one = got[("takeover", "mqgate-single")]
        self.assertEqual(len(one["closed_ms"]), one["takeovers"], one)
        self.assertIn("x-qos1-1to1", p.stdout)
        self.assertIn("CONNACK on the 2nd node", p.stdout)
        self.assertNotRegex(p.stderr, r"node-.\.log logged")

    def test_nats_mqtt_cross_server_row(self):
        _p, report = self.run_cluster("--brokers", "nats", "--only", "x-qos0-1to1")
        [r] = report["results"]
        self.assertEqual((r["workload"], r["broker"]), ("x-qos0-1to1", "nats-mqtt"), r)
        self.assertNotIn("error", r, r)
        self.assertGreater(r["delivery_rate"], 0, r)
        self.assertEqual(r["procs"], 3, r)

    def test_bad_usage_and_missing_nats_are_refused(self):
        for args, env in ((["--only", "nope"], {}), (["--brokers", "hivemq"], {}),
                          (["--duration", "0"], {}),
                          ([], {"NATS_SERVER": "/nonexistent/nats-server"})):
            p = subprocess.run(["/usr/bin/python3", CLUSTER, "--no-build", "--build-dir",
                                BUILD_DIR, *args], capture_output=True, text=True, timeout=60,
                               env={**os.environ, **env})
            self.assertNotEqual(p.returncode, 0, args)
            self.assertIn("cluster:", p.stderr, args)
        self.assertIn("nats-server is missing", p.stderr)


if __name__ == "__main__":
    unittest.main()
