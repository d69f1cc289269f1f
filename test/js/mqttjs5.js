// MQTT.js with protocolVersion 5 against a broker, for test/integration/test_mqttjs5.py:
//   node mqttjs5.js <url> [--id prefix]
// Three MQTT.js 5 clients (a requester, a responder, a watcher) go through:
// - CONNECT with properties (session expiry, receive maximum, topic alias maximum, user
//   properties) and the CONNACK's reason code and properties;
// - SUBSCRIBE with subscription identifiers at QoS 2;
// - a request/response round trip: content type, response topic, correlation data, user
//   properties, message expiry and payload format carried to the responder, whose reply
//   goes to the response topic with the correlation data;
// - QoS 1 and 2 PUBLISHes with properties;
// - topic aliases set by MQTT.js (autoAssignTopicAlias, then autoUseTopicAlias):
//   the later PUBLISHes leave with an empty topic and arrive under the full topic.
// Prints one JSON line: {"ok":true,"checks":{...}} or {"ok":false,"error":...,"checks":{...}},
// where checks holds what was observed. Exits by itself within 20 s whatever happens.
"use strict";
const mqtt = require("mqtt");

const args = process.argv.slice(2);
const url = args.shift();
const opt = {};
for (let i = 0; i < args.length; i += 2) opt[args[i].replace(/^--/, "")] = args[i + 1];
const prefix = opt.id || "js5-" + process.pid;
const base = "mqttjs5/" + prefix;
const checks = {};
const clients = [];

function done(result) {
  result.checks = checks;
  process.stdout.write(JSON.stringify(result) + "\n");
  for (const c of clients) c.end(true);
  process.exit(result.ok ? 0 : 1);
}
setTimeout(() => done({ ok: false, error: "timeout" }), 20000).unref();

function fail(what) {
  done({ ok: false, error: what });
}

// Connects one client; resolves with its CONNACK.
function connect(name, extra) {
  return new Promise((resolve) => {
    const c = mqtt.connect(url, {
      clientId: prefix + "-" + name,
      protocolVersion: 5,
      reconnectPeriod: 0,
      connectTimeout: 10000,
      clean: true,
      ...extra,
    });
    clients.push(c);
    c.on("error", (err) => fail(name + ": " + (err && err.message ? err.message : err)));
    c.once("connect", (connack) => resolve({ client: c, connack }));
  });
}

function subscribe(c, filter, id) {
  return new Promise((resolve) => {
    c.subscribe(filter, { qos: 2, properties: { subscriptionIdentifier: id } }, (err, granted) => {
      if (err) return fail("subscribe " + filter + ": " + err.message);
      resolve(granted);
    });
  });
}

function publish(c, topic, payload, options) {
  return new Promise((resolve) => {
    c.publish(topic, payload, options, (err, packet) => {
      if (err) return fail("publish " + topic + ": " + err.message);
      resolve(packet);
    });
  });
}

// The next `n` messages `c` receives (topic, payload, packet).
function messages(c, n) {
  return new Promise((resolve) => {
    const got = [];
    const on = (topic, payload, packet) => {
      got.push({ topic, payload: payload.toString(), packet });
      if (got.length === n) {
        c.removeListener("message", on);
        resolve(got);
      }
    };
    c.on("message", on);
  });
}

function ids(packet) {
  const s = packet.properties && packet.properties.subscriptionIdentifier;
  return s === undefined ? [] : Array.isArray(s) ? s : [s];
}

