// The supervisor's wallboard: queues, agents and callers from queue_snapshot/queue_delta,
// service levels and the waiting chart from queue_stats.

import { t, tOr, locale } from './i18n.js';
import {
  $, setupPage, fmtDur, fmtPercent, fmtClock, setText, setAttr, syncRows, h, notice, noticeError, run,
} from './common.js';

const INTERVAL_KEY = 'verde.wallboard.interval';
const INTERVALS = [500, 1000, 2000, 5000, 10000];
const QUEUE_FIELDS = [
  'waiting', 'oldest_wait', 'agents_ready', 'agents_oncall', 'agents_wrapup', 'agents_paused',
  'sl30_today', 'sl60_today', 'sl30_15m', 'sl60_15m', 'abandon_rate_today', 'asa_today', 'estimated_wait',
];
// Agents being given a call count as on call: they are no longer available to the queue.
const COUNT_AS = {
  ready: 'ready', oncall: 'oncall', ringing: 'oncall', reserved: 'oncall', wrapup: 'wrapup', paused: 'paused',
};
const WARN_WAIT_S = 30;
const ALERT_WAIT_S = 60;

const W = {
  queues: new Map(),
  agents: new Map(),
  stats: new Map(),
  waitByHour: [],
  skewMs: 0, // server clock minus page clock, from the last message's at_ms
  updatedMs: null,
};

const serverNow = () => Date.now() + W.skewMs;
const sinceS = (ms) => (ms == null ? null : (serverNow() - ms) / 1000);

function touch(atMs) {
  if (Number.isFinite(atMs)) {
    W.skewMs = atMs - Date.now();
    W.updatedMs = atMs;
  } else {
    W.updatedMs = Date.now();
  }
  renderUpdated();
}

// ---- queues -------------------------------------------------------------------------------

function agentCounts() {
  const counts = new Map();
  for (const a of W.agents.values()) {
    const bucket = COUNT_AS[a.state];
    if (!bucket) continue;
    for (const q of a.queues ?? []) {
      if (!counts.has(q)) counts.set(q, { ready: 0, oncall: 0, wrapup: 0, paused: 0 });
      counts.get(q)[bucket] += 1;
    }
  }
  return counts;
}

function buildQueueRow() {
  const tr = h('tr');
  tr.append(h('th', { scope: 'row', dataset: { field: 'name' } }));
  for (const f of QUEUE_FIELDS) tr.append(h('td', { dataset: { field: f } }));
  return tr;
}

function waitLevel(s) {
  if (s == null) return null;
  if (s >= ALERT_WAIT_S) return 'alert';
  if (s >= WARN_WAIT_S) return 'warn';
  return null;
}

function updateQueueRow(tr, q, counts) {
  const cell = (f) => tr.querySelector(`[data-field="${f}"]`);
  const c = counts.get(q.name) ?? { ready: 0, oncall: 0, wrapup: 0, paused: 0 };
  const st = W.stats.get(q.name);
  const oldest = sinceS(q.oldest_since_ms);
  setText(cell('name'), q.name);
  setText(cell('waiting'), q.waiting ?? 0);
  setAttr(cell('waiting'), 'data-level', (q.waiting ?? 0) > 0 ? 'warn' : null);
  setText(cell('oldest_wait'), oldest == null ? '—' : fmtDur(oldest));
  setAttr(cell('oldest_wait'), 'data-level', waitLevel(oldest));
  setText(cell('agents_ready'), c.ready);
  setText(cell('agents_oncall'), c.oncall);
  setText(cell('agents_wrapup'), c.wrapup);
  setText(cell('agents_paused'), c.paused);
  setText(cell('sl30_today'), fmtPercent(st?.today?.sl30));
  setText(cell('sl60_today'), fmtPercent(st?.today?.sl60));
  setText(cell('sl30_15m'), fmtPercent(st?.last_15m?.sl30));
  setText(cell('sl60_15m'), fmtPercent(st?.last_15m?.sl60));
  setText(cell('abandon_rate_today'), fmtPercent(st?.today?.abandon_rate));
  setText(cell('asa_today'), st?.today?.asa_s == null ? '—' : fmtDur(st.today.asa_s));
  setText(cell('estimated_wait'), q.estimated_wait_s == null ? '—' : fmtDur(q.estimated_wait_s));
}

