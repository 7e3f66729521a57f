// kafkajs against the dev broker (which has no consumer groups: offsets and kcat read back what it produced):
// with its own TCP sockets (no package from js/) through kafka-websocket-proxy with default settings, and
// with the package through the gateway's bootstrap path to the broker's TCP listener.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { Kafka, logLevel, Proc, binary, socketFactory, startGateway } from './support.mjs';

const procs = [];
after(async () => {
  for (const p of procs.reverse()) await p.stop();
});

function kafka(brokers, options = {}, logs = []) {
  return new Kafka({
    clientId: 'kws-js-devbroker',
    brokers,
    connectionTimeout: 5000,
    retry: { retries: 2, initialRetryTime: 100 },
    logLevel: logLevel.ERROR,
    logCreator: () => ({ log }) => logs.push(log.message),
    ...options,
  });
}

// Produces 200 messages to `dev` (2 partitions); checks the offsets, and that kcat at `kcatBootstrap` reads them.
async function produceAndCheck(k, kcatBootstrap, logs) {
  const producer = k.producer();
  await producer.connect();
  const n = 200;
  const messages = Array.from({ length: n }, (_, i) => ({ value: `kafkajs ${i}`, partition: i % 2 }));
  await producer.send({ topic: 'dev', messages });
  await producer.disconnect();

  const admin = k.admin();
  await admin.connect();
  const offsets = await admin.fetchTopicOffsets('dev');
  await admin.disconnect();
  assert.equal(offsets.reduce((sum, o) => sum + Number(o.high), 0), n, logs.join('\n'));

  const { stdout } = await promisify(execFile)(
    binary('KWS_KCAT'), ['-b', kcatBootstrap, '-C', '-t', 'dev', '-o', 'beginning', '-e', '-q', '-f', '%s\n'],
    { timeout: 20000 });
  const values = stdout.split('\n').filter(Boolean).sort();
  assert.deepEqual(values, messages.map((m) => m.value).sort());
}

test('kafkajs produces through the proxy; offsets and kcat agree', async () => {
  const broker = new Proc([binary('KWS_DEVBROKER'), '--listen', '127.0.0.1:0', '--topic', 'dev:2']);
  procs.push(broker);
  const wsPort = await broker.waitFor(/listening ws=127\.0\.0\.1:(\d+)/);
  const proxy = new Proc([binary('KWS_PROXY'), '--listen', '127.0.0.1', '--port', '0', '--broker', `127.0.0.1:${wsPort}`]);
  procs.push(proxy);
  const port = await proxy.waitFor(/listening on 127\.0\.0\.1:(\d+)/);
  const logs = [];
  await produceAndCheck(kafka([`127.0.0.1:${port}`], {}, logs), `127.0.0.1:${port}`, logs);
});

test('kafkajs with the package through the gateway to the dev broker', async () => {
  const broker = new Proc([binary('KWS_DEVBROKER'), '--listen', '127.0.0.1:0', '--tcp-listen', '127.0.0.1:0',
    '--topic', 'dev:2']);
  procs.push(broker);
  const tcpPort = await broker.waitFor(/tcp=127\.0\.0\.1:(\d+)/);
  const gateway = await startGateway(`127.0.0.1:${tcpPort}`);
  procs.push(gateway);
  const logs = [];
  // One broker, advertised at the gateway's address: every connection takes the bootstrap path.
  const k = kafka([`127.0.0.1:${gateway.port}`], { socketFactory: socketFactory({ url: 'ws://{host}:{port}/kafka' }) }, logs);
  await produceAndCheck(k, `127.0.0.1:${tcpPort}`, logs);
  await gateway.waitForEvent({ event: 'open', target: '/kafka' });
});
