"""systemd's readiness protocol (issue 26; docs/operations.md, "Running as a service"): a
datagram socket of the test's own is $NOTIFY_SOCKET (a path, or an abstract '@' name), and
the broker's messages are checked in order: READY=1 with a STATUS= line once the port
accepts connections, STATUS= when the clients change, RELOADING=1 with MONOTONIC_USEC= at a
SIGHUP and READY=1 after it, STOPPING=1 at SIGTERM; WATCHDOG=1 at half of $WATCHDOG_USEC,
not when $WATCHDOG_PID names another process, and not while the loop is stopped."""
import os
import re
import signal
import socket
import tempfile
import shutil
import time
import unittest
import uuid

import mqtt_raw as R
from mqgate_test import Broker, plain_config


class Notifications:
    def __init__(self, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "mqgate-test-" + uuid.uuid4().hex
            self.sock.bind("\0" + name)
            self.address = "@" + name
            self.dir = None
        else:
            self.dir = tempfile.mkdtemp(prefix="mqgate-notify-")
            self.address = os.path.join(self.dir, "notify")
            self.sock.bind(self.address)

    def next(self, timeout=10.0):
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def until(self, pattern, timeout=10.0, skip_watchdog=True):
        """Messages until one matches `pattern`; returns (it, the ones before)."""
        deadline = time.monotonic() + timeout
        before = []
        while True:
            m = self.next(max(0.01, deadline - time.monotonic()))
            if re.search(pattern, m):
                return m, before
            if not (skip_watchdog and m == "WATCHDOG=1"):
                before.append(m)

    def drain(self, seconds):
        got = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                got.append(self.next(max(0.01, deadline - time.monotonic())))
            except socket.timeout:
                break
        return got

    def close(self):
        self.sock.close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class NotifyTest(unittest.TestCase):
    def start(self, abstract=False, env=None):
        n = Notifications(abstract)
        self.addCleanup(n.close)
        saved = dict(os.environ)
        os.environ["NOTIFY_SOCKET"] = n.address
        os.environ.update(env or {})
        try:
            b = Broker(plain_config(), wait=False)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.addCleanup(b.close)
        return n, b

    def check_ready_then_connect(self, n, b):
        ready, before = n.until(r"READY=1")
        self.assertEqual(before, [])  # nothing before readiness
        self.assertEqual(ready, "READY=1\nSTATUS=1 listener, 0 clients connected")
        # The port accepts connections by then (the log line is written before READY).
        b.wait_listening(1.0)
        c = R.RawClient(b.port())
        c.send(R.connect("notified"))
        self.assertEqual(c.expect(R.CONNACK).return_code, 0)
        return c

    def test_ready_status_reload_stopping(self):
        n, b = self.start()
        c = self.check_ready_then_connect(n, b)
        status, _ = n.until(r"^STATUS=", timeout=5)
        self.assertEqual(status, "STATUS=1 listener, 1 client connected")

        before = time.monotonic()
        b.signal(signal.SIGHUP)
        reloading, skipped = n.until(r"RELOADING=1")
        self.assertEqual(skipped, [])
        m = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", reloading)
        self.assertIsNotNone(m, reloading)
        usec = int(m.group(1))
        self.assertGreaterEqual(usec, int(before * 1e6) - 1000)
        self.assertLessEqual(usec, int(time.monotonic() * 1e6) + 1000)
        ready, skipped = n.until(r"READY=1")
        self.assertEqual(skipped, [])
        self.assertEqual(ready, "READY=1\nSTATUS=1 listener, 1 client connected")

        c.sock.close()
        b.signal(signal.SIGTERM)
        stopping, _ = n.until(r"STOPPING=1")
        self.assertEqual(stopping, "STOPPING=1")
        self.assertEqual(b.stop(), 0)

    def test_abstract_socket(self):
        n, b = self.start(abstract=True)
        self.check_ready_then_connect(n, b).sock.close()

    def test_failed_reload_is_ready_again(self):
        n, b = self.start()
        self.check_ready_then_connect(n, b).sock.close()
        with open(b.config_path, "a") as f:
            f.write("no_such_key = 1\n")
        b.signal(signal.SIGHUP)
        n.until(r"RELOADING=1")
        ready, _ = n.until(r"READY=1")
        self.assertTrue(ready.startswith("READY=1\nSTATUS="), ready)
        b.wait_log(r"reload failed; keeping the running configuration")

    def test_watchdog(self):
        n, b = self.start(env={"WATCHDOG_USEC": "200000"})
        n.until(r"READY=1")
        pings = [m for m in n.drain(1.0) if m == "WATCHDOG=1"]
        self.assertGreaterEqual(len(pings), 6)  # every 100 ms
        self.assertLessEqual(len(pings), 12)
        b.wait_log(r"systemd watchdog: pinging every 100 ms")
        # A loop that does not run does not ping: that is what the watchdog is for.
        b.signal(signal.SIGSTOP)
        try:
            n.drain(0.2)  # what was sent before the stop
            self.assertEqual(n.drain(0.6), [])
        finally:
            b.signal(signal.SIGCONT)
        self.assertIn("WATCHDOG=1", n.drain(0.5))

    def test_watchdog_of_another_process(self):
        n, b = self.start(env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
        n.until(r"READY=1")
        self.assertNotIn("WATCHDOG=1", n.drain(0.6))

    def test_bad_values_are_warned(self):
        n, b = self.start(env={"WATCHDOG_USEC": "-5"})
        n.until(r"READY=1")
        b.wait_log(r'WATCHDOG_USEC "-5" is not a positive number of microseconds; no watchdog')
        saved = dict(os.environ)
        os.environ["NOTIFY_SOCKET"] = "relative/path"
        try:
            b2 = Broker(plain_config())
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.addCleanup(b2.close)
        b2.wait_log(r'NOTIFY_SOCKET "relative/path" is not an absolute path or an abstract name')

    def test_socket_gone_does_not_matter(self):
        n, b = self.start()
        n.until(r"READY=1")
        n.close()  # systemd went away: sends fail, the broker goes on
        b.signal(signal.SIGHUP)
        b.wait_log(r"cannot notify systemd \(RELOADING=1 MONOTONIC_USEC=\d+\): ")
        b.wait_listening()
        c = R.RawClient(b.port())
        c.send(R.connect("still"))
        self.assertEqual(c.expect(R.CONNACK).return_code, 0)
        c.sock.close()


if __name__ == "__main__":
    unittest.main()
