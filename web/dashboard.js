// The host dashboard, served at /dashboard/{show}#token=<host JWT> (the token moves from the URL
// to this tab's sessionStorage at once): products to pin, polls, the review queue, chat
// moderation, Q&A, the banner, the chat rules, the live numbers and the show's analytics so far.
import {
  RoomClient, api, authorName, describeError, formatDuration, formatMoney, h, icon, showFromLocation,
  dashboardToken, tokenClaims,
} from './client.js';
import { formatAmounts, reportCharts } from './charts.js';

const show = showFromLocation();
const $ = (sel) => document.querySelector(sel);
const els = {
  title: $('[data-testid=show-title]'),
  role: $('[data-testid=my-role]'),
  conn: $('[data-testid=conn-status]'),
  viewers: $('[data-testid=viewer-count]'),
  peak: $('[data-testid=peak-viewers]'),
  impressions: $('[data-testid=impressions-total]'),
  clicks: $('[data-testid=clicks-total]'),
  noToken: $('[data-testid=no-token]'),
  dash: $('[data-testid=dashboard]'),
  products: $('[data-testid=products]'),
  pinnedCount: $('[data-testid=pinned-count]'),
  pollCurrent: $('[data-testid=poll-current]'),
  pollForm: $('[data-testid=poll-form]'),
  pollOptions: $('[data-testid=poll-options]'),
  pollAdd: $('[data-testid=poll-add-option]'),
  queue: $('[data-testid=mod-queue]'),
  queueCount: $('[data-testid=queue-count]'),
  pinned: $('[data-testid=pinned-message]'),
  messages: $('[data-testid=chat-messages]'),
  chatForm: $('[data-testid=host-chat-form]'),
  chatInput: $('[data-testid=chat-input]'),
  questions: $('[data-testid=questions]'),
  bannerNow: $('[data-testid=banner-current]'),
  bannerForm: $('[data-testid=banner-form]'),
  bannerInput: $('[data-testid=banner-input]'),
  bannerClear: $('[data-testid=banner-clear]'),
  settingsForm: $('[data-testid=settings-form]'),
  sanctions: $('[data-testid=sanctions]'),
  modLog: $('[data-testid=mod-log]'),
  toast: $('[data-testid=toast]'),
  reportLink: $('[data-testid=report-link]'),
  liveViewers: $('[data-testid=live-viewers]'),
  liveOrders: $('[data-testid=live-orders]'),
  liveGmv: $('[data-testid=live-gmv]'),
  liveConversion: $('[data-testid=live-conversion]'),
  topProducts: $('[data-testid=top-products]'),
  analyticsFeedback: $('[data-testid=analytics-feedback]'),
};

const MAX_MESSAGES = 200;
const TIMEOUTS = [[10, '10 s'], [60, '1 min'], [300, '5 min'], [600, '10 min'], [3600, '1 h'], [86400, '24 h']];
const nf = new Intl.NumberFormat();

const D = {
  me: null,
  settings: { slow_mode_secs: 0, links: 'block', emojis: [] },
  moderation: { review: 'off', blocked_terms: [], allowed_terms: [] },
  messages: new Map(),
  pinned: null,
  held: new Map(),
  poll: null,
  questions: new Map(),
  pinnedQuestion: null,
  banner: null,
  pins: [],
  catalog: [],
  viewers: 0,
  peak: 0,
  impressions: {},
  clicks: {},
  bans: new Set(),
  shadowBans: new Set(),
  timeouts: new Map(),
  log: [],
};
let room = null;

// ---------- Feedback ----------

let toastTimer = null;
function toast(text, kind = 'error') {
  els.toast.textContent = text;
  els.toast.dataset.kind = kind;
  els.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { els.toast.hidden = true; }, kind === 'error' ? 6000 : 2500);
}

/** Sends a command; shows the refusal, if any. Resolves with the ack or null. */
async function run(type, fields, okText) {
  try {
    const ack = await room.send(type, fields);
    if (okText) toast(okText, 'ok');
    return ack;
  } catch (err) {
    toast(`${type}: ${describeError(err)}`);
    return null;
  }
}

