// One definition of the wire format: src/generated/protocol.ts must be what the schemas of
// docs/schema/ (exported from libs/contracts) generate now. `npm run gen` regenerates it.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
// @ts-expect-error -- a plain .mjs script without types
import { OUTPUT, generate } from "../scripts/protocol-schema.mjs";

test("the generated frame and event types match docs/schema", async () => {
  const fresh: string = await generate();
  const committed = readFileSync(OUTPUT as string, "utf8");
  assert.ok(
    fresh === committed,
    "src/generated/protocol.ts is stale: run `npm run gen` in libs/client-js and commit it",
  );
});
