// What the browser specs share: the live edge node they drive (from the environment), Debian's
// Chromium with a desktop dashboard page and a phone-sized viewer page, the pages' errors on
// stderr (a spec's failure is then readable without a trace), and screenshots of both pages when
// the spec ends, also when a step failed.
import { before, after } from 'node:test';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const BASE = (process.env.LIVESHOP_URL || '').replace(/\/+$/, '');
export const HOST_TOKEN = process.env.LIVESHOP_HOST_TOKEN || '';
export const SHOW = process.env.LIVESHOP_SHOW || 'demo';
/** Screenshots go to target/browser/ at the repository root. */
export const SHOTS = resolve(dirname(fileURLToPath(import.meta.url)), '../../target/browser');
export const WAIT = 15_000;

// Words the room's chat filter passes: a random tag of letters and digits sometimes spells
// something it refuses (leetspeak included), and the test then fails for the wrong reason.
const WORDS = ['amber', 'birch', 'cedar', 'delta', 'ember', 'fjord', 'grove', 'heron', 'iris', 'juniper', 'kestrel', 'lupin', 'maple', 'nectar', 'olive', 'pebble'];

/** A tag that tells this run's names and messages apart (4,096 of them). */
export function runTag() {
  return Array.from({ length: 3 }, () => WORDS[Math.floor(Math.random() * WORDS.length)]).join('-');
}
/** A skip reason when there is no node to drive, else false. */
export const missing = !BASE || !HOST_TOKEN ? 'set LIVESHOP_URL and LIVESHOP_HOST_TOKEN to run against a live edge node' : false;

/** Debian's headless Chromium ($CHROMIUM), quiet: nothing it does by itself leaves the machine. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * Records every Content-Security-Policy violation `page` reports (the `securitypolicyviolation`
 * event, and Chromium's console line for what never reaches the page, such as a refused frame)
 * in the returned array: the pages must work under their policy without one.
 */
export async function watchCsp(page) {
  const seen = [];
  await page.exposeFunction('__liveshopCspViolation', (v) => seen.push(v));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__liveshopCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) seen.push(m.text()); });
  return seen;
}

/**
 * Registers the spec's before and after hooks. The returned object gets `dash` and `viewer`
 * pages in before (so read them in the tests), and `csp`, their policy violations, which after
 * asserts there were none of; after also saves `{prefix}dashboard.png` and `{prefix}viewer.png`
 * and closes the browser.
 */
export function usePages(prefix = '') {
  const pages = {};
  let browser;
  before(async () => {
    if (missing) return;
    mkdirSync(SHOTS, { recursive: true });
    browser = await launch();
    const dashContext = await browser.newContext({ viewport: { width: 1366, height: 900 } });
    const viewerContext = await browser.newContext({
      viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
    });
    pages.dash = await dashContext.newPage();
    pages.viewer = await viewerContext.newPage();
    pages.csp = { dashboard: await watchCsp(pages.dash), viewer: await watchCsp(pages.viewer) };
    for (const [name, page] of [['dashboard', pages.dash], ['viewer', pages.viewer]]) {
      page.setDefaultTimeout(WAIT);
      page.on('pageerror', (e) => console.error(`[${name}] page error: ${e.message}`));
      page.on('console', (m) => { if (m.type() === 'error') console.error(`[${name}] console: ${m.text()}`); });
    }
  });
  after(async () => {
    if (!browser) return;
    await Promise.allSettled([
      pages.dash.screenshot({ path: `${SHOTS}/${prefix}dashboard.png`, fullPage: true }),
      pages.viewer.screenshot({ path: `${SHOTS}/${prefix}viewer.png` }),
    ]);
    await browser.close();
    for (const [name, seen] of Object.entries(pages.csp)) {
      if (seen.length) throw new Error(`the ${name} page broke its Content-Security-Policy: ${seen.join('; ')}`);
    }
  });
  return pages;
}

/** Waits until the page's room connection has its welcome. */
export async function connected(page) {
  await page.locator('[data-testid=conn-status][data-state=open]').waitFor({ state: 'attached' });
}

/**
 * The steps of a spec's test `t`, run in order: once one fails the rest are skipped (they would
 * only fail for the same reason), so the first failure is the one reported.
 */
export function steps(t) {
  let broken = false;
  return (name, fn) => t.test(name, { skip: broken && 'an earlier step failed' }, async () => {
    try {
      await fn();
    } catch (e) {
      broken = true;
      throw e;
    }
  });
}