/** A button that sends one command; disabled while it is in flight. */
function cmdButton(label, testid, type, fields, { cls, okText, title, onOk } = {}) {
  const b = h('button', { type: 'button', class: `small ${cls || ''}`, testid, title });
  b.textContent = label;
  b.addEventListener('click', async () => {
    b.disabled = true;
    const ack = await run(type, typeof fields === 'function' ? fields() : fields, okText);
    b.disabled = false;
    if (ack && onOk) onOk(ack);
  });
  return b;
}

// ---------- Numbers ----------

const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);
function renderNumbers() {
  els.viewers.textContent = nf.format(D.viewers);
  els.peak.textContent = nf.format(Math.max(D.peak, D.viewers));
  els.impressions.textContent = nf.format(sum(D.impressions));
  els.clicks.textContent = nf.format(sum(D.clicks));
}

// ---------- Products ----------

/** Only the fields a pinned product carries (the room refuses unknown ones). */
function pinnable(p) {
  const out = { id: String(p.id), title: String(p.title) };
  if (p.price && typeof p.price.minor === 'number') out.price = { minor: p.price.minor, currency: p.price.currency };
  if (p.image_url) out.image_url = p.image_url;
  if (p.url) out.url = p.url;
  return out;
}

/** Countdown minutes typed but not used yet, kept across re-renders. */
const countdownDrafts = new Map();

function productStats(id) {
  const imp = D.impressions[id] || 0;
  const clk = D.clicks[id] || 0;
  return `${nf.format(imp)} impressions · ${nf.format(clk)} clicks${imp ? ` · ${((clk * 100) / imp).toFixed(1)}% CTR` : ''}`;
}
function renderProductStats() {
  for (const el of els.products.querySelectorAll('[data-stats-for]')) el.textContent = productStats(el.dataset.statsFor);
}

function renderProducts() {
  const pins = new Map(D.pins.map((p) => [p.product.id, p]));
  const list = [...D.catalog];
  for (const pin of D.pins) if (!list.some((p) => p.id === pin.product.id)) list.push(pin.product);
  els.pinnedCount.textContent = `${D.pins.length}/3 pinned`;
  if (!list.length) {
    els.products.replaceChildren(h('p', { class: 'empty' }, 'This show has no products.'));
    return;
  }
  els.products.replaceChildren(...list.map((p) => {
    const pin = pins.get(p.id);
    const minutes = h('input', {
      type: 'number', min: '0', max: '1440', step: '1', class: 'countdown-field', testid: 'countdown-input',
      placeholder: 'min', 'aria-label': `Countdown in minutes for ${p.title}`, value: countdownDrafts.get(p.id),
      oninput: () => countdownDrafts.set(p.id, minutes.value),
    });
    const pinFields = () => {
      const f = { product: pinnable(p) };
      const m = Number(minutes.value);
      if (m > 0) f.countdown_ends_at = Math.round(room.now() + m * 60_000);
      return f;
    };
    return h('div', { class: `item product-row${pin ? ' pinned' : ''}`, testid: 'product-row', dataset: { productId: p.id } },
      p.image_url ? h('img', { src: p.image_url, alt: '', loading: 'lazy' }) : h('span', { class: 'noimg' }, icon('bag')),
      h('div', {},
        h('div', {}, h('b', { testid: 'product-title' }, p.title), ' ', p.price && h('span', { class: 'muted' }, formatMoney(p.price))),
        h('div', { class: 'muted' },
          pin ? h('span', { class: 'chip chip-host' }, 'pinned') : null,
          pin?.sold_out ? h('span', { class: 'chip' }, 'sold out') : null,
          pin?.countdown_ends_at ? h('span', { class: 'chip', dataset: { endsAt: pin.countdown_ends_at } }, countdownText(pin.countdown_ends_at)) : null,
          ' ', h('span', { testid: 'product-stats', dataset: { statsFor: p.id } }, productStats(p.id)))),
      h('div', { class: 'actions' },
        minutes,
        cmdButton(pin ? 'Update pin' : 'Pin', 'pin-button', 'product.pin', pinFields, {
          cls: pin ? '' : 'primary',
          onOk: () => {
            countdownDrafts.delete(p.id);
            const field = els.products.querySelector(`[data-product-id="${CSS.escape(p.id)}"] [data-testid=countdown-input]`);
            if (field) field.value = '';
          },
        }),
        pin && cmdButton('Unpin', 'unpin-button', 'product.unpin', { product_id: p.id }),
        pin && cmdButton(pin.sold_out ? 'Back in stock' : 'Sold out', 'soldout-button', 'product.sold_out', { product_id: p.id, sold_out: !pin.sold_out })));
  }));
}

