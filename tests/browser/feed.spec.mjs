// A viewer who never types a name, on a phone and on a desktop: the viewer page reads the room's
// public feed, so the pinned product with its countdown, the banner, the poll's tallies and the
// chat show at once and change live while the host runs the show (here through the HTTP API, as
// a host's tools would); the viewer buys without a name, and is asked for one only to vote.
//
//   LIVESHOP_URL=http://127.0.0.1:8080 \
//   LIVESHOP_HOST_TOKEN=$(cargo run -q -- token --role host --room demo) \
//   node --test tests/browser/feed.spec.mjs
//
// Screenshots: target/browser/feed-phone.png, feed-desktop.png (and feed-phone-unmute.png).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { BASE, HOST_TOKEN, launch, missing, SHOTS, SHOW, steps, WAIT, watchCsp, runTag } from './harness.mjs';

const ROOM = `${BASE}/v1/rooms/${encodeURIComponent(SHOW)}`;
const SHOP = `${BASE}/v1/shows/${encodeURIComponent(SHOW)}/shop`;
/** Not the products the other specs pin or sell in their deals first. */
const PRODUCT = 'silk-scarf';
let seq = 0;

async function json(url, { method = 'GET', body, token = HOST_TOKEN } = {}) {
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`${method} ${url}: HTTP ${res.status} ${JSON.stringify(data)}`);
  return data;
}

/** One command to the room as the host (or `token`), answered with its ack. */
function command(type, fields = {}, token = HOST_TOKEN) {
  seq += 1;
  return json(`${ROOM}/commands`, { method: 'POST', body: { type, id: `feed-${seq}`, ...fields }, token });
}

const views = {};
let browser;
let csp = [];

