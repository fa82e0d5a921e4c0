// The agent bar: state, the incoming-call pop-up, the current call, transfers and tasks.
// The page holds no truth of its own: after a login or a resume the server replays the agent's
// state and calls, and the page rebuilds its view from those events.

import { t, tOr } from './i18n.js';
import {
  $, setupPage, fmtDur, fmtDateTime, setText, setAttr, syncRows, h, notice, noticeError, run,
} from './common.js';
import { createSoftphone } from './softphone.js';

const BUSY_STATES = new Set(['reserved', 'ringing', 'oncall', 'wrapup']);
// After a resume the server replays call_offered and then call_answered for a call already in
// progress; waiting this long before popping up an offer seen right after the session starts
// avoids a flash and a beep for a call that is not ringing.
const REPLAY_WINDOW_MS = 1000;
const REPLAY_SETTLE_MS = 300;

// Before setupPage: its first render may already reset the page (no stored token).
const softphone = createSoftphone();

const S = {
  me: null,
  state: 'loggedout',
  reason: null,
  stateStart: performance.now(),
  calls: new Map(), // call id -> {id, caller, did, queue, channel, waited_s, offeredAt, language, choices, status, since}
  tasks: new Map(), // "kind:id" -> task
  queues: null, // this agent's configured queues; null until /api/agents answered
  unchecked: new Set(),
  allQueues: [],
  agentIds: [],
  busy: new Set(), // buttons whose command is in flight
  offerShown: null,
  focusBefore: null,
  sessionAt: -Infinity,
  logoutPending: false,
};

// ---- helpers ------------------------------------------------------------------------------