function countdownText(endsAt) {
  const left = endsAt - (room ? room.now() : Date.now());
  return left > 0 ? `ends in ${formatDuration(left)}` : 'ended';
}
setInterval(() => {
  for (const el of els.products.querySelectorAll('[data-ends-at]')) el.textContent = countdownText(Number(el.dataset.endsAt));
}, 1000);

async function loadShow() {
  try {
    const info = await api(`/v1/shows/${encodeURIComponent(show)}`);
    if (info?.title) {
      els.title.textContent = info.title;
      document.title = `${info.title} · host dashboard`;
    }
    D.catalog = Array.isArray(info?.products) ? info.products : [];
    renderProducts();
  } catch (e) {
    toast(`Could not load the show's products: ${e.message}`);
  }
}

// ---------- Poll ----------

function optionInput(value = '') {
  const row = h('div', { class: 'row' },
    h('input', { testid: 'poll-option-input', name: 'option', maxlength: '80', required: true, value, placeholder: 'Option', 'aria-label': 'Poll option' }),
    h('button', { type: 'button', class: 'link', 'aria-label': 'Remove option', onclick: () => {
      if (els.pollOptions.children.length > 2) row.remove();
      syncPollButtons();
    } }, '✕'));
  return row;
}
function syncPollButtons() {
  els.pollAdd.disabled = els.pollOptions.children.length >= 6;
}
function resetPollForm() {
  els.pollForm.reset();
  els.pollOptions.replaceChildren(optionInput(), optionInput());
  syncPollButtons();
}
els.pollAdd.addEventListener('click', () => {
  if (els.pollOptions.children.length < 6) els.pollOptions.append(optionInput());
  syncPollButtons();
});
els.pollForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const question = els.pollForm.elements.question.value.trim();
  const options = [...els.pollOptions.querySelectorAll('input')].map((i) => i.value.trim()).filter(Boolean);
  if (options.length < 2) return toast('A poll needs at least two options');
  if (await run('poll.open', { question, options })) resetPollForm();
});

/** Builds the poll when it changes; a new tally only updates the rows. */
function renderPoll() {
  const p = D.poll;
  els.pollForm.querySelector('[data-testid=poll-open]').disabled = !!p?.open;
  if (!p) {
    delete els.pollCurrent.dataset.key;
    els.pollCurrent.replaceChildren(h('p', { class: 'muted' }, 'No poll yet.'));
    return;
  }
  const key = `${p.poll.id}:${p.open}`;
  if (els.pollCurrent.dataset.key !== key) {
    els.pollCurrent.dataset.key = key;
    els.pollCurrent.replaceChildren(
      h('p', {}, h('b', {}, p.poll.question), ' ', h('span', { class: 'muted', testid: 'poll-total' })),
      h('div', { class: 'tally', testid: 'poll-tally', dataset: { pollId: p.poll.id, open: p.open } },
        p.poll.options.map((label, i) => h('div', { class: 'tally-row', testid: 'tally-row', dataset: { optionIndex: i } },
          h('span', { class: 'bar' }), h('span', {}, label), h('span', { class: 'n' })))),
      p.open ? cmdButton('Close poll', 'poll-close', 'poll.close', { poll_id: p.poll.id }, { cls: 'danger' }) : '',
    );
  }
  const total = p.total || 0;
  const t = els.pollCurrent.querySelector('[data-testid=poll-total]');
  t.dataset.total = total;
  t.textContent = `${p.open ? 'open' : 'closed'} · ${nf.format(total)} vote${total === 1 ? '' : 's'}`;
  els.pollCurrent.querySelectorAll('[data-testid=tally-row]').forEach((row, i) => {
    const n = p.counts?.[i] || 0;
    const pct = total ? Math.round((n * 100) / total) : 0;
    row.dataset.count = n;
    row.querySelector('.bar').style.width = `${pct}%`;
    row.querySelector('.n').textContent = `${nf.format(n)} · ${pct}%`;
  });
}

