"""[cluster] durability of QoS 1/2 across nodes (docs/cluster.md#durability): a PUBACK for a
message another node wants means JetStream (3 replicas on 3 nats-servers) stored it, so it
reaches that node's subscriber even when the publishing node, the subscribing node (killed
-9 and restarted on its state) or one nats-server is killed -9 during the flow; duplicates
are allowed and counted, nothing acknowledged is lost. Also: a node without JetStream
refuses (5.0 0x83) instead of acknowledging, QoS 1 is kept in order per publisher and a
late QoS 1 is not taken for a duplicate of a QoS 0 message. Real nats-server and mqgate
processes on loopback, stopped by PID.
"""
import os
import re
import shutil
import signal
import threading
import time
import unittest

import brokers
import mqtt_raw as R
import test_cluster  # its ClusterTestCase (imported as a module: its tests stay there)


class Publisher:
    """A paho 3.1.1 client publishing QoS `qos` messages "<i>" on `topic`, 20 in flight,
    in a thread; `acked` holds the numbers whose PUBACK/PUBCOMP arrived."""

    def __init__(self, port, client_id, topic, qos=1):
        import paho.mqtt.client as mqtt
        self.c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv311,
                             reconnect_on_failure=False)
        self.c.max_inflight_messages_set(20)
        self.topic, self.qos = topic, qos
        self.mids = {}
        self.acked = set()
        self.early = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.c.on_publish = self._on_publish
        self.c.connect("127.0.0.1", port, 60)
        self.c.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_publish(self, client, userdata, mid):
        with self.lock:
            if mid in self.mids:
                self.acked.add(self.mids.pop(mid))
            else:
                self.early.add(mid)  # acknowledged before _run recorded it

    def _run(self):
        i = 0
        while not self.stopping.is_set():
            with self.lock:
                backlog = len(self.mids)
            if backlog > 200:  # paho queues without bound: keep it near its window
                time.sleep(0.005)
                continue
            # Not under self.lock: paho calls _on_publish holding its own lock.
            info = self.c.publish(self.topic, str(i).encode(), self.qos)
            if info.rc != 0:
                break
            with self.lock:
                if info.mid in self.early:
                    self.early.discard(info.mid)
                    self.acked.add(i)
                else:
                    self.mids[info.mid] = i
            i += 1

    def start(self):
        self.thread.start()
        return self

    def wait_acked(self, n, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.acked) >= n:
                    return
            time.sleep(0.02)
        raise AssertionError(f"only {len(self.acked)} of {n} messages acknowledged")

    def stop(self):
        """Idempotent (a cleanup calls it again); returns the acknowledged numbers."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(5)
        try:
            self.c.disconnect()
        except Exception:
            pass
        self.c.loop_stop()
        with self.lock:
            return set(self.acked)


class ClusterDurabilityTest(test_cluster.ClusterTestCase):
    def setUp(self):
        super().setUp()
        cports = [brokers.free_port() for _ in range(3)]
        self.servers = [self.start_nats(name=f"s{i}", cluster_port=cports[i],
                                        routes=[p for j, p in enumerate(cports) if j != i],
                                        jetstream=True) for i in range(3)]
        self.killed = []
        self.addCleanup(lambda: [shutil.rmtree(d, True) for d in self.killed])

    def node(self, name, first, persistent=False):
        """A node whose own nats-server is servers[first] (the others follow), replicas 3;
        with `persistent`, an SQLite store in its directory."""
        urls = [s.url() for s in self.servers[first:] + self.servers[:first]]
        store = f'[persistence]\npath = "{self.tmp}/{name}.db"' if persistent else ""
        n = self.start_node(name, urls, extra="replicas = 3", http_extra=store)
        n.wait_log(r"JetStream stream MQGATE_mqgate \(replicas 3\) and consumer %s ready" % name,
                   timeout=20)
        return n

    def kill(self, node):
        node.proc.kill()
        node.proc.wait()
        node._log.close()
        self._brokers.remove(node)
        self.killed.append(node.dir)  # removed after the test, unless restarted

    def restart(self, node):
        self.killed.remove(node.dir)
        b = self.start_broker(None, config_file=node.config_path, workdir=node.dir)
        b.own_dir = True  # its directory goes when it stops
        b.wait_log(test_cluster.HTTP_LISTENING.pattern)  # logged just after the listeners
        b.http = int(test_cluster.HTTP_LISTENING.search(b.log()).group(1))
        return b

    def subscriber(self, node, client_id="dsub"):
        sub = brokers.PahoClient("127.0.0.1", node.port(), client_id=client_id,
                                 clean_session=False)
        self.assertEqual(sub.connect()[0], 0)
        self.addCleanup(sub.close)
        return sub

    def collect(self, sub, want, got, timeout=30.0):
        """Adds what `sub` receives to `got` (a list of numbers) until `want` is in it."""
        deadline = time.monotonic() + timeout
        while not want.issubset(got) and time.monotonic() < deadline:
            got.extend(int(m.payload) for m in sub.drain(0.5))
        missing = sorted(want - set(got))
        self.assertEqual(missing, [], f"acknowledged but never delivered ({len(missing)})")
        return got

    def flow(self, persistent=False):
        """Nodes a (on server 0) and b (on server 1), a persistent session on b
        subscribed to d/#, and a that knows it."""
        a = self.node("a", 0)
        b = self.node("b", 1, persistent)
        sub = self.subscriber(b)
        sub.subscribe("d/#", 1)
        self.wait_certain(a, 1)
        return a, b, sub

    def publish_through(self, a, topic, disrupt, before=150, after=150, own_node_dies=False):
        pub = Publisher(a.port(), "dpub", topic)
        self.addCleanup(pub.stop)
        pub.start()
        pub.wait_acked(before)
        disrupt()
        if own_node_dies:
            # Its publisher loses the connection (publish fails, its thread ends): what
            # it had acknowledged counts.
            pub.thread.join(15)
        else:
            pub.wait_acked(before + after, timeout=15)
        return pub.stop()

    def test_publishing_node_killed_nothing_acknowledged_is_lost(self):
        a, b, sub = self.flow()
        acked = self.publish_through(a, "d/a", lambda: self.kill(a), own_node_dies=True)
        got = self.collect(sub, acked, [])
        self.assertGreaterEqual(len(acked), 150)
        # Stored before the PUBACK, delivered by b's consumer whatever became of a.
        self.assertGreaterEqual(self.metric(b, "mqgate_cluster_jetstream_received_total"),
                                len(acked))
        self.assertLessEqual(len(set(got)), len(acked) + 20)  # a's last window, unacked

    def test_subscribing_node_killed_and_restarted_gets_everything_acknowledged(self):
        a, b, sub = self.flow(True)
        got = []
        acked = self.publish_through(a, "d/b", lambda: self.kill(b))
        got.extend(int(m.payload) for m in sub.drain(0.2))
        sub.close()
        b = self.restart(b)
        b.wait_log(r"consumer b ready", timeout=20)
        sub = self.subscriber(b)  # its session, with what was queued for it
        got = self.collect(sub, acked, got)
        self.assertGreaterEqual(len(acked), 300)  # a went on while b was down

    def test_a_nats_server_killed_nothing_acknowledged_is_lost(self):
        a, b, sub = self.flow()
        acked = self.publish_through(a, "d/c", lambda: self.servers[0].stop(signal.SIGKILL),
                                     after=300)
        got = self.collect(sub, acked, [])
        self.assertGreaterEqual(len(acked), 450)  # a failed over and went on
        # In order per publisher and topic, apart from duplicates and retried ones.
        firsts = []
        for i in got:
            if i not in firsts:
                firsts.append(i)
        self.assertGreaterEqual(sum(1 for x, y in zip(firsts, firsts[1:]) if x < y),
                                0.9 * len(firsts) - 1)

    def test_qos1_in_order_and_not_taken_for_a_duplicate_of_qos0(self):
        a = self.node("a", 0)
        b = self.node("b", 1)
        sub = self.subscriber(b)
        sub.subscribe("o/#", 1)
        self.wait_certain(a, 1)
        pub = self.paho(a, "mixed")
        # QoS 0 goes over core NATS, QoS 1 through JetStream: a QoS 1 message arrives
        # after the QoS 0 one published after it, and must not be dropped for that.
        for i in range(100):
            pub.c.publish("o/m", b"0-%d" % i, 0)
            pub.publish("o/m", b"1-%d" % i, 1)
        got = [m.payload.decode() for m in sub.get_n(200, timeout=20)]
        ones = [int(p[2:]) for p in got if p.startswith("1-")]
        if self.metric(a, "mqgate_cluster_jetstream_publish_retries_total") == 0:
            self.assertEqual(ones, list(range(100)))
        else:  # a publish sent again may be stored after those behind it: each once still
            self.assertEqual(sorted(ones), list(range(100)))
        zeros = [int(p[2:]) for p in got if p.startswith("0-")]
        self.assertEqual(zeros, list(range(100)))
        self.assertEqual(self.metric(a, "mqgate_cluster_jetstream_published_total"), 100)


