// A show's report, served at /shows/{show}/report#token=<host or merchant JWT> (the token moves
// from the URL to this tab's sessionStorage at once, as on the dashboard): the headline totals,
// viewers over time with the show's moments, retention, revenue, the funnel, watch time, the
// products, earlier shows of the same shop, and the two CSV downloads.
import { api, dashboardToken, formatDuration, formatMoney, h, showFromLocation, tokenClaims } from './client.js';
import { formatAmounts, momentText, reportCharts } from './charts.js';

const show = showFromLocation();
const PATH = `/v1/shows/${encodeURIComponent(show)}/analytics`;
const nf = new Intl.NumberFormat();
const pct = new Intl.NumberFormat(undefined, { style: 'percent', maximumFractionDigits: 1 });
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const timeOnly = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit', second: '2-digit' });

const $ = (sel) => document.querySelector(sel);
const els = {
  title: $('[data-testid=show-title]'),
  status: $('[data-testid=report-status]'),
  actions: $('[data-testid=report-actions]'),
  refresh: $('[data-testid=report-refresh]'),
  dashboard: $('[data-testid=dashboard-link]'),
  error: $('[data-testid=report-error]'),
  report: $('[data-testid=report]'),
  when: $('[data-testid=report-when]'),
  feedback: $('[data-testid=report-feedback]'),
  funnelSteps: $('[data-testid=funnel-steps]'),
  revenueOther: $('[data-testid=revenue-other]'),
  products: $('[data-testid=products-table]'),
  previous: $('[data-testid=previous-table]'),
  moments: $('[data-testid=moments]'),
};

const token = dashboardToken(show);
/** The report last shown, and its charts (made once, then updated in place). */
let report = null;
let charts = null;

/** Writes a figure and keeps the API's value beside it, for anyone checking the page's numbers. */
function figure(testid, text, value) {
  const el = $(`[data-testid=${testid}]`);
  el.textContent = text;
  el.dataset.value = JSON.stringify(value);
}

// ---------- Errors ----------

function fail(kind, title, detail) {
  els.report.hidden = true;
  els.actions.hidden = true;
  els.error.hidden = false;
  els.error.dataset.kind = kind;
  els.error.querySelector('h2').textContent = title;
  els.error.querySelector('p').textContent = detail;
}

function failed(e) {
  if (e.status === 401) {
    fail('unauthorized', 'The token in this link was refused', `The node said: ${e.message}. Ask for a fresh link with a host or merchant token.`);
  } else if (e.status === 403) {
    fail('forbidden', 'This token cannot read the report', "The report is for the show's host and its shop's merchant.");
  } else if (e.status === 404) {
    fail('not-found', 'No such show', `There is no show "${show}" on this node.`);
  } else if (report) {
    els.feedback.textContent = `Could not refresh the report: ${e.message}`;
  } else {
    fail('failed', 'The report could not be loaded', e.message);
  }
}

// ---------- Sections ----------

/** Where the show stands: nothing measured, live (its stream last started), ended, or neither. */
function stage(r) {
  if (r.started_at == null) return 'empty';
  if (r.ended_at != null) return 'ended';
  const stream = r.moments.findLast((m) => m.kind.startsWith('stream_'));
  return stream ? 'live' : null;
}
const STAGE_TEXT = { empty: 'no data yet', live: 'live', ended: 'ended' };

function renderHead(r) {
  const state = stage(r);
  els.status.hidden = !state;
  els.status.textContent = STAGE_TEXT[state] || '';
  els.status.className = `chip${state === 'live' ? ' chip-host' : ''}`;
  els.status.dataset.state = state || '';
  els.when.textContent = r.started_at == null
    ? `Nothing measured yet · as of ${timeOnly.format(r.generated_at)}`
    : `Started ${dateTime.format(r.started_at)} · ${formatDuration(r.summary.duration_ms)} long · as of ${timeOnly.format(r.generated_at)}`;
}

function renderTotals(r) {
  const t = r.totals;
  figure('total-viewers', nf.format(t.unique_viewers), t.unique_viewers);
  figure('total-visits', `${nf.format(t.visits)} visit${t.visits === 1 ? '' : 's'}`, t.visits);
  figure('total-peak', nf.format(t.peak_viewers), t.peak_viewers);
  figure('total-watch', formatDuration(t.avg_watch_ms), t.avg_watch_ms);
  figure('total-orders', nf.format(t.orders_paid), t.orders_paid);
  figure('total-buyers', `${nf.format(t.buyers)} buyer${t.buyers === 1 ? '' : 's'}`, t.buyers);
  figure('total-units', nf.format(t.units), t.units);
  figure('total-gmv', formatAmounts(t.gmv, formatMoney({ minor: 0, currency: r.currency })), t.gmv);
  figure('total-aov', formatAmounts(t.aov), t.aov);
  figure('total-conversion', pct.format(t.conversion), t.conversion);
  figure('total-refunds', nf.format(t.refunds), t.refunds);
  figure('total-refunded', t.refunded.length ? `${formatAmounts(t.refunded)} refunded` : 'nothing refunded', t.refunded);
}

