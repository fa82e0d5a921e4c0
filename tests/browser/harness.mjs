// What the browser scripts of tests/browser share: the line protocol with the Rust test that
// runs them (tests/node.rs), screenshots, waiting on a page, and launching Debian's chromium.

import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { join } from 'node:path';

/** Every wait on a page has this deadline unless it says otherwise. */
export const TIMEOUT = 30_000;

/**
 * The test's side of the conversation: lines from stdin, one at a time. When the test closes
 * stdin (it is gone, or failed), `nextLine` answers `eof` so the script stops instead of
 * waiting for ever.
 */
export function fromTest({ eof = 'EOF' } = {}) {
  const stdin = createInterface({ input: process.stdin });
  const lines = [];
  let waiter = null;
  const deliver = (l) => {
    if (waiter) { const w = waiter; waiter = null; w(l); } else { lines.push(l); }
  };
  stdin.on('line', deliver);
  stdin.on('close', () => deliver(eof));
  function nextLine() {
    if (lines.length) return Promise.resolve(lines.shift());
    return new Promise((resolve) => { waiter = resolve; });
  }
  return {
    nextLine,
    /** Prints `STEP <name>` and waits for the test's `GO`: the test acts or looks meanwhile. */
    async step(name) {
      console.log(`STEP ${name}`);
      const l = await nextLine();
      if (l.trim() !== 'GO') throw new Error(`test answered ${JSON.stringify(l)} to step ${name}`);
    },
    /** Stops reading: an open stdin would keep node alive. */
    close() {
      stdin.close();
      process.stdin.destroy();
    },
  };
}

/** `shot(page, name)` saves a numbered full-page screenshot in `dir` and prints `SHOT <path>`. */
export function screenshots(dir) {
  let n = 0;
  return async function shot(page, name) {
    n += 1;
    const path = join(dir, `${String(n).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path, fullPage: true });
    console.log(`SHOT ${path}`);
  };
}

/**
 * `until(page, what, fn, arg, timeout)` waits until `fn(arg)` (run in the page) returns a truthy
 * value and returns it; on timeout it throws with what the page showed: `seen()`, run in the
 * page (its text by default).
 */
export function waiter({ polling = 50, seen = () => document.body.innerText.slice(0, 3000) } = {}) {
  return async function until(page, what, fn, arg, timeout = TIMEOUT) {
    try {
      return await (await page.waitForFunction(fn, arg, { timeout, polling })).jsonValue();
    } catch (e) {
      const shown = await page.evaluate(seen).catch(() => '(page gone)');
      const text = typeof shown === 'string' ? `\n${shown}` : ` ${JSON.stringify(shown)}`;
      throw new Error(`${what}: not seen within ${timeout} ms (${e.message.split('\n')[0]}). The page showed:${text}`);
    }
  };
}

/** Logs in on the agent bar's or the wallboard's login form. */
export async function login(page, user, pw) {
  await page.fill('#login-user', user);
  await page.fill('#login-password', pw);
  await page.click('#login-submit');
}

/**
 * The interop recipes' flags for a page with a microphone: fake devices with `wav` as the
 * microphone (Chromium's fake capture device loops it, one file per process), loopback
 * candidates allowed and not hidden behind mDNS names, no name resolution but 127.0.0.1.
 */
export function fakeMicrophone(wav) {
  return [
    '--headless=new',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${wav}`,
    '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
  ];
}

/** Debian's headless chromium (never a downloaded one), fetching nothing in the background. */
export function launch(args = []) {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...args,
    ],
  });
}
