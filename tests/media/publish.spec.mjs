// A WHIP publisher in Debian's headless Chromium: tests/media/whip.html, served from its own
// loopback origin (so the WHIP requests are cross-origin, as from any web page), publishes the
// fake camera and microphone with H.264 and Opus for N seconds, then DELETEs the session.
//
//   BROWSER_DEPS=tests/browser node tests/media/publish.spec.mjs WHIP_URL TOKEN [--seconds N]
//
// Prints `LIVE <location>` once connected, `SENDING <json>` (outbound codecs and counters) and
// `DONE` after the DELETE, like tests/media/publish.py. Fails with a reason when this Chromium
// has no H.264 encoder. The peer connection has no ICE servers: nothing leaves the machine.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(resolve(process.env.BROWSER_DEPS || 'tests/browser', 'package.json'));
const { chromium } = require('playwright-core');
const [url, token, ...rest] = process.argv.slice(2);
assert.ok(url && token, 'usage: publish.spec.mjs WHIP_URL TOKEN [--seconds N]');
const seconds = Number(rest[rest.indexOf('--seconds') + 1] || 10);

const html = readFileSync(resolve(dirname(fileURLToPath(import.meta.url)), 'whip.html'));
const server = createServer((_req, res) => res.writeHead(200, { 'Content-Type': 'text/html' }).end(html));
await new Promise((r) => server.listen(0, '127.0.0.1', r));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream', '--allow-loopback-in-peer-connection'],
});
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.log('page:', m.text()));
  // http://127.0.0.1 is a secure context: getUserMedia is there.
  await page.goto(`http://127.0.0.1:${server.address().port}/whip.html`);
  const location = await page.evaluate(([u, t]) => whipPublish(u, t), [url, token]);
  console.log(`LIVE ${new URL(location).pathname}`);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  console.log(`SENDING ${JSON.stringify(await page.evaluate(() => whipStats()))}`);
  const status = await page.evaluate(() => whipStop());
  assert.equal(status, 200, `DELETE answered ${status}`);
  console.log('DONE');
} finally {
  await browser.close();
  server.close();
}
