// Charts of a show's analytics report (GET /v1/shows/{show}/analytics), shared by the report page
// and the dashboard's live panel. They wrap uPlot (web/package.json, served at
// /web/vendor/uplot.js as the global `uPlot` by a classic script the pages load before their
// modules). Why uPlot: about 50 KB, draws on a canvas fast, is built for time series, and its
// setData updates a chart in place, so the dashboard's refresh every 10 s rebuilds nothing.
//
//   const chart = reportCharts.concurrency(el);   // sized to `el`, follows its width
//   chart.show(report);                            // again with each newer report
import { currencyExponent, formatMoney, h } from './client.js';

const nf = new Intl.NumberFormat();
const pct = new Intl.NumberFormat(undefined, { style: 'percent', maximumFractionDigits: 1 });

/** The page's palette (style.css), for the canvas, which cannot read CSS variables. */
function palette() {
  const css = getComputedStyle(document.documentElement);
  const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  return {
    text: v('--text', '#e9ecf2'),
    muted: v('--muted', '#9aa3b2'),
    line: v('--line', '#2a2f3a'),
    panel: v('--panel', '#161920'),
    accent: v('--accent', '#ff4d6d'),
    accent2: v('--accent-2', '#7c5cff'),
    ok: v('--ok', '#2fbf71'),
    warn: v('--warn', '#f5a524'),
  };
}

/** Steps of 1, 2 and 5 from 1 up: counts get whole-number ticks only. */
const COUNT_STEPS = Array.from({ length: 27 }, (_, i) => [1, 2, 5][i % 3] * 10 ** Math.floor(i / 3));

const fromZero = (u, min, max) => [0, max > 0 ? max * 1.08 : 1];

/** Time ticks no finer than the report's 10 s grain, in ms. */
const TIME_STEPS = [10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000);

/** A y axis in the page's colours; `side` 1 puts it on the right. */
function yAxis(c, scale, format, { side = 3, counts = false } = {}) {
  return {
    scale,
    side,
    stroke: c.muted,
    grid: { show: side === 3, stroke: c.line, width: 1 },
    ticks: { show: false },
    size: 52,
    font: '11px system-ui, sans-serif',
    incrs: counts ? COUNT_STEPS : undefined,
    values: (u, splits) => splits.map(format),
  };
}

// ---------- Moments ----------

const MOMENT_WORDS = {
  stream_started: 'Live',
  stream_reconnected: 'Back live',
  stream_ended: 'Ended',
  product_pinned: 'Pinned',
  product_unpinned: 'Unpinned',
  poll_opened: 'Poll',
  poll_closed: 'Poll closed',
  banner_set: 'Banner',
  deal_started: 'Deal',
  deal_ended: 'Deal ended',
};

/** "Pinned Linen shirt", "Poll: Which colour?": a moment in words (a product's title is its label). */
export function momentText(m) {
  const word = MOMENT_WORDS[m.kind] || m.kind;
  const about = m.label || m.product_id || '';
  if (!about) return word;
  return m.kind === 'poll_opened' || m.kind === 'banner_set' ? `${word}: ${about}` : `${word} ${about}`;
}

function momentColor(c, kind) {
  if (kind.startsWith('stream_')) return c.text;
  if (kind.startsWith('product_')) return c.accent2;
  if (kind.startsWith('deal_')) return c.accent;
  if (kind.startsWith('poll_')) return c.ok;
  return c.warn;
}

/**
 * A uPlot plugin that draws `get()`'s moments (`{at, kind, text}`) as dashed vertical lines over
 * the plot, each with its label at the top; labels that would overlap step down a row.
 */