function renderQueues() {
  const counts = agentCounts();
  const list = [...W.queues.values()].sort((a, b) => a.name.localeCompare(b.name));
  syncRows($('queues').tBodies[0], 'queue', list, (q) => q.name, buildQueueRow, (tr, q) => updateQueueRow(tr, q, counts));
  $('queues-empty').hidden = list.length > 0;
}

// ---- agents -------------------------------------------------------------------------------

// How a supervisor's phone joins an agent's call (`supervise`), and leaving it.
const SUPERVISE = ['listen', 'whisper', 'barge', 'stop'];

function buildAgentRow(a) {
  const tr = h('tr');
  tr.append(
    h('th', { scope: 'row', dataset: { field: 'agent' } }, h('span', { class: 'id' }), ' ', h('span', { class: 'name muted' })),
    h('td', { dataset: { field: 'state' } }, h('span', { class: 'state-badge small' })),
    h('td', { class: 'num', dataset: { field: 'in_state' } }),
    h('td', { class: 'num', dataset: { field: 'call' } }),
    h('td', { class: 'num', dataset: { field: 'calls_handled' } }),
    h('td', { dataset: { field: 'registered' } }),
    h('td', { class: 'actions controls-only', dataset: { field: 'actions' } },
      h('button', { type: 'button', 'data-action': 'force-pause', 'data-agent': a.id }),
      h('button', { type: 'button', class: 'danger', 'data-action': 'force-logout', 'data-agent': a.id }),
      ...SUPERVISE.map((mode) => h('button', { type: 'button', 'data-action': 'supervise', 'data-mode': mode, 'data-agent': a.id }))),
  );
  return tr;
}

function updateAgentRow(tr, a) {
  const cell = (f) => tr.querySelector(`[data-field="${f}"]`);
  const who = cell('agent');
  setText(who.querySelector('.id'), a.id);
  setText(who.querySelector('.name'), a.name && a.name !== a.id ? a.name : '');
  const stateCell = cell('state');
  setAttr(stateCell, 'data-state', a.state);
  const badge = stateCell.firstElementChild;
  setAttr(badge, 'data-state', a.state);
  let label = tOr(`state.${a.state}`, a.state);
  if (a.state === 'paused' && a.reason) label += ` — ${tOr(`reason.${a.reason}`, a.reason)}`;
  setText(badge, label);
  setText(cell('in_state'), fmtDur(sinceS(a.since_ms)));
  setText(cell('call'), a.call ?? '—');
  setText(cell('calls_handled'), a.calls_handled ?? 0);
  setAttr(cell('registered'), 'data-registered', String(Boolean(a.registered)));
  setText(cell('registered'), a.registered ? t('wb.yes') : t('wb.no'));
  const pause = tr.querySelector('[data-action=force-pause]');
  const logout = tr.querySelector('[data-action=force-logout]');
  setText(pause, t('btn.force_pause'));
  setText(logout, t('btn.force_logout'));
  setAttr(pause, 'aria-label', `${t('btn.force_pause')}: ${a.id}`);
  setAttr(logout, 'aria-label', `${t('btn.force_logout')}: ${a.id}`);
  if (!pause.hasAttribute('aria-busy')) pause.disabled = a.state === 'loggedout' || a.state === 'paused';
  if (!logout.hasAttribute('aria-busy')) logout.disabled = a.state === 'loggedout';
  for (const b of tr.querySelectorAll('[data-action=supervise]')) {
    const label = t(`btn.supervise.${b.dataset.mode}`);
    setText(b, label);
    setAttr(b, 'aria-label', `${label}: ${a.id}`);
    b.dataset.call = a.call ?? '';
    if (!b.hasAttribute('aria-busy')) b.disabled = a.state !== 'oncall' || a.call == null;
  }
}

function renderAgents() {
  const list = [...W.agents.values()].sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
  syncRows($('agents').tBodies[0], 'agent', list, (a) => a.id, buildAgentRow, updateAgentRow);
  $('agents-empty').hidden = list.length > 0;
}

// ---- callers ------------------------------------------------------------------------------

function callerList() {
  const list = [];
  for (const q of W.queues.values()) {
    for (const c of q.callers ?? []) list.push({ ...c, queue: q.name });
  }
  // Being offered (position null) first, then line order; queues alphabetically.
  const pos = (c) => (c.position == null ? -1 : c.position);
  return list.sort((a, b) => a.queue.localeCompare(b.queue) || pos(a) - pos(b) || (a.since_ms ?? 0) - (b.since_ms ?? 0));
}

