"""ACL decisions: Debian's Mosquitto 2.0.11 (live, with real clients) against mqgate's
ACL library (plugins/acl, through its acl_query helper), on one ACL file built from
mosquitto-conf(5)'s examples. Each row of the table says what each side must answer;
the rows where they differ are mqgate's deliberate choices, each with its reason
(docs/acl.md, "Differences from Mosquitto").

Then deliveries through subscriptions, live against both brokers with the same password
and ACL files (wildcard filters over deny rules, $SYS, %u/%c patterns, retained messages,
SIGHUP with live subscriptions, MQTT 5.0 reason codes): one test class per scenario and
broker, one test method per case. `--markdown` prints docs/acl.md's side-by-side table
from the same data."""
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from dataclasses import dataclass
from typing import Optional

import paho.mqtt.client as paho

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from mqgate_test import BUILD_DIR, Broker  # noqa: E402
from mosquitto_auth import MosquittoAuth  # noqa: E402

ACL_QUERY = os.path.join(BUILD_DIR, "plugins", "acl", "acl_query")

ACL = """\
# mosquitto-conf(5): the first topics are for anonymous clients
topic read $SYS/#
topic read public/#
topic deny public/secret/#

user roger
topic foo/bar

user alice
topic readwrite alice/#
topic deny alice/private
topic read public/#

# the test's own clients: one publishes everywhere, one reads everything
user writer
topic write #
user observer
topic read #

# patterns apply to every client
pattern write sensor/%u/data
pattern readwrite clients/%c/#
pattern deny clients/%c/admin
pattern read %u/#
"""

ANON = None
SLASH = "mqgate: a '/' in a substituted username or client id would reach another " \
        "client's subtree; mqgate grants nothing through it"

# (username, client id, access, topic, Mosquitto allows, mqgate allows, why they differ)
TABLE = [
    # anonymous clients: the rules before any user line, and the patterns
    (ANON, "anon1", "read", "public/news", True, True, None),
    (ANON, "anon1", "read", "public/secret/x", False, False, None),  # deny wins
    (ANON, "anon1", "write", "public/news", False, False, None),
    (ANON, "anon1", "read", "foo/bar", False, False, None),
    (ANON, "anon1", "read", "clients/anon1/x", True, True, None),     # %c
    (ANON, "anon1", "write", "clients/anon1/x", True, True, None),
    (ANON, "anon1", "write", "clients/anon1/admin", False, False, None),
    (ANON, "anon1", "write", "clients/other/x", False, False, None),
    (ANON, "anon1", "write", "sensor//data", False, False, None),     # %u needs a username
    # a user: its own rules and the patterns, not the anonymous rules
    ("roger", "r1", "read", "foo/bar", True, True, None),
    ("roger", "r1", "write", "foo/bar", True, True, None),
    ("roger", "r1", "write", "foo/baz", False, False, None),
    ("roger", "r1", "read", "public/news", False, False, None),
    ("roger", "r1", "write", "sensor/roger/data", True, True, None),  # %u
    ("roger", "r1", "read", "sensor/roger/data", False, False, None),
    ("roger", "r1", "write", "sensor/alice/data", False, False, None),
    ("roger", "r1", "read", "roger/anything", True, True, None),
    ("roger", "r1", "write", "roger/anything", False, False, None),
    # a deny in the user's own list is final: the patterns are asked only when her list
    # neither allows nor denies
    ("alice", "a1", "write", "alice/x", True, True, None),
    ("alice", "a1", "write", "alice/private", False, False, None),
    ("alice", "a1", "read", "alice/private", False, False, None),    # not pattern %u/#
    ("alice", "a1", "read", "public/secret/x", True, True, None),    # her list has no deny
    # a user the file does not name: patterns only
    ("mallory", "m1", "read", "mallory/x", True, True, None),
    ("mallory", "m1", "read", "alice/x", False, False, None),
    ("mallory", "m1", "write", "clients/m1/x", True, True, None),
    # substituted values that change the topic's shape
    ("plus+", "p1", "write", "clients/p1/x", False, False, None),    # Mosquitto: + or # denies
    ("dave", "hash#", "read", "dave/x", False, False, None),
    ("bob/x", "b1", "read", "bob/x/y", True, False, SLASH),
    ("bob/x", "b1", "write", "sensor/bob/x/data", True, False, SLASH),
    (ANON, "c/d", "write", "clients/c/d/x", True, False, SLASH),
]

