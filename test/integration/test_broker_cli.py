"""The mqgate binary's command line, configuration checking, signals and logging."""
import os
import re
import signal
import socket
import subprocess
import time
import unittest

import paho.mqtt.client as mqtt

import mqtt_raw as r

from mqgate_test import (BROKER_BIN, RUN_AS, SOURCE_DIR, Broker, BrokerTestCase, closed_by_peer, connect_raw,
                         plain_config, run_config_check)


def paho_connect(port, client_id, **kw):
    c = mqtt.Client(client_id, **kw)
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    return c


class CommandLineTest(BrokerTestCase):
    def test_version_and_help(self):
        p = subprocess.run([BROKER_BIN, "--version"], capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout, r"^mqgate \d+\.\d+\.\d+")
        p = subprocess.run([BROKER_BIN, "--help"], capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 0)
        for opt in ("--config", "--check-config", "--version", "--help"):
            self.assertIn(opt, p.stdout)

    def test_unknown_option_is_a_usage_error(self):
        p = subprocess.run([BROKER_BIN, "--bogus"], capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn("bogus", p.stderr)

    def test_missing_config_file(self):
        path = os.path.join(self.tmp, "nope.toml")
        p = subprocess.run([BROKER_BIN, "--config", path, *RUN_AS], capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 1)
        self.assertIn(path, p.stderr)
        self.assertIn("cannot open", p.stderr)

    def test_check_config_names_missing_tls_files(self):
        # The shipped config without its demo credentials (scripts/run.sh makes them).
        with open(os.path.join(SOURCE_DIR, "etc", "mqgate.toml")) as f:
            text = f.read()
        os.makedirs(os.path.join(self.tmp, "etc"))
        rc, out = run_config_check(text, os.path.join(self.tmp, "etc"))
        self.assertEqual(rc, 1)
        self.assertRegex(out, r'listener "ssl-mqtt": certfile .*/demo/server\.crt: ')

    def test_check_config_reports_every_error_with_file_line_and_key(self):
        rc, out = run_config_check("""
            log_level = "chatty"
            [limits]
            max_packet_size = -1
            max_inflight = 5
            [listeners.default]
            bind = "localhost:1883"
            """, self.tmp)
        self.assertEqual(rc, 1)
        self.assertRegex(out, r"check\.toml:2:\d+: log_level: expected")
        self.assertRegex(out, r"check\.toml:4:\d+: limits\.max_packet_size: expected an integer")
        self.assertRegex(out, r"check\.toml:5:\d+: limits\.max_inflight: unknown key")
        self.assertRegex(out, r"check\.toml:7:\d+: listeners\.default\.bind: .*not an IPv4 address")
        self.assertIn("not started", out)

    def test_toml_syntax_error(self):
        rc, out = run_config_check("[listeners.default\nbind = 3\n", self.tmp)
        self.assertEqual(rc, 1)
        self.assertRegex(out, r"check\.toml:1:\d+: ")

    def test_wrong_type_names_expected_type(self):
        rc, out = run_config_check('sys_interval = "10"\n[listeners.a]\nbind = "127.0.0.1:0"\n', self.tmp)
        self.assertEqual(rc, 1)
        self.assertIn("sys_interval: expected an integer from 0 to 86400, got a string", out)

    def test_bind_conflict_stops_before_listening(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        try:
            cfg = os.path.join(self.tmp, "c.toml")
            with open(cfg, "w") as f:
                f.write(f'[listeners.busy]\nbind = "127.0.0.1:{port}"\n')
            p = subprocess.run([BROKER_BIN, "--config", cfg, *RUN_AS], capture_output=True, text=True,
                               timeout=10)
            self.assertEqual(p.returncode, 1)
            self.assertIn('listener "busy": cannot listen on 127.0.0.1:' + str(port), p.stderr)
            self.assertIn("address already in use", p.stderr)
        finally:
            s.close()


class LifecycleTest(BrokerTestCase):
    def test_sigterm_disconnects_clients_and_exits_0(self):
        b = self.start_broker()
        c = r.RawClient(b.port())
        c.send(r.connect("lifecycle"))
        c.expect(r.CONNACK)
        b.signal(signal.SIGTERM)
        self.assertTrue(closed_by_peer(c.sock, 5))
        self.assertEqual(b.proc.wait(10), 0)
        self.assertIn("mqgate stopped", b.log())

    def test_sigint_exits_0(self):
        b = self.start_broker()
        b.signal(signal.SIGINT)
        self.assertEqual(b.proc.wait(10), 0)

    def test_sighup_rereads_log_level(self):
        b = self.start_broker(plain_config(log_level="info"))
        c = paho_connect(b.port(), "before-reload")
        time.sleep(0.2)
        self.assertNotIn("DEBUG", b.log())
        with open(b.config_path) as f:
            text = f.read()
        with open(b.config_path, "w") as f:
            f.write(text.replace('log_level = "info"', 'log_level = "debug"'))
        b.signal(signal.SIGHUP)
        b.wait_log(r"reload: log_level is DEBUG")
        c.subscribe("x/y")
        b.wait_log(r'DEBUG .*client="before-reload" .*subscribed to "x/y"')
        c.disconnect()
        c.loop_stop()

    def test_sighup_with_a_broken_config_keeps_running(self):
        b = self.start_broker()
        with open(b.config_path, "a") as f:
            f.write("\nnonsense_key = 1\n")
        b.signal(signal.SIGHUP)
        b.wait_log(r"reload failed; keeping the running configuration")
        self.assertRegex(b.log(), r"reload: .*nonsense_key: unknown key")
        c = paho_connect(b.port(), "still-serving")
        c.disconnect()
        c.loop_stop()

    def test_connection_lines_name_client_and_peer(self):
        b = self.start_broker(plain_config(log_level="info"))
        c = paho_connect(b.port(), "log-me")
        port = c.socket().getsockname()[1]
        c.disconnect()
        c.loop_stop()
        b.wait_log(r'client="log-me" peer=127\.0\.0\.1:%d listener=default: disconnected' % port)
        self.assertRegex(b.log(), r'INFO  client="log-me" peer=127\.0\.0\.1:%d listener=default: connected' % port)

    def test_hostile_client_id_is_escaped_in_the_log(self):
        b = self.start_broker(plain_config(log_level="info"))
        c = r.RawClient(b.port())
        c.send(r.connect("evil\nINFO fake line\x1b[31m"))
        c.expect(r.CONNACK)
        c.sock.close()
        b.wait_log(r'client="evil\\x0aINFO fake line\\x1b\[31m"')
        self.assertNotRegex(b.log(), r"(?m)^INFO fake line")

    def test_password_is_never_logged(self):
        b = self.start_broker(plain_config(log_level="debug"))
        c = mqtt.Client("pw-client")
        c.username_pw_set("user", "hunter2-secret")
        c.connect("127.0.0.1", b.port())
        c.loop_start()
        time.sleep(0.2)
        c.disconnect()
        c.loop_stop()
        b.wait_log(r'client="pw-client" .*disconnected')
        self.assertNotIn("hunter2", b.log())

    def test_max_connections_refuses_extra_connections(self):
        b = self.start_broker(plain_config(listener_extra="max_connections = 2"))
        held = []
        for i in range(2):
            c = r.RawClient(b.port())
            c.send(r.connect(f"held-{i}"))
            c.expect(r.CONNACK)
            held.append(c)
        extra = connect_raw(b.port())
        self.assertTrue(closed_by_peer(extra, 5))
        b.wait_log(r"max_connections \(2\) reached")
        held[0].sock.close()
        deadline = time.monotonic() + 5
        while True:  # a slot frees once the broker has seen the close
            c = r.RawClient(b.port())
            try:
                c.send(r.connect("after-free"))
                c.expect(r.CONNACK)
                break
            except (r.ConnectionClosed, r.NoPacket, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        c.sock.close()
        for h in held[1:]:
            h.sock.close()

    def test_client_that_never_sends_connect_is_closed(self):
        b = self.start_broker(plain_config(extra="[limits]\nconnect_timeout = 1"))
        s = connect_raw(b.port())
        t0 = time.monotonic()
        self.assertTrue(closed_by_peer(s, 5))
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        b.wait_log(r"no CONNECT within connect_timeout")


if __name__ == "__main__":
    unittest.main()
