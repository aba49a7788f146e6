// MQTT 5.0 against Vireo with MQTT.js (npm `mqtt`, installed by .ci/run), as a user would
// write it. Usage: node mqttjs_v5.js PORT. Exits 0 when every check passed. Every wait is
// bounded; nothing sleeps to synchronise.
'use strict';
const mqtt = require('mqtt');

const PORT = Number(process.argv[2]);
const WAIT = 5000;

function connect(clientId, extra = {}) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect({
      host: '127.0.0.1', port: PORT, protocolVersion: 5, clientId, reconnectPeriod: 0,
      connectTimeout: WAIT, ...extra,
    });
    c.inbox = [];
    c.waiters = [];
    c.on('message', (topic, payload, packet) => {
      // `topic` is what MQTT.js resolved (a Topic Alias included); `packet.topic` is the wire's.
      packet.resolved = topic;
      c.inbox.push(packet);
      c.waiters.splice(0).forEach((w) => w());
    });
    c.once('connect', (connack) => { c.connack = connack; resolve(c); });
    c.once('error', reject);
  });
}

function take(c, n, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT);
    const check = () => {
      if (c.inbox.length >= n) { clearTimeout(timer); resolve(c.inbox.splice(0, n)); } else { c.waiters.push(check); }
    };
    check();
  });
}

function check(cond, what) { if (!cond) throw new Error(what); }

async function main() {
  const sub = await connect('js-sub');
  const pub = await connect('js-pub');
  check(sub.connack.properties && sub.connack.properties.topicAliasMaximum > 0, 'Topic Alias Maximum');
  const granted = await sub.subscribeAsync('js/#', { qos: 2, properties: { subscriptionIdentifier: 7 } });
  check(granted[0].qos === 2, `granted ${JSON.stringify(granted)}`);
  for (const qos of [0, 1, 2]) {
    await pub.publishAsync(`js/${qos}`, `m${qos}`, {
      qos,
      properties: {
        responseTopic: 'js/reply', correlationData: Buffer.from([0, 255]),
        userProperties: { a: '1', b: ['2', '3'] }, contentType: 'text/plain',
        messageExpiryInterval: 30, payloadFormatIndicator: true,
      },
    });
    const [m] = await take(sub, 1, `QoS ${qos}`);
    check(m.qos === qos && m.payload.toString() === `m${qos}`, `message ${qos}`);
    const p = m.properties;
    check(p.responseTopic === 'js/reply', 'Response Topic');
    check(Buffer.compare(p.correlationData, Buffer.from([0, 255])) === 0, 'Correlation Data');
    check(p.userProperties.a === '1' && JSON.stringify(p.userProperties.b) === '["2","3"]', `User Properties ${JSON.stringify(p.userProperties)}`);
    check(p.contentType === 'text/plain' && p.messageExpiryInterval <= 30, 'Content Type / expiry');
    check(JSON.stringify(p.subscriptionIdentifier) === '7' || JSON.stringify(p.subscriptionIdentifier) === '[7]', `Subscription Identifier ${JSON.stringify(p.subscriptionIdentifier)}`);
  }
  // Shared subscription across two MQTT.js clients.
  const a = await connect('js-a');
  const b = await connect('js-b');
  await a.subscribeAsync('$share/g/jobs/+', { qos: 1 });
  await b.subscribeAsync('$share/g/jobs/+', { qos: 1 });
  for (let i = 0; i < 6; i++) await pub.publishAsync(`jobs/${i}`, String(i), { qos: 1 });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('shared messages')), WAIT);
    const done = () => {
      if (a.inbox.length + b.inbox.length >= 6) { clearTimeout(timer); resolve(); } else { a.waiters.push(done); b.waiters.push(done); }
    };
    done();
  });
  const got = a.inbox.concat(b.inbox).map((m) => Number(m.payload.toString())).sort();
  check(JSON.stringify(got) === '[0,1,2,3,4,5]' && a.inbox.length > 0 && b.inbox.length > 0, `shared ${got}`);
  // Topic aliases: MQTT.js assigns them itself when told to.
  const aliaser = await connect('js-alias', { properties: { topicAliasMaximum: 0 }, autoUseTopicAlias: true });
  await aliaser.publishAsync('js/alias', 'one', { qos: 1 });
  await aliaser.publishAsync('js/alias', 'two', { qos: 1 });
  const ms = await take(sub, 2, 'aliased messages');
  check(ms.every((m) => m.topic === 'js/alias'), 'alias topics');
  // Broker -> client topic aliases (this broker has them on): MQTT.js resolves them, so every
  // message arrives on its topic, and the repeats came by alias alone (the client allows 2:
  // `ja/z` goes out in full).
  const aliased = await connect('js-aliased', { properties: { topicAliasMaximum: 2 } });
  await aliased.subscribeAsync('ja/#', { qos: 1 });
  const order = ['ja/x', 'ja/y', 'ja/x', 'ja/z', 'ja/y', 'ja/x'];
  for (const [i, t] of order.entries()) await pub.publishAsync(t, String(i), { qos: i % 2 });
  const am = await take(aliased, order.length, 'messages by broker alias');
  check(JSON.stringify(am.map((m) => m.resolved)) === JSON.stringify(order), `aliased topics ${am.map((m) => m.resolved)}`);
  const wire = am.map((m) => m.topic);
  check(JSON.stringify(wire) === '["ja/x","ja/y","","ja/z","",""]', `topics on the wire ${wire}`);
  const aliases = am.map((m) => (m.properties && m.properties.topicAlias) || 0);
  check(JSON.stringify(aliases) === '[1,2,1,0,2,1]', `broker aliases ${aliases}`);
  // No matching subscribers: PUBACK 0x10 is not an error for MQTT.js.
  await pub.publishAsync('nobody/here', 'x', { qos: 1 });
  for (const c of [sub, pub, a, b, aliaser, aliased]) await c.endAsync();
  console.log('MQTT.js v5: all checks passed');
}

main().then(() => process.exit(0), (e) => { console.log(`MQTT.js v5 check failed: ${e.message}`); process.exit(1); });
