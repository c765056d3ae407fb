import { defineConfig } from "tsup";

export default defineConfig([
  {
    // The package: ESM + CommonJS + .d.ts, for Node and bundlers (`ws` stays a dependency).
    entry: ["src/index.ts"],
    format: ["esm", "cjs"],
    dts: true,
    sourcemap: true,
    target: "es2022",
    platform: "neutral",
    external: ["ws"],
  },
  {
    // The browser bundle the gateway serves (`roomstream-client.js`, an ES module, minified):
    // `ws` is never loaded in a browser (there is a global WebSocket).
    entry: { "roomstream-client": "src/index.ts" },
    outDir: "dist/browser",
    format: ["esm"],
    minify: true,
    target: "es2020",
    platform: "browser",
    external: ["ws"],
    outExtension: () => ({ js: ".js" }),
  },
]);
