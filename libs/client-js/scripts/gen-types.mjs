// `npm run gen`: regenerate everything derived from the contracts, in order:
//   1. docs/schema/*.json from libs/contracts (`uv run --frozen --no-sync roomstream schema`),
//   2. src/generated/protocol.ts from docs/schema/ (json-schema-to-typescript),
//   3. the build, and the browser bundle copied into the gateway's static/.
// `npm run gen:types` does step 2 only.
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { OUTPUT, SCHEMA_DIR, generate } from "./protocol-schema.mjs";

const full = process.argv.includes("--export");
if (full) {
  execFileSync("uv", ["run", "--frozen", "--no-sync", "roomstream", "schema", "--out", SCHEMA_DIR], {
    stdio: "inherit",
  });
}
writeFileSync(OUTPUT, await generate());
console.log(`wrote ${OUTPUT}`);
if (full) {
  execFileSync("npm", ["run", "build"], { stdio: "inherit" });
  execFileSync("node", ["scripts/copy-static.mjs"], { stdio: "inherit" });
}
