// The supervisor's KPI and SLA reports (docs/kpi.md): the page logs in over the CTI websocket
// for a token, fetches the report of a period (and optionally one queue) from /api/reports with
// that token, shows it as tables with the targets and SVG charts, and downloads the calls or
// the queue log of the same selection as CSV from /api/export.csv.

import { t, tOr, locale } from './i18n.js';
import { $, setupPage, setText, setAttr, h, notice, run } from './common.js';

const R = {
  report: null,
  /** The selection the shown report was made for: {from, to, queue, by}. */
  sel: null,
  queues: new Set(),
};

class HttpError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.name = 'HttpError';
    this.status = status;
    this.code = code;
  }
}

// ---- formatting ---------------------------------------------------------------------------

const nf = (opts) => new Intl.NumberFormat(locale(), opts);
const fmtInt = (n) => nf().format(n ?? 0);
const fmtPct = (v) => (v == null || !Number.isFinite(v) ? '—'
  : nf({ style: 'percent', minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(v));
const fmtSecs = (v) => (v == null || !Number.isFinite(v) ? '—'
  : `${nf({ minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(v)} s`);
const fmtNum = (v) => (v == null ? '—' : nf({ maximumFractionDigits: 2 }).format(v));

function fmtDay(iso) {
  const d = new Date(`${iso}T12:00:00`);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleDateString(locale(), { day: 'numeric', month: 'long', year: 'numeric' });
}

/** `{at_least: 0.8}` -> "≥ 80,0 %"; seconds for means. */
function fmtTarget(target, kind) {
  if (!target) return '—';
  const [op, v] = 'at_least' in target ? ['≥', target.at_least] : ['≤', target.at_most];
  return `${op} ${kind === 'ratio' ? fmtPct(v) : fmtSecs(v)}`;
}

function pad(n) {
  return String(n).padStart(2, '0');
}

function isoDay(d) {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

// ---- what the report holds ----------------------------------------------------------------

/** The KPI lines of a report row, in docs/kpi.md order: {section, label, kind, v}. */
function kpiLines(row, targets) {
  const out = [];
  const add = (section, label, kind, v) => out.push({ section, label, kind, v });
  const c = row.calls;
  if (c) {
    add('calls', t('rp.k.arriving'), 'count', c.arriving);
    add('calls', t('rp.k.rejected'), 'count', c.rejected);
    add('calls', t('rp.k.ivr_handled'), 'ratio', c.ivr_handled);
    for (const k of ['ivr_abandoned', 'out_of_hours', 'voicemail_left', 'callback_booked_in_ivr', 'queue_unavailable']) {
      add('calls', t(`rp.k.${k}`), 'count', c[k]);
    }
    for (const k of ['transferred_out', 'to_queue', 'callback_offered', 'callback_requested', 'callback_accepted', 'answered_by_agent']) {
      add('calls', t(`rp.k.${k}`), 'ratio', c[k]);
    }
    add('calls', t('rp.k.ivr_answer'), 'mean', c.ivr_answer);
    add('calls', t('rp.k.ivr_navigation'), 'mean', c.ivr_navigation);
  }
  const q = row.queue_kpis;
  if (q && (q.offered > 0 || q.talk_time?.count > 0)) {
    add('queue', t('rp.k.offered'), 'count', q.offered);
    add('queue', t('rp.k.answered'), 'count', q.answered);
    add('queue', t('rp.k.abandoned'), 'count', q.abandoned);
    add('queue', t('rp.k.abandoned_short', { s: targets?.short_abandon_s ?? 15 }), 'count', q.abandoned_short);
    for (const [reason, n] of Object.entries(q.exits ?? {})) {
      add('queue', t('rp.k.exit', { reason: tOr(`rp.exit.${reason}`, reason) }), 'count', n);
    }
    for (const k of ['answered_of_queued', 'service_level_30s', 'service_level_60s', 'abandon_rate']) {
      add('queue', t(`rp.k.${k}`), 'ratio', q[k]);
    }
    for (const k of ['hold_time', 'speed_of_answer', 'talk_time', 'on_hold']) add('queue', t(`rp.k.${k}`), 'mean', q[k]);
    add('queue', t('rp.k.transfers'), 'count', q.transfers);
  }
  const cb = row.callbacks;
  if (cb && cb.requested > 0) {
    add('callbacks', t('rp.k.cb_requested'), 'count', cb.requested);
    add('callbacks', t('rp.k.cb_cancelled'), 'count', cb.cancelled);
    add('callbacks', t('rp.k.cb_open'), 'count', cb.open);
    add('callbacks', t('rp.k.cb_not_reached'), 'count', cb.not_reached);
    add('callbacks', t('rp.k.cb_on_time', { h: targets?.callback_working_hours ?? 8 }), 'ratio', cb.on_time);
    add('callbacks', t('rp.k.cb_by_deadline'), 'ratio', cb.by_deadline);
  }
  const vm = row.voicemails;
  if (vm && vm.received > 0) {
    add('voicemails', t('rp.k.vm_received'), 'count', vm.received);
    add('voicemails', t('rp.k.vm_open'), 'count', vm.open);
    add('voicemails', t('rp.k.vm_on_time', { h: targets?.voicemail_working_hours ?? 4 }), 'ratio', vm.on_time);
  }
  const s = row.survey;
  if (s && s.surveys > 0) {
    add('survey', t('rp.k.surveys'), 'count', s.surveys);
    add('survey', t('rp.k.survey_positive'), 'ratio', s.overall.positive);
    add('survey', t('rp.k.survey_negative'), 'ratio', s.overall.negative);
    add('survey', t('rp.k.survey_average'), 'number', s.overall.average);
    for (const [question, sc] of Object.entries(s.per_question ?? {})) {
      add('survey', t('rp.k.question_positive', { q: question }), 'ratio', sc.positive);
    }
  }
  return out;
}

function lineValue(line) {
  const v = line.v;
  switch (line.kind) {
    case 'ratio':
      return fmtPct(v?.value);
    case 'mean':
      return fmtSecs(v?.avg_s);
    case 'number':
      return fmtNum(v);
    default:
      return fmtInt(v);
  }
}

/** How the value was computed: the exact fraction, or count, total and maximum. */
function lineDetail(line) {
  const v = line.v;
  if (line.kind === 'ratio' && v) return `${fmtInt(v.num)} / ${fmtInt(v.den)}`;
  if (line.kind === 'mean' && v) {
    return v.count > 0 ? t('rp.mean_detail', { n: fmtInt(v.count), max: fmtSecs(v.max_s) }) : t('rp.mean_none');
  }
  return '';
}

/** 'missed', 'met', 'none' (no data to judge) or null (no target). */
function lineStatus(line) {
  const v = line.v;
  if (!v || (line.kind !== 'ratio' && line.kind !== 'mean') || !v.target) return null;
  if (v.missed) return 'missed';
  const value = line.kind === 'ratio' ? v.value : v.avg_s;
  return value == null ? 'none' : 'met';
}

function queueLabel(q) {
  return q == null ? t('rp.all_queues') : q;
}

function channelLabel(c) {
  return c == null ? '' : tOr(`rp.channel.${c}`, c);
}

function rowsOf(report) {
  return Array.isArray(report?.rows) ? report.rows : [];
}

/** The row the page is about: the period's total for the chosen queue (or all), all channels. */
function mainRow(report) {
  const q = report.queue_filter ?? null;
  return rowsOf(report).find((r) => r.bucket === 'total' && (r.queue ?? null) === q && r.channel == null) ?? null;
}

// ---- rendering ----------------------------------------------------------------------------

function statusCell(status) {
  const td = h('td', { class: 'status' });
  if (status) {
    td.dataset.status = status;
    td.append(h('span', { class: 'status-badge', dataset: { status }, text: t(`rp.status.${status}`) }));
  } else {
    td.textContent = '—';
  }
  return td;
}

function renderKpis(row, targets) {
  const tbody = $('kpis').tBodies[0];
  const out = [];
  let section = null;
  for (const line of kpiLines(row, targets)) {
    if (line.section !== section) {
      section = line.section;
      out.push(h('tr', { class: 'section' }, h('th', { scope: 'colgroup', colspan: '5', text: t(`rp.sec.${section}`) })));
    }
    const status = lineStatus(line);
    const tr = h('tr', { dataset: status ? { status } : {} },
      h('th', { scope: 'row', text: line.label }),
      h('td', { class: 'num', text: lineValue(line) }),
      h('td', { class: 'num muted', text: lineDetail(line) }),
      h('td', { text: line.v?.target ? fmtTarget(line.v.target, line.kind) : '—' }),
      statusCell(status));
    out.push(tr);
  }
  tbody.replaceChildren(...out);
  $('kpi-card').hidden = out.length === 0;
}

/** Every target missed on the period's total rows, per queue. */
function missedLines(report) {
  const out = [];
  for (const row of rowsOf(report)) {
    if (row.bucket !== 'total' || row.channel != null) continue;
    for (const line of kpiLines(row, report.targets)) {
      if (lineStatus(line) === 'missed') out.push({ row, line });
    }
  }
  return out;
}

function renderSummary(report) {
  const sel = R.sel;
  setText($('sum-period'), `${fmtDay(sel.from)} – ${fmtDay(sel.to)}`);
  setText($('sum-queue'), queueLabel(report.queue_filter ?? null));
  setText($('sum-tz'), report.tz ?? '—');
  const asOf = new Date(report.as_of);
  let asOfText = '—';
  if (!Number.isNaN(asOf.getTime())) {
    try {
      asOfText = asOf.toLocaleString(locale(), { timeZone: report.tz });
    } catch {
      asOfText = asOf.toLocaleString(locale());
    }
  }
  setText($('sum-as-of'), asOfText);
  const missed = missedLines(report);
  const dd = $('sum-missed');
  if (missed.length === 0) {
    dd.replaceChildren(h('span', { class: 'status-badge', dataset: { status: 'met' }, text: t('rp.no_missed') }));
  } else {
    dd.replaceChildren(
      h('span', { class: 'status-badge', dataset: { status: 'missed' }, text: t('rp.n_missed', { n: missed.length }) }),
      h('ul', { class: 'missed-list' }, ...missed.map(({ row, line }) => h('li', {
        text: `${queueLabel(row.queue ?? null)} — ${line.label}: ${lineValue(line)} (${fmtTarget(line.v.target, line.kind)})`,
      }))),
    );
  }
  $('result').hidden = false;
}

/** A ratio in a compact table cell, marked when its target is missed. */
function ratioCell(r) {
  const td = h('td', { class: 'num', text: fmtPct(r?.value) });
  if (r) td.title = `${fmtInt(r.num)} / ${fmtInt(r.den)}${r.target ? ` (${fmtTarget(r.target, 'ratio')})` : ''}`;
  if (r?.missed) {
    td.dataset.status = 'missed';
    td.append(h('span', { class: 'visually-hidden', text: ` ${t('rp.status.missed')}` }));
  }
  return td;
}

function meanCell(m) {
  const td = h('td', { class: 'num', text: fmtSecs(m?.avg_s) });
  if (m?.missed) td.dataset.status = 'missed';
  return td;
}

const COMPACT = [
  ['arriving', (r) => h('td', { class: 'num', text: r.calls ? fmtInt(r.calls.arriving) : '—' })],
  ['offered', (r) => h('td', { class: 'num', text: fmtInt(r.queue_kpis.offered) })],
  ['answered', (r) => h('td', { class: 'num', text: fmtInt(r.queue_kpis.answered) })],
  ['abandoned', (r) => h('td', { class: 'num', text: fmtInt(r.queue_kpis.abandoned) })],
  ['sl30', (r) => ratioCell(r.queue_kpis.service_level_30s)],
  ['sl60', (r) => ratioCell(r.queue_kpis.service_level_60s)],
  ['abandon_rate', (r) => ratioCell(r.queue_kpis.abandon_rate)],
  ['asa', (r) => meanCell(r.queue_kpis.speed_of_answer)],
  ['talk', (r) => meanCell(r.queue_kpis.talk_time)],
  ['cb', (r) => ratioCell(r.callbacks.on_time)],
  ['vm', (r) => ratioCell(r.voicemails.on_time)],
];

function renderCompact(tableId, cardId, firstCol, rows, labelOf, columns) {
  const table = $(tableId);
  const cols = COMPACT.filter(([k]) => columns.includes(k));
  table.tHead.rows[0].replaceChildren(
    h('th', { scope: 'col', text: t(`rp.col.${firstCol}`) }),
    ...cols.map(([k]) => h('th', { scope: 'col', class: 'num', text: t(`rp.col.${k}`) })),
  );
  table.tBodies[0].replaceChildren(...rows.map((r) => h('tr', {},
    h('th', { scope: 'row', text: labelOf(r) }),
    ...cols.map(([, cell]) => cell(r)))));
  $(cardId).hidden = rows.length === 0;
}

function renderTables(report) {
  const rows = rowsOf(report);
  const all = ['offered', 'answered', 'abandoned', 'sl30', 'sl60', 'abandon_rate', 'asa', 'talk', 'cb', 'vm'];
  // One line per queue (and per channel when there are several), for the whole period.
  const channels = new Set(rows.map((r) => r.channel).filter((c) => c != null));
  const perQueue = rows.filter((r) => r.bucket === 'total' && r.queue != null && (r.channel == null || channels.size > 1));
  renderCompact('queues', 'queues-card', 'queue', perQueue,
    (r) => (r.channel == null ? r.queue : `${r.queue} · ${channelLabel(r.channel)}`), all);
  const q = report.queue_filter ?? null;
  const perBucket = rows.filter((r) => r.bucket !== 'total' && (r.queue ?? null) === q && r.channel == null);
  const cols = q == null ? ['arriving', ...all] : all;
  renderCompact('buckets', 'buckets-card', 'bucket', perBucket.length > 1 ? perBucket : [], (r) => r.bucket, cols);
}

function renderSkipped(report) {
  const list = Array.isArray(report.skipped) ? report.skipped : [];
  $('skipped').replaceChildren(...list.map((s) => h('li', { text: `${s.id}: ${s.reason}` })));
  $('skipped-card').hidden = list.length === 0;
}

// ---- charts -------------------------------------------------------------------------------

const SVG_NS = 'http://www.w3.org/2000/svg';
// Okabe–Ito colours: told apart by people with the common colour blindnesses.
const COLORS = {
  answered: '#009E73', abandoned: '#D55E00', exited: '#E69F00', offered: '#0072B2', sl: '#0072B2', missed: '#D55E00', target: '#14201a',
};
const CH = { w: 960, h: 320, l: 64, r: 16, t: 16, b: 56 };

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text != null) el.textContent = text;
  return el;
}

function niceStep(max, ticks = 5) {
  const raw = max / ticks;
  const pow = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * pow >= raw) return m * pow;
  return 10 * pow;
}

