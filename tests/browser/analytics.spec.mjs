// The show's analytics, driven in Debian's Chromium against a live edge node: a viewer watches
// (on a phone), the host pins a product from the dashboard, the viewer clicks it, adds it to the
// cart and pays with the test Visa; then the dashboard's live analytics panel and the report page
// (desktop and phone) draw their charts with that activity and show the same totals as the JSON
// API, the report's error states read clearly, and both CSV downloads parse (Python's csv module)
// with column sums equal to the JSON.
//
//   LIVESHOP_URL=http://127.0.0.1:8080 \
//   LIVESHOP_HOST_TOKEN=$(cargo run -q -- token --role host --room demo) \
//   node --test tests/browser/analytics.spec.mjs
//
// The other specs may have run against the same node first: the figures are checked against the
// API's and as at least what this spec did, never as absolute numbers. Screenshots:
// target/browser/dashboard-analytics.png, report-desktop.png, report-phone.png and
// report-not-found.png.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { BASE, connected, HOST_TOKEN, missing, SHOTS, SHOW, steps, usePages, WAIT, watchCsp, runTag } from './harness.mjs';

const pages = usePages('analytics-');
const ANALYTICS = `${BASE}/v1/shows/${encodeURIComponent(SHOW)}/analytics`;
const REPORT_PAGE = `${BASE}/shows/${encodeURIComponent(SHOW)}/report`;
/** The dashboard's panel reads the report every 10 s. */
const PANEL_WAIT = 30_000;

async function get(url, token = HOST_TOKEN) {
  const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
  assert.ok(res.ok, `GET ${url}: HTTP ${res.status}`);
  return res;
}
const report = async () => (await get(`${ANALYTICS}?previous=0`)).json();

/** Minor units in `currency` of a list of amounts (0 when it has none). */
const minorIn = (list, currency) => list.find((m) => m.currency === currency)?.minor || 0;
/** The currency's minor-unit exponent, as Intl knows it. */
const exponent = (currency) => new Intl.NumberFormat('en', { style: 'currency', currency }).resolvedOptions().maximumFractionDigits;
/** "15.20" for 1520 EUR: the digits a page shows, whatever the sign and separators. */
function digits({ minor, currency }) {
  const e = exponent(currency);
  const s = String(minor).padStart(e + 1, '0');
  return e ? `${s.slice(0, -e)}.${s.slice(-e)}` : s;
}

