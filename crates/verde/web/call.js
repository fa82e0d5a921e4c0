// The public "call now" page (/call/{did}): a citizen calls the number from the browser into the
// same IVR a phone caller reaches. Signaling is the anonymous /webrtc websocket, one call per
// socket (docs/webrtc.md): the browser offers, verde answers with its only host candidate and
// never trickles, our own candidates trickle after the offer. Keys go in the media as RFC 4733
// events (RTCDTMFSender), never over the websocket. Closing the page closes the socket, which
// hangs the call up.
//
// window.verdeCall = { pc, ws, callId, state, remote } is kept current for tests: they attach a
// WebAudio analyser to `remote` and read `state` (the same value as #state's data-state).

import { t, has, applyI18n, initLangSelect, onLangChange } from './i18n.js';
import { fmtDur, setText, setAttr } from './common.js';

const $ = (id) => document.getElementById(id);

const AUDIO = { audio: { echoCancellation: true, noiseSuppression: true }, video: false };
const DTMF_MS = 100;
const DTMF_GAP_MS = 70;
const KEYS = '0123456789*#';
// States in which a call attempt holds resources (mic, peer connection, socket).
const LIVE = new Set(['connecting', 'connected', 'agent']);
const TALKING = new Set(['connected', 'agent']);
// After our `hangup` the server answers, sends `ended` and closes; we close anyway after this.
const HANGUP_GRACE_MS = 1000;

const number = didFromPath(location.pathname);

const call = { pc: null, ws: null, callId: null, state: 'idle', remote: null };
window.verdeCall = call;

let gen = 0; // bumped by every start and end, so late callbacks of an old attempt do nothing
let mic = null;
let phase = null; // what 'connecting' is waiting for: 'mic' | 'signaling' | 'media'
let reason = null; // {key, code, params}: the line under the state
let connectedAt = null;
let endedAt = null;
let muted = false;
let digits = '';
let nextId = 1;
const pending = new Map();
let ice = { ready: false, queue: [], ended: false };

function didFromPath(path) {
  const m = /\/call\/([^/]+)\/?$/.exec(path);
  if (!m) return '';
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return m[1];
  }
}

/** 803164 -> "803 164", 800123456 -> "800 123 456": easier to read back on the phone. */
function groupDigits(n) {
  return /^\d{6,}$/.test(n) ? n.replace(/^(\d{3})(\d{3})(\d*)$/, (_, a, b, c) => [a, b, c].filter(Boolean).join(' ')) : n;
}

function rtcConfig() {
  // The engine may publish STUN/TURN servers for callers behind strict NATs; by default none are
  // needed, since verde's public host candidate is reachable and learns ours from its checks.
  const raw = document.documentElement.dataset.iceServers;
  if (!raw) return { iceServers: [] };
  try {
    const servers = JSON.parse(raw);
    if (Array.isArray(servers)) return { iceServers: servers };
  } catch {
    // Fall through: a broken attribute must not stop a call that would work without it.
  }
  console.warn('call: ignoring data-ice-servers, not a JSON array');
  return { iceServers: [] };
}

