// MQTT.js over WebSocket (ws://127.0.0.1:PORT/mqtt) against Vireo, MQTT 3.1.1 and 5.0:
// subscribe, publish QoS 0/1/2 to itself, check what comes back. Usage: node mqttjs_ws.js PORT.
// Exits 0 when every check passed; every wait is bounded.
'use strict';
const mqtt = require('mqtt');

const PORT = Number(process.argv[2]);
const WAIT = 5000;

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), WAIT);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function run(protocolVersion) {
  const c = await within(mqtt.connectAsync(`ws://127.0.0.1:${PORT}/mqtt`, {
    clientId: `js-ws-${protocolVersion}`, protocolVersion, reconnectPeriod: 0, connectTimeout: WAIT,
  }), `CONNACK (${protocolVersion})`);
  const inbox = [];
  const arrived = new Promise((resolve) => {
    c.on('message', (topic, payload, packet) => {
      inbox.push({ topic, payload: payload.toString(), qos: packet.qos });
      if (inbox.length === 3) resolve();
    });
  });
  const granted = await within(c.subscribeAsync('js/ws/#', { qos: 2 }), 'SUBACK');
  if (granted[0].qos !== 2) throw new Error(`granted ${JSON.stringify(granted)}`);
  for (const qos of [0, 1, 2]) {
    await within(c.publishAsync(`js/ws/${qos}`, `m${qos}`, { qos }), `publish QoS ${qos}`);
  }
  await within(arrived, 'three messages');
  inbox.sort((a, b) => a.qos - b.qos);
  const want = [0, 1, 2].map((qos) => ({ topic: `js/ws/${qos}`, payload: `m${qos}`, qos }));
  if (JSON.stringify(inbox) !== JSON.stringify(want)) throw new Error(`got ${JSON.stringify(inbox)}`);
  await c.endAsync();
}

(async () => {
  await run(4);
  await run(5);
  console.log('ok');
})().catch((e) => { console.error(e); process.exit(1); });