// ---------- Review queue ----------

function renderQueue() {
  els.queueCount.textContent = D.held.size ? String(D.held.size) : '';
  if (!D.held.size) {
    els.queue.replaceChildren(h('p', { class: 'empty' }, 'Nothing waiting for review.'));
    return;
  }
  els.queue.replaceChildren(...[...D.held.values()].map(({ message: m, reason }) =>
    h('div', { class: 'item', testid: 'queue-item', dataset: { messageId: m.id, user: m.user } },
      h('div', {}, h('b', {}, authorName(m)), reason && h('span', { class: 'chip chip-held' }, reason.replace('_', ' ')), ' ', m.text),
      h('div', { class: 'actions' },
        cmdButton('Approve', 'queue-approve', 'mod.approve', { message_id: m.id }, { cls: 'primary' }),
        cmdButton('Reject', 'queue-reject', 'mod.reject', { message_id: m.id }),
        sanctionControls(m)))));
}

// ---------- Chat ----------

function sanctionControls(m) {
  if (!D.me || m.user === D.me.subject || m.role !== 'viewer') return null;
  const select = h('select', { testid: 'timeout-duration', 'aria-label': `Timeout length for ${authorName(m)}` },
    TIMEOUTS.map(([s, label]) => h('option', { value: s, selected: s === 300 }, label)));
  return [
    select,
    cmdButton('Timeout', 'timeout-button', 'mod.timeout', () => ({ user: m.user, seconds: Number(select.value) })),
    cmdButton('Ban', 'ban-button', 'mod.ban', { user: m.user }, { cls: 'danger' }),
    cmdButton('Shadow-ban', 'shadow-ban-button', 'mod.shadow_ban', { user: m.user }, { title: 'They keep seeing their own messages; nobody else does' }),
  ];
}

function messageEl(m) {
  const quoted = m.reply_to != null ? D.messages.get(m.reply_to) : null;
  return h('li', { class: 'item', testid: 'chat-message', dataset: { messageId: m.id, user: m.user } },
    quoted && h('div', { class: 'muted' }, `↪ ${authorName(quoted)}: ${quoted.text}`),
    h('div', {}, h('b', {}, authorName(m)), m.role !== 'viewer' && h('span', { class: `chip chip-${m.role}` }, m.role),
      h('span', { class: 'muted' }, ` ${m.user !== authorName(m) ? m.user : ''}`), ' ', h('span', { class: 'text' }, m.text)),
    h('div', { class: 'actions' },
      cmdButton('Pin', 'pin-message', 'chat.pin', { message_id: m.id }),
      cmdButton('Delete', 'delete-message', 'chat.delete', { message_id: m.id }),
      sanctionControls(m)));
}

function addMessage(m) {
  const stick = els.messages.scrollHeight - els.messages.scrollTop - els.messages.clientHeight < 80;
  D.messages.set(m.id, m);
  const el = messageEl(m);
  const old = els.messages.querySelector(`[data-message-id="${m.id}"]`);
  if (old) old.replaceWith(el);
  else els.messages.append(el);
  while (els.messages.children.length > MAX_MESSAGES) {
    D.messages.delete(Number(els.messages.firstElementChild.dataset.messageId));
    els.messages.firstElementChild.remove();
  }
  if (stick) els.messages.scrollTop = els.messages.scrollHeight;
}

function renderChat() {
  const list = [...D.messages.values()];
  D.messages.clear();
  els.messages.replaceChildren();
  for (const m of list) addMessage(m);
  els.messages.scrollTop = els.messages.scrollHeight;
  renderPinned();
}

function renderPinned() {
  const m = D.pinned;
  els.pinned.hidden = !m;
  if (m) {
    els.pinned.replaceChildren(
      h('div', {}, icon('pin'), ' ', h('b', {}, authorName(m)), ' ', m.text),
      h('div', { class: 'actions' }, cmdButton('Unpin', 'unpin-message', 'chat.unpin', {})));
  }
}

els.chatForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = els.chatInput.value.trim();
  if (text && (await run('chat.send', { text }))) els.chatInput.value = '';
});