function buildCallerRow(c) {
  const tr = h('tr');
  for (const f of ['queue', 'caller', 'kind', 'position', 'waited']) {
    tr.append(h('td', { class: f === 'position' || f === 'waited' ? 'num' : null, dataset: { field: f } }));
  }
  tr.append(h('td', { class: 'actions controls-only', dataset: { field: 'move' } },
    h('select', { 'data-move': String(c.call) }),
    h('button', { type: 'button', 'data-action': 'move', 'data-call': String(c.call) })));
  return tr;
}

function updateCallerRow(tr, c, queueNames) {
  const cell = (f) => tr.querySelector(`[data-field="${f}"]`);
  setText(cell('queue'), c.queue);
  setText(cell('caller'), c.caller ? c.caller : t('caller.withheld'));
  setText(cell('kind'), tOr(`wb.kind.${c.kind}`, c.kind ?? '—'));
  setText(cell('position'), c.position == null ? t('wb.offering') : c.position + 1);
  setText(cell('waited'), fmtDur(sinceS(c.since_ms)));

  const select = tr.querySelector('select[data-move]');
  const others = queueNames.filter((n) => n !== c.queue);
  const sig = others.join('\n');
  if (select.dataset.sig !== sig) {
    const keep = select.value;
    select.dataset.sig = sig;
    select.replaceChildren(...others.map((n) => h('option', { value: n, text: n })));
    if (others.includes(keep)) select.value = keep;
  }
  setAttr(select, 'aria-label', t('wb.move_to', { call: c.call }));
  const button = tr.querySelector('button[data-action=move]');
  setText(button, t('btn.move'));
  setAttr(button, 'aria-label', `${t('btn.move')}: ${c.call}`);
  select.disabled = others.length === 0;
  if (!button.hasAttribute('aria-busy')) button.disabled = others.length === 0;
}

function renderCallers() {
  const names = [...W.queues.keys()].sort((a, b) => a.localeCompare(b));
  const list = callerList();
  syncRows($('callers').tBodies[0], 'call', list, (c) => c.call, buildCallerRow, (tr, c) => updateCallerRow(tr, c, names));
  $('callers-empty').hidden = list.length > 0;
}

// ---- chart --------------------------------------------------------------------------------

const SVG_NS = 'http://www.w3.org/2000/svg';
// Okabe–Ito colours: told apart by people with the common colour blindnesses.
const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9'];
const MARKERS = ['circle', 'square', 'diamond', 'triangle'];
const CHART = { w: 960, h: 340, l: 64, r: 16, t: 16, b: 56 };

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

function marker(shape, x, y, r, attrs) {
  switch (shape) {
    case 'square':
      return s('rect', { x: x - r, y: y - r, width: 2 * r, height: 2 * r, ...attrs });
    case 'diamond':
      return s('polygon', { points: `${x},${y - r * 1.3} ${x + r * 1.3},${y} ${x},${y + r * 1.3} ${x - r * 1.3},${y}`, ...attrs });
    case 'triangle':
      return s('polygon', { points: `${x},${y - r * 1.3} ${x + r * 1.2},${y + r} ${x - r * 1.2},${y + r}`, ...attrs });
    default:
      return s('circle', { cx: x, cy: y, r, ...attrs });
  }
}

function secs(v) {
  return `${new Intl.NumberFormat(locale(), { maximumFractionDigits: 0 }).format(v)} s`;
}

function chartData() {
  return (W.waitByHour ?? []).filter((d) => Number.isInteger(d.hour) && d.hour >= 0 && d.hour <= 23
    && Number.isFinite(d.avg_wait_s) && Number.isFinite(d.max_wait_s) && typeof d.channel === 'string');
}

function channelOrder(data) {
  const seen = [...new Set(data.map((d) => d.channel))];
  return seen.sort((a, b) => (a === 'voice' ? -1 : b === 'voice' ? 1 : a.localeCompare(b)));
}

