// The viewer page where MediaSource is missing (iOS Safari before ManagedMediaSource): an init
// script removes it before the page's scripts run. The player must then use the browser's own
// HLS, never hls.js (which needs MediaSource), and play the live stream; and where the browser
// cannot play HLS either, it must say so. Needs a live show (tests/media_player.rs publishes one):
//
//   LIVESHOP_URL=http://127.0.0.1:8080 node --test native-hls.spec.mjs
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { BASE, SHOW, SHOTS, WAIT, launch } from './harness.mjs';

const noMediaSource = () => {
  for (const name of ['MediaSource', 'ManagedMediaSource', 'WebKitMediaSource']) delete window[name];
};

let browser;
after(() => browser?.close());

/** The viewer page without MediaSource (and `more` on top), and whether it asked for hls.js. */
async function viewer(more) {
  assert.ok(BASE, 'set LIVESHOP_URL');
  browser ??= await launch();
  const page = await browser.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  const hlsJs = [];
  page.on('request', (r) => { if (new URL(r.url()).pathname === '/media/hls.js') hlsJs.push(r.url()); });
  await page.addInitScript(noMediaSource);
  if (more) await page.addInitScript(more);
  await page.goto(`${BASE}/watch/${SHOW}`);
  return { page, hlsJs };
}

const video = '[data-testid=video]';

test('without MediaSource the page plays the live stream with the browser\'s own HLS', async () => {
  const { page, hlsJs } = await viewer();
  try {
    assert.equal(await page.evaluate(() => window.liveshopPlayer.mode), 'native');
    assert.equal(await page.evaluate(() => typeof window.MediaSource), 'undefined');
    // Playing, then three more seconds of it, with sound decoded all along.
    const start = await page.waitForFunction((sel) => {
      const v = document.querySelector(sel);
      return !v.paused && v.currentTime > 0.5 && v.currentTime;
    }, video, { timeout: 60_000 }).then((h) => h.jsonValue());
    const audioBytes = await page.$eval(video, (v) => v.webkitAudioDecodedByteCount);
    await page.waitForFunction(([sel, t]) => document.querySelector(sel).currentTime > t + 3, [video, start], { timeout: 30_000 });
    const decoded = await page.$eval(video, (v) => v.webkitAudioDecodedByteCount) - audioBytes;
    assert.ok(decoded > 0, 'the browser decoded audio while it played');
    const src = await page.$eval(video, (v) => v.currentSrc);
    assert.equal(new URL(src).pathname, `/hls/${SHOW}/master-aac.m3u8`);
    assert.deepEqual(hlsJs, [], 'hls.js is never loaded');
    assert.equal(await page.evaluate(() => window.Hls), undefined);
    assert.ok(await page.locator('[data-testid=cannot-play]').isHidden());
    console.log(`native HLS plays: currentTime ${start.toFixed(1)} -> ${(await page.$eval(video, (v) => v.currentTime)).toFixed(1)}, ${decoded} bytes of audio decoded`);
  } finally {
    mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: `${SHOTS}/native-hls-viewer.png` }).catch(() => {});
  }
});

test('without MediaSource or native HLS the page says it cannot play, and loads no hls.js', async () => {
  const { page, hlsJs } = await viewer(() => {
    HTMLMediaElement.prototype.canPlayType = () => '';
  });
  await page.locator('[data-testid=cannot-play]').waitFor({ state: 'visible' });
  assert.match(await page.locator('[data-testid=cannot-play]').innerText(), /cannot play the stream/);
  assert.equal(await page.evaluate(() => window.liveshopPlayer.mode), 'none');
  // The player decided when it loaded, so nothing is on its way.
  assert.equal(await page.$eval(video, (v) => v.currentSrc), '');
  assert.deepEqual(hlsJs, []);
});