const STEP_NAMES = {
  impressions: 'Impressions', clicks: 'Clicks', add_to_carts: 'Added to cart', checkouts: 'Checkouts', orders_paid: 'Paid orders',
};
function renderFunnel(r) {
  els.funnelSteps.replaceChildren(...r.funnel.map((s) => h('li', { testid: 'funnel-step', dataset: { step: s.step, count: s.count } },
    h('span', {}, STEP_NAMES[s.step] || s.step), ' ', h('b', {}, nf.format(s.count)),
    s.rate != null && h('span', { class: 'muted' }, ` ${pct.format(s.rate)} of the step before`))));
}

/** GMV in currencies other than the shop's (the chart draws the shop's): said in words. */
function renderRevenueOther(r) {
  const other = r.totals.gmv.filter((m) => m.currency !== r.currency);
  els.revenueOther.hidden = !other.length;
  els.revenueOther.textContent = other.length ? `Also sold, not charted: ${formatAmounts(other)}` : '';
}

// ---------- Products, sortable ----------

/** Revenue in the shop's currency, in minor units, for sorting. */
const revenueIn = (p, currency) => p.revenue.find((m) => m.currency === currency)?.minor || 0;
/** The table's columns: a count shown as a number unless `text` says otherwise, sorted by `sort` or itself. */
const COLUMNS = [
  { key: 'title', label: 'Product', text: (p) => p.title, sort: (p) => p.title.toLowerCase() },
  { key: 'impressions', label: 'Impressions' },
  { key: 'clicks', label: 'Clicks' },
  { key: 'ctr', label: 'CTR', text: (p) => (p.ctr == null ? '–' : pct.format(p.ctr)), sort: (p) => p.ctr ?? -1 },
  { key: 'add_to_carts', label: 'Added to cart' },
  { key: 'checkouts', label: 'Checkouts' },
  { key: 'orders_paid', label: 'Orders' },
  { key: 'units', label: 'Units' },
  { key: 'revenue', label: 'Revenue', text: (p) => formatAmounts(p.revenue), sort: (p, r) => revenueIn(p, r.currency) },
];
/** The column sorted by and its direction; null keeps the report's order (revenue, then clicks). */
let sortBy = null;

function renderProductsHead() {
  const row = els.products.tHead.rows[0];
  row.replaceChildren(...COLUMNS.map((c) => {
    const dir = sortBy?.key === c.key ? sortBy.dir : null;
    return h('th', { scope: 'col', class: c.key === 'title' ? '' : 'num', 'aria-sort': dir ? `${dir}ending` : null },
      h('button', { type: 'button', class: 'sort', testid: `sort-${c.key}`, onclick: () => {
        sortBy = { key: c.key, dir: dir === 'desc' ? 'asc' : 'desc' };
        renderProductsHead();
        renderProducts(report);
      } }, c.label, dir ? (dir === 'desc' ? ' ↓' : ' ↑') : ''));
  }));
}

function renderProducts(r) {
  const rows = [...r.products];
  if (sortBy) {
    const col = COLUMNS.find((c) => c.key === sortBy.key);
    const key = col.sort || ((p) => p[col.key]);
    const sign = sortBy.dir === 'asc' ? 1 : -1;
    rows.sort((a, b) => {
      const x = key(a, r);
      const y = key(b, r);
      return (x < y ? -1 : x > y ? 1 : 0) * sign;
    });
  }
  const body = els.products.tBodies[0];
  if (!rows.length) {
    body.replaceChildren(h('tr', {}, h('td', { colspan: COLUMNS.length, class: 'empty' }, 'No product was shown or sold yet.')));
    return;
  }
  body.replaceChildren(...rows.map((p) => h('tr', { testid: 'product-row', dataset: { productId: p.product_id } },
    COLUMNS.map((c) => h(c.key === 'title' ? 'th' : 'td', {
      scope: c.key === 'title' ? 'row' : null, class: c.key === 'title' ? '' : 'num', dataset: { col: c.key },
    }, c.text ? c.text(p) : nf.format(p[c.key]))))));
}

// ---------- Earlier shows ----------

