// The example page in examples/browser in Debian's Chromium (headless, driven by puppeteer-core): loaded from
// a static server on 127.0.0.1, it produces and consumes through the gateway (wss, the token as a
// subprotocol, --allow-origin set to its origin), and the test reads the messages from the page. The same
// page from another origin is refused with 403, and no connection of its reaches the cluster.
// Run as a plain script, not under --test: it exits 77 (skipped) when Chromium cannot start.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { createServer } from 'node:http';
import { join, extname } from 'node:path';
import { fileURLToPath } from 'node:url';

import { jsRequire, startMockCluster, startGateway, tempDir, makeCertificate, writeFile } from './support.mjs';

const puppeteer = jsRequire('puppeteer-core');
const chromium = process.env.KWS_CHROMIUM ?? '/usr/bin/chromium';
const TOKEN = 'browser-token';

// The SHA-256 of the certificate's public key, base64, for --ignore-certificate-errors-spki-list.
function spkiHash(cert) {
  const der = execFileSync('sh', ['-c', `openssl x509 -in '${cert}' -pubkey -noout | openssl pkey -pubin -outform der`]);
  return execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: der }).toString('base64');
}

const tmp = tempDir('kws-browser-');
const { cert, key } = makeCertificate(tmp.dir);
let browser;
try {
  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    // Root in a container has no user namespaces for Chromium's sandbox.
    args: ['--no-sandbox', `--ignore-certificate-errors-spki-list=${spkiHash(cert)}`],
    timeout: 30000,
  });
} catch (e) {
  console.log(`kws: Chromium (${chromium}) cannot start, so the browser test is skipped: ${e.message.split('\n')[0]}`);
  tmp.remove();
  process.exit(77);
}

const site = join(tmp.dir, 'site');
execFileSync(process.execPath, [fileURLToPath(new URL('../../examples/browser/build.mjs', import.meta.url)), site]);
const types = { '.html': 'text/html', '.js': 'text/javascript' };
const server = createServer((req, res) => {
  const name = new URL(req.url, 'http://x').pathname.replace(/^\/$/, '/index.html');
  if (!/^\/[a-z.]+$/.test(name) || !types[extname(name)]) return res.writeHead(404).end();
  res.writeHead(200, { 'content-type': types[extname(name)] });
  createReadStream(join(site, name)).on('error', () => res.end()).pipe(res);
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const pagePort = server.address().port;
const origin = `http://127.0.0.1:${pagePort}`;

let mock, gateway;
before(async () => {
  mock = await startMockCluster(3, ['browser:3']);
  writeFile(join(tmp.dir, 'tokens'), `${TOKEN}\n`);
  gateway = await startGateway(mock.bootstrap, ['--advertise', 'kafka-{node_id}.gw.invalid:443', '--tls-cert', cert,
    '--tls-key', key, '--auth-token-file', join(tmp.dir, 'tokens'), '--allow-origin', origin]);
});

after(async () => {
  await browser.close();
  server.close();
  if (gateway) assert.equal((await gateway.stop()).code, 0, gateway.output);
  if (mock) {
    mock.child.stdin.end();
    await mock.stop();
  }
  tmp.remove();
});

async function openPage(pageOrigin) {
  const page = await browser.newPage();
  await page.setViewport({ width: 900, height: 640 });
  await page.goto(`${pageOrigin}/index.html`);
  const fill = async (id, value) => {
    await page.$eval(id, (el) => (el.value = ''));
    await page.type(id, value);
  };
  await fill('#url', `wss://localhost:${gateway.port}/kafka/{node_id}`);
  await fill('#token', TOKEN);
  await fill('#topic', 'browser');
  await page.click('#connect');
  await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', { timeout: 30000 });
  return page;
}

test('the page produces what is typed and its live consumer shows it', async () => {
  const page = await openPage(origin);
  const state = await page.$eval('body', (b) => [b.dataset.state, document.getElementById('status').textContent]);
  assert.equal(state[0], 'ready', `${state[1]}\n${gateway.output}`);
  for (const text of ['hello from Chromium', 'kafkajs over WebSocket']) {
    await page.type('#text', text);
    await page.keyboard.press('Enter');
    await page.waitForFunction((t) => [...document.querySelectorAll('li.message')].some((li) => li.textContent.endsWith(t)),
      { timeout: 20000 }, text);
  }
  const shown = await page.$$eval('li.message', (lis) => lis.map((li) => li.textContent));
  assert.equal(shown.length, 2, shown.join('\n'));
  if (process.env.KWS_BROWSER_SCREENSHOT) await page.screenshot({ path: process.env.KWS_BROWSER_SCREENSHOT });
  // Offered as a subprotocol, never logged.
  assert.ok(!gateway.output.includes(TOKEN), 'the token in the log');
  await page.close();
});

test('the same page from another origin is refused with 403 and reaches no broker', async () => {
  const dialled = () => gateway.events({ event: 'open' }).length;
  const before = dialled();
  const other = `http://localhost:${pagePort}`;
  const page = await openPage(other);
  assert.equal(await page.$eval('body', (b) => b.dataset.state), 'error');
  await gateway.waitForEvent({ event: 'refused', status: 403, cause: `origin ${other} is not allowed` });
  assert.equal(dialled(), before, 'a connection from the other origin reached the cluster');
  await page.close();
});