async function getJson(url) {
  const res = await fetch(url, { headers: { accept: 'application/json' }, cache: 'no-store' });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

function enable(id, cond) {
  $(id).disabled = !cond || S.busy.has(id);
}

/** Runs the command behind button id, keeping it disabled while in flight. */
async function act(id, fn) {
  S.busy.add(id);
  renderAll();
  try {
    await fn();
  } catch (e) {
    noticeError(e);
  } finally {
    S.busy.delete(id);
    renderAll();
  }
}

function callerText(c) {
  return c.caller ? c.caller : t('caller.withheld');
}

function describeTarget(to) {
  if (!to || typeof to !== 'object') return '—';
  const [kind, value] = Object.entries(to)[0] ?? ['', ''];
  return `${tOr(`transfer.kind.${kind}`, kind)} ${value}`.trim();
}

function offeredCall() {
  for (const c of S.calls.values()) if (c.status === 'offered') return c;
  return null;
}

/** The call the panel shows: the one in conversation or held, else the one being offered. */
function currentCall() {
  let offered = null;
  for (const c of S.calls.values()) {
    if (c.status === 'connected' || c.status === 'held') return c;
    if (!offered && c.status === 'offered') offered = c;
  }
  return offered;
}

let audio = null;
// Browsers start an AudioContext suspended until a user gesture; the login click is one.
function unlockAudio() {
  try {
    audio ??= new AudioContext();
    if (audio.state === 'suspended') audio.resume().catch(() => {});
  } catch {
    audio = null;
  }
}

function beep() {
  try {
    unlockAudio();
    if (!audio) return;
    const t0 = audio.currentTime + 0.01;
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = 'sine';
    osc.frequency.setValueAtTime(880, t0);
    osc.frequency.setValueAtTime(660, t0 + 0.15);
    gain.gain.setValueAtTime(0.0001, t0);
    gain.gain.exponentialRampToValueAtTime(0.25, t0 + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t0 + 0.3);
    osc.connect(gain).connect(audio.destination);
    osc.start(t0);
    osc.stop(t0 + 0.32);
  } catch {
    // A missing beep must never break the pop-up.
  }
}

// ---- rendering ----------------------------------------------------------------------------

function renderState() {
  const el = $('state');
  setAttr(el, 'data-state', S.state);
  let label = tOr(`state.${S.state}`, S.state);
  if (S.state === 'paused' && S.reason) label += ` — ${tOr(`reason.${S.reason}`, S.reason)}`;
  setText(el, label);
  document.body.dataset.agentState = S.state;

  const loggedOut = S.state === 'loggedout';
  enable('btn-ready', loggedOut || S.state === 'paused' || S.state === 'wrapup');
  enable('btn-pause', !loggedOut);
  enable('btn-logout', true);
  enable('btn-wrapup-done', S.state === 'wrapup');
  $('btn-wrapup-done').hidden = S.state !== 'wrapup';
  $('queue-select').disabled = !loggedOut;
}

function renderQueues() {
  const list = $('queue-list');
  const names = S.queues ?? [];
  const sig = names.join('\n');
  if (list.dataset.sig !== sig) {
    list.dataset.sig = sig;
    list.replaceChildren(
      ...names.map((name) => {
        const input = h('input', { type: 'checkbox', name: 'queue', value: name });
        input.checked = !S.unchecked.has(name);
        input.addEventListener('change', () => {
          if (input.checked) S.unchecked.delete(name);
          else S.unchecked.add(name);
        });
        return h('label', { class: 'check' }, input, h('span', { text: name }));
      }),
    );
  }
  $('queues-empty').hidden = !(S.queues && S.queues.length === 0);
}

function checkedQueues() {
  return [...document.querySelectorAll('input[name=queue]:checked')].map((i) => i.value);
}

function renderOffer() {
  const box = $('offer');
  const c = offeredCall();
  if (!c) {
    if (!box.hidden) {
      const hadFocus = box.contains(document.activeElement);
      box.hidden = true;
      if (hadFocus) {
        const back = S.focusBefore;
        if (back && back.isConnected && !back.disabled && back.offsetParent !== null) back.focus();
        else $('call-h').focus();
      }
    }
    S.offerShown = null;
    return;
  }
  if (S.offerShown !== c.id) {
    const sinceSession = performance.now() - S.sessionAt;
    if (sinceSession < REPLAY_WINDOW_MS && !c.settled) {
      c.settled = true;
      setTimeout(renderAll, REPLAY_SETTLE_MS);
      return;
    }
    S.offerShown = c.id;
    if (box.hidden) S.focusBefore = document.activeElement;
    box.hidden = false;
    fillOffer(c);
    beep();
    $('btn-answer').focus();
  }
  fillOffer(c);
  enable('btn-answer', true);
  enable('btn-decline', true);
}

function fillOffer(c) {
  setText($('offer-caller'), callerText(c));
  setText($('offer-did'), c.did || '—');
  setText($('offer-queue'), c.queue || '—');
  setText($('offer-channel'), tOr(`channel.${c.channel}`, c.channel));
  setText($('offer-language'), c.language ? `${tOr(`language.${c.language}`, c.language)} (${c.language})` : '—');
  const ul = $('offer-choices');
  const sig = JSON.stringify(c.choices) + t('offer.no_choices');
  if (ul.dataset.sig !== sig) {
    ul.dataset.sig = sig;
    ul.replaceChildren(
      ...(c.choices.length
        ? c.choices.map((ch) => h('li', { text: `${ch.node}: ${ch.key}` }))
        : [h('li', { class: 'muted', text: t('offer.no_choices') })]),
    );
  }
  tickOffer(c);
}

function tickOffer(c) {
  setText($('offer-waited'), fmtDur(c.waited_s + (performance.now() - c.offeredAt) / 1000));
}

function renderCall() {
  const c = currentCall();
  const status = c ? c.status : 'none';
  setAttr($('call'), 'data-call-state', status);
  setText($('call-state-label'), t(`call.state.${status}`));
  setText($('call-caller'), c ? callerText(c) : '—');
  setText($('call-queue'), c?.queue || '—');
  const live = status === 'connected' || status === 'held';
  enable('btn-hangup', live);
  enable('btn-hold', status === 'connected');
  enable('btn-record', live);
  const rec = Boolean(c?.recording);
  setText($('btn-record'), t(rec ? 'btn.record_stop' : 'btn.record'));
  setAttr($('btn-record'), 'aria-pressed', String(rec));
  $('rec-indicator').hidden = !rec;
  enable('btn-resume', status === 'held');
  enable('btn-transfer', live && !(c.consult && ['ringing', 'talking'].includes(c.consult.state)));
  const consult = $('consult');
  const k = c?.consult;
  consult.hidden = !k;
  setText(consult, k ? t(`consult.${k.state}`, { to: describeTarget(k.to), reason: k.reason ?? '' }) : '');
  setAttr(consult, 'data-consult-state', k ? k.state : '');
  tickCall(c);
}

function tickCall(c) {
  const live = c && (c.status === 'connected' || c.status === 'held') && c.since != null;
  setText($('call-timer'), live ? fmtDur((performance.now() - c.since) / 1000) : '00:00');
}

function renderTransferOptions() {
  const kind = $('transfer-kind').value;
  const input = $('transfer-target');
  const options = kind === 'queue' ? S.allQueues : kind === 'agent' ? S.agentIds : [];
  const dl = $('transfer-options');
  const sig = `${kind}\n${options.join('\n')}`;
  if (dl.dataset.sig !== sig) {
    dl.dataset.sig = sig;
    dl.replaceChildren(...options.map((v) => h('option', { value: v })));
  }
  input.inputMode = kind === 'number' ? 'tel' : 'text';
  setAttr(input, 'placeholder', t(`transfer.ph.${kind}`));
}

function taskKey(task) {
  return `${task.kind}:${task.id}`;
}

function buildTaskRow() {
  const tr = h('tr');
  for (const f of ['kind', 'number', 'queue', 'deadline', 'taken_by']) tr.append(h('td', { dataset: { field: f } }));
  tr.append(h('td', { class: 'actions', dataset: { field: 'actions' } }));
  return tr;
}

function updateTaskRow(tr, task) {
  const cell = (f) => tr.querySelector(`[data-field="${f}"]`);
  setText(cell('kind'), tOr(`task.${task.kind}`, task.kind));
  setText(cell('number'), task.number || t('caller.withheld'));
  setText(cell('queue'), task.queue ?? '—');
  const overdue = task.deadline_ms != null && task.deadline_ms < Date.now() && !task.closed;
  setText(cell('deadline'), task.deadline_ms == null ? '—'
    : `${fmtDateTime(task.deadline_ms)}${overdue ? ` (${t('tasks.overdue')})` : ''}`);
  cell('deadline').classList.toggle('overdue', overdue);
  setText(cell('taken_by'), task.taken_by ?? '—');

  const mode = task.taken_by == null ? 'open' : task.taken_by === S.me ? 'mine' : 'other';
  const actions = cell('actions');
  if (tr.dataset.mode !== mode) {
    tr.dataset.mode = mode;
    if (mode === 'open') {
      actions.replaceChildren(h('button', { type: 'button', 'data-action': 'take-task' }));
    } else if (mode === 'mine') {
      actions.replaceChildren(
        h('input', { type: 'text', 'data-outcome': '', maxlength: '64', autocomplete: 'off' }),
        h('button', { type: 'button', 'data-action': 'close-task' }),
      );
    } else {
      actions.replaceChildren();
    }
  }
  const take = actions.querySelector('[data-action=take-task]');
  if (take) setText(take, t('btn.take'));
  const close = actions.querySelector('[data-action=close-task]');
  if (close) setText(close, t('btn.close_task'));
  const outcome = actions.querySelector('[data-outcome]');
  if (outcome) {
    setAttr(outcome, 'aria-label', `${t('tasks.outcome')} ${task.number ?? ''}`.trim());
    setAttr(outcome, 'placeholder', t('tasks.outcome'));
  }
}

function renderTasks() {
  const list = [...S.tasks.values()].sort(
    (a, b) => (a.deadline_ms ?? Infinity) - (b.deadline_ms ?? Infinity) || (a.created_at_ms ?? 0) - (b.created_at_ms ?? 0),
  );
  syncRows($('tasks').tBodies[0], 'task', list, taskKey, buildTaskRow, updateTaskRow);
  $('tasks-empty').hidden = list.length > 0;
  enable('btn-take-task', S.me != null);
}

function renderCalls() {
  renderOffer();
  renderCall();
}

function renderAll() {
  renderState();
  renderQueues();
  renderCalls();
  renderTransferOptions();
  renderTasks();
}

function tick() {
  setText($('state-timer'), fmtDur((performance.now() - S.stateStart) / 1000));
  const offered = offeredCall();
  if (offered && S.offerShown === offered.id) tickOffer(offered);
  tickCall(currentCall());
}

// ---- session ------------------------------------------------------------------------------

function reset() {
  S.me = null;
  S.state = 'loggedout';
  S.reason = null;
  S.stateStart = performance.now();
  S.calls.clear();
  S.tasks.clear();
  S.logoutPending = false;
  softphone.reset();
  renderAll();
}

async function loadConfig() {
  const [agents, queues] = await Promise.allSettled([getJson('/api/agents'), getJson('/api/queues')]);
  if (agents.status === 'fulfilled' && Array.isArray(agents.value)) {
    const mine = agents.value.find((a) => a.id === S.me);
    S.queues = Array.isArray(mine?.queues) ? mine.queues : [];
    S.agentIds = agents.value.map((a) => a.id).filter((id) => id !== S.me);
  } else if (agents.status === 'rejected') {
    noticeError({ code: 'http', message: agents.reason.message });
  }
  if (queues.status === 'fulfilled' && Array.isArray(queues.value)) {
    S.allQueues = queues.value.map((q) => q.name).filter(Boolean);
  } else if (queues.status === 'rejected') {
    noticeError({ code: 'http', message: queues.reason.message });
  }
  renderAll();
}

async function loadTasks() {
  try {
    const res = await cti.command('tasks');
    S.tasks = new Map((res.tasks ?? []).map((task) => [taskKey(task), task]));
    renderTasks();
  } catch (e) {
    noticeError(e);
  }
}

function finishLogout() {
  S.logoutPending = false;
  cti.logoutLocal();
}

const cti = setupPage({
  role: 'agent',
  storageKey: 'verde.cti.token.agent',
  onSession(s) {
    S.me = s.user;
    S.calls.clear();
    S.offerShown = null;
    S.sessionAt = performance.now();
    S.logoutPending = false;
    softphone.onSession(s.user);
    renderAll();
    loadConfig();
    loadTasks();
  },
  onLoggedOut: reset,
  onLang: renderAll,
});

softphone.attach(cti);

// ---- events -------------------------------------------------------------------------------

cti.on('agent_state', (m) => {
  if (S.me && m.agent && m.agent !== S.me) return;
  S.state = m.state;
  S.reason = m.reason ?? null;
  S.stateStart = performance.now() - (Number(m.in_state_s) || 0) * 1000;
  renderState();
  if (S.state === 'loggedout' && S.logoutPending) finishLogout();
});

cti.on('call_offered', (m) => {
  S.calls.set(m.call, {
    id: m.call,
    caller: m.caller ?? '',
    did: m.did ?? '',
    queue: m.queue ?? '',
    channel: m.channel ?? 'voice',
    waited_s: Number(m.waited_s) || 0,
    offeredAt: performance.now(),
    language: m.language ?? null,
    choices: Array.isArray(m.choices) ? m.choices : [],
    status: 'offered',
    since: null,
  });
  renderCalls();
});

function setCallStatus(id, status) {
  let c = S.calls.get(id);
  if (!c) {
    c = { id, caller: '', did: '', queue: '', channel: 'voice', waited_s: 0, offeredAt: performance.now(), language: null, choices: [], since: null };
    S.calls.set(id, c);
  }
  if (c.since == null) {
    // A replay carries no start time; the agent's time in oncall is the best available.
    c.since = S.state === 'oncall' ? S.stateStart : performance.now();
  }
  c.status = status;
  renderCalls();
}

cti.on('call_answered', (m) => setCallStatus(m.call, 'connected'));
cti.on('call_held', (m) => setCallStatus(m.call, 'held'));
cti.on('call_resumed', (m) => setCallStatus(m.call, 'connected'));
cti.on('recording', (m) => {
  const c = S.calls.get(m.call);
  if (!c) return;
  c.recording = Boolean(m.on);
  renderCalls();
});
$('btn-record').addEventListener('click', () => {
  const c = currentCall();
  if (!c) return;
  act('btn-record', async () => {
    await cti.command('record', { call: c.id, on: !c.recording });
  });
});
cti.on('consult', (m) => {
  const c = S.calls.get(m.call);
  if (!c) return;
  c.consult = { state: m.state, to: m.to, reason: m.reason };
  renderCalls();
});
cti.on('call_transferred', (m) => {
  S.calls.delete(m.call);
  notice(t('notice.call_transferred', { call: m.call, to: describeTarget(m.to) }));
  renderCalls();
});
cti.on('call_ended', (m) => {
  if (S.calls.delete(m.call)) notice(t('notice.call_ended', { call: m.call, reason: m.reason ?? '' }));
  renderCalls();
});

function upsertTask(task) {
  if (task && task.kind != null && task.id != null) S.tasks.set(taskKey(task), task);
}

cti.on('task_created', (m) => {
  upsertTask(m.task);
  renderTasks();
});
cti.on('task_taken', (m) => {
  // A colleague's task leaves this list; ours stays, now with the close control.
  if (m.task?.taken_by && m.task.taken_by !== S.me) S.tasks.delete(taskKey(m.task));
  else upsertTask(m.task);
  renderTasks();
});
cti.on('task_closed', (m) => {
  if (m.task) S.tasks.delete(taskKey(m.task));
  renderTasks();
});

// ---- controls -----------------------------------------------------------------------------

document.addEventListener('pointerdown', unlockAudio, { once: true });
document.addEventListener('keydown', unlockAudio, { once: true });

$('btn-ready').addEventListener('click', () => act('btn-ready', async () => {
  const fields = { state: 'ready' };
  if (S.state === 'loggedout' && S.queues && S.queues.length > 0) {
    const queues = checkedQueues();
    if (queues.length === 0) {
      notice(t('queues.pick_one'), 'error');
      return;
    }
    fields.queues = queues;
  }
  await cti.command('set_state', fields);
}));

$('btn-pause').addEventListener('click', () => act('btn-pause', async () => {
  const deferred = BUSY_STATES.has(S.state);
  await cti.command('set_state', { state: 'pause', reason: $('pause-reason').value });
  if (deferred && BUSY_STATES.has(S.state)) notice(t('notice.after_call'));
}));

$('btn-wrapup-done').addEventListener('click', () => act('btn-wrapup-done', () => cti.command('wrap_up_done')));

$('btn-logout').addEventListener('click', () => act('btn-logout', async () => {
  const was = S.state;
  try {
    await cti.command('set_state', { state: 'logout' });
  } catch (e) {
    // Already logged out of the queues: there is nothing left to end on the ACD.
    if (!(was === 'loggedout' && e.code === 'invalid_state')) throw e;
  }
  if (BUSY_STATES.has(S.state)) {
    S.logoutPending = true;
    notice(t('notice.after_call'));
  } else {
    finishLogout();
  }
}));

$('btn-answer').addEventListener('click', () => {
  const c = offeredCall();
  // With a softphone offer for the call, the browser answers (the command carries our SDP).
  if (c) act('btn-answer', () => softphone.answer(c.id));
});
$('btn-decline').addEventListener('click', () => {
  const c = offeredCall();
  if (c) act('btn-decline', () => cti.command('hangup', { call: c.id }));
});
$('btn-hangup').addEventListener('click', () => {
  const c = currentCall();
  if (c && c.status !== 'offered') act('btn-hangup', () => cti.command('hangup', { call: c.id }));
});
$('btn-hold').addEventListener('click', () => {
  const c = currentCall();
  if (c) act('btn-hold', () => cti.command('hold', { call: c.id }));
});
$('btn-resume').addEventListener('click', () => {
  const c = currentCall();
  if (c) act('btn-resume', () => cti.command('resume_call', { call: c.id }));
});

$('transfer-kind').addEventListener('change', renderTransferOptions);
function transfer() {
  const c = currentCall();
  if (!c || c.status === 'offered') return;
  const kind = $('transfer-kind').value;
  const input = $('transfer-target');
  let target = input.value.trim();
  if (!target) {
    notice(t('transfer.missing'), 'error');
    input.focus();
    return;
  }
  if (kind === 'number') {
    target = target.replace(/[\s.\-/()]/g, '');
    if (!/^\+?\d+$/.test(target)) {
      notice(t('transfer.bad_number'), 'error');
      input.focus();
      return;
    }
  }
  act('btn-transfer', async () => {
    await cti.command('transfer', { call: c.id, mode: $('transfer-mode').value, to: { [kind]: target } });
    input.value = '';
  });
}
$('btn-transfer').addEventListener('click', transfer);
$('transfer-target').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !$('btn-transfer').disabled) {
    ev.preventDefault();
    transfer();
  }
});

