"""The bundled passwd and acl plugins (docs/passwd.md, docs/acl.md) with real clients:
password files written by Debian's mosquitto_passwd at test time, CONNACK 4 for bad
credentials, the session identity, verifications off the event loop, SIGHUP with good
and broken files, and ACL decisions (publish, SUBSCRIBE 0x80, retained deliveries,
%u/%c patterns). AclParityTest runs one scenario against mqgate and against Debian's
Mosquitto 2.0.11 with the same files; the expected deviations are listed in it."""
import os
import queue
import signal
import subprocess
import time
import unittest

import paho.mqtt.client as paho

import mqtt_raw as r
from mosquitto_auth import MosquittoAuth
from mqgate_test import BrokerTestCase, run_config_check

MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
BAD_CREDENTIALS = "Connection Refused: bad user name or password"

USERS = {"alice": "alice pw", "bob": "bob pw", "roger": "roger pw", "writer": "writer pw",
         "observer": "observer pw"}

# mosquitto-conf(5)'s examples, and the test's own writer and observer
ACL = """\
topic read $SYS/#
topic read public/#
topic deny public/secret/#

user roger
topic foo/bar

user alice
topic readwrite alice/#
topic deny alice/private

user writer
topic write #
user observer
topic read #

pattern write sensor/%u/data
pattern readwrite clients/%c/#
pattern deny clients/%c/admin
"""


def write_passwd(path, users, iterations=None):
    """A password file written by mosquitto_passwd (never committed)."""
    first = True
    for user, pw in users.items():
        args = [MOSQUITTO_PASSWD]
        if iterations:
            args += ["-I", str(iterations)]
        if first:
            args.append("-c")
        args += ["-b", path, user, pw]
        subprocess.run(args, check=True, capture_output=True, timeout=30)
        first = False


def mosquitto_pub(port, username, password, client_id="probe", topic="probe"):
    args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-i", client_id, "-t", topic,
            "-m", "x", "-q", "1"]
    if username is not None:
        args += ["-u", username]
    if password is not None:
        args += ["-P", password]
    p = subprocess.run(args, capture_output=True, text=True, timeout=20)
    return p.returncode, p.stderr


def paho_client(port, client_id, username=None, password=None, timeout=10.0):
    c = paho.Client(client_id=client_id, clean_session=True, protocol=paho.MQTTv311)
    if username is not None:
        c.username_pw_set(username, password)
    c.messages = queue.Queue()
    c.rc = None
    c.on_connect = lambda cl, ud, flags, rc: setattr(cl, "rc", rc)
    c.on_message = lambda cl, ud, msg: cl.messages.put((msg.topic, msg.payload, msg.retain))
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    deadline = time.monotonic() + timeout
    while c.rc is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return c


def paho_subscribe(client, topics, timeout=10.0):
    acks = {}
    client.on_subscribe = lambda c, ud, mid, qos: acks.__setitem__(mid, qos)
    _rc, mid = client.subscribe([(t, 1) for t in topics])
    deadline = time.monotonic() + timeout
    while mid not in acks and time.monotonic() < deadline:
        time.sleep(0.01)
    if mid not in acks:
        raise AssertionError("no SUBACK")
    return list(acks[mid])


def drain(client, settle=0.5):
    time.sleep(settle)
    seen = set()
    while not client.messages.empty():
        seen.add(client.messages.get_nowait())
    return seen


def stop(*clients):
    for c in clients:
        c.disconnect()
        c.loop_stop()


def config(extra_plugins="", chain=("passwd",), passwd_options="", top=""):
    return ('log_level = "debug"\n' + top + '[listeners.default]\nbind = "127.0.0.1:0"\n'
            "plugins = [" + ", ".join(f'"{p}"' for p in chain) + "]\n"
            '[plugins.passwd]\npassword_file = "passwd"\n' + passwd_options + extra_plugins)


