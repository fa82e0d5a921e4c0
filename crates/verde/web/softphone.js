// The agent bar's softphone: with the device set to "browser", offers ring in the page and the
// call's audio runs over WebRTC between this page and verde, signaled over the CTI websocket
// (docs/cti-protocol.md, docs/webrtc.md). verde offers (`softphone_offer`), the page answers
// inside the usual `answer` command (with `sdp`), trickles its candidates (`softphone_ice`) and
// drops the peer connection at `call_ended`. Hold, transfer and hang-up stay the bar's ordinary
// commands: verde handles the media, this page only ever has one peer connection.
//
// window.verdeSoftphone = { device, pc, remote, call } is kept current for tests.

import { t, onLangChange } from './i18n.js';
import { CtiError } from './cti.js';
import { $, setText, setAttr, notice, noticeError } from './common.js';

const AUDIO = { audio: { echoCancellation: true, noiseSuppression: true }, video: false };
// Candidates are optional (verde runs full ICE and learns ours from our checks) and each is a
// command under the CTI rate limit (bursts of 20): a handful is plenty.
const MAX_TRICKLE = 8;
// After a resume the server replays the calls still ours; a peer connection for a call it does
// not mention by then belongs to a call that ended while we were away.
const REPLAY_GRACE_MS = 2000;
const RING_PERIOD_MS = 3000;

function micError(e) {
  switch (e?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
    case 'PermissionDeniedError':
      return new CtiError('mic_denied', e.message);
    case 'NotFoundError':
    case 'DevicesNotFoundError':
    case 'OverconstrainedError':
      return new CtiError('mic_missing', e.message);
    case 'NotReadableError':
    case 'TrackStartError':
    case 'AbortError':
      return new CtiError('mic_busy', e.message);
    default:
      return new CtiError('mic_failed', e?.message ?? String(e));
  }
}

function iceServers() {
  const raw = document.documentElement.dataset.iceServers;
  if (!raw) return [];
  try {
    const servers = JSON.parse(raw);
    if (Array.isArray(servers)) return servers;
  } catch {
    // A broken attribute must not stop a call that works without it.
  }
  return [];
}

/** A host candidate with an mDNS name, which verde cannot resolve (it learns the address anyway). */
function isMdns(candidate) {
  return /\s[0-9a-f-]+\.local\s/i.test(candidate);
}

/**
 * Creates the softphone before the CTI client exists (the bar's logout reset may run during
 * setup); attach(cti) wires it to the connection.
 */
