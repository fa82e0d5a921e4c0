// A citizen calling from the public "call now" page (/call/{did}) in headless Debian chromium,
// driven by playwright-core; the microphone is a WAV file (Chromium's fake capture device).
//
//   node webrtc_caller.mjs BASE_URL NUMBER MIC_WAV SHOT_DIR
//
// Run by tests/interop/webrtc_browser_caller.rs, which owns verde and the agent's baresip phone
// and decides when each step happens from verde's log. The page's remote audio
// (`verdeCall.remote`) is watched by a WebAudio AnalyserNode from the moment it exists: every
// 20 ms the script keeps a snapshot (epoch time in ms, RMS of the analyser's window, its power
// spectrum up to 4 kHz in dB), so the test can cut out what the browser heard during any
// interval it knows from verde's log and compare it with the prompt or tone that was sent.
//
// Protocol, one line each way:
//   script -> test: `CONNECTED {json}` once the call is up (call_id, analyser settings),
//                   `OK <command>` / `SNAPSHOTS {json}` / `ENDED {json}` in answer to commands,
//                   `SHOT <path>` for screenshots, `DONE` at the end.
//   test -> script: `KEY <digit>` clicks the keypad, `STATE <state>` waits for #state's
//                   data-state, `SNAPSHOTS <from_ms> <to_ms>` waits until the analyser has
//                   passed `to_ms` and returns the snapshots in between, `HANGUP` clicks #hangup
//                   and waits for the page to show the call ended, `QUIT`.
// Any failed expectation throws: the exit status is non-zero and the message says what was
// expected and what the page showed.

import { fakeMicrophone, fromTest, launch, screenshots, TIMEOUT, waiter } from './harness.mjs';

const [base, number, micWav, shots] = process.argv.slice(2);
if (!shots) {
  console.error('usage: webrtc_caller.mjs BASE_URL NUMBER MIC_WAV SHOT_DIR');
  process.exit(2);
}
/** Analyser window: 2048 samples (about 43 ms at 48 kHz), 23 Hz bins. */
const FFT = 2048;
/** Spectrum bins kept per snapshot: up to 4 kHz, all G.711 can carry. */
const MAX_HZ = 4000;
const SNAPSHOT_MS = 20;

const test = fromTest({ eof: 'QUIT' });
const shot = screenshots(shots);

/** Waits until `fn()` (run in the page) returns a truthy value; says what it saw on timeout. */
const until = waiter({
  seen: () => ({
    state: window.verdeCall?.state,
    reason: document.getElementById('reason')?.textContent,
    text: document.body.innerText.slice(0, 1500),
  }),
});

