// MQTT.js (the npm `mqtt` package) doing MQTT 5.0 enhanced authentication with
// SCRAM-SHA-256 (RFC 5802/7677) through its `handleAuth` hook, for the integration tests:
//   node scram.js <url> <user> <password>
// Connects with the client-first message in the CONNECT, answers the server-first from
// the broker's AUTH 0x18, checks the server signature in the CONNACK, then publishes a
// QoS 1 message to itself. Prints one JSON line: {"ok":true,...} or {"ok":false,"error":...}.
// Exits by itself within 20 s whatever happens.
"use strict";
const crypto = require("crypto");
const mqtt = require("mqtt");

const [url, user, password] = process.argv.slice(2);
const METHOD = "SCRAM-SHA-256";

function done(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(result.ok ? 0 : 1);
}
setTimeout(() => done({ ok: false, error: "timeout" }), 20000).unref();

const hmac = (key, text) => crypto.createHmac("sha256", key).update(text).digest();
const cnonce = crypto.randomBytes(18).toString("base64");
const bare = `n=${user},r=${cnonce}`;
let serverSignature = null;

const client = mqtt.connect(url, {
  clientId: "mqttjs-scram-" + process.pid,
  protocolVersion: 5,
  reconnectPeriod: 0,
  connectTimeout: 10000,
  properties: { authenticationMethod: METHOD, authenticationData: Buffer.from("n,," + bare) },
});

// The broker's AUTH 0x18 carries the server-first message: answer with the client-final.
client.handleAuth = (packet, callback) => {
  const serverFirst = packet.properties.authenticationData.toString();
  const attrs = Object.fromEntries(serverFirst.split(",").map((kv) => [kv[0], kv.slice(2)]));
  if (!attrs.r.startsWith(cnonce)) return callback(new Error("server nonce does not extend ours"));
  const salted = crypto.pbkdf2Sync(password, Buffer.from(attrs.s, "base64"), Number(attrs.i), 32,
                                   "sha256");
  const clientKey = hmac(salted, "Client Key");
  const storedKey = crypto.createHash("sha256").update(clientKey).digest();
  const withoutProof = `c=biws,r=${attrs.r}`;
  const authMessage = `${bare},${serverFirst},${withoutProof}`;
  const signature = hmac(storedKey, authMessage);
  const proof = Buffer.from(clientKey.map((b, i) => b ^ signature[i]));
  serverSignature = hmac(hmac(salted, "Server Key"), authMessage).toString("base64");
  callback(null, {
    cmd: "auth",
    reasonCode: 0x18,
    properties: {
      authenticationMethod: METHOD,
      authenticationData: Buffer.from(`${withoutProof},p=${proof.toString("base64")}`),
    },
  });
};

client.on("connect", (connack) => {
  const data = connack.properties && connack.properties.authenticationData;
  if (!data || data.toString() !== "v=" + serverSignature)
    return done({ ok: false, error: "CONNACK without the expected server signature" });
  const topic = "mqttjs/scram/" + process.pid;
  client.subscribe(topic, { qos: 1 }, (err) => {
    if (err) return done({ ok: false, error: "subscribe: " + err.message });
    client.publish(topic, "hello", { qos: 1 });
  });
  client.on("message", (t, payload) =>
    done({ ok: true, reasonCode: connack.reasonCode, received: payload.toString() }));
});
client.on("error", (err) => done({ ok: false, error: err.message, code: err.code }));
