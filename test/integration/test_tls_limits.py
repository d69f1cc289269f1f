"""Hostile TLS clients meet limits, not the event loop (issue 9, TLS part), with real
clients only: Python's ssl module (sockets, and memory BIOs to stop a handshake half-way),
mosquitto_pub and openssl. Certificates are made per class in a temp dir.

What makes these tests deterministic rather than timed: a handshake driven through memory
BIOs waits, half-way, exactly as long as the test wants; refused connections are counted
by the broker's own log lines; a reload is waited for by its log line."""
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import unittest

import mqtt_raw as r
import pki
from mqgate_test import Broker, BrokerTestCase, closed_by_peer, run_config_check

DOMAIN = "my.domain.name"
MIB = 1 << 20


def tls_context(ca, cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


class Refused(Exception):
    pass


def connack(port, ca, cert=None, key=None, client_id="c"):
    """TLS handshake + CONNECT on a Python ssl socket; returns the CONNACK return code, or
    'refused' when the broker refused the handshake (TLS 1.2 may deliver a refusal of the
    client's certificate after the client thinks the handshake is done)."""
    ctx = tls_context(ca, cert, key)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        c = r.RawClient.__new__(r.RawClient)
        c.sock, c.buf, c.eof, c.timeout, c.pending, c.discarded = s, b"", False, 10, [], []
        c.send(r.connect(client_id))
        return c.expect(r.CONNACK).return_code
    except (ssl.SSLError, r.ConnectionClosed, ConnectionResetError, BrokenPipeError):
        return "refused"
    finally:
        raw.close()


def client_hello(ca):
    """The bytes of a real ClientHello (OpenSSL's, via Python's ssl), to replay."""
    out = ssl.MemoryBIO()
    tls = tls_context(ca).wrap_bio(ssl.MemoryBIO(), out, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def reset(sock):
    """Closes with a TCP RST (SO_LINGER 0), as a client that vanishes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class SteppedHandshake:
    """A TLS client whose handshake stops half-way for as long as the test wants: memory
    BIOs between OpenSSL (Python's ssl) and a real socket."""

    def __init__(self, port, ctx):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def _step(self):
        """One handshake step; True once the handshake is complete."""
        try:
            self.tls.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def send_hello(self):
        self._step()
        self.sock.sendall(self.outgoing.read())

    def read_server_flight(self):
        """Reads until the server's first flight is complete; returns the client's
        answer (Certificate ... Finished), not yet sent."""
        while not self.outgoing.pending:
            data = self.sock.recv(65536)
            if not data:
                raise Refused("closed before the server's first flight")
            self.incoming.write(data)
            self._step()
        return self.outgoing.read()

    def finish(self, flight, client_id):
        """Sends the client's flight and a CONNECT; returns the CONNACK return code or
        raises Refused (with the alert) if the broker refuses."""
        try:
            self.sock.sendall(flight)
            while not self._step():
                self._recv()
            try:
                self.tls.read(1)  # what came with the server's Finished: a refusal's alert
            except ssl.SSLWantReadError:
                pass
            self.tls.write(r.connect(client_id))
            self.sock.sendall(self.outgoing.read())
            data = b""
            while len(data) < 4:
                try:
                    data += self.tls.read(4 - len(data))
                except ssl.SSLWantReadError:
                    self._recv()
            return data[3]
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
            raise Refused(str(e))

    def _recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise Refused("connection closed")
        self.incoming.write(data)

    def close(self):
        self.sock.close()


def bystander(port):
    """A plain MQTT client on the plain listener, to show the loop stays responsive."""
    c = r.RawClient(port)
    assert c.connect("bystander").return_code == 0
    return c


def config(server, ca, extra="", listener="", client_cert=None, log="debug"):
    cc = f'client_cert = "{client_cert}"\n' if client_cert else ""
    return (f'log_level = "{log}"\nsys_interval = 0\n{extra}\n'
            '[limits]\nconnect_timeout = 120\n'
            '[listeners.plain]\nbind = "127.0.0.1:0"\n'
            f'[listeners.tls]\nbind = "127.0.0.1:0"\nssl = true\ncertfile = "{server.cert}"\n'
            f'keyfile = "{server.key}"\ncafile = "{ca}"\n{cc}{listener}\n')


def refused_total(log):
    return sum(int(n) for n in re.findall(r"TLS: refused (\d+) new connections?", log))


class Fixture(unittest.TestCase):
    """One CA (EC, for speed), an EC server certificate, an RSA one (slow handshakes, on
    purpose), and devices."""

    @classmethod
    def setUpClass(cls):
        cls.pki_dir = d = tempfile.mkdtemp(prefix="mqgate-tls-limits-")
        cls.ca = pki.make_ca(d, key_type="ec")
        cls.server = pki.make_server(d, cn="localhost", key_type="ec")
        cls.rsa_server = pki.openssl_server(d, cls.ca, name="rsa-server", key_type="rsa")
        cls.dev1 = pki.make_device(d, "dev1", DOMAIN, key_type="ec")
        cls.victim = pki.make_device(d, "victim", DOMAIN, key_type="ec")
        cls.hello = client_hello(cls.ca.cert)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki_dir, ignore_errors=True)


class OptionalClientCertTest(Fixture, BrokerTestCase):
    """client_cert = "optional": a client may send no certificate, not a wrong one."""

    def test_server_only_certificate_is_refused_as_client_certificate(self):
        b = self.start_broker(config(self.server, self.ca.cert, client_cert="optional"))
        port = b.port("tls")
        # server_creds' certificate: extendedKeyUsage serverAuth only.
        self.assertEqual(connack(port, self.ca.cert, self.server.cert, self.server.key), "refused")
        b.wait_log(r"TLS handshake failed: client certificate \(.*CN=localhost\) rejected: "
                   r".*extendedKeyUsage")
        p = subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(port), "--cafile",
                            self.ca.cert, "--cert", self.server.cert, "--key", self.server.key,
                            "-i", "srv", "-t", "t", "-m", "x"],
                           capture_output=True, text=True, timeout=20)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        # The normal device certificate, and no certificate at all, are let in.
        self.assertEqual(connack(port, self.ca.cert, self.dev1.cert, self.dev1.key, "dev1"), 0)
        self.assertEqual(connack(port, self.ca.cert, client_id="nocert"), 0)

    def test_key_usage_without_digital_signature_is_refused(self):
        b = self.start_broker(config(self.server, self.ca.cert))  # optional: the default
        odd = pki.openssl_sign(
            self.tmp, self.ca, "encipher-only", "/CN=encipher-only",
            "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, keyAgreement\n"
            "extendedKeyUsage = clientAuth\n", key_type="ec")
        self.assertEqual(connack(b.port("tls"), self.ca.cert, odd.cert, odd.key), "refused")
        b.wait_log(r"client certificate \(CN=encipher-only\) rejected: .*keyUsage")

    def test_required_refuses_it_too(self):
        b = self.start_broker(config(self.server, self.ca.cert, client_cert="required"))
        self.assertEqual(connack(b.port("tls"), self.ca.cert, self.server.cert, self.server.key),
                         "refused")
        self.assertEqual(connack(b.port("tls"), self.ca.cert, self.dev1.cert, self.dev1.key,
                                 "dev1"), 0)