function renderChart() {
  const svg = $('wait-chart');
  const plot = svg.querySelector('g.plot');
  const data = chartData();
  const channels = channelOrder(data);
  const { w, h: ch, l, r, t: top, b } = CHART;
  const pw = w - l - r;
  const ph = ch - top - b;
  const maxV = Math.max(0, ...data.map((d) => Math.max(d.avg_wait_s, d.max_wait_s)));
  const step = niceStep(maxV > 0 ? maxV : 60);
  const yMax = Math.max(step, Math.ceil(maxV / step) * step);
  const x = (hour) => l + ((hour + 0.5) * pw) / 24;
  const y = (v) => top + ph - (v / yMax) * ph;

  const g = document.createDocumentFragment();
  // Grid and y axis.
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    g.append(s('line', { x1: l, x2: w - r, y1: y(v), y2: y(v), class: v === 0 ? 'axis' : 'grid' }));
    g.append(s('text', { x: l - 8, y: y(v) + 5, 'text-anchor': 'end', class: 'tick' }, String(Math.round(v))));
  }
  for (let hour = 0; hour < 24; hour += 1) {
    g.append(s('text', { x: x(hour), y: top + ph + 20, 'text-anchor': 'middle', class: 'tick' }, String(hour)));
  }
  g.append(s('text', { x: l + pw / 2, y: ch - 8, 'text-anchor': 'middle', class: 'axis-title' }, t('wb.chart_hour')));
  g.append(s('text', {
    x: 16, y: top + ph / 2, 'text-anchor': 'middle', class: 'axis-title', transform: `rotate(-90 16 ${top + ph / 2})`,
  }, t('wb.chart_seconds')));

  const descParts = [t('wb.chart_desc')];
  channels.forEach((channel, i) => {
    const color = PALETTE[i % PALETTE.length];
    const shape = MARKERS[i % MARKERS.length];
    const points = data.filter((d) => d.channel === channel).sort((a, b2) => a.hour - b2.hour);
    const label = tOr(`channel.${channel}`, channel);
    const series = s('g', { class: 'series', 'data-channel': channel });
    for (const [key, dash, filled] of [['avg_wait_s', null, true], ['max_wait_s', '7 5', false]]) {
      // Consecutive hours are joined; a gap in the data is a gap in the line.
      let d = '';
      let prevHour = null;
      for (const p of points) {
        d += `${prevHour != null && p.hour === prevHour + 1 ? 'L' : 'M'}${x(p.hour).toFixed(1)},${y(p[key]).toFixed(1)} `;
        prevHour = p.hour;
      }
      if (d) {
        series.append(s('path', {
          d, fill: 'none', stroke: color, 'stroke-width': filled ? 3 : 2, ...(dash ? { 'stroke-dasharray': dash } : {}),
        }));
      }
      for (const p of points) {
        const m = marker(shape, x(p.hour), y(p[key]), filled ? 5 : 4.5, {
          fill: filled ? color : '#ffffff', stroke: color, 'stroke-width': 2,
        });
        m.append(s('title', {}, `${label}: ${t('wb.chart_point', {
          hour: p.hour, avg: secs(p.avg_wait_s), max: secs(p.max_wait_s), calls: p.calls ?? 0,
        })}`));
        series.append(m);
      }
    }
    g.append(series);
    descParts.push(`${label}: ${points.map((p) => t('wb.chart_point', {
      hour: p.hour, avg: secs(p.avg_wait_s), max: secs(p.max_wait_s), calls: p.calls ?? 0,
    })).join('; ')}.`);
  });
  if (channels.length === 0) {
    g.append(s('text', { x: l + pw / 2, y: top + ph / 2, 'text-anchor': 'middle', class: 'empty' }, t('wb.chart_empty')));
    descParts.push(t('wb.chart_empty'));
  }
  plot.replaceChildren(g);
  setText($('wait-chart-title'), t('wb.chart'));
  setText($('wait-chart-desc'), descParts.join(' '));
  renderLegend(channels);
}

function renderLegend(channels) {
  const items = [];
  channels.forEach((channel, i) => {
    const color = PALETTE[i % PALETTE.length];
    const shape = MARKERS[i % MARKERS.length];
    const label = tOr(`channel.${channel}`, channel);
    for (const [which, dash, filled] of [['wb.chart_avg', null, true], ['wb.chart_max', '7 5', false]]) {
      const sample = s('svg', { width: 44, height: 16, viewBox: '0 0 44 16', 'aria-hidden': 'true', focusable: 'false' });
      sample.append(s('line', { x1: 2, x2: 42, y1: 8, y2: 8, stroke: color, 'stroke-width': filled ? 3 : 2, ...(dash ? { 'stroke-dasharray': dash } : {}) }));
      sample.append(marker(shape, 22, 8, filled ? 5 : 4.5, { fill: filled ? color : '#ffffff', stroke: color, 'stroke-width': 2 }));
      items.push(h('li', {}, sample, h('span', { text: `${label} — ${t(which)}` })));
    }
  });
  $('wait-chart-legend').replaceChildren(...items);
}

