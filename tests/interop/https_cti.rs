//! HTTPS and WSS served by verde itself (`http.tls`), on a certificate made for the test.
//!
//! - curl, trusting only the test CA (no `-k`), gets `/health` and the agent's page over
//!   HTTPS: verde serves the full chain for 127.0.0.1.
//! - A plain-HTTP request to the same port gets no HTTP answer.
//! - A websocket client over OpenSSL (python3's ssl with a hand-made RFC 6455 handshake and
//!   masked frames, so nothing of verde's own stack is on the client side) opens `/cti`, logs
//!   in as an agent and gets the token and the agent's state.
//! - A client that connects and never handshakes does not stop others from being served.
//! - Headless Chromium (playwright-core, `tests/browser/`) opens the agent bar at
//!   `https://verde.test:<port>/agent` (a name that is not loopback, so only HTTPS makes the
//!   page a secure context, where browsers offer the microphone), the certificate's errors
//!   ignored for that name, and logs in: the bar's own `/cti` websocket runs over WSS.

use serde_json::Value;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;
use verde_interop::acd::write_config;
use verde_interop::http;
use verde_interop::verde::{https_get, TestCerts, Verde, VerdeOptions};
use verde_interop::{repo_root, require_private_netns, TestDir};

const AGENT: &str = "1001";
/// The agent bar in Chromium over HTTPS: prints `PAGE {protocol, secure, mic}`, logs in and
/// prints `BAR <state>` once the bar shows, then `ERRORS [...]` (page errors).
const BROWSER: &str = r#"
import { launch, login, TIMEOUT } from './harness.mjs';
const env = process.env;
const browser = await launch(['--disable-gpu', '--disable-quic',
  '--host-resolver-rules=MAP verde.test 127.0.0.1']);
try {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${env.VERDE_BASE}/agent`);
  console.log('PAGE ' + JSON.stringify(await page.evaluate(() => ({
    protocol: location.protocol,
    secure: window.isSecureContext,
    mic: typeof navigator.mediaDevices?.getUserMedia,
  }))));
  await login(page, env.VERDE_USER, env.VERDE_PW);
  await page.waitForSelector('#bar', { state: 'visible', timeout: TIMEOUT });
  console.log('BAR ' + await page.locator('#state').getAttribute('data-state'));
  console.log('ERRORS ' + JSON.stringify(errors));
} finally {
  await browser.close();
}
"#;
const PASSWORD: &str = "secret1";

/// `wss://127.0.0.1:<port>/cti`: RFC 6455 handshake, then each command line of argv[3:] as a
/// masked text frame; prints `STATUS <line>`, then every text frame received (one a line)
/// until `want` frames came or 5 s passed.
const WSS_CLIENT: &str = r#"
import base64, hashlib, json, os, socket, ssl, struct, sys
port, ca, want = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="127.0.0.1")
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET /cti HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           f"Origin: https://127.0.0.1:{port}\r\n\r\n").encode())
head = b""
while b"\r\n\r\n" not in head:
    c = s.recv(1)
    if not c:
        sys.exit("closed during the handshake: " + head.decode(errors="replace"))
    head += c
lines = head.decode().split("\r\n")
print("STATUS", lines[0], flush=True)
accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
if not any(l.lower() == "sec-websocket-accept: " + accept.lower() for l in lines):
    sys.exit("bad Sec-WebSocket-Accept in " + repr(lines))
def send(text):
    data, mask = text.encode(), os.urandom(4)
    hdr = bytes([0x81]) + (bytes([0x80 | len(data)]) if len(data) < 126 else bytes([0x80 | 126]) + struct.pack("!H", len(data)))
    s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