function momentsPlugin(c, get) {
  return {
    hooks: {
      draw: (u) => {
        const moments = get();
        if (!moments.length) return;
        const { ctx, bbox } = u;
        const px = uPlot.pxRatio;
        const rowHeight = 14 * px;
        const rows = [];
        // Fewer and shorter labels on a narrow chart, so they leave the data in view.
        const narrow = bbox.width / px < 400;
        const [maxRows, maxChars] = narrow ? [2, 20] : [4, 28];
        ctx.save();
        ctx.beginPath();
        ctx.rect(bbox.left, bbox.top, bbox.width, bbox.height);
        ctx.clip();
        ctx.font = `${11 * px}px system-ui, sans-serif`;
        ctx.textAlign = 'left';
        ctx.textBaseline = 'top';
        for (const m of moments) {
          const x = Math.round(u.valToPos(m.at, 'x', true));
          if (x < bbox.left || x > bbox.left + bbox.width) continue;
          const color = momentColor(c, m.kind);
          ctx.strokeStyle = color;
          ctx.globalAlpha = 0.7;
          ctx.lineWidth = px;
          ctx.setLineDash([4 * px, 3 * px]);
          ctx.beginPath();
          ctx.moveTo(x + 0.5, bbox.top);
          ctx.lineTo(x + 0.5, bbox.top + bbox.height);
          ctx.stroke();
          const text = m.text.length > maxChars ? `${m.text.slice(0, maxChars - 1)}…` : m.text;
          const w = ctx.measureText(text).width + 6 * px;
          // Beside its line, kept inside the plot near the right edge.
          const left = Math.max(bbox.left, Math.min(x, bbox.left + bbox.width - w));
          let row = rows.findIndex((end) => end < left);
          if (row === -1) row = rows.length;
          if (row >= maxRows) continue;
          rows[row] = left + w;
          const y = bbox.top + 2 * px + row * rowHeight;
          ctx.globalAlpha = 0.85;
          ctx.fillStyle = c.panel;
          ctx.fillRect(left, y - px, w, rowHeight - px);
          ctx.globalAlpha = 1;
          ctx.fillStyle = color;
          ctx.fillText(text, left + 3 * px, y);
        }
        ctx.restore();
      },
    },
  };
}

// ---------- Charts ----------

/**
 * A uPlot in `el` as wide as `el`, following its width (the window's, a phone turned), with a
 * line saying so when there is nothing to draw. `build(width)` makes the uPlot in `el`.
 */
function mount(el, build) {
  el.classList.add('chart');
  const empty = h('p', { class: 'chart-empty', testid: 'chart-empty' }, 'No data yet');
  if (typeof uPlot !== 'function') {
    empty.textContent = 'Charts are unavailable: /web/vendor/uplot.js did not load';
    el.replaceChildren(empty);
    return null;
  }
  const width = () => Math.max(200, Math.floor(el.clientWidth));
  el.replaceChildren(empty);
  const plot = build(width());
  let last = width();
  new ResizeObserver(() => {
    const w = width();
    if (w !== last) {
      last = w;
      plot.setSize({ width: w, height: plot.height });
    }
  }).observe(el);
  return {
    setData(data, hasData) {
      empty.hidden = hasData;
      el.dataset.points = String(data[0].length);
      plot.setData(data);
    },
  };
}

/**
 * A time series chart, x in epoch ms, a point every `step` ms (a bar covers its step). `series`:
 * `{label, color, scale?, bars?, fill?, dash?, format}`; `scales`: the y axes by key, `{format,
 * side?, counts?, range?}`. With `moments`, `update` takes the moments to mark as its second
 * argument.
 */
export function timeChart(el, { series, scales, step, height = 220, moments = false }) {
  const c = palette();
  const marks = { list: [] };
  const time = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit', second: '2-digit' });
  const chart = mount(el, (width) => new uPlot({
    width,
    height,
    ms: 1,
    padding: [moments ? 12 : 8, 8, 0, 0],
    cursor: { points: { size: 6 }, drag: { x: false, y: false } },
    legend: { live: true },
    scales: {
      // The data's span to the end of its last step, so a show of one minute spans that minute
      // (from the data itself: uPlot widens a single point's min and max by its own rule).
      // Nothing yet: the last few steps up to now.
      x: {
        time: true,
        range: (u) => {
          const xs = u.data[0];
          return xs.length ? [xs[0], xs.at(-1) + step] : [Date.now() - 6 * step, Date.now()];
        },
      },
      ...Object.fromEntries(Object.entries(scales).map(([k, s]) => [k, { range: s.range || fromZero }])),
    },
    axes: [
      { stroke: c.muted, grid: { stroke: c.line, width: 1 }, ticks: { show: false }, font: '11px system-ui, sans-serif', incrs: TIME_STEPS, space: 56 },
      ...Object.entries(scales).map(([k, s]) => yAxis(c, k, s.format, s)),
    ],
    series: [
      { value: (u, v) => (v == null ? '–' : time.format(v)) },
      ...series.map((s) => ({
        label: s.label,
        scale: s.scale || 'y',
        stroke: s.color,
        fill: s.fill,
        width: s.bars ? 0 : 2,
        dash: s.dash,
        paths: s.bars ? uPlot.paths.bars({ size: [0.8, 40], align: 1, radius: 0.15 }) : undefined,
        points: s.bars ? { show: false } : undefined,
        value: (u, v) => (v == null ? '–' : s.format(v)),
      })),
    ],
    plugins: moments ? [momentsPlugin(c, () => marks.list)] : [],
  }, [[], ...series.map(() => [])], el));
  return {
    update(data, momentsToMark = []) {
      if (!chart) return;
      marks.list = momentsToMark;
      chart.setData(data, data[0].length > 0);
    },
  };
}