export function createSoftphone() {
  const sp = { device: 'phone', pc: null, remote: null, call: null, ringing: false };
  window.verdeSoftphone = sp;

  let cti = null;
  let user = null;
  let mic = null;
  let micRequest = null;
  let choosing = null; // the device being switched to, while the switch is in flight
  let muted = false;
  let ice = null; // {call, ready, queue, sent, ended} for the current peer connection
  let replayTimer = null;
  let seenSinceSession = false;
  const offers = new Map(); // call -> verde's offer SDP

  // ---- storage of the choice, per user (a shared desk may have several agents) ----------

  const storeKey = () => `verde.agent.device.${user ?? ''}`;
  function loadChoice() {
    try {
      return localStorage.getItem(storeKey()) === 'browser' ? 'browser' : 'phone';
    } catch {
      return 'phone';
    }
  }
  function saveChoice(device) {
    try {
      localStorage.setItem(storeKey(), device);
    } catch {
      // Not remembered; the choice still holds for this session.
    }
  }

  // ---- microphone ---------------------------------------------------------------------

  function liveTrack() {
    return mic?.getAudioTracks().find((tr) => tr.readyState === 'live') ?? null;
  }

  async function ensureMic() {
    if (liveTrack()) return mic;
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new CtiError(window.isSecureContext ? 'mic_unsupported' : 'insecure');
    }
    micRequest ??= navigator.mediaDevices.getUserMedia(AUDIO).finally(() => {
      micRequest = null;
    });
    try {
      const stream = await micRequest;
      if (mic && mic !== stream) stopStream(mic);
      mic = stream;
      for (const tr of stream.getAudioTracks()) tr.addEventListener('ended', render);
      return mic;
    } catch (e) {
      throw micError(e);
    }
  }

  function stopStream(stream) {
    for (const tr of stream?.getTracks() ?? []) tr.stop();
  }

  function releaseMic() {
    if (sp.pc) return; // still talking through it
    stopStream(mic);
    mic = null;
  }

  // ---- ring tone ----------------------------------------------------------------------

  let ctx = null;
  function audioCtx() {
    try {
      ctx ??= new AudioContext();
      if (ctx.state === 'suspended') ctx.resume().catch(() => {});
    } catch {
      ctx = null;
    }
    return ctx;
  }

  let ringTimer = null;
  function ringBurst() {
    const ac = audioCtx();
    if (!ac) return;
    try {
      // Two short rings of 440+480 Hz, then silence: a telephone, unlike the pop-up's beep.
      const t0 = ac.currentTime + 0.02;
      const gain = ac.createGain();
      gain.gain.setValueAtTime(0.0001, t0);
      for (const start of [0, 0.6]) {
        const a = t0 + start;
        gain.gain.setValueAtTime(0.0001, a);
        gain.gain.exponentialRampToValueAtTime(0.15, a + 0.03);
        gain.gain.setValueAtTime(0.15, a + 0.37);
        gain.gain.exponentialRampToValueAtTime(0.0001, a + 0.4);
      }
      gain.connect(ac.destination);
      for (const f of [440, 480]) {
        const osc = ac.createOscillator();
        osc.frequency.setValueAtTime(f, t0);
        osc.connect(gain);
        osc.start(t0);
        osc.stop(t0 + 1.05);
      }
    } catch {
      // A silent ring must never break the pop-up.
    }
  }

  function startRing(call) {
    sp.call = call;
    sp.ringing = true;
    if (!ringTimer) {
      ringBurst();
      ringTimer = setInterval(ringBurst, RING_PERIOD_MS);
    }
    render();
  }

  function stopRing() {
    clearInterval(ringTimer);
    ringTimer = null;
    if (sp.ringing) {
      sp.ringing = false;
      if (!sp.pc) sp.call = null;
      render();
    }
  }

  // ---- peer connection ----------------------------------------------------------------

  function closePc() {
    const pc = sp.pc;
    if (pc) {
      pc.ontrack = pc.onicecandidate = pc.onconnectionstatechange = null;
      try {
        pc.close();
      } catch {
        // Already closed.
      }
    }
    sp.pc = null;
    sp.remote = null;
    ice = null;
    muted = false;
    const audio = $('softphone-remote');
    if (audio) audio.srcObject = null;
    if (!sp.ringing) sp.call = null;
    if (sp.device !== 'browser') releaseMic();
    else if (mic) for (const tr of mic.getAudioTracks()) tr.enabled = true;
    render();
  }

  function trickle(c) {
    if (!ice) return;
    let msg;
    if (!c || !c.candidate) {
      if (ice.ended) return;
      ice.ended = true;
      msg = { call: ice.call, candidate: '', sdp_mid: c?.sdpMid ?? sp.pc?.getTransceivers()[0]?.mid ?? '0' };
    } else {
      if (isMdns(c.candidate)) return;
      msg = { call: ice.call, candidate: c.candidate, sdp_mid: c.sdpMid ?? '0' };
    }
    ice.queue.push(msg);
    if (ice.ready) flushIce();
  }

  function flushIce() {
    if (!ice) return;
    ice.ready = true;
    while (ice.queue.length && ice.sent < MAX_TRICKLE) {
      ice.sent += 1;
      cti.command('softphone_ice', ice.queue.shift()).catch((e) => console.debug('softphone: candidate not taken', e.code));
    }
    ice.queue.length = 0;
  }

  /**
   * The bar's Answer: with a pending softphone offer, answers it here and sends `answer` with
   * our SDP; otherwise the plain `answer` (the SIP phone picks up). Rejects like cti.command.
   */
  async function answer(call) {
    const offer = offers.get(call);
    if (offer == null) return cti.command('answer', { call });
    stopRing();
    closePc();
    const stream = await ensureMic();
    const pc = new RTCPeerConnection({ iceServers: iceServers() });
    sp.pc = pc;
    sp.call = call;
    ice = { call, ready: false, queue: [], sent: 0, ended: false };
    pc.ontrack = (ev) => {
      if (sp.pc !== pc) return;
      // verde's offer may carry no msid, so the track can come without a stream.
      sp.remote = ev.streams[0] ?? new MediaStream([ev.track]);
      const audio = $('softphone-remote');
      audio.srcObject = sp.remote;
      audio.play?.().catch(() => {});
      render();
    };
    pc.onicecandidate = (ev) => {
      if (sp.pc === pc) trickle(ev.candidate);
    };
    pc.onconnectionstatechange = () => {
      if (sp.pc !== pc) return;
      if (pc.connectionState === 'failed') notice(t('sp.media_failed'), 'error', 'media_failed');
      render();
    };
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: offer });
      // addTrack takes over the audio transceiver the offer created, making it sendrecv.
      pc.addTrack(stream.getAudioTracks()[0], stream);
      const local = await pc.createAnswer();
      await pc.setLocalDescription(local);
      if (sp.pc !== pc) throw new CtiError('gone', 'the call ended while answering');
      const sent = cti.command('answer', { call, sdp: local.sdp });
      // The answer is on the wire: candidates may follow it now.
      flushIce();
      const res = await sent;
      offers.delete(call);
      render();
      return res;
    } catch (e) {
      // The call ended under us (call_ended closed the connection): say so, not a WebRTC error.
      if (sp.pc !== pc) throw e instanceof CtiError ? e : new CtiError('gone', e?.message);
      closePc();
      throw e instanceof CtiError ? e : new CtiError('webrtc', e?.message ?? String(e));
    }
  }

  function forget(call) {
    offers.delete(call);
    if (sp.call !== call) return;
    stopRing();
    closePc();
  }

  // ---- device choice ------------------------------------------------------------------

  async function choose(device, { remember }) {
    if (!cti) return;
    choosing = device;
    render();
    try {
      if (device === 'browser') await ensureMic();
      await cti.command('set_device', { device });
      sp.device = device;
      if (remember) {
        saveChoice(device);
        notice(t(device === 'browser' ? 'sp.notice.browser' : 'sp.notice.phone'));
      }
    } catch (e) {
      noticeError(e);
    } finally {
      choosing = null;
      if (sp.device !== 'browser') releaseMic();
      render();
    }
  }

  function render() {
    const select = $('device');
    if (select) {
      const want = choosing ?? sp.device;
      if (select.value !== want) select.value = want;
      select.disabled = choosing != null || !cti?.session;
      setAttr(select, 'aria-busy', choosing ? 'true' : null);
    }
    const status = $('device-status');
    if (status) {
      let key = null;
      if (choosing === 'browser') key = 'sp.status.asking';
      else if (sp.ringing) key = 'sp.status.ringing';
      else if (sp.pc) key = sp.pc.connectionState === 'failed' ? 'sp.status.failed' : 'sp.status.talking';
      else if (sp.device === 'browser') key = liveTrack() ? 'sp.status.ready' : 'sp.status.no_mic';
      setText(status, key ? t(key) : '');
      setAttr(status, 'data-status', key ? key.slice('sp.status.'.length) : null);
    }
    const mute = $('btn-mute');
    if (mute) {
      mute.hidden = !sp.pc;
      mute.disabled = !sp.pc || !liveTrack();
      setAttr(mute, 'aria-pressed', String(muted));
      // A toggle keeps one label; aria-pressed says whether it is on.
      setText(mute, t('sp.mute'));
    }
    document.body.dataset.device = sp.device;
  }

  function toggleMute() {
    const tracks = mic?.getAudioTracks() ?? [];
    if (!sp.pc || tracks.length === 0) return;
    muted = !muted;
    for (const tr of tracks) tr.enabled = !muted;
    render();
  }

  // ---- wiring -------------------------------------------------------------------------

  function attach(client) {
    cti = client;
    cti.on('softphone_offer', (m) => {
      if (m.call == null || typeof m.sdp !== 'string') return;
      seenSinceSession ||= m.call === sp.call;
      // A replay for the call we already talk on is not a new ring.
      if (sp.pc && sp.call === m.call) return;
      offers.set(m.call, m.sdp);
      startRing(m.call);
    });
    for (const type of ['call_offered', 'call_answered', 'call_held', 'call_resumed']) {
      cti.on(type, (m) => {
        if (m.call === sp.call) seenSinceSession = true;
        if (type !== 'call_offered' && m.call === sp.call) stopRing();
      });
    }
    cti.on('call_ended', (m) => forget(m.call));
    cti.on('call_transferred', (m) => forget(m.call));
    cti.on('conn', render);

    $('device')?.addEventListener('change', (ev) => {
      audioCtx(); // a user gesture: lets the ring play later
      const device = ev.target.value === 'browser' ? 'browser' : 'phone';
      if (device !== sp.device) choose(device, { remember: true });
    });
    $('btn-mute')?.addEventListener('click', toggleMute);
    const unlock = () => audioCtx();
    document.addEventListener('pointerdown', unlock, { once: true });
    document.addEventListener('keydown', unlock, { once: true });
    onLangChange(render);
    render();
  }

  /** After each login or resume: the server starts from "phone", so send a browser choice again. */
  function onSession(who) {
    if (user !== who) {
      forget(sp.call);
      offers.clear();
    }
    user = who;
    sp.device = 'phone';
    clearTimeout(replayTimer);
    if (sp.pc) {
      seenSinceSession = false;
      replayTimer = setTimeout(() => {
        if (!seenSinceSession && sp.pc) closePc();
      }, REPLAY_GRACE_MS);
    }
    if (loadChoice() === 'browser') choose('browser', { remember: false });
    render();
  }

  /** Back to the login form: nothing of the softphone survives. */
  function reset() {
    clearTimeout(replayTimer);
    offers.clear();
    stopRing();
    closePc();
    sp.device = 'phone';
    sp.call = null;
    releaseMic();
    user = null;
    render();
  }

  return { attach, answer, onSession, reset };
}
