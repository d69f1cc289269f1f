#!/usr/bin/python3
"""Writes a seed corpus of valid MQTT packets for the fuzz targets: mqtt_raw.py builds them."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import mqtt_raw as r  # noqa: E402


def seeds():
    connect = r.connect("fuzz", clean=True, keepalive=10)
    yield "connect", connect
    yield "connect_will", r.connect("w", will_topic="w/t", will_payload=b"bye", will_qos=1,
                                    will_retain=True, username="u", password=b"p")
    yield "connect31", r.connect("old", proto_name="MQIsdp", proto_level=3)
    yield "session", connect + r.subscribe(1, [("a/+", 1), ("#", 2)]) + r.publish(
        "a/b", b"x", qos=1, packet_id=2) + r.publish("a/c", b"y", qos=2, packet_id=3) + r.pubrel(3)
    yield "retain", connect + r.publish("r", b"kept", retain=True) + r.subscribe(4, [("r", 0)])
    yield "unsub", connect + r.subscribe(1, [("x", 0)]) + r.unsubscribe(2, ["x"]) + r.pingreq() + r.disconnect()
    # MQTT 5.0 packets (codec_fuzz, and raw sessions in broker_fuzz).
    connect5 = r.connect5("fuzz5", props=[(r.SESSION_EXPIRY, 10), (r.RECEIVE_MAXIMUM, 2),
                                          (r.TOPIC_ALIAS_MAXIMUM, 4), (r.USER_PROPERTY, ("k", "v"))])
    yield "connect5", connect5
    yield "connect5_will", r.connect5("w5", will_topic="w/t", will_payload=b"bye", will_qos=1,
                                      will_props=[(0x18, 1), (r.CONTENT_TYPE, "t")])  # Will Delay
    yield "session5", connect5 + r.subscribe5(1, [("a/+", 2, True, True, 1)],
                                              props=[(r.SUBSCRIPTION_ID, 7)]) + r.publish5(
        "a/b", b"x", qos=1, packet_id=2, props=[(r.TOPIC_ALIAS, 1), (r.RESPONSE_TOPIC, "r"),
                                                (r.CORRELATION_DATA, b"c"), (r.MESSAGE_EXPIRY, 5)]) \
        + r.publish5("", b"y", qos=2, packet_id=3, props=[(r.TOPIC_ALIAS, 1)]) \
        + r.ack5(r.PUBREL, 3) + r.ack5(r.PUBACK, 9, 0x80) + r.disconnect5(4, [(r.SESSION_EXPIRY, 0)])
    yield "auth5", connect5 + r.packet(r.AUTH, 0, bytes([0x18]) + r.encode_properties(
        [(r.AUTH_METHOD, "m")])) + r.unsubscribe5(4, ["a/+"])


def broker_scripts():
    """broker_fuzz chunks that start scripted 5.0 sessions (see broker_fuzz.cpp): a control
    byte for a 32-byte chunk on client 0, 1 or 2, then 0x05 and the script."""
    import random
    rng = random.Random(5)
    for n in range(6):
        data = b""
        for client in range(3):
            data += bytes([(31 << 3) | client, 0x05]) + bytes(rng.randrange(256) for _ in range(31))
            data += bytes([(31 << 3) | client]) + bytes(rng.randrange(256) for _ in range(32))
        yield f"script5_{n}", data


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, data in list(seeds()) + list(broker_scripts()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
