"""The broker acts on connections through requests the server carries out after each of
its calls (closing, holding and resuming input: Server::carry_out_requests). Those made
from a timer callback are carried out at once too: a plugin's decision that times out
in the sweep's tick answers the client, and dispatches what it sent meanwhile, without
waiting for the loop's next wake-up.

Real clients against the real broker, with the `deferred` test plugin
(test/plugins/deferred.c), which answers from its own thread after delay_ms.
"""
import calendar
import re
import time
import unittest

import mqtt_raw as r
import mqgate_test
from mqgate_test import BrokerTestCase

LOG_TIME = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z ")


def log_time(line):
    """The wall-clock time (seconds since the epoch) of a broker log line."""
    m = LOG_TIME.match(line)
    assert m, line
    y, mo, d, h, mi, s, ms = (int(g) for g in m.groups())
    return calendar.timegm((y, mo, d, h, mi, s)) + ms / 1000.0


def first_line(text, pattern):
    rx = re.compile(pattern)
    for line in text.splitlines():
        if rx.search(line):
            return line
    raise AssertionError(f"no log line matches {pattern!r}")


class BrokerRequestsTest(BrokerTestCase):
    def broker(self, cfg_head="", limits="", listener="", **plugin):
        cfg = f'log_level = "debug"\n{cfg_head}'
        if limits:
            cfg += f"[limits]\n{limits}\n"
        cfg += f'[listeners.default]\nbind = "127.0.0.1:0"\n{listener}'
        if plugin:
            cfg += mqgate_test.plugin_table("d", "deferred", tag="d", **plugin)
        return self.start_broker(cfg)

    def client(self, b):
        c = r.RawClient(b.port())
        self.addCleanup(c.close)
        return c

    def connected(self, b, cid, **kw):
        c = self.client(b)
        self.assertEqual(c.connect(cid, **kw).return_code, 0)
        return c

    # -- a decision that times out is carried out at once ------------------------------
    def test_a_connect_denied_by_auth_timeout_is_answered_at_once(self):
        """The decision times out in the sweep's tick (a timer callback): the refusal
        and the close it requests must not wait for the next loop wake-up (up to a
        sweep later, 250 ms, when nothing else happens)."""
        b = self.broker(cfg_head="auth_timeout = 1\n", delay_ms=5000)
        c = self.client(b)
        c.send(r.connect("slow"))
        self.assertEqual(c.expect(r.CONNACK, timeout=5).return_code, 5)
        received = time.time()
        line = first_line(b.log(), r'plugin "d": no decision within auth_timeout')
        late = received - log_time(line)
        self.assertLess(late, 0.15, f"CONNACK {late * 1000:.0f} ms after the timeout")

    def test_packets_behind_a_publish_denied_by_auth_timeout_go_on_at_once(self):
        b = self.broker(cfg_head="auth_timeout = 1\n", delay_ms=5000, allow_at_once=True,
                        defer_topics=["slow/#"])
        c = self.connected(b, "pub")
        c.send(r.publish("slow/a", b"1", qos=1, packet_id=1)
               + r.publish("fast", b"2", qos=1, packet_id=2) + r.pingreq())
        self.assertEqual(c.expect(r.PUBACK, timeout=5).packet_id, 1)  # denied, acked (3.1.1)
        self.assertEqual(c.expect(r.PUBACK).packet_id, 2)
        c.expect(r.PINGRESP)
        received = time.time()
        line = first_line(b.log(), r'plugin "d": no decision within auth_timeout')
        late = received - log_time(line)
        self.assertLess(late, 0.15, f"PINGRESP {late * 1000:.0f} ms after the timeout")


if __name__ == "__main__":
    unittest.main()
