//! A small synchronous client for verde's `/cti` websocket (docs/cti-protocol.md), as an agent's
//! bar or a supervisor's wallboard speaks it, for the CTI protocol tests.
//!
//! Every message received is kept in arrival order: [`Cti::cmd`] waits for the answer carrying
//! its command's id and leaves the events that arrived meanwhile for [`Cti::wait_event`]. Reads
//! wait on the socket itself (a read timeout bounded by the caller's deadline), never on a
//! sleep. Failures print the connection's whole conversation.

use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::{HandshakeError, Message, WebSocket};

/// How long a command's answer or an event that must follow at once may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// One `/cti` connection.
pub struct Cti {
    ws: WebSocket<TcpStream>,
    name: String,
    /// Messages received and not yet taken, in order.
    inbox: VecDeque<Value>,
    /// The conversation, for failure messages: `+ms -> text` sent, `+ms <- text` received.
    transcript: Vec<String>,
    started: Instant,
    next_id: u64,
}

impl Cti {
    /// Opens `ws://<http>/cti` (verde's HTTP address).
    pub fn connect(http: SocketAddr) -> Cti {
        let started = Instant::now();
        let stream = TcpStream::connect(http)
            .unwrap_or_else(|e| panic!("cannot connect to verde's HTTP port {http} for /cti: {e}"));
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(WAIT))
            .expect("set a read timeout for the handshake");
        let url = format!("ws://{http}/cti");
        let mut attempt = tungstenite::client(url.as_str(), stream);
        let (ws, response) = loop {
            match attempt {
                Ok(done) => break done,
                Err(HandshakeError::Interrupted(mid)) if started.elapsed() < WAIT => {
                    attempt = mid.handshake();
                }
                Err(HandshakeError::Interrupted(_)) => {
                    panic!("websocket handshake with {url} did not complete within {WAIT:?}")
                }
                Err(HandshakeError::Failure(e)) => panic!("websocket handshake with {url}: {e}"),
            }
        };
        assert_eq!(
            response.status().as_u16(),
            101,
            "GET {url} must switch protocols (101); got {response:?}"
        );
        Cti {
            ws,
            name: format!("cti@{http}"),
            inbox: VecDeque::new(),
            transcript: Vec::new(),
            started,
            next_id: 0,
        }
    }

    /// Names the connection in failure messages (set by [`Cti::login`] to the user).
    pub fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The conversation so far, one message a line.
    pub fn transcript(&self) -> String {
        self.transcript.join("\n")
    }

    fn note(&mut self, dir: &str, text: &str) {
        let ms = self.started.elapsed().as_millis();
        let shown = if text.len() > 600 {
            format!("{}... ({} bytes)", &text[..600], text.len())
        } else {
            text.to_string()
        };
        self.transcript.push(format!("+{ms}ms {dir} {shown}"));
    }

    /// Fails the test with `what` and the conversation.
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "[{}] {what}\n---- /cti conversation of {} ----\n{}\n----",
            self.name,
            self.name,
            self.transcript()
        )
    }

    /// Sends one text message as it is (for malformed input).
    pub fn send_raw(&mut self, text: &str) {
        self.note("->", text);
        if let Err(e) = self.ws.send(Message::text(text.to_string())) {
            self.fail(&format!("cannot send on the websocket: {e}"));
        }
    }

    /// A fresh numeric id for a command.
    pub fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends `command` with a fresh `id` (replacing any) and `"v": 1` unless it has a `v`;
    /// returns the id without waiting.
    pub fn send_cmd(&mut self, mut command: Value) -> Value {
        let id = json!(self.fresh_id());
        assert!(
            command.is_object(),
            "a command is a JSON object, not {command}"
        );
        let obj = command.as_object_mut().expect("checked above");
        obj.insert("id".into(), id.clone());
        obj.entry("v").or_insert(json!(1));
        let text = command.to_string();
        self.send_raw(&text);
        id
    }

    /// Sends a command (see [`Cti::send_cmd`]) and returns its `result` or `error`, keeping the
    /// events that arrive meanwhile.
    pub fn cmd(&mut self, command: Value) -> Value {
        let kind = command["type"].clone();
        let id = self.send_cmd(command);
        self.reply(&id, &format!("the answer to {kind} (id {id})"))
    }

    /// Like [`Cti::cmd`], failing unless the answer is `{"type":"result","ok":true}`.
    pub fn cmd_ok(&mut self, command: Value) -> Value {
        let shown = command.to_string();
        let r = self.cmd(command);
        if r["type"] != "result" || r["ok"] != true {
            self.fail(&format!(
                "expected {{\"type\":\"result\",\"ok\":true}} for {shown}; got {r}"
            ));
        }
        r
    }

    /// Like [`Cti::cmd`], failing unless the answer is an `error` with `code`.
    pub fn cmd_err(&mut self, command: Value, code: &str) -> Value {
        let shown = command.to_string();
        let r = self.cmd(command);
        if r["type"] != "error" || r["code"] != code {
            self.fail(&format!(
                "expected an error with code {code:?} for {shown}; got {r}"
            ));
        }
        r
    }

    /// Waits for the `result` or `error` carrying `id`.
    pub fn reply(&mut self, id: &Value, what: &str) -> Value {
        let id = id.clone();
        self.take(what, WAIT, |m| {
            (m["type"] == "result" || m["type"] == "error") && m["id"] == id
        })
    }

    /// Waits for an `error` whose `id` is `null` (a message unreadable far enough to find one).
    pub fn null_id_error(&mut self, what: &str) -> Value {
        self.take(what, WAIT, |m| {
            m["type"] == "error" && m.get("id") == Some(&Value::Null)
        })
    }

    /// Waits up to `timeout` for an event of type `kind` satisfying `want` and takes it out of
    /// the buffer (earlier events stay there).
    pub fn wait_event(
        &mut self,
        kind: &str,
        timeout: Duration,
        want: impl Fn(&Value) -> bool,
    ) -> Value {
        let what = format!("a {kind} event");
        self.take(&what, timeout, |m| m["type"] == kind && want(m))
    }

    /// Waits for the first message satisfying `want` (in arrival order) and takes it.
    pub fn take(&mut self, what: &str, timeout: Duration, want: impl Fn(&Value) -> bool) -> Value {
        match self.try_take(timeout, want) {
            Some(m) => m,
            None => self.fail(&format!("timed out after {timeout:?} waiting for {what}")),
        }
    }

    /// Like [`Cti::take`], but `None` after `timeout`.
    pub fn try_take(&mut self, timeout: Duration, want: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.inbox.iter().position(&want) {
                return self.inbox.remove(i);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if let Some(m) = self.read_one(left) {
                self.inbox.push_back(m);
            }
        }
    }

    /// Reads whatever has already arrived, without waiting for more.
    pub fn pump(&mut self) {
        while let Some(m) = self.read_one(Duration::from_millis(1)) {
            self.inbox.push_back(m);
        }
    }

    /// The messages received and not taken yet (after reading what has arrived).
    pub fn pending(&mut self) -> Vec<Value> {
        self.pump();
        self.inbox.iter().cloned().collect()
    }

    /// Takes every message received and not taken yet.
    pub fn drain(&mut self) -> Vec<Value> {
        self.pump();
        self.inbox.drain(..).collect()
    }

    /// One message, or `None` when nothing came within `wait`.
    fn read_one(&mut self, wait: Duration) -> Option<Value> {
        let wait = wait.max(Duration::from_millis(1));
        if let Err(e) = self.ws.get_mut().set_read_timeout(Some(wait)) {
            self.fail(&format!("cannot set the socket's read timeout: {e}"));
        }
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    let text = text.as_str().to_string();
                    self.note("<-", &text);
                    match serde_json::from_str::<Value>(&text) {
                        Ok(v) if v.is_object() && v["v"] == 1 => return Some(v),
                        Ok(v) => self.fail(&format!(
                            "the server sent a message that is not an object with \"v\":1: {v}"
                        )),
                        Err(e) => {
                            self.fail(&format!("the server sent text that is not JSON ({e})"))
                        }
                    }
                }
                Ok(Message::Close(frame)) => {
                    self.note("<-", &format!("CLOSE {frame:?}"));
                    self.fail(&format!("the server closed the connection: {frame:?}"));
                }
                Ok(Message::Binary(b)) => self.fail(&format!(
                    "the server sent a binary message of {} bytes",
                    b.len()
                )),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return None
                }
                Err(e) => self.fail(&format!("reading the websocket failed: {e}")),
            }
        }
    }

    /// `login` with a password; fails unless it succeeds. Returns the result (with the token).
    pub fn login(&mut self, user: &str, password: &str) -> Value {
        self.set_name(user);
        let r = self.cmd_ok(json!({"type": "login", "user": user, "password": password}));
        if r["user"] != user || r["token"].as_str().is_none_or(|t| t.len() != 64) {
            self.fail(&format!(
                "login of {user}: expected the user and a 64-hex-digit token in the result, got {r}"
            ));
        }
        r
    }

    /// The token of a successful login or resume result.
    pub fn token_of(result: &Value) -> String {
        result["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {result}"))
            .to_string()
    }
}

