// One dictionary for both pages. Italian is the default; English is available from the #lang
// switch, persisted in localStorage. Static markup names its strings with data-i18n (text),
// data-i18n-label (aria-label), data-i18n-title and data-i18n-placeholder.

const DICT = {
  it: {
    'agent.title': 'Barra agente',
    'wallboard.title': 'Cruscotto supervisore',
    'lang.label': 'Lingua',
    'conn.open': 'Connesso',
    'conn.connecting': 'Connessione in corso…',
    'conn.closed': 'Disconnesso, nuovo tentativo a breve',
    'conn.label': 'Stato della connessione',

    'login.heading': 'Accesso',
    'login.user': 'Utente',
    'login.password': 'Password',
    'login.submit': 'Entra',
    'login.resuming': 'Ripristino della sessione…',
    'login.session_lost': 'Sessione scaduta o revocata: accedi di nuovo.',
    'login.role_agent_only': 'Questo utente è un supervisore: usa il cruscotto su /wallboard.',
    'login.role_supervisor_only': 'Questo utente è un agente: usa la barra agente su /agent.',
    'login.missing': 'Inserisci utente e password.',
    'who.label': 'Utente',
    'btn.logout': 'Esci',

    'err.bad_request': 'Richiesta non valida',
    'err.unsupported_version': 'Versione del protocollo non supportata',
    'err.unauthenticated': 'Accesso richiesto',
    'err.auth_failed': 'Utente o password errati',
    'err.locked': 'Utente bloccato per troppi tentativi',
    'err.invalid_token': 'Sessione non valida',
    'err.token_expired': 'Sessione scaduta',
    'err.forbidden': 'Operazione non permessa',
    'err.gone': 'La chiamata non c’è più',
    'err.invalid_state': 'Operazione non possibile in questo stato',
    'err.rate_limited': 'Troppi comandi, riprova tra poco',
    'err.not_found': 'Non trovato',
    'err.unavailable': 'Servizio non disponibile ora',
    'err.internal': 'Errore del server',
    'err.disconnected': 'Non connesso al server',
    'err.http': 'Lettura dal server non riuscita',

    'state.label': 'Stato',
    'state.timer': 'Tempo nello stato',
    'state.loggedout': 'Fuori servizio',
    'state.ready': 'Disponibile',
    'state.reserved': 'Riservato',
    'state.ringing': 'Squilla',
    'state.oncall': 'In chiamata',
    'state.wrapup': 'Post-chiamata',
    'state.paused': 'In pausa',

    'reason.break': 'Pausa breve',
    'reason.lunch': 'Pranzo',
    'reason.training': 'Formazione',
    'reason.meeting': 'Riunione',
    'reason.other': 'Altro',
    'reason.supervisor': 'Dal supervisore',
    'reason.no-answer': 'Mancata risposta',
    'reason.unreachable': 'Telefono irraggiungibile',

    'queues.legend': 'Code su cui entrare in servizio',
    'queues.none': 'Nessuna coda configurata per questo agente.',
    'queues.pick_one': 'Scegli almeno una coda.',
    'btn.ready': 'Disponibile',
    'pause.reason': 'Motivo della pausa',
    'btn.pause': 'Pausa',
    'btn.wrapup_done': 'Fine post-chiamata',
    'notice.after_call': 'Richiesta accettata: avrà effetto dopo la chiamata in corso.',

    'offer.heading': 'Chiamata in arrivo',
    'offer.caller': 'Chiamante',
    'offer.did': 'Numero chiamato',
    'offer.queue': 'Coda',
    'offer.channel': 'Canale',
    'offer.waited': 'Attesa',
    'offer.language': 'Lingua IVR',
    'offer.choices': 'Scelte IVR',
    'offer.no_choices': 'nessuna',
    'btn.answer': 'Rispondi',
    'btn.decline': 'Rifiuta',
    'caller.withheld': 'Numero privato',
    'channel.voice': 'Voce',
    'channel.callback': 'Richiamata',
    'language.it': 'italiano',
    'language.en': 'inglese',
    'language.de': 'tedesco',
    'language.fr': 'francese',
    'language.es': 'spagnolo',

    'call.heading': 'Chiamata corrente',
    'call.state.none': 'Nessuna chiamata',
    'call.state.offered': 'In arrivo',
    'call.state.connected': 'In conversazione',
    'call.state.held': 'In attesa',
    'call.caller': 'Chiamante',
    'call.queue': 'Coda',
    'call.timer': 'Durata',
    'btn.hangup': 'Riaggancia',
    'btn.hold': 'Metti in attesa',
    'btn.resume': 'Riprendi',
    'transfer.heading': 'Trasferimento',
    'transfer.mode': 'Modalità',
    'transfer.mode.blind': 'Cieco',
    'transfer.mode.attended': 'Assistito',
    'transfer.kind': 'Verso',
    'transfer.kind.queue': 'Coda',
    'transfer.kind.agent': 'Agente',
    'transfer.kind.number': 'Numero',
    'transfer.target': 'Destinatario',
    'transfer.ph.queue': 'nome della coda',
    'transfer.ph.agent': 'codice agente',
    'transfer.ph.number': '+39…',
    'btn.transfer': 'Trasferisci',
    'transfer.missing': 'Indica il destinatario del trasferimento.',
    'transfer.bad_number': 'Numero non valido: solo cifre, con un + iniziale facoltativo.',
    'notice.call_ended': 'Chiamata {call} terminata: {reason}',
    'notice.call_transferred': 'Chiamata {call} trasferita a {to}',
    'consult.ringing': 'Consultazione con {to}: in attesa di risposta. Il chiamante è in attesa.',
    'consult.talking': 'In consultazione con {to}. Riaggancia per completare il trasferimento, Riprendi per tornare dal chiamante.',
    'consult.failed': 'Consultazione con {to} non riuscita ({reason}). Il chiamante è in attesa: Riprendi.',
    'consult.ended': '{to} ha chiuso la consultazione. Il chiamante è in attesa: Riprendi.',
    'consult.cancelled': 'Consultazione annullata: sei di nuovo con il chiamante.',

    'tasks.heading': 'Attività (richiamate e messaggi)',
    'tasks.kind': 'Tipo',
    'tasks.number': 'Numero',
    'tasks.queue': 'Coda / casella',
    'tasks.deadline': 'Scadenza',
    'tasks.taken_by': 'Presa da',
    'tasks.actions': 'Azioni',
    'tasks.none': 'Nessuna attività aperta.',
    'tasks.nothing': 'Nessuna attività da prendere.',
    'tasks.overdue': 'scaduta',
    'tasks.outcome': 'Esito',
    'tasks.outcome_missing': 'Scrivi l’esito prima di chiudere l’attività.',
    'task.callback': 'Richiamata',
    'task.voicemail': 'Messaggio vocale',
    'btn.take_task': 'Prendi la prossima',
    'btn.take': 'Prendi',
    'btn.close_task': 'Chiudi',
    'task.closed': 'Attività chiusa.',

    'wb.interval': 'Aggiornamento',
    'wb.updated': 'Ultimo aggiornamento',
    'btn.print': 'Stampa',
    'wb.queues': 'Code',
    'wb.queue': 'Coda',
    'wb.waiting': 'In attesa',
    'wb.oldest_wait': 'Attesa più lunga',
    'wb.agents_ready': 'Disponibili',
    'wb.agents_oncall': 'In chiamata',
    'wb.agents_wrapup': 'Post-chiamata',
    'wb.agents_paused': 'In pausa',
    'wb.sl30_today': 'LS 30 s oggi',
    'wb.sl60_today': 'LS 60 s oggi',
    'wb.sl30_15m': 'LS 30 s 15 min',
    'wb.sl60_15m': 'LS 60 s 15 min',
    'wb.abandon_rate_today': 'Abbandoni oggi',
    'wb.asa_today': 'TMR oggi',
    'wb.estimated_wait': 'Attesa stimata',
    'wb.sl_hint': 'Livello di servizio: quota di chiamate risposte entro 30 o 60 secondi',
    'wb.asa_hint': 'Tempo medio di risposta',
    'wb.no_queues': 'Nessuna coda.',
    'wb.agents': 'Agenti',
    'wb.agent': 'Agente',
    'wb.state': 'Stato',
    'wb.in_state': 'Nello stato da',
    'wb.call': 'Chiamata',
    'wb.calls_handled': 'Gestite oggi',
    'wb.registered': 'Telefono',
    'wb.actions': 'Azioni',
    'wb.yes': 'registrato',
    'wb.no': 'non registrato',
    'wb.no_agents': 'Nessun agente.',
    'btn.force_pause': 'Metti in pausa',
    'btn.force_logout': 'Fuori servizio',
    'wb.callers': 'Chiamanti in attesa',
    'wb.caller': 'Chiamante',
    'wb.kind': 'Tipo',
    'wb.kind.live': 'In linea',
    'wb.kind.callback': 'Richiamata',
    'wb.position': 'Posizione',
    'wb.offering': 'in offerta',
    'wb.waited': 'Attesa',
    'wb.move': 'Sposta in',
    'wb.move_to': 'Sposta la chiamata {call} nella coda',
    'btn.move': 'Sposta',
    'wb.no_callers': 'Nessun chiamante in attesa.',
    'wb.chart': 'Attesa per ora del giorno',
    'wb.chart_desc': 'Tempo di attesa medio e massimo per ora del giorno, in secondi, per canale.',
    'wb.chart_empty': 'Nessun dato sulle attese di oggi.',
    'wb.chart_hour': 'Ora del giorno',
    'wb.chart_seconds': 'Secondi',
    'wb.chart_avg': 'media',
    'wb.chart_max': 'massima',
    'wb.chart_point': 'ore {hour}: media {avg}, massima {max}, {calls} chiamate',
    'wb.done': 'Fatto.',
  },
  en: {
    'agent.title': 'Agent bar',
    'wallboard.title': 'Supervisor wallboard',
    'lang.label': 'Language',
    'conn.open': 'Connected',
    'conn.connecting': 'Connecting…',
    'conn.closed': 'Disconnected, retrying shortly',
    'conn.label': 'Connection state',

    'login.heading': 'Sign in',
    'login.user': 'User',
    'login.password': 'Password',
    'login.submit': 'Sign in',
    'login.resuming': 'Resuming the session…',
    'login.session_lost': 'Session expired or revoked: please sign in again.',
    'login.role_agent_only': 'This user is a supervisor: use the wallboard at /wallboard.',
    'login.role_supervisor_only': 'This user is an agent: use the agent bar at /agent.',
    'login.missing': 'Enter user and password.',
    'who.label': 'User',
    'btn.logout': 'Log out',

    'err.bad_request': 'Bad request',
    'err.unsupported_version': 'Unsupported protocol version',
    'err.unauthenticated': 'Sign-in required',
    'err.auth_failed': 'Wrong user or password',
    'err.locked': 'User locked after too many attempts',
    'err.invalid_token': 'Invalid session',
    'err.token_expired': 'Session expired',
    'err.forbidden': 'Not allowed',
    'err.gone': 'The call is gone',
    'err.invalid_state': 'Not possible in this state',
    'err.rate_limited': 'Too many commands, try again shortly',
    'err.not_found': 'Not found',
    'err.unavailable': 'Service unavailable right now',
    'err.internal': 'Server error',
    'err.disconnected': 'Not connected to the server',
    'err.http': 'Could not read from the server',

    'state.label': 'State',
    'state.timer': 'Time in state',
    'state.loggedout': 'Logged out',
    'state.ready': 'Ready',
    'state.reserved': 'Reserved',
    'state.ringing': 'Ringing',
    'state.oncall': 'On call',
    'state.wrapup': 'Wrap-up',
    'state.paused': 'Paused',

    'reason.break': 'Break',
    'reason.lunch': 'Lunch',
    'reason.training': 'Training',
    'reason.meeting': 'Meeting',
    'reason.other': 'Other',
    'reason.supervisor': 'By supervisor',
    'reason.no-answer': 'No answer',
    'reason.unreachable': 'Phone unreachable',

    'queues.legend': 'Queues to log in to',
    'queues.none': 'No queue configured for this agent.',
    'queues.pick_one': 'Pick at least one queue.',
    'btn.ready': 'Ready',
    'pause.reason': 'Pause reason',
    'btn.pause': 'Pause',
    'btn.wrapup_done': 'Wrap-up done',
    'notice.after_call': 'Accepted: it takes effect after the current call.',

    'offer.heading': 'Incoming call',
    'offer.caller': 'Caller',
    'offer.did': 'Number dialed',
    'offer.queue': 'Queue',
    'offer.channel': 'Channel',
    'offer.waited': 'Waited',
    'offer.language': 'IVR language',
    'offer.choices': 'IVR choices',
    'offer.no_choices': 'none',
    'btn.answer': 'Answer',
    'btn.decline': 'Decline',
    'caller.withheld': 'Withheld number',
    'channel.voice': 'Voice',
    'channel.callback': 'Callback',
    'language.it': 'Italian',
    'language.en': 'English',
    'language.de': 'German',
    'language.fr': 'French',
    'language.es': 'Spanish',

    'call.heading': 'Current call',
    'call.state.none': 'No call',
    'call.state.offered': 'Incoming',
    'call.state.connected': 'Connected',
    'call.state.held': 'On hold',
    'call.caller': 'Caller',
    'call.queue': 'Queue',
    'call.timer': 'Duration',
    'btn.hangup': 'Hang up',
    'btn.hold': 'Hold',
    'btn.resume': 'Resume',
    'transfer.heading': 'Transfer',
    'transfer.mode': 'Mode',
    'transfer.mode.blind': 'Blind',
    'transfer.mode.attended': 'Attended',
    'transfer.kind': 'To',
    'transfer.kind.queue': 'Queue',
    'transfer.kind.agent': 'Agent',
    'transfer.kind.number': 'Number',
    'transfer.target': 'Target',
    'transfer.ph.queue': 'queue name',
    'transfer.ph.agent': 'agent id',
    'transfer.ph.number': '+39…',
    'btn.transfer': 'Transfer',
    'transfer.missing': 'Enter the transfer target.',
    'transfer.bad_number': 'Invalid number: digits only, with an optional leading +.',
    'notice.call_ended': 'Call {call} ended: {reason}',
    'notice.call_transferred': 'Call {call} transferred to {to}',
    'consult.ringing': 'Consulting {to}: waiting for an answer. The caller is on hold.',
    'consult.talking': 'Consulting {to}. Hang up to complete the transfer, Resume to go back to the caller.',
    'consult.failed': 'Consultation with {to} failed ({reason}). The caller is on hold: Resume.',
    'consult.ended': '{to} ended the consultation. The caller is on hold: Resume.',
    'consult.cancelled': 'Consultation cancelled: you are back with the caller.',

    'tasks.heading': 'Tasks (callbacks and voicemails)',
    'tasks.kind': 'Kind',
    'tasks.number': 'Number',
    'tasks.queue': 'Queue / mailbox',
    'tasks.deadline': 'Deadline',
    'tasks.taken_by': 'Taken by',
    'tasks.actions': 'Actions',
    'tasks.none': 'No open tasks.',
    'tasks.nothing': 'Nothing to take.',
    'tasks.overdue': 'overdue',
    'tasks.outcome': 'Outcome',
    'tasks.outcome_missing': 'Write the outcome before closing the task.',
    'task.callback': 'Callback',
    'task.voicemail': 'Voicemail',
    'btn.take_task': 'Take next',
    'btn.take': 'Take',
    'btn.close_task': 'Close',
    'task.closed': 'Task closed.',

    'wb.interval': 'Refresh',
    'wb.updated': 'Last update',
    'btn.print': 'Print',
    'wb.queues': 'Queues',
    'wb.queue': 'Queue',
    'wb.waiting': 'Waiting',
    'wb.oldest_wait': 'Longest wait',
    'wb.agents_ready': 'Ready',
    'wb.agents_oncall': 'On call',
    'wb.agents_wrapup': 'Wrap-up',
    'wb.agents_paused': 'Paused',
    'wb.sl30_today': 'SL 30 s today',
    'wb.sl60_today': 'SL 60 s today',
    'wb.sl30_15m': 'SL 30 s 15 min',
    'wb.sl60_15m': 'SL 60 s 15 min',
    'wb.abandon_rate_today': 'Abandoned today',
    'wb.asa_today': 'ASA today',
    'wb.estimated_wait': 'Estimated wait',
    'wb.sl_hint': 'Service level: share of calls answered within 30 or 60 seconds',
    'wb.asa_hint': 'Average speed of answer',
    'wb.no_queues': 'No queues.',
    'wb.agents': 'Agents',
    'wb.agent': 'Agent',
    'wb.state': 'State',
    'wb.in_state': 'In state for',
    'wb.call': 'Call',
    'wb.calls_handled': 'Handled today',
    'wb.registered': 'Phone',
    'wb.actions': 'Actions',
    'wb.yes': 'registered',
    'wb.no': 'not registered',
    'wb.no_agents': 'No agents.',
    'btn.force_pause': 'Force pause',
    'btn.force_logout': 'Force logout',
    'wb.callers': 'Callers waiting',
    'wb.caller': 'Caller',
    'wb.kind': 'Kind',
    'wb.kind.live': 'Live',
    'wb.kind.callback': 'Callback',
    'wb.position': 'Position',
    'wb.offering': 'being offered',
    'wb.waited': 'Waited',
    'wb.move': 'Move to',
    'wb.move_to': 'Move call {call} to queue',
    'btn.move': 'Move',
    'wb.no_callers': 'No callers waiting.',
    'wb.chart': 'Waiting time by hour of day',
    'wb.chart_desc': 'Average and maximum waiting time by hour of day, in seconds, per channel.',
    'wb.chart_empty': 'No waiting data for today.',
    'wb.chart_hour': 'Hour of day',
    'wb.chart_seconds': 'Seconds',
    'wb.chart_avg': 'average',
    'wb.chart_max': 'maximum',
    'wb.chart_point': '{hour}h: average {avg}, maximum {max}, {calls} calls',
    'wb.done': 'Done.',
  },
};

