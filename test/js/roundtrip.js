// MQTT.js (the npm `mqtt` package) against a broker, for the integration tests:
//   node roundtrip.js <url> [--ca f] [--cert f] [--key f] [--id client-id] [--big n]
// Connects, subscribes to a unique topic, publishes QoS 0, 1 and 2 messages (and one
// `--big`-byte message that spans many WebSocket frames), waits for all of them to come
// back, and prints one JSON line: {"ok":true,"received":[...]} or {"ok":false,"error":...}.
// Exits by itself within 20 s whatever happens.
"use strict";
const fs = require("fs");
const mqtt = require("mqtt");

const args = process.argv.slice(2);
const url = args.shift();
const opt = {};
for (let i = 0; i < args.length; i += 2) opt[args[i].replace(/^--/, "")] = args[i + 1];

function done(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(result.ok ? 0 : 1);
}
setTimeout(() => done({ ok: false, error: "timeout" }), 20000).unref();

const options = {
  clientId: opt.id || "mqttjs-" + process.pid,
  protocolVersion: 4,
  reconnectPeriod: 0,
  connectTimeout: 10000,
  rejectUnauthorized: true,
};
if (opt.ca) options.ca = fs.readFileSync(opt.ca);
if (opt.cert) options.cert = fs.readFileSync(opt.cert);
if (opt.key) options.key = fs.readFileSync(opt.key);

const client = mqtt.connect(url, options);
const topic = "mqttjs/" + options.clientId + "/t";
const big = Number(opt.big || 0);
const expected = ["qos0", "qos1", "qos2"];
if (big > 0) expected.push("big:" + big);
const received = [];

let finished = null;  // the result, once every message came back
// After DISCONNECT a broker may close the socket before the client's WebSocket close
// frame goes out (Mosquitto does): errors then are not the broker's.
client.on("error", (err) => {
  if (!finished) done({ ok: false, error: String(err && err.message ? err.message : err) });
});
client.on("close", () => {
  if (finished) done(finished);
  else done({ ok: false, error: "closed", received });
});
client.on("connect", () => {
  client.subscribe(topic, { qos: 2 }, (err) => {
    if (err) return done({ ok: false, error: "subscribe: " + err.message });
    client.publish(topic, "qos0", { qos: 0 });
    client.publish(topic, "qos1", { qos: 1 });
    client.publish(topic, "qos2", { qos: 2 });
    if (big > 0) client.publish(topic, Buffer.alloc(big, 0x61), { qos: 1 });
  });
});
client.on("message", (t, payload) => {
  const p = payload.length > 100 ? "big:" + payload.length : payload.toString();
  received.push(p);
  if (received.length === expected.length) {
    finished = { ok: expected.every((e) => received.includes(e)), received };
    client.end(false, () => done(finished));
  }
});