// ---------- Q&A ----------

function renderQuestions() {
  const list = [...D.questions.values()].sort((a, b) =>
    (b.id === D.pinnedQuestion) - (a.id === D.pinnedQuestion) || a.answered - b.answered || b.upvotes - a.upvotes || a.id - b.id);
  if (!list.length) {
    els.questions.replaceChildren(h('p', { class: 'empty' }, 'No questions yet.'));
    return;
  }
  els.questions.replaceChildren(...list.map((q) => {
    const pinned = q.id === D.pinnedQuestion;
    return h('div', { class: 'item', testid: 'question', dataset: { questionId: q.id } },
      h('div', {}, h('b', {}, `▲ ${q.upvotes}`), ' ', q.text),
      h('div', { class: 'muted' }, authorName(q),
        pinned && h('span', { class: 'chip chip-pinned' }, 'pinned'),
        q.answered && h('span', { class: 'chip chip-answered' }, 'answered')),
      h('div', { class: 'actions' },
        !q.answered && cmdButton('Mark answered', 'question-answer', 'question.answer', { question_id: q.id }),
        pinned
          ? cmdButton('Unpin', 'question-unpin', 'question.unpin', {})
          : cmdButton('Pin', 'question-pin', 'question.pin', { question_id: q.id })));
  }));
}

// ---------- Banner ----------

function renderBanner() {
  els.bannerNow.textContent = D.banner || 'none';
  els.bannerClear.disabled = !D.banner;
}
els.bannerForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = els.bannerInput.value.trim();
  if (text && (await run('banner.set', { text }))) els.bannerInput.value = '';
});
els.bannerClear.addEventListener('click', () => run('banner.clear', {}));

// ---------- Chat rules ----------

let settingsDirty = false;
const terms = (s) => s.split(/[\n,]/).map((t) => t.trim()).filter(Boolean);
function fillSettings() {
  if (settingsDirty) return;
  const f = els.settingsForm.elements;
  const slow = String(D.settings.slow_mode_secs);
  if (![...f.slow_mode_secs.options].some((o) => o.value === slow)) f.slow_mode_secs.append(h('option', { value: slow }, `${slow} s`));
  f.slow_mode_secs.value = slow;
  f.links.value = D.settings.links;
  f.sync_host_chat.checked = !!D.settings.sync_host_chat;
  f.review.value = D.moderation.review;
  f.blocked_terms.value = (D.moderation.blocked_terms || []).join('\n');
  f.allowed_terms.value = (D.moderation.allowed_terms || []).join('\n');
  f.emojis.value = (D.settings.emojis || []).join(' ');
}
els.settingsForm.addEventListener('input', () => { settingsDirty = true; });
els.settingsForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = els.settingsForm.elements;
  const patch = {};
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  if (Number(f.slow_mode_secs.value) !== D.settings.slow_mode_secs) patch.slow_mode_secs = Number(f.slow_mode_secs.value);
  if (f.links.value !== D.settings.links) patch.links = f.links.value;
  if (f.sync_host_chat.checked !== !!D.settings.sync_host_chat) patch.sync_host_chat = f.sync_host_chat.checked;
  if (f.review.value !== D.moderation.review) patch.review = f.review.value;
  const blocked = terms(f.blocked_terms.value);
  if (!same(blocked, D.moderation.blocked_terms || [])) patch.blocked_terms = blocked;
  const allowed = terms(f.allowed_terms.value);
  if (!same(allowed, D.moderation.allowed_terms || [])) patch.allowed_terms = allowed;
  const emojis = f.emojis.value.split(/\s+/).filter(Boolean);
  if (!same(emojis, D.settings.emojis || [])) patch.emojis = emojis;
  if (!Object.keys(patch).length) return toast('Nothing to change', 'ok');
  if (await run('mod.settings', patch, 'Rules saved')) {
    settingsDirty = false;
    fillSettings();
  }
});

// ---------- Sanctions and log ----------

