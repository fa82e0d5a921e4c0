// What both pages share: the connection indicator, the login form, the notice line,
// formatting and keyed table updates.

import { t, tOr, applyI18n, initLangSelect, onLangChange, locale } from './i18n.js';
import { CtiClient } from './cti.js';

export const $ = (id) => document.getElementById(id);

/** Seconds as mm:ss (minutes keep counting past 59, so the format never changes). */
export function fmtDur(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return '—';
  const s = Math.max(0, Math.floor(seconds));
  return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

/** A 0..1 ratio as a whole percentage, "—" when unknown. */
export function fmtPercent(ratio) {
  if (ratio == null || !Number.isFinite(ratio)) return '—';
  return new Intl.NumberFormat(locale(), { style: 'percent', maximumFractionDigits: 0 }).format(ratio);
}

export function fmtClock(ms) {
  return new Date(ms).toLocaleTimeString(locale(), { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function fmtDateTime(ms) {
  if (ms == null) return '—';
  return new Date(ms).toLocaleString(locale(), {
    day: '2-digit', month: '2-digit', hour: '2-digit', minute: '2-digit',
  });
}

/** The text of a translated error: label, wire code and the server's message. */
export function errorText(err) {
  const code = err?.code ?? 'internal';
  const label = tOr(`err.${code}`, code);
  const message = err?.code ? err.message : String(err);
  return message && message !== code ? `${label} (${code}): ${message}` : `${label} (${code})`;
}

/** Sets text only when it changed, so live regions and layout stay quiet. */
export function setText(el, text) {
  const s = String(text);
  if (el.textContent !== s) el.textContent = s;
}

export function setAttr(el, name, value) {
  if (value == null) {
    if (el.hasAttribute(name)) el.removeAttribute(name);
  } else if (el.getAttribute(name) !== String(value)) {
    el.setAttribute(name, String(value));
  }
}

/**
 * Brings tbody's rows in line with items, keyed by the data-KEYATTR attribute: existing rows are
 * updated in place (a focused select or a half-typed input survives), new ones built, gone ones
 * removed, and the order follows items.
 */
export function syncRows(tbody, keyAttr, items, keyOf, build, update) {
  const existing = new Map();
  for (const tr of tbody.children) {
    if (tr.dataset[keyAttr] !== undefined) existing.set(tr.dataset[keyAttr], tr);
  }
  let prev = null;
  for (const item of items) {
    const key = String(keyOf(item));
    let tr = existing.get(key);
    if (tr) {
      existing.delete(key);
    } else {
      tr = build(item);
      tr.dataset[keyAttr] = key;
    }
    update(tr, item);
    const want = prev ? prev.nextElementSibling : tbody.firstElementChild;
    if (want !== tr) tbody.insertBefore(tr, want);
    prev = tr;
  }
  for (const tr of existing.values()) tr.remove();
}

/** Creates an element with attributes and children (strings become text). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) el.append(c);
  return el;
}

let noticeTimer = null;

/** Shows a message in #notice (aria-live); kind is 'error' or 'info'. */
export function notice(text, kind = 'info', code = null) {
  const el = $('notice');
  if (!el) return;
  clearTimeout(noticeTimer);
  el.dataset.kind = kind;
  setAttr(el, 'data-code', code);
  // The region stays in the page (never hidden) so screen readers announce each new text.
  el.textContent = text;
  noticeTimer = setTimeout(() => {
    el.textContent = '';
    delete el.dataset.kind;
    el.removeAttribute('data-code');
  }, kind === 'error' ? 15000 : 8000);
}

export function noticeError(err) {
  notice(errorText(err), 'error', err?.code ?? null);
}

/**
 * Runs a command started by a button: the button stays disabled until the answer arrives (no
 * double sends) and errors land in #notice. Resolves with the result, or undefined on error.
 */
export async function run(button, promiseFn, after) {
  if (button) {
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
  }
  try {
    return await promiseFn();
  } catch (e) {
    noticeError(e);
    return undefined;
  } finally {
    if (button) button.removeAttribute('aria-busy');
    after?.();
  }
}

/**
 * Common page start: translations, language switch, connection indicator, login form.
 * role is the role this page is for ('agent' or 'supervisor'); onSession runs after each
 * login or resume of that role (before the replayed events), onLoggedOut when the login form
 * comes back.
 */
export function setupPage({ role, storageKey, onSession, onLoggedOut, onLang }) {
  applyI18n();
  initLangSelect($('lang'));
  if (onLang) onLangChange(onLang);

  const cti = new CtiClient({ storageKey });
  const form = $('login-form');
  const app = $('bar') ?? $('board');
  const loginError = $('login-error');
  const resuming = $('resuming');
  const conn = $('conn');
  let loginErrorKey = null;
  let loginErrorText = null;

  const renderConn = () => {
    conn.dataset.conn = cti.state;
    document.body.dataset.conn = cti.state;
    setText(conn, t(`conn.${cti.state}`));
  };
  const renderLoginError = () => {
    const text = loginErrorKey ? t(loginErrorKey) : loginErrorText;
    loginError.textContent = text ?? '';
    loginError.hidden = !text;
  };
  const showLoginError = (key, text = null) => {
    loginErrorKey = key;
    loginErrorText = text;
    renderLoginError();
  };
  onLangChange(() => {
    renderConn();
    renderLoginError();
  });

  const showLogin = () => {
    if (resuming) resuming.hidden = true;
    const wasHidden = form.hidden;
    form.hidden = false;
    app.hidden = true;
    document.body.dataset.session = 'none';
    $('login-submit').disabled = false;
    if (wasHidden) $('login-user').focus();
    onLoggedOut?.();
  };

  cti.on('conn', renderConn);
  cti.on('auth_required', ({ code }) => {
    if (code) showLoginError(code === 'token_expired' || code === 'invalid_token' ? 'login.session_lost' : `err.${code}`);
    showLogin();
  });
  cti.on('session', (s) => {
    if (s.role !== role) {
      showLoginError(role === 'agent' ? 'login.role_agent_only' : 'login.role_supervisor_only');
      cti.logoutLocal();
      showLogin();
      return;
    }
    showLoginError(null);
    if (resuming) resuming.hidden = true;
    form.hidden = true;
    app.hidden = false;
    document.body.dataset.session = s.role;
    setText($('who'), s.user);
    $('login-password').value = '';
    onSession(s);
  });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const user = $('login-user').value.trim();
    const password = $('login-password').value;
    if (!user || !password) {
      showLoginError('login.missing');
      return;
    }
    const submit = $('login-submit');
    submit.disabled = true;
    try {
      await cti.login(user, password);
    } catch (e) {
      showLoginError(null, errorText(e));
      $('login-password').select();
    } finally {
      submit.disabled = false;
    }
  });

  // With a stored token the page waits for resume instead of flashing the form.
  if (cti.token) {
    form.hidden = true;
    if (resuming) resuming.hidden = false;
  } else {
    showLogin();
  }
  renderConn();
  cti.start();
  return cti;
}
