// What kafkajs reads of Node's globals, for the browser: Buffer and process from their npm packages, and
// process.hrtime (used for SASL re-authentication), which the process package lacks.
import { Buffer } from 'buffer';
import process from 'process/browser.js';

process.hrtime ??= (previous) => {
  const now = performance.now();
  const s = Math.floor(now / 1000);
  const ns = Math.floor((now % 1000) * 1e6);
  if (!previous) return [s, ns];
  const d = (s - previous[0]) * 1e9 + ns - previous[1];
  return [Math.floor(d / 1e9), d % 1e9];
};
globalThis.Buffer ??= Buffer;

export { Buffer, process };