class PendingHandshakesTest(Fixture, BrokerTestCase):
    LIMIT = 8

    def test_half_handshakes_beyond_the_limit_are_closed_and_plain_clients_are_served(self):
        b = self.start_broker(config(self.server, self.ca.cert,
                                     extra=f"tls_threads = 1\n"
                                           f"tls_max_pending_handshakes = {self.LIMIT}"))
        port = b.port("tls")
        plain = bystander(b.port("plain"))
        b.wait_log(r"TLS handshakes run on 1 thread, at most 8 in progress")
        # LIMIT clients send a ClientHello, get the server's answer, then say nothing.
        half = []
        for _ in range(self.LIMIT):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(self.hello)
            self.assertTrue(s.recv(5), "no ServerHello")
            half.append(s)
        plain.ping()
        # Every further TLS connection is closed at once, without a byte.
        extra = []
        for _ in range(3 * self.LIMIT):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            try:
                s.sendall(self.hello)
            except (BrokenPipeError, ConnectionResetError):
                pass
            extra.append(s)
        for s in extra:
            self.assertTrue(closed_by_peer(s, 5))
            s.close()
        plain.ping()
        self.assertEqual(connack(port, self.ca.cert, self.dev1.cert, self.dev1.key, "dev1"),
                         "refused")
        # Counted, in at most one line a second: the tick reports the rest of the burst.
        deadline = time.monotonic() + 10
        while refused_total(b.log()) < 3 * self.LIMIT + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(refused_total(b.log()), 3 * self.LIMIT + 1, b.log()[-3000:])
        stamps = [float(h) * 3600 + float(m) * 60 + float(sec) for h, m, sec in re.findall(
            r"T(\d\d):(\d\d):(\d\d\.\d+)Z INFO  TLS: refused", b.log())]
        self.assertTrue(all(later - earlier > 0.9 for earlier, later in zip(stamps, stamps[1:])),
                        stamps)
        # Half handshakes that vanish (RST) give their slot back.
        for s in half[:2]:
            reset(s)
        b.wait_log(r"connection closed before CONNECT completed", count=2)
        self.assertEqual(connack(port, self.ca.cert, self.dev1.cert, self.dev1.key, "dev1"), 0)
        plain.ping()
        for s in half[2:]:
            s.close()
        plain.close()

    def test_jobs_of_vanished_clients_are_dropped_unrun(self):
        # One worker and an RSA server key: each ClientHello costs an RSA signature. Sixty
        # clients send one and vanish before the worker can reach most of them.
        b = self.start_broker(config(self.rsa_server, self.ca.cert, extra="tls_threads = 1"))
        port = b.port("tls")
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(60)]
        for s in socks:
            s.sendall(self.hello)
        for s in socks:
            reset(s)
        b.wait_log(r"connection closed before CONNECT completed", count=60, timeout=30)
        dropped = len(re.findall(r"TLS handshake job dropped before a worker ran it", b.log()))
        self.assertGreater(dropped, 0)
        # Their slots are free again, and the broker still serves devices.
        self.assertEqual(connack(port, self.ca.cert, self.dev1.cert, self.dev1.key, "dev1"), 0)

    def test_config_key_errors(self):
        base = config(self.server, self.ca.cert)
        for value in ("0", "1000001", '"many"', "1.5"):
            rc, out = run_config_check(f"tls_max_pending_handshakes = {value}\n" + base, self.tmp)
            self.assertEqual(rc, 1, out)
            self.assertRegex(out, r"check\.toml:1:\d+: tls_max_pending_handshakes: expected an "
                                  r"integer from 1 to 1000000")
        rc, out = run_config_check("tls_max_pending_handshakes = 1000000\n" + base, self.tmp)
        self.assertEqual(rc, 0, out)


