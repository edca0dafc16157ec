// Commerce on the host dashboard: a flash deal control per SKU (start with a discount, a
// duration and caps; running deals with their countdown, units left and an End button) and the
// show's orders with the revenue, kept live from the shop's feed and by polling the orders.
import { dashboardToken, formatDuration, formatMoney, h, shopFeed, showFromLocation, tokenClaims } from './client.js';

const show = showFromLocation();
const BASE = `/v1/shows/${encodeURIComponent(show)}/shop`;
/** Orders change without the feed noticing (a payment result): poll them this often. */
const ORDERS_EVERY_MS = 2000;
/** Payment states that count as money in. */
const PAID = 'paid';

const $ = (sel) => document.querySelector(sel);
const els = {
  deals: $('[data-testid=deals]'),
  dealsFeedback: $('[data-testid=deals-feedback]'),
  orders: $('[data-testid=orders]'),
  ordersCount: $('[data-testid=orders-count]'),
  revenue: $('[data-testid=revenue]'),
};
const token = dashboardToken(show);
/** The shop's live feed (products and clock); connected below only for a signed-in host. */
let feed = null;
let lastOrders = '';

const sentence = (s) => (s ? s[0].toUpperCase() + s.slice(1) : s);

async function call(path, { method = 'GET', body } = {}) {
  const headers = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error(sentence(data?.error?.message) || `The shop answered HTTP ${res.status}`);
  return data;
}

function feedback(text, kind = 'error') {
  els.dealsFeedback.textContent = text;
  els.dealsFeedback.dataset.kind = kind === 'ok' ? 'info' : '';
}

// ---------- Flash deals ----------

/** A number field with a label; the row keeps it, so typing survives live updates. */
function field(label, testid, attrs) {
  const input = h('input', { type: 'number', testid, required: true, ...attrs });
  return [h('label', {}, label, input), input];
}

/** How long a deal kept on for the replay lasts after its countdown: the shop's limit. */
const REPLAY_SECS = 7 * 24 * 3600;