/**
 * Draws bars into svg#id: one group per category, its series side by side (or stacked).
 * A value of null draws nothing (no data), unlike 0. `colorOf(series, i)` may colour single
 * bars; `target` draws a dashed line; `titleOf(i)` is each category's tooltip and description.
 */
function barChart(id, {
  categories, series, stacked = false, yMax: fixedMax = null, fmtY = fmtInt, xTitle, yTitle, target = null, titleOf, empty,
}) {
  const svg = $(id);
  const plot = svg.querySelector('g.plot');
  const { w, h: ch, l, r, t: top, b } = CH;
  const pw = w - l - r;
  const ph = ch - top - b;
  const val = (se, i) => se.values[i];
  const heights = categories.map((_, i) => (stacked
    ? series.reduce((a, se) => a + (val(se, i) ?? 0), 0)
    : Math.max(0, ...series.map((se) => val(se, i) ?? 0))));
  // Counts of 0 everywhere are no data; a share of 0 (a null-or-value series) is data.
  const hasData = series.some((se) => se.values.some((v) => v != null && (v > 0 || fixedMax != null)));
  let yMax = fixedMax;
  let step;
  if (yMax == null) {
    const m = Math.max(0, ...heights);
    step = niceStep(m > 0 ? m : 5);
    yMax = Math.max(step, Math.ceil(m / step) * step);
    if (step < 1) {
      step = 1;
      yMax = Math.max(1, Math.ceil(m));
    }
  } else {
    step = yMax / 5;
  }
  const band = pw / categories.length;
  const y = (v) => top + ph - (Math.min(v, yMax) / yMax) * ph;
  const g = document.createDocumentFragment();
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    g.append(s('line', { x1: l, x2: w - r, y1: y(v), y2: y(v), class: v === 0 ? 'axis' : 'grid' }));
    g.append(s('text', { x: l - 8, y: y(v) + 5, 'text-anchor': 'end', class: 'tick' }, fmtY(v)));
  }
  categories.forEach((c, i) => {
    g.append(s('text', { x: l + (i + 0.5) * band, y: top + ph + 20, 'text-anchor': 'middle', class: 'tick' }, c));
  });
  g.append(s('text', { x: l + pw / 2, y: ch - 8, 'text-anchor': 'middle', class: 'axis-title' }, xTitle));
  g.append(s('text', {
    x: 16, y: top + ph / 2, 'text-anchor': 'middle', class: 'axis-title', transform: `rotate(-90 16 ${top + ph / 2})`,
  }, yTitle));
  if (hasData) {
    categories.forEach((c, i) => {
      const group = s('g', { class: 'bar-group' });
      group.append(s('title', {}, titleOf(i)));
      if (stacked) {
        let acc = 0;
        for (const se of series) {
          const v = val(se, i) ?? 0;
          if (v <= 0) continue;
          group.append(s('rect', {
            x: l + i * band + band * 0.15, width: band * 0.7, y: y(acc + v), height: y(acc) - y(acc + v),
            fill: se.colorOf?.(i) ?? se.color, class: `bar bar-${se.key}`,
          }));
          acc += v;
        }
      } else {
        const inner = band * 0.8;
        const bw = inner / series.length;
        series.forEach((se, j) => {
          const v = val(se, i);
          if (v == null) return;
          const x = l + i * band + band * 0.1 + j * bw;
          // A measured zero still shows, as a thick line on the axis.
          const height = Math.max(v === 0 && fixedMax != null ? 4 : 0, y(0) - y(v));
          group.append(s('rect', {
            x, width: Math.max(1, bw - 1), y: y(0) - height, height,
            fill: se.colorOf?.(i) ?? se.color, class: `bar bar-${se.key}`,
          }));
        });
      }
      g.append(group);
    });
    if (target != null) {
      g.append(s('line', {
        x1: l, x2: w - r, y1: y(target), y2: y(target), stroke: COLORS.target, 'stroke-width': 2, 'stroke-dasharray': '8 6', class: 'target',
      }));
    }
  } else {
    g.append(s('text', { x: l + pw / 2, y: top + ph / 2, 'text-anchor': 'middle', class: 'empty' }, empty));
  }
  plot.replaceChildren(g);
  const desc = hasData ? categories.map((_, i) => titleOf(i)).join('; ') : empty;
  setText(svg.querySelector('desc'), desc);
}

