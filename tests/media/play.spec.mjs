// The viewer page plays the show's LL-HLS stream with hls.js in Debian's headless Chromium:
// live for 10 s (LIVESHOP_PLAY_SECONDS) with currentTime advancing, then (once the publisher has
// ended) the recording. Prints the capture-to-playback latency (hls.js playingDate against the
// capture clock in EXT-X-PROGRAM-DATE-TIME) as `LATENCY p50_ms=.. p95_ms=..` beside the LL-HLS
// floor, and `STALLS count=.. rebuffer_ms=.. drift_ms=..`: times the video waited for data once
// playing, how long in all, and how far the latency moved from the first fifth of the run to
// the last. Prints `AUDIO codec=..` too: the audio of the variant hls.js took, and that the
// browser decoded it. With LIVESHOP_NO_OPUS=1 the page's MediaSource says it cannot play Opus
// (as on a browser without it), and hls.js must take the AAC variant.
//
//   LIVESHOP_URL=http://127.0.0.1:8080 BROWSER_DEPS=tests/browser node tests/media/play.spec.mjs
//
// BROWSER_DEPS is the npm project holding playwright-core (tests/browser).
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';

const require = createRequire(resolve(process.env.BROWSER_DEPS || 'tests/browser', 'package.json'));
const { chromium } = require('playwright-core');
const BASE = (process.env.LIVESHOP_URL || '').replace(/\/+$/, '');
const SHOW = process.env.LIVESHOP_SHOW || 'demo';
const PLAY_SECONDS = Number(process.env.LIVESHOP_PLAY_SECONDS || 10);
const NO_OPUS = process.env.LIVESHOP_NO_OPUS === '1';
assert.ok(BASE, 'set LIVESHOP_URL');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const percentile = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--autoplay-policy=no-user-gesture-required'],
});
try {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') console.log('page:', m.text()); });
  // hls.js runs under the page's Content-Security-Policy (blob: media and worker): not one refusal.
  const refused = [];
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) refused.push(m.text()); });
  await page.addInitScript(() => document.addEventListener('securitypolicyviolation', (e) => {
    console.error(`Content Security Policy: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`);
  }));
  if (NO_OPUS) {
    await page.addInitScript(() => {
      for (const name of ['MediaSource', 'ManagedMediaSource']) {
        const MS = window[name];
        if (!MS) continue;
        const can = MS.isTypeSupported.bind(MS);
        MS.isTypeSupported = (type) => !/opus/i.test(type) && can(type);
      }
    });
  }
  await page.goto(`${BASE}/watch/${SHOW}`);
  await page.waitForFunction(() => window.liveshopPlayer?.hls, null, { timeout: 30_000 });
  await page.evaluate(() => {
    window.__hlsErrors = [];
    window.liveshopPlayer.hls.on('hlsError', (_e, d) => window.__hlsErrors.push(`${d.type}/${d.details}${d.fatal ? ' fatal' : ''}`));
  });

  // Live: playing, through hls.js (not native), and time advances for 10 s.
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-testid=video]');
    return window.liveshopPlayer?.hls && v.currentTime > 0.5 && !v.paused;
  }, null, { timeout: 30_000 });
  const start = await page.evaluate(() => {
    const v = document.querySelector('[data-testid=video]');
    const stalls = { count: 0, ms: 0, since: null };
    window.__stalls = stalls;
    v.addEventListener('waiting', () => {
      if (stalls.since == null) [stalls.count, stalls.since] = [stalls.count + 1, performance.now()];
    });
    v.addEventListener('playing', () => {
      if (stalls.since != null) [stalls.ms, stalls.since] = [stalls.ms + performance.now() - stalls.since, null];
    });
    return { t: v.currentTime, audioBytes: v.webkitAudioDecodedByteCount };
  });
  const latencies = [];
  // By the clock, not by count: each sample's evaluate adds to the 250 ms.
  for (const until = Date.now() + PLAY_SECONDS * 1000; Date.now() < until;) {
    await sleep(250);
    const l = await page.evaluate(() => {
      const d = window.liveshopPlayer.hls.playingDate;
      return d ? Date.now() - d.getTime() : null;
    });
    if (l != null) latencies.push(l);
  }
  const live = await page.evaluate(() => {
    const hls = window.liveshopPlayer.hls;
    const level = hls.levels[hls.currentLevel];
    const v = document.querySelector('[data-testid=video]');
    return {
      t: v.currentTime,
      lowLatency: hls.lowLatencyMode,
      isLive: level?.details?.live,
      audioCodec: level?.audioCodec,
      offered: hls.levels.map((l) => l.audioCodec).join(' '),
      audioBytes: v.webkitAudioDecodedByteCount,
    };
  });
  console.log(`AUDIO codec=${live.audioCodec} of [${live.offered}]; decoded ${live.audioBytes - start.audioBytes} bytes in the live phase`);
  // Said before any assertion, so a failed long run still reports.
  const fifth = Math.max(1, Math.floor(latencies.length / 5));
  const drift = percentile(latencies.slice(-fifth), 0.5) - percentile(latencies.slice(0, fifth), 0.5);
  const stalls = await page.evaluate(() => {
    const s = window.__stalls;
    return { count: s.count, ms: Math.round(s.ms + (s.since == null ? 0 : performance.now() - s.since)) };
  });
  console.log(`STALLS count=${stalls.count} rebuffer_ms=${stalls.ms} drift_ms=${drift} over ${PLAY_SECONDS} s`);
  if (live.t - start.t < 0.8 * PLAY_SECONDS) {
    // Say why: what the player buffered and what the playlist was.
    console.log(await page.evaluate(() => {
      const v = document.querySelector('[data-testid=video]');
      const ranges = [...Array(v.buffered.length).keys()].map((i) => `${v.buffered.start(i)}-${v.buffered.end(i)}`);
      return `buffered ${ranges.join(' ')}; readyState ${v.readyState}; errors ${JSON.stringify(window.__hlsErrors || [])}`;
    }));
    console.log(await (await fetch(`${BASE}/hls/${SHOW}/live.m3u8`)).text());
  }
  assert.ok(live.t - start.t >= 0.8 * PLAY_SECONDS, `currentTime went from ${start.t} to ${live.t} in ${PLAY_SECONDS} s`);
  assert.equal(live.isLive, true);
  assert.ok(live.audioBytes > start.audioBytes, 'audio was decoded while it played');
  if (NO_OPUS) {
    assert.equal(live.audioCodec, 'mp4a.40.2', 'without Opus, hls.js plays the AAC variant');
    assert.ok(!live.offered.includes('opus'), `hls.js kept a variant it cannot play: ${live.offered}`);
  }
  // The page says the show is on, not offline, once frames play.
  assert.ok(await page.locator('[data-testid=offline]').isHidden(), 'the offline notice is hidden while playing');
  assert.ok(await page.locator('[data-testid=live-badge]').isVisible(), 'the live badge shows');
  assert.ok(latencies.length >= PLAY_SECONDS * 2, `hls.js reported playingDate ${latencies.length} times`);
  // Beside the floor LL-HLS sets: a player holds back PART-HOLD-BACK (part targets) from the
  // newest part; the playlist says how much.
  const control = await (await fetch(`${BASE}/hls/${SHOW}/live.m3u8`)).text();
  const floor = Math.round(1000 * Number(/PART-HOLD-BACK=([\d.]+)/.exec(control)[1]));
  const [p50, p95] = [percentile(latencies, 0.5), percentile(latencies, 0.95)];
  console.log(`LATENCY p50_ms=${p50} p95_ms=${p95} samples=${latencies.length}; ` +
    `baseline PART-HOLD-BACK ${floor} ms; p50 ratio ${(p50 / floor).toFixed(2)}`);

  // The end: wait for ENDLIST, then the same page replays the recording from the start.
  for (let i = 0; ; i++) {
    const text = await (await fetch(`${BASE}/hls/${SHOW}/live.m3u8`)).text();
    if (text.includes('#EXT-X-ENDLIST')) break;
    assert.ok(i < 120, 'the stream never ended');
    await sleep(250);
  }
  await page.reload();
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-testid=video]');
    const hls = window.liveshopPlayer?.hls;
    return hls?.levels[hls.currentLevel]?.details?.live === false && v.currentTime > 2;
  }, null, { timeout: 30_000 });
  console.log('VOD replay plays');
  assert.deepEqual(refused, [], 'the viewer page broke its Content-Security-Policy');
} finally {
  await browser.close();
}