function renderPrevious(r) {
  // A merchant's token reads every show of the shop: its links carry it; a host's is for this show.
  const merchant = tokenClaims(token)?.role === 'merchant';
  const row = (s, current) => h('tr', { testid: current ? 'current-row' : 'previous-row', class: current ? 'current' : '', dataset: { show: s.show } },
    h('th', { scope: 'row' }, current
      ? h('span', {}, s.show, h('span', { class: 'chip' }, 'this show'))
      : h('a', { href: `/shows/${encodeURIComponent(s.show)}/report${merchant ? `#token=${token}` : ''}` }, s.show)),
    h('td', {}, s.started_at == null ? '–' : dateTime.format(s.started_at)),
    h('td', { class: 'num' }, formatDuration(s.duration_ms)),
    h('td', { class: 'num' }, nf.format(s.unique_viewers)),
    h('td', { class: 'num' }, nf.format(s.peak_viewers)),
    h('td', { class: 'num' }, nf.format(s.orders_paid)),
    h('td', { class: 'num' }, formatAmounts(s.gmv)),
    h('td', { class: 'num' }, pct.format(s.conversion)));
  els.previous.tBodies[0].replaceChildren(
    row(r.summary, true),
    ...(r.previous.length
      ? r.previous.map((s) => row(s, false))
      : [h('tr', { testid: 'previous-empty' }, h('td', { colspan: 8, class: 'empty' }, 'No earlier shows from this shop yet.'))]));
}

function renderMoments(r) {
  els.moments.replaceChildren(...(r.moments.length
    ? r.moments.map((m) => h('li', { class: 'moment', testid: 'moment', dataset: { kind: m.kind } },
      h('span', { class: 'muted' }, `${timeOnly.format(m.at)} · min ${m.minute}`), ' ', momentText(m)))
    : [h('li', { class: 'empty' }, 'No moments yet: going live, pins, polls, banners and deals show here.')]));
}

// ---------- Loading ----------

function render(r) {
  report = r;
  els.error.hidden = true;
  els.report.hidden = false;
  els.actions.hidden = false;
  els.feedback.textContent = '';
  renderHead(r);
  renderTotals(r);
  // Made once the page shows them, so each takes its container's width.
  charts ??= {
    concurrency: reportCharts.concurrency($('[data-testid=chart-concurrency]')),
    retention: reportCharts.retention($('[data-testid=chart-retention]')),
    revenue: reportCharts.revenue($('[data-testid=chart-revenue]')),
    funnel: reportCharts.funnel($('[data-testid=chart-funnel]')),
    watchTime: reportCharts.watchTime($('[data-testid=chart-watch-time]')),
  };
  for (const c of Object.values(charts)) c.show(r);
  renderFunnel(r);
  renderRevenueOther(r);
  renderProducts(r);
  renderPrevious(r);
  renderMoments(r);
}

async function load() {
  els.refresh.disabled = true;
  try {
    render(await api(`${PATH}?previous=5`, { token }));
  } catch (e) {
    failed(e);
  } finally {
    els.refresh.disabled = false;
  }
}

/** Saves a CSV: fetched with the token (a link cannot send it), then handed over as a file. */
async function download(file, button) {
  button.disabled = true;
  els.feedback.textContent = '';
  try {
    const res = await fetch(`${PATH}/${file}`, { headers: { authorization: `Bearer ${token}` } });
    if (!res.ok) {
      const body = await res.json().catch(() => null);
      throw new Error(body?.error?.message || `HTTP ${res.status}`);
    }
    const name = /filename="([^"]+)"/.exec(res.headers.get('content-disposition') || '')?.[1] || `${show}-${file}`;
    const url = URL.createObjectURL(await res.blob());
    const a = h('a', { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    // Freed once the browser has surely read it (a download starts asynchronously).
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (e) {
    els.feedback.textContent = `Could not download ${file}: ${e.message}`;
  } finally {
    button.disabled = false;
  }
}

if (!token || !tokenClaims(token)) {
  fail(token ? 'bad-token' : 'no-token',
    token ? 'The token in this link is not a valid liveshop token' : 'This report needs a token',
    `Open it as ${location.origin}/shows/${encodeURIComponent(show)}/report#token=<token>, with a host token for the show `
    + `(cargo run -- token --role host --room ${show}) or a merchant token for its shop.`);
} else {
  els.dashboard.href = `/dashboard/${encodeURIComponent(show)}`;
  els.refresh.addEventListener('click', load);
  for (const [file, testid] of [['minutes.csv', 'download-minutes'], ['products.csv', 'download-products']]) {
    const button = $(`[data-testid=${testid}]`);
    button.addEventListener('click', () => download(file, button));
  }
  renderProductsHead();
  api(`/v1/shows/${encodeURIComponent(show)}`).then((info) => {
    if (info?.title) {
      els.title.textContent = `${info.title} · report`;
      document.title = `${info.title} · report`;
    }
  }).catch(() => {});
  load();
}
