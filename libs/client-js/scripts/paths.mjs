import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO = join(ROOT, "..", "..");
export const BUNDLE = join(ROOT, "dist", "browser", "roomstream-client.js");
export const STATIC = join(REPO, "services", "gateway", "src", "roomstream_gateway", "static");
export const SERVED_BUNDLE = join(STATIC, "roomstream-client.js");