/// Departures from docs/cti-protocol.md that do not stop the test: each is recorded and the
/// test fails at its end with all of them, so one engine bug does not hide the next.
#[derive(Debug, Default)]
pub struct Deviations(Vec<String>);

impl Deviations {
    /// Records `what` (expected, and what came) unless `ok`.
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) -> bool {
        if !ok {
            let what = what();
            eprintln!("DEVIATION FROM THE CTI PROTOCOL DOC: {what}");
            self.0.push(what);
        }
        ok
    }

    /// Fails the test if anything was recorded.
    pub fn finish(self, test: &str) {
        assert!(
            self.0.is_empty(),
            "{test}: {} departure(s) from docs/cti-protocol.md:\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }
}

/// A supervisor's view of the wallboard feed, built from `queue_snapshot` and `queue_delta`
/// as a page would.
#[derive(Debug, Default, Clone)]
pub struct Wallboard {
    pub seq: Option<u64>,
    pub queues: BTreeMap<String, Value>,
    pub agents: BTreeMap<String, Value>,
}

impl Wallboard {
    /// Applies one feed message; other messages are ignored. Returns whether it was applied.
    pub fn apply(&mut self, m: &Value) -> bool {
        let full = match m["type"].as_str() {
            Some("queue_snapshot") => true,
            Some("queue_delta") => false,
            _ => return false,
        };
        if full {
            self.queues.clear();
            self.agents.clear();
        }
        for q in m["queues"].as_array().into_iter().flatten() {
            if let Some(name) = q["name"].as_str() {
                self.queues.insert(name.to_string(), q.clone());
            }
        }
        for a in m["agents"].as_array().into_iter().flatten() {
            if let Some(id) = a["id"].as_str() {
                self.agents.insert(id.to_string(), a.clone());
            }
        }
        for q in m["removed_queues"].as_array().into_iter().flatten() {
            if let Some(name) = q.as_str() {
                self.queues.remove(name);
            }
        }
        for a in m["removed_agents"].as_array().into_iter().flatten() {
            if let Some(id) = a.as_str() {
                self.agents.remove(id);
            }
        }
        self.seq = m["seq"].as_u64();
        true
    }

    /// Reads feed messages from `sup` until the board satisfies `want`; fails after `timeout`
    /// with the board's last state.
    pub fn wait(
        &mut self,
        sup: &mut Cti,
        what: &str,
        timeout: Duration,
        want: impl Fn(&Wallboard) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if want(self) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                sup.fail(&format!(
                    "timed out after {timeout:?} waiting for the wallboard to show {what}; \
                     last board: seq {:?}, queues {:?}, agents {:?}",
                    self.seq, self.queues, self.agents
                ));
            }
            let m = sup.take("a queue_snapshot or queue_delta", left, |m| {
                m["type"] == "queue_snapshot" || m["type"] == "queue_delta"
            });
            self.apply(&m);
        }
    }

    /// The calls listed among `queue`'s callers.
    pub fn callers_in(&self, queue: &str) -> Vec<u64> {
        self.queues
            .get(queue)
            .and_then(|q| q["callers"].as_array())
            .map(|cs| cs.iter().filter_map(|c| c["call"].as_u64()).collect())
            .unwrap_or_default()
    }

    pub fn agent_state(&self, id: &str) -> Option<&str> {
        self.agents.get(id).and_then(|a| a["state"].as_str())
    }
}

