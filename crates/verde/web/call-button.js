/*
 * verde: the "call now" button for any web site.
 *
 * Paste where the button should appear (HOST is the verde engine, NUMBER one of its numbers):
 *
 *   <script src="https://HOST/static/call-button.js"
 *           data-number="803164" data-label="Chiama ora"></script>
 *
 *   data-number  the number to call (required; digits, as configured in verde)
 *   data-label   the button's text (optional; default "Chiama ora")
 *
 * The button opens https://HOST/call/NUMBER in a small popup window (380x560): the call itself,
 * the microphone permission and the /webrtc websocket all belong to the engine's own page and
 * origin, so the embedding site needs no CSP change beyond allowing this script. When popups are
 * blocked the button is a plain link that opens the same page in a new tab. A second click
 * while the call window is open brings it to the front instead of reloading it (which would end
 * the call). The button lives in a shadow root, so the site's CSS cannot break it; sites can
 * still restyle it with `.verde-call-button::part(button) { ... }`.
 *
 * Load it as a classic script (not type="module"): it needs document.currentScript.
 */
(function () {
  'use strict';

  var script = document.currentScript;
  if (!script || !script.src) return;
  var number = (script.getAttribute('data-number') || '').replace(/\s+/g, '');
  if (!/^\+?[0-9]{1,32}$/.test(number)) {
    console.warn('verde call-button: data-number is missing or not a number:', number);
    return;
  }
  var english = /^en\b/i.test(document.documentElement.lang || '');
  var label = (script.getAttribute('data-label') || '').trim() || (english ? 'Call now' : 'Chiama ora');
  var hint = english ? 'Free call from your browser (opens a small window)'
    : 'Chiamata gratuita dal browser (si apre una piccola finestra)';
  var url = new URL('/call/' + encodeURIComponent(number), script.src).href;
  var WIDTH = 380;
  var HEIGHT = 560;

  var CSS_TEXT = [
    ':host { display: inline-block; }',
    'a {',
    '  display: inline-flex; align-items: center; gap: .5em;',
    '  padding: .6em 1.2em; min-height: 44px; box-sizing: border-box;',
    '  border-radius: 999px; border: 2px solid #0b6b3a;',
    '  background: #0b6b3a; color: #fff; text-decoration: none;',
    '  font: 600 1rem/1.2 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;',
    '  cursor: pointer;',
    '}',
    'a:hover { background: #08552e; border-color: #08552e; }',
    'a:focus-visible { outline: 3px solid #1a56db; outline-offset: 2px; }',
    'svg { width: 1.2em; height: 1.2em; flex: none; fill: currentColor; }',
    '@media print { a { background: #fff; color: #000; border-color: #000; } }',
  ].join('\n');

  function phoneIcon() {
    var ns = 'http://www.w3.org/2000/svg';
    var svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    var path = document.createElementNS(ns, 'path');
    path.setAttribute('d', 'M6.6 10.8a15.1 15.1 0 0 0 6.6 6.6l2.2-2.2a1 1 0 0 1 1-.25 11.4 11.4 0 0 0 3.6.57 1 1 0 0 1 1 1V20a1 1 0 0 1-1 1A17 17 0 0 1 3 4a1 1 0 0 1 1-1h3.5a1 1 0 0 1 1 1c0 1.25.2 2.45.57 3.57a1 1 0 0 1-.25 1z');
    svg.appendChild(path);
    return svg;
  }

  function features() {
    var left = Math.max(0, Math.round((window.screenX || 0) + ((window.outerWidth || WIDTH) - WIDTH) / 2));
    var top = Math.max(0, Math.round((window.screenY || 0) + ((window.outerHeight || HEIGHT) - HEIGHT) / 2));
    return 'popup=yes,width=' + WIDTH + ',height=' + HEIGHT + ',left=' + left + ',top=' + top
      + ',resizable=yes,scrollbars=yes';
  }

  var popup = null;

  /** Opens (or brings back) the call window; false when the browser blocked it. */
  function openPopup() {
    // A second click while the call window is open only brings it forward: navigating it again
    // would reload the page and end the call. No window name, so a window left over from
    // another page of the site is never reused (and reloaded) either.
    if (popup && !popup.closed) {
      popup.focus();
      return true;
    }
    popup = window.open(url, '', features());
    if (!popup) return false;
    popup.focus();
    return true;
  }

  var link = document.createElement('a');
  link.href = url;
  link.target = '_blank';
  link.rel = 'noopener';
  link.title = hint;
  link.setAttribute('part', 'button');
  link.appendChild(phoneIcon());
  var text = document.createElement('span');
  text.textContent = label;
  link.appendChild(text);
  link.addEventListener('click', function (ev) {
    if (ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.altKey) return;
    // Blocked popup: the default action still opens the page in a new tab.
    if (openPopup()) ev.preventDefault();
  });

  var host = document.createElement('span');
  host.className = 'verde-call-button';
  host.setAttribute('data-number', number);
  if (host.attachShadow) {
    var root = host.attachShadow({ mode: 'open' });
    // A constructed stylesheet is not inline style, so a strict CSP on the host page allows it;
    // the <style> fallback is for browsers without adoptedStyleSheets.
    var sheet = null;
    try {
      sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS_TEXT);
      root.adoptedStyleSheets = [sheet];
    } catch (e) {
      var style = document.createElement('style');
      style.textContent = CSS_TEXT;
      root.appendChild(style);
    }
    root.appendChild(link);
  } else {
    host.appendChild(link);
  }
  // The button goes where the script is; a script in <head> puts it at the end of <body>.
  var parent = script.parentNode;
  if (parent && parent !== document.head && parent.nodeName !== 'HEAD') {
    parent.insertBefore(host, script.nextSibling);
  } else if (document.body) {
    document.body.appendChild(host);
  } else {
    document.addEventListener('DOMContentLoaded', function () {
      document.body.appendChild(host);
    });
  }
})();