function legend(id, items) {
  $(id).replaceChildren(...items.map(({ color, label, dashed }) => {
    const sample = s('svg', { width: 28, height: 16, viewBox: '0 0 28 16', 'aria-hidden': 'true', focusable: 'false' });
    sample.append(dashed
      ? s('line', { x1: 1, x2: 27, y1: 8, y2: 8, stroke: color, 'stroke-width': 2, 'stroke-dasharray': '6 4' })
      : s('rect', { x: 4, y: 2, width: 20, height: 12, fill: color }));
    return h('li', {}, sample, h('span', { text: label }));
  }));
}

function renderCharts(row, targets) {
  const charts = row?.charts;
  $('charts-card').hidden = !charts;
  if (!charts) return;
  const bins = charts.wait_distribution ?? [];
  const binSeries = ['answered', 'abandoned', 'exited'].map((key) => ({
    key, color: COLORS[key], label: t(`rp.series.${key}`), values: bins.map((b) => b[key] ?? 0),
  }));
  barChart('wait-dist-chart', {
    categories: bins.map((b) => b.label),
    series: binSeries,
    stacked: true,
    xTitle: t('rp.chart.wait_axis'),
    yTitle: t('rp.chart.calls'),
    empty: t('rp.chart.empty'),
    titleOf: (i) => `${bins[i].label} s: ${binSeries.map((se) => `${se.label} ${fmtInt(se.values[i])}`).join(', ')}`,
  });
  legend('wait-dist-legend', binSeries);

  const hours = charts.hourly ?? [];
  const hourSeries = ['offered', 'answered', 'abandoned'].map((key) => ({
    key, color: COLORS[key], label: t(`rp.series.${key}`), values: hours.map((hr) => hr[key] ?? 0),
  }));
  barChart('hourly-chart', {
    categories: hours.map((hr) => String(hr.hour)),
    series: hourSeries,
    xTitle: t('rp.chart.hour'),
    yTitle: t('rp.chart.calls'),
    empty: t('rp.chart.empty'),
    titleOf: (i) => `${t('rp.chart.hour_n', { h: hours[i].hour })}: ${hourSeries.map((se) => `${se.label} ${fmtInt(se.values[i])}`).join(', ')}`,
  });
  legend('hourly-legend', hourSeries);

  const sl = hours.map((hr) => hr.service_level_30s);
  const targetV = targets?.service_level_30s;
  const slSeries = {
    key: 'sl',
    color: COLORS.sl,
    label: t('rp.series.sl'),
    values: sl.map((r) => (r?.value == null ? null : r.value * 100)),
    colorOf: (i) => (sl[i]?.missed ? COLORS.missed : COLORS.sl),
  };
  barChart('sl-chart', {
    categories: hours.map((hr) => String(hr.hour)),
    series: [slSeries],
    yMax: 100,
    fmtY: (v) => `${Math.round(v)} %`,
    target: targetV == null ? null : targetV * 100,
    xTitle: t('rp.chart.hour'),
    yTitle: t('rp.chart.percent'),
    empty: t('rp.chart.empty'),
    titleOf: (i) => {
      const r = sl[i];
      const v = r?.value == null ? t('rp.status.none') : `${fmtPct(r.value)} (${fmtInt(r.num)} / ${fmtInt(r.den)})`;
      return `${t('rp.chart.hour_n', { h: hours[i].hour })}: ${v}${r?.missed ? ` — ${t('rp.status.missed')}` : ''}`;
    },
  });
  const items = [{ color: COLORS.sl, label: t('rp.series.sl') }, { color: COLORS.missed, label: t('rp.series.sl_missed') }];
  if (targetV != null) items.push({ color: COLORS.target, label: `${t('rp.series.target')} ${fmtPct(targetV)}`, dashed: true });
  legend('sl-legend', items);
}