class ClusterWithoutJetStreamTest(test_cluster.ClusterTestCase):
    def test_without_jetstream_qos1_for_other_nodes_is_refused_not_acknowledged(self):
        n = self.start_nats(jetstream=False)
        a = self.start_node("a", [n.url()], extra="publish_timeout = 1")
        b = self.start_node("b", [n.url()])
        a.wait_log(r"cannot set up JetStream \(stream MQGATE_mqgate: JetStream is not available")
        self.assertIn("JetStream not ready", self.get(a, "/healthz"))
        self.assertEqual(self.metric(a, "mqgate_cluster_jetstream_ready"), 0)
        sub = self.paho(b, "s")
        sub.subscribe("j/#", 1)
        self.settle(a, sub, "j/x")  # QoS 0 crosses over core NATS
        self.wait_certain(a, 1)
        raw5 = R.RawClient5(a.port())
        self.addCleanup(raw5.close)
        raw5.connect("r5")
        self.assertEqual(raw5.publish("j/y", b"x", qos=1, timeout=10), 0x83)
        self.assertEqual(raw5.publish("j/y", b"x", qos=2, packet_id=2, timeout=10), 0x83)
        self.assertEqual(raw5.publish("nobody/else", b"x", qos=1, packet_id=3), 0x10)
        sub.expect_nothing(0.3)
        self.assertEqual(self.metric(a, "mqgate_cluster_jetstream_publish_failures_total"), 2)
        self.assertEqual(len(re.findall(r"cannot set up JetStream", a.log())), 1)  # once


if __name__ == "__main__":
    unittest.main()