class PasswdTest(BrokerTestCase):
    def setUp(self):
        super().setUp()
        self.pw = os.path.join(self.tmp, "passwd")
        write_passwd(self.pw, {"alice": USERS["alice"], "bob": USERS["bob"]})

    def broker(self, **kw):
        # The config is written next to the files: password_file is relative to it.
        return self.start_broker(config(**kw), workdir=self.tmp)

    def raw(self, b):
        c = r.RawClient(b.port())
        self.addCleanup(c.close)
        return c

    def test_mosquitto_passwd_file_and_bad_credentials(self):
        b = self.broker()
        self.assertEqual(mosquitto_pub(b.port(), "alice", "alice pw"), (0, ""))
        for user, pw in (("alice", "wrong"), ("nobody", "alice pw"), ("alice", None)):
            with self.subTest(user=user, pw=pw):
                rc, err = mosquitto_pub(b.port(), user, pw)
                self.assertNotEqual(rc, 0)
                self.assertIn(BAD_CREDENTIALS, err)
        b.wait_log(r'refused \(CONNACK 4\): .*plugin "passwd": bad username or password', count=3)
        # the same CONNACK, raw, also for an empty password
        for user, pw in (("alice", b"wrong"), ("nobody", b"x"), ("bob", b"")):
            self.assertEqual(self.raw(b).connect("raw", username=user, password=pw).return_code, 4)
        # no username: passwd abstains; alone on the listener that means CONNACK 5
        self.assertEqual(self.raw(b).connect("anon").return_code, 5)

    def test_no_username_is_left_to_the_other_plugins(self):
        b = self.broker(chain=("passwd", "anonymous"),
                        extra_plugins="[plugins.anonymous]\nallow_anonymous = true\n")
        self.assertEqual(self.raw(b).connect("anon").return_code, 0)
        self.assertEqual(self.raw(b).connect("a", username="alice", password=b"x").return_code, 4)
        self.assertEqual(self.raw(b).connect("b", username="bob", password=b"bob pw").return_code, 0)

    def test_identity_owns_the_session(self):
        b = self.broker()
        alice = self.raw(b)
        self.assertEqual(alice.connect("shared", clean=False, username="alice",
                                       password=b"alice pw").return_code, 0)
        bob = self.raw(b)
        self.assertEqual(bob.connect("shared", clean=False, username="bob",
                                     password=b"bob pw").return_code, 2)
        b.wait_log(r'client="shared" .*refused \(CONNACK 2\): client id belongs to a .*'
                   r'session of identity "passwd:alice"')
        alice.ping()  # the owner stays connected

    def test_verifications_do_not_block_the_loop(self):
        # 10000 iterations: ~20 ms per verification, 40 of them on one thread.
        write_passwd(self.pw, {"slow": "slow pw"}, iterations=10000)
        b = self.broker(passwd_options="threads = 1\n", top="auth_timeout = 60\n")
        bystander = self.raw(b)
        self.assertEqual(bystander.connect("bystander", username="slow",
                                           password=b"slow pw").return_code, 0)
        waiting = []
        for i in range(40):
            c = self.raw(b)
            c.send(r.connect(f"many-{i}", username="slow",
                             password=b"slow pw" if i % 3 else b"wrong"))
            waiting.append((i, c))
        # a reload swaps the table while verifications hold the old one (ASan watches)
        b.signal(signal.SIGHUP)
        worst = 0.0
        start = time.monotonic()
        while time.monotonic() - start < 1.0:
            t = time.monotonic()
            bystander.ping(timeout=5)
            worst = max(worst, time.monotonic() - t)
            time.sleep(0.02)
        self.assertLess(worst, 1.0, "PINGRESP waited for password verifications")
        for i, c in waiting:
            self.assertEqual(c.expect(r.CONNACK, timeout=60).return_code, 0 if i % 3 else 4)
        b.wait_log(r'reload: plugin "passwd" took its new options')

    def test_busy_when_the_queue_is_full(self):
        write_passwd(self.pw, {"slow": "slow pw"}, iterations=200000)
        b = self.broker(passwd_options="threads = 1\nmax_pending = 1\n")
        clients = []
        for i in range(6):
            c = self.raw(b)
            c.send(r.connect(f"busy-{i}", username="slow", password=b"slow pw"))
            clients.append(c)
        codes = [c.expect(r.CONNACK, timeout=60).return_code for c in clients]
        self.assertIn(5, codes)
        self.assertIn(0, codes)
        self.assertTrue(set(codes) <= {0, 5}, codes)
        b.wait_log(r'refused \(CONNACK 5\): .*busy: 1 password verifications already queued')

    def test_sighup_new_file_and_broken_file(self):
        b = self.broker()
        self.assertEqual(mosquitto_pub(b.port(), "alice", "alice pw")[0], 0)
        write_passwd(self.pw, {"carol": "carol pw", "bob": "bob pw"})  # alice removed
        b.signal(signal.SIGHUP)
        b.wait_log(r'reload: plugin "passwd" took its new options')
        # the file is parsed off the loop, then swapped in
        b.wait_log(r'plugin "passwd": reloaded \S*passwd: 2 users; answers no earlier than')
        self.assertEqual(mosquitto_pub(b.port(), "carol", "carol pw")[0], 0)
        rc, err = mosquitto_pub(b.port(), "alice", "alice pw")
        self.assertIn(BAD_CREDENTIALS, err)
        with open(self.pw, "a") as f:
            f.write("dave:plain text\n")
        b.signal(signal.SIGHUP)
        b.wait_log(r'plugin "passwd": reload: password_file: \S*passwd:3: password is not a '
                   r'hash .*; keeping the previous users')
        self.assertEqual(mosquitto_pub(b.port(), "carol", "carol pw")[0], 0)  # old file kept
        self.assertIn(BAD_CREDENTIALS, mosquitto_pub(b.port(), "dave", "plain text")[1])

    def test_shutdown_completes_pending_decisions(self):
        write_passwd(self.pw, {"slow": "slow pw"}, iterations=100000)
        b = self.broker(passwd_options="threads = 1\n")
        for i in range(10):
            c = self.raw(b)
            c.send(r.connect(f"pending-{i}", username="slow", password=b"slow pw"))
        time.sleep(0.3)
        self.assertEqual(b.stop(), 0)  # no leak, no sanitizer report, tokens completed

    def test_bad_options(self):
        base = '[listeners.default]\nbind = "127.0.0.1:0"\n[plugins.passwd]\n'
        cases = [
            ('password_file = "passwd"\npasword = 1\n', r'check\.toml:5:1: unknown option "pasword"'),
            ("threads = 2\n", r"check\.toml:3\b.*password_file: missing"),
            ('password_file = "nope"\n', r"password_file: \S*nope"),
            ('password_file = "passwd"\nthreads = 0\n', r"check\.toml:5:1: threads: expected an integer"),
        ]
        for text, pattern in cases:
            with self.subTest(text=text):
                rc, out = run_config_check(base + text, self.tmp)
                self.assertNotEqual(rc, 0, out)
                self.assertRegex(out, pattern)
        rc, out = run_config_check(base + 'password_file = "passwd"\n', self.tmp)
        self.assertEqual(rc, 0, out)


