// The page's script, bundled by build.mjs: a producer of what the user types and a live consumer of the
// topic, both kafkajs with the WebSocket socketFactory of kafka-websocket-shim.
import { Kafka, logLevel } from 'kafkajs';
import { socketFactory } from 'kafka-websocket-shim';

const $ = (id) => document.getElementById(id);
let producer;

function status(text, state) {
  $('status').textContent = text;
  document.body.dataset.state = state;
}

function show({ partition, message }) {
  const li = document.createElement('li');
  const where = document.createElement('span');
  where.textContent = `[${partition}@${message.offset}] `;
  li.append(where, message.value ? message.value.toString() : '');
  li.className = 'message';
  $('messages').append(li);
}

async function connect() {
  $('connect').disabled = true;
  status('connecting', 'connecting');
  const topic = $('topic').value;
  const kafka = new Kafka({
    clientId: 'kws-browser-example',
    // Any host without a node id: the socketFactory sends it to the gateway's bootstrap path.
    brokers: ['bootstrap.gateway:443'],
    socketFactory: socketFactory({ url: $('url').value, token: $('token').value || undefined }),
    connectionTimeout: 5000,
    retry: { retries: 1 },
    logLevel: logLevel.WARN,
  });
  try {
    producer = kafka.producer();
    await producer.connect();
    const consumer = kafka.consumer({ groupId: `browser-${crypto.randomUUID()}` });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    consumer.on(consumer.events.GROUP_JOIN, () => status('consuming', 'ready'));
    await consumer.run({ eachMessage: async (m) => show(m) });
    $('text').disabled = $('produce').disabled = false;
  } catch (e) {
    status(`error: ${e.message}`, 'error');
    $('connect').disabled = false;
  }
}

$('connect').addEventListener('click', connect);
$('send').addEventListener('submit', async (event) => {
  event.preventDefault();
  const value = $('text').value;
  if (!value) return;
  $('text').value = '';
  try {
    await producer.send({ topic: $('topic').value, messages: [{ value }] });
  } catch (e) {
    status(`error: ${e.message}`, 'error');
  }
});
