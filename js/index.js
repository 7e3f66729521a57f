// A kafkajs socketFactory whose sockets are WebSockets to kafka-websocket-gateway (or any server that carries
// one Kafka frame, size header included, per binary message). See index.d.ts for the options.

export const DEFAULT_MAX_FRAME_BYTES = 100 * 1024 * 1024;
export const DEFAULT_HIGH_WATER_BYTES = 1024 * 1024;

// kafka-2.gw.example.com, b2.localhost: digits at the end of the first label, after a letter. An IP
// address has none.
const NODE_ID_IN_HOST = /^[a-z][a-z0-9-]*?(\d+)(?:\.|$)/i;

function defaultNodeId(host) {
  const m = NODE_ID_IN_HOST.exec(host);
  return m ? Number(m[1]) : undefined;
}

/** The URL for one broker address, from a template or a function. */
export function brokerUrl(url, { host, port }, nodeIdOf = defaultNodeId) {
  if (typeof url === 'function') return url({ host, port, nodeId: nodeIdOf(host) });
  let template = url;
  if (template.includes('{node_id}')) {
    const id = nodeIdOf(host);
    // A host with no node id is a bootstrap server: the gateway's bootstrap path, /kafka for /kafka/{node_id}.
    template = id === undefined ? template.replace(/\/?\{node_id\}/g, '') : template.replaceAll('{node_id}', String(id));
  }
  return template.replaceAll('{host}', host).replaceAll('{port}', String(port));
}

/** The subprotocol that carries a bearer token: `bearer.` and the token's UTF-8 bytes in unpadded base64url. */
export function bearerProtocol(token) {
  const bytes = new TextEncoder().encode(token);
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return 'bearer.' + btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

// Splits a byte stream into Kafka frames (4-byte big-endian size, then that many bytes). Throws on a negative
// size or one above the limit.
export class FrameSplitter {
  constructor(maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {
    this.max = maxFrameBytes;
    this.chunks = [];
    this.length = 0;
  }

  /** Adds bytes; returns the frames now complete, each a Uint8Array with its size header. */
  push(bytes) {
    if (bytes.length > 0) {
      this.chunks.push(bytes);
      this.length += bytes.length;
    }
    const frames = [];
    for (;;) {
      if (this.length < 4) return frames;
      const head = this.peek(4);
      const size = new DataView(head.buffer, head.byteOffset, 4).getInt32(0);
      if (size < 0) throw new Error(`malformed Kafka frame: negative size ${size}`);
      if (size > this.max) throw new Error(`Kafka frame of ${size} bytes is over the limit of ${this.max}`);
      if (this.length < 4 + size) return frames;
      frames.push(this.take(4 + size));
    }
  }

  get pending() {
    return this.length;
  }

  peek(n) {
    if (this.chunks[0].length >= n) return this.chunks[0].subarray(0, n);
    const out = new Uint8Array(n);
    let at = 0;
    for (const c of this.chunks) {
      const part = c.subarray(0, n - at);
      out.set(part, at);
      at += part.length;
      if (at === n) break;
    }
    return out;
  }

  take(n) {
    const first = this.chunks[0];
    let out;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = new Uint8Array(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0];
        const part = c.subarray(0, n - at);
        out.set(part, at);
        at += part.length;
        if (part.length === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(part.length);
      }
    }
    this.length -= n;
    return out;
  }
}

// Checks that a received message is exactly one Kafka frame.
export function checkFrame(bytes, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {
  if (bytes.length < 4) throw new Error(`malformed Kafka frame: a message of ${bytes.length} bytes`);
  const size = new DataView(bytes.buffer, bytes.byteOffset, 4).getInt32(0);
  if (size < 0 || size + 4 !== bytes.length)
    throw new Error(`malformed Kafka frame: size header ${size} in a message of ${bytes.length} bytes`);
  if (size > maxFrameBytes) throw new Error(`Kafka frame of ${size} bytes is over the limit of ${maxFrameBytes}`);
}

// Just what kafkajs calls on a socket: on(), emit(); no dependency on Node's events module.
class Emitter {
  constructor() {
    this.listeners = new Map();
  }

  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, []);
    this.listeners.get(event).push(fn);
    return this;
  }

  once(event, fn) {
    const wrapped = (...args) => {
      this.off(event, wrapped);
      fn(...args);
    };
    return this.on(event, wrapped);
  }

  off(event, fn) {
    const list = this.listeners.get(event);
    if (list) this.listeners.set(event, list.filter((f) => f !== fn));
    return this;
  }

  removeListener(event, fn) {
    return this.off(event, fn);
  }

  emit(event, ...args) {
    const list = this.listeners.get(event);
    if (!list || list.length === 0) return false;
    for (const fn of [...list]) fn(...args);
    return true;
  }
}