# SUBSCRIBE: mqgate's answer; Mosquitto grants them all (checked live below). mqgate
# refuses a filter only when no topic it can match is readable (issue 21); the others are
# granted and each message is checked for read (the live tests further down).
SUBSCRIBE = [
    (ANON, "anon1", "public/news/#", True),
    (ANON, "anon1", "public/#", True),        # public/secret/... is filtered out
    (ANON, "anon1", "public/+/x", True),
    (ANON, "anon1", "$SYS/#", True),
    (ANON, "anon1", "#", True),
    (ANON, "anon1", "public/secret/#", False),  # all of it denied
    (ANON, "anon1", "+/secret/#", False),     # public/secret/...: denied; nothing else
    (ANON, "anon1", "foo/bar", False),        # no rule
    (ANON, "anon1", "clients/anon1/#", True),
    (ANON, "anon1", "clients/anon1/admin", False),  # deny pattern
    ("roger", "r1", "foo/bar", True),
    ("roger", "r1", "foo/+", True),           # foo/bar
    ("roger", "r1", "foo/baz", False),
    ("roger", "r1", "roger/#", True),
    ("roger", "r1", "+/anything", True),      # roger/anything
    ("roger", "r1", "sensor/roger/data", False),  # write only
    ("roger", "r1", "public/#", False),       # a user does not get the anonymous rules
    ("alice", "a1", "alice/#", True),         # alice/private is filtered out
    ("alice", "a1", "alice/+/x", True),
    ("alice", "a1", "alice/private", False),  # her deny is final (not pattern %u/#)
]


def acl_query(acl_path, rows):
    """acl_check() answers for rows of (username, client id, identity, access, topic)."""
    lines = "".join("\t".join([u if u is not None else "\\-", c, "\\-", a, t]) + "\n"
                    for u, c, a, t in rows)
    p = subprocess.run([ACL_QUERY, acl_path], input=lines, capture_output=True, text=True,
                       timeout=30)
    if p.returncode != 0:
        raise AssertionError(p.stderr)
    # "reach" answers none, some or all: granted unless none.
    return [line in ("allow", "some", "all") for line in p.stdout.splitlines()]


class AclParityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="mqgate-acl-")
        cls.acl = os.path.join(cls.tmp, "acl")
        with open(cls.acl, "w") as f:
            f.write(ACL)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_mqgate_library_answers(self):
        got = acl_query(self.acl, [(u, c, a, t) for u, c, a, t, _m, _q, _w in TABLE])
        for row, answer in zip(TABLE, got):
            with self.subTest(row=row[:4]):
                self.assertEqual(answer, row[5])
        got = acl_query(self.acl, [(u, c, "reach", f) for u, c, f, _q in SUBSCRIBE])
        for row, answer in zip(SUBSCRIBE, got):
            with self.subTest(row=row[:3]):
                self.assertEqual(answer, row[3])

    def test_differences_are_documented(self):
        for row in TABLE:
            self.assertEqual(row[4] != row[5], row[6] is not None, row)

    def test_mosquitto_answers_live(self):
        got = {}
        with MosquittoAuth(self.tmp, acl_file=self.acl) as m:
            writer = m.client("writer-c", "writer")
            observer = m.client("observer-c", "observer")
            self.assertEqual((writer.rc, observer.rc), (0, 0), m.log())
            self.subscribe(observer, ["#"])
            subjects = sorted({(u, c) for u, c, *_ in TABLE}, key=str)
            for user, client_id in subjects:
                rows = [r for r in TABLE if (r[0], r[1]) == (user, client_id)]
                subject = m.client(client_id, user)
                self.assertEqual(subject.rc, 0, m.log())
                reads = [r[3] for r in rows if r[2] == "read"]
                if reads:
                    self.subscribe(subject, reads)
                    for topic in reads:
                        writer.publish(topic, b"r:" + topic.encode(), qos=1).wait_for_publish()
                writes = [r[3] for r in rows if r[2] == "write"]
                tag = f"w:{user}:{client_id}:"
                for topic in writes:
                    subject.publish(topic, (tag + topic).encode(), qos=1).wait_for_publish()
                time.sleep(0.5)
                seen = self.drain(subject)
                seen_by_observer = self.drain(observer)
                for r in rows:
                    if r[2] == "read":
                        got[r[:4]] = (r[3], b"r:" + r[3].encode()) in seen
                    else:
                        got[r[:4]] = (r[3], (tag + r[3]).encode()) in seen_by_observer
                subject.disconnect()
                subject.loop_stop()
            # SUBSCRIBE: Mosquitto grants every filter, the ones mqgate refuses included
            anon = m.client("anon-sub", None)
            granted = self.subscribe(anon, [f for u, _c, f, _q in SUBSCRIBE if u is None])
            self.assertTrue(all(q == 1 for q in granted), granted)
            anon.disconnect()
            anon.loop_stop()
            for c in (writer, observer):
                c.disconnect()
                c.loop_stop()
        for row in TABLE:
            with self.subTest(row=row[:4]):
                self.assertEqual(got[row[:4]], row[4])

    @staticmethod
    def subscribe(client, topics, timeout=5.0):
        acks = {}
        client.on_subscribe = lambda c, ud, mid, qos: acks.__setitem__(mid, qos)
        _rc, mid = client.subscribe([(t, 1) for t in topics])
        deadline = time.monotonic() + timeout
        while mid not in acks and time.monotonic() < deadline:
            time.sleep(0.01)
        if mid not in acks:
            raise AssertionError("no SUBACK")
        return list(acks[mid])

    @staticmethod
    def drain(client):
        seen = set()
        while not client.messages.empty():
            seen.add(client.messages.get_nowait())
        return seen