function renderSanctions() {
  const rows = [];
  for (const u of D.bans) rows.push(h('div', { class: 'item', testid: 'sanction' }, h('div', {}, h('b', {}, u), h('span', { class: 'chip' }, 'banned')), h('div', { class: 'actions' }, cmdButton('Unban', 'unban-button', 'mod.unban', { user: u }))));
  for (const [u, until] of D.timeouts) {
    if (until <= Date.now() || D.bans.has(u)) continue;
    rows.push(h('div', { class: 'item', testid: 'sanction' }, h('div', {}, h('b', {}, u), h('span', { class: 'chip' }, `timed out until ${new Date(until).toLocaleTimeString()}`)), h('div', { class: 'actions' }, cmdButton('Lift', 'unban-button', 'mod.unban', { user: u }))));
  }
  for (const u of D.shadowBans) rows.push(h('div', { class: 'item', testid: 'sanction' }, h('div', {}, h('b', {}, u), h('span', { class: 'chip' }, 'shadow-banned')), h('div', { class: 'actions' }, cmdButton('Lift', 'unshadow-button', 'mod.unshadow_ban', { user: u }))));
  els.sanctions.replaceChildren(...(rows.length ? rows : [h('p', { class: 'empty' }, 'Nobody is banned or timed out.')]));
}

function describeAction(a) {
  switch (a.action) {
    case 'delete': return `deleted message ${a.message_id}`;
    case 'approve': return `approved message ${a.message_id}`;
    case 'reject': return `rejected message ${a.message_id}`;
    case 'timeout': return `timed out ${a.user} until ${new Date(a.until).toLocaleTimeString()}`;
    case 'ban': return `banned ${a.user}`;
    case 'unban': return `lifted the ban or timeout of ${a.user}`;
    case 'shadow_ban': return `shadow-banned ${a.user}`;
    case 'unshadow_ban': return `lifted the shadow ban of ${a.user}`;
    case 'settings': return `changed the rules: ${Object.keys(a.patch || {}).join(', ')}`;
    default: return a.action;
  }
}
function renderLog() {
  els.modLog.replaceChildren(...(D.log.length
    ? D.log.slice(-30).reverse().map((a) => h('li', { class: 'muted' }, `${new Date(a.at).toLocaleTimeString()} ${a.by} ${describeAction(a)}`))
    : [h('li', { class: 'empty' }, 'No moderator actions yet.')]));
}

// ---------- Live analytics ----------

/** The report sums up the show so far: read this often while the page is in view, not per event. */
const ANALYTICS_EVERY_MS = 10_000;
const pct = new Intl.NumberFormat(undefined, { style: 'percent', maximumFractionDigits: 1 });

function renderAnalytics(r) {
  const t = r.totals;
  const figures = [
    [els.liveViewers, nf.format(t.unique_viewers), t.unique_viewers],
    [els.liveOrders, nf.format(t.orders_paid), t.orders_paid],
    [els.liveGmv, formatAmounts(t.gmv, formatMoney({ minor: 0, currency: r.currency })), t.gmv],
    [els.liveConversion, pct.format(t.conversion), t.conversion],
  ];
  for (const [el, text, value] of figures) {
    el.textContent = text;
    el.dataset.value = JSON.stringify(value);
  }
  const top = r.products.filter((p) => p.units || p.clicks || p.impressions).slice(0, 5);
  els.topProducts.replaceChildren(...(top.length
    ? top.map((p) => h('li', { class: 'item', testid: 'top-product', dataset: { productId: p.product_id } },
      h('div', { class: 'top-product-head' }, h('b', {}, p.title), h('span', {}, formatAmounts(p.revenue, ''))),
      h('div', { class: 'muted' }, `${nf.format(p.units)} sold · ${nf.format(p.clicks)} click${p.clicks === 1 ? '' : 's'}${p.ctr == null ? '' : ` · ${pct.format(p.ctr)} CTR`}`)))
    : [h('li', { class: 'empty' }, 'No product shown yet.')]));
}