function toBytes(data, encoding) {
  if (typeof data === 'string') {
    if (globalThis.Buffer) return globalThis.Buffer.from(data, encoding === 'binary' ? 'latin1' : encoding);
    return new TextEncoder().encode(data);
  }
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(data);
}

// What kafkajs's processData concatenates: a Buffer where there is one (Node, or a bundle's polyfill).
function received(arrayBuffer) {
  return globalThis.Buffer ? globalThis.Buffer.from(arrayBuffer) : new Uint8Array(arrayBuffer);
}

let wsModule;
async function loadWebSocket() {
  wsModule ??= import('ws').then((m) => m.WebSocket ?? m.default);
  return wsModule;
}

/**
 * A socket as kafkajs's Connection uses one (write, end, on data/end/error/timeout), over a WebSocket.
 */
export class WebSocketSocket extends Emitter {
  constructor({ url, protocols, WebSocketImpl, wsOptions, maxFrameBytes, highWaterBytes, onConnect }) {
    super();
    this.maxFrameBytes = maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.highWaterBytes = highWaterBytes ?? DEFAULT_HIGH_WATER_BYTES;
    this.splitter = new FrameSplitter(this.maxFrameBytes);
    this.queue = []; // [frame, callback of the write that completed it, or undefined]
    this.ws = null;
    this.open = false;
    this.done = false; // closed, failed or ended: no more events
    this.ending = false;
    this.idleMs = 0;
    this.idleTimer = null;
    this.drainTimer = null;
    this.connectCallback = onConnect;
    const start = (Impl) => {
      if (this.done) return;
      try {
        this.attach(wsOptions ? new Impl(url, protocols, wsOptions) : new Impl(url, protocols));
      } catch (e) {
        this.fail(e);
      }
    };
    const Impl = WebSocketImpl ?? (wsOptions ? undefined : globalThis.WebSocket);
    if (Impl) start(Impl);
    else loadWebSocket().then(start, (e) => this.fail(new Error(`no WebSocket: the ws package cannot be loaded (${e.message})`)));
  }