# ----------------------------------------------------------------------------------------
# Deliveries through subscriptions, live, against both brokers with the same files
# ----------------------------------------------------------------------------------------
#
# Each Scenario is an ACL file (or, for reloads, a sequence of them), the topics a writer
# publishes, and Cases: who subscribes to which filter, and for each broker what the
# SUBACK says and exactly which topics the subscription delivers. The same data runs
# against Debian's Mosquitto 2.0.11 and against mqgate (one test class per scenario and
# broker, one test method per case), and renders docs/acl.md's side-by-side table:
#
#     /usr/bin/python3 test/integration/test_acl_parity.py --markdown > ACL_TABLE.md
#
# The rules (issue 21): every message delivered through a subscription is one the
# subscriber may read under the rules in force at that moment, retained messages too;
# mqgate refuses a SUBSCRIBE filter only when no topic it can match is readable
# (Mosquitto grants it and delivers nothing); a SIGHUP applies to live subscriptions.
#
# No sleeps: in each round every subscriber also subscribes to its own sentinel topic,
# which the writer publishes last; a subscriber has everything it will get once its
# sentinel arrived (one connection, one publisher: both brokers keep the order).

MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
USERS = {"writer": "writer pw", "bob": "bob pw", "alice": "alice pw", "plain": "plain pw",
         "versiononly": "versiononly pw"}
V311, V5 = paho.MQTTv311, paho.MQTTv5
BROKERS = ("mosquitto", "mqgate")

# Appended to every scenario's file: the tests' publisher and sentinel topics. No case's
# SUBSCRIBE answer depends on the sentinel rule (no filter below has readable topics only
# under sentinel/).
FOOTER = """
# the tests' own: a writer that may publish everywhere, each client's sentinel topic
user writer
topic write #
pattern read sentinel/%c
"""

REFUSED = ("no topic the filter can match is readable: mqgate refuses it at SUBSCRIBE, "
           "Mosquitto grants it and delivers nothing")
NO_SYS = "`topic readwrite #` does not reach `$SYS` topics, so " + REFUSED
NO_U = "patterns with `%u` do not apply to anonymous clients, so " + REFUSED


@dataclass(frozen=True)
class SysTopics:
    """Expected deliveries where each broker has its own $SYS tree: at least `must`, and
    nothing outside $SYS/."""
    must: frozenset

    def matches(self, got):
        return self.must <= got and all(t.startswith("$SYS/") for t in got)

    def __str__(self):
        return "only `$SYS/...` topics, among them " + ", ".join(
            f"`{t}`" for t in sorted(self.must))


@dataclass(frozen=True)
class Outcome:
    granted: bool
    received: object  # a frozenset of topics, or SysTopics


@dataclass(frozen=True)
class Case:
    filter: str
    mosquitto: Outcome
    mqgate: Outcome
    user: Optional[str] = None   # None: anonymous
    cid: Optional[str] = None    # None: one of its own
    phase: int = 0               # index in Scenario.files of the file in force at publishing
    since: Optional[int] = None  # that of the SUBSCRIBE (None: phase); same cid = same client
    note: Optional[str] = None   # why the brokers differ


def both(filt, *received, **kw):
    o = Outcome(True, frozenset(received))
    return Case(filt, o, o, **kw)


def both_sys(filt, *must, **kw):
    o = Outcome(True, SysTopics(frozenset(must)))
    return Case(filt, o, o, **kw)


def refused_by_mqgate(filt, **kw):
    return Case(filt, Outcome(True, frozenset()), Outcome(False, frozenset()),
                note=kw.pop("note", REFUSED), **kw)


@dataclass
class Scenario:
    key: str
    title: str
    files: list            # files[0] at start; each next one written and SIGHUPed
    cases: list
    topics: tuple = ()     # published live (QoS 1) in each round, after the SUBSCRIBEs
    retained: tuple = ()   # published retained before any SUBSCRIBE
    protocol: int = V311
    sys_interval: int = 0  # >0: each round waits for a $SYS update after its SUBSCRIBEs
    probes: tuple = ()     # per reload: (cid, topic, delivered?) shows Mosquitto reloaded
    about: str = ""

    def cid(self, i):
        return self.cases[i].cid or f"{self.key.lower()}-{i}"

    def since(self, case):
        return case.phase if case.since is None else case.since


DENY_SECRETS = "topic readwrite #\ntopic deny secrets/#\n"

WILDCARD_TOPICS = ("sensors", "sensors/a", "sensors/b/c", "secrets", "secrets/x",
                   "secrets/x/y", "secretsauce/x", "public/z", "a/b/c", "x/secrets/y")


