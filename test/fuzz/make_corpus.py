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


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, data in seeds():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
