"""A small raw MQTT 3.1.1 packet builder and reader for black-box broker tests.

Builders return the bytes of one whole packet and accept out-of-spec values on purpose
(wrong flags, QoS 3, packet id 0, raw bytes for strings ...) so tests can send exactly
what a broken or hostile client would. `RawClient` wraps a TCP socket: `send()` bytes,
`read_packet()` one parsed `Packet` with a timeout, `closed_by_peer()` to see a close.
Strings may be given as `str` (UTF-8 encoded) or as `bytes` (sent as they are).
"""
import socket
import struct
import time

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

NAMES = {CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH", PUBACK: "PUBACK",
         PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE",
         SUBACK: "SUBACK", UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK",
         PINGREQ: "PINGREQ", PINGRESP: "PINGRESP", DISCONNECT: "DISCONNECT"}

DEFAULT_TIMEOUT = 5.0


# -- encoding ---------------------------------------------------------------------------
def encode_remaining_length(n):
    if n < 0 or n > 268435455:
        raise ValueError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def encode_string(s):
    """A length-prefixed string; str is UTF-8 encoded, bytes are sent unchanged."""
    data = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return struct.pack("!H", len(data)) + data


def encode_binary(b):
    return encode_string(b if isinstance(b, (bytes, bytearray)) else str(b).encode())


def fixed_header(ptype, flags, remaining_length):
    return bytes([(ptype << 4) | (flags & 0x0F)]) + encode_remaining_length(remaining_length)


def packet(ptype, flags=0, body=b""):
    return fixed_header(ptype, flags, len(body)) + body


def connect(client_id="", clean=True, keepalive=60, will_topic=None, will_payload=b"",
            will_qos=0, will_retain=False, username=None, password=None,
            proto_name="MQTT", proto_level=4, flags=None, reserved_bit=False,
            will_flag=None, header_flags=0):
    """A CONNECT packet. `flags` overrides the whole connect-flags byte; otherwise it is
    built from the arguments (`will_flag` defaults to will_topic being given, and
    will_qos/will_retain are encoded even when there is no will, so tests can set them
    illegally)."""
    if will_flag is None:
        will_flag = will_topic is not None
    if flags is None:
        flags = 0
        if reserved_bit:
            flags |= 0x01
        if clean:
            flags |= 0x02
        if will_flag:
            flags |= 0x04
        flags |= (will_qos & 0x03) << 3
        if will_retain:
            flags |= 0x20
        if password is not None:
            flags |= 0x40
        if username is not None:
            flags |= 0x80
    body = encode_string(proto_name) + bytes([proto_level, flags]) + struct.pack("!H", keepalive)
    body += encode_string(client_id)
    if will_topic is not None:
        body += encode_string(will_topic) + encode_binary(will_payload)
    if username is not None:
        body += encode_string(username)
    if password is not None:
        body += encode_binary(password)
    return packet(CONNECT, header_flags, body)