def wildcard_cases():
    return [
        both("#", "sensors", "sensors/a", "sensors/b/c", "secretsauce/x", "public/z",
             "a/b/c", "x/secrets/y"),
        both("+/+", "sensors/a", "secretsauce/x", "public/z"),
        both("+/#", "sensors", "sensors/a", "sensors/b/c", "secretsauce/x", "public/z",
             "a/b/c", "x/secrets/y"),
        both("+", "sensors"),
        both("sensors/+", "sensors/a"),
        both("sensors/#", "sensors", "sensors/a", "sensors/b/c"),
        both("+/x", "secretsauce/x"),
        both("+/secrets/#", "x/secrets/y"),
        refused_by_mqgate("secrets/#"),
        refused_by_mqgate("secrets/+"),
        refused_by_mqgate("secrets"),
        # a shared subscription (one member): the same rules on the filter after the group
        both("$share/g1/#", "sensors", "sensors/a", "sensors/b/c", "secretsauce/x", "public/z",
             "a/b/c", "x/secrets/y"),
        both("$share/g2/+/x", "secretsauce/x"),
        refused_by_mqgate("$share/g3/secrets/#"),
    ]


WILDCARDS = Scenario(
    "Wildcards", "Wildcard filters over a deny rule (anonymous subscribers)",
    [DENY_SECRETS], wildcard_cases(), topics=WILDCARD_TOPICS,
    about="Each filter is subscribed by its own anonymous client; the writer then "
          "publishes " + ", ".join(f"`{t}`" for t in WILDCARD_TOPICS) + ".")

WILDCARDS_V5 = Scenario(
    "WildcardsV5", "The same with MQTT 5.0 clients", [DENY_SECRETS], wildcard_cases(),
    topics=WILDCARD_TOPICS, protocol=V5,
    about="The same file, topics and filters, subscribed by MQTT 5.0 clients: the same "
          "deliveries; mqgate's refusal is reason code 0x87 (Not authorized).")

SYS = Scenario(
    "Sys", "`$SYS`", [
        "# anonymous clients\ntopic readwrite #\ntopic read $SYS/#\n\n"
        "user plain\ntopic readwrite #\n\n"
        "user versiononly\ntopic read $SYS/broker/version\n"],
    [
        both("#", "public/z", "x/broker/version"),
        both_sys("$SYS/#", "$SYS/broker/version", "$SYS/broker/uptime"),
        both("$SYS/broker/uptime", "$SYS/broker/uptime"),
        both("+/broker/#", "x/broker/version"),
        both("#", "public/z", "x/broker/version", user="plain"),
        refused_by_mqgate("$SYS/#", user="plain", note=NO_SYS),
        refused_by_mqgate("$SYS/broker/version", user="plain", note=NO_SYS),
        both("$SYS/#", "$SYS/broker/version", user="versiononly"),
        both("$SYS/broker/+", "$SYS/broker/version", user="versiononly"),
    ],
    topics=("public/z", "x/broker/version"), sys_interval=1,
    about="Both brokers publish `$SYS/broker/...` retained (`sys_interval 1`); each round "
          "waits until a `$SYS` update was published after its SUBSCRIBEs, then the writer "
          "publishes `public/z` and `x/broker/version`. Each broker has its own `$SYS` "
          "tree, so for `$SYS/#` the table names two topics both have.")

PATTERN_TOPICS = ("users/bob", "users/bob/inbox", "users/bob/private", "users/bob/private/x",
                  "users/alice/inbox", "users/c1/inbox", "clients/c1", "clients/c1/x",
                  "clients/c2/x", "clients/c3/x", "clients/bob/x", "other/x")
PATTERNS = Scenario(
    "Patterns", "Pattern rules with `%u` and `%c`", [
        "# no topic rules and no user lines: the patterns apply to every client\n"
        "pattern read users/%u/#\npattern readwrite clients/%c/#\n"
        "pattern deny users/%u/private/#\n"],
    [
        both("users/#", "users/bob", "users/bob/inbox", user="bob", cid="c1"),
        both("users/+/inbox", "users/bob/inbox", user="bob", cid="c1"),
        both("+/+/inbox", "users/bob/inbox", user="bob", cid="c1"),
        both("users/bob/#", "users/bob", "users/bob/inbox", user="bob", cid="c1"),
        refused_by_mqgate("users/bob/private/#", user="bob", cid="c1"),
        refused_by_mqgate("users/alice/#", user="bob", cid="c1"),
        both("clients/#", "clients/c1", "clients/c1/x", user="bob", cid="c1"),
        both("clients/+/x", "clients/c1/x", user="bob", cid="c1"),
        both("#", "users/bob", "users/bob/inbox", "clients/c1", "clients/c1/x",
             user="bob", cid="c1"),
        refused_by_mqgate("other/#", user="bob", cid="c1"),
        both("users/#", "users/alice/inbox", user="alice", cid="c2"),
        both("clients/#", "clients/c2/x", user="alice", cid="c2"),
        refused_by_mqgate("users/#", cid="c3", note=NO_U),
        both("clients/#", "clients/c3/x", cid="c3"),
    ],
    topics=PATTERN_TOPICS,
    about="The writer publishes " + ", ".join(f"`{t}`" for t in PATTERN_TOPICS) + ".")

