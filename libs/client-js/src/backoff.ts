/**
 * Reconnect delays: exponential backoff with full jitter (pure logic). The delay before attempt n
 * is uniform in [0, min(cap, base·2^n)]: the reconnects of many clients that lost the same gateway
 * at the same moment are spread over the whole window instead of arriving in waves.
 */
export interface BackoffOptions {
  /** First window, ms (default 100). */
  base?: number;
  /** Largest window, ms (default 5000). */
  cap?: number;
  /** A source of uniform numbers in [0, 1) (tests pass a fixed one). */
  random?: () => number;
}

export class Backoff {
  readonly base: number;
  readonly cap: number;
  private readonly random: () => number;
  /** Failed attempts since the last success. */
  attempt = 0;

  constructor(options: BackoffOptions = {}) {
    this.base = options.base ?? 100;
    this.cap = options.cap ?? 5000;
    this.random = options.random ?? Math.random;
  }

  /** The delay (ms) before the next attempt; each call counts one more failed attempt. */
  next(): number {
    const window = Math.min(this.cap, this.base * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.floor(window * this.random());
  }

  /** A connection succeeded: the next failure starts from `base` again. */
  reset(): void {
    this.attempt = 0;
  }
}
