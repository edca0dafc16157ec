// The viewer page and the host dashboard, driven in Debian's Chromium against a live edge node:
// a viewer (on a phone) chats and the host sees it, the host opens a poll and sees the viewer's
// vote in the tally, the host pins a product and the viewer sees its card over the video.
//
//   LIVESHOP_URL=http://127.0.0.1:8080 \
//   LIVESHOP_HOST_TOKEN=$(cargo run -q -- token --role host --room demo) \
//   node --test tests/browser/show.spec.mjs
//
// Optional: LIVESHOP_SHOW (default demo), CHROMIUM (default /usr/bin/chromium). Screenshots of
// both pages go to target/browser/ at the repository root, also when a step fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BASE, HOST_TOKEN, SHOW, WAIT, connected, missing, usePages, runTag } from './harness.mjs';

const pages = usePages();

test('a viewer chats, votes and sees a pinned product while the host runs the show', { skip: missing, timeout: 180_000 }, async (t) => {
  const { dash, viewer } = pages;
  const tag = runTag();

  await t.test('both pages connect', async () => {
    await dash.goto(`${BASE}/dashboard/${encodeURIComponent(SHOW)}#token=${HOST_TOKEN}`);
    await connected(dash);
    assert.match(await dash.locator('[data-testid=my-role]').textContent(), /host/);

    await viewer.goto(`${BASE}/watch/${encodeURIComponent(SHOW)}`);
    await viewer.getByTestId('name-input').fill(`Tester ${tag}`);
    await viewer.getByTestId('name-submit').click();
    await connected(viewer);
  });

  await t.test('the host sees the viewer\'s chat message', async () => {
    const text = `Hello from the browser test ${tag}`;
    await viewer.getByTestId('chat-input').fill(text);
    await viewer.getByTestId('chat-send').click();
    // In chat, or in the review queue if the room holds viewer messages.
    const seen = dash.locator('[data-testid=chat-message], [data-testid=queue-item]').filter({ hasText: text }).first();
    try {
      await seen.waitFor();
    } catch (e) {
      const feedback = await viewer.getByTestId('chat-feedback').textContent();
      throw new Error(`the dashboard never showed the message (viewer feedback: ${JSON.stringify(feedback)})`, { cause: e });
    }
    await viewer.locator('[data-testid=chat-message]').filter({ hasText: text }).first().waitFor();
  });

  await t.test('the host opens a poll, the viewer votes and the tally updates', async () => {
    const close = dash.getByTestId('poll-close');
    if (await close.isVisible()) {
      await close.click();
      await close.waitFor({ state: 'detached' });
    }
    const question = `Which colour next? (${tag})`;
    await dash.getByTestId('poll-question').fill(question);
    await dash.getByTestId('poll-add-option').click();
    const inputs = dash.getByTestId('poll-option-input');
    await inputs.nth(0).fill('Red');
    await inputs.nth(1).fill('Blue');
    await inputs.nth(2).fill('Green');
    await dash.getByTestId('poll-open').click();
    await dash.getByTestId('poll-current').filter({ hasText: question }).waitFor();

    await viewer.getByTestId('tab-poll').click();
    await viewer.getByTestId('poll').filter({ hasText: question }).waitFor();
    const blue = viewer.locator('[data-testid=poll-option][data-option-index="1"]');
    await blue.click();
    await viewer.locator('[data-testid=poll-option][data-option-index="1"][aria-pressed=true]').waitFor();

    await dash.waitForFunction(() => {
      const row = document.querySelector('[data-testid=tally-row][data-option-index="1"]');
      return row && Number(row.dataset.count) >= 1;
    }, null, { timeout: WAIT });
    const total = Number(await dash.getByTestId('poll-total').getAttribute('data-total'));
    assert.ok(total >= 1, `the tally total is ${total}`);
  });

  await t.test('the host pins a product and its card appears over the viewer\'s video', async () => {
    const rows = dash.getByTestId('product-row');
    await rows.first().waitFor().catch(() => {
      throw new Error(`GET /v1/shows/${SHOW} listed no products to pin`);
    });
    // Start from no pins, so a pin is always a fresh product.pinned (and never too_many_pins).
    const unpin = dash.getByTestId('unpin-button');
    for (let n = await unpin.count(); n > 0; n = await unpin.count()) {
      await unpin.first().click();
      await dash.waitForFunction((before) => document.querySelectorAll('[data-testid=unpin-button]').length < before, n, { timeout: WAIT });
    }
    const row = rows.first();
    const id = await row.getAttribute('data-product-id');
    const title = (await row.getByTestId('product-title').textContent()).trim();
    await row.getByTestId('countdown-input').fill('15');
    await row.getByTestId('pin-button').click();
    await row.getByTestId('unpin-button').waitFor();

    await viewer.getByTestId('tab-chat').click();
    const card = viewer.locator(`[data-testid=product-card][data-product-id="${id}"]`);
    await card.waitFor({ state: 'visible' });
    assert.match(await card.textContent(), new RegExp(title.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    await card.getByTestId('countdown').waitFor();
    // Over the video: the card lies within the stage.
    const stage = await viewer.locator('.stage').boundingBox();
    const box = await card.boundingBox();
    assert.ok(box.y >= stage.y && box.y + box.height <= stage.y + stage.height + 1, 'the card is over the video');
  });
});
