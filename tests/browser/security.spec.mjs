// The pages under their security headers, in Debian's Chromium against a live edge node: each
// page sends a Content-Security-Policy without `unsafe-*` and works under it (the harness fails
// any spec whose pages report a violation), an injected inline script or handler does not run,
// no other site can frame the pages, and the dashboard takes its host token out of the URL at
// once and still works after a reload.
//
//   LIVESHOP_URL=http://127.0.0.1:8080 \
//   LIVESHOP_HOST_TOKEN=$(cargo run -q -- token --role host --room demo) \
//   node --test tests/browser/security.spec.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BASE, HOST_TOKEN, SHOW, WAIT, connected, launch, missing, usePages, watchCsp } from './harness.mjs';

const pages = usePages('security-');

/** Waits until `seen` (from `watchCsp`) has `n` entries matching `pattern`. */
async function reported(seen, pattern, n = 1) {
  const deadline = Date.now() + WAIT;
  while (seen.filter((v) => pattern.test(v)).length < n) {
    assert.ok(Date.now() < deadline, `expected ${n} reports matching ${pattern}; got ${JSON.stringify(seen)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function assertSecurityHeaders(headers, frameAncestors) {
  const csp = headers['content-security-policy'] || '';
  assert.match(csp, /(^|; )script-src 'self'(;|$)/);
  assert.match(csp, new RegExp(`frame-ancestors ${frameAncestors}$`));
  assert.doesNotMatch(csp, /unsafe/);
  assert.equal(headers['x-content-type-options'], 'nosniff');
  assert.equal(headers['referrer-policy'], 'no-referrer');
}

test('the pages work under their security headers', { skip: missing, timeout: 120_000 }, async (t) => {
  const { dash, viewer } = pages;
  const show = encodeURIComponent(SHOW);

  await t.test('the dashboard takes its token out of the URL and keeps it for a reload', async () => {
    const page = await dash.goto(`${BASE}/dashboard/${show}#token=${HOST_TOKEN}`);
    assertSecurityHeaders(page.headers(), "'none'");
    await connected(dash);
    assert.equal(dash.url(), `${BASE}/dashboard/${show}`);
    assert.equal(await dash.evaluate(() => location.hash), '');
    await dash.reload();
    await connected(dash);
    assert.match(await dash.locator('[data-testid=my-role]').textContent(), /host/);
    assert.ok(!dash.url().includes('token'));
    // The shop's part of the dashboard found the token too.
    await dash.locator('[data-testid=deal-row]').first().waitFor();
  });

  await t.test('the viewer page plays its part: chat and product pictures', async () => {
    const page = await viewer.goto(`${BASE}/watch/${show}`);
    assertSecurityHeaders(page.headers(), "'none'");
    await viewer.getByTestId('name-input').fill('Policy tester');
    await viewer.getByTestId('name-submit').click();
    await connected(viewer);
    await viewer.getByTestId('chat-input').fill('under a strict policy');
    await viewer.getByTestId('chat-send').click();
    await viewer.locator('[data-testid=chat-message]').filter({ hasText: 'under a strict policy' }).first().waitFor();

    // What the media origin serves on the node's port declares its type too.
    for (const path of ['/media/player.js', `/hls/${show}/master.m3u8`, `/whip/${show}`]) {
      const r = await viewer.request.get(`${BASE}${path}`);
      assert.equal(r.headers()['x-content-type-options'], 'nosniff', path);
    }
  });

  await t.test('an injected inline script and handler do not run', async () => {
    const ran = await viewer.evaluate(async () => {
      const s = document.createElement('script');
      s.textContent = 'window.__injected = true';
      document.body.append(s);
      const b = document.createElement('button');
      b.setAttribute('onclick', 'window.__clicked = true');
      document.body.append(b);
      b.click();
      b.remove();
      await new Promise((r) => setTimeout(r, 100));
      return { script: window.__injected === true, handler: window.__clicked === true };
    });
    assert.deepEqual(ran, { script: false, handler: false });
    await reported(pages.csp.viewer, /script-src/, 2);
    // Those refusals were this test's doing, not the page's.
    pages.csp.viewer.length = 0;
  });

  await t.test('no other site can frame the dashboard or the viewer page', async () => {
    const browser = await launch();
    try {
      const page = await browser.newPage();
      const seen = await watchCsp(page);
      await page.setContent(
        `<iframe src="${BASE}/dashboard/${show}"></iframe><iframe src="${BASE}/watch/${show}"></iframe>`,
      );
      await reported(seen, /frame-ancestors/, 2);
      for (const frame of page.frames().slice(1)) {
        assert.ok(!(await frame.locator('[data-testid=show-title]').count()), `${frame.url()} was framed`);
      }
    } finally {
      await browser.close();
    }
  });
});