def publish(topic, payload=b"", qos=0, retain=False, dup=False, packet_id=None, flags=None):
    """A PUBLISH packet; packet_id is included when qos > 0 (default 1) or when given."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    if flags is None:
        flags = (0x08 if dup else 0) | ((qos & 0x03) << 1) | (0x01 if retain else 0)
    body = encode_string(topic)
    if packet_id is None and qos > 0:
        packet_id = 1
    if packet_id is not None and qos > 0:
        body += struct.pack("!H", packet_id)
    return packet(PUBLISH, flags, body + payload)


def _ack(ptype, packet_id, flags):
    return packet(ptype, flags, struct.pack("!H", packet_id))


def puback(packet_id, flags=0):
    return _ack(PUBACK, packet_id, flags)


def pubrec(packet_id, flags=0):
    return _ack(PUBREC, packet_id, flags)


def pubrel(packet_id, flags=2):
    return _ack(PUBREL, packet_id, flags)


def pubcomp(packet_id, flags=0):
    return _ack(PUBCOMP, packet_id, flags)


def subscribe(packet_id, filters, flags=2):
    """filters: a list of (topic_filter, requested_qos_byte) pairs, or a single filter."""
    if isinstance(filters, (str, bytes)):
        filters = [(filters, 0)]
    body = struct.pack("!H", packet_id)
    for flt, qos in filters:
        body += encode_string(flt) + bytes([qos])
    return packet(SUBSCRIBE, flags, body)


def unsubscribe(packet_id, filters, flags=2):
    if isinstance(filters, (str, bytes)):
        filters = [filters]
    body = struct.pack("!H", packet_id)
    for flt in filters:
        body += encode_string(flt)
    return packet(UNSUBSCRIBE, flags, body)


def pingreq(flags=0):
    return packet(PINGREQ, flags)


def disconnect(flags=0):
    return packet(DISCONNECT, flags)


# -- decoding ---------------------------------------------------------------------------
class Packet:
    """One received control packet, with the fields of its type parsed."""

    def __init__(self, first_byte, body):
        self.type = first_byte >> 4
        self.flags = first_byte & 0x0F
        self.body = body
        self.packet_id = None
        if self.type == PUBLISH:
            self.dup = bool(self.flags & 0x08)
            self.qos = (self.flags >> 1) & 0x03
            self.retain = bool(self.flags & 0x01)
            (tlen,) = struct.unpack("!H", body[:2])
            self.topic_bytes = body[2:2 + tlen]
            self.topic = self.topic_bytes.decode("utf-8", errors="replace")
            pos = 2 + tlen
            if self.qos > 0:
                (self.packet_id,) = struct.unpack("!H", body[pos:pos + 2])
                pos += 2
            self.payload = body[pos:]
        elif self.type == CONNACK:
            self.session_present = bool(body[0] & 0x01) if body else None
            self.return_code = body[1] if len(body) > 1 else None
        elif self.type in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, SUBACK):
            if len(body) >= 2:
                (self.packet_id,) = struct.unpack("!H", body[:2])
            if self.type == SUBACK:
                self.granted = list(body[2:])

    @property
    def name(self):
        return NAMES.get(self.type, f"type{self.type}")

    def __repr__(self):
        if self.type == PUBLISH:
            return (f"<PUBLISH topic={self.topic!r} qos={self.qos} retain={self.retain} "
                    f"dup={self.dup} id={self.packet_id} payload={self.payload[:40]!r}"
                    f"{'...' if len(self.payload) > 40 else ''} ({len(self.payload)} B)>")
        if self.type == CONNACK:
            return f"<CONNACK sp={self.session_present} rc={self.return_code}>"
        if self.type == SUBACK:
            return f"<SUBACK id={self.packet_id} granted={self.granted}>"
        if self.packet_id is not None:
            return f"<{self.name} id={self.packet_id} flags={self.flags:#x}>"
        return f"<{self.name} flags={self.flags:#x} body={self.body!r}>"


class ConnectionClosed(Exception):
    pass


class NoPacket(Exception):
    """No packet arrived within the timeout."""


class RawClient:
    """A TCP connection speaking hand-built MQTT."""

    def __init__(self, port, host="127.0.0.1", timeout=DEFAULT_TIMEOUT):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.connect((host, port))
        self.buf = b""
        self.eof = False
        self.timeout = timeout
        self.pending = []  # packets read ahead (e.g. PUBLISHes before a SUBACK)
        self.discarded = []

    # -- sending ----------------------------------------------------------------------
    def send(self, data):
        self.sock.sendall(data)

    def try_send(self, data):
        """Sends; returns False if the peer has already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            return False

    def send_slowly(self, data, delay=0.002):
        """Sends one byte per TCP segment (TCP_NODELAY + a short pause)."""
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            time.sleep(delay)

    # -- receiving --------------------------------------------------------------------
    def _fill(self, n, deadline):
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoPacket(f"no complete packet in time ({len(self.buf)} bytes buffered)")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise NoPacket(f"no complete packet in time ({len(self.buf)} bytes buffered)")
            except (ConnectionResetError, ConnectionAbortedError) as e:
                self.eof = True
                raise ConnectionClosed(f"connection reset: {e}")
            if not chunk:
                self.eof = True
                raise ConnectionClosed(f"connection closed ({len(self.buf)} bytes buffered)")
            self.buf += chunk

    def read_packet(self, timeout=None):
        """Reads one whole packet; raises NoPacket on timeout, ConnectionClosed on EOF."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._fill(2, deadline)
        length = 0
        mult = 1
        pos = 1
        while True:
            self._fill(pos + 1, deadline)
            byte = self.buf[pos]
            length += (byte & 0x7F) * mult
            mult *= 128
            pos += 1
            if not byte & 0x80:
                break
            if pos > 4:
                raise ValueError("remaining length longer than 4 bytes from the broker")
        self._fill(pos + length, deadline)
        first = self.buf[0]
        body = self.buf[pos:pos + length]
        self.buf = self.buf[pos + length:]
        return Packet(first, body)

    def expect(self, ptype, timeout=None):
        """Reads one packet and checks its type."""
        p = self.read_packet(timeout)
        if p.type != ptype:
            raise AssertionError(f"expected {NAMES[ptype]}, got {p!r}")
        return p

    def read_all(self, timeout=0.5, first=None):
        """Reads packets until none arrives for `timeout` seconds (or the peer closes).
        `first`: wait that long for the first packet (when at least one is expected)."""
        out = []
        while True:
            try:
                out.append(self.read_packet(first if (first and not out) else timeout))
            except (NoPacket, ConnectionClosed):
                return out

    def closed_by_peer(self, timeout=DEFAULT_TIMEOUT):
        """True if the peer closes (EOF or reset) within timeout. Packets that arrive in
        between are read and kept in self.discarded."""
        self.discarded = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.discarded.append(self.read_packet(max(0.0, deadline - time.monotonic())))
            except ConnectionClosed:
                return True
            except NoPacket:
                return False

    # -- conveniences -----------------------------------------------------------------
    def connect(self, client_id="", clean=True, keepalive=60, timeout=None, **kw):
        """Sends CONNECT and returns the CONNACK packet (whatever its return code)."""
        self.send(connect(client_id, clean=clean, keepalive=keepalive, **kw))
        return self.expect(CONNACK, timeout)

    def subscribe(self, filters, packet_id=1, timeout=None):
        """Sends SUBSCRIBE; returns the SUBACK's granted list. PUBLISHes (e.g. retained
        messages) that arrive before the SUBACK are kept in self.pending."""
        self.send(subscribe(packet_id, filters))
        while True:
            p = self.read_packet(timeout)
            if p.type == SUBACK:
                if p.packet_id != packet_id:
                    raise AssertionError(f"SUBACK id {p.packet_id} != {packet_id}")
                return p.granted
            self.pending.append(p)

    def next_packet(self, timeout=None):
        """The next packet, first from self.pending (filled by subscribe())."""
        if self.pending:
            return self.pending.pop(0)
        return self.read_packet(timeout)

    def next_publish(self, timeout=None, ack=True):
        """Waits for the next PUBLISH (skipping nothing else: any other packet fails).
        With ack=True completes QoS 1 (PUBACK) and QoS 2 (PUBREC, PUBREL, PUBCOMP)."""
        p = self.next_packet(timeout)
        if p.type != PUBLISH:
            raise AssertionError(f"expected PUBLISH, got {p!r}")
        if ack:
            self.ack(p)
        return p

    def ack(self, p, timeout=None):
        if p.qos == 1:
            self.send(puback(p.packet_id))
        elif p.qos == 2:
            self.send(pubrec(p.packet_id))
            rel = self._expect_skipping_publishes(PUBREL, timeout)
            if rel.packet_id != p.packet_id:
                raise AssertionError(f"expected PUBREL {p.packet_id}, got {rel!r}")
            if rel.flags != 0x02:
                raise AssertionError(f"PUBREL with flags {rel.flags:#x} (must be 0x2)")
            self.send(pubcomp(p.packet_id))

    def publish(self, topic, payload=b"", qos=0, retain=False, packet_id=1, timeout=None):
        """Publishes and completes the QoS flow as the sender."""
        self.send(publish(topic, payload, qos=qos, retain=retain,
                          packet_id=packet_id if qos else None))
        if qos == 1:
            p = self._expect_skipping_publishes(PUBACK, timeout)
            assert p.packet_id == packet_id, p
        elif qos == 2:
            p = self._expect_skipping_publishes(PUBREC, timeout)
            assert p.packet_id == packet_id, p
            self.send(pubrel(packet_id))
            p = self._expect_skipping_publishes(PUBCOMP, timeout)
            assert p.packet_id == packet_id, p

    def _expect_skipping_publishes(self, ptype, timeout):
        while True:
            p = self.read_packet(timeout)
            if p.type == ptype:
                return p
            if p.type == PUBLISH:
                self.pending.append(p)
                continue
            raise AssertionError(f"expected {NAMES[ptype]}, got {p!r}")

    def ping(self, timeout=None):
        self.send(pingreq())
        return self.expect(PINGRESP, timeout)

    def disconnect(self):
        self.try_send(disconnect())
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# -- MQTT 5.0 ---------------------------------------------------------------------------
AUTH = 15
NAMES[AUTH] = "AUTH"

# Property identifiers (MQTT 5.0, 2.2.2.2) and their value types.
PROP_TYPES = {
    0x01: "byte", 0x02: "u32", 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "varint",
    0x11: "u32", 0x12: "str", 0x13: "u16", 0x15: "str", 0x16: "bin", 0x17: "byte",
    0x18: "u32", 0x19: "byte", 0x1A: "str", 0x1C: "str", 0x1F: "str", 0x21: "u16",
    0x22: "u16", 0x23: "u16", 0x24: "byte", 0x25: "byte", 0x26: "pair", 0x27: "u32",
    0x28: "byte", 0x29: "byte", 0x2A: "byte",
}
PAYLOAD_FORMAT = 0x01
MESSAGE_EXPIRY = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_ID = 0x0B
SESSION_EXPIRY = 0x11
ASSIGNED_CLIENT_ID = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTH_METHOD = 0x15
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_AVAILABLE = 0x28
SUBSCRIPTION_ID_AVAILABLE = 0x29
SHARED_AVAILABLE = 0x2A


def encode_varint(n):
    return encode_remaining_length(n)


def encode_properties(props=None):
    """props: a list of (identifier, value) pairs, in the order to send them (user
    properties as (0x26, (key, value))). Returns the block with its length."""
    body = b""
    for pid, value in props or []:
        kind = PROP_TYPES[pid]
        body += encode_varint(pid)
        if kind == "byte":
            body += bytes([value])
        elif kind == "u16":
            body += struct.pack("!H", value)
        elif kind == "u32":
            body += struct.pack("!I", value)
        elif kind == "varint":
            body += encode_varint(value)
        elif kind == "str":
            body += encode_string(value)
        elif kind == "bin":
            body += encode_binary(value)
        else:
            body += encode_string(value[0]) + encode_string(value[1])
    return encode_varint(len(body)) + body


def decode_varint(data, pos):
    value, mult = 0, 1
    while True:
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) * mult
        mult *= 128
        if not byte & 0x80:
            return value, pos


def decode_properties(data, pos):
    """Returns (list of (identifier, value) in order, position after the block)."""
    length, pos = decode_varint(data, pos)
    end = pos + length
    out = []
    while pos < end:
        pid, pos = decode_varint(data, pos)
        kind = PROP_TYPES[pid]
        if kind == "byte":
            value = data[pos]
            pos += 1
        elif kind == "u16":
            (value,) = struct.unpack("!H", data[pos:pos + 2])
            pos += 2
        elif kind == "u32":
            (value,) = struct.unpack("!I", data[pos:pos + 4])
            pos += 4
        elif kind == "varint":
            value, pos = decode_varint(data, pos)
        elif kind in ("str", "bin"):
            (n,) = struct.unpack("!H", data[pos:pos + 2])
            value = bytes(data[pos + 2:pos + 2 + n])
            if kind == "str":
                value = value.decode("utf-8")
            pos += 2 + n
        else:
            (n,) = struct.unpack("!H", data[pos:pos + 2])
            k = bytes(data[pos + 2:pos + 2 + n]).decode()
            pos += 2 + n
            (n,) = struct.unpack("!H", data[pos:pos + 2])
            v = bytes(data[pos + 2:pos + 2 + n]).decode()
            pos += 2 + n
            value = (k, v)
        out.append((pid, value))
    return out, end


def connect5(client_id="", clean_start=True, keepalive=60, props=None, will_topic=None,
             will_payload=b"", will_qos=0, will_retain=False, will_props=None, username=None,
             password=None):
    flags = (0x02 if clean_start else 0)
    if will_topic is not None:
        flags |= 0x04 | ((will_qos & 3) << 3) | (0x20 if will_retain else 0)
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    body = encode_string("MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive)
    body += encode_properties(props) + encode_string(client_id)
    if will_topic is not None:
        body += encode_properties(will_props) + encode_string(will_topic)
        body += encode_binary(will_payload)
    if username is not None:
        body += encode_string(username)
    if password is not None:
        body += encode_binary(password)
    return packet(CONNECT, 0, body)


def publish5(topic, payload=b"", qos=0, retain=False, dup=False, packet_id=1, props=None):
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    flags = (0x08 if dup else 0) | ((qos & 0x03) << 1) | (0x01 if retain else 0)
    body = encode_string(topic)
    if qos > 0:
        body += struct.pack("!H", packet_id)
    return packet(PUBLISH, flags, body + encode_properties(props) + payload)


def subscribe5(packet_id, filters, props=None):
    """filters: (filter, qos, no_local, retain_as_published, retain_handling) tuples, or
    (filter, qos) pairs."""
    body = struct.pack("!H", packet_id) + encode_properties(props)
    for f in filters:
        flt, qos, nl, rap, rh = (tuple(f) + (False, False, 0))[:5]
        body += encode_string(flt) + bytes([qos | (4 if nl else 0) | (8 if rap else 0) | (rh << 4)])
    return packet(SUBSCRIBE, 2, body)


def unsubscribe5(packet_id, filters, props=None):
    body = struct.pack("!H", packet_id) + encode_properties(props)
    for flt in filters:
        body += encode_string(flt)
    return packet(UNSUBSCRIBE, 2, body)


def ack5(ptype, packet_id, reason=0):
    return packet(ptype, 2 if ptype == PUBREL else 0, struct.pack("!HB", packet_id, reason) + b"\x00")


def disconnect5(reason=0, props=None):
    return packet(DISCONNECT, 0, bytes([reason]) + encode_properties(props))


def parse5(p):
    """Adds the MQTT 5.0 fields to a Packet read from a 5.0 connection: `props` (list of
    (identifier, value)), `reason` (CONNACK, acks, DISCONNECT), `codes` (SUBACK,
    UNSUBACK), and for PUBLISH the payload after the properties. Returns p."""
    b = p.body
    p.props = []
    p.reason = 0
    if p.type == CONNACK:
        p.reason = b[1]
        p.props, _ = decode_properties(b, 2)
    elif p.type == PUBLISH:
        (tlen,) = struct.unpack("!H", b[:2])
        pos = 2 + tlen + (2 if p.qos > 0 else 0)
        p.props, pos = decode_properties(b, pos)
        p.payload = b[pos:]
    elif p.type in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        if len(b) > 2:
            p.reason = b[2]
        if len(b) > 3:
            p.props, _ = decode_properties(b, 3)
    elif p.type in (SUBACK, UNSUBACK):
        p.props, pos = decode_properties(b, 2)
        p.codes = list(b[pos:])
    elif p.type in (DISCONNECT, AUTH):
        if b:
            p.reason = b[0]
        if len(b) > 1:
            p.props, _ = decode_properties(b, 1)
    return p


def prop(p, pid, default=None):
    """The first value of property `pid` of a parse5()d packet."""
    for k, v in p.props:
        if k == pid:
            return v
    return default


class RawClient5(RawClient):
    """A raw connection speaking MQTT 5.0: packets read are parse5()d."""

    def read_packet(self, timeout=None):
        return parse5(super().read_packet(timeout))

    def connect(self, client_id="", clean_start=True, keepalive=60, timeout=None, **kw):
        self.send(connect5(client_id, clean_start=clean_start, keepalive=keepalive, **kw))
        return self.expect(CONNACK, timeout)

    def subscribe(self, filters, packet_id=1, timeout=None, props=None):
        """Returns the SUBACK's reason codes (PUBLISHes before it go to self.pending)."""
        self.send(subscribe5(packet_id, filters, props))
        while True:
            p = self.read_packet(timeout)
            if p.type == SUBACK:
                return p.codes
            self.pending.append(p)

    def publish(self, topic, payload=b"", qos=0, retain=False, packet_id=1, timeout=None,
                props=None):
        """Publishes; returns the PUBACK/PUBREC reason code (None for QoS 0)."""
        self.send(publish5(topic, payload, qos, retain, packet_id=packet_id, props=props))
        if qos == 0:
            return None
        ack = self._expect_skipping_publishes(PUBACK if qos == 1 else PUBREC, timeout)
        if qos == 2 and ack.reason < 0x80:
            self.send(ack5(PUBREL, packet_id))
            self._expect_skipping_publishes(PUBCOMP, timeout)
        return ack.reason
