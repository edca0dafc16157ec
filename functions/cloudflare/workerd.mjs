// Runs the built Worker (build/index.js) in workerd through Miniflare's Node API: the runtime
// `wrangler dev` uses, started ten times faster, with the bindings and migrations of the root
// wrangler.toml. Local only: no login, no metrics, no outside calls.
//
//   node functions/cloudflare/workerd.mjs <persist-dir> [port] [VAR=value ...]
//
// Prints `listening on http://127.0.0.1:<port>` once ready; exits when stdin closes, so a test
// process that dies takes it along.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";

const here = path.dirname(fileURLToPath(import.meta.url));
const [persist, port = "0", ...assignments] = process.argv.slice(2);
if (!persist) throw new Error("usage: workerd.mjs <persist-dir> [port] [VAR=value ...]");

const { workerOptions } = unstable_getMiniflareWorkerOptions(path.join(here, "../../wrangler.toml"));
const bindings = { ...workerOptions.bindings };
for (const a of assignments) {
  const i = a.indexOf("=");
  bindings[a.slice(0, i)] = a.slice(i + 1);
}
const mf = new Miniflare({
  ...workerOptions,
  bindings,
  modules: true,
  scriptPath: path.join(here, "build/index.js"),
  modulesRoot: path.join(here, "build"),
  host: "127.0.0.1",
  port: Number(port),
  durableObjectsPersist: path.join(persist, "do"),
});
const url = await mf.ready;
console.log(`listening on ${url.origin}`);
process.stdin.resume();
process.stdin.on("end", async () => {
  await mf.dispose();
  process.exit(0);
});
process.on("SIGTERM", async () => {
  await mf.dispose();
  process.exit(0);
});