def exact(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b
for line in sys.stdin:
    send(line.strip())
got = 0
try:
    while got < want:
        b0, b1 = exact(2)
        n = b1 & 0x7F
        if n == 126: n = struct.unpack("!H", exact(2))[0]
        elif n == 127: n = struct.unpack("!Q", exact(8))[0]
        payload = exact(n)
        if b0 & 0x0F == 1:
            print(payload.decode(), flush=True)
            got += 1
        elif b0 & 0x0F == 8:
            print("CLOSE", payload[:2].hex(), flush=True)
            break
except (socket.timeout, EOFError) as e:
    print("END", type(e).__name__, flush=True)
"#;

#[test]
fn health_pages_and_cti_over_tls() {
    require_private_netns();
    let dir = TestDir::new("https_cti");
    let certs = TestCerts::make(&dir);
    let config = write_config(
        &dir,
        &format!(
            "http:\n  tls: {{ cert: \"{}\", key: \"{}\" }}\n\
             agents:\n\
             \x20 - {{ id: \"{AGENT}\", name: Anna, password: {PASSWORD}, queues: [pensions] }}\n",
            certs.cert.display(),
            certs.key.display()
        ),
    );
    // A client that connects first and never handshakes must not hold up anyone else.
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            https_ca: Some(certs.ca.clone()),
            ..Default::default()
        },
    );
    let _silent = TcpStream::connect(verde.http).expect("connect to the HTTPS port");

    let (status, body) = https_get(verde.http, "/health", &certs.ca).unwrap();
    assert_eq!(status, 200, "GET /health over HTTPS: {body}");
    let health: Value = serde_json::from_str(&body).expect("/health is JSON");
    assert!(health.is_object(), "{health}");
    let (status, page) = https_get(verde.http, "/agent", &certs.ca).unwrap();
    assert_eq!(status, 200, "GET /agent over HTTPS");
    assert!(
        page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"),
        "/agent over HTTPS is not a page: {}",
        &page[..page.len().min(300)]
    );

    // Plain HTTP on the HTTPS port: no HTTP answer (rustls answers with a TLS alert or closes).
    match http::get(verde.http, "/health", Duration::from_secs(3)) {
        Ok(r) => assert_ne!(r.status, 200, "plain HTTP served on the HTTPS port"),
        Err(e) => eprintln!("plain HTTP on the HTTPS port: {e}"),
    }

    let script = dir.join("wss_client.py");
    std::fs::write(&script, WSS_CLIENT).expect("write wss_client.py");
    let login =
        serde_json::json!({"v": 1, "id": 1, "type": "login", "user": AGENT, "password": PASSWORD});
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(verde.http.port().to_string())
        .arg(&certs.ca)
        .arg("2")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{login}").expect("write the login");
    }
    let out = child.wait_with_output().expect("wss client output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the WSS client failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("STATUS HTTP/1.1 101 Switching Protocols"),
        "{stdout}"
    );
    let messages: Vec<Value> = lines.filter_map(|l| serde_json::from_str(l).ok()).collect();
    let result = messages
        .iter()
        .find(|m| m["id"] == 1)
        .unwrap_or_else(|| panic!("no answer to the login over WSS: {stdout}"));
    assert_eq!(result["type"], "result", "{result}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["user"], AGENT, "{result}");
    assert!(
        result["token"].as_str().is_some_and(|t| t.len() == 64),
        "login over WSS without a token: {result}"
    );
    assert!(
        verde.logs().contains("HTTPS"),
        "verde did not log its HTTPS listener"
    );

    // A real browser on a name that is not loopback.
    let browser_dir = repo_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in tests/browser (tests/run.sh runs `npm ci` there)"
    );
    let base = format!("https://verde.test:{}", verde.http.port());
    let out = Command::new("node")
        .current_dir(&browser_dir)
        .args(["--input-type=module", "-e", BROWSER])
        .env("VERDE_BASE", &base)
        .env("VERDE_USER", AGENT)
        .env("VERDE_PW", PASSWORD)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("browser at {base}/agent:\n{stdout}");
    assert!(
        out.status.success(),
        "the browser at {base}/agent failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |tag: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .unwrap_or_else(|| panic!("no {tag}line from the browser: {stdout}"))
            .to_string()
    };
    let page: Value = serde_json::from_str(&line("PAGE ")).expect("PAGE is JSON");
    assert_eq!(page["protocol"], "https:", "{page}");
    assert_eq!(
        page["secure"], true,
        "the bar over HTTPS must be a secure context: {page}"
    );
    assert_eq!(
        page["mic"], "function",
        "getUserMedia must be offered: {page}"
    );
    assert_eq!(
        line("BAR "),
        "loggedout",
        "the bar logged in over WSS and shows the agent's state"
    );
    assert_eq!(line("ERRORS "), "[]", "page errors over HTTPS");
}
