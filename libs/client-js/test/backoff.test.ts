import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff } from "../src/backoff.js";

test("full jitter: uniform in [0, min(cap, base*2^n)], reset after a success", () => {
  const top = new Backoff({ base: 100, cap: 1000, random: () => 0.999999 });
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6].map(() => top.next()),
    [99, 199, 399, 799, 999, 999],
  );
  top.reset();
  assert.equal(top.next(), 99);
  const zero = new Backoff({ random: () => 0 });
  assert.equal(zero.next(), 0);
  const real = new Backoff({ base: 100, cap: 400 });
  for (let i = 0; i < 100; i++) {
    const d = real.next();
    assert.ok(d >= 0 && d <= 400);
  }
});
