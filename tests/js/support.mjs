// What the JavaScript process tests share: child processes whose output is waited on (no sleeps), the
// built binaries from the environment CTest sets, kafkajs and the package from js/.
import { spawn, execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const jsRequire = createRequire(new URL('../../js/package.json', import.meta.url));
export const { Kafka, logLevel } = jsRequire('kafkajs');
export { socketFactory } from '../../js/index.js';

export function binary(name) {
  const path = process.env[name];
  if (!path) throw new Error(`${name} is not set: run this through CTest`);
  return path;
}

export class Proc {
  constructor(argv, { stdin = 'ignore' } = {}) {
    this.argv = argv;
    this.output = '';
    this.waiters = new Set();
    this.child = spawn(argv[0], argv.slice(1), { stdio: [stdin, 'pipe', 'pipe'] });
    const take = (chunk) => {
      this.output += chunk.toString();
      for (const w of [...this.waiters]) w();
    };
    this.child.stdout.on('data', take);
    this.child.stderr.on('data', take);
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
    this.exited.then(() => {
      for (const w of [...this.waiters]) w();
    });
  }

  // Resolves with the first match of `re` in the output (its first group when it has one).
  waitFor(re, ms = 10000) {
    return this.until(() => {
      const m = re.exec(this.output);
      return m ? (m[1] ?? m[0]) : undefined;
    }, ms, `${re} in the output of ${this.argv[0]}`);
  }

  // The JSON log lines whose fields equal those given.
  events(fields) {
    return this.output
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => {
        try {
          return JSON.parse(l);
        } catch {
          return undefined;
        }
      })
      .filter((e) => e && Object.entries(fields).every(([k, v]) => String(e[k]) === String(v)));
  }

  waitForEvent(fields, ms = 10000) {
    return this.until(() => this.events(fields)[0], ms, `an event ${JSON.stringify(fields)} from ${this.argv[0]}`);
  }

  until(check, ms, what) {
    return new Promise((resolve, reject) => {
      const done = () => {
        const r = check();
        if (r !== undefined) {
          clearTimeout(timer);
          this.waiters.delete(done);
          resolve(r);
        } else if (this.child.exitCode !== null || this.child.signalCode !== null) {
          clearTimeout(timer);
          this.waiters.delete(done);
          reject(new Error(`${this.argv[0]} exited while waiting for ${what}:\n${this.output}`));
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(done);
        reject(new Error(`no ${what} within ${ms} ms:\n${this.output}`));
      }, ms);
      this.waiters.add(done);
      done();
    });
  }

  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 15000);
    const r = await this.exited;
    clearTimeout(timer);
    return r;
  }
}

export function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, path: (name) => join(dir, name), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

// A self-signed certificate for 127.0.0.1 and localhost, made now with the openssl command.
export function makeCertificate(dir) {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'pipe' });
  return { cert, key };
}

export function writeFile(path, text) {
  writeFileSync(path, text);
  return path;
}

// librdkafka's mock cluster (node ids 1..brokers) with the given topics; stdin open until stop().
export async function startMockCluster(brokers, topics) {
  const argv = [binary('KWS_MOCK_CLUSTER'), '--brokers', String(brokers)];
  for (const t of topics) argv.push('--topic', t);
  const mock = new Proc(argv, { stdin: 'pipe' });
  mock.bootstrap = await mock.waitFor(/bootstrap=(\S+)/);
  return mock;
}

// The gateway on 127.0.0.1 with a port of its own, JSON log.
export async function startGateway(upstream, args = []) {
  const gw = new Proc([binary('KWS_GATEWAY'), '--listen', '127.0.0.1:0', '--upstream', upstream, '--threads', '2',
    '--drain-timeout', '2s', '--log-format', 'json', ...args]);
  gw.port = Number(await gw.waitFor(/listening on 127\.0\.0\.1:(\d+)/));
  return gw;
}

export const quietLogs = () => () => {};
