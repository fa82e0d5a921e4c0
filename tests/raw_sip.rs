//! Raw SIP over UDP and TCP, for tests that send what no SIP stack would (torture messages,
//! garbage, half messages) and read verde's answers as text.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// A received message, kept as text (the responses verde sends are UTF-8).
#[derive(Debug, Clone)]
pub struct SipText(pub String);

impl SipText {
    pub fn status(&self) -> Option<u16> {
        self.0.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }

    /// Values of a header (full or compact name), in order.
    pub fn headers(&self, full: &str, compact: &str) -> Vec<String> {
        header_values(&self.0, full, compact)
    }

    pub fn header(&self, full: &str, compact: &str) -> Option<String> {
        self.headers(full, compact).into_iter().next()
    }

    pub fn call_id(&self) -> Option<String> {
        self.header("Call-ID", "i")
    }
}

/// Header values of a message head, folded lines joined; names matched case-insensitively.
pub fn header_values(text: &str, full: &str, compact: &str) -> Vec<String> {
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines: Vec<String> = Vec::new();
    for line in head.split("\r\n").skip(1) {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = lines.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            lines.push(line.to_string());
        }
    }
    lines
        .iter()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case(full) || name.eq_ignore_ascii_case(compact))
                .then(|| value.trim().to_string())
        })
        .collect()
}

/// One datagram from `sock` within `wait`.
pub fn recv_udp(sock: &UdpSocket, wait: Duration) -> Option<SipText> {
    sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    sock.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| SipText(String::from_utf8_lossy(&buf[..n]).into_owned()))
}

/// What reading a TCP connection gave.
#[derive(Debug)]
pub enum Got {
    Message(SipText),
    Closed,
    TimedOut,
}

/// Reads whole SIP messages from a TCP connection (Content-Length framing).
pub struct SipStream {
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

impl SipStream {
    pub fn connect(to: SocketAddr, wait: Duration) -> SipStream {
        let tcp = TcpStream::connect_timeout(&to, wait)
            .unwrap_or_else(|e| panic!("cannot connect to verde at {to}: {e}"));
        SipStream {
            tcp,
            buf: Vec::new(),
        }
    }

    pub fn local(&self) -> String {
        self.tcp.local_addr().unwrap().to_string()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).expect("write to verde");
    }

    /// Writes what verde lets through before it closes the connection.
    pub fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.tcp.write_all(bytes);
    }

    /// The next whole message (keep-alive CRLFs skipped), or why there is none within `wait`.
    pub fn next(&mut self, wait: Duration) -> Got {
        let deadline = Instant::now() + wait;
        loop {
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(head) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.buf[..head + 4]).into_owned();
                let len: usize = header_values(&text, "Content-Length", "l")
                    .first()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if self.buf.len() >= head + 4 + len {
                    let m: Vec<u8> = self.buf.drain(..head + 4 + len).collect();
                    return Got::Message(SipText(String::from_utf8_lossy(&m).into_owned()));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Got::TimedOut;
            }
            self.tcp.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.tcp.read(&mut chunk) {
                Ok(0) => return Got::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Got::TimedOut
                }
                Err(_) => return Got::Closed,
            }
        }
    }
}