function render() {
  const report = R.report;
  if (!report) {
    for (const id of ['result', 'kpi-card', 'queues-card', 'buckets-card', 'charts-card', 'skipped-card', 'empty']) $(id).hidden = true;
    return;
  }
  for (const r of rowsOf(report)) if (r.queue) R.queues.add(r.queue);
  renderQueueOptions();
  renderSummary(report);
  const row = mainRow(report);
  $('empty').hidden = row != null;
  if (row) {
    renderKpis(row, report.targets);
  } else {
    $('kpi-card').hidden = true;
  }
  renderTables(report);
  renderCharts(row, report.targets);
  renderSkipped(report);
}

// ---- selection and requests ---------------------------------------------------------------

function renderQueueOptions() {
  const select = $('queue');
  const keep = select.value;
  const names = [...R.queues].sort((a, b) => a.localeCompare(b));
  const sig = names.join('\n');
  if (select.dataset.sig === sig) return;
  select.dataset.sig = sig;
  const all = h('option', { value: '', text: t('rp.all_queues'), 'data-i18n': 'rp.all_queues' });
  select.replaceChildren(all, ...names.map((n) => h('option', { value: n, text: n })));
  select.value = names.includes(keep) ? keep : '';
}

function readSelection() {
  const sel = { from: $('from').value, to: $('to').value, queue: $('queue').value, by: $('by').value };
  const err = $('form-error');
  let key = null;
  if (!sel.from || !sel.to) key = 'rp.form.dates';
  else if (sel.from > sel.to) key = 'rp.form.order';
  err.hidden = !key;
  setText(err, key ? t(key) : '');
  setAttr($('from'), 'aria-invalid', key ? 'true' : null);
  setAttr($('to'), 'aria-invalid', key ? 'true' : null);
  return key ? null : sel;
}