const STORE_KEY = 'verde.lang';
const listeners = new Set();
let lang = initialLang();

function initialLang() {
  try {
    const saved = localStorage.getItem(STORE_KEY);
    if (saved && DICT[saved]) return saved;
  } catch {
    // Storage can be disabled; the default language still works.
  }
  return 'it';
}

/** Languages offered by the switch. */
export const LANGS = Object.keys(DICT);

export function getLang() {
  return lang;
}

/** BCP 47 locale for numbers and dates. */
export function locale() {
  return lang === 'en' ? 'en-GB' : 'it-IT';
}

/** True when the dictionary has the key (so callers can fall back to raw wire values). */
export function has(key) {
  return key in DICT[lang] || key in DICT.it;
}

/** The string for key in the current language, with {name} placeholders filled from params. */
export function t(key, params) {
  let s = DICT[lang][key] ?? DICT.it[key] ?? key;
  if (params) {
    s = s.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
  }
  return s;
}

/** Translates key if known, else returns fallback (a wire value the dictionary does not cover). */
export function tOr(key, fallback) {
  return has(key) ? t(key) : fallback;
}

/** Translates the static markup under root and sets <html lang>. */
export function applyI18n(root = document) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-label]')) el.setAttribute('aria-label', t(el.dataset.i18nLabel));
  for (const el of root.querySelectorAll('[data-i18n-title]')) el.setAttribute('title', t(el.dataset.i18nTitle));
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) el.setAttribute('placeholder', t(el.dataset.i18nPlaceholder));
}

export function setLang(next) {
  if (!DICT[next] || next === lang) return;
  lang = next;
  try {
    localStorage.setItem(STORE_KEY, next);
  } catch {
    // Not persisted; the switch still works for this page.
  }
  applyI18n();
  for (const fn of listeners) fn(lang);
}

/** Calls fn(lang) after every language change, so pages re-render their dynamic text. */
export function onLangChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** Wires the #lang select to the dictionary. */
export function initLangSelect(select) {
  if (!select) return;
  select.value = lang;
  select.addEventListener('change', () => setLang(select.value));
}