// Exactly the flags of the interop recipes (harness.mjs).
const browser = await launch(fakeMicrophone(micWav));
try {
  const page = await browser.newPage({ viewport: { width: 420, height: 860 } });
  page.on('console', (m) => console.log(`[page ${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  await page.goto(`${base}/call/${number}`);
  await until(page, 'the page ready to call', () => window.verdeCall?.state === 'idle' && !document.getElementById('call').disabled);
  await shot(page, 'idle');

  // The click is the user gesture that lets the page (and the analyser below) play audio.
  await page.click('#call');
  // Watch the remote stream from the moment it exists: the IVR starts as soon as the media is
  // up, and the welcome prompt must be heard from its first syllable.
  await until(page, 'the remote stream (verdeCall.remote)', () => Boolean(window.verdeCall?.remote));
  const analyser = await page.evaluate(async ({ fft, maxHz, every }) => {
    const ctx = new AudioContext();
    await ctx.resume();
    const src = ctx.createMediaStreamSource(window.verdeCall.remote);
    const an = ctx.createAnalyser();
    an.fftSize = fft;
    // Each snapshot on its own: no averaging with the previous ones.
    an.smoothingTimeConstant = 0;
    src.connect(an);
    const binHz = ctx.sampleRate / fft;
    const bins = Math.floor(maxHz / binHz) + 1;
    const td = new Float32Array(fft);
    const fd = new Float32Array(an.frequencyBinCount);
    const snaps = [];
    window.__heard = { ctx, an, snaps };
    setInterval(() => {
      an.getFloatTimeDomainData(td);
      an.getFloatFrequencyData(fd);
      let s = 0;
      for (const x of td) s += x * x;
      snaps.push({
        t: performance.timeOrigin + performance.now(),
        rms: Math.sqrt(s / td.length),
        db: Array.from(fd.subarray(0, bins), (v) => (Number.isFinite(v) ? Math.round(v * 100) / 100 : -200)),
      });
    }, every);
    return { sample_rate: ctx.sampleRate, fft, bin_hz: binHz, bins, state: ctx.state };
  }, { fft: FFT, maxHz: MAX_HZ, every: SNAPSHOT_MS });
  if (analyser.state !== 'running') throw new Error(`the AudioContext is ${analyser.state}, not running`);

  await until(page, 'the call connected (#state data-state=connected)', () =>
    document.getElementById('state').dataset.state === 'connected' && window.verdeCall.callId);
  const info = await page.evaluate(async () => {
    const c = window.verdeCall;
    let codec = null;
    const stats = await c.pc.getStats();
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio' && s.codecId) codec = stats.get(s.codecId)?.mimeType ?? null;
    });
    return { call_id: c.callId, codec, state: c.state };
  });
  console.log(`CONNECTED ${JSON.stringify({ ...info, ...analyser })}`);
  await shot(page, 'connected');

  for (;;) {
    const line = (await test.nextLine()).trim();
    const [cmd, ...args] = line.split(/\s+/);
    if (cmd === 'QUIT') break;
    if (cmd === 'KEY') {
      const key = args[0];
      const sel = `#keypad button[data-key="${key}"]`;
      await until(page, `keypad key ${key} enabled`, (s) => !document.querySelector(s)?.disabled, sel);
      const before = await page.evaluate(() => document.getElementById('digits').textContent);
      await page.click(sel);
      // The page shows what it sent: the key went to RTCDTMFSender (canInsertDTMF was true).
      await until(page, `digit ${key} shown as sent`, (b) => document.getElementById('digits').textContent.length > b.length, before);
      console.log(`OK ${line}`);
    } else if (cmd === 'STATE') {
      await until(page, `#state data-state=${args[0]}`, (s) => document.getElementById('state').dataset.state === s, args[0]);
      await shot(page, `state-${args[0]}`);
      console.log(`OK ${line}`);
    } else if (cmd === 'SNAPSHOTS') {
      const [from, to] = args.map(Number);
      await until(page, `analyser snapshots past ${to}`, (t) => {
        const s = window.__heard.snaps;
        return s.length > 0 && s[s.length - 1].t >= t;
      }, to, Math.max(TIMEOUT, to - Date.now() + 10_000));
      const snaps = await page.evaluate(({ from, to }) => window.__heard.snaps.filter((s) => s.t >= from && s.t <= to), { from, to });
      console.log(`SNAPSHOTS ${JSON.stringify(snaps)}`);
    } else if (cmd === 'HANGUP') {
      await page.click('#hangup');
      await until(page, 'the call ended after hang-up', () => document.getElementById('state').dataset.state === 'ended');
      await shot(page, 'ended');
      const ended = await page.evaluate(() => ({
        state: window.verdeCall.state,
        reason: document.getElementById('reason').dataset.code ?? null,
        pc: window.verdeCall.pc?.connectionState ?? null,
        ws: window.verdeCall.ws?.readyState ?? null,
      }));
      console.log(`ENDED ${JSON.stringify(ended)}`);
    } else {
      throw new Error(`unknown command from the test: ${JSON.stringify(line)}`);
    }
  }
  console.log('DONE');
} finally {
  await browser.close();
  test.close();
}