/** Polls until `check(value)` holds for `fetchIt()`'s value; returns that value. */
async function until(fetchIt, check, what, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fetchIt();
    if (check(last)) return last;
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}; last: ${JSON.stringify(last)?.slice(0, 600)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** The API's value a page keeps beside a figure (`data-value`). */
const shown = async (locator) => JSON.parse(await locator.getAttribute('data-value'));

/** Python reads both CSVs with its csv module and checks their sums against `expected`. */
const CHECK_CSV = `
import csv, io, json, sys
from decimal import Decimal
job = json.load(sys.stdin)
out = {}
for name, want in job.items():
    rows = list(csv.DictReader(io.StringIO(want["text"], newline="")))
    assert len(rows) in want["rows"], f"{name}: {len(rows)} rows, expected one of {want['rows']}"
    sums = {}
    for col, n in want["ints"].items():
        sums[col] = sum(int(r[col]) for r in rows)
        assert sums[col] == n, f"{name}: {col} sums to {sums[col]}, the JSON says {n}"
    for col, m in want["money"].items():
        total = sum((Decimal(r[col]) for r in rows), Decimal(0))
        expect = Decimal(m["minor"]).scaleb(-m["exp"])
        assert total == expect, f"{name}: {col} sums to {total}, the JSON says {expect}"
        sums[col] = str(total)
    out[name] = {"rows": len(rows), "sums": sums}
print(json.dumps(out))
`;

/** What a CSV's columns must sum to: counts, and amounts per currency in major units. */
function expectation(text, rows, counts, money, prefix) {
  const ints = Object.fromEntries(Object.entries(counts));
  const amounts = Object.fromEntries(Object.entries(money).map(([c, minor]) => [`${prefix}_${c}`, { minor, exp: exponent(c) }]));
  return { text, rows, ints, money: amounts };
}

test('the dashboard and the report show the show\'s analytics', { skip: missing, timeout: 240_000 }, async (t) => {
  const { dash, viewer } = pages;
  const tag = runTag();
  let before;
  let id;
  let card;
  let price;
  /** The viewer's own token, which the report must refuse. */
  let viewerToken;
  const step = steps(t);
  /** The report page in a browser context of its own (desktop or phone), its policy watched. */
  const reportPage = async (options) => {
    const context = await dash.context().browser().newContext(options);
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT);
    pages.csp[`report #${Object.keys(pages.csp).length - 1}`] = await watchCsp(page);
    page.on('pageerror', (e) => console.error(`[report] page error: ${e.message}`));
    return page;
  };

  await step('a viewer watches and the host pins a product from the dashboard', async () => {
    before = (await report()).totals;
    await dash.goto(`${BASE}/dashboard/${encodeURIComponent(SHOW)}#token=${HOST_TOKEN}`);
    await connected(dash);
    await viewer.goto(`${BASE}/watch/${encodeURIComponent(SHOW)}`);
    // A name opens the socket that reports the viewer's impressions and clicks.
    await viewer.getByTestId('name-input').fill(`Analyst ${tag}`);
    const guest = viewer.waitForResponse((r) => r.url().endsWith('/guest') && r.request().method() === 'POST');
    await viewer.getByTestId('name-submit').click();
    viewerToken = (await (await guest).json()).token;
    await connected(viewer);

    // A product the shop sells and the show has.
    await dash.getByTestId('deal-row').first().waitFor();
    const sellable = await dash.getByTestId('deal-row').evaluateAll((rows) => rows.map((r) => r.dataset.productId));
    const pinnable = await dash.getByTestId('product-row').evaluateAll((rows) => rows.map((r) => r.dataset.productId));
    const both = pinnable.filter((p) => sellable.includes(p));
    id = both[1] ?? both[0];
    assert.ok(id, `no product is both in the show (${pinnable}) and in its shop (${sellable})`);
    const row = dash.locator(`[data-testid=product-row][data-product-id="${id}"]`);
    // Pinned anew by this spec, so the report has its moment.
    if (await row.getByTestId('unpin-button').count()) {
      await row.getByTestId('unpin-button').click();
      await row.getByTestId('pin-button').waitFor();
    }
    if ((await dash.getByTestId('unpin-button').count()) >= 3) {
      await dash.getByTestId('unpin-button').first().click();
      await dash.waitForFunction(() => document.querySelectorAll('[data-testid=unpin-button]').length < 3);
    }
    await row.getByTestId('pin-button').click();
    await row.getByTestId('unpin-button').waitFor();
  });

  await step('the viewer clicks the product, adds it to the cart and pays with the test Visa', async () => {
    card = viewer.locator(`[data-testid=product-card][data-product-id="${id}"]`);
    await card.getByTestId('card-shop').waitFor({ state: 'visible' });
    price = JSON.parse(await card.getByTestId('card-shop').getAttribute('data-price'));
    assert.ok(Number(await card.getByTestId('stock-left').getAttribute('data-available')) > 0, 'the product has stock');
    await card.locator('.card-inner').click();
    await card.getByTestId('add-to-cart').click();
    await viewer.locator('[data-testid=cart-count]', { hasText: /^1$/ }).waitFor();
    await viewer.getByTestId('cart-button').click();
    const cart = viewer.getByTestId('cart');
    await cart.getByTestId('cart-line').first().waitFor();
    await cart.getByTestId('payment-method').selectOption('tok_visa');
    await cart.getByTestId('checkout-button').click();
    await cart.locator('[data-testid=checkout-status][data-state=paid]').waitFor();
    await viewer.getByTestId('cart-close').click();
  });

  await step('the API counts it all', async () => {
    await until(report, ({ totals: t, products }) => t.orders_paid >= before.orders_paid + 1
      && t.units >= before.units + 1
      && t.add_to_carts >= before.add_to_carts + 1
      && t.checkouts >= before.checkouts + 1
      && t.impressions >= before.impressions + 1
      && t.clicks >= before.clicks + 1
      && t.unique_viewers >= 1
      && minorIn(t.gmv, price.currency) >= minorIn(before.gmv, price.currency) + price.minor
      && products.some((p) => p.product_id === id && p.orders_paid >= 1),
    'the viewer\'s impression, click, cart, checkout and payment in the report');
  });

  await step('the dashboard\'s analytics panel draws the show and its sales, as the API says', async () => {
    const panel = dash.getByTestId('analytics-panel');
    const orders = panel.getByTestId('live-orders');
    await dash.waitForFunction((n) => {
      const v = document.querySelector('[data-testid=live-orders]')?.dataset.value;
      return v !== undefined && Number(v) >= n;
    }, before.orders_paid + 1, { timeout: PANEL_WAIT });
    const api = (await report()).totals;
    assert.equal(await shown(orders), api.orders_paid);
    assert.deepEqual(await shown(panel.getByTestId('live-gmv')), api.gmv);
    assert.ok(api.orders_paid > 0 && minorIn(api.gmv, price.currency) > 0);
    assert.equal((await orders.textContent()).trim(), new Intl.NumberFormat('en-US').format(api.orders_paid));
    for (const m of api.gmv) assert.ok((await panel.getByTestId('live-gmv').textContent()).includes(digits(m)));
    for (const chart of ['chart-concurrency', 'chart-revenue', 'chart-funnel']) {
      const el = panel.getByTestId(chart);
      assert.ok(await el.locator('.uplot canvas').count(), `${chart} is a uPlot`);
      assert.ok(await el.getByTestId('chart-empty').isHidden(), `${chart} has data`);
    }
    await panel.locator(`[data-testid=top-product][data-product-id="${id}"]`).waitFor();
    assert.match(await panel.getByTestId('report-link').getAttribute('href'), new RegExp(`^/shows/${SHOW}/report#token=.+`));
    await panel.scrollIntoViewIfNeeded();
    await panel.screenshot({ path: `${SHOTS}/dashboard-analytics.png` });
  });

  /** Opens the report and checks it against its own answer and the API; returns the page. */
  async function checkReport(page, width) {
    const answered = page.waitForResponse((r) => r.url().startsWith(`${ANALYTICS}?`));
    await page.goto(`${REPORT_PAGE}#token=${HOST_TOKEN}`);
    const r = await (await answered).json();
    await page.getByTestId('report').waitFor();
    assert.ok(!page.url().includes('token'), 'the token left the address bar');

    // Every figure as the report answered it, and the sales as the API says now.
    const figures = {
      'total-viewers': 'unique_viewers', 'total-peak': 'peak_viewers', 'total-watch': 'avg_watch_ms',
      'total-orders': 'orders_paid', 'total-units': 'units', 'total-gmv': 'gmv', 'total-aov': 'aov',
      'total-conversion': 'conversion', 'total-refunds': 'refunds',
    };
    const totals = page.getByTestId('report-totals');
    for (const [testid, key] of Object.entries(figures)) {
      assert.deepEqual(await shown(totals.getByTestId(testid)), r.totals[key], `${testid} at ${width}px`);
    }
    const api = (await report()).totals;
    for (const key of ['orders_paid', 'units', 'gmv', 'buyers']) assert.deepEqual(r.totals[key], api[key], key);
    assert.ok(api.orders_paid >= before.orders_paid + 1 && api.unique_viewers >= 1);
    assert.equal((await totals.getByTestId('total-orders').textContent()).trim(), new Intl.NumberFormat('en-US').format(api.orders_paid));
    for (const m of api.gmv) assert.ok((await totals.getByTestId('total-gmv').textContent()).includes(digits(m)));

    // Every chart drawn by uPlot, with data, within the page's width.
    for (const chart of ['chart-concurrency', 'chart-retention', 'chart-revenue', 'chart-funnel', 'chart-watch-time']) {
      const el = page.getByTestId(chart);
      await el.locator('.uplot canvas').waitFor();
      const box = await el.locator('.uplot').boundingBox();
      assert.ok(box.x >= 0 && box.x + box.width <= width, `${chart} fits ${width}px (${JSON.stringify(box)})`);
    }
    for (const chart of ['chart-concurrency', 'chart-retention', 'chart-revenue', 'chart-funnel']) {
      assert.ok(await page.getByTestId(chart).getByTestId('chart-empty').isHidden(), `${chart} has data`);
    }
    assert.ok(Number(await page.getByTestId('chart-concurrency').getAttribute('data-points')) > 0);
    assert.equal(await page.evaluate(() => document.documentElement.scrollWidth <= innerWidth), true, `no sideways scroll at ${width}px`);

    // The product bought, in the table as in the API.
    const row = page.locator(`[data-testid=product-row][data-product-id="${id}"]`);
    const product = r.products.find((p) => p.product_id === id);
    assert.equal(await row.locator('[data-col=orders_paid]').textContent(), String(product.orders_paid));
    assert.equal(await row.locator('[data-col=units]').textContent(), String(product.units));
    assert.ok((await row.locator('[data-col=revenue]').textContent()).includes(digits(product.revenue[0])));
    assert.equal(await page.getByTestId('product-row').count(), r.products.length);

    // This spec's pin among the moments, and the funnel's steps with their rates.
    assert.ok(await page.locator('[data-testid=moment][data-kind=product_pinned]').count() >= 1);
    assert.equal(await page.getByTestId('funnel-step').count(), 5);
    const paid = page.locator('[data-testid=funnel-step][data-step=orders_paid]');
    assert.equal(Number(await paid.getAttribute('data-count')), r.totals.orders_paid);
    assert.equal(await page.getByTestId('current-row').count(), 1);
    await page.getByTestId('previous-table').locator('tbody tr').first().waitFor();
    return page;
  }

  let desktop;
  await step('the report page at 1280 px: totals as the API says, every chart, the product bought', async () => {
    desktop = await checkReport(await reportPage({ viewport: { width: 1280, height: 900 } }), 1280);
    // Sorting by units puts the most sold first.
    await desktop.getByTestId('sort-units').click();
    const units = await desktop.locator('[data-testid=product-row] [data-col=units]').allTextContents();
    assert.deepEqual(units, [...units].sort((a, b) => Number(b.replace(/\D/g, '')) - Number(a.replace(/\D/g, ''))));
    assert.equal(await desktop.locator('th[aria-sort=descending]').count(), 1);
    await desktop.screenshot({ path: `${SHOTS}/report-desktop.png`, fullPage: true });
    // The charts follow the window's width.
    await desktop.setViewportSize({ width: 600, height: 900 });
    await desktop.waitForFunction(() => [...document.querySelectorAll('.uplot')].every((u) => u.getBoundingClientRect().right <= 600));
  });

  await step('the report page at 390 px (a phone)', async () => {
    const phone = await reportPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    await checkReport(phone, 390);
    await phone.screenshot({ path: `${SHOTS}/report-phone.png`, fullPage: true });
  });

  await step('the download buttons save both CSVs', async () => {
    for (const [file, testid] of [['minutes.csv', 'download-minutes'], ['products.csv', 'download-products']]) {
      const saved = desktop.waitForEvent('download');
      await desktop.getByTestId(testid).click();
      const download = await saved;
      assert.equal(download.suggestedFilename(), `${SHOW}-${file}`);
      const text = await readFile(await download.path(), 'utf8');
      assert.match(text.split('\n')[0], file === 'minutes.csv' ? /^minute,start_ms,watching,/ : /^product_id,title,impressions,/);
    }
    assert.equal(await desktop.getByTestId('report-feedback').textContent(), '');
  });

  await step('both CSVs parse in Python and their columns sum to the JSON\'s figures', async () => {
    // Read between two answers that agree, so the files and the JSON describe the same moment.
    const read = async () => {
      const first = await report();
      const minutes = await (await get(`${ANALYTICS}/minutes.csv`)).text();
      const products = await (await get(`${ANALYTICS}/products.csv`)).text();
      const second = await report();
      return { first, second, minutes, products };
    };
    const same = ({ first, second }) => JSON.stringify([first.totals.orders_paid, first.totals.units, first.totals.gmv,
      first.totals.impressions, first.totals.clicks, first.products])
      === JSON.stringify([second.totals.orders_paid, second.totals.units, second.totals.gmv,
        second.totals.impressions, second.totals.clicks, second.products]);
    const { first: r, second, minutes, products } = await until(read, same, 'two equal answers around the CSVs');
    const sum = (rows, key) => rows.reduce((a, p) => a + p[key], 0);
    const revenue = {};
    for (const p of r.products) for (const m of p.revenue) revenue[m.currency] = (revenue[m.currency] || 0) + m.minor;
    const t = r.totals;
    const job = {
      minutes: expectation(minutes, [r.minutes.length, second.minutes.length],
        { orders_paid: t.orders_paid, units: t.units, impressions: t.impressions, clicks: t.clicks },
        Object.fromEntries(t.gmv.map((m) => [m.currency, m.minor])), 'gmv'),
      // A product counts each paid order it is in: its orders sum to the table's, not to the
      // orders paid; its revenue is its lines' (no tax or shipping), as the JSON's table says.
      products: expectation(products, [r.products.length],
        { orders_paid: sum(r.products, 'orders_paid'), units: t.units, impressions: t.impressions, clicks: t.clicks },
        revenue, 'revenue'),
    };
    assert.ok(t.orders_paid >= before.orders_paid + 1 && job.products.ints.orders_paid >= t.orders_paid);
    const py = spawnSync('python3', ['-c', CHECK_CSV], { input: JSON.stringify(job), encoding: 'utf8' });
    assert.equal(py.status, 0, `python3: ${py.stderr}`);
    const sums = JSON.parse(py.stdout);
    assert.equal(sums.minutes.sums[`gmv_${price.currency}`], digits({ minor: minorIn(t.gmv, price.currency), currency: price.currency }));
  });

  await step('the report says what is wrong without a token, with a refused one, a viewer\'s, or no such show', async () => {
    const page = await reportPage({ viewport: { width: 1280, height: 900 } });
    const error = page.getByTestId('report-error');
    await page.goto(REPORT_PAGE);
    await page.locator('[data-testid=report-error][data-kind=no-token]').waitFor();
    assert.match(await error.textContent(), /needs a token/);
    assert.ok(await page.getByTestId('report').isHidden());

    // Signed with another secret.
    const forged = `${HOST_TOKEN.slice(0, HOST_TOKEN.lastIndexOf('.'))}.${'A'.repeat(43)}`;
    await page.goto(`${REPORT_PAGE}#token=${forged}`);
    await page.reload();
    await page.locator('[data-testid=report-error][data-kind=unauthorized]').waitFor();

    await page.goto(`${REPORT_PAGE}#token=${viewerToken}`);
    await page.reload();
    await page.locator('[data-testid=report-error][data-kind=forbidden]').waitFor();

    await page.goto(`${BASE}/shows/no-such-show-${tag}/report#token=${HOST_TOKEN}`);
    await page.locator('[data-testid=report-error][data-kind=not-found]').waitFor();
    await page.screenshot({ path: `${SHOTS}/report-not-found.png` });
  });
});
