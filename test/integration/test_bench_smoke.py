"""The load generator, so it cannot rot: a few hundred connections and messages through
mqgate with bench/mqgate-bench, asserting correctness only (everything delivered, in
order, no failures). Never timing: performance is what bench/compare measures.
"""
import json
import os
import subprocess
import tempfile
import time
import unittest

import pki
from mqgate_test import BUILD_DIR, BrokerTestCase, plain_config

BENCH = os.path.join(BUILD_DIR, "bench", "mqgate-bench")
TIMEOUT_S = 180


def have_openssl_client():
    p = subprocess.run([BENCH, "conn", "--port", "1", "--tls", "--tls-lib", "openssl", "-n", "1",
                        "--max-time", "5"], capture_output=True, text=True, timeout=60)
    return "without OpenSSL" not in p.stderr and "no OpenSSL" not in p.stderr


@unittest.skipUnless(os.access(BENCH, os.X_OK), f"{BENCH} is not built")
class BenchSmokeTest(BrokerTestCase):
    def bench(self, broker, mode, *args, listener="default", expect_rc=0):
        cmd = [BENCH, mode, "--port", str(broker.port(listener)), "--json", "-q",
               "--broker-pid", str(broker.proc.pid), "--max-time", "120", *map(str, args)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        self.assertEqual(p.returncode, expect_rc,
                         f"{' '.join(cmd)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    def assert_all_delivered(self, r, expected, qos):
        v = r["verify"]
        self.assertEqual(r["failures"]["total"], 0, r)
        self.assertEqual(v["expected"], expected, r)
        self.assertEqual(v["missing"], 0, r)
        self.assertEqual(v["out_of_order"], 0, r)
        self.assertEqual(v["bad_payloads"], 0, r)
        self.assertTrue(v["drained"], r)
        self.assertTrue(v["ok"], r)
        if qos != 1:  # QoS 1 may duplicate; nothing here should, but the promise allows it
            self.assertEqual(v["duplicates"], 0, r)
            self.assertEqual(r["deliveries"], expected, r)

    # -- conn ---------------------------------------------------------------------------
    def test_conn_plain_counts_every_connection(self):
        b = self.start_broker()
        r = self.bench(b, "conn", "--count", 300, "--connectors", 4)
        self.assertEqual(r["connections"], 300, r)
        self.assertEqual(r["failures"]["total"], 0, r)
        self.assertEqual(r["latency_us"]["count"], 300, r)
        self.assertIn("cpu_s", r["broker"], r)  # read (its value is in 10 ms ticks: no check)

    def test_conn_reports_refused_connections_as_failures(self):
        b = self.start_broker(plain_config(extra='[plugins.anonymous]\nallow_anonymous = false'))
        r = self.bench(b, "conn", "--count", 20, "--connectors", 2, expect_rc=1)
        self.assertEqual(r["connections"], 0, r)
        self.assertEqual(r["failures"]["refused"], 20, r)

    # -- pubsub -------------------------------------------------------------------------
    def test_pubsub_pairs_every_qos(self):
        b = self.start_broker()
        for qos in (0, 1, 2):
            with self.subTest(qos=qos):
                r = self.bench(b, "pubsub", "-P", 2, "-S", 2, "--topics", 2, "--qos", qos,
                               "--count", 300, "--window", 50)
                self.assertEqual(r["published"], 600, r)
                self.assert_all_delivered(r, 600, qos)

    def test_pubsub_fan_out_counts_deliveries(self):
        b = self.start_broker()
        r = self.bench(b, "pubsub", "-P", 1, "-S", 5, "--qos", 1, "--count", 200)
        self.assert_all_delivered(r, 1000, 1)

    def test_pubsub_many_publishers_one_topic_keep_order_per_publisher(self):
        b = self.start_broker()
        r = self.bench(b, "pubsub", "-P", 3, "-S", 2, "--qos", 2, "--count", 150, "--window", 20)
        self.assert_all_delivered(r, 900, 2)

    def test_pubsub_at_a_fixed_rate_with_large_payloads(self):
        b = self.start_broker()
        r = self.bench(b, "pubsub", "--rate", 400, "--count", 200, "--payload", 5000)
        self.assert_all_delivered(r, 200, 0)
        self.assertEqual(r["latency_us"]["count"], 200, r)

    def test_pubsub_for_a_duration(self):
        b = self.start_broker()
        r = self.bench(b, "pubsub", "--qos", 1, "--duration", 1, "--rate", 300)
        self.assertGreater(r["published"], 0, r)
        self.assert_all_delivered(r, r["published"], 1)

    def test_pubsub_open_loop_into_a_slow_subscriber(self):
        # The overload mode: publishers that do not wait for deliveries, a subscriber
        # capped at 5,000 msg/s. Against mqgate nothing is lost (it holds the publishers).
        b = self.start_broker(plain_config(
            extra="[limits]\nmax_queued_messages = 100\nmax_outgoing_bytes = 65536"))
        for qos in (0, 1):
            with self.subTest(qos=qos):
                r = self.bench(b, "pubsub", "--open-loop", "-P", 2, "-S", 1, "--qos", qos,
                               "--count", 2000, "--window", 100, "--sub-rate", 5000)
                self.assertTrue(r["open_loop"], r)
                self.assert_all_delivered(r, 4000, qos)

    def test_pubsub_stalled_subscriber_is_reported_apart(self):
        b = self.start_broker(plain_config(
            extra="[limits]\nmax_queued_messages = 100\nmax_outgoing_bytes = 65536",
            listener_extra="slow_subscriber_grace = 1"))
        r = self.bench(b, "pubsub", "--open-loop", "-P", 1, "-S", 3, "--payload", 1024,
                       "--count", 20000, "--stall-subscribers", 1)
        self.assert_all_delivered(r, 40000, 0)  # the two that read
        self.assertEqual(r["stalled"]["subscribers"], 1, r)
        self.assertEqual(r["stalled"]["expected"], 20000, r)
        self.assertEqual(r["stalled"]["closed_by_broker"], 1, r)

    def test_pubsub_filter_suffix_and_a_refused_subscription(self):
        # --filter-suffix /#: the subscribers take <topic>/#, the same messages through a
        # wildcard (bench/compare --acl). A SUBACK refusing the filter fails the setup at
        # once (not after the setup's time limit), naming the code and the filter: here a
        # filter only a deny rule matches, which no ACL semantics would grant.
        for name, rules in (("fast", "topic readwrite bench/#\n"),
                            ("denied", "topic readwrite other/#\ntopic deny bench/#\n")):
            with open(os.path.join(self.tmp, name), "w") as f:
                f.write(rules)
        b = self.start_broker(plain_config(extra='[plugins.acl]\nacl_file = "fast"'),
                              workdir=self.tmp)
        r = self.bench(b, "pubsub", "-P", 1, "-S", 2, "--qos", 1, "--count", 200,
                       "--filter-suffix", "/#")
        self.assertTrue(r["filter"].startswith("bench/") and r["filter"].endswith("/t0/#"), r)
        self.assert_all_delivered(r, 400, 1)

        b = self.start_broker(plain_config(extra='[plugins.acl]\nacl_file = "denied"'),
                              workdir=self.tmp)
        cmd = [BENCH, "pubsub", "--port", str(b.port()), "--json", "-q", "--max-time", "120",
               "-S", 3, "--count", 10, "--filter-suffix", "/#"]
        started = time.monotonic()
        p = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=TIMEOUT_S)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertLess(time.monotonic() - started, 20, p.stderr)
        self.assertRegex(p.stderr, r"setup failed: 0 of 3 subscribed")
        self.assertRegex(p.stderr, r"SUBSCRIBE refused: SUBACK 0x80 for bench/\S+/t0/#")

    def test_mqtt5_clients_every_mode_with_publish_properties(self):
        # -V 5: 5.0 CONNECT/CONNACK, PUBLISH with the given properties (a 5.0 subscriber
        # outside the tool sees them), acks with reason codes, SUBSCRIBE with options.
        b = self.start_broker()
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(b.port()), "-V", "mqttv5", "-t",
                                "bench/smoke5/#", "-C", "1", "-W", "20", "-F", "%C|%P"],
                               stdout=subprocess.PIPE, text=True)
        self.addCleanup(sub.kill)
        # (It only needs one message of the three runs: it is subscribed by the second.)
        for qos in (0, 1, 2):
            with self.subTest(qos=qos):
                r = self.bench(b, "pubsub", "-V", 5, "-P", 2, "-S", 2, "--topics", 2, "--qos", qos,
                               "--count", 300, "--window", 50, "--client-prefix", "smoke5",
                               "--content-type", "text/x-bench", "--user-property", "k=v")
                self.assertEqual(r["mqtt_version"], 5, r)
                self.assert_all_delivered(r, 600, qos)
        out, _ = sub.communicate(timeout=30)
        self.assertEqual(out.strip(), "text/x-bench|k:v")
        r = self.bench(b, "conn", "--mqtt5", "--count", 50, "--connectors", 2)
        self.assertEqual((r["connections"], r["failures"]["total"]), (50, 0), r)
        r = self.bench(b, "idle", "--mqtt5", "--connections", 50, "--hold", 0.2)
        self.assertEqual(r["failures"]["total"], 0, r)

    # -- idle ---------------------------------------------------------------------------
    def test_idle_holds_connections_and_reads_rss(self):
        b = self.start_broker()
        r = self.bench(b, "idle", "--connections", 200, "--hold", 0.5)
        self.assertEqual(r["established"], 200, r)
        self.assertEqual(r["dropped_while_held"], 0, r)
        self.assertEqual(r["failures"]["total"], 0, r)
        self.assertGreater(r["rss_before"], 0, r)
        self.assertGreater(r["rss_after"], 0, r)

    # -- TLS ----------------------------------------------------------------------------
    def tls_broker(self):
        d = tempfile.mkdtemp(dir=self.tmp)
        pki.make_ca(d, key_type="ec")
        server = pki.make_server(d, key_type="ec")
        dev = pki.make_device(d, "bench-dev", "bench.example", key_type="ec")
        listener = (f'[listeners.tls]\nbind = "127.0.0.1:0"\nssl = true\n'
                    f'certfile = "{server.cert}"\nkeyfile = "{server.key}"\n'
                    f'cafile = "{server.ca}"\nclient_cert = "required"\n')
        b = self.start_broker(plain_config() + listener)
        tls = ["--cafile", server.ca, "--cert", dev.cert, "--key", dev.key,
               "--servername", "localhost"]
        return b, tls

    def tls_libraries(self):
        return ["mbedtls", "openssl"] if have_openssl_client() else ["mbedtls"]

    def test_tls_conn_full_and_resumed(self):
        b, tls = self.tls_broker()
        for lib in self.tls_libraries():
            with self.subTest(lib=lib):
                r = self.bench(b, "conn", *tls, "--tls-lib", lib, "--count", 40, "-c", 2,
                               listener="tls")
                self.assertEqual((r["connections"], r["failures"]["total"]), (40, 0), r)
                self.assertEqual(r["handshakes"]["full"], 40, r)
                r = self.bench(b, "conn", *tls, "--tls-lib", lib, "--count", 40, "-c", 2,
                               "--resume", listener="tls")
                self.assertEqual((r["connections"], r["failures"]["total"]), (40, 0), r)
                self.assertGreater(r["handshakes"]["resumed"], 0, r)

    def test_tls_pubsub_and_idle(self):
        b, tls = self.tls_broker()
        r = self.bench(b, "pubsub", *tls, "-P", 2, "-S", 2, "--qos", 1, "--count", 200,
                       listener="tls")
        self.assert_all_delivered(r, 800, 1)
        r = self.bench(b, "idle", *tls, "--connections", 30, "--hold", 0.2, listener="tls")
        self.assertEqual((r["established"], r["failures"]["total"]), (30, 0), r)

    def test_tls_failure_is_reported_by_kind(self):
        b, tls = self.tls_broker()
        # Without a client certificate a "required" listener refuses the handshake.
        r = self.bench(b, "conn", *tls[:2], "--servername", "localhost", "--count", 5, "-c", 1,
                       listener="tls", expect_rc=1)
        self.assertEqual(r["connections"], 0, r)
        self.assertEqual(r["failures"]["tls"] + r["failures"]["closed"], 5, r)

    # -- safety -------------------------------------------------------------------------
    def test_only_loopback_targets(self):
        for host in ("10.0.0.1", "example.com", "0.0.0.0"):
            p = subprocess.run([BENCH, "conn", "--host", host, "--port", "1883", "-n", "1"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 2, host)
            self.assertIn("127.0.0.1 or ::1", p.stderr)

    def test_bad_usage_exits_2(self):
        for args in (["pubsub", "--payload", "8"], ["pubsub", "--qos", "3"], ["nope"], [],
                     ["conn", "--resume"], ["idle", "--connections", "0"], ["conn", "-V", "3"],
                     ["pubsub", "--content-type", "t"], ["pubsub", "-V", "5", "--user-property", "k"],
                     ["pubsub", "--filter-suffix", "#"]):
            p = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 2, (args, p.stderr))


if __name__ == "__main__":
    unittest.main()