function query(sel, extra = {}) {
  const p = new URLSearchParams({ from: sel.from, to: sel.to });
  if (sel.queue) p.set('queue', sel.queue);
  for (const [k, v] of Object.entries(extra)) p.set(k, v);
  return p.toString();
}

/** common.js's run() leaves the button disabled for the caller to decide; here it always comes back. */
function enable(button) {
  button.disabled = false;
}

/** fetch with the CTI token; a refused token sends the page back to the login form. */
async function authFetch(path) {
  const token = cti.token;
  if (!token) throw new HttpError(401, 'unauthenticated', '');
  let resp;
  try {
    resp = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
  } catch (e) {
    throw new HttpError(0, 'disconnected', String(e));
  }
  if (resp.ok) return resp;
  let body = null;
  try {
    body = await resp.json();
  } catch {
    // Not JSON: the status says enough.
  }
  const err = new HttpError(resp.status, body?.code ?? 'http', body?.error ?? `HTTP ${resp.status}`);
  if (resp.status === 401) cti.logoutLocal();
  throw err;
}

async function showReport() {
  const sel = readSelection();
  if (!sel) return;
  history.replaceState(null, '', `#${query(sel, { by: sel.by })}`);
  const button = $('btn-show');
  await run(button, async () => {
    notice(t('rp.loading'));
    const resp = await authFetch(`/api/reports?${query(sel, { by: sel.by })}`);
    R.report = await resp.json();
    R.sel = sel;
    render();
    notice(t('rp.ready'));
  }, () => enable(button));
}