// ---- page ---------------------------------------------------------------------------------

function renderUpdated() {
  const el = $('updated');
  if (W.updatedMs == null) {
    setText(el, '—');
    el.removeAttribute('datetime');
    return;
  }
  setText(el, fmtClock(W.updatedMs));
  setAttr(el, 'datetime', new Date(W.updatedMs).toISOString());
}

function renderIntervalLabels() {
  const nf = new Intl.NumberFormat(locale(), { maximumFractionDigits: 1 });
  for (const opt of $('interval').options) setText(opt, `${nf.format(Number(opt.value) / 1000)} s`);
}

function renderTables() {
  renderQueues();
  renderAgents();
  renderCallers();
}

function renderAll() {
  renderIntervalLabels();
  renderUpdated();
  renderTables();
  renderChart();
}

function storedInterval() {
  try {
    const v = Number(localStorage.getItem(INTERVAL_KEY));
    if (INTERVALS.includes(v)) return v;
  } catch {
    // Default below.
  }
  return 1000;
}

async function subscribe() {
  const interval = Number($('interval').value) || 1000;
  try {
    await cti.command('subscribe_queues', { interval_ms: interval });
  } catch (e) {
    noticeError(e);
  }
}

function clear() {
  W.queues.clear();
  W.agents.clear();
  W.stats.clear();
  W.waitByHour = [];
  W.updatedMs = null;
  renderAll();
}

$('interval').value = String(storedInterval());

const cti = setupPage({
  role: 'supervisor',
  storageKey: 'verde.cti.token.wallboard',
  onSession() {
    // A resume restores the subscription on the server; sending it again applies the
    // interval chosen here and brings a fresh snapshot either way.
    subscribe();
  },
  onLoggedOut: clear,
  onLang: renderAll,
});

cti.on('queue_snapshot', (m) => {
  W.queues = new Map((m.queues ?? []).map((q) => [q.name, q]));
  W.agents = new Map((m.agents ?? []).map((a) => [a.id, a]));
  touch(m.at_ms);
  renderTables();
});

cti.on('queue_delta', (m) => {
  for (const q of m.queues ?? []) W.queues.set(q.name, q);
  for (const a of m.agents ?? []) W.agents.set(a.id, a);
  for (const name of m.removed_queues ?? []) W.queues.delete(name);
  for (const id of m.removed_agents ?? []) W.agents.delete(id);
  touch(m.at_ms);
  renderTables();
});

cti.on('queue_stats', (m) => {
  W.stats = new Map((m.queues ?? []).map((q) => [q.name, q]));
  W.waitByHour = Array.isArray(m.wait_by_hour) ? m.wait_by_hour : [];
  touch(m.at_ms);
  renderQueues();
  renderChart();
});

$('interval').addEventListener('change', () => {
  try {
    localStorage.setItem(INTERVAL_KEY, $('interval').value);
  } catch {
    // Applies to this page only.
  }
  if (cti.session) subscribe();
});

$('btn-print').addEventListener('click', () => window.print());
$('btn-logout').addEventListener('click', () => cti.logoutLocal());

$('agents').tBodies[0].addEventListener('click', (ev) => {
  const button = ev.target.closest('button[data-action]');
  if (!button) return;
  const agent = button.dataset.agent;
  if (button.dataset.action === 'supervise') {
    run(button, async () => {
      await cti.command('supervise', { call: Number(button.dataset.call), mode: button.dataset.mode });
      notice(t(button.dataset.mode === 'stop' ? 'wb.supervise_left' : 'wb.supervise_ringing'));
    }, renderAgents);
    return;
  }
  const fields = button.dataset.action === 'force-pause'
    ? { agent, state: 'pause', reason: 'supervisor' }
    : button.dataset.action === 'force-logout' ? { agent, state: 'logout' } : null;
  if (!fields) return;
  run(button, async () => {
    await cti.command('force_state', fields);
    notice(t('wb.done'));
  }, renderAgents);
});

$('callers').tBodies[0].addEventListener('click', (ev) => {
  const button = ev.target.closest('button[data-action=move]');
  if (!button) return;
  const select = button.closest('tr').querySelector('select[data-move]');
  const queue = select?.value;
  if (!queue) return;
  run(button, async () => {
    await cti.command('move_caller', { call: Number(button.dataset.call), queue });
    notice(t('wb.done'));
  }, renderCallers);
});

setInterval(renderTables, 500);
renderAll();
