// The broker of bench/run.sh: a WebSocket echo server in its own process (Node.js with the `ws` package), as
// the harness the performance targets were measured with used. Every message goes back as it came, binary
// stays binary. Prints "listening PORT" once it accepts connections.
// Usage: node echo.js [PORT [CERT_PEM KEY_PEM]]; with a certificate and key it serves wss:// (Node's https).
'use strict';
const fs = require('fs');
const https = require('https');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 0);
const [certFile, keyFile] = process.argv.slice(3, 5);
const options = {
  maxPayload: 100 * 1024 * 1024 + 4,
  perMessageDeflate: false,
  clientTracking: false,
};
let wss;
let server;
if (certFile) {
  server = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) });
  wss = new WebSocketServer({ ...options, server });
} else {
  wss = new WebSocketServer({ ...options, host: '127.0.0.1', port });
}
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => ws.terminate());
});
const announce = (address) => process.stdout.write(`listening ${address.port}\n`);
if (server) {
  server.listen(port, '127.0.0.1', () => announce(server.address()));
} else {
  wss.on('listening', () => announce(wss.address()));
}
process.on('SIGTERM', () => process.exit(0));
