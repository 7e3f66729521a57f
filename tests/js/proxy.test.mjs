// kafkajs with its own TCP sockets (no package from js/) through kafka-websocket-proxy with default settings
// to the dev broker over WebSocket: produced messages are on the broker, and kcat reads them back.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { Kafka, logLevel, Proc, binary } from './support.mjs';

const procs = [];
after(async () => {
  for (const p of procs.reverse()) await p.stop();
});

test('kafkajs produces through the proxy; offsets and kcat agree', async () => {
  const broker = new Proc([binary('KWS_DEVBROKER'), '--listen', '127.0.0.1:0', '--topic', 'dev:2']);
  procs.push(broker);
  const wsPort = await broker.waitFor(/listening ws=127\.0\.0\.1:(\d+)/);
  const proxy = new Proc([binary('KWS_PROXY'), '--listen', '127.0.0.1', '--port', '0', '--broker', `127.0.0.1:${wsPort}`]);
  procs.push(proxy);
  const port = await proxy.waitFor(/listening on 127\.0\.0\.1:(\d+)/);

  const logs = [];
  const k = new Kafka({
    clientId: 'kws-js-proxy',
    brokers: [`127.0.0.1:${port}`],
    connectionTimeout: 5000,
    retry: { retries: 2, initialRetryTime: 100 },
    logLevel: logLevel.ERROR,
    logCreator: () => ({ log }) => logs.push(log.message),
  });
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
    binary('KWS_KCAT'), ['-b', `127.0.0.1:${port}`, '-C', '-t', 'dev', '-o', 'beginning', '-e', '-q', '-f', '%s\n'],
    { timeout: 20000 });
  const values = stdout.split('\n').filter(Boolean).sort();
  assert.deepEqual(values, messages.map((m) => m.value).sort());
});
