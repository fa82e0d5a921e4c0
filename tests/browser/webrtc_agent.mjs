// An agent answering a caller in the browser: the agent bar (/agent) in headless Debian
// chromium, driven by playwright-core, with the softphone device set to "browser". The
// microphone is a WAV file (Chromium's fake capture device, looped).
//
//   node webrtc_agent.mjs BASE_URL SHOT_DIR MIC_WAV AGENT AGENT_PW
//
// Environment: VERDE_CALLER (the caller number the pop-up must show), VERDE_QUEUE (its queue),
// VERDE_LISTEN_HZ (comma-separated frequencies whose levels the page reports),
// VERDE_LISTEN_MS (how long the page listens). With VERDE_CALLER_URL (a /call/{did} page) and
// VERDE_CALLER_MIC (its microphone WAV), the caller is a second browser this script drives:
// it calls once the agent is ready, listens while the agent does (`CALLER_HEARD {json}`) and
// must see the call end when the agent hangs up (`CALLER_END {json}`).
//
// Run by tests/interop/webrtc_browser_agent.rs, which owns verde, the SIPp caller and the
// capture of what verde sends that caller. The two talk over stdin/stdout lines: this script
// prints `STEP <name>` when the test must act or look (e.g. `STEP ready` -> the test starts the
// caller) and waits for a line `GO` before going on; it prints `OFFER {json}` (the pop-up),
// `MEDIA {json}` (the negotiated codec and RTP counters), `HEARD {json}` (what the page heard),
// `SHOT <path>` for every screenshot and `DONE` at the end. Every wait is on something the
// page shows, with a deadline. Any failed expectation throws: the exit status is non-zero and
// the message says what was expected and what the page showed.

import { fakeMicrophone, fromTest, launch, login, screenshots, TIMEOUT, waiter } from './harness.mjs';

const [base, shots, micWav, agentId, agentPw] = process.argv.slice(2);
if (!agentPw) {
  console.error('usage: webrtc_agent.mjs BASE_URL SHOT_DIR MIC_WAV AGENT AGENT_PW');
  process.exit(2);
}
const CALLER = process.env.VERDE_CALLER || '';
const QUEUE = process.env.VERDE_QUEUE || '';
const LISTEN_HZ = (process.env.VERDE_LISTEN_HZ || '').split(',').filter(Boolean).map(Number);
const LISTEN_MS = Number(process.env.VERDE_LISTEN_MS || 3000);
const CALLER_URL = process.env.VERDE_CALLER_URL || '';
const CALLER_MIC = process.env.VERDE_CALLER_MIC || '';

const test = fromTest();
const shot = screenshots(shots);

/** Waits until `fn()` (run in the page) returns a truthy value; says what it saw on timeout. */
const until = waiter({
  seen: () => ({
    softphone: {
      device: window.verdeSoftphone?.device,
      ringing: window.verdeSoftphone?.ringing,
      call: window.verdeSoftphone?.call,
      pc: window.verdeSoftphone?.pc?.connectionState ?? null,
      remote: !!window.verdeSoftphone?.remote,
    },
    state: document.getElementById('state')?.dataset.state,
    call: document.getElementById('call')?.dataset.callState,
    text: document.body.innerText.slice(0, 2000),
  }),
});

/**
 * Listens to `window.verdeSoftphone.remote` for `ms` through a WebAudio AnalyserNode: one
 * analyser window after the other, each measured for RMS, for the level of every frequency
 * in `freqs` (Hann-windowed Goertzel, dBFS: a full-scale sine is 0) and for its power spectrum.
 * Returns the averages, the dominant frequency between 100 Hz and 4 kHz of the averaged
 * spectrum (interpolated between bins) and, per frequency, how many windows held it at
 * -30 dBFS or more. Listening takes the time it measures; it synchronizes nothing.
 */