class AclTest(BrokerTestCase):
    def setUp(self):
        super().setUp()
        write_passwd(os.path.join(self.tmp, "passwd"), USERS)
        with open(os.path.join(self.tmp, "acl"), "w") as f:
            f.write(ACL)
        self.b = self.start_broker(config(
            chain=("passwd", "anonymous", "acl"),
            extra_plugins='[plugins.anonymous]\nallow_anonymous = true\n'
                          '[plugins.acl]\nacl_file = "acl"\n'), workdir=self.tmp)
        self.port = self.b.port()

    def client(self, cid, user=None):
        c = paho_client(self.port, cid, user, USERS.get(user))
        self.addCleanup(stop, c)
        self.assertEqual(c.rc, 0)
        return c

    def test_publish_allowed_and_denied(self):
        observer = self.client("obs", "observer")
        self.assertEqual(paho_subscribe(observer, ["#"]), [1])
        roger = self.client("r1", "roger")
        anon = self.client("anon1")
        for c, topic in ((roger, "foo/bar"), (roger, "foo/baz"), (roger, "sensor/roger/data"),
                         (roger, "sensor/alice/data"), (anon, "clients/anon1/x"),
                         (anon, "clients/anon1/admin"), (anon, "clients/other/x"),
                         (anon, "public/news")):
            c.publish(topic, topic.encode(), qos=1).wait_for_publish()  # acked either way
        got = {t for t, _p, _r in drain(observer)}
        self.assertEqual(got, {"foo/bar", "sensor/roger/data", "clients/anon1/x"})
        self.b.wait_log(r'acl: no write for "foo/baz" \(username "roger"\)')

    def test_subscribe_0x80_and_retained_deliveries(self):
        writer = self.client("w", "writer")
        for topic in ("public/news/a", "public/secret/x", "alice/x", "alice/private"):
            writer.publish(topic, b"retained", qos=1, retain=True).wait_for_publish()
        anon = self.client("anon2")
        # refused only when no topic the filter can match is readable (foo/bar: no rule);
        # public/# is granted and public/secret/x filtered out
        self.assertEqual(paho_subscribe(anon, ["public/news/#", "public/#", "foo/bar"]),
                         [1, 1, 128])
        self.assertEqual({t for t, _p, _r in drain(anon)}, {"public/news/a"})
        alice = self.client("a1", "alice")
        self.assertEqual(paho_subscribe(alice, ["alice/#", "alice/+", "alice/private"]),
                         [1, 1, 128])  # alice/private: her deny rule
        self.assertEqual(paho_subscribe(alice, ["alice/x", "clients/a1/x", "clients/a1/#"]),
                         [1, 1, 1])  # clients/a1/admin (deny pattern) is filtered out
        self.assertEqual({t for t, _p, _r in drain(alice)}, {"alice/x"})

    def test_shared_subscription_is_authorised_on_its_filter(self):
        # $share/<name>/<filter> gets (some of) the messages of <filter>: the same rules.
        anon = self.client("anon3")
        self.assertEqual(paho_subscribe(anon, ["$share/g/public/news/#", "$share/g/public/#",
                                               "$share/g/public/secret/#"]), [1, 1, 128])

    def test_sighup_broken_acl_keeps_the_old_rules(self):
        with open(os.path.join(self.tmp, "acl"), "a") as f:
            f.write("topic reed x\n")
        self.b.signal(signal.SIGHUP)
        self.b.wait_log(r'reload: plugin "acl" refused its new options \(.*\): acl_file: \S*acl:%d: '
                        r'unknown access "reed"' % (len(ACL.splitlines()) + 1))
        roger = self.client("r2", "roger")
        self.assertEqual(paho_subscribe(roger, ["foo/bar", "foo/baz"]), [1, 128])
        with open(os.path.join(self.tmp, "acl"), "w") as f:
            f.write("user roger\ntopic foo/baz\nuser writer\ntopic write #\n")
        self.b.signal(signal.SIGHUP)
        self.b.wait_log(r'reload: plugin "acl" took its new options')
        self.assertEqual(paho_subscribe(roger, ["foo/bar", "foo/baz"]), [128, 1])
        # the new rules apply to every delivery: the subscription to foo/bar granted before
        # the reload stays (the 128 above refused a new one) but gets nothing now
        writer = self.client("w2", "writer")
        writer.publish("foo/bar", b"after reload", qos=1).wait_for_publish()
        writer.publish("foo/baz", b"after reload", qos=1).wait_for_publish()
        self.assertEqual(drain(roger), {("foo/baz", b"after reload", False)})


