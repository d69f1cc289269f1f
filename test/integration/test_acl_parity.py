"""ACL decisions: Debian's Mosquitto 2.0.11 (live, with real clients) against mqgate's
ACL library (plugins/acl, through its acl_query helper), on one ACL file built from
mosquitto-conf(5)'s examples. Each row of the table says what each side must answer;
the rows where they differ are mqgate's deliberate choices, each with its reason
(docs/acl.md, "Differences from Mosquitto")."""
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from mqgate_test import BUILD_DIR
from mosquitto_auth import MosquittoAuth

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
SUB = "Mosquitto 2.0 grants every SUBSCRIBE and filters each message; mqgate decides " \
      "at SUBSCRIBE: the filter must be covered by read rules and touch no deny rule"

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

# SUBSCRIBE: mqgate's answer; Mosquitto grants them all (checked live below).
SUBSCRIBE = [
    (ANON, "anon1", "public/news/#", True),
    (ANON, "anon1", "public/#", False),       # could reach public/secret/...
    (ANON, "anon1", "public/+/x", False),
    (ANON, "anon1", "$SYS/#", True),
    (ANON, "anon1", "#", False),
    ("roger", "r1", "foo/bar", True),
    ("roger", "r1", "foo/+", False),
    ("roger", "r1", "roger/#", True),
    ("roger", "r1", "+/anything", False),
    ("alice", "a1", "alice/#", False),        # alice/private is denied in her list...
    ("alice", "a1", "alice/+/x", True),       # ...but not reachable from this one
]


def acl_query(acl_path, rows):
    """acl_check() answers for rows of (username, client id, identity, access, topic)."""
    lines = "".join("\t".join([u if u is not None else "\\-", c, "\\-", a, t]) + "\n"
                    for u, c, a, t in rows)
    p = subprocess.run([ACL_QUERY, acl_path], input=lines, capture_output=True, text=True,
                       timeout=30)
    if p.returncode != 0:
        raise AssertionError(p.stderr)
    return [line == "allow" for line in p.stdout.splitlines()]


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
        got = acl_query(self.acl, [(u, c, "subscribe", f) for u, c, f, _q in SUBSCRIBE])
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


if __name__ == "__main__":
    unittest.main()
