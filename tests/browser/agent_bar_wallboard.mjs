// The agent bar and the wallboard in headless Debian chromium, driven by playwright-core.
//
//   node agent_bar_wallboard.mjs BASE_URL SHOT_DIR AGENT AGENT_PW SUPERVISOR SUPERVISOR_PW
//
// Run by tests/interop/browser_agent_bar.rs, which owns verde, the agent's baresip phone and
// the SIPp caller. The two talk over stdin/stdout lines: this script prints `STEP <name>` when
// the test must act (e.g. `STEP call` -> the test starts the caller) and waits for a line `GO`
// on stdin before going on; it prints `SHOT <path>` for every screenshot and `DONE` at the end.
// Any failed expectation throws: the exit status is non-zero and the message says what was
// expected and what the page showed.

import { fromTest, launch, login, screenshots, TIMEOUT, waiter } from './harness.mjs';

const [base, shots, agentId, agentPw, supId, supPw] = process.argv.slice(2);
if (!supPw) {
  console.error('usage: agent_bar_wallboard.mjs BASE_URL SHOT_DIR AGENT AGENT_PW SUPERVISOR SUPERVISOR_PW');
  process.exit(2);
}
const CALLER = process.env.VERDE_CALLER || '';
const test = fromTest();
const shot = screenshots(shots);
/** Waits until `fn()` (run in the page) returns a truthy value; says what it saw on timeout. */
const until = waiter({ polling: 100 });

const field = (queue, name) => `#queues tr[data-queue="${queue}"] td[data-field="${name}"]`;
async function fieldText(page, queue, name) {
  return (await page.locator(field(queue, name)).innerText()).trim();
}

