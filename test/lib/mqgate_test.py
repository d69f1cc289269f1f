"""Shared helpers for mqgate's integration tests.

Tests start the real broker binary on ephemeral loopback ports (bind port 0; the broker
logs the port it got) and drive it with real clients. Everything lives in a temp dir
that is removed afterwards. Use /usr/bin/python3 (Debian's, which sees paho-mqtt).
"""
import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
import unittest

BUILD_DIR = os.environ.get("MQGATE_BUILD_DIR") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "build-test")
SOURCE_DIR = os.environ.get("MQGATE_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BROKER_BIN = os.path.join(BUILD_DIR, "core", "mqgate")
PKI_DIR = os.path.join(BUILD_DIR, "pki-tools")
PLUGIN_DIR = os.path.join(BUILD_DIR, "plugins")
TEST_PLUGIN_DIR = os.path.join(BUILD_DIR, "test", "plugins")

# Started as root (as the suite is here and in CI) the broker drops to the `mqgate` user,
# or refuses to start without one (docs/operations.md, "Running as a service"): tests keep
# root explicitly, except test_privileges.py, which tests the drop.
RUN_AS = ["--user", "root"] if os.geteuid() == 0 else []

LISTENING = re.compile(r'listener "([^"]+)" listening on (\S+) port (\d+)')
SANITIZER_REPORT = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")


def pki_tool(name):
    return os.path.join(PKI_DIR, name)


def thread_status(pid):
    """{field: value} of /proc/<pid>/task/<tid>/status, for every thread of pid."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = {}
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                fields[k] = v.strip()
        out.append(fields)
    return out


@contextlib.contextmanager
def mqgate_user_lock():
    """Held by a test that needs the system user `mqgate` absent (test_privileges.py) or
    creates it (test_package.py, by installing the package): the suite runs files side by
    side."""
    with open("/tmp/mqgate-test-user-mqgate.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class BrokerError(Exception):
    pass


class Broker:
    """A running mqgate process with a config written from a TOML string.

    `config` may use {dir} for the broker's temp dir. Listeners should bind port 0;
    `port(name)` returns the port the broker logged for that listener. With
    `config_file`, the broker runs on that existing file instead (`config` is None).
    """

    def __init__(self, config, workdir=None, extra_args=(), wait=True, timeout=10.0,
                 run_as=None, binary=None, config_file=None):
        self.own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="mqgate-test-")
        self.config_path = config_file or os.path.join(self.dir, "mqgate.toml")
        if config_file is None:
            with open(self.config_path, "w") as f:
                f.write(textwrap.dedent(config).replace("{dir}", self.dir))
        self.log_path = os.path.join(self.dir, "broker.log")
        self.ports = {}
        self.hosts = {}
        self.proc = None
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary or BROKER_BIN, "--config", self.config_path,
                                      *(RUN_AS if run_as is None else run_as), *extra_args],
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir)
        if wait:
            try:
                self.wait_listening(timeout)
            except BaseException:
                # Nobody holds this Broker yet: stop the process here, or a broker that
                # never listened (a [cluster] node keeps retrying NATS) outlives the test.
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()
                self._log.close()
                raise

    # -- lifecycle -------------------------------------------------------------------
    def wait_listening(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        expected = self.expected_listeners()
        while time.monotonic() < deadline:
            for m in LISTENING.finditer(self.log()):
                self.ports[m.group(1)] = int(m.group(3))
                self.hosts[m.group(1)] = m.group(2)
            if expected and expected.issubset(self.ports.keys()):
                return
            if self.proc.poll() is not None:
                raise BrokerError(f"broker exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        raise BrokerError(f"broker did not start listening in {timeout}s:\n{self.log()}")

    def expected_listeners(self):
        with open(self.config_path) as f:
            names = re.findall(r"^\s*\[listeners\.([^\]\s]+)\]", f.read(), re.M)
        return {n.strip('"') for n in names}

    def port(self, name="default"):
        return self.ports[name]

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, pattern, timeout=5.0, count=1):
        """Waits until `pattern` (a regex) appears `count` times in the log."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(rx.findall(self.log())) >= count:
                return True
            time.sleep(0.02)
        raise AssertionError(f"log never matched {pattern!r}:\n{self.log()[-4000:]}")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10.0):
        """SIGTERM, wait, and check the exit code and the log for sanitizer reports."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise BrokerError(f"broker did not stop on SIGTERM in {timeout}s:\n{self.log()}")
        self._log.close()
        rc = self.proc.returncode
        text = self.log()
        if SANITIZER_REPORT.search(text):
            raise BrokerError(f"sanitizer report in broker log:\n{text[-8000:]}")
        return rc

    def close(self):
        try:
            rc = self.stop()
            if rc not in (0, None):
                raise BrokerError(f"broker exited with {rc}:\n{self.log()[-4000:]}")
        finally:
            if self.own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def plugin_table(instance, module, **options):
    """A [plugins.<instance>] table loading test/plugins/<module>.so with `options`
    (booleans, integers, string arrays, strings)."""
    lines = [f"[plugins.{instance}]", f'path = "{os.path.join(TEST_PLUGIN_DIR, module + ".so")}"']
    for k, v in options.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, int):
            lines.append(f"{k} = {v}")
        elif isinstance(v, list):
            lines.append(f"{k} = [" + ", ".join(f'"{x}"' for x in v) + "]")
        else:
            lines.append(f'{k} = "{v}"')
    return "\n".join(lines) + "\n"


def plain_config(extra="", listener_extra="", log_level="debug"):
    """The smallest config: one plain listener on an ephemeral loopback port."""
    return f"""
log_level = "{log_level}"
{extra}
[listeners.default]
bind = "127.0.0.1:0"
{listener_extra}
"""


def run_config_check(config_text, workdir):
    """Runs `mqgate --check-config` on a config; returns (exit code, output)."""
    path = os.path.join(workdir, "check.toml")
    with open(path, "w") as f:
        f.write(textwrap.dedent(config_text))
    p = subprocess.run([BROKER_BIN, "--config", path, "--check-config", *RUN_AS], capture_output=True,
                       timeout=20, cwd=workdir)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def connect_raw(port, host="127.0.0.1", timeout=5.0):
    s = socket.create_connection((host, port), timeout=timeout)
    s.settimeout(timeout)
    return s


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def closed_by_peer(sock, timeout=5.0):
    """True if the peer closes the connection (EOF or reset) within timeout."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


class BrokerTestCase(unittest.TestCase):
    """A test case with a temp dir; subclasses start brokers with self.start_broker()."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mqgate-case-")
        self._brokers = []
        # A cleanup, not tearDown: cleanups run after tearDown, the last registered first,
        # so the clients a test closes with addCleanup() are closed before its brokers
        # stop (as in brokers.MqttTestCase). A broker stopping with clients connected tells
        # them to go and waits a little for them to close (lingering closes).
        self.addCleanup(self._stop_brokers)

    def _stop_brokers(self):
        errors = []
        for b in self._brokers:
            try:
                b.close()
            except BrokerError as e:
                errors.append(str(e))
        shutil.rmtree(self.tmp, ignore_errors=True)
        if errors:
            self.fail("\n".join(errors))

    def start_broker(self, config=None, **kw):
        b = Broker(config if config is not None else plain_config(), **kw)
        self._brokers.append(b)
        return b