class FloodTest(Fixture, BrokerTestCase):
    def test_ciphertext_flood_during_a_handshake_closes_that_connection(self):
        b = self.start_broker(config(self.rsa_server, self.ca.cert, extra="tls_threads = 1"))
        port = b.port("tls")
        plain = bystander(b.port("plain"))
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        # Warning alerts: records mbedTLS reads and ignores, so only the limit can end this.
        alert = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 90])
        try:
            s.sendall(self.hello + alert * (100 * 1024 // len(alert)))
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.assertTrue(closed_by_peer(s, 10))
        b.wait_log(r"TLS handshake flooded: the client sent \d+ bytes before its handshake "
                   r"completed, more than the 64 KiB a handshake needs; closing")
        s.close()
        plain.ping()
        self.assertEqual(connack(port, self.ca.cert, self.dev1.cert, self.dev1.key, "dev1"), 0)
        plain.close()


class ReloadTest(Fixture, BrokerTestCase):
    def crl_broker(self, crl, listener=""):
        return self.start_broker(config(self.server, self.ca.cert,
                                        listener=f'crlfile = "{crl}"\n{listener}'))

    def test_oversized_crl_keeps_the_old_generation(self):
        crl = pki.revoke(self.tmp, self.victim.cert, ca=self.ca, crl=os.path.join(self.tmp, "ca.crl"))
        b = self.crl_broker(crl)
        port = b.port("tls")
        self.assertEqual(connack(port, self.ca.cert, self.victim.cert, self.victim.key, "victim"),
                         "refused")
        with open(crl, "ab") as f:  # 16 MiB and one byte: over the cap before parsing
            f.truncate(16 * MIB + 1)
        b.signal(signal.SIGHUP)
        b.wait_log(r'ERROR reload: listener "tls": crlfile .*ca\.crl: is 16777217 bytes, more '
                   r"than the 16 MiB such a file may have; keeping the previous TLS material")
        # The old CRL is still in force; everybody else still gets in.
        self.assertEqual(connack(port, self.ca.cert, self.victim.cert, self.victim.key, "victim"),
                         "refused")
        self.assertEqual(connack(port, self.ca.cert, self.dev1.cert, self.dev1.key, "dev1"), 0)

    def test_oversized_files_at_start_up(self):
        big = os.path.join(self.tmp, "big.crt")
        with open(self.server.cert, "rb") as src, open(big, "wb") as f:
            f.write(src.read())
            f.truncate(MIB + 1)
        rc, out = run_config_check(config(pki.Creds(self.server.key, big), self.ca.cert),
                                   self.tmp)
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r'listener "tls": certfile .*big\.crt: is 1048577 bytes, more '
                              r"than the 1 MiB")

    def test_revoked_during_its_handshake_is_refused_when_it_completes(self):
        crl = os.path.join(self.tmp, "ca.crl")
        pki.revoke(self.tmp, ca=self.ca, crl=crl, refresh=True)  # revokes nobody yet
        b = self.crl_broker(crl)
        port = b.port("tls")
        victim = SteppedHandshake(port, tls_context(self.ca.cert, self.victim.cert,
                                                    self.victim.key))
        keeper = SteppedHandshake(port, tls_context(self.ca.cert, self.dev1.cert, self.dev1.key))
        for h in (victim, keeper):
            h.send_hello()
        flights = [victim.read_server_flight(), keeper.read_server_flight()]
        # Both handshakes started on the old generation; the victim is revoked now.
        pki.revoke(self.tmp, self.victim.cert, ca=self.ca, crl=crl)
        b.signal(signal.SIGHUP)
        b.wait_log(r'reload: listener "tls": TLS .*CRL with 1 revoked')
        with self.assertRaises(Refused):
            victim.finish(flights[0], "victim")
        b.wait_log(r"TLS handshake failed: client certificate \(.*CN=victim\) is revoked by the "
                   r"CRL reloaded during the handshake")
        self.assertEqual(keeper.finish(flights[1], "dev1"), 0)
        victim.close()
        keeper.close()

    def test_sighups_in_a_row_end_on_the_newest_material(self):
        crl = os.path.join(self.tmp, "ca.crl")
        pki.revoke(self.tmp, ca=self.ca, crl=crl, refresh=True)
        b = self.crl_broker(crl)
        port = b.port("tls")
        plain = bystander(b.port("plain"))
        for i in range(3):
            if i == 2:
                pki.revoke(self.tmp, self.victim.cert, ca=self.ca, crl=crl)
            b.signal(signal.SIGHUP)
            b.wait_log(r"SIGHUP received", count=i + 1)
            plain.ping()
        b.wait_log(r'reload: listener "tls": TLS .*CRL with 1 revoked')
        self.assertEqual(connack(port, self.ca.cert, self.victim.cert, self.victim.key, "victim"),
                         "refused")
        self.assertEqual(connack(port, self.ca.cert, self.dev1.cert, self.dev1.key, "dev1"), 0)
        plain.close()


if __name__ == "__main__":
    unittest.main()