/** Keeps the analytics panel current; stops for a token the report refuses (a moderator's). */
function startAnalytics(token) {
  els.reportLink.href = `/shows/${encodeURIComponent(show)}/report#token=${encodeURIComponent(token)}`;
  const charts = [
    reportCharts.concurrency($('[data-testid=chart-concurrency]')),
    reportCharts.revenue($('[data-testid=chart-revenue]')),
    reportCharts.funnel($('[data-testid=chart-funnel]')),
  ];
  let busy = false;
  let refused = false;
  const refresh = async () => {
    if (busy || refused || document.hidden) return;
    busy = true;
    try {
      const r = await api(`/v1/shows/${encodeURIComponent(show)}/analytics?previous=0`, { token });
      for (const c of charts) c.show(r);
      renderAnalytics(r);
      els.analyticsFeedback.textContent = '';
    } catch (e) {
      els.analyticsFeedback.textContent = `Analytics: ${e.message}`;
      refused = e.status === 401 || e.status === 403;
    } finally {
      busy = false;
    }
  };
  setInterval(refresh, ANALYTICS_EVERY_MS);
  document.addEventListener('visibilitychange', refresh);
  refresh();
}

// ---------- The room ----------

function rebuild(state) {
  D.settings = state.settings;
  const m = state.moderation;
  D.moderation = { review: m?.review || 'off', blocked_terms: m?.blocked_terms || [], allowed_terms: m?.allowed_terms || [] };
  D.held = new Map((m?.held || []).map((msg) => [msg.id, { message: msg, reason: null }]));
  D.bans = new Set(m?.bans || []);
  D.shadowBans = new Set(m?.shadow_bans || []);
  D.timeouts = new Map(Object.entries(m?.timeouts || {}));
  D.messages = new Map((state.history || []).map((msg) => [msg.id, msg]));
  D.pinned = state.pinned_message || null;
  D.poll = state.poll || null;
  D.questions = new Map((state.questions || []).map((q) => [q.id, q]));
  D.pinnedQuestion = state.pinned_question ?? null;
  D.banner = state.banner || null;
  D.pins = state.products || [];
  D.viewers = state.viewers || 0;
  D.peak = state.peak_viewers || 0;
  D.impressions = { ...(state.stats?.impressions || {}) };
  D.clicks = { ...(state.stats?.clicks || {}) };
  D.peak = Math.max(D.peak, state.stats?.peak_viewers || 0);
  settingsDirty = false;
  renderAll();
}

function renderAll() {
  renderNumbers();
  renderProducts();
  renderPoll();
  renderQueue();
  renderChat();
  renderQuestions();
  renderBanner();
  fillSettings();
  renderSanctions();
  renderLog();
}

function applyModAction(e) {
  D.log.push(e);
  if (D.log.length > 100) D.log.shift();
  switch (e.action) {
    case 'reject': D.held.delete(e.message_id); renderQueue(); break;
    case 'timeout': D.timeouts.set(e.user, e.until); break;
    case 'ban': D.bans.add(e.user); D.timeouts.delete(e.user); break;
    case 'unban': D.bans.delete(e.user); D.timeouts.delete(e.user); break;
    case 'shadow_ban': D.shadowBans.add(e.user); break;
    case 'unshadow_ban': D.shadowBans.delete(e.user); break;
    case 'settings': {
      const p = e.patch || {};
      for (const k of ['review', 'blocked_terms', 'allowed_terms']) if (k in p) D.moderation[k] = p[k];
      for (const k of ['slow_mode_secs', 'links', 'emojis', 'sync_host_chat']) if (k in p) D.settings[k] = p[k];
      fillSettings();
      break;
    }
    default:
  }
  renderSanctions();
  renderLog();
}

