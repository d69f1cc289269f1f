"""A fake of the broker's provisioning service (docs/provisioning.md), for testing
device_enroll and the stock-tools path before (and beside) mqgate's `provision` plugin.

A paho-mqtt client subscribed to `$provision/+/csr` and `$provision/+/renew` on any
broker that routes `$provision/...` between clients (Mosquitto does). It signs each CSR
with `openssl x509 -req` as the issuing CA, giving the certificate the device URI, and
replies per the protocol: to the response topic with the correlation data (MQTT 5), else
to `$provision/<id>/reply`. What it does is chosen by the device id, so a test needs no
side channel:

    refuse-*    replies "refused: id-not-allowed: ..." (status/reason user properties)
    silent-*    never replies
    wrongkey-*  issues a certificate for another key
    badca-*     issues a certificate signed by `stranger` (not under the device's root)
    otherid-*   issues a certificate naming another device
    decoy-*     first replies with other correlation data and a certificate for another
                key (to be ignored), then issues
    anything else: issued, leaf + issuing CA
"""
import os
import ssl
import subprocess
import tempfile
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

OPENSSL = "/usr/bin/openssl"

_LEAF_EXT = """[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:spiffe://{domain}/device/{id}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


class ProvisionFake:
    def __init__(self, port, ca_file, creds, issuing, domain, stranger=None, host="localhost"):
        """`creds` (key, chain) log this client in; `issuing` (key, cert) signs;
        `stranger` (key, cert) signs for badca-* devices."""
        self.issuing, self.stranger, self.domain = issuing, stranger, domain
        self.work = tempfile.mkdtemp(prefix="mqgate-provision-fake-")
        self.requests = []  # (topic, properties) of every request seen
        self.subscribed = threading.Event()
        self.client = mqtt.Client(client_id="provision-fake", protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=ca_file, certfile=creds.chain or creds.cert,
                            keyfile=creds.key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a, **k: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not self.subscribed.wait(15):
            self.stop()
            raise AssertionError("the provisioning fake could not subscribe")

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()
        subprocess.run(["rm", "-rf", self.work])

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        client.subscribe([("$provision/+/csr", 1), ("$provision/+/renew", 1)])

    def _on_message(self, client, userdata, msg):
        device_id = msg.topic.split("/")[1]
        props = getattr(msg, "properties", None)
        self.requests.append((msg.topic, props))
        response_topic = getattr(props, "ResponseTopic", None) or f"$provision/{device_id}/reply"
        reply = Properties(PacketTypes.PUBLISH)
        correlation = getattr(props, "CorrelationData", None)
        if correlation is not None:
            reply.CorrelationData = correlation
        if device_id.startswith("silent-"):
            return
        if device_id.startswith("refuse-"):
            reply.UserProperty = [("status", "refused"), ("reason", "id-not-allowed")]
            payload = f"refused: id-not-allowed: device '{device_id}' is not on the allow-list"
        else:
            csr = msg.payload
            if device_id.startswith("wrongkey-"):
                csr = self._other_csr(device_id)
            signer = self.stranger if device_id.startswith("badca-") else self.issuing
            named = "someone-else" if device_id.startswith("otherid-") else device_id
            if device_id.startswith("decoy-") and correlation is not None:
                decoy = Properties(PacketTypes.PUBLISH)
                decoy.CorrelationData = b"not yours"
                leaf, _ = self._sign(device_id, self._other_csr(device_id), signer)
                client.publish(response_topic, leaf + _read(signer.cert), qos=1,
                               properties=decoy)
            leaf, error = self._sign(named, csr, signer)
            if leaf:
                payload = leaf + _read(signer.cert)
                reply.ContentType = "application/pem-certificate-chain"
                reply.UserProperty = [("status", "issued")]
            else:
                payload = f"refused: bad-csr: {error}"
                reply.UserProperty = [("status", "refused"), ("reason", "bad-csr")]
        client.publish(response_topic, payload, qos=1, properties=reply)

    def _sign(self, device_id, csr, signer):
        csr_path = os.path.join(self.work, device_id + ".csr")
        with open(csr_path, "wb") as f:
            f.write(csr)
        ext = os.path.join(self.work, device_id + ".ext")
        with open(ext, "w") as f:
            f.write(_LEAF_EXT.format(domain=self.domain, id=device_id))
        p = subprocess.run([OPENSSL, "x509", "-req", "-in", csr_path, "-CA", signer.cert,
                            "-CAkey", signer.key, "-set_serial", "0x" + os.urandom(16).hex(),
                            "-days", "30", "-sha256", "-extfile", ext, "-extensions", "ext"],
                           capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            return None, p.stderr.strip()[:200]
        return p.stdout, None

    def _other_csr(self, device_id):
        key = os.path.join(self.work, device_id + ".other.key")
        return subprocess.run([OPENSSL, "req", "-new", "-newkey", "ec", "-pkeyopt",
                               "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-subj",
                               f"/CN={device_id}"], capture_output=True, timeout=30,
                              check=True).stdout


def _read(path):
    with open(path) as f:
        return f.read()