# One scenario for both brokers: (what, mqgate's answer, Mosquitto's answer, why they
# differ). Run against each with the same password and ACL files.

CONNACK_DIFF = ("Mosquitto 2.0.11 refuses bad credentials with CONNACK 5 (not authorised); "
                "mqgate's passwd with CONNACK 4 (bad user name or password), as MQTT 3.1.1 "
                "intends")


def scenario(port):
    out = {}
    for user, pw in (("alice", "alice pw"), ("alice", "wrong"), ("nobody", "x")):
        rc, err = mosquitto_pub(port, user, pw, client_id="p-" + user)
        out[f"connect {user}/{pw}"] = "ok" if rc == 0 else (
            "bad credentials" if BAD_CREDENTIALS in err else
            "not authorised" if "Connection Refused: not authorised" in err else err.strip())
    writer = paho_client(port, "w", "writer", USERS["writer"])
    observer = paho_client(port, "obs", "observer", USERS["observer"])
    paho_subscribe(observer, ["#"])
    for topic in ("public/news/a", "public/secret/x"):
        writer.publish(topic, b"r", qos=1, retain=True).wait_for_publish()
    roger = paho_client(port, "r1", "roger", USERS["roger"])
    anon = paho_client(port, "anon1")
    drain(observer)
    for c, topic in ((roger, "foo/bar"), (roger, "foo/baz"), (roger, "sensor/roger/data"),
                     (roger, "sensor/bob/data"), (anon, "clients/anon1/x"),
                     (anon, "clients/anon1/admin"), (anon, "public/x")):
        c.publish(topic, b"w", qos=1).wait_for_publish()
    seen = {t for t, _p, _r in drain(observer)}
    for topic in ("foo/bar", "foo/baz", "sensor/roger/data", "sensor/bob/data",
                  "clients/anon1/x", "clients/anon1/admin", "public/x"):
        out[f"forwarded {topic}"] = topic in seen
    for filt in ("public/news/#", "public/#"):
        sub = paho_client(port, "s-" + filt.replace("/", "_").replace("#", "H"))
        granted = paho_subscribe(sub, [filt])
        out[f"suback {filt}"] = granted[0]
        out[f"retained via {filt}"] = sorted(t for t, _p, _r in drain(sub))
        stop(sub)
    stop(writer, observer, roger, anon)
    return out