async function listen(page, ms, freqs, which = 'softphone') {
  return page.evaluate(async ({ ms, freqs, which }) => {
    const stream = which === 'call' ? window.verdeCall?.remote : window.verdeSoftphone.remote;
    if (!stream) throw new Error(`the ${which} page's remote stream is not set`);
    const ctx = new AudioContext();
    await ctx.resume();
    const src = ctx.createMediaStreamSource(stream);
    const an = ctx.createAnalyser();
    an.fftSize = 8192;
    an.smoothingTimeConstant = 0;
    src.connect(an);
    const n = an.fftSize;
    const rate = ctx.sampleRate;
    const buf = new Float32Array(n);
    const spec = new Float32Array(an.frequencyBinCount);
    const power = new Float64Array(an.frequencyBinCount);
    const hann = Float64Array.from({ length: n }, (_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (n - 1)));
    const tonePower = freqs.map(() => 0);
    const toneWindows = freqs.map(() => 0);
    let sumSq = 0;
    let windows = 0;
    const windowMs = (n / rate) * 1000;
    const end = performance.now() + ms;
    while (performance.now() < end) {
      // One analyser window at a time: the next read sees (nearly) fresh samples.
      await new Promise((r) => setTimeout(r, windowMs));
      an.getFloatTimeDomainData(buf);
      an.getFloatFrequencyData(spec);
      windows += 1;
      let s = 0;
      for (const x of buf) s += x * x;
      sumSq += s / n;
      freqs.forEach((f, k) => {
        const w = (2 * Math.PI * f) / rate;
        let re = 0;
        let im = 0;
        for (let i = 0; i < n; i++) {
          const v = buf[i] * hann[i];
          re += v * Math.cos(w * i);
          im -= v * Math.sin(w * i);
        }
        const amp = (4 * Math.hypot(re, im)) / n;
        tonePower[k] += amp * amp;
        if (20 * Math.log10(Math.max(amp, 1e-10)) >= -30) toneWindows[k] += 1;
      });
      for (let i = 0; i < spec.length; i++) power[i] += Math.pow(10, spec[i] / 10);
    }
    src.disconnect();
    await ctx.close();
    const binHz = rate / n;
    let best = Math.ceil(100 / binHz);
    for (let i = best; i <= Math.floor(4000 / binHz); i++) if (power[i] > power[best]) best = i;
    // Parabolic interpolation of the peak on the dB spectrum.
    const db = (i) => 10 * Math.log10(Math.max(power[i], 1e-30));
    const [a, b, c] = [db(best - 1), db(best), db(best + 1)];
    const shift = a - 2 * b + c === 0 ? 0 : (0.5 * (a - c)) / (a - 2 * b + c);
    const dbfs = (p) => 10 * Math.log10(Math.max(p, 1e-20));
    return {
      sample_rate: rate,
      windows,
      rms_dbfs: dbfs(sumSq / Math.max(windows, 1)),
      dominant_hz: (best + shift) * binHz,
      tones: freqs.map((f, k) => ({
        hz: f,
        dbfs: dbfs(tonePower[k] / Math.max(windows, 1)),
        windows_present: toneWindows[k],
      })),
    };
  }, { ms, freqs, which });
}

/** The codec in use and the RTP counters of the softphone's peer connection. */
async function media(page) {
  return page.evaluate(async () => {
    const pc = window.verdeSoftphone.pc;
    const out = { connection: pc.connectionState, codec: null, packets_received: 0, packets_sent: 0 };
    const stats = await pc.getStats();
    const codecs = new Map();
    stats.forEach((s) => { if (s.type === 'codec') codecs.set(s.id, s); });
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out.packets_received += s.packetsReceived ?? 0;
        out.codec = codecs.get(s.codecId)?.mimeType ?? out.codec;
      }
      if (s.type === 'outbound-rtp' && s.kind === 'audio') out.packets_sent += s.packetsSent ?? 0;
    });
    return out;
  });
}