function wsUrl() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/webrtc`;
}

function stopStream(stream) {
  for (const track of stream?.getTracks() ?? []) track.stop();
}

function micTrack() {
  return mic?.getAudioTracks()[0] ?? null;
}

// ---- rendering ----------------------------------------------------------------------------

function render() {
  const { state } = call;
  const badge = $('state');
  setAttr(badge, 'data-state', state);
  document.body.dataset.callState = state;
  setText(badge, state === 'connecting' && phase ? t(`cn.phase.${phase}`) : t(`cn.state.${state}`));

  const why = $('reason');
  setText(why, reason ? t(reason.key, reason.params) : '');
  setAttr(why, 'data-code', reason?.code ?? null);
  setAttr(why, 'data-kind', state === 'error' ? 'error' : null);

  const live = LIVE.has(state);
  const talking = TALKING.has(state);
  const callBtn = $('call');
  callBtn.disabled = live || !number;
  setText(callBtn, t(state === 'ended' || state === 'error' ? 'cn.call_again' : 'cn.call'));
  $('hangup').disabled = !live;
  const muteBtn = $('mute');
  muteBtn.disabled = !live || !mic;
  setAttr(muteBtn, 'aria-pressed', String(muted));
  for (const b of document.querySelectorAll('#keypad button[data-key]')) b.disabled = !talking;
  setText($('digits'), digits.slice(-24));
  $('timer-wrap').hidden = connectedAt == null;
  tick();

  // A button that just became disabled drops focus to <body>; put it somewhere useful.
  const focused = document.activeElement;
  if (focused && focused !== document.body && focused.disabled) {
    (live ? $('hangup') : callBtn).focus();
  }
}

function tick() {
  if (connectedAt == null) return;
  setText($('timer'), fmtDur(((endedAt ?? performance.now()) - connectedAt) / 1000));
}

function setState(state, why = reason) {
  call.state = state;
  reason = why;
  render();
}

// ---- signaling ----------------------------------------------------------------------------

class CallError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

function send(type, fields = {}) {
  const ws = call.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new CallError('disconnected'));
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, ws });
    try {
      ws.send(JSON.stringify({ v: 1, type, id, ...fields }));
    } catch (e) {
      pending.delete(id);
      reject(new CallError('disconnected', String(e)));
    }
  });
}

/** Fails the commands still waiting on ws (only that socket's: a new call may be under way). */
function rejectPending(ws) {
  for (const [id, p] of pending) {
    if (p.ws !== ws) continue;
    pending.delete(id);
    p.reject(new CallError('disconnected'));
  }
}

function onMessage(text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    return;
  }
  if (!msg || typeof msg !== 'object') return;
  if (msg.type === 'result' || msg.type === 'error') {
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    if (msg.type === 'result') p.resolve(msg);
    else p.reject(new CallError(msg.code ?? 'internal', msg.message));
    return;
  }
  if (msg.type !== 'call_state') return;
  if (call.callId && msg.call_id && msg.call_id !== call.callId) return;
  switch (msg.state) {
    case 'connecting':
      if (call.state === 'connecting') {
        phase = 'media';
        render();
      }
      break;
    case 'connected':
    case 'agent':
      if (!LIVE.has(call.state)) return;
      connectedAt ??= performance.now();
      setState(msg.state, null);
      break;
    case 'ended':
      finish('ended', endReason(msg.reason), false);
      break;
    default:
      break;
  }
}

function endReason(wire) {
  const code = wire ?? 'hangup';
  return has(`cn.end.${code}`) ? { key: `cn.end.${code}`, code } : { key: 'cn.end.other', code, params: { reason: code } };
}

function errorReason(code, detail) {
  const key = has(`cn.err.${code}`) ? `cn.err.${code}` : 'cn.err.other';
  return { key, code, params: { code, detail: detail ?? '' } };
}

function micError(e) {
  switch (e?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
    case 'PermissionDeniedError':
      return 'mic_denied';
    case 'NotFoundError':
    case 'DevicesNotFoundError':
    case 'OverconstrainedError':
      return 'mic_missing';
    case 'NotReadableError':
    case 'TrackStartError':
    case 'AbortError':
      return 'mic_busy';
    default:
      return 'mic_failed';
  }
}

/** Queues a gathered candidate; they go out only once verde has the call (after its result). */
function queueCandidate(c) {
  // null ends gathering; Chrome also reports an empty candidate at the end of a generation.
  if (!c || !c.candidate) {
    if (ice.ended) return;
    ice.ended = true;
    ice.queue.push({ candidate: '', sdp_mid: c?.sdpMid ?? call.pc?.getTransceivers()[0]?.mid ?? '0' });
  } else if (/\s[0-9a-f-]+\.local\s/i.test(c.candidate)) {
    // An mDNS name verde cannot resolve; it learns the address from our checks anyway.
    return;
  } else {
    ice.queue.push({ candidate: c.candidate, sdp_mid: c.sdpMid ?? '0' });
  }
  if (ice.ready) flushIce();
}

function flushIce() {
  ice.ready = true;
  while (ice.queue.length) {
    // A candidate verde cannot use (an mDNS name, say) is refused; the call goes on without it.
    send('ice', ice.queue.shift()).catch((e) => console.debug('call: candidate not taken', e.code));
  }
}

// ---- the call -----------------------------------------------------------------------------

async function start() {
  if (LIVE.has(call.state) || !number) return;
  const my = ++gen;
  Object.assign(call, { pc: null, ws: null, callId: null, remote: null });
  ice = { ready: false, queue: [], ended: false };
  connectedAt = null;
  endedAt = null;
  muted = false;
  digits = '';
  phase = 'mic';
  setState('connecting', null);

  if (!navigator.mediaDevices?.getUserMedia || typeof RTCPeerConnection !== 'function') {
    // mediaDevices is missing on plain http (except localhost): the page needs https.
    finish('error', errorReason(window.isSecureContext ? 'unsupported' : 'insecure'));
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(AUDIO);
  } catch (e) {
    if (my === gen) finish('error', errorReason(micError(e), e?.message));
    return;
  }
  if (my !== gen) {
    stopStream(stream);
    return;
  }
  mic = stream;
  phase = 'signaling';
  render();

  let offer;
  try {
    const pc = new RTCPeerConnection(rtcConfig());
    call.pc = pc;
    const track = micTrack();
    pc.addTransceiver(track, { direction: 'sendrecv', streams: [stream] });
    pc.ontrack = (ev) => {
      if (my !== gen) return;
      // verde's answer may carry no msid, so the track can come without a stream.
      const remote = ev.streams[0] ?? new MediaStream([ev.track]);
      call.remote = remote;
      const audio = $('remote');
      audio.srcObject = remote;
      audio.play?.().catch(() => {});
    };
    pc.onicecandidate = (ev) => {
      if (my === gen) queueCandidate(ev.candidate);
    };
    // Both, since an older Firefox only has the ICE one; 'failed' is final in either.
    pc.onconnectionstatechange = pc.oniceconnectionstatechange = () => {
      if (my !== gen) return;
      if (pc.connectionState === 'failed' || pc.iceConnectionState === 'failed') {
        finish('error', errorReason('media_failed'), true);
      }
    };
    offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
  } catch (e) {
    if (my === gen) finish('error', errorReason('unsupported', e?.message));
    return;
  }
  if (my !== gen) return;

  let ws;
  try {
    ws = new WebSocket(wsUrl());
  } catch (e) {
    finish('error', errorReason('unreachable', e?.message));
    return;
  }
  call.ws = ws;
  let opened = false;
  ws.onmessage = (ev) => {
    if (my === gen && ws === call.ws) onMessage(ev.data);
  };
  ws.onerror = () => {}; // 'close' follows
  ws.onclose = () => {
    rejectPending(ws);
    if (my === gen && LIVE.has(call.state)) finish('error', errorReason(opened ? 'disconnected' : 'unreachable'), false);
  };
  ws.onopen = async () => {
    if (my !== gen) return;
    opened = true;
    let res;
    try {
      // The offer goes at once, without waiting for gathering: our candidates follow as `ice`.
      res = await send('call', { number, sdp: offer.sdp });
    } catch (e) {
      if (my === gen) finish('error', errorReason(e.code ?? 'internal', e.message), false);
      return;
    }
    if (my !== gen) return;
    call.callId = res.call_id ?? null;
    try {
      await call.pc.setRemoteDescription({ type: 'answer', sdp: res.sdp });
    } catch (e) {
      if (my === gen) finish('error', errorReason('bad_answer', e?.message), true);
      return;
    }
    if (my !== gen) return;
    flushIce();
    if (call.state === 'connecting') {
      phase = 'media';
      render();
    }
  };
}

/** Ends the attempt: releases the mic and the peer connection, closes the socket. */
function finish(state, why, sayHangup = true) {
  if (!LIVE.has(call.state)) return;
  gen += 1;
  if (connectedAt != null) endedAt = performance.now();
  phase = null;
  const { pc, ws } = call;
  if (pc) {
    pc.ontrack = pc.onicecandidate = pc.onconnectionstatechange = pc.oniceconnectionstatechange = null;
    try {
      pc.close();
    } catch {
      // Already closed.
    }
  }
  stopStream(mic);
  mic = null;
  $('remote').srcObject = null;
  if (ws) {
    rejectPending(ws);
    closeSocket(ws, sayHangup && Boolean(call.callId));
  }
  setState(state, why);
}

function closeSocket(ws, sayHangup) {
  const close = () => {
    try {
      ws.close(1000);
    } catch {
      // Already closing.
    }
  };
  if (ws.readyState === WebSocket.CONNECTING) {
    close();
    return;
  }
  if (ws.readyState !== WebSocket.OPEN) return;
  if (!sayHangup) {
    close();
    return;
  }
  // Closing alone would hang up too; the command gives the server a clean reason first.
  try {
    ws.send(JSON.stringify({ v: 1, type: 'hangup', id: nextId++ }));
  } catch {
    close();
    return;
  }
  const timer = setTimeout(close, HANGUP_GRACE_MS);
  ws.onmessage = (ev) => {
    try {
      const msg = JSON.parse(ev.data);
      if (msg?.type === 'call_state' && msg.state === 'ended') {
        clearTimeout(timer);
        close();
      }
    } catch {
      // Not JSON: ignore, the timer closes.
    }
  };
}

function hangup() {
  finish('ended', { key: 'cn.end.caller_hangup', code: 'caller_hangup' }, true);
}

function press(key) {
  if (!TALKING.has(call.state) || !call.pc) return;
  const senders = call.pc.getSenders();
  const sender = senders.find((s) => s.track?.kind === 'audio') ?? senders[0];
  const dtmf = sender?.dtmf;
  if (!dtmf || !dtmf.canInsertDTMF) return;
  // insertDTMF replaces the tones still queued: append, so quick presses are all sent.
  dtmf.insertDTMF(dtmf.toneBuffer + key, DTMF_MS, DTMF_GAP_MS);
  digits += key;
  setText($('digits'), digits.slice(-24));
  const button = document.querySelector(`#keypad button[data-key="${CSS.escape(key)}"]`);
  if (button) {
    button.classList.add('pressed');
    setTimeout(() => button.classList.remove('pressed'), 150);
  }
}

