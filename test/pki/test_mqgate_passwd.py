"""mqgate_passwd: Mosquitto password files with mosquitto_passwd's usage (docs/passwd.md),
checked both ways against Debian's mosquitto_passwd and Mosquitto broker. Every password
file is made here at run time."""
import os
import pty
import re
import select
import shutil
import subprocess
import tempfile
import time
import unittest

from mqgate_test import pki_tool
from mosquitto_auth import MosquittoAuth
from pki import file_mode

TOOL = pki_tool("mqgate_passwd")
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
LINE7 = re.compile(r"^([^:]+):\$7\$(\d+)\$([A-Za-z0-9+/]{16})\$([A-Za-z0-9+/]{86}==)$")
LINE6 = re.compile(r"^([^:]+):\$6\$([A-Za-z0-9+/]{16})\$([A-Za-z0-9+/]{86}==)$")


def run(*args, input=None, cwd=None):
    return subprocess.run([TOOL, *map(str, args)], input=input, capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def read(path):
    with open(path) as f:
        return f.read()


class MqgatePasswdTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mqgate-passwd-")
        self.pw = os.path.join(self.tmp, "passwd")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def ok(self, *args, input=None):
        p = run(*args, input=input)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p

    def fails(self, *args, input=None, rc=1, message=None):
        p = run(*args, input=input)
        self.assertEqual(p.returncode, rc, p.stdout + p.stderr)
        if message:
            self.assertIn(message, p.stderr)
        return p

    def users(self):
        return [l.split(":")[0] for l in read(self.pw).splitlines() if l and l[0] != "#"]

    def temp_leftovers(self):
        return [n for n in os.listdir(self.tmp) if ".tmp." in n]

    # -- create, add, update, delete --------------------------------------------------
    def test_create_add_update_delete(self):
        self.ok("-c", "-b", self.pw, "alice", "alice pw")
        self.assertEqual(file_mode(self.pw), 0o600)
        m = LINE7.match(read(self.pw).strip())
        self.assertIsNotNone(m, read(self.pw))
        self.assertEqual(m.group(1), "alice")
        self.assertEqual(m.group(2), "101")
        self.ok("-b", self.pw, "bob", "bob pw")
        self.assertEqual(self.users(), ["alice", "bob"])
        before = read(self.pw).splitlines()
        self.ok("-b", self.pw, "alice", "new pw")  # update in place, order kept
        after = read(self.pw).splitlines()
        self.assertEqual(self.users(), ["alice", "bob"])
        self.assertNotEqual(before[0], after[0])
        self.assertEqual(before[1], after[1])
        self.ok("-D", self.pw, "alice")
        self.assertEqual(self.users(), ["bob"])
        self.fails("-D", self.pw, "alice", message='user "alice" not found')
        self.ok("-c", "-b", self.pw, "carol", "c")  # -c replaces the file
        self.assertEqual(self.users(), ["carol"])
        self.assertEqual(self.temp_leftovers(), [])

    def test_username_with_slash_or_wildcard_is_added_with_a_warning(self):
        # mosquitto_passwd accepts them silently; such a name is not one topic level, so
        # the acl plugin's %u patterns grant it nothing (docs/acl.md): say so
        self.ok("-c", "-b", self.pw, "alice", "a")
        self.assertNotIn("warning", self.ok("-b", self.pw, "alice", "b").stderr)
        p = self.ok("-b", self.pw, "eve/x", "e")
        self.assertIn('warning: username "eve/x" contains \'/\', \'+\' or \'#\': ACL patterns '
                      "with %u will grant it nothing (see docs/acl.md)", p.stderr)
        p = self.ok("-b", self.pw, "a+b", "e")
        self.assertIn("will grant it nothing, nor any other pattern", p.stderr)
        self.assertNotIn("warning", self.ok("-D", self.pw, "eve/x").stderr)
        self.assertEqual(self.users(), ["alice", "a+b"])

    def test_hash_and_iterations(self):
        self.ok("-c", "-H", "sha512", "-b", self.pw, "old", "x")
        self.assertIsNotNone(LINE6.match(read(self.pw).strip()), read(self.pw))
        self.ok("-I", "5000", "-b", self.pw, "new", "y")
        self.assertIn("new:$7$5000$", read(self.pw))
        self.fails("-I", "0", "-b", self.pw, "u", "p", message="from 1 to 1000000")
        self.fails("-I", "1000001", "-b", self.pw, "u", "p", message="from 1 to 1000000")
        self.fails("-I", "12x", "-b", self.pw, "u", "p")
        self.fails("-H", "md5", "-b", self.pw, "u", "p", message='unknown hash "md5"')

    def test_comments_and_blank_lines_are_kept(self):
        self.ok("-c", "-b", self.pw, "alice", "a")
        with open(self.pw, "a") as f:
            f.write("\n# the robots\n")
        self.ok("-b", self.pw, "bob", "b")
        self.ok("-b", self.pw, "alice", "a2")
        lines = read(self.pw).splitlines()
        self.assertTrue(lines[0].startswith("alice:$7$"))
        self.assertEqual(lines[1:3], ["", "# the robots"])
        self.assertTrue(lines[3].startswith("bob:$7$"))

    def test_what_mosquitto_tolerates_we_read_alike(self):
        # comments (also indented), blank lines, blanks around fields, CRLF, no final
        # newline: Mosquitto reads this file, and so does our library (the tool parses
        # the file before it adds a user)
        self.ok("-c", "-b", self.pw, "alice", "alice pw")
        alice = read(self.pw).strip()
        user, hashed = alice.split(":", 1)
        with open(self.pw, "w", newline="") as f:
            f.write(f"# users\r\n\r\n   # indented\r\n  {user} :  {hashed} \r\n")
        self.ok("-b", self.pw, "bob", "bob pw")
        text = read(self.pw)
        self.assertTrue(text.startswith("# users\n\n   # indented\n"), text)
        self.verify_with_mosquitto({"alice": "alice pw", "bob": "bob pw"},
                                   {"alice": "bob pw"})

    def test_usage_errors(self):
        self.fails(rc=2)
        self.fails("-c", "-D", self.pw, "u", rc=2)
        self.fails("-D", "-b", self.pw, "u", "p", rc=2)
        self.fails("-b", self.pw, "u", rc=2)
        self.fails("-x", self.pw, "u", rc=2)
        self.ok("--help")
        self.fails("-c", "-b", self.pw, "a:b", "p", message="username contains ':'")
        self.fails("-c", "-b", self.pw, "#a", "p", message="starts with '#'")
        self.fails("-c", "-b", self.pw, "u", "", message="empty password")
        self.assertFalse(os.path.exists(self.pw))
        self.fails("-b", self.pw, "u", "p", message="No such file")  # needs -c to create

    # -- passwords never shown ----------------------------------------------------------
    def test_password_from_stdin_twice(self):
        self.ok("-c", "-b", self.pw, "alice", "a")
        p = self.ok(self.pw, "bob", input="s3cret-pw\ns3cret-pw\n")
        self.assertIn("Password:", p.stderr)
        self.assertIn("Reenter password:", p.stderr)
        self.assertNotIn("s3cret-pw", p.stdout + p.stderr)
        self.assertEqual(self.users(), ["alice", "bob"])
        before = read(self.pw)
        p = self.fails(self.pw, "carol", input="one-pw\ntwo-pw\n", message="do not match")
        self.assertNotIn("one-pw", p.stdout + p.stderr)
        self.fails(self.pw, "carol", input="\n\n", message="empty password")
        self.fails(self.pw, "carol", input="", message="empty password")
        self.assertEqual(read(self.pw), before)
        # the library accepts what was written, with the password given
        self.verify_with_mosquitto({"bob": "s3cret-pw"}, {"bob": "s3cret-pw "})

    def test_terminal_prompt_does_not_echo(self):
        self.ok("-c", "-b", self.pw, "alice", "a")
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(TOOL, [TOOL, self.pw, "tty-user"])
        out = b""

        def read_until(token, timeout=10):
            nonlocal out
            deadline = time.monotonic() + timeout
            while token not in out and time.monotonic() < deadline:
                r, _, _ = select.select([fd], [], [], 0.1)
                if r:
                    try:
                        out += os.read(fd, 1024)
                    except OSError:
                        break
        read_until(b"Password: ")
        os.write(fd, b"typed-secret\n")
        read_until(b"Reenter password: ")
        os.write(fd, b"typed-secret\n")
        deadline = time.monotonic() + 20
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                os.close(fd)
                self.fail(f"mqgate_passwd did not finish: {out!r}")
            time.sleep(0.05)
        try:
            while True:
                r, _, _ = select.select([fd], [], [], 0.2)
                if not r:
                    break
                chunk = os.read(fd, 1024)
                if not chunk:
                    break
                out += chunk
        except OSError:
            pass
        os.close(fd)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0, out)
        self.assertNotIn(b"typed-secret", out)
        self.assertIn("tty-user", self.users())

    # -- atomic writes, bad files ---------------------------------------------------------
    def test_atomic_replace_and_symlink(self):
        self.ok("-c", "-b", self.pw, "alice", "a")
        ino = os.stat(self.pw).st_ino
        os.chmod(self.pw, 0o604)
        self.ok("-b", self.pw, "bob", "b")
        self.assertNotEqual(os.stat(self.pw).st_ino, ino)  # a new file renamed over
        self.assertEqual(file_mode(self.pw), 0o600)
        if os.geteuid() == 0:
            # root keeps the owner, the group and its read bit: a broker in that group (the
            # Debian package's root:mqgate 0640) still reads the file
            os.chown(self.pw, 1, 1)
            os.chmod(self.pw, 0o644)
            self.ok("-b", self.pw, "bob", "b2")
            st = os.stat(self.pw)
            self.assertEqual((st.st_uid, st.st_gid, file_mode(self.pw)), (1, 1, 0o640))
        link = os.path.join(self.tmp, "link")
        os.symlink("passwd", link)
        self.ok("-b", link, "carol", "c")
        self.assertTrue(os.path.islink(link))
        self.assertIn("carol", self.users())
        self.assertEqual(self.temp_leftovers(), [])

    def test_unwritable_directory_leaves_file_alone(self):
        if os.geteuid() == 0:
            self.skipTest("root writes anywhere")
        self.ok("-c", "-b", self.pw, "alice", "a")
        before = read(self.pw)
        os.chmod(self.tmp, 0o500)
        try:
            self.fails("-b", self.pw, "bob", "b", message="temporary file")
        finally:
            os.chmod(self.tmp, 0o700)
        self.assertEqual(read(self.pw), before)

    def test_bad_existing_file_is_refused_with_its_line(self):
        self.ok("-c", "-b", self.pw, "alice", "a")
        good = read(self.pw)
        cases = [
            (good + "# ok\nbob:plain\n", ":3: password is not a hash"),
            (good + "garbage\n", ":2: expected \"username:hash\""),
            (good + good, ":2: duplicate user \"alice\" (first on line 1)"),
            ("x:$7$5000000$" + good.split("$", 3)[3], ":1: iteration count 5000000 out of range"),
            ("x:$9$abc$def\n", ":1: unknown hash type"),
            ("x:$6$!!!!$" + good.split("$")[-1], ":1: bad base64 salt"),
        ]
        for text, message in cases:
            with self.subTest(message=message):
                with open(self.pw, "w") as f:
                    f.write(text)
                p = self.fails("-b", self.pw, "carol", "c")
                self.assertIn(self.pw + message, p.stderr)
                self.assertIn("file left unchanged", p.stderr)
                self.assertEqual(read(self.pw), text)
        with open(self.pw, "w") as f:
            f.write(good + "x" * 70000 + "\n")
        self.fails("-b", self.pw, "carol", "c", message=":2: line longer than 65536 bytes")

    def test_update_plain_text_file(self):
        with open(self.pw, "w") as f:
            f.write("# plain\nalice:alice pw\nbob:bob:pw\n")
        os.chmod(self.pw, 0o600)  # not group-readable: root would keep that bit
        p = self.ok("-U", self.pw)
        self.assertIn("2 passwords hashed", p.stderr)
        lines = read(self.pw).splitlines()
        self.assertEqual(lines[0], "# plain")
        self.assertTrue(LINE7.match(lines[1]))
        self.assertEqual(file_mode(self.pw), 0o600)
        p = self.ok("-U", self.pw)  # hashes stay as they are
        self.assertIn("0 passwords hashed", p.stderr)
        self.verify_with_mosquitto({"alice": "alice pw", "bob": "bob:pw"}, {"alice": "alice"})
        # a broken hash is not taken for a password and hashed again
        with open(self.pw, "a") as f:
            f.write("carol:$7$0$AAAA$BBBB\n")
        before = read(self.pw)
        self.fails("-U", self.pw, message=":4: iteration count 0 out of range")
        self.assertEqual(read(self.pw), before)

    # -- interoperability -----------------------------------------------------------------
    def verify_with_mosquitto(self, good, bad):
        with MosquittoAuth(self.tmp, password_file=self.pw, allow_anonymous=False) as m:
            for user, password in good.items():
                rc, err = m.connect_rc(user, password)
                self.assertEqual(rc, 0, f"{user}: {err}\n{m.log()}")
            for user, password in bad.items():
                rc, err = m.connect_rc(user, password)
                self.assertNotEqual(rc, 0, f"{user} got in with a wrong password")
                self.assertIn("not authorised", err)

    def test_files_we_write_verify_with_mosquitto(self):
        self.ok("-c", "-b", self.pw, "alice", "alice pw")
        self.ok("-H", "sha512", "-b", self.pw, "old-style", "old:pw")
        self.ok("-I", "20000", "-b", self.pw, "slow", "slow pw")
        self.ok(self.pw, "prompted", input="prömpted\nprömpted\n")
        self.verify_with_mosquitto(
            {"alice": "alice pw", "old-style": "old:pw", "slow": "slow pw",
             "prompted": "prömpted"},
            {"alice": "alice pw!", "old-style": "old", "nobody": "alice pw"})

    def test_files_mosquitto_passwd_writes_are_ours_to_edit(self):
        subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", self.pw, "alice", "alice pw"], check=True)
        subprocess.run([MOSQUITTO_PASSWD, "-H", "sha512", "-b", self.pw, "bob", "bob pw"],
                       check=True)
        theirs = read(self.pw).splitlines()
        self.ok("-b", self.pw, "carol", "carol pw")
        ours = read(self.pw).splitlines()
        self.assertEqual(ours[:2], theirs)  # their lines untouched
        # and mosquitto_passwd reads and edits ours
        subprocess.run([MOSQUITTO_PASSWD, "-b", self.pw, "dave", "dave pw"], check=True)
        subprocess.run([MOSQUITTO_PASSWD, "-D", self.pw, "bob"], check=True)
        self.assertEqual(self.users(), ["alice", "carol", "dave"])
        self.verify_with_mosquitto({"alice": "alice pw", "carol": "carol pw", "dave": "dave pw"},
                                   {"bob": "bob pw", "carol": "alice pw"})
