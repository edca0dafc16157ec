// Commerce on the viewer page: live price, deal countdown and stock on each pinned product card,
// a cart and an in-stream checkout. The shop (functions/shop) prices everything: this page only
// shows the prices the shop sent and tells it which price it showed (`expected_unit_price`,
// `expected_total`), so a buyer is refused rather than charged more than they saw.
//
//   viewer.js: cards get `shopCard(productId)` appended; `setBuyer(token)` once it has a token.
//
// A viewer who never named themselves still buys: the first add to cart asks for a nameless
// guest token (the same device, so the same cart once they do pick a name).
import {
  api, formatDuration, formatMoney, h, icon, shopFeed, showFromLocation, storedToken, tokenClaims,
} from './client.js';
import * as sync from './sync.js';

const show = showFromLocation();
const BASE = `/v1/shows/${encodeURIComponent(show)}/shop`;
/** At or below this many units a card says "3 left" instead of "25 in stock". */
const LOW_STOCK = 10;
/** How long and how often to ask for an order's payment result. */
const POLL_MS = 500;
const POLL_FOR_MS = 60_000;
/** Automatic retries of one checkout attempt after a network error (same Idempotency-Key). */
const NETWORK_RETRIES = 3;
/** Test provider tokens (functions/shop/src/test_provider.rs), as `liveshop dev` pays. */
const TEST_CARDS = [['tok_visa', 'Test Visa (pays)'], ['tok_chargeDeclined', 'Test card (declined)']];

/** `{token, subject}` of the viewer once they have one; carts are per subject. */
let buyer = null;
/** Where a nameless buyer's token is kept, so a reload finds the same cart. */
const BUYER_KEY = `liveshop.buyer.${show}`;
/** The cart as the shop last priced it (`{quote: {lines, total}, unavailable}`). */
let cart = null;
/** The checkout attempt a network error interrupted: retried with the same key and body. */
let attempt = null;
let busy = false;

const enc = encodeURIComponent;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sentence = (s) => (s ? s[0].toUpperCase() + s.slice(1) : s);