  attach(ws) {
    this.ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      if (this.done) return;
      this.open = true;
      this.touch();
      this.flush();
      if (this.connectCallback) this.connectCallback();
      this.emit('connect');
    };
    ws.onmessage = (event) => {
      if (this.done) return;
      this.touch();
      if (typeof event.data === 'string') return this.fail(new Error('a text message where Kafka frames are binary'));
      const bytes = new Uint8Array(event.data);
      try {
        checkFrame(bytes, this.maxFrameBytes);
      } catch (e) {
        return this.fail(e);
      }
      this.emit('data', received(event.data));
    };
    ws.onerror = (event) => {
      this.fail(new Error(event && event.message ? event.message : `WebSocket error on ${ws.url}`));
    };
    ws.onclose = (event) => {
      if (this.done) return this.stop();
      if (!this.open) {
        return this.fail(new Error(`WebSocket to ${ws.url} closed before it opened (code ${event.code})`));
      }
      this.done = true;
      this.stop();
      if (!this.ending) this.emit('end');
      this.emit('close', false);
    };
  }

  /** Node's stream semantics: false once frames wait for the WebSocket to take them; 'drain' follows. */
  write(data, encoding, callback) {
    if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    if (this.done || this.ending) {
      const e = new Error('write after the socket ended');
      if (callback) queueMicrotask(() => callback(e));
      return false;
    }
    let frames;
    try {
      frames = this.splitter.push(toBytes(data, encoding));
    } catch (e) {
      this.fail(e);
      if (callback) queueMicrotask(() => callback(e));
      return false;
    }
    if (frames.length === 0) {
      // Bytes kept for a frame still incomplete: the write is done with them.
      if (callback) queueMicrotask(() => callback());
      return true;
    }
    frames.forEach((f, i) => this.queue.push([f, i === frames.length - 1 ? callback : undefined]));
    this.flush();
    return this.queue.length === 0;
  }

  // Hands queued frames to the WebSocket while its bufferedAmount is at or under the bound.
  flush() {
    if (!this.open || this.done) return;
    const hadQueue = this.queue.length > 0;
    while (this.queue.length > 0 && this.ws.bufferedAmount <= this.highWaterBytes) {
      const [frame, callback] = this.queue.shift();
      this.ws.send(frame);
      this.touch();
      if (callback) queueMicrotask(() => callback());
    }
    if (this.queue.length > 0) {
      // WebSocket has no event for bufferedAmount going down: look again shortly.
      this.drainTimer ??= setTimeout(() => {
        this.drainTimer = null;
        this.flush();
      }, 5);
    } else if (hadQueue) {
      this.emit('drain');
    }
  }

  get bufferedAmount() {
    return (this.ws ? this.ws.bufferedAmount : 0) + this.queue.reduce((n, [f]) => n + f.length, 0);
  }

  end(data, encoding, callback) {
    if (typeof data === 'function') callback = data;
    else if (data) this.write(data, encoding);
    if (this.ending || this.done) return this;
    this.ending = true;
    const close = () => {
      if (this.ws && this.ws.readyState <= 1) this.ws.close(1000);
      if (callback) callback();
    };
    if (this.queue.length === 0 || !this.open) close();
    else this.once('drain', close);
    return this;
  }

  destroy(error) {
    if (error) return this.fail(error);
    this.ending = true;
    this.done = true;
    this.stop();
    if (this.ws && this.ws.readyState <= 1) this.ws.close(1000);
    return this;
  }

  fail(error) {
    if (this.done) return this;
    this.done = true;
    this.stop();
    if (this.ws && this.ws.readyState <= 1) {
      try {
        this.ws.close(1002); // protocol error: ws accepts it
      } catch {
        this.ws.close(); // a browser's close() takes only 1000 and 3000-4999
      }
    }
    this.emit('error', error);
    this.emit('close', true);
    return this;
  }

  stop() {
    clearTimeout(this.idleTimer);
    clearTimeout(this.drainTimer);
    this.idleTimer = this.drainTimer = null;
    this.queue = [];
  }

  /** Node's socket.setTimeout: 'timeout' after `ms` with nothing sent or received (0 turns it off). */
  setTimeout(ms, callback) {
    this.idleMs = ms;
    if (callback) this.once('timeout', callback);
    this.touch();
    return this;
  }

  touch() {
    clearTimeout(this.idleTimer);
    this.idleTimer = null;
    if (this.idleMs > 0 && !this.done) this.idleTimer = setTimeout(() => this.emit('timeout'), this.idleMs);
  }

  setKeepAlive() {
    return this;
  }

  setNoDelay() {
    return this;
  }

  ref() {
    return this;
  }

  unref() {
    return this;
  }
}

/**
 * A kafkajs socketFactory: each broker connection kafkajs opens becomes a WebSocket to `url`.
 */
export function socketFactory(options) {
  const { url, token, protocols, WebSocket: WebSocketImpl, wsOptions, maxFrameBytes, highWaterBytes, nodeId } =
    options ?? {};
  if (typeof url !== 'string' && typeof url !== 'function') throw new TypeError('socketFactory: url is required');
  const offered = protocols ?? (token ? ['kafka', bearerProtocol(token)] : undefined);
  return ({ host, port, onConnect }) =>
    new WebSocketSocket({
      url: brokerUrl(url, { host, port }, nodeId),
      protocols: offered,
      WebSocketImpl,
      wsOptions,
      maxFrameBytes,
      highWaterBytes,
      onConnect,
    });
}

export default socketFactory;