function fileName(resp, fallback) {
  const cd = resp.headers.get('Content-Disposition') ?? '';
  const m = /filename="([^"]+)"/.exec(cd);
  return m ? m[1] : fallback;
}

async function download(button, extra) {
  const sel = readSelection();
  if (!sel) return;
  await run(button, async () => {
    const resp = await authFetch(`/api/export.csv?${query(sel, { separator: $('separator').value, ...extra })}`);
    const blob = await resp.blob();
    const name = fileName(resp, 'verde-export.csv');
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    // The browser has the file once the click is handled; the URL can go a little later.
    setTimeout(() => URL.revokeObjectURL(url), 30000);
    notice(t('rp.downloaded', { name }));
  }, () => enable(button));
}

async function loadQueueNames() {
  try {
    const resp = await fetch('/api/queues', { cache: 'no-store' });
    if (!resp.ok) return;
    const list = await resp.json();
    for (const q of Array.isArray(list) ? list : []) if (q?.name) R.queues.add(q.name);
    renderQueueOptions();
  } catch {
    // The names seen in reports still fill the list.
  }
}

function initialSelection() {
  const p = new URLSearchParams(location.hash.slice(1));
  const today = new Date();
  const day = /^\d{4}-\d{2}-\d{2}$/;
  $('from').value = day.test(p.get('from') ?? '') ? p.get('from') : isoDay(new Date(today.getFullYear(), today.getMonth(), 1));
  $('to').value = day.test(p.get('to') ?? '') ? p.get('to') : isoDay(today);
  const by = p.get('by');
  if (['day', 'month', 'quarter'].includes(by)) $('by').value = by;
  const queue = p.get('queue');
  if (queue) {
    R.queues.add(queue);
    renderQueueOptions();
    $('queue').value = queue;
  }
}

initialSelection();

const cti = setupPage({
  role: 'supervisor',
  storageKey: 'verde.cti.token.reports',
  onSession() {
    loadQueueNames();
    if (!R.report) showReport();
  },
  onLoggedOut() {
    R.report = null;
    render();
  },
  onLang: () => {
    readSelection();
    render();
  },
});

$('report-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  showReport();
});
$('btn-csv').addEventListener('click', (ev) => download(ev.currentTarget, {}));
$('btn-queue-log').addEventListener('click', (ev) => download(ev.currentTarget, { log: 'queue' }));
$('btn-print').addEventListener('click', () => window.print());
$('btn-logout').addEventListener('click', () => cti.logoutLocal());

// Exposed for the browser test and the console: the last report as received.
window.verdeReport = () => R.report;