before(async () => {
  if (missing) return;
  mkdirSync(SHOTS, { recursive: true });
  browser = await launch();
  const sizes = {
    phone: { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true },
    desktop: { viewport: { width: 1366, height: 900 } },
  };
  for (const [name, options] of Object.entries(sizes)) {
    const page = await (await browser.newContext(options)).newPage();
    page.setDefaultTimeout(WAIT);
    page.on('pageerror', (e) => console.error(`[${name}] page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') console.error(`[${name}] console: ${m.text()}`); });
    csp = csp.concat(await watchCsp(page));
    views[name] = page;
  }
});

after(async () => {
  if (!browser) return;
  await Promise.allSettled(Object.entries(views).map(([name, page]) => page.screenshot({ path: `${SHOTS}/feed-${name}.png` })));
  await browser.close();
  if (csp.length) throw new Error(`the viewer page broke its Content-Security-Policy: ${csp.join('; ')}`);
});

test('a viewer who never names themselves sees the show live and buys in it', { skip: missing, timeout: 180_000 }, async (t) => {
  const tag = runTag();
  const pages = () => Object.values(views);
  const step = steps(t);

  await step('before anyone watches, the host pins a product with a countdown, sets a banner, opens a poll and chats', async () => {
    const { deals } = await json(`${SHOP}/deals`);
    for (const d of deals.filter((d) => d.sku === PRODUCT && d.active)) await json(`${SHOP}/deals/${d.id}/end`, { method: 'POST' });
    const { products } = await json(`${BASE}/v1/shows/${encodeURIComponent(SHOW)}`);
    const product = products.find((p) => p.id === PRODUCT);
    await command('product.pin', { product, countdown_ends_at: Date.now() + 10 * 60_000 });
    await command('banner.set', { text: `Free shipping today ${tag}` });
    const { state } = await json(`${ROOM}/feed`);
    if (state.poll?.open) await command('poll.close', { poll_id: state.poll.poll.id });
    await command('poll.open', { question: `Which colour next? ${tag}`, options: ['Red', 'Blue'] });
    await command('chat.send', { text: `Welcome everyone ${tag}` });
  });

  await step('both viewers see everything public at once, without a name', async () => {
    for (const page of pages()) {
      await page.goto(`${BASE}/watch/${encodeURIComponent(SHOW)}`);
      const card = page.locator(`[data-testid=product-card][data-product-id="${PRODUCT}"]`);
      await card.getByTestId('countdown').filter({ hasText: /Ends in 9:\d\d|Ends in 10:00/ }).waitFor();
      await card.getByTestId('live-price').filter({ hasText: /65/ }).waitFor();
      await page.getByTestId('banner').filter({ hasText: `Free shipping today ${tag}` }).waitFor();
      await page.getByTestId('chat-message').filter({ hasText: `Welcome everyone ${tag}` }).waitFor();
      assert.ok(await card.locator('img').evaluate((img) => img.complete && img.naturalWidth > 0), 'the demo product has a picture');
      // Nobody asked for a name: the chat composer waits for one, everything else is there.
      assert.ok(await page.getByTestId('chat-form').isHidden());
      assert.equal(await page.getByTestId('name-input').inputValue(), '');
    }
  });

  await step('the chat, the banner and the poll tallies arrive live', async () => {
    await command('chat.send', { text: `Two scarves left ${tag}` });
    await command('banner.set', { text: `Last chance ${tag}` });
    const voter = await json(`${ROOM}/guest`, { method: 'POST', body: { name: `Voter ${tag}` }, token: '' });
    // The snapshot may be shared for up to its max-age (1 s), so one read before the poll opened
    // can still be served: read until it shows this run's poll.
    let poll;
    for (let tries = 0; !poll && tries < 30; tries += 1) {
      const { state } = await json(`${ROOM}/feed`);
      if (state.poll?.poll.question.endsWith(tag)) poll = state.poll.poll;
      else await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(poll, "the feed's snapshot shows the poll within its max-age");
    await command('poll.vote', { poll_id: poll.id, option: 1 }, voter.token);
    for (const page of pages()) {
      await page.getByTestId('chat-message').filter({ hasText: `Two scarves left ${tag}` }).waitFor();
      await page.getByTestId('banner').filter({ hasText: `Last chance ${tag}` }).waitFor();
      await page.getByTestId('tab-poll').click();
      await page.getByTestId('poll-status').filter({ hasText: /Live poll · 1 vote$/ }).waitFor();
      assert.equal(await page.locator('[data-testid=poll-option][data-option-index="1"]').getAttribute('data-count'), '1');
      await page.getByTestId('tab-chat').click();
    }
  });

  await step('the host starts a flash deal: the price drops and the deal counts down on both', async () => {
    await json(`${SHOP}/deals`, {
      method: 'POST',
      body: { sku: PRODUCT, duration_secs: 300, discount: { percent: '20' }, quantity_cap: 10, per_buyer_cap: 2 },
    });
    for (const page of pages()) {
      const card = page.locator(`[data-testid=product-card][data-product-id="${PRODUCT}"]`);
      await card.getByTestId('deal-countdown').filter({ hasText: /[45]:\d\d/ }).waitFor();
      // 20 % off 65.00 is 52.00.
      await card.getByTestId('live-price').filter({ hasText: /52/ }).waitFor();
    }
  });

  await step('both feed readers count as watching', async () => {
    // Heartbeats reach the room as counts every 5 s.
    for (const page of pages()) {
      await page.waitForFunction(() => Number(document.querySelector('[data-testid=viewer-count] .n').textContent.replace(/\D/g, '')) >= 2);
    }
  });

  await step('the phone viewer puts the product in the cart and pays with the test provider, still nameless', async () => {
    const page = views.phone;
    const card = page.locator(`[data-testid=product-card][data-product-id="${PRODUCT}"]`);
    await card.getByTestId('add-to-cart').click();
    await card.getByTestId('card-message').filter({ hasText: 'Added to your cart' }).waitFor();
    await page.getByTestId('cart-count').filter({ hasText: '1' }).waitFor();
    await page.getByTestId('cart-button').click();
    const cart = page.getByTestId('cart');
    await cart.getByTestId('cart-total').filter({ hasText: /52/ }).waitFor();
    await cart.getByTestId('payment-method').selectOption('tok_visa');
    await cart.getByTestId('checkout-button').click();
    await cart.getByTestId('checkout-status').filter({ hasText: /Order #\d+ paid/ }).waitFor();
    await page.screenshot({ path: `${SHOTS}/feed-phone-paid.png` });
    await cart.getByTestId('cart-close').click();
    assert.equal(await page.getByTestId('name-input').inputValue(), '', 'no name was asked to buy');
  });

  await step('icons are drawn (SVG, or reactions this browser can draw) and the unmute button clears the banner', async () => {
    for (const page of pages()) {
      for (const where of ['viewer-count', 'cart-button']) {
        assert.equal(await page.getByTestId(where).locator('svg').count(), 1, `${where} has an SVG icon`);
      }
      const undrawable = await page.evaluate(async () => {
        const { canDraw } = await import('/web/client.js');
        return [...document.querySelectorAll('[data-testid=react-button]')].map((b) => b.textContent).filter((text) => !canDraw(text));
      });
      assert.deepEqual(undrawable, [], 'every reaction button shows something this browser draws');
    }
    // The button shows once the video plays (no stream here): show it beside a long banner.
    const page = views.phone;
    await command('banner.set', { text: `Free shipping on every order today only, while stocks last ${tag}` });
    await page.getByTestId('banner').filter({ hasText: 'while stocks last' }).waitFor();
    await page.evaluate(() => { document.querySelector('[data-testid=unmute]').hidden = false; });
    const [a, b] = [await page.getByTestId('unmute').boundingBox(), await page.getByTestId('banner').boundingBox()];
    const apart = a.x + a.width <= b.x || b.x + b.width <= a.x || a.y + a.height <= b.y || b.y + b.height <= a.y;
    assert.ok(apart, `"Tap to unmute" ${JSON.stringify(a)} and the banner ${JSON.stringify(b)} do not overlap`);
    assert.ok(await page.getByTestId('unmute').locator('svg').count() === 1, 'the unmute button has an SVG icon');
    await page.screenshot({ path: `${SHOTS}/feed-phone-unmute.png` });
    await page.evaluate(() => { document.querySelector('[data-testid=unmute]').hidden = true; });
  });

  await step('voting asks for a name, then the vote counts', async () => {
    const page = views.desktop;
    await page.getByTestId('tab-poll').click();
    await page.locator('[data-testid=poll-option][data-option-index="0"]').click();
    await page.getByTestId('join-feedback').filter({ hasText: 'Pick a name to vote' }).waitFor();
    await page.getByTestId('name-input').fill(`Nameless no more ${tag}`);
    await page.getByTestId('name-submit').click();
    await page.getByTestId('chat-form').waitFor({ state: 'visible' });
    await page.getByTestId('tab-poll').click();
    const mine = page.locator('[data-testid=poll-option][data-option-index="0"]');
    await mine.and(page.locator('[aria-pressed=true]')).waitFor();
    await page.getByTestId('poll-status').filter({ hasText: /Live poll · 2 votes$/ }).waitFor();
  });
});
