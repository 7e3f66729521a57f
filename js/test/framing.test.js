// The socket's framing, errors and backpressure against a scripted WebSocket, and the URL and token helpers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';

import { socketFactory, brokerUrl, bearerProtocol, FrameSplitter } from '../index.js';

// A WebSocket with the browser's interface whose other end is this test.
class ScriptedWebSocket {
  static last;
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.bufferedAmount = 0;
    this.sent = [];
    this.closedWith = undefined;
    ScriptedWebSocket.last = this;
  }
  send(data) {
    this.sent.push(Buffer.from(data));
  }
  close(code) {
    this.closedWith = code ?? 1005;
    this.readyState = 3;
  }
  // The other end:
  opens() {
    this.readyState = 1;
    this.onopen();
  }
  receives(data) {
    this.onmessage({ data });
  }
  closes(code = 1000) {
    this.readyState = 3;
    this.onclose({ code });
  }
}

function frame(body) {
  const out = Buffer.alloc(4 + body.length);
  out.writeInt32BE(body.length, 0);
  Buffer.from(body).copy(out, 4);
  return out;
}

function open(options = {}) {
  let connected = false;
  const socket = socketFactory({ url: 'ws://gw/kafka/{node_id}', WebSocket: ScriptedWebSocket, ...options })({
    host: 'kafka-3.gw.invalid',
    port: 443,
    onConnect: () => (connected = true),
  });
  const ws = ScriptedWebSocket.last;
  ws.opens();
  assert.ok(connected);
  return { socket, ws };
}

test('a frame written in pieces goes out as one binary message once complete', () => {
  const { socket, ws } = open();
  const f = frame('hello kafka');
  socket.write(f.subarray(0, 2), 'binary');
  socket.write(f.subarray(2, 7), 'binary');
  assert.equal(ws.sent.length, 0);
  socket.write(f.subarray(7), 'binary');
  assert.deepEqual(ws.sent, [f]);
});

test('frames written together go out as one message each', () => {
  const { socket, ws } = open();
  const a = frame('first'), b = frame(''), c = frame('third');
  socket.write(Buffer.concat([a, b, c.subarray(0, 5)]), 'binary');
  assert.deepEqual(ws.sent, [a, b]);
  socket.write(c.subarray(5), 'binary');
  assert.deepEqual(ws.sent, [a, b, c]);
});

test('a frame over the limit is an error on the socket, and nothing is sent', async () => {
  const { socket, ws } = open({ maxFrameBytes: 16 });
  const error = once(socket, 'error');
  socket.write(frame('x'.repeat(17)).subarray(0, 4), 'binary');
  const [e] = await error;
  assert.match(e.message, /17 bytes is over the limit of 16/);
  assert.equal(ws.sent.length, 0);
  assert.equal(ws.closedWith, 1002);
});

test('a text message is an error on the socket', async () => {
  const { socket, ws } = open();
  const error = once(socket, 'error');
  ws.receives('{"not":"kafka"}');
  const [e] = await error;
  assert.match(e.message, /text message/);
});

test('a binary message that is not exactly one frame is an error; one that is comes out as data', async () => {
  const { socket, ws } = open();
  const data = once(socket, 'data');
  ws.receives(frame('response').buffer);
  const [d] = await data;
  assert.ok(Buffer.isBuffer(d));
  assert.deepEqual(d, frame('response'));
  const error = once(socket, 'error');
  ws.receives(Buffer.concat([frame('a'), frame('b')]).buffer);
  const [e] = await error;
  assert.match(e.message, /malformed Kafka frame/);
});

test('a close from the other end is end; a close before open is an error', async () => {
  const { socket, ws } = open();
  const ended = once(socket, 'end');
  ws.closes();
  await ended;
  const s2 = socketFactory({ url: 'ws://gw/kafka', WebSocket: ScriptedWebSocket })({ host: 'h', port: 1, onConnect() {} });
  const error = once(s2, 'error');
  ScriptedWebSocket.last.closes(1006);
  const [e] = await error;
  assert.match(e.message, /closed before it opened/);
});

test('writes wait while bufferedAmount is over the bound, then drain', async () => {
  const { socket, ws } = open({ highWaterBytes: 100 });
  ws.bufferedAmount = 101;
  const done = [];
  assert.equal(socket.write(frame('a'), 'binary', () => done.push('a')), false);
  assert.equal(socket.write(frame('b'), 'binary', () => done.push('b')), false);
  assert.equal(ws.sent.length, 0);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(ws.sent.length, 0, 'sent while over the bound');
  assert.deepEqual(done, []);
  const drained = once(socket, 'drain');
  ws.bufferedAmount = 0;
  await drained;
  assert.deepEqual(ws.sent, [frame('a'), frame('b')]);
  assert.deepEqual(done, ['a', 'b']);
});

test('an idle timeout set by the client is a timeout event', async () => {
  const { socket } = open();
  const timedOut = once(socket, 'timeout');
  socket.setTimeout(10);
  await timedOut;
});

test('URLs come from templates (node id from the host, none for a bootstrap host) or functions', () => {
  const t = 'wss://gw.example.com/kafka/{node_id}';
  assert.equal(brokerUrl(t, { host: 'kafka-12.gw.example.com', port: 443 }), 'wss://gw.example.com/kafka/12');
  assert.equal(brokerUrl(t, { host: 'b2.localhost', port: 443 }), 'wss://gw.example.com/kafka/2');
  assert.equal(brokerUrl(t, { host: 'gw.example.com', port: 443 }), 'wss://gw.example.com/kafka');
  assert.equal(brokerUrl(t, { host: '127.0.0.1', port: 9092 }), 'wss://gw.example.com/kafka');
  assert.equal(brokerUrl('ws://{host}:{port}/', { host: 'h', port: 1 }), 'ws://h:1/');
  assert.equal(
    brokerUrl(({ host, port, nodeId }) => `ws://x/${host}/${port}/${nodeId}`, { host: 'k-4.x', port: 9 }),
    'ws://x/k-4.x/9/4',
  );
});

test('the token goes as the subprotocol bearer.<base64url>, next to kafka', () => {
  assert.equal(bearerProtocol('s3cret-token'), 'bearer.czNjcmV0LXRva2Vu');
  assert.equal(bearerProtocol('\u00fb\u00ff?'), 'bearer.' + Buffer.from('\u00fb\u00ff?').toString('base64url'));
  socketFactory({ url: 'ws://gw/', token: 'x>?', WebSocket: ScriptedWebSocket })({ host: 'h', port: 1, onConnect() {} });
  assert.deepEqual(ScriptedWebSocket.last.protocols, ['kafka', 'bearer.' + Buffer.from('x>?').toString('base64url')]);
});

test('the splitter refuses a negative size', () => {
  assert.throws(() => new FrameSplitter().push(Buffer.from([0xff, 0xff, 0xff, 0xff])), /negative size/);
});

test('end() closes the WebSocket with 1000 once queued frames are out', async () => {
  const { socket, ws } = open({ highWaterBytes: 0 });
  ws.bufferedAmount = 1;
  socket.write(frame('last'), 'binary');
  socket.end();
  assert.equal(ws.closedWith, undefined, 'closed with a frame still queued');
  ws.bufferedAmount = 0;
  await once(socket, 'drain');
  assert.deepEqual(ws.sent, [frame('last')]);
  assert.equal(ws.closedWith, 1000);
});
