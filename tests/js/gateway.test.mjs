// kafkajs in Node through kafka-websocket-gateway to librdkafka's mock cluster, with the package in js/ as its
// socketFactory: ws and wss, the token as a subprotocol, a wrong token, a message of 2 MiB.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { Kafka, logLevel, socketFactory, startMockCluster, startGateway, tempDir, makeCertificate, writeFile } from './support.mjs';

const TOKEN = 's3cret-token>?';
let tmp, mock, plain, secure, ca;

before(async () => {
  tmp = tempDir('kws-js-');
  mock = await startMockCluster(3, ['js:6', 'big:1', 'tls:2']);
  // Every broker at a name of its own: the package reads the node id for /kafka/{node_id} from it.
  const advertise = ['--advertise', 'kafka-{node_id}.gw.invalid:443'];
  plain = await startGateway(mock.bootstrap, advertise);
  const { cert, key } = makeCertificate(tmp.dir);
  ca = readFileSync(cert);
  writeFile(tmp.path('tokens'), `${TOKEN}\n`);
  secure = await startGateway(mock.bootstrap, [...advertise, '--tls-cert', cert, '--tls-key', key,
    '--auth-token-file', tmp.path('tokens')]);
});

after(async () => {
  for (const p of [plain, secure]) if (p) assert.equal((await p.stop()).code, 0, `${p.argv[0]} exit:\n${p.output}`);
  if (mock) {
    mock.child.stdin.end();
    await mock.stop();
  }
  tmp?.remove();
});

// Errors kafkajs logs, kept for the assertion messages instead of the console.
function kafka(options, logs = []) {
  return new Kafka({
    clientId: 'kws-js-test',
    brokers: ['bootstrap.gw.invalid:443'],
    connectionTimeout: 5000,
    retry: { retries: 2, initialRetryTime: 100 },
    logLevel: logLevel.ERROR,
    logCreator: () => ({ log }) => logs.push(`${log.message} ${log.error ?? ''}`),
    ...options,
  });
}

// Consumes `topic` from the start in a new group until `n` messages came; resolves with them.
async function consumeAll(k, topic, n, { ms = 30000, ...consumerOptions } = {}) {
  // Short fetch waits: disconnect() waits for the fetch under way.
  const consumer = k.consumer({ groupId: `g-${topic}-${Date.now()}`, maxWaitTimeInMs: 200, ...consumerOptions });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${got.length} of ${n} messages within ${ms} ms`)), ms);
      consumer
        .run({
          eachBatch: async ({ batch }) => {
            for (const m of batch.messages) got.push({ partition: batch.partition, key: m.key?.toString(), value: m.value });
            if (got.length >= n) {
              clearTimeout(timer);
              resolve();
            }
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return got;
}

test('10,000 messages produced and consumed in a group, from every partition of 6 on 3 brokers', async () => {
  const logs = [];
  const k = kafka({ socketFactory: socketFactory({ url: `ws://127.0.0.1:${plain.port}/kafka/{node_id}` }) }, logs);
  const producer = k.producer();
  await producer.connect();
  const n = 10000;
  for (let start = 0; start < n; start += 1000) {
    const messages = [];
    for (let i = start; i < start + 1000; ++i) messages.push({ key: `k${i}`, value: `message ${i}`, partition: i % 6 });
    await producer.send({ topic: 'js', messages });
  }
  await producer.disconnect();
  const got = await consumeAll(k, 'js', n);
  assert.equal(got.length, n, logs.join('\n'));
  assert.equal(new Set(got.map((m) => m.key)).size, n, 'each message once');
  const partitions = new Set(got.map((m) => m.partition));
  assert.deepEqual([...partitions].sort(), [0, 1, 2, 3, 4, 5]);
  for (const m of got) assert.equal(Number(m.key.slice(1)) % 6, m.partition);
  // Every broker was reached by its own path.
  for (const node of [1, 2, 3]) await plain.waitForEvent({ event: 'open', target: `/kafka/${node}` });
});

test('wss with the token as a subprotocol; the gateway answers kafka and never logs the token', async () => {
  const k = kafka({
    socketFactory: socketFactory({ url: `wss://localhost:${secure.port}/kafka/{node_id}`, token: TOKEN, wsOptions: { ca } }),
  });
  const producer = k.producer();
  await producer.connect();
  await producer.send({ topic: 'tls', messages: [{ value: 'over wss' }, { value: 'with a token' }] });
  await producer.disconnect();
  const got = await consumeAll(k, 'tls', 2);
  assert.deepEqual(got.map((m) => m.value.toString()).sort(), ['over wss', 'with a token']);
  assert.ok(!secure.output.includes('s3cret'), 'the token in the log');
  assert.ok(!secure.output.includes(Buffer.from(TOKEN).toString('base64url')), 'the token in the log');
});

test('a wrong token: refused with 401, and kafkajs says so', async () => {
  const logs = [];
  const k = kafka({
    socketFactory: socketFactory({ url: `wss://localhost:${secure.port}/kafka/{node_id}`, token: 'wrong', wsOptions: { ca } }),
    retry: { retries: 0 },
  }, logs);
  const producer = k.producer();
  await assert.rejects(producer.connect(), (e) => {
    assert.match(`${e.message} ${e.cause?.message ?? ''} ${logs.join(' ')}`, /401/);
    return true;
  });
  await secure.waitForEvent({ event: 'refused', status: 401, cause: 'the bearer token is not valid' });
  await producer.disconnect();
});

test('a 2 MiB message goes and comes back whole', async () => {
  const k = kafka({ socketFactory: socketFactory({ url: `ws://127.0.0.1:${plain.port}/kafka/{node_id}`, highWaterBytes: 64 * 1024 }) });
  const value = Buffer.alloc(2 * 1024 * 1024);
  for (let i = 0; i < value.length; ++i) value[i] = (i * 7919) & 0xff;
  const producer = k.producer();
  await producer.connect();
  await producer.send({ topic: 'big', messages: [{ key: 'big', value }] });
  await producer.disconnect();
  const got = await consumeAll(k, 'big', 1, { maxBytesPerPartition: 4 * 1024 * 1024, maxBytes: 8 * 1024 * 1024 });
  assert.equal(got[0].value.length, value.length);
  assert.ok(got[0].value.equals(value), 'the bytes differ');
});