/**
 * A bar chart of categories: `labels` under the bars (`short` on narrow charts), in `color`,
 * `note(i, value, narrow)` written over each bar (`narrow` where a long note would run into the
 * next).
 */
export function barChart(el, { labels, short = labels, color, note, height = 200 }) {
  const c = palette();
  const xs = labels.map((_, i) => i);
  const chart = mount(el, (width) => new uPlot({
    width,
    height,
    padding: [18, 8, 0, 0],
    legend: { show: false },
    cursor: { show: false },
    scales: { x: { time: false, range: [-0.5, labels.length - 0.5] }, y: { range: fromZero } },
    axes: [
      {
        stroke: c.muted,
        grid: { show: false },
        ticks: { show: false },
        font: '11px system-ui, sans-serif',
        splits: () => xs,
        // Short names where the long ones would touch, and every other one where even those would.
        values: (u, splits) => {
          const room = u.bbox.width / uPlot.pxRatio / labels.length;
          return splits.map((i) => (room < 36 && i % 2 ? '' : (room < 90 ? short : labels)[i] ?? ''));
        },
      },
      yAxis(c, 'y', (v) => nf.format(v), { counts: true }),
    ],
    series: [
      {},
      { fill: color, stroke: color, width: 0, paths: uPlot.paths.bars({ size: [0.66, 90], radius: 0.12 }), points: { show: false } },
    ],
    hooks: {
      draw: [(u) => {
        const { ctx } = u;
        const px = uPlot.pxRatio;
        ctx.save();
        ctx.font = `${11 * px}px system-ui, sans-serif`;
        ctx.fillStyle = c.text;
        ctx.textAlign = 'center';
        ctx.textBaseline = 'bottom';
        const room = u.bbox.width / labels.length;
        u.data[1].forEach((v, i) => {
          if (v == null) return;
          let text = note(i, v, false);
          if (ctx.measureText(text).width > room * 0.8) text = note(i, v, true);
          ctx.fillText(text, u.valToPos(i, 'x', true), u.valToPos(v, 'y', true) - 3 * px);
        });
        ctx.restore();
      }],
    },
  }, [xs, labels.map(() => 0)], el));
  return {
    update(values) {
      chart?.setData([xs, values], values.some((v) => v > 0));
    },
  };
}

// ---------- A report's charts ----------

/** Amounts in `currency` as major units for drawing (display only: sums stay in minor units). */
const major = (minor, currency) => minor / 10 ** currencyExponent(currency);

/** Formats major units of `currency` for axes: "€20", or "€0.50" when not whole. */
function moneyFormat(currency) {
  const exp = currencyExponent(currency);
  try {
    const whole = new Intl.NumberFormat(undefined, { style: 'currency', currency, maximumFractionDigits: 0 });
    const exact = new Intl.NumberFormat(undefined, { style: 'currency', currency, minimumFractionDigits: exp, maximumFractionDigits: exp });
    return (v) => (Number.isInteger(v) ? whole : exact).format(v);
  } catch {
    return (v) => `${v} ${currency}`;
  }
}

/** Amounts, one per currency, as "€12.00 + $5.00"; `none` when there are none. */
export const formatAmounts = (list, none = '–') => (list.length ? list.map((m) => formatMoney(m)).join(' + ') : none);

/** A report's moments as the moments plugin draws them. */
function marks(report) {
  return report.moments.map((m) => ({ at: m.at, kind: m.kind, text: momentText(m) }));
}

const FUNNEL = [
  ['impressions', 'Impressions', 'Seen'],
  ['clicks', 'Clicks', 'Clicks'],
  ['add_to_carts', 'Added to cart', 'Cart'],
  ['checkouts', 'Checkouts', 'Checkout'],
  ['orders_paid', 'Paid orders', 'Paid'],
];