RETAINED_TOPICS = ("sensors/a", "sensors/b/c", "secrets", "secrets/x", "secrets/x/y",
                   "public/z", "a/b/c")
RETAINED = Scenario(
    "Retained", "Retained messages through wildcard filters", [DENY_SECRETS],
    [
        both("#", "sensors/a", "sensors/b/c", "public/z", "a/b/c"),
        both("+/+", "sensors/a", "public/z"),
        both("+/#", "sensors/a", "sensors/b/c", "public/z", "a/b/c"),
        both("sensors/#", "sensors/a", "sensors/b/c"),
        both("+"),
        both("+/x"),
        refused_by_mqgate("secrets/#"),
        refused_by_mqgate("secrets/+"),
        refused_by_mqgate("secrets"),
    ],
    retained=RETAINED_TOPICS,
    about="Before any SUBSCRIBE the writer publishes retained messages on " + ", ".join(
        f"`{t}`" for t in RETAINED_TOPICS) + "; nothing is published live. Every "
        "delivery must carry RETAIN=1.")

OPEN = "topic readwrite #\n"
CLOSED = "topic readwrite #\ntopic deny sensors/#\n"
RELOAD_NEW = ("refused by mqgate at SUBSCRIBE under file 2 (nothing readable), so there is "
              "no subscription when file 3 allows the topics; Mosquitto's was granted")
RELOAD = Scenario(
    "Reload", "SIGHUP: the new file applies to live subscriptions", [OPEN, CLOSED, OPEN],
    [
        # file 1: everything readable
        both("#", "sensors/kept", "sensors/a", "sensors/b/c", "public/z", cid="live-hash"),
        both("sensors/+", "sensors/kept", "sensors/a", cid="live-sensors-plus"),
        both("sensors/#", "sensors/kept", "sensors/a", "sensors/b/c", cid="live-sensors-hash"),
        both("public/#", "public/z", cid="live-public"),
        # file 2 denies sensors/#: the live subscriptions stay, sensors/... stops
        both("#", "public/z", cid="live-hash", since=0, phase=1),
        both("sensors/+", cid="live-sensors-plus", since=0, phase=1),
        both("sensors/#", cid="live-sensors-hash", since=0, phase=1),
        both("public/#", "public/z", cid="live-public", since=0, phase=1),
        both("#", "public/z", cid="new-hash", phase=1),
        refused_by_mqgate("sensors/#", cid="new-sensors-hash", phase=1),
        # file 3 is file 1 again: sensors/... flows again on the subscriptions granted
        both("#", "sensors/a", "sensors/b/c", "public/z", cid="live-hash", since=0, phase=2),
        both("sensors/+", "sensors/a", cid="live-sensors-plus", since=0, phase=2),
        both("sensors/#", "sensors/a", "sensors/b/c", cid="live-sensors-hash", since=0,
             phase=2),
        both("public/#", "public/z", cid="live-public", since=0, phase=2),
        both("#", "sensors/a", "sensors/b/c", "public/z", cid="new-hash", since=1, phase=2),
        Case("sensors/#", Outcome(True, frozenset({"sensors/a", "sensors/b/c"})),
             Outcome(False, frozenset()), cid="new-sensors-hash", since=1, phase=2,
             note=RELOAD_NEW),
        both("#", "sensors/kept", "sensors/a", "sensors/b/c", "public/z", cid="late-hash",
             phase=2),
    ],
    topics=("sensors/a", "sensors/b/c", "public/z"), retained=("sensors/kept",),
    probes=(("live-hash", "sensors/probe", False), ("live-hash", "sensors/probe", True)),
    about="Anonymous clients subscribe under file 1 and stay connected; the file is "
          "rewritten and SIGHUP sent (file 2, then file 3); after each, the writer "
          "publishes `sensors/a`, `sensors/b/c`, `public/z`. `sensors/kept` was published "
          "retained at the start. mqgate: the test waits for its log line `reload: plugin "
          "\"acl\" took its new options`; Mosquitto: for `sensors/probe` to stop (file 2) "
          "or start (file 3) reaching the live `#` subscription.")

SCENARIOS = [WILDCARDS, WILDCARDS_V5, SYS, PATTERNS, RETAINED, RELOAD]


def topic_matches(filt, topic):
    """MQTT matching, with [MQTT-4.7.2-1]: wildcard-first filters match no $ topic."""
    if filt.startswith("$share/"):
        filt = filt.split("/", 2)[2]
    if topic.startswith("$") and filt[:1] in ("+", "#"):
        return False
    f, t = filt.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or level not in ("+", t[i]):
            return False
    return len(f) == len(t)


def write_passwd(path, users):
    first = True
    for user, pw in users.items():
        subprocess.run([MOSQUITTO_PASSWD] + (["-c"] if first else []) + ["-b", path, user, pw],
                       check=True, capture_output=True, timeout=30)
        first = False


