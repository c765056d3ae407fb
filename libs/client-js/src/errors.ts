/** Errors the client raises (rejected promises, `events()` iterators). */

export class ClientError extends Error {
  override name = "ClientError";
}

/** The gateway answered a command with an `error` frame; the connection stays open. */
export class CommandError extends ClientError {
  override name = "CommandError";
  constructor(
    readonly code: string,
    message: string,
    readonly ref?: string,
    /** With `rate_limited`: ms until the budget allows another command. */
    readonly retryAfter?: number,
  ) {
    super(`${code}: ${message}`);
  }
}

/** The session ended for good: a close code reconnecting cannot fix (4401 without a new token,
 * 1008, 1009). Every waiting call and `events()` reject with it. */
export class ConnectionClosedError extends ClientError {
  override name = "ConnectionClosedError";
  constructor(
    readonly code: number,
    readonly reason = "",
  ) {
    super(`connection closed with ${code}${reason ? ` ${reason}` : ""}`);
  }
}

/** A command that must not be repeated blindly (edit, delete) was in flight when the connection
 * was lost: it may or may not have been applied. */
export class ConnectionLost extends ClientError {
  override name = "ConnectionLost";
}

/** The offline send queue is full (`maxPending` unacknowledged sends). */
export class QueueFull extends ClientError {
  override name = "QueueFull";
}

/** The client was closed by `close()`. */
export class ClientClosed extends ClientError {
  override name = "ClientClosed";
}

/** No reply within `requestTimeout` after the command was sent. */
export class RequestTimeout extends ClientError {
  override name = "RequestTimeout";
}