/** A fresh Idempotency-Key; getRandomValues also works off HTTPS, where randomUUID does not. */
function newKey() {
  if (crypto.randomUUID && window.isSecureContext) return crypto.randomUUID();
  return [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** A shop API call. Throws an Error with `code` (and `network` when no answer came back). */
async function call(path, { method = 'GET', body, headers = {} } = {}) {
  const hs = { ...headers };
  if (buyer) hs.authorization = `Bearer ${buyer.token}`;
  if (body !== undefined) hs['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(BASE + path, { method, headers: hs, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw Object.assign(new Error('No connection to the shop; try again'), { code: 'network', network: true });
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const err = data?.error || {};
    throw Object.assign(new Error(sentence(err.message) || `The shop answered HTTP ${res.status}`), {
      code: err.code || `http_${res.status}`, detail: err,
    });
  }
  return data;
}

// ---------- The live feed ----------

/** Products and the shop's clock; every update refills the cards on the page. */
const feed = shopFeed(BASE, () => {
  for (const el of document.querySelectorAll('.card-shop')) fillCard(el);
  // A price or a deal in the cart may have changed: show the total the shop would charge now.
  if (cart?.quote?.lines?.length) refreshCart();
// A deal shows when the host announces it on screen (sync.js); a snapshot at once. Checkout
// never waits: the shop prices it when it comes.
}, (f, apply) => (f.full ? (sync.forgetShop(), apply()) : sync.holdShop(f.now, apply)));

// ---------- Product cards ----------

/** The commerce part of a pinned product's card; filled now and on every feed update. */
export function shopCard(productId) {
  const el = h('div', { class: 'card-shop', testid: 'card-shop', dataset: { productId }, hidden: true },
    h('div', { class: 'card-row' },
      h('b', { class: 'live-price', testid: 'live-price' }),
      h('s', { class: 'was-price', testid: 'was-price', hidden: true }),
      h('span', { class: 'deal-countdown', testid: 'deal-countdown', title: 'The deal ends in', hidden: true })),
    h('div', { class: 'card-row' },
      h('span', { class: 'stock', testid: 'stock-left' }),
      h('button', { type: 'button', class: 'small primary add', testid: 'add-to-cart', onclick: () => addToCart(el) }, 'Add to cart')),
    h('p', { class: 'card-msg', testid: 'card-message', role: 'status', hidden: true }));
  fillCard(el);
  return el;
}

/** The variant a card sells: the first one in stock (cards have no room for a size picker). */
function variantOf(p) {
  return p?.variants?.find((v) => !v.sold_out) || p?.variants?.[0] || null;
}

/** The deal a card shows: running, with units left. */
function runningDeal(v) {
  return v.deal?.active && v.deal.remaining > 0 ? v.deal : null;
}

function fillCard(el) {
  const v = variantOf(feed.products.get(el.dataset.productId));
  // Hidden until the feed knows the product; style.css then hides the pin's static price.
  el.hidden = !v;
  if (!v) return;
  const $ = (id) => el.querySelector(`[data-testid=${id}]`);
  const deal = runningDeal(v);
  // On a replay, a deal the merchant keeps on for replays (the shop prices the cart by it).
  const price = (sync.replaying() && v.replay_price) || v.offered_price || v.price;
  el.dataset.sku = v.sku;
  el.dataset.price = JSON.stringify(price);
  $('live-price').textContent = formatMoney(price);
  $('live-price').classList.toggle('is-deal', !!deal);
  // The Omnibus "was" price (lowest of the last 30 days) is struck through only when it is higher.
  const was = deal?.was && deal.was.minor > price.minor ? deal.was : null;
  $('was-price').hidden = !was;
  $('was-price').textContent = was ? formatMoney(was) : '';
  if (was) $('was-price').setAttribute('aria-label', `was ${formatMoney(was)}`);
  const cd = $('deal-countdown');
  cd.hidden = !deal;
  // Not `data-ends-at`: viewer.js rewrites those with the room's pin countdown text.
  if (deal) cd.dataset.dealEnds = deal.ends_at;
  else delete cd.dataset.dealEnds;
  tick(cd);
  const stock = $('stock-left');
  stock.dataset.available = v.available;
  stock.classList.toggle('low', v.available > 0 && v.available <= LOW_STOCK);
  stock.classList.toggle('out', v.available === 0);
  stock.textContent = v.available === 0 ? 'Sold out' : v.available <= LOW_STOCK ? `${v.available} left` : `${v.available} in stock`;
  $('add-to-cart').disabled = v.available === 0;
}

function tick(el) {
  if (el.dataset.dealEnds) el.replaceChildren(icon('bolt'), ` ${formatDuration(Number(el.dataset.dealEnds) - sync.shopNow(feed.now()))}`);
}
setInterval(() => { for (const el of document.querySelectorAll('.deal-countdown[data-deal-ends]')) tick(el); }, 1000);

const msgTimers = new WeakMap();
function cardMessage(el, text) {
  const p = el.querySelector('[data-testid=card-message]');
  p.textContent = text;
  p.hidden = false;
  clearTimeout(msgTimers.get(p));
  msgTimers.set(p, setTimeout(() => { p.hidden = true; }, 5000));
}

/** A buyer identity for a viewer who has none yet: a nameless guest of this device. */
async function ensureBuyer() {
  if (buyer) return;
  const res = await api(`/v1/rooms/${enc(show)}/guest`, { method: 'POST', body: {} });
  localStorage.setItem(BUYER_KEY, JSON.stringify({ token: res.token, subject: res.subject }));
  // The device may have a cart already (from before a reload): read it before adding to it.
  await setBuyer(res.token);
}

/** On the replay page, cart changes say so: deals kept on for replays price them. */
function replayFlag() {
  return sync.replaying() ? { replay: true } : {};
}

async function addToCart(el) {
  const button = el.querySelector('[data-testid=add-to-cart]');
  button.disabled = true;
  try {
    await ensureBuyer();
    const body = { sku: el.dataset.sku, quantity: 1, expected_unit_price: JSON.parse(el.dataset.price), ...replayFlag() };
    setCart(await call(`/carts/${enc(buyer.subject)}/items`, { method: 'POST', body }));
    cardMessage(el, 'Added to your cart');
  } catch (e) {
    cardMessage(el, e.message);
  } finally {
    fillCard(el);
  }
}

// ---------- Cart ----------

const cartButton = h('button', {
  type: 'button', class: 'cart-button', testid: 'cart-button', 'aria-controls': 'cart', 'aria-expanded': 'false',
  onclick: () => openCart(panel.hidden),
}, icon('cart'), h('span', { class: 'sr-only' }, 'Cart, items: '),
h('span', { class: 'cart-count', testid: 'cart-count' }, '0'));
const lines = h('ol', { class: 'cart-lines', testid: 'cart-lines' });
const total = h('b', { testid: 'cart-total' });
const method = h('select', { testid: 'payment-method', 'aria-label': 'Payment method' },
  TEST_CARDS.map(([value, label]) => h('option', { value }, label)));
const checkoutButton = h('button', { type: 'button', class: 'primary', testid: 'checkout-button', onclick: checkout }, 'Checkout');
const status = h('p', { class: 'feedback cart-status', testid: 'checkout-status', role: 'status', 'aria-live': 'polite' });
const panel = h('aside', { class: 'cart', id: 'cart', testid: 'cart', 'aria-label': 'Your cart', hidden: true },
  h('div', { class: 'cart-head' }, h('h2', {}, 'Your cart'),
    h('button', { type: 'button', class: 'link', testid: 'cart-close', 'aria-label': 'Close the cart', onclick: () => openCart(false) }, icon('close'))),
  lines,
  h('div', { class: 'cart-foot' },
    h('div', { class: 'cart-total' }, h('span', {}, 'Total'), total),
    h('label', { class: 'cart-pay' }, 'Pay with ', method),
    checkoutButton,
    status));

function openCart(open) {
  panel.hidden = !open;
  cartButton.setAttribute('aria-expanded', String(open));
  if (open && buyer) refreshCart();
}

function say(text, state = '') {
  status.textContent = text;
  status.dataset.state = state;
}

function setCart(c) {
  cart = c;
  const q = c?.quote;
  const count = (q?.lines || []).reduce((n, l) => n + l.quantity, 0);
  cartButton.querySelector('.cart-count').textContent = String(count);
  cartButton.classList.toggle('has-items', count > 0);
  total.textContent = q ? formatMoney(q.total) : '';
  lines.replaceChildren(...(q?.lines?.length ? q.lines.map(lineEl) : [h('li', { class: 'empty' }, 'Your cart is empty.')]),
    ...(c?.unavailable || []).map((sku) => h('li', { class: 'muted' }, `${sku} is no longer sold`)));
  syncCheckoutButton();
}

function lineEl(l) {
  const setQty = (quantity) => change(`/carts/${enc(buyer.subject)}/items/${enc(l.sku)}`, { method: 'PUT', body: { quantity, ...replayFlag() } });
  return h('li', { class: 'cart-line', testid: 'cart-line', dataset: { sku: l.sku } },
    h('div', { class: 'cart-line-title' }, l.title || l.sku),
    h('div', { class: 'cart-line-row' },
      h('span', { class: 'qty' },
        h('button', { type: 'button', class: 'small', 'aria-label': `One less ${l.title}`, onclick: () => setQty(l.quantity - 1) }, '−'),
        h('span', { testid: 'cart-line-quantity' }, String(l.quantity)),
        h('button', { type: 'button', class: 'small', 'aria-label': `One more ${l.title}`, onclick: () => setQty(l.quantity + 1) }, '+')),
      // No struck regular price here: a reduction is shown against the Omnibus "was" price only.
      h('span', { class: 'muted' }, l.deal != null && h('span', { class: 'chip chip-host' }, 'deal'), ' ', formatMoney(l.unit_price)),
      h('b', {}, formatMoney(l.total))));
}

/** A cart change; the shop answers with the cart priced anew. */
async function change(path, opts) {
  try {
    setCart(await call(path, opts));
  } catch (e) {
    say(e.message, 'error');
  }
}

async function refreshCart() {
  if (!buyer) return;
  try {
    setCart(await call(`/carts/${enc(buyer.subject)}`));
  } catch (e) {
    say(e.message, 'error');
  }
}

// ---------- Checkout ----------

const FAILURES = {
  card_declined: 'your card was declined',
  insufficient_funds: 'insufficient funds',
  expired_card: 'the card has expired',
  invalid_payment_method: 'that payment method is not valid',
};

async function checkout() {
  if (!buyer || busy) return;
  // The total on screen is the one the buyer agreed to: the shop refuses any other.
  const body = cart?.quote?.lines?.length ? { payment_method: method.value, expected_total: cart.quote.total } : null;
  // One key per attempt; a retry of an attempt no answer came back for reuses it, so the shop
  // answers with the first request's outcome instead of ordering twice. That retry stays
  // possible when the cart looks empty: the lost request may have ordered it.
  if (body && (!attempt || JSON.stringify(attempt.body) !== JSON.stringify(body))) attempt = { key: newKey(), body };
  if (!attempt) return;
  busy = true;
  syncCheckoutButton();
  say('Paying…', 'pending');
  try {
    const order = await submit(attempt);
    attempt = null;
    await settle(order);
  } catch (e) {
    if (!e.network) attempt = null;
    say(e.message, 'error');
    if (e.code === 'price_mismatch' || e.code === 'out_of_stock') refreshCart();
  } finally {
    busy = false;
    syncCheckoutButton();
  }
}

function syncCheckoutButton() {
  checkoutButton.disabled = busy || !(cart?.quote?.lines?.length || attempt);
}

/** POSTs the attempt, retrying on network errors and while the first try is still running. */
async function submit(a) {
  for (let i = 0; ; i += 1) {
    try {
      const res = await call('/checkout', { method: 'POST', body: a.body, headers: { 'Idempotency-Key': a.key } });
      return res.order;
    } catch (e) {
      if (e.code === 'idempotency_key_in_flight' && e.detail.order_id) return { id: e.detail.order_id, payment: 'pending' };
      if (!e.network || i >= NETWORK_RETRIES) throw e;
      await sleep(400 * 2 ** i);
    }
  }
}

/** Waits for the order's payment result and says it; a declined cart is filled again. */
async function settle(order) {
  const until = Date.now() + POLL_FOR_MS;
  while (['pending', 'authorized', 'requires_action'].includes(order.payment) && Date.now() < until) {
    if (order.payment === 'requires_action' && order.action_url) {
      status.replaceChildren(`Order #${order.id}: confirm the payment `, h('a', { href: order.action_url, target: '_blank', rel: 'noopener' }, 'with your bank'));
    }
    await sleep(POLL_MS);
    try {
      order = (await call(`/orders/${order.id}`)).order;
    } catch (e) {
      if (!e.network) throw e;
    }
  }
  await refreshCart();
  switch (order.payment) {
    case 'paid':
      return say(`Order #${order.id} paid · ${formatMoney(order.total)}`, 'paid');
    case 'failed': {
      const why = FAILURES[order.payment_reason] || order.payment_reason || 'the payment failed';
      // The shop empties the cart at checkout; put the items back so the buyer can pay otherwise.
      for (const l of order.lines || []) {
        await call(`/carts/${enc(buyer.subject)}/items`, { method: 'POST', body: { sku: l.sku, quantity: l.quantity, ...replayFlag() } }).catch(() => {});
      }
      await refreshCart();
      return say(`Order #${order.id} not paid: ${why}. Your items are back in the cart.`, 'failed');
    }
    case 'cancelled':
      return say(`Order #${order.id} was cancelled`, 'failed');
    default:
      return say(`Order #${order.id} is still waiting for the payment provider`, 'pending');
  }
}

// ---------- Set-up ----------

/**
 * The viewer's token (or null): carts, orders and checkouts act as its subject. Resolves once
 * the cart shown is that subject's.
 */
export function setBuyer(token) {
  const sub = token && tokenClaims(token)?.sub;
  buyer = sub ? { token, subject: sub } : null;
  attempt = null;
  if (buyer) return refreshCart();
  setCart(null);
  return Promise.resolve();
}

document.querySelector('.topbar')?.append(cartButton);
document.body.append(panel);
setBuyer(storedToken(BUYER_KEY)?.token ?? null);