EXPECTED = {  # what: (mqgate, Mosquitto, why they differ or None)
    "connect alice/alice pw": ("ok", "ok", None),
    "connect alice/wrong": ("bad credentials", "not authorised", CONNACK_DIFF),
    "connect nobody/x": ("bad credentials", "not authorised", CONNACK_DIFF),
    "forwarded foo/bar": (True, True, None),
    "forwarded foo/baz": (False, False, None),
    "forwarded sensor/roger/data": (True, True, None),
    "forwarded sensor/bob/data": (False, False, None),
    "forwarded clients/anon1/x": (True, True, None),
    "forwarded clients/anon1/admin": (False, False, None),
    "forwarded public/x": (False, False, None),
    "suback public/news/#": (1, 1, None),
    "retained via public/news/#": (["public/news/a"], ["public/news/a"], None),
    "suback public/#": (1, 1, None),   # public/secret/x is filtered out
    "retained via public/#": (["public/news/a"], ["public/news/a"], None),
}


class AclIdentityTest(BrokerTestCase):
    """Issue 22: %i is substituted as one level, its '/', '+', '#' (and '%') escaped.
    passwd's identity is "passwd:<username>" and mosquitto_passwd accepts "eve/x": her
    %i must not land in user eve's "ids/passwd:eve/#"."""
    USERS = {"eve": "eve pw", "eve/x": "eve/x pw", "writer": "writer pw"}

    def setUp(self):
        super().setUp()
        write_passwd(os.path.join(self.tmp, "passwd"), self.USERS)
        with open(os.path.join(self.tmp, "acl"), "w") as f:
            f.write("user writer\ntopic write #\npattern readwrite ids/%i/#\n")
        self.b = self.start_broker(config(extra_plugins='[plugins.acl]\nacl_file = "acl"\n',
                                          chain=("passwd", "acl")), workdir=self.tmp)
        self.port = self.b.port()

    def client(self, cid, user):
        c = paho_client(self.port, cid, user, self.USERS[user])
        self.addCleanup(stop, c)
        self.assertEqual(c.rc, 0)
        return c

    def test_identity_with_slash_stays_in_its_own_subtree(self):
        writer = self.client("w", "writer")
        writer.publish("ids/passwd:eve/x/secret", b"eve's", qos=1, retain=True).wait_for_publish()
        eve = self.client("e", "eve")
        self.assertEqual(paho_subscribe(eve, ["ids/passwd:eve/#"]), [1])
        self.assertEqual(drain(eve), {("ids/passwd:eve/x/secret", b"eve's", True)})
        evex = self.client("ex", "eve/x")
        # eve's subtree: refused, and nothing of it delivered
        self.assertEqual(paho_subscribe(evex, ["ids/passwd:eve/#", "ids/passwd:eve/x/#",
                                               "ids/passwd:eve%2Fx/#"]), [128, 128, 1])
        evex.publish("ids/passwd:eve/x/forged", b"forged", qos=1).wait_for_publish()
        evex.publish("ids/passwd:eve%2Fx/own", b"own", qos=1).wait_for_publish()
        self.assertEqual(drain(evex), {("ids/passwd:eve%2Fx/own", b"own", False)})
        self.assertEqual(drain(eve), set())  # the forged PUBLISH was not forwarded
        self.b.wait_log(r'acl: no write for "ids/passwd:eve/x/forged" \(username "eve/x"\)')


class AclParityTest(BrokerTestCase):
    def setUp(self):
        super().setUp()
        self.pw = os.path.join(self.tmp, "passwd")
        self.acl = os.path.join(self.tmp, "acl")
        write_passwd(self.pw, USERS)
        with open(self.acl, "w") as f:
            f.write(ACL)

    def test_same_files_same_answers_but_the_listed_deviations(self):
        b = self.start_broker(config(
            chain=("passwd", "anonymous", "acl"),
            extra_plugins='[plugins.anonymous]\nallow_anonymous = true\n'
                          '[plugins.acl]\nacl_file = "acl"\n'), workdir=self.tmp)
        ours = scenario(b.port())
        with MosquittoAuth(self.tmp, password_file=self.pw, acl_file=self.acl) as m:
            theirs = scenario(m.port)
        for what, (q, mosq, why) in EXPECTED.items():
            with self.subTest(what=what):
                self.assertEqual(ours[what], q)
                self.assertEqual(theirs[what], mosq)
                self.assertEqual(q != mosq, why is not None)


if __name__ == "__main__":
    unittest.main()