/** "<10s", "<1m", "1h+": a watch-time bucket by its upper bound. */
function bucketLabel(secs, prev) {
  const t = (s) => (s < 60 ? `${s}s` : s < 3600 ? `${s / 60}m` : `${s / 3600}h`);
  return secs == null ? `${t(prev)}+` : `<${t(secs)}`;
}

/** The charts both pages draw from a report, each `.show(report)` again with a newer one. */
export const reportCharts = {
  /** Viewers watching every 10 s and each slot's peak, the show's moments marked. */
  concurrency(el) {
    const c = palette();
    const chart = timeChart(el, {
      moments: true,
      step: 10_000,
      scales: { y: { format: (v) => nf.format(v), counts: true } },
      series: [
        { label: 'Watching', color: c.accent, fill: 'rgba(255, 77, 109, 0.15)', format: (v) => nf.format(v) },
        { label: 'Peak', color: c.warn, dash: [4, 4], format: (v) => nf.format(v) },
      ],
    });
    return {
      show(r) {
        chart.update([r.slots.map((s) => s.t), r.slots.map((s) => s.viewers), r.slots.map((s) => s.peak)], marks(r));
      },
    };
  },

  /** The share of the audience so far still watching, and how many visits ended each minute. */
  retention(el) {
    const c = palette();
    const chart = timeChart(el, {
      moments: true,
      step: 60_000,
      scales: {
        pct: { format: (v) => `${v}%`, range: () => [0, 100] },
        n: { format: (v) => nf.format(v), side: 1, counts: true },
      },
      series: [
        { label: 'Visits ended', scale: 'n', bars: true, color: c.muted, fill: 'rgba(154, 163, 178, 0.45)', format: (v) => nf.format(v) },
        { label: 'Still watching', scale: 'pct', color: c.accent2, format: (v) => `${v.toFixed(1)}%` },
      ],
    });
    return {
      show(r) {
        const m = r.minutes;
        chart.update([m.map((x) => x.t), m.map((x) => x.ended), m.map((x) => x.retention * 100)], marks(r));
      },
    };
  },

  /** GMV per minute and in total so far, in the shop's currency. */
  revenue(el) {
    const c = palette();
    // The axes and legend ask `money`, which follows the report's currency.
    let fmt = (v) => nf.format(v);
    const money = (v) => fmt(v);
    const chart = timeChart(el, {
      moments: true,
      step: 60_000,
      scales: { y: { format: money }, total: { format: money, side: 1 } },
      series: [
        { label: 'Per minute', bars: true, color: c.ok, fill: 'rgba(47, 191, 113, 0.55)', format: money },
        { label: 'So far', scale: 'total', color: c.text, format: money },
      ],
    });
    return {
      show(r) {
        fmt = moneyFormat(r.currency);
        const minor = r.minutes.map((x) => x.gmv.find((g) => g.currency === r.currency)?.minor || 0);
        let sum = 0;
        const total = minor.map((v) => (sum += v));
        chart.update([
          r.minutes.map((x) => x.t),
          minor.map((v) => major(v, r.currency)),
          total.map((v) => major(v, r.currency)),
        ], marks(r));
      },
    };
  },

  /** Impressions to paid orders, each bar with its count and its share of the step before. */
  funnel(el) {
    const c = palette();
    let steps = [];
    const chart = barChart(el, {
      labels: FUNNEL.map(([, long]) => long),
      short: FUNNEL.map(([, , short]) => short),
      color: c.accent2,
      note: (i, v, narrow) => (narrow || steps[i]?.rate == null ? nf.format(v) : `${nf.format(v)} · ${pct.format(steps[i].rate)}`),
    });
    return {
      show(r) {
        steps = FUNNEL.map(([key]) => r.funnel.find((s) => s.step === key) || { count: 0, rate: null });
        chart.update(steps.map((s) => s.count));
      },
    };
  },

  /** Ended visits by length. */
  watchTime(el) {
    const c = palette();
    let chart = null;
    return {
      show(r) {
        const b = r.watch_time;
        chart ??= barChart(el, {
          labels: b.map((x, i) => bucketLabel(x.up_to_secs, b[i - 1]?.up_to_secs)),
          color: c.accent,
          note: (i, v) => (v ? nf.format(v) : ''),
        });
        chart.update(b.map((x) => x.visits));
      },
    };
  },
};