class Client:
    """A paho client (MQTT 3.1.1 or 5.0) that records what it receives."""

    def __init__(self, port, cid, user=None, protocol=V311, timeout=10.0):
        self.cid = cid
        self.protocol = protocol
        kw = {} if protocol == V5 else {"clean_session": True}
        c = self.c = paho.Client(client_id=cid, protocol=protocol, **kw)
        if user is not None:
            c.username_pw_set(user, USERS[user])
        self.messages = queue.Queue()
        self.acks = {}
        self.rc = None
        c.on_connect = lambda _c, _u, _flags, rc, *_props: setattr(
            self, "rc", int(getattr(rc, "value", rc)))
        c.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload, bool(m.retain)))
        c.on_subscribe = lambda _c, _u, mid, granted, *_props: self.acks.__setitem__(
            mid, [int(getattr(g, "value", g)) for g in granted])
        if protocol == V5:
            c.connect("127.0.0.1", port, keepalive=30, clean_start=True)
        else:
            c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        deadline = time.monotonic() + timeout
        while self.rc is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if self.rc != 0:
            self.close()
            raise AssertionError(f"{cid}: CONNACK {self.rc}")

    def subscribe(self, filt, timeout=10.0):
        _rc, mid = self.c.subscribe(filt, 1)
        deadline = time.monotonic() + timeout
        while mid not in self.acks and time.monotonic() < deadline:
            time.sleep(0.005)
        if mid not in self.acks:
            raise AssertionError(f"{self.cid}: no SUBACK for {filt}")
        return self.acks[mid][0]

    def publish(self, topic, payload, retain=False):
        return self.c.publish(topic, payload, qos=1, retain=retain)

    def until_sentinel(self, token, timeout=10.0):
        """The messages before the sentinel carrying `token`: [(topic, payload, retain)],
        the other clients' sentinels left out."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                topic, payload, retain = self.messages.get(
                    timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.cid}: no sentinel in {timeout}s; got {got}")
            if topic.startswith("sentinel/"):
                if topic == "sentinel/" + self.cid and payload == token:
                    return got
                continue
            got.append((topic, payload, retain))

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@dataclass
class Result:
    code: Optional[int] = None            # the SUBACK code of the filter
    topics: frozenset = frozenset()       # the topics delivered (probes left out)
    all_retained: bool = True
    error: Optional[str] = None


class Target:
    """One broker, Mosquitto or mqgate, on the scenario's password and ACL files."""

    def __init__(self, kind, scenario, workdir):
        self.kind = kind
        self.reloads = 0
        self.acl = os.path.join(workdir, "acl")
        self.passwd = os.path.join(workdir, "passwd")
        write_passwd(self.passwd, USERS)
        with open(self.acl, "w") as f:
            f.write(scenario.files[0] + FOOTER)
        if kind == "mosquitto":
            self.broker = MosquittoAuth(workdir, password_file=self.passwd, acl_file=self.acl,
                                        extra=[f"sys_interval {scenario.sys_interval}"])
            self.port = self.broker.port
        else:
            self.broker = Broker(
                f'log_level = "debug"\nsys_interval = {scenario.sys_interval}\n'
                '[listeners.default]\nbind = "127.0.0.1:0"\n'
                'plugins = ["passwd", "anonymous", "acl"]\n'
                '[plugins.passwd]\npassword_file = "passwd"\n'
                '[plugins.anonymous]\nallow_anonymous = true\n'
                '[plugins.acl]\nacl_file = "acl"\n', workdir=workdir)
            self.port = self.broker.port()

    def reload(self, text):
        with open(self.acl, "w") as f:
            f.write(text + FOOTER)
        self.reloads += 1
        self.broker.proc.send_signal(signal.SIGHUP)
        if self.kind == "mqgate":
            self.broker.wait_log(r'reload: plugin "acl" took its new options',
                                 count=self.reloads)

    def log(self):
        return self.broker.log()

    def close(self):
        if self.kind == "mosquitto":
            self.broker.close()
        else:
            self.broker.close()  # raises on a bad exit or a sanitizer report


def wait_for_sys_update(port, timeout=10.0):
    """Returns once a $SYS update was published after this call (the first message of a
    new subscription is the retained copy, the second a new publication)."""
    w = Client(port, f"sys-watch-{time.monotonic_ns()}")
    try:
        if w.subscribe("$SYS/broker/uptime") != 1:
            raise AssertionError("$SYS/broker/uptime refused to the watcher")
        for _ in range(2):
            w.messages.get(timeout=timeout)
    finally:
        w.close()


def rounds_of(scenario, indices):
    """Groups the cases of one phase into rounds in which client ids are distinct."""
    rounds = []
    for i in indices:
        for r in rounds:
            if scenario.cid(i) not in {scenario.cid(j) for j in r}:
                r.append(i)
                break
        else:
            rounds.append([i])
    return rounds