$('btn-take-task').addEventListener('click', () => act('btn-take-task', async () => {
  const res = await cti.command('take_task');
  if (res.task) {
    upsertTask(res.task);
    renderTasks();
  } else {
    notice(t('tasks.nothing'));
  }
}));

function closeTask(tr, button) {
  const task = S.tasks.get(tr.dataset.task);
  const input = tr.querySelector('[data-outcome]');
  const outcome = input?.value.trim() ?? '';
  if (!task) return;
  if (!outcome) {
    notice(t('tasks.outcome_missing'), 'error');
    input?.focus();
    return;
  }
  run(button, async () => {
    await cti.command('close_task', { task: { kind: task.kind, id: task.id }, outcome });
    S.tasks.delete(taskKey(task));
    notice(t('task.closed'));
  }, () => {
    if (button.isConnected) button.disabled = false;
    renderTasks();
  });
}

const taskBody = $('tasks').tBodies[0];
taskBody.addEventListener('click', (ev) => {
  const button = ev.target.closest('button[data-action]');
  if (!button) return;
  const tr = button.closest('tr');
  const task = S.tasks.get(tr?.dataset.task);
  if (!task) return;
  if (button.dataset.action === 'take-task') {
    run(button, async () => {
      const res = await cti.command('take_task', { task: { kind: task.kind, id: task.id } });
      upsertTask(res.task);
    }, () => {
      if (button.isConnected) button.disabled = false;
      renderTasks();
    });
  } else if (button.dataset.action === 'close-task') {
    closeTask(tr, button);
  }
});
taskBody.addEventListener('keydown', (ev) => {
  if (ev.key !== 'Enter' || !ev.target.matches('[data-outcome]')) return;
  ev.preventDefault();
  const tr = ev.target.closest('tr');
  const button = tr.querySelector('[data-action=close-task]');
  if (button && !button.disabled) closeTask(tr, button);
});

setInterval(tick, 500);
renderAll();
tick();
