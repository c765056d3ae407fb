/** `@roomstream/client`: the roomstream client for browsers and Node (docs/client-js.md). */
export { Client, newClientId } from "./client.js";
export type {
  ClientEvent,
  ClientEvents,
  ClientOptions,
  ConnectionState,
  SocketConstructor,
  SocketLike,
  StateChange,
  Stats,
} from "./client.js";
export { Backoff } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { Sequencer } from "./sequencer.js";
export {
  ClientClosed,
  ClientError,
  CommandError,
  ConnectionClosedError,
  ConnectionLost,
  QueueFull,
  RequestTimeout,
} from "./errors.js";
export type * from "./generated/protocol.js";