def run_scenario(kind, scenario, workdir):
    """Runs every case of `scenario` against one broker: {case index: Result}, and the
    broker's log."""
    results = {i: Result(error="not run") for i in range(len(scenario.cases))}
    target = Target(kind, scenario, workdir)
    persistent = len(scenario.files) > 1   # clients stay connected across reloads
    live = {}     # cid -> (Client, SUBACK code)
    tokens = iter(range(1, 1 << 30))
    writer = None
    try:
        writer = Client(target.port, "writer", "writer")
        for topic in scenario.retained:
            writer.publish(topic, b"retained", retain=True).wait_for_publish(10)
        for phase, text in enumerate(scenario.files):
            if phase:
                target.reload(text)
                if kind == "mosquitto":
                    wait_until_reloaded(writer, live, scenario.probes[phase - 1], tokens)
            indices = [i for i, c in enumerate(scenario.cases) if c.phase == phase]
            if persistent:
                cids = [scenario.cid(i) for i in indices]
                assert len(cids) == len(set(cids)), cids
                batches = [indices]
            else:
                batches = rounds_of(scenario, indices)
            for batch in batches:
                run_round(target, scenario, writer, live, batch, results, tokens)
                if not persistent:
                    for client, _code in live.values():
                        client.close()
                    live.clear()
    except Exception as e:  # noqa: BLE001 - the cases not reached report it
        for r in results.values():
            if r.error == "not run":
                r.error = f"{type(e).__name__}: {e}"
    finally:
        for client, _code in live.values():
            client.close()
        if writer is not None:
            writer.close()
        close_error = None
        try:
            target.close()
        except Exception as e:  # noqa: BLE001
            close_error = f"{type(e).__name__}: {e}"
    return results, target.log(), close_error


def run_round(target, scenario, writer, live, batch, results, tokens):
    for i in batch:
        case = scenario.cases[i]
        cid = scenario.cid(i)
        if cid in live:
            continue
        assert scenario.since(case) == case.phase, f"{cid} subscribed before phase {case.phase}?"
        client = Client(target.port, cid, case.user, scenario.protocol)
        code = client.subscribe(case.filter)
        live[cid] = (client, code)
        sentinel = client.subscribe("sentinel/" + cid)
        if sentinel != 1:
            raise AssertionError(f"{cid}: its sentinel topic refused ({sentinel:#x})")
    if scenario.sys_interval:
        wait_for_sys_update(target.port)
    token = f"round {next(tokens)}".encode()
    for topic in scenario.topics:
        writer.publish(topic, token)
    for cid in {scenario.cid(i) for i in batch}:
        writer.publish("sentinel/" + cid, token)
    for i in batch:
        client, code = live[scenario.cid(i)]
        try:
            got = client.until_sentinel(token)
        except AssertionError as e:
            results[i] = Result(code=code, error=str(e))
            continue
        got = [(t, p, r) for t, p, r in got if p != b"probe"]
        results[i] = Result(code=code, topics=frozenset(t for t, _p, _r in got),
                            all_retained=all(r for _t, _p, r in got))


def wait_until_reloaded(writer, live, probe, tokens, timeout=10.0):
    """Mosquitto logs nothing we can wait for (its stdout is block-buffered): publish the
    probe until the live subscription shows the new file's answer."""
    cid, topic, delivered = probe
    client, _code = live[cid]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        token = f"probe {next(tokens)}".encode()
        writer.publish(topic, b"probe")
        writer.publish("sentinel/" + cid, token)
        got = client.until_sentinel(token)
        if any(t == topic for t, _p, _r in got) == delivered:
            return
        time.sleep(0.02)
    raise AssertionError(f"Mosquitto: {topic} still {'not ' if delivered else ''}delivered "
                         f"to {cid} {timeout}s after SIGHUP")


def expected(scenario, case, kind):
    outcome = getattr(case, kind)
    refusal = 0x87 if scenario.protocol == V5 else 0x80
    return (1 if outcome.granted else refusal), outcome.received


def slug(text):
    return re.sub(r"[^a-z0-9]+", "_", text.lower().replace("#", "hash").replace(
        "+", "plus").replace("$", "dollar")).strip("_")


def make_test_class(scenario, kind):
    class T(unittest.TestCase):
        @classmethod
        def setUpClass(cls):
            cls.tmp = tempfile.mkdtemp(prefix=f"mqgate-aclp-{scenario.key.lower()}-{kind}-")
            cls.results, cls.broker_log, cls.close_error = run_scenario(kind, scenario, cls.tmp)

        @classmethod
        def tearDownClass(cls):
            shutil.rmtree(cls.tmp, ignore_errors=True)

        def check(self, i):
            case = scenario.cases[i]
            res = self.results[i]
            who = case.user or "anonymous"
            what = (f"{kind}: {who} ({scenario.cid(i)}) subscribed {case.filter!r} under file "
                    f"{scenario.since(case) + 1}, messages under file {case.phase + 1}")
            if res.error:
                self.fail(f"{what}: {res.error}\n{self.broker_log[-3000:]}")
            code, received = expected(scenario, case, kind)
            self.assertEqual(res.code, code, f"{what}: SUBACK")
            if isinstance(received, SysTopics):
                self.assertTrue(received.matches(res.topics),
                                f"{what}: received {sorted(res.topics)}, want {received}")
            else:
                self.assertEqual(sorted(res.topics), sorted(received), f"{what}: received")
            if scenario.retained and not scenario.topics:
                self.assertTrue(res.all_retained, f"{what}: a delivery without RETAIN")

        def test_zz_broker_stopped_cleanly(self):
            self.assertIsNone(self.close_error)

    for i, case in enumerate(scenario.cases):
        who = case.user or "anon"
        name = f"test_{i:02d}_{who}_{slug(case.filter)}_file{case.phase + 1}"
        setattr(T, name, lambda self, i=i: self.check(i))
    T.__name__ = T.__qualname__ = f"Acl{scenario.key}{kind.capitalize()}Test"
    T.__doc__ = f"{scenario.title}: {kind}"
    return T


