// The broker of bench/run.sh: a WebSocket echo server in its own process (Node.js with the `ws` package), as
// the harness the performance targets were measured with used. Every message goes back as it came, binary
// stays binary. Prints "listening PORT" once it accepts connections. Usage: node echo.js [PORT]
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 0);
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  maxPayload: 100 * 1024 * 1024 + 4,
  perMessageDeflate: false,
  clientTracking: false,
});
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => ws.terminate());
});
wss.on('listening', () => {
  process.stdout.write(`listening ${wss.address().port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
