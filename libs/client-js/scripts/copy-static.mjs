// Copy the browser bundle into the gateway's static/ (served at /roomstream-client.js). The copy
// is committed so the gateway needs no Node at run time; test/bundle.test.ts fails when it and
// a fresh build differ.
import { copyFileSync } from "node:fs";
import { BUNDLE, SERVED_BUNDLE } from "./paths.mjs";

copyFileSync(BUNDLE, SERVED_BUNDLE);
console.log(`copied ${BUNDLE} -> ${SERVED_BUNDLE}`);