/** One SKU's row: built once, its status refreshed from the feed. */
function dealRow(p, v) {
  const [pctLabel, pct] = field('Discount %', 'deal-percent', { min: '1', max: '95', step: '1', value: '20' });
  const [minLabel, minutes] = field('Minutes', 'deal-duration', { min: '1', max: '1440', step: '1', value: '5' });
  const [capLabel, cap] = field('Units', 'deal-cap', { min: '1', step: '1', value: '10' });
  const [perLabel, per] = field('Per buyer', 'deal-per-buyer', { min: '1', step: '1', value: '2' });
  // The replay sells at the price now unless the deal is kept on for it (a week at most).
  const replay = h('input', { type: 'checkbox', testid: 'deal-replay' });
  const replayLabel = h('label', { class: 'check' }, replay, ' Keep for the replay (7 days)');
  const form = h('form', { class: 'deal-form', testid: 'deal-form' },
    h('div', { class: 'deal-fields' }, pctLabel, minLabel, capLabel, perLabel, replayLabel),
    h('button', { type: 'submit', class: 'small', testid: 'deal-start' }, 'Start flash deal'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      await call('/deals', {
        method: 'POST',
        body: {
          sku: v.sku,
          duration_secs: Math.round(Number(minutes.value) * 60),
          discount: { percent: String(pct.value) },
          quantity_cap: Number(cap.value),
          per_buyer_cap: Number(per.value),
          ...(replay.checked ? { replay_secs: REPLAY_SECS } : {}),
        },
      });
      feedback(`Flash deal started on ${p.title}`, 'ok');
    } catch (err) {
      feedback(`${p.title}: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  });
  const title = p.title + (v.title ? ` · ${v.title}` : '');
  return h('div', { class: 'item deal-row', testid: 'deal-row', dataset: { productId: p.id, sku: v.sku } },
    h('div', {}, h('b', {}, title), ' ', h('span', { class: 'muted', testid: 'deal-product-info' })),
    h('div', { class: 'deal-running', testid: 'deal-running', hidden: true }),
    form);
}

function renderDeals() {
  const rows = new Map([...els.deals.querySelectorAll('[data-testid=deal-row]')].map((r) => [r.dataset.sku, r]));
  const want = [];
  for (const p of [...feed.products.values()].sort((a, b) => a.title.localeCompare(b.title))) {
    for (const v of p.variants || []) {
      const row = rows.get(v.sku) || dealRow(p, v);
      rows.delete(v.sku);
      fillDealRow(row, v);
      want.push(row);
    }
  }
  // Appending moves existing rows rather than rebuilding them: inputs keep focus and values.
  for (const r of rows.values()) r.remove();
  want.forEach((r, i) => { if (els.deals.children[i] !== r) els.deals.insertBefore(r, els.deals.children[i] || null); });
  if (!want.length) els.deals.replaceChildren(h('p', { class: 'empty' }, 'The shop has no products yet.'));
  else els.deals.querySelector(':scope > .empty')?.remove();
}

function fillDealRow(row, v) {
  row.querySelector('[data-testid=deal-product-info]').textContent =
    `${formatMoney(v.price)} · ${v.available === 0 ? 'sold out' : `${v.available} in stock`}`;
  const d = v.deal && !v.deal.ended ? v.deal : null;
  const running = row.querySelector('[data-testid=deal-running]');
  running.hidden = !d;
  // One deal at a time per SKU (the shop refuses overlaps): the form waits until it ends.
  row.querySelector('[data-testid=deal-form]').hidden = !!d;
  row.classList.toggle('pinned', !!d);
  // Rebuilt only when the deal changes, so the End button is not replaced under the pointer.
  const key = d ? `${d.id}:${d.remaining}:${d.active}:${d.ends_at}` : '';
  if (running.dataset.key === key) return;
  running.dataset.key = key;
  if (!d) return running.replaceChildren();
  const off = d.discount?.percent ? `−${d.discount.percent}%` : 'deal';
  const end = h('button', { type: 'button', class: 'small danger', testid: 'deal-end' }, 'End');
  end.addEventListener('click', async () => {
    end.disabled = true;
    try {
      await call(`/deals/${d.id}/end`, { method: 'POST' });
      feedback('Flash deal ended', 'ok');
    } catch (err) {
      feedback(err.message);
      end.disabled = false;
    }
  });
  running.replaceChildren(
    h('span', { class: 'chip chip-host' }, off), ' ', h('b', {}, formatMoney(d.price)), ' ',
    h('span', { class: 'muted' }, d.active ? 'ends in ' : 'starts in '),
    h('b', { class: 'deal-countdown', testid: 'deal-countdown', dataset: { endsAt: d.active ? d.ends_at : d.starts_at } }),
    ' · ', h('span', { testid: 'deal-remaining', dataset: { remaining: d.remaining } }, `${d.remaining}/${d.quantity_cap} left`),
    ' ', end);
  tick();
}

function tick() {
  for (const el of els.deals.querySelectorAll('[data-ends-at]')) {
    el.textContent = formatDuration(Number(el.dataset.endsAt) - feed.now());
  }
}

// ---------- Orders and revenue ----------

function renderOrders(orders) {
  const key = JSON.stringify(orders);
  if (key === lastOrders) return;
  lastOrders = key;
  // The shop lists staff the newest first; sort anyway so the order never depends on that.
  const list = [...orders].sort((a, b) => b.created_at - a.created_at || b.id - a.id);
  const revenue = new Map();
  let paid = 0;
  for (const o of list) {
    if (o.payment !== PAID) continue;
    paid += 1;
    // Net of refunds, per currency: amounts in different currencies never add up.
    const net = o.total.minor - (o.refunded?.minor || 0);
    revenue.set(o.currency || o.total.currency, (revenue.get(o.currency || o.total.currency) || 0) + net);
  }
  els.revenue.replaceChildren(
    h('span', { class: 'muted' }, 'Revenue '),
    ...(revenue.size
      ? [...revenue].map(([currency, minor]) => h('b', { class: 'revenue-amount', testid: 'revenue-amount', dataset: { currency, minor } }, formatMoney({ minor, currency })))
      : [h('b', { class: 'revenue-amount', testid: 'revenue-amount', dataset: { minor: 0 } }, '—')]),
    h('span', { class: 'muted' }, ` from ${paid} paid order${paid === 1 ? '' : 's'}`));
  els.ordersCount.textContent = list.length >= 100 ? 'latest 100' : String(list.length);
  els.orders.replaceChildren(...(list.length ? list.map(orderEl) : [h('li', { class: 'empty' }, 'No orders yet.')]));
}

function orderEl(o) {
  const items = (o.lines || []).map((l) => `${l.quantity} × ${l.title || l.sku}`).join(', ');
  const refunded = o.refunded?.minor ? ` (refunded ${formatMoney(o.refunded)})` : '';
  return h('li', { class: 'item order', testid: 'order-row', dataset: { orderId: o.id, payment: o.payment } },
    h('div', { class: 'order-head' },
      h('b', {}, `#${o.id}`),
      h('span', { class: 'muted' }, new Date(o.created_at).toLocaleTimeString()),
      h('span', { class: 'order-buyer', testid: 'order-buyer' }, o.buyer),
      h('b', { testid: 'order-total' }, formatMoney(o.total) + refunded),
      h('span', { class: `chip pay-${o.payment}`, testid: 'order-payment' }, o.payment.replace('_', ' '))),
    h('div', { class: 'muted' }, items, o.payment_reason ? ` · ${o.payment_reason.replace(/_/g, ' ')}` : ''));
}

let ordersTimer = null;
let pollSeq = 0;
async function pollOrders() {
  clearTimeout(ordersTimer);
  // A feed update can start a poll while another is in flight: only the latest one renders.
  const seq = ++pollSeq;
  try {
    const { orders } = await call('/orders');
    if (seq === pollSeq) renderOrders(orders || []);
  } catch (e) {
    if (seq === pollSeq) {
      els.orders.replaceChildren(h('li', { class: 'empty' }, `Could not load the orders: ${e.message}`));
      lastOrders = '';
    }
  }
  if (seq === pollSeq) ordersTimer = setTimeout(pollOrders, ORDERS_EVERY_MS);
}

if (token && tokenClaims(token) && els.deals) {
  feed = shopFeed(BASE, (f) => {
    renderDeals();
    // Stock moved: an order was placed or settled, so look now rather than at the next poll.
    if (!f.full) pollOrders();
  });
  setInterval(tick, 1000);
  pollOrders();
}