const handlers = {
  'welcome': (w) => {
    D.me = w.you;
    els.role.hidden = false;
    els.role.textContent = w.you.role;
    if (w.you.role === 'viewer') toast('This token is a viewer\'s: the dashboard needs a host, moderator or merchant token.');
    if (!w.resumed) rebuild(w.state);
  },
  'chat.message': (e) => {
    addMessage(e.message);
    if (D.held.delete(e.message.id)) renderQueue();
  },
  'chat.held': (e) => {
    D.held.set(e.message.id, { message: e.message, reason: e.reason });
    renderQueue();
  },
  'chat.deleted': (e) => {
    D.messages.delete(e.message_id);
    els.messages.querySelector(`[data-message-id="${e.message_id}"]`)?.remove();
    if (D.held.delete(e.message_id)) renderQueue();
    if (D.pinned?.id === e.message_id) {
      D.pinned = null;
      renderPinned();
    }
  },
  'chat.pinned': (e) => { D.pinned = e.message; renderPinned(); },
  'chat.unpinned': () => { D.pinned = null; renderPinned(); },
  'mod.action': applyModAction,
  'settings.changed': (e) => { D.settings = e.settings; fillSettings(); },
  'poll.opened': (e) => { D.poll = { poll: e.poll, open: true, counts: e.poll.options.map(() => 0), total: 0 }; renderPoll(); },
  'poll.tally': (e) => {
    if (D.poll?.poll.id === e.poll_id && D.poll.open) {
      D.poll.counts = e.counts;
      D.poll.total = e.total;
      renderPoll();
    }
  },
  'poll.closed': (e) => {
    if (D.poll?.poll.id === e.poll_id) {
      Object.assign(D.poll, { open: false, counts: e.counts, total: e.total });
      renderPoll();
    }
  },
  'question.asked': (e) => { D.questions.set(e.question.id, e.question); renderQuestions(); },
  'question.upvoted': (e) => {
    const q = D.questions.get(e.question_id);
    if (q) q.upvotes = e.upvotes;
    renderQuestions();
  },
  'question.answered': (e) => {
    const q = D.questions.get(e.question_id);
    if (q) q.answered = true;
    renderQuestions();
  },
  'question.pinned': (e) => { D.pinnedQuestion = e.question_id; renderQuestions(); },
  'question.unpinned': () => { D.pinnedQuestion = null; renderQuestions(); },
  'banner.set': (e) => { D.banner = e.text; renderBanner(); },
  'banner.cleared': () => { D.banner = null; renderBanner(); },
  'product.pinned': (e) => {
    D.pins = D.pins.filter((p) => p.product.id !== e.pin.product.id).concat([e.pin]);
    renderProducts();
  },
  'product.unpinned': (e) => { D.pins = D.pins.filter((p) => p.product.id !== e.product_id); renderProducts(); },
  'product.sold_out': (e) => {
    for (const p of D.pins) if (p.product.id === e.product_id) p.sold_out = e.sold_out;
    renderProducts();
  },
  'product.countdown_ended': (e) => {
    for (const p of D.pins) if (p.product.id === e.product_id) delete p.countdown_ends_at;
    renderProducts();
  },
  'stats': (e) => {
    for (const [k, v] of Object.entries(e.impressions || {})) D.impressions[k] = (D.impressions[k] || 0) + v;
    for (const [k, v] of Object.entries(e.clicks || {})) D.clicks[k] = (D.clicks[k] || 0) + v;
    if (e.peak_viewers) D.peak = Math.max(D.peak, e.peak_viewers);
    renderNumbers();
    renderProductStats();
  },
  'presence': (f) => {
    D.viewers = f.viewers;
    D.peak = Math.max(D.peak, f.peak);
    renderNumbers();
  },
};

const STATUS_TEXT = { connecting: 'Connecting…', reconnecting: 'Reconnecting…', open: '', banned: 'Banned', failed: 'Disconnected', closed: '' };

function start(token) {
  els.dash.hidden = false;
  $('[data-testid=stats]').hidden = false;
  resetPollForm();
  renderAll();
  loadShow();
  startAnalytics(token);
  room = new RoomClient({ show, token });
  for (const [type, fn] of Object.entries(handlers)) room.on(type, fn);
  room.on('notice', (err) => toast(describeError(err)));
  room.on('status', ({ status, detail }) => {
    els.conn.dataset.state = status;
    els.conn.textContent = STATUS_TEXT[status] ?? status;
    if (status === 'failed') toast(`Disconnected: ${detail?.message || detail?.code}`);
  });
  room.connect();
}

const token = dashboardToken(show);
const claims = token && tokenClaims(token);
if (!token || !claims) {
  els.noToken.hidden = false;
  els.noToken.querySelector('[data-testid=dashboard-url]').textContent = `${location.origin}/dashboard/${encodeURIComponent(show)}#token=<host token>`;
  els.noToken.querySelector('[data-testid=mint-command]').textContent = `cargo run -- token --role host --room ${show}`;
  if (token) els.noToken.querySelector('h2').textContent = 'The token in this link is not a valid liveshop token';
} else {
  start(token);
}