// The interop recipes' flags (harness.mjs), and remote audio may play without a gesture.
// One browser per microphone: Chromium's fake capture device plays one file per process.
const launchWithMic = (wav) => launch([
  ...fakeMicrophone(wav), '--disable-gpu', '--autoplay-policy=no-user-gesture-required',
]);
const browser = await launchWithMic(micWav);
let callerBrowser = null;
let caller = null;
const failures = [];
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const agent = await ctx.newPage();
  agent.on('pageerror', (e) => failures.push(`agent page error: ${e.message}`));
  agent.on('console', (m) => { if (m.type() === 'error') console.error(`agent console: ${m.text()}`); });

  // Log in, choose the browser as the device (asks for the microphone at once), be ready.
  await agent.goto(`${base}/agent`);
  await login(agent, agentId, agentPw);
  await agent.waitForSelector('#bar', { state: 'visible', timeout: TIMEOUT });
  await agent.waitForSelector('#device:not([disabled])', { timeout: TIMEOUT });
  await agent.selectOption('#device', 'browser');
  await until(agent, 'the softphone set to the browser with a live microphone',
    () => window.verdeSoftphone?.device === 'browser'
      && document.getElementById('device-status')?.dataset.status === 'ready');
  await agent.click('#btn-ready');
  await agent.waitForSelector('#state[data-state="ready"]', { timeout: TIMEOUT });
  await shot(agent, 'ready-browser-device');
  await test.step('ready');

  if (CALLER_URL) {
    // The caller calls from the "call now" page, in a browser of its own.
    callerBrowser = await launchWithMic(CALLER_MIC);
    caller = await (await callerBrowser.newContext()).newPage();
    caller.on('pageerror', (e) => failures.push(`caller page error: ${e.message}`));
    await caller.goto(CALLER_URL);
    await caller.click('#call');
    await until(caller, 'the caller page connected', () => window.verdeCall?.state === 'connected');
  }

  // The caller is queued: the offer pops up and the page rings.
  await agent.waitForSelector('#offer', { state: 'visible', timeout: TIMEOUT });
  await until(agent, 'the softphone ringing for the offered call',
    () => window.verdeSoftphone.ringing === true && window.verdeSoftphone.call != null
      && window.verdeSoftphone.pc === null);
  const offer = {
    caller: (await agent.locator('#offer-caller').innerText()).trim(),
    queue: (await agent.locator('#offer-queue').innerText()).trim(),
    did: (await agent.locator('#offer-did').innerText()).trim(),
    device_status: await agent.getAttribute('#device-status', 'data-status'),
    call: await agent.evaluate(() => window.verdeSoftphone.call),
  };
  console.log(`OFFER ${JSON.stringify(offer)}`);
  if (CALLER && !offer.caller.includes(CALLER)) throw new Error(`pop-up caller: expected ${CALLER}, got ${offer.caller}`);
  if (QUEUE && !offer.queue.includes(QUEUE)) throw new Error(`pop-up queue: expected ${QUEUE}, got ${offer.queue}`);
  await shot(agent, 'offer-ringing');
  await test.step('offered');

  // Answer in the page: the peer connection comes up and the bar shows the call connected.
  await agent.click('#btn-answer');
  await until(agent, 'the softphone connected with remote audio',
    () => window.verdeSoftphone.pc?.connectionState === 'connected'
      && window.verdeSoftphone.remote != null && window.verdeSoftphone.ringing === false);
  await agent.waitForSelector('#call[data-call-state="connected"]', { timeout: TIMEOUT });
  await agent.waitForSelector('#state[data-state="oncall"]', { timeout: TIMEOUT });
  const callCaller = (await agent.locator('#call-caller').innerText()).trim();
  if (CALLER && !callCaller.includes(CALLER)) throw new Error(`call panel caller: expected ${CALLER}, got ${callCaller}`);
  const audioEl = await agent.evaluate(() => {
    const a = document.getElementById('softphone-remote');
    return { attached: a.srcObject === window.verdeSoftphone.remote, paused: a.paused };
  });
  if (!audioEl.attached) throw new Error(`<audio id=softphone-remote> does not play verdeSoftphone.remote: ${JSON.stringify(audioEl)}`);
  await test.step('connected');

  // Both directions flow while the page listens: the test cuts what verde sent the caller
  // between `connected` and `heard`.
  const [heard, callerHeard] = await Promise.all([
    listen(agent, LISTEN_MS, LISTEN_HZ),
    caller ? listen(caller, LISTEN_MS, LISTEN_HZ, 'call') : null,
  ]);
  console.log(`HEARD ${JSON.stringify(heard)}`);
  if (callerHeard) console.log(`CALLER_HEARD ${JSON.stringify(callerHeard)}`);
  console.log(`MEDIA ${JSON.stringify(await media(agent))}`);
  await shot(agent, 'on-call');
  await test.step('heard');

  // The agent hangs up from the bar: the call ends for the page too.
  await agent.click('#btn-hangup');
  await agent.waitForSelector('#call[data-call-state="none"]', { timeout: TIMEOUT });
  await until(agent, 'the peer connection closed', () => window.verdeSoftphone.pc === null);
  await agent.waitForSelector('#state[data-state="wrapup"], #state[data-state="ready"]', { timeout: TIMEOUT });
  await shot(agent, 'hung-up');
  if (caller) {
    await until(caller, 'the caller page ended', () => window.verdeCall.state === 'ended');
    const end = await caller.evaluate(() => ({
      state: window.verdeCall.state,
      reason: document.getElementById('reason')?.dataset.code ?? null,
      call_id: window.verdeCall.callId,
    }));
    console.log(`CALLER_END ${JSON.stringify(end)}`);
  }

  if (failures.length) throw new Error(failures.join('\n'));
  console.log('DONE');
} finally {
  if (callerBrowser) await callerBrowser.close();
  await browser.close();
  test.close();
}
