"""[cluster]: several mqgate nodes act as one broker over NATS (docs/cluster.md), first
step: live routing. Real nats-server processes (one, or three with routes and JetStream)
and real mqgate nodes on ephemeral loopback ports, real clients (mosquitto_pub/sub,
paho-mqtt 3.1.1 and 5.0): publish on one node, receive on another, for QoS 0/1/2, MQTT 5
properties and subscription options, wildcards and topics NATS cannot carry as they
are, once per subscription, interest removed on unsubscribe, order per publisher, a node
that starts without NATS, NATS killed and restarted, a node's NATS server killed in a
three-server cluster, NATS credentials, hostile bytes published straight to NATS, and a
full inbound queue (dropped, counted, logged per episode). Everything is stopped by PID when a test ends.
"""
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest
import urllib.request
from collections import namedtuple

import brokers
import mqgate_test
import mqtt_raw as R
import test_mqtt5  # Paho5 (imported as a module: its test cases stay out of this file)

NATS_BIN = shutil.which("nats-server") or "/usr/bin/nats-server"
HTTP_LISTENING = re.compile(r"http endpoint listening on \S+ port (\d+)")
Endpoint = namedtuple("Endpoint", "host port")


class NatsServer:
    """A nats-server on loopback, from a config file; stopped (or killed) by its PID."""

    def __init__(self, workdir, name="n1", port=None, cluster_port=None, routes=(),
                 jetstream=True, auth=None):
        self.dir = os.path.join(workdir, f"nats-{name}")
        os.makedirs(self.dir, exist_ok=True)
        self.name = name
        self.port = port or brokers.free_port()
        self.cluster_port = cluster_port
        lines = [f'server_name: "{name}"', f"listen: 127.0.0.1:{self.port}"]
        if auth:
            lines.append(f'authorization {{ user: "{auth[0]}", password: "{auth[1]}" }}')
        if cluster_port:
            lines.append("cluster {")
            lines.append('  name: "x"')
            lines.append(f"  listen: 127.0.0.1:{cluster_port}")
            if routes:
                lines.append("  routes: [" + ", ".join(f'"nats://127.0.0.1:{p}"' for p in routes)
                             + "]")
            lines.append("}")
        if jetstream:
            lines.append(f'jetstream {{ store_dir: "{os.path.join(self.dir, "js")}" }}')
        self.config = os.path.join(self.dir, "nats.conf")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log_path = os.path.join(self.dir, "nats.log")
        self.proc = None
        self.start()

    def start(self, timeout=10.0):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([NATS_BIN, "-c", self.config], stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if brokers.port_accepts("127.0.0.1", self.port):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop(signal.SIGKILL)  # raised from the constructor: no test would stop it
        raise AssertionError(f"nats-server {self.name} did not start:\n{self.log()}")

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self._log.close()


def raw_nats_publish(port, items, auth=None):
    """Publishes (subject, bytes) pairs with a bare NATS protocol client."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.recv(4096)  # INFO
    opts = {"verbose": False, "pedantic": False}
    if auth:
        opts.update(user=auth[0], **{"pass": auth[1]})
    out = b"CONNECT " + json.dumps(opts).encode() + b"\r\n"
    for subject, data in items:
        out += f"PUB {subject} {len(data)}\r\n".encode() + data + b"\r\n"
    out += b"PING\r\n"
    s.sendall(out)
    got = b""
    while b"PONG" not in got:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    s.close()
    return got


def envelope(payload, qos=0, sequence=1, instance=0x1234, node=b"x", client_id=b""):
    """docs/cluster.md's envelope, built by hand (for messages no node would send)."""
    return (struct.pack(">BBQQ", 1, qos, instance, sequence) + struct.pack(">H", len(node)) + node
            + struct.pack(">H", len(client_id)) + client_id + struct.pack(">I", 0) + payload)


class ClusterTestCase(mqgate_test.BrokerTestCase):
    def setUp(self):
        super().setUp()
        self.nats = []
        self.clients = []
        self.addCleanup(self._stop_nats)  # after the nodes (cleanups run last-first)

    def _stop_nats(self):
        for n in self.nats:
            if n.proc:
                n.stop()

    def start_nats(self, **kw):
        n = NatsServer(self.tmp, **kw)
        self.nats.append(n)
        return n

    def start_node(self, name, urls, extra="", wait_connected=True, cluster_name=None,
                   http_extra=""):
        cfg = mqgate_test.plain_config(extra=f"""
[http]
bind = "127.0.0.1:0"
{http_extra}
""") + f"""
[cluster]
node = "{name}"
nats = [{", ".join(f'"{u}"' for u in urls)}]
{f'name = "{cluster_name}"' if cluster_name else ""}
{"" if "replicas" in extra else f"replicas = {min(3, max(1, len(self.nats)))}"}
{extra}
"""
        b = self.start_broker(cfg)
        b.wait_log(HTTP_LISTENING.pattern)  # logged just after the listeners
        b.http = int(HTTP_LISTENING.search(b.log()).group(1))
        if wait_connected:
            b.wait_log(r"cluster: node \"%s\" connected to NATS" % name, timeout=10)
        return b

    def get(self, node, path):
        token = getattr(node, "token", None)  # [http] token: /metrics needs it too
        req = urllib.request.Request(f"http://127.0.0.1:{node.http}{path}",
                                     headers={"Authorization": "Bearer " + token} if token else {})
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read().decode()

    def metric(self, node, name, **labels):
        text = self.get(node, "/metrics")
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
                       if labels else "")
        for line in text.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        raise AssertionError(f"{want} not in /metrics")

    def wait_certain(self, node, nodes, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.metric(node, "mqgate_cluster_interest_certain") == 1
                    and self.metric(node, "mqgate_cluster_nodes") == nodes):
                return
            time.sleep(0.1)
        raise AssertionError("the node never knew the others' filters for certain")


    def paho(self, node, client_id="", **kw):
        c = brokers.PahoClient("127.0.0.1", node.port(), client_id=client_id, **kw)
        self.assertEqual(c.connect()[0], 0)
        self.addCleanup(c.disconnect)
        return c

    def paho5(self, node, client_id, **kw):
        c = test_mqtt5.Paho5(Endpoint("127.0.0.1", node.port()), client_id, **kw)
        self.assertEqual(c.connect()[0], 0)
        self.addCleanup(c.close)
        return c

    def pub(self, node, topic, payload, qos=0, *extra):
        subprocess.run(["mosquitto_pub", "-p", str(node.port()), "-t", topic, "-m", payload,
                        "-q", str(qos), *extra], check=True, timeout=10)

    def settle(self, pub_node, sub, topic, timeout=10.0):
        """Publishes probes on `topic` from `pub_node` until `sub` gets one (the NATS
        interest has reached every server), then drops the probes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pub(pub_node, topic, "probe")
            try:
                m = sub.get(timeout=0.3)
                sub.drain(0.3)
                return m
            except AssertionError:
                continue
        raise AssertionError(f"no cross-node delivery on {topic!r} within {timeout}s")


class ClusterRoutingTest(ClusterTestCase):
    def setUp(self):
        super().setUp()
        self.n = self.start_nats()
        self.a = self.start_node("a", [self.n.url()])
        self.b = self.start_node("b", [self.n.url()])

    def test_qos_0_1_2_across_nodes_at_the_lower_qos(self):
        subs = {}
        for q in (0, 1, 2):
            subs[q] = self.paho(self.b, f"sub{q}")
            self.assertEqual(subs[q].subscribe("q/#", q), [q])
        self.settle(self.a, subs[2], "q/probe")
        for s in subs.values():
            s.drain(0.2)
        for q in (0, 1, 2):
            self.pub(self.a, "q/x", f"m{q}", q)
        for sub_q, s in subs.items():
            got = sorted((m.payload.decode(), m.qos) for m in s.get_n(3))
            self.assertEqual(got, [(f"m{q}", min(q, sub_q)) for q in (0, 1, 2)], sub_q)
            s.expect_nothing(0.3)
        self.assertEqual(self.metric(self.a, "mqgate_cluster_connected"), 1)
        self.assertGreaterEqual(self.metric(self.a, "mqgate_cluster_messages_sent_total"), 3)
        self.assertGreaterEqual(self.metric(self.b, "mqgate_cluster_messages_received_total"), 3)
        self.assertIn("cluster: connected", self.get(self.b, "/healthz"))

    def test_mqtt5_properties_subscription_options_and_no_local(self):
        sub = self.paho5(self.b, "watcher")
        from paho.mqtt.subscribeoptions import SubscribeOptions
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes
        sp = Properties(PacketTypes.SUBSCRIBE)
        sp.SubscriptionIdentifier = 42
        rc, mid = sub.c.subscribe("p/#", options=SubscribeOptions(qos=1, retainAsPublished=True),
                                  properties=sp)
        self.assertEqual(rc, 0)
        time.sleep(0.3)
        # The publisher's own client id on the other node, with No Local: not for it.
        twin = self.paho5(self.b, "same-id")
        rc, _ = twin.c.subscribe("p/#", options=SubscribeOptions(qos=1, noLocal=True))
        self.assertEqual(rc, 0)
        plain = self.paho5(self.b, "plain")
        plain.subscribe("p/#", 1)
        pub = self.paho5(self.a, "same-id")
        self.settle_v5(pub, sub, [plain])
        props = pub.props(UserProperty=[("k", "v"), ("k", "w")], ContentType="text/plain",
                          ResponseTopic="reply/here", CorrelationData=b"\x00corr",
                          PayloadFormatIndicator=1, MessageExpiryInterval=300)
        info = pub.c.publish("p/live", b"payload", 1, retain=True, properties=props)
        info.wait_for_publish(5)
        m = sub.get()
        self.assertEqual((m.topic, m.payload, m.qos), ("p/live", b"payload", 1))
        self.assertTrue(m.retain)  # retain as published, on a live message
        mp = m.properties
        self.assertEqual(mp.UserProperty, [("k", "v"), ("k", "w")])
        self.assertEqual(mp.ContentType, "text/plain")
        self.assertEqual(mp.ResponseTopic, "reply/here")
        self.assertEqual(mp.CorrelationData, b"\x00corr")
        self.assertEqual(mp.PayloadFormatIndicator, 1)
        self.assertEqual(mp.SubscriptionIdentifier, [42])
        self.assertTrue(0 < mp.MessageExpiryInterval <= 300, mp.MessageExpiryInterval)
        m2 = plain.get()
        self.assertFalse(m2.retain)  # without retain as published: RETAIN 0
        with self.assertRaises(AssertionError):
            twin.get(timeout=0.5)  # No Local across nodes: same client id
        # A retained message crosses live only: the other node does not store it (until
        # retained messages move to a JetStream KV bucket, docs/cluster.md).
        late = self.paho5(self.b, "late")
        late.subscribe("p/#", 1)
        with self.assertRaises(AssertionError):
            late.get(timeout=0.5)

    def settle_v5(self, pub, sub, others=()):
        for _ in range(30):
            pub.publish("p/probe", b"probe", 0)
            try:
                sub.get(timeout=0.3)
                break
            except AssertionError:
                continue
        time.sleep(0.3)
        for c in [sub, *others]:
            while not c.messages.empty():
                c.messages.get()

    def test_wildcards_and_topics_nats_cannot_carry_as_they_are(self):
        sub = self.paho(self.b, "w")
        filters = ["w/#", "+/+", "/+/x", "w/+/é/+", "+/#"]
        self.assertEqual(sub.subscribe([(f, 0) for f in filters]), [0] * len(filters))
        self.settle(self.a, sub, "w/probe")
        topics = ["w", "w/a.b", "w/*", "w/>", "w/a b", "w/%", "w/%41", "w//x", "/", "//x",
                  "w/日本/é/z", "w/a\u00a0b"]
        for t in topics:
            self.pub(self.a, t, "m:" + t)
        got = [(m.topic, m.payload.decode()) for m in sub.get_n(len(topics))]
        self.assertEqual(sorted(got), sorted((t, "m:" + t) for t in topics))
        sub.expect_nothing(0.5)  # each once, though several filters match most
        # '$' topics: no client may publish them, and none come in from NATS ("+/#"
        # matches at the NATS level; the node refuses it).
        raw_nats_publish(self.n.port, [("mqgate.mqgate.m.$SYS.x", envelope(b"spoof"))])
        sub.expect_nothing(0.5)
        self.assertGreaterEqual(
            self.metric(self.b, "mqgate_cluster_messages_dropped_total", reason="malformed"), 1)

    def test_overlapping_filters_give_one_copy_per_subscription(self):
        one = self.paho(self.b, "one")
        one.subscribe([("o/+", 0), ("o/#", 1), ("o/x", 2)])
        two = self.paho(self.b, "two")
        two.subscribe("o/x", 1)
        self.settle(self.a, one, "o/x")
        two.drain(0.3)
        for i in range(20):
            self.pub(self.a, "o/x", str(i), 2)
        got = one.get_n(20)
        self.assertEqual([m.payload.decode() for m in got], [str(i) for i in range(20)])
        self.assertEqual({m.qos for m in got}, {2})  # the best of its matching filters
        self.assertEqual(len(two.get_n(20)), 20)
        one.expect_nothing(0.5)
        two.expect_nothing(0.1)
        # QoS 1/2 cross once per node through JetStream; QoS 0 once per NATS subscription,
        # and the copies are dropped.
        for i in range(20):
            self.pub(self.a, "o/x", str(i), 0)
        self.assertEqual(len(one.get_n(20)), 20)
        self.assertEqual(len(two.get_n(20)), 20)
        one.expect_nothing(0.5)
        self.assertGreaterEqual(self.metric(self.b, "mqgate_cluster_duplicates_total"), 40)
        self.assertEqual(self.metric(self.b, "mqgate_cluster_interest_filters"), 3)

    def test_unsubscribe_removes_the_interest(self):
        sub = self.paho(self.b, "u")
        sub.subscribe("u/+", 1)
        other = self.paho(self.b, "u2")
        other.subscribe("u/+", 1)  # the same filter: one interest
        self.settle(self.a, sub, "u/1")
        other.drain(0.3)
        self.assertEqual(self.metric(self.b, "mqgate_cluster_interest_filters"), 1)
        sub.unsubscribe("u/+")
        self.pub(self.a, "u/1", "still", 1)
        self.assertEqual(other.get().payload, b"still")
        other.unsubscribe("u/+")
        self.assertEqual(self.metric(self.b, "mqgate_cluster_interest_filters"), 0)
        self.wait_certain(self.a, 1)  # (unsure, a sends QoS 1 to every node it knows)
        before = self.metric(self.b, "mqgate_cluster_messages_received_total")
        for i in range(5):
            self.pub(self.a, "u/1", "gone", 1)
        time.sleep(0.5)
        sub.expect_nothing(0.1)
        other.expect_nothing(0.1)
        # NATS no longer sends them to b at all.
        self.assertEqual(self.metric(self.b, "mqgate_cluster_messages_received_total"), before)

    def test_publish_order_is_kept_per_publisher_and_topic(self):
        sub = self.paho(self.b, "ord")
        sub.subscribe([("ord/#", 1), ("ord/+", 0)])
        self.settle(self.a, sub, "ord/t")
        n = 400
        subprocess.run(["mosquitto_pub", "-p", str(self.a.port()), "-t", "ord/t", "-q", "1",
                        "-l"], input="".join(f"{i}\n" for i in range(n)).encode(), check=True,
                       timeout=30)
        got = [int(m.payload) for m in sub.get_n(n, timeout=20)]
        self.assertEqual(got, list(range(n)))

    def test_hostile_messages_on_our_subjects_are_dropped_and_counted(self):
        sub = self.paho(self.b, "h")
        sub.subscribe("h/#", 1)
        self.settle(self.a, sub, "h/probe")
        junk = [("mqgate.mqgate.m.h.x", b""), ("mqgate.mqgate.m.h.x", b"\x01"),
                ("mqgate.mqgate.m.h.x", b"\x09" + b"\xff" * 40),
                ("mqgate.mqgate.m.h.x", envelope(b"p")[:-6] + b"\xff\xff\xff\xff\xff\xff"),
                ("mqgate.mqgate.m.h.%zz", envelope(b"p", sequence=5)),
                ("mqgate.mqgate.m.h.x", envelope(b"ok", qos=1, sequence=7, instance=99))]
        raw_nats_publish(self.n.port, junk)
        m = sub.get()  # the one well-formed message gets through
        self.assertEqual((m.topic, m.payload, m.qos), ("h/x", b"ok", 1))
        sub.expect_nothing(0.5)
        self.assertGreaterEqual(
            self.metric(self.b, "mqgate_cluster_messages_dropped_total", reason="malformed"), 4)
        self.b.wait_log(r"cluster: dropped a malformed message from NATS")
        self.assertEqual(self.b.log().count("dropped a malformed message"), 1)  # logged once


class ClusterInboundQueueTest(ClusterTestCase):
    def test_a_full_inbound_queue_drops_counts_and_logs_the_episode(self):
        n = self.start_nats()
        b = self.start_node("b", [n.url()], extra="inbound_queue_messages = 16")
        sub = self.paho(b, "s")
        sub.subscribe("b/#", 0)
        time.sleep(0.5)
        burst = 20000  # one write: cnats hands them over faster than the loop takes 16
        raw_nats_publish(n.port, [("mqgate.mqgate.m.b.x", envelope(b"%d" % i, sequence=i + 1))
                                  for i in range(burst)])
        b.wait_log(r"cluster: the queue of messages from NATS is full")
        b.wait_log(r"cluster: the queue of messages from NATS drained", timeout=10)
        got = sub.drain(1.0)
        dropped = self.metric(b, "mqgate_cluster_messages_dropped_total", reason="queue_full_qos0")
        self.assertGreater(dropped, 0)
        self.assertEqual(len(got) + dropped, burst)  # each one delivered or counted
        self.assertEqual(self.metric(b, "mqgate_cluster_messages_received_total"), len(got))
        payloads = [int(m.payload) for m in got]
        self.assertEqual(payloads, sorted(payloads))  # what gets through keeps its order
        # Still serving: the next message crosses.
        raw_nats_publish(n.port, [("mqgate.mqgate.m.b.y", envelope(b"after", sequence=burst + 1))])
        self.assertEqual(sub.get().payload, b"after")


class ClusterNatsTroubleTest(ClusterTestCase):
    def test_a_node_started_without_nats_serves_locally_and_joins_later(self):
        port = brokers.free_port()
        url = f"nats://127.0.0.1:{port}"
        a = self.start_node("a", [url], wait_connected=False)
        b = self.start_node("b", [url], wait_connected=False)
        a.wait_log(r"cluster: no NATS server reachable")
        local = self.paho(a, "local")
        local.subscribe("l/#", 1)
        self.pub(a, "l/x", "here", 1)
        self.assertEqual(local.get().payload, b"here")
        self.assertIn("cluster: disconnected", self.get(a, "/healthz"))
        self.assertEqual(self.metric(a, "mqgate_cluster_connected"), 0)
        self.start_nats(port=port)
        a.wait_log(r"cluster: node \"a\" connected to NATS", timeout=20)
        b.wait_log(r"cluster: node \"b\" connected to NATS", timeout=20)
        remote = self.paho(b, "remote")
        remote.subscribe("l/#", 1)
        self.settle(a, remote, "l/y")
        self.assertEqual(self.metric(a, "mqgate_cluster_connected"), 1)
        self.assertIn("cluster: connected", self.get(a, "/healthz"))

    def test_a_node_that_cannot_start_stops_its_cluster_link_cleanly(self):
        # A listener's port taken: start() fails after the link began connecting (to a
        # live server, an absent one, and a host name); the process exits 1, no leak.
        n = self.start_nats()
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        self.addCleanup(busy.close)
        for url in (n.url(), "nats://127.0.0.1:%d" % brokers.free_port(),
                    "nats://localhost:%d" % n.port):
            path = os.path.join(self.tmp, "busy.toml")
            with open(path, "w") as f:
                f.write(f'[listeners.default]\nbind = "127.0.0.1:{busy.getsockname()[1]}"\n'
                        f'[cluster]\nnode = "z"\nnats = ["{url}"]\n')
            p = subprocess.run([mqgate_test.BROKER_BIN, "--config", path, *mqgate_test.RUN_AS],
                               capture_output=True,
                               timeout=30)
            out = (p.stdout + p.stderr).decode(errors="replace")
            self.assertEqual(p.returncode, 1, out)
            self.assertIn("address already in use", out)
            self.assertIsNone(mqgate_test.SANITIZER_REPORT.search(out), out)
            self.assertNotIn("handles left", out)

    def test_nats_killed_and_restarted_the_nodes_recover_by_themselves(self):
        n = self.start_nats()
        a = self.start_node("a", [n.url()], extra="publish_timeout = 2")
        b = self.start_node("b", [n.url()])
        sub = self.paho(b, "s")
        sub.subscribe("k/#", 1)
        self.settle(a, sub, "k/x")
        self.wait_certain(a, 1)  # a knows what b wants when NATS goes
        n.stop(signal.SIGKILL)
        a.wait_log(r"cluster: lost the NATS connection")
        b.wait_log(r"cluster: lost the NATS connection")
        self.assertIn("cluster: disconnected", self.get(a, "/healthz"))
        self.assertEqual(self.metric(a, "mqgate_cluster_connected"), 0)
        self.pub(a, "k/x", "lost", 0)  # QoS 0 while NATS is down: dropped, counted
        self.assertEqual(
            self.metric(a, "mqgate_cluster_messages_dropped_total", reason="nats_down"), 1)
        local = self.paho(a, "local")  # local traffic goes on, QoS 1 acknowledged at once
        local.subscribe("loc/#", 1)
        self.pub(a, "loc/y", "local", 1)
        self.assertEqual(local.get().payload, b"local")
        # QoS 1 that b wants cannot be stored for it: held (publish_timeout), then refused:
        # 5.0 with 0x83 and a Reason String, 3.1.1 disconnected unacknowledged.
        raw5 = R.RawClient5(a.port())
        self.addCleanup(raw5.close)
        raw5.connect("r5")
        self.assertEqual(raw5.publish("k/y", b"held", qos=1, timeout=10), 0x83)
        raw3 = R.RawClient(a.port())
        self.addCleanup(raw3.close)
        raw3.connect("r3")
        raw3.send(R.publish("k/y", b"held", qos=1, packet_id=1))
        self.assertTrue(raw3.closed_by_peer(10))
        self.assertFalse([p for p in raw3.discarded if p.type == R.PUBACK])
        self.assertEqual(self.metric(a, "mqgate_cluster_jetstream_publish_failures_total"), 2)
        n.start()
        a.wait_log(r"cluster: NATS connection regained", timeout=20)
        b.wait_log(r"cluster: NATS connection regained", timeout=20)
        self.settle(a, sub, "k/z")  # b's subscriptions were re-sent by itself
        self.assertEqual(self.metric(a, "mqgate_cluster_connected"), 1)
        self.assertGreaterEqual(self.metric(a, "mqgate_cluster_reconnects_total"), 1)
        self.assertEqual(a.log().count("cluster: lost the NATS connection"), 1)  # once

    def test_nats_credentials_right_and_wrong(self):
        n = self.start_nats(auth=("mq", "s3cret-pw"))
        with open(os.path.join(self.tmp, "good"), "w") as f:
            f.write("s3cret-pw\n")
        with open(os.path.join(self.tmp, "bad"), "w") as f:
            f.write("wrong-pw\n")
        good = os.path.join(self.tmp, "good")
        bad = os.path.join(self.tmp, "bad")
        a = self.start_node("a", [n.url()], extra=f'user = "mq"\npassword_file = "{good}"')
        b = self.start_node("b", [n.url()], extra=f'user = "mq"\npassword_file = "{good}"')
        c = self.start_node("c", [n.url()], extra=f'user = "mq"\npassword_file = "{bad}"',
                            wait_connected=False)
        c.wait_log(r"cluster: NATS at nats://127\.0\.0\.1:\d+ refused node \"c\": .*uthoriz")
        sub = self.paho(b, "s")
        sub.subscribe("c/#", 1)
        self.settle(a, sub, "c/x")
        for node in (a, b, c):
            self.assertNotIn("s3cret-pw", node.log())
            self.assertNotIn("wrong-pw", node.log())
        self.assertEqual(self.metric(c, "mqgate_cluster_connected"), 0)
        # An anonymous NATS client cannot publish into the cluster.
        self.assertIn(b"Authorization Violation", raw_nats_publish(n.port, []))


class ClusterThreeServersTest(ClusterTestCase):
    def three_servers(self):
        cports = [brokers.free_port() for _ in range(3)]
        return [self.start_nats(name=f"s{i}", cluster_port=cports[i],
                                routes=[p for j, p in enumerate(cports) if j != i],
                                jetstream=True) for i in range(3)]

    def test_a_nodes_nats_server_killed_it_moves_to_another(self):
        servers = self.three_servers()
        urls = [s.url() for s in servers]
        a = self.start_node("a", urls[0:1] + urls[1:])  # its own server first
        b = self.start_node("b", urls[1:2] + urls[2:] + urls[0:1])
        sub = self.paho(b, "s")
        sub.subscribe("f/#", 1)
        self.settle(a, sub, "f/x", timeout=20)
        servers[0].stop(signal.SIGKILL)
        a.wait_log(r"cluster: lost the NATS connection")
        a.wait_log(r"cluster: NATS connection regained at nats://127\.0\.0\.1:(%d|%d)"
                   % (servers[1].port, servers[2].port), timeout=20)
        self.settle(a, sub, "f/y", timeout=20)
        for i in range(0, 50, 10):
            self.pub(a, "f/z", str(i), 1)
        # (Stored by JetStream; the consumer may be electing a new leader meanwhile.)
        got = [m.payload for m in sub.get_n(5, timeout=20)]
        self.assertEqual(got, [b"0", b"10", b"20", b"30", b"40"])
        self.assertIn("cluster: connected", self.get(a, "/healthz"))
        # A failover faster than the loop looks still counts as a loss and a regain.
        self.assertEqual(self.metric(a, "mqgate_cluster_reconnects_total"), 1)
        self.assertEqual(a.log().count("cluster: lost the NATS connection"), 1)

    def test_three_nats_servers_three_nodes(self):
        servers = self.three_servers()
        nodes = [self.start_node(f"n{i}", [servers[i].url()]) for i in range(3)]
        subs = []
        for i, node in enumerate(nodes):
            s = self.paho(node, f"sub{i}")
            s.subscribe("t/#", 1)
            subs.append(s)
        for i, node in enumerate(nodes):  # every node reaches every other one
            for j, s in enumerate(subs):
                if j != i:
                    self.settle(node, s, f"t/probe{i}", timeout=20)
        for s in subs:
            s.drain(0.3)
        for i, node in enumerate(nodes):
            self.pub(node, f"t/from{i}", f"m{i}", 1)
        for j, s in enumerate(subs):
            got = sorted(m.payload.decode() for m in s.get_n(3))
            self.assertEqual(got, ["m0", "m1", "m2"], j)  # its own node's too, once
            s.expect_nothing(0.3)


class ClusterInterestTest(ClusterTestCase):
    """Step 2: the nodes share their filters; a message no other node wants stays on its
    node, and a SUBACK for a new filter means every node knows it."""

    def setUp(self):
        super().setUp()
        self.n = self.start_nats()
        self.a = self.start_node("a", [self.n.url()])
        self.b = self.start_node("b", [self.n.url()])

    def test_a_message_no_other_node_wants_stays_on_its_node(self):
        local = self.paho(self.a, "local")
        local.subscribe("local/#", 1)
        remote = self.paho(self.b, "remote")
        remote.subscribe("x/#", 1)
        self.wait_certain(self.a, 1)
        self.assertEqual(self.metric(self.a, "mqgate_cluster_remote_filters"), 1)
        sent = self.metric(self.a, "mqgate_cluster_messages_sent_total")
        kept = self.metric(self.a, "mqgate_cluster_messages_kept_local_total")
        pub = self.paho(self.a, "pub")
        for i in range(20):
            pub.publish("local/t", b"%d" % i, qos=1)
        self.assertEqual([int(m.payload) for m in local.get_n(20)], list(range(20)))
        self.assertEqual(self.metric(self.a, "mqgate_cluster_messages_sent_total"), sent)
        self.assertEqual(self.metric(self.a, "mqgate_cluster_messages_kept_local_total"),
                         kept + 20)
        pub.publish("x/1", b"wanted", qos=1)
        self.assertEqual(remote.get().payload, b"wanted")
        self.assertEqual(self.metric(self.a, "mqgate_cluster_messages_sent_total"), sent + 1)
        # b unsubscribes: a stops sending x/ at once (the SUBACK-less UNSUBSCRIBE's DELTA
        # reaches a quickly; give it a moment).
        remote.unsubscribe("x/#")
        deadline = time.monotonic() + 5
        while self.metric(self.a, "mqgate_cluster_remote_filters") != 0:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        pub.publish("x/1", b"unwanted", qos=1)
        self.assertEqual(self.metric(self.a, "mqgate_cluster_messages_sent_total"), sent + 1)

    def test_a_suback_means_every_node_knows_the_filter(self):
        self.wait_certain(self.a, 1)
        self.wait_certain(self.b, 1)
        sub = self.paho(self.b, "fresh-sub")
        pub = self.paho(self.a, "fresh-pub")
        for i in range(40):
            # A new filter each time: publish on the other node right after the SUBACK.
            sub.subscribe(f"fresh/{i}/+", 1)
            pub.publish(f"fresh/{i}/t", b"%d" % i, qos=1)
            self.assertEqual(sub.get().payload, b"%d" % i, i)
        self.assertEqual(self.metric(self.b, "mqgate_cluster_interest_ack_timeouts_total"), 0)

    def test_a_node_joining_learns_the_filters_and_a_node_leaving_is_forgotten(self):
        sub = self.paho(self.a, "old-sub")
        sub.subscribe("join/#", 1)
        self.wait_certain(self.a, 1)
        c = self.start_node("c", [self.n.url()], http_extra='console = true\ntoken = "t0k"\n')
        c.token = "t0k"
        self.wait_certain(c, 2)
        self.assertEqual(self.metric(c, "mqgate_cluster_remote_filters"), 1)
        # The console's broker page shows the cluster as this node sees it.
        cluster = json.loads(self.get(c, "/api/v1/broker"))["cluster"]
        self.assertEqual((cluster["node"], cluster["connected"], cluster["other_nodes"],
                          cluster["remote_filters"], cluster["interest_certain"]),
                         ("c", True, 2, 1, True))
        kept = self.metric(c, "mqgate_cluster_messages_kept_local_total")
        self.pub(c, "join/x", "from-c", 1)
        self.assertEqual(sub.get().payload, b"from-c")
        self.pub(c, "other/x", "nobody", 1)
        self.assertEqual(self.metric(c, "mqgate_cluster_messages_kept_local_total"), kept + 1)
        self.wait_certain(self.a, 2)
        self.assertEqual(c.stop(), 0)  # a clean stop says BYE: forgotten at once, not after 10 s
        deadline = time.monotonic() + 3
        while self.metric(self.a, "mqgate_cluster_nodes") != 1:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)

    def test_restarted_nats_the_nodes_resynchronise(self):
        sub = self.paho(self.b, "rs")
        sub.subscribe("rs/#", 1)
        self.wait_certain(self.a, 1)
        self.n.stop(signal.SIGKILL)
        self.a.wait_log(r"cluster: lost the NATS connection")
        self.b.wait_log(r"cluster: lost the NATS connection")
        # While apart, b's filters change: a must learn it after the reconnection.
        sub.subscribe("rs2/#", 1)
        self.n.start()
        self.a.wait_log(r"cluster: NATS connection regained", timeout=20)
        self.b.wait_log(r"cluster: NATS connection regained", timeout=20)
        self.wait_certain(self.a, 1, timeout=20)
        self.assertEqual(self.metric(self.a, "mqgate_cluster_remote_filters"), 2)
        self.pub(self.a, "rs2/x", "after", 1)
        self.assertEqual(sub.get().payload, b"after")


if __name__ == "__main__":
    unittest.main()
