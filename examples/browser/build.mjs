// Bundles app.js (kafkajs and kafka-websocket-shim) for browsers with esbuild, and copies the page:
//   node examples/browser/build.mjs [OUT_DIR]     (default examples/browser/dist)
// esbuild and the polyfills come from js/node_modules (npm ci in js/).
import { copyFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const js = resolve(here, '../../js');
const require = createRequire(join(js, 'package.json'));
const esbuild = require('esbuild');

const out = resolve(process.argv[2] ?? join(here, 'dist'));
mkdirSync(out, { recursive: true });
const unavailable = join(here, 'unavailable.js');
await esbuild.build({
  entryPoints: [join(here, 'app.js')],
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: 'es2020',
  outfile: join(out, 'app.js'),
  nodePaths: [join(js, 'node_modules')],
  alias: {
    'kafka-websocket-shim': join(js, 'index.js'),
    net: unavailable,
    tls: unavailable,
    zlib: unavailable,
    crypto: unavailable,
  },
  inject: [join(here, 'node-builtins.js')],
  define: { global: 'globalThis' },
  logLevel: 'warning',
});
copyFileSync(join(here, 'index.html'), join(out, 'index.html'));
console.log(`built ${out}`);
