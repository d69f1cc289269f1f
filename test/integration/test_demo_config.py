"""The shipped etc/mqgate.toml runs the seed's scenario: credentials made with the seed's
quick-start commands (as scripts/run.sh does), a plain anonymous listener beside an mTLS
listener with certauth, and the exact mosquitto_pub line scripts/run.sh prints."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from mqgate_test import PKI_DIR, SOURCE_DIR, Broker, run_config_check

DEVICE = "myUniqueDeviceId"


class DemoConfigTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="mqgate-demo-")
        demo = os.path.join(cls.tmp, "demo")
        os.makedirs(os.path.join(cls.tmp, "etc"))
        org = ["--org-name", "My Org's Name"]
        ca = ["--ca-key", os.path.join(demo, "ca.key"), "--ca-crt", os.path.join(demo, "ca.crt")]
        for tool, args in [
            ("ca_creds", ["--country", "US", "--state", "NY", "--locality", "NY", *org, "--cn",
                          "my.domain.name", "--output-dir", demo]),
            ("server_creds", ["--country", "US", *org, "--cn", "my.domain.name", *ca,
                              "--output-dir", demo]),
            ("device_creds", ["--country", "US", *org, "--device-id", DEVICE, "--uri",
                              "my.domain.name", *ca, "--output-dir", demo]),
        ]:
            subprocess.run([os.path.join(PKI_DIR, tool), *args], check=True, capture_output=True,
                           timeout=60)
        with open(os.path.join(SOURCE_DIR, "etc", "mqgate.toml")) as f:
            text = f.read()
        cls.shipped = text
        # Same file, on ephemeral ports so tests never collide with a running broker.
        cls.config = re.sub(r'bind = "127\.0\.0\.1:\d+"', 'bind = "127.0.0.1:0"', text)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_shipped_config_is_valid(self):
        path = os.path.join(self.tmp, "etc")
        rc, out = run_config_check(self.shipped, path)
        self.assertEqual(rc, 0, out)

    def test_seed_scenario(self):
        b = Broker(self.config, workdir=os.path.join(self.tmp, "etc"))
        try:
            plain, tls = b.port("default"), b.port("ssl-mqtt")
            sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(plain), "-t",
                                    "devices/#", "-v", "-C", "1"], stdout=subprocess.PIPE,
                                   text=True)
            b.wait_log(r"listener=default: connected")
            demo = os.path.join(self.tmp, "demo")
            cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(tls), "--cafile",
                   f"{demo}/ca.crt", "--cert", f"{demo}/{DEVICE}.crt", "--key",
                   f"{demo}/{DEVICE}.key", "-i", DEVICE, "-t", f"devices/{DEVICE}/hello", "-m", "hi"]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            self.assertEqual(p.returncode, 0, p.stderr)
            out, _ = sub.communicate(timeout=10)
            self.assertEqual(out.strip(), f"devices/{DEVICE}/hello hi")
            cmd[cmd.index("-i") + 1] = "someoneElse"
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("not authorised", p.stderr)
            no_cert = [a for a in cmd if a not in ("--cert", "--key", f"{demo}/{DEVICE}.crt",
                                                   f"{demo}/{DEVICE}.key")]
            no_cert[no_cert.index("-i") + 1] = DEVICE
            p = subprocess.run(no_cert, capture_output=True, text=True, timeout=20)
            self.assertIn("not authorised", p.stderr)
        finally:
            b.close()

    def test_a_session_belongs_to_the_device_not_to_its_client_id(self):
        # The demo's own reproduction of the hijack: the device's queued command must not
        # go to an anonymous client on the plain listener that borrows its client id.
        b = Broker(self.config, workdir=os.path.join(self.tmp, "etc"))
        try:
            plain, tls = str(b.port("default")), str(b.port("ssl-mqtt"))
            demo = os.path.join(self.tmp, "demo")
            device = ["-h", "127.0.0.1", "-p", tls, "--cafile", f"{demo}/ca.crt", "--cert",
                      f"{demo}/{DEVICE}.crt", "--key", f"{demo}/{DEVICE}.key", "-i", DEVICE]
            cmd_topic = f"devices/{DEVICE}/cmd"
            p = subprocess.run(["mosquitto_sub", *device, "-c", "-q", "1", "-t", cmd_topic,
                                "-W", "1"], capture_output=True, text=True, timeout=20)
            self.assertIn(p.returncode, (0, 27), p.stderr)  # 27: -W timed out, as intended
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", plain, "-q", "1", "-t",
                            cmd_topic, "-m", "secret-command"], check=True, timeout=20)
            thief = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", plain, "-i", DEVICE,
                                    "-c", "-q", "1", "-t", "x/y", "-v", "-W", "2"],
                                   capture_output=True, text=True, timeout=20)
            self.assertNotIn("secret-command", thief.stdout)
            self.assertIn("identifier rejected", thief.stderr)
            got = subprocess.run(["mosquitto_sub", *device, "-c", "-q", "1", "-t", cmd_topic,
                                  "-C", "1", "-W", "5"], capture_output=True, text=True, timeout=20)
            self.assertEqual(got.stdout.strip(), "secret-command", got.stderr)
            # Secure by default: the device keeps to its own topics (allowed_topics).
            sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", plain, "-t", "#",
                                    "-v", "-W", "3"], stdout=subprocess.PIPE, text=True)
            b.wait_log(r"listener=default: connected")
            for topic in ("devices/someoneElse/cmd", f"devices/{DEVICE}/ok"):
                subprocess.run(["mosquitto_pub", *device, "-t", topic, "-m", topic, "-q", "1"],
                               check=True, timeout=20)
            out, _ = sub.communicate(timeout=10)
            self.assertIn(f"devices/{DEVICE}/ok", out)
            self.assertNotIn("devices/someoneElse/cmd", out)
        finally:
            b.close()


if __name__ == "__main__":
    unittest.main()