const browser = await launch(['--disable-gpu', '--disable-quic']);
const failures = [];
try {
  const agentCtx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const supCtx = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const agent = await agentCtx.newPage();
  const wall = await supCtx.newPage();
  for (const [who, page] of [['agent', agent], ['wallboard', wall]]) {
    page.on('pageerror', (e) => failures.push(`${who} page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') console.error(`${who} console: ${m.text()}`); });
  }

  // The agent logs in, becomes ready (login to its queues), then pauses: the caller must wait.
  await agent.goto(`${base}/agent`);
  const lang = await agent.getAttribute('html', 'lang');
  if (lang !== 'it') throw new Error(`the bar speaks Italian by default: <html lang=${lang}>`);
  await login(agent, agentId, agentPw);
  await agent.waitForSelector('#bar', { state: 'visible', timeout: TIMEOUT });
  await agent.waitForSelector('input[name=queue][value=pensions]', { timeout: TIMEOUT });
  await agent.click('#btn-ready');
  await agent.waitForSelector('#state[data-state="ready"]', { timeout: TIMEOUT });
  await agent.selectOption('#pause-reason', 'break');
  await agent.click('#btn-pause');
  await agent.waitForSelector('#state[data-state="paused"]', { timeout: TIMEOUT });
  await shot(agent, 'agent-paused');

  await wall.goto(`${base}/wallboard`);
  await login(wall, supId, supPw);
  await wall.waitForSelector(field('pensions', 'waiting'), { timeout: TIMEOUT });
  await wall.waitForSelector(`#agents tr[data-agent="${agentId}"] td[data-field="state"][data-state="paused"]`, { timeout: TIMEOUT });
  await shot(wall, 'wallboard-idle');

  // A caller comes through the IVR into pensions and waits.
  await test.step('call');
  await until(wall, 'pensions shows 1 caller waiting',
    (sel) => document.querySelector(sel)?.innerText.trim() === '1', field('pensions', 'waiting'));
  await wall.waitForSelector('#callers tr[data-call]', { timeout: TIMEOUT });
  const callerRow = await wall.locator('#callers tr[data-call]').first().innerText();
  if (CALLER && !callerRow.includes(CALLER)) throw new Error(`the waiting caller's row names ${CALLER}: ${callerRow}`);
  await shot(wall, 'wallboard-caller-waiting');

  // Ready: the offer pops up on the bar (the phone stays silent until Answer).
  await agent.click('#btn-ready');
  await agent.waitForSelector('#offer', { state: 'visible', timeout: TIMEOUT });
  const offer = {
    caller: (await agent.locator('#offer-caller').innerText()).trim(),
    queue: (await agent.locator('#offer-queue').innerText()).trim(),
    did: (await agent.locator('#offer-did').innerText()).trim(),
    choices: (await agent.locator('#offer-choices').innerText()).trim(),
  };
  console.log(`OFFER ${JSON.stringify(offer)}`);
  if (CALLER && !offer.caller.includes(CALLER)) throw new Error(`pop-up caller: expected ${CALLER}, got ${offer.caller}`);
  if (!offer.queue.includes('pensions')) throw new Error(`pop-up queue: expected pensions, got ${offer.queue}`);
  await shot(agent, 'agent-offer-popup');
  await test.step('offered');

  // Answer from the bar: verde calls the phone with auto-answer; the call connects.
  await agent.click('#btn-answer');
  await agent.waitForSelector('#call[data-call-state="connected"]', { timeout: TIMEOUT });
  await agent.waitForSelector('#state[data-state="oncall"]', { timeout: TIMEOUT });
  await until(wall, 'pensions shows the agent on call and nobody waiting',
    ([oncall, waiting]) => document.querySelector(oncall)?.innerText.trim() === '1'
      && document.querySelector(waiting)?.innerText.trim() === '0',
    [field('pensions', 'agents_oncall'), field('pensions', 'waiting')]);
  await wall.waitForSelector(`#agents tr[data-agent="${agentId}"] td[data-field="state"][data-state="oncall"]`, { timeout: TIMEOUT });
  await shot(agent, 'agent-on-call');
  await shot(wall, 'wallboard-agent-on-call');
  await test.step('answered');

  // Blind transfer to the benefits queue.
  await agent.selectOption('#transfer-mode', 'blind');
  await agent.selectOption('#transfer-kind', 'queue');
  const target = agent.locator('#transfer-target');
  if ((await target.evaluate((e) => e.tagName)) === 'SELECT') {
    await target.selectOption('benefits');
  } else {
    await target.fill('benefits');
  }
  await agent.click('#btn-transfer');
  await agent.waitForSelector('#call[data-call-state="none"]', { timeout: TIMEOUT });
  await agent.waitForSelector('#state[data-state="wrapup"]', { timeout: TIMEOUT });
  await until(wall, 'benefits shows the transferred caller waiting',
    (sel) => document.querySelector(sel)?.innerText.trim() === '1', field('benefits', 'waiting'));
  await shot(agent, 'agent-wrapup');
  await shot(wall, 'wallboard-after-transfer');

  // Wrap-up done: ready again, one call handled.
  await agent.click('#btn-wrapup-done');
  await agent.waitForSelector('#state[data-state="ready"]', { timeout: TIMEOUT });
  await wall.waitForSelector(`#agents tr[data-agent="${agentId}"] td[data-field="state"][data-state="ready"]`, { timeout: TIMEOUT });
  await until(wall, `the agent's calls handled reach 1`,
    (sel) => document.querySelector(sel)?.innerText.trim() === '1',
    `#agents tr[data-agent="${agentId}"] td[data-field="calls_handled"]`);
  await test.step('ready-again');

  // The caller hangs up in benefits: the queue empties, and the day's figures count the call
  // (an abandon in benefits) within a stats period.
  await until(wall, 'benefits empty again',
    (sel) => document.querySelector(sel)?.innerText.trim() === '0', field('benefits', 'waiting'));
  await until(wall, 'the abandon rate of benefits shown',
    (sel) => { const t = document.querySelector(sel)?.innerText.trim(); return t && t !== '—' && t !== '-'; },
    field('benefits', 'abandon_rate_today'));
  const chart = await wall.locator('#wait-chart').innerHTML();
  if (!chart.includes('<')) throw new Error('the waiting-time chart is empty');
  await shot(wall, 'wallboard-end-of-test');

  // Reload: the bar resumes with the truth (ready), without logging in again.
  await agent.reload();
  await agent.waitForSelector('#state[data-state="ready"]', { timeout: TIMEOUT });
  if (await agent.locator('#login-form').isVisible()) throw new Error('after a reload the bar asked to log in again');

  // Print layout: controls hidden, tables kept.
  await wall.emulateMedia({ media: 'print' });
  const hidden = await wall.locator('#btn-print').isHidden();
  if (!hidden) throw new Error('the print layout still shows the print button');
  if (!(await wall.locator('#queues').isVisible())) throw new Error('the print layout hides the queue table');
  await shot(wall, 'wallboard-print');

  // English on request.
  await wall.emulateMedia({ media: 'screen' });
  await wall.selectOption('#lang', 'en');
  await until(wall, 'the page switched to English', () => document.documentElement.lang === 'en');
  await shot(wall, 'wallboard-english');

  if (failures.length) throw new Error(failures.join('\n'));
  console.log('DONE');
} finally {
  await browser.close();
  test.close();
}