for _scenario in SCENARIOS:
    for _kind in BROKERS:
        _cls = make_test_class(_scenario, _kind)
        globals()[_cls.__name__] = _cls
del _scenario, _kind, _cls


class AclDeliveryTableTest(unittest.TestCase):
    """The scenarios' data: each expected delivery is a topic the filter matches and that
    was published; brokers differ only on rows that say why."""

    def test_expected_deliveries_match_their_filters(self):
        for s in SCENARIOS:
            published = set(s.topics) | set(s.retained)
            for i, c in enumerate(s.cases):
                for kind in BROKERS:
                    got = getattr(c, kind).received
                    if isinstance(got, SysTopics):
                        got = got.must
                    for topic in got:
                        with self.subTest(scenario=s.key, case=i, kind=kind, topic=topic):
                            self.assertTrue(topic_matches(c.filter, topic))
                            self.assertTrue(topic in published or topic.startswith("$SYS/"))
                    if not getattr(c, kind).granted:
                        self.assertEqual(got, frozenset())
                self.assertEqual(c.mosquitto != c.mqgate, c.note is not None, (s.key, i))
                self.assertTrue(c.mosquitto.granted, "Mosquitto 2.0.11 grants every filter")

    def test_markdown_renders(self):
        self.assertIn("| case | Mosquitto 2.0.11 | mqgate |", markdown())


# -- docs/acl.md's table ---------------------------------------------------------------

def describe(scenario, case, kind):
    outcome = getattr(case, kind)
    code, received = expected(scenario, case, kind)
    if isinstance(received, SysTopics):
        got = str(received)
    else:
        mark = scenario.retained and scenario.topics  # say which ones were retained
        got = ", ".join(f"`{t}`" + (" (retained)" if mark and t in scenario.retained else "")
                        for t in sorted(received)) or "nothing"
    if scenario.since(case) != case.phase:
        head = "(granted then)" if outcome.granted else "(refused then: no subscription)"
    elif outcome.granted:
        head = "granted"
    else:
        head = f"**refused ({code:#04x})**"
    return f"{head}; receives {got}"


def markdown():
    """docs/acl.md's side-by-side table, from the data the tests check."""
    out = ["<!-- generated by `test/integration/test_acl_parity.py --markdown` from the data "
           "its tests check against both brokers -->", ""]
    for s in SCENARIOS:
        out += [f"### {s.title}", ""]
        if s.about:
            out += [s.about, ""]
        rows = s.cases
        if s is WILDCARDS_V5:
            rows = [c for c in s.cases if c.mosquitto != c.mqgate]
        else:
            for n, text in enumerate(s.files):
                same = [m for m in range(n) if s.files[m] == text]
                label = f"File {n + 1}" if len(s.files) > 1 else "The file"
                if same:
                    out += [f"{label}: file {same[0] + 1} again.", ""]
                    continue
                out += [f"{label}:", "", "```", text.rstrip("\n"), "```", ""]
        out += ["| case | Mosquitto 2.0.11 | mqgate |", "|---|---|---|"]
        notes = []
        for c in rows:
            who = f"`{c.user}`" if c.user else "anonymous"
            if c.cid and not c.cid.startswith(("live-", "new-", "late-")):
                who += f" (client id `{c.cid}`)"
            case = f"{who}, `{c.filter}`"
            if len(s.files) > 1:
                since = s.since(c)
                case += f", subscribed under file {since + 1}"
                if since != c.phase:
                    case += f"; published under file {c.phase + 1}"
            q = describe(s, c, "mqgate")
            if c.note and s is not WILDCARDS_V5:
                if c.note not in notes:
                    notes.append(c.note)
                q += f" [{notes.index(c.note) + 1}]"
            out.append(f"| {case} | {describe(s, c, 'mosquitto')} | {q} |")
        out.append("")
        if s is WILDCARDS_V5:
            out += ["The other rows: as with MQTT 3.1.1 (granted by both, the same deliveries).",
                    ""]
        for n, note in enumerate(notes):
            out += [f"[{n + 1}] {note}", ""]
    out += ["Every file ends with the tests' own rules (no row's SUBSCRIBE answer depends on "
            "them):", "", "```", FOOTER.strip("\n"), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        print(markdown(), end="")
    else:
        unittest.main()