/// Fails unless verde's log has (or gets within [`WAIT`]) a line containing every one of
/// `needles`; returns it.
pub fn assert_log_line(verde: &crate::verde::Verde, what: &str, needles: &[&str]) -> String {
    crate::try_wait_for(WAIT, || {
        verde
            .logs()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
    })
    .unwrap_or_else(|| {
        panic!(
            "verde's log should have a line for {what} containing all of {needles:?}; last lines:\n{}",
            crate::tail(&verde.logs(), 40)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wallboard_applies_snapshot_then_delta() {
        let mut w = Wallboard::default();
        assert!(!w.apply(&json!({"v":1,"type":"queue_stats"})));
        w.apply(&json!({"v":1,"type":"queue_snapshot","seq":3,
            "queues":[{"name":"pensions","callers":[{"call":7}]},{"name":"pin","callers":[]}],
            "agents":[{"id":"a1","state":"ready"},{"id":"a2","state":"paused"}]}));
        assert_eq!(w.callers_in("pensions"), vec![7]);
        w.apply(&json!({"v":1,"type":"queue_delta","seq":4,
            "queues":[{"name":"pensions","callers":[]}],
            "agents":[{"id":"a1","state":"oncall"}],
            "removed_queues":["pin"],"removed_agents":["a2"]}));
        assert_eq!(w.seq, Some(4));
        assert!(w.callers_in("pensions").is_empty());
        assert_eq!(w.agent_state("a1"), Some("oncall"));
        assert!(w.agent_state("a2").is_none());
        assert!(!w.queues.contains_key("pin"));
    }
}