function toggleMute() {
  const track = micTrack();
  if (!track) return;
  muted = !muted;
  track.enabled = !muted;
  render();
}

// ---- wiring -------------------------------------------------------------------------------

function renderTitle() {
  document.title = number ? `${t('cn.title')} ${groupDigits(number)}` : t('cn.title');
}

applyI18n();
initLangSelect($('lang'));
onLangChange(() => {
  renderTitle();
  render();
});
renderTitle();
setText($('number'), number ? groupDigits(number) : '—');

$('call').addEventListener('click', start);
$('hangup').addEventListener('click', hangup);
$('mute').addEventListener('click', toggleMute);
$('keypad').addEventListener('click', (ev) => {
  const button = ev.target.closest('button[data-key]');
  if (button && !button.disabled) press(button.dataset.key);
});
document.addEventListener('keydown', (ev) => {
  if (ev.repeat || ev.ctrlKey || ev.altKey || ev.metaKey) return;
  if (!KEYS.includes(ev.key) || ev.key.length !== 1) return;
  if (ev.target.closest?.('input, select, textarea, [contenteditable]')) return;
  if (!TALKING.has(call.state)) return;
  ev.preventDefault();
  press(ev.key);
});
// The socket would close with the page anyway; closing it first makes the hang-up immediate.
window.addEventListener('pagehide', () => {
  if (LIVE.has(call.state)) finish('ended', { key: 'cn.end.caller_hangup', code: 'caller_hangup' }, false);
});

if (!number) {
  call.state = 'error';
  reason = errorReason('not_found');
}
render();
setInterval(tick, 500);
