// The gateway serves the browser bundle from its static/ (no Node at run time): the committed
// copy must be the bundle this source builds (`npm run build && npm run static`).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
// @ts-expect-error -- a plain .mjs script without types
import { BUNDLE, SERVED_BUNDLE } from "../scripts/paths.mjs";

test("the gateway serves the bundle built from this source", () => {
  const built = readFileSync(BUNDLE as string, "utf8");
  const served = readFileSync(SERVED_BUNDLE as string, "utf8");
  assert.ok(built === served, "static/roomstream-client.js is stale: npm run build && npm run static");
});
