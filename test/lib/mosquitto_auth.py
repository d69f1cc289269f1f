"""Debian's Mosquitto with a password_file and/or acl_file, for the tests that check
mqgate's Mosquitto-compatible files (docs/passwd.md, docs/acl.md) against the real thing.

    with MosquittoAuth(dir, password_file=pw, acl_file=acl) as m:
        rc = m.connect_rc("alice", "secret")      # CONNACK code (0, 4 bad password, 5...)
"""
import os
import queue
import subprocess
import time

import paho.mqtt.client as paho

from brokers import MOSQUITTO_BIN, free_port, port_accepts
from mqgate_test import BrokerError


class MosquittoAuth:
    def __init__(self, workdir, password_file=None, acl_file=None, allow_anonymous=True,
                 timeout=10.0, extra=()):
        self.dir = workdir
        self.host = "127.0.0.1"
        self.log_path = os.path.join(workdir, "mosquitto-auth.log")
        for _attempt in range(5):
            self.port = free_port(self.host)
            lines = [f"listener {self.port} {self.host}",
                     f"allow_anonymous {'true' if allow_anonymous else 'false'}",
                     "persistence false", "log_dest stdout", "log_type all"]
            if os.geteuid() == 0:
                lines.append("user root")
            if password_file:
                lines.append(f"password_file {password_file}")
            if acl_file:
                lines.append(f"acl_file {acl_file}")
            lines += list(extra)  # more mosquitto.conf lines, e.g. "sys_interval 1"
            conf = os.path.join(workdir, "mosquitto-auth.conf")
            with open(conf, "w") as f:
                f.write("\n".join(lines) + "\n")
            self._log = open(self.log_path, "wb")
            self.proc = subprocess.Popen([MOSQUITTO_BIN, "-c", conf], stdout=self._log,
                                         stderr=subprocess.STDOUT, cwd=workdir)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if port_accepts(self.host, self.port):
                    return
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.close()
                raise BrokerError(f"mosquitto did not listen in {timeout}s:\n{self.log()}")
            self._log.close()
            if "Address already in use" not in self.log():
                raise BrokerError(f"mosquitto exited with {self.proc.returncode}:\n{self.log()}")
        raise BrokerError("mosquitto could not get a free port")

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def client(self, client_id, username=None, password=None, timeout=5.0):
        """A connected paho client whose received messages go to .messages (a Queue of
        (topic, payload)); .rc is the CONNACK code. Caller disconnects."""
        c = paho.Client(client_id=client_id, clean_session=True,
                        protocol=paho.MQTTv311)
        if username is not None:
            c.username_pw_set(username, password)
        c.messages = queue.Queue()
        c.rc = None
        c.on_connect = lambda cl, ud, flags, rc: setattr(cl, "rc", rc)
        c.on_message = lambda cl, ud, msg: cl.messages.put((msg.topic, msg.payload))
        c.connect(self.host, self.port, keepalive=30)
        c.loop_start()
        deadline = time.monotonic() + timeout
        while c.rc is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return c

    def connect_rc(self, username, password, client_id="probe"):
        """CONNACK return code for these credentials, with mosquitto_pub (a real client)."""
        args = ["mosquitto_pub", "-h", self.host, "-p", str(self.port), "-i", client_id,
                "-t", "probe", "-m", "x", "-q", "1"]
        if username is not None:
            args += ["-u", username]
        if password is not None:
            args += ["-P", password]
        p = subprocess.run(args, capture_output=True, text=True, timeout=10)
        return p.returncode, p.stderr
