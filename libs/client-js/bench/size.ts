// Benchmark (not a test): min+gzip size of the browser bundle the gateway serves.
//   npm run build && node --import tsx bench/size.ts
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
// @ts-expect-error -- a plain .mjs script without types
import { BUNDLE } from "../scripts/paths.mjs";

const bytes = readFileSync(BUNDLE as string);
const gz = gzipSync(bytes, { level: 9 }).length;
console.log(
  JSON.stringify({ bundle: "dist/browser/roomstream-client.js", minified_bytes: bytes.length, gzip_bytes: gz, gzip_kb: +(gz / 1024).toFixed(2) }),
);
