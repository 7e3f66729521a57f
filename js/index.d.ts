// Types of kafka-websocket-shim (index.js).

/** The broker address kafkajs connects to, with the node id found in its host, if any. */
export interface BrokerAddress {
  host: string;
  port: number;
  nodeId?: number;
}

export interface SocketFactoryOptions {
  /**
   * The WebSocket URL of a broker: a template with `{host}`, `{port}` and `{node_id}`
   * (`wss://gw.example.com/kafka/{node_id}`; a host without a node id gets the template without `/{node_id}`),
   * or a function of the broker's address.
   */
  url: string | ((address: BrokerAddress) => string);
  /** A bearer token, offered as the subprotocol `bearer.<base64url>` next to `kafka`. */
  token?: string;
  /** The subprotocols to offer instead (the token is then not sent). */
  protocols?: string[];
  /** A WebSocket constructor; default: the global one, else the `ws` package. */
  WebSocket?: new (url: string, protocols?: string | string[], options?: unknown) => unknown;
  /** Options for the `ws` package's constructor (Node only: `ca`, `headers`, ...); selects `ws`. */
  wsOptions?: Record<string, unknown>;
  /** Largest Kafka frame body sent or received; default 100 MiB, the gateway's default. */
  maxFrameBytes?: number;
  /** A write waits while the WebSocket's bufferedAmount is above this; default 1 MiB. */
  highWaterBytes?: number;
  /** The node id in an advertised host; default: digits ending its first label after a letter (`kafka-2.gw`). */
  nodeId?: (host: string) => number | undefined;
}

/** What kafkajs's Connection uses of a socket. */
export interface KafkaSocket {
  write(data: Uint8Array | string, encoding?: string, callback?: (error?: Error) => void): boolean;
  end(callback?: () => void): this;
  destroy(error?: Error): this;
  setTimeout(ms: number, callback?: () => void): this;
  setKeepAlive(...args: unknown[]): this;
  setNoDelay(...args: unknown[]): this;
  ref(): this;
  unref(): this;
  on(event: 'data', listener: (data: Uint8Array) => void): this;
  on(event: 'connect' | 'end' | 'timeout' | 'drain', listener: () => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
  on(event: 'close', listener: (hadError: boolean) => void): this;
  readonly bufferedAmount: number;
}

/** kafkajs's ISocketFactory. */
export type KafkaSocketFactory = (args: {
  host: string;
  port: number;
  ssl?: unknown;
  onConnect: () => void;
}) => KafkaSocket;

/**
 * kafkajs types its socketFactory as making net.Sockets; what this one makes has what kafkajs's Connection
 * uses of them (KafkaSocket), and is typed as kafkajs expects.
 */
export function socketFactory(options: SocketFactoryOptions): import('kafkajs').ISocketFactory;
export default socketFactory;

export function brokerUrl(
  url: SocketFactoryOptions['url'],
  address: { host: string; port: number },
  nodeId?: (host: string) => number | undefined,
): string;
export function bearerProtocol(token: string): string;

export class FrameSplitter {
  constructor(maxFrameBytes?: number);
  push(bytes: Uint8Array): Uint8Array[];
  readonly pending: number;
}
export function checkFrame(bytes: Uint8Array, maxFrameBytes?: number): void;

export const DEFAULT_MAX_FRAME_BYTES: number;
export const DEFAULT_HIGH_WATER_BYTES: number;