async function main() {
  // CONNECT with properties; the CONNACK answers in 5.0.
  const req = await connect("req", {
    properties: {
      sessionExpiryInterval: 60,
      receiveMaximum: 10,
      topicAliasMaximum: 5,
      userProperties: { role: "requester", site: "lab" },
    },
  });
  checks.connack = {
    reasonCode: req.connack.reasonCode,
    topicAliasMaximum: (req.connack.properties || {}).topicAliasMaximum,
  };
  if (req.connack.reasonCode !== 0) return fail("CONNACK reason " + req.connack.reasonCode);
  const resp = await connect("resp", { properties: { receiveMaximum: 5 } });
  const watch = await connect("watch", { properties: { topicAliasMaximum: 3 } });

  // Subscriptions with identifiers.
  checks.granted = [
    ...(await subscribe(resp.client, base + "/req", 7)),
    ...(await subscribe(req.client, base + "/resp", 8)),
    ...(await subscribe(watch.client, base + "/qos/#", 9)),
  ].map((g) => g.qos);

  // Request / response.
  const reqArrives = messages(resp.client, 1);
  const respArrives = messages(req.client, 1);
  await publish(req.client, base + "/req", "ping?", {
    qos: 1,
    properties: {
      payloadFormatIndicator: true,
      messageExpiryInterval: 120,
      contentType: "text/plain",
      responseTopic: base + "/resp",
      correlationData: Buffer.from([0, 1, 2, 0xff]),
      userProperties: { trace: "t-1", dup: ["a", "b"] },
    },
  });
  const [request] = await reqArrives;
  const rp = request.packet.properties || {};
  checks.request = {
    payload: request.payload,
    qos: request.packet.qos,
    contentType: rp.contentType,
    responseTopic: rp.responseTopic,
    correlationData: rp.correlationData ? [...rp.correlationData] : null,
    userProperties: rp.userProperties,
    payloadFormatIndicator: rp.payloadFormatIndicator,
    messageExpiryInterval: rp.messageExpiryInterval,
    subscriptionIdentifiers: ids(request.packet),
  };
  await publish(resp.client, rp.responseTopic, "pong!", {
    qos: 1,
    properties: { correlationData: rp.correlationData },
  });
  const [response] = await respArrives;
  const sp = response.packet.properties || {};
  checks.response = {
    topic: response.topic,
    payload: response.payload,
    correlationData: sp.correlationData ? [...sp.correlationData] : null,
    subscriptionIdentifiers: ids(response.packet),
  };

  // QoS 1 and 2 with properties.
  const qosArrive = messages(watch.client, 2);
  await publish(req.client, base + "/qos/1", "one", {
    qos: 1,
    properties: { userProperties: { n: "1" } },
  });
  await publish(req.client, base + "/qos/2", "two", {
    qos: 2,
    properties: { contentType: "application/x-two" },
  });
  const qos = await qosArrive;
  checks.qos = qos.map((m) => ({
    topic: m.topic,
    payload: m.payload,
    qos: m.packet.qos,
    userProperties: (m.packet.properties || {}).userProperties,
    contentType: (m.packet.properties || {}).contentType,
    subscriptionIdentifiers: ids(m.packet),
  }));

  // Topic aliases from MQTT.js: autoAssignTopicAlias, then autoUseTopicAlias.
  const sent = [];
  for (const [name, option] of [
    ["assign", "autoAssignTopicAlias"],
    ["use", "autoUseTopicAlias"],
  ]) {
    const p = await connect("alias-" + name, { [option]: true });
    p.client.on("packetsend", (packet) => {
      if (packet.cmd === "publish")
        sent.push({
          client: name,
          topic: packet.topic.toString(),
          alias: (packet.properties || {}).topicAlias,
        });
    });
    const topic = base + "/qos/alias-" + name;
    const arrive = messages(watch.client, 3);
    // autoUseTopicAlias only uses an alias the application set once.
    const first = name === "use" ? { properties: { topicAlias: 2 } } : {};
    await publish(p.client, topic, name + "-1", { qos: 1, ...first });
    await publish(p.client, topic, name + "-2", { qos: 2 });
    await publish(p.client, topic, name + "-3", { qos: 0 });
    const got = await arrive;
    checks["alias_" + name] = got.map((m) => [m.topic, m.payload]);
  }
  checks.aliasSent = sent;

  done({ ok: true });
}

main().catch((e) => fail(String(e && e.stack ? e.stack : e)));
