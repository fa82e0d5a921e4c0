//! A minimal HTTP/1.1 client over `std::net::TcpStream`, enough for verde's JSON API
//! (`/health`, `/api/calls`, `/api/callbacks`). [`get`] and [`post_json`] make one request per
//! connection (`Connection: close`); [`Connection`] keeps one open for many requests, for tests
//! that send a thousand.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("body is not JSON ({e}): {}", self.text()))
    }
}

/// `GET path` on `addr`. Errors are strings that say what failed, for failure messages.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<HttpResponse, String> {
    get_with_headers(addr, path, "Accept: application/json\r\n", timeout)
}

/// `GET path` with a CTI token as bearer (supervisors' reports and exports).
pub fn get_authorized(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    get_with_headers(addr, path, &auth, timeout)
}

fn get_with_headers(
    addr: SocketAddr,
    path: &str,
    headers: &str,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to http://{addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("send GET {path}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read response to GET {path}: {e}"))?;
    parse_response(&raw).map_err(|e| format!("GET {path}: {e}"))
}

/// `POST path` with a JSON body on `addr`.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to http://{addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    stream
        .write_all(&request_bytes(addr, "POST", path, Some(body), false))
        .map_err(|e| format!("send POST {path}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read response to POST {path}: {e}"))?;
    parse_response(&raw).map_err(|e| format!("POST {path}: {e}"))
}

fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    keep_alive: bool,
) -> Vec<u8> {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let typed = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/json\r\n".to_string()
    };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n{typed}\
         Content-Length: {}\r\nConnection: {conn}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One HTTP/1.1 connection kept open across requests (keep-alive), reopened if the server
/// closed it between two requests.
pub struct Connection {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Connection {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Connection {
        Connection {
            addr,
            timeout,
            stream: None,
            buf: Vec::new(),
        }
    }

    pub fn post_json(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<HttpResponse, String> {
        self.request("POST", path, Some(body))
    }

    pub fn get(&mut self, path: &str) -> Result<HttpResponse, String> {
        self.request("GET", path, None)
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<HttpResponse, String> {
        let req = request_bytes(self.addr, method, path, body, true);
        // A server may close an idle keep-alive connection: one retry on a fresh one, only when
        // nothing at all came back (so a request is never sent twice after a response).
        let reused = self.stream.is_some();
        match self.try_request(&req) {
            Ok(r) => Ok(r),
            Err((e, nothing_received)) if reused && nothing_received => {
                self.stream = None;
                self.try_request(&req)
                    .map_err(|(e2, _)| format!("{method} {path}: {e}; on a new connection: {e2}"))
            }
            Err((e, _)) => {
                self.stream = None;
                Err(format!("{method} {path}: {e}"))
            }
        }
    }

    fn try_request(&mut self, req: &[u8]) -> Result<HttpResponse, (String, bool)> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)
                .map_err(|e| (format!("connect to http://{}: {e}", self.addr), false))?;
            s.set_read_timeout(Some(self.timeout)).ok();
            s.set_write_timeout(Some(self.timeout)).ok();
            s.set_nodelay(true).ok();
            self.stream = Some(s);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream
            .write_all(req)
            .map_err(|e| (format!("send: {e}"), true))?;
        loop {
            if let Some(len) = complete_length(&self.buf).map_err(|e| (e, false))? {
                let resp = parse_response(&self.buf[..len]).map_err(|e| (e, false))?;
                self.buf.drain(..len);
                if resp
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    self.stream = None;
                }
                return Ok(resp);
            }
            let mut chunk = [0u8; 16384];
            let n = stream
                .read(&mut chunk)
                .map_err(|e| (format!("read: {e}"), self.buf.is_empty()))?;
            if n == 0 {
                return Err((
                    format!("connection closed after {} bytes", self.buf.len()),
                    self.buf.is_empty(),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The length of the first complete response in `raw` (`None` while incomplete), for
/// responses framed by Content-Length or chunked encoding.
fn complete_length(raw: &[u8]) -> Result<Option<usize>, String> {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let body_start = head_end + 4;
    if head.contains("transfer-encoding: chunked") {
        return Ok(raw[body_start..]
            .windows(5)
            .position(|w| w == b"0\r\n\r\n")
            .map(|i| body_start + i + 5));
    }
    let len = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>())
        .transpose()
        .map_err(|_| "bad Content-Length".to_string())?
        .ok_or("a keep-alive response without Content-Length or chunked encoding")?;
    Ok((raw.len() >= body_start + len).then_some(body_start + len))
}

/// Parses a complete HTTP/1.1 response (Content-Length, chunked, or read-to-close bodies).
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[head_end + 4..];
    let resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let body = if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        dechunk(rest)?
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        if rest.len() < len {
            return Err(format!("body truncated: {} of {len} bytes", rest.len()));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse { body, ..resp })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line not terminated")?;
        let size_txt = String::from_utf8_lossy(&data[..line_end]);
        let size_txt = size_txt.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_txt, 16)
            .map_err(|_| format!("bad chunk size {size_txt:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("chunk truncated".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_body() {
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}extra",
        )
        .unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.body, b"{}");
        assert_eq!(r.header("Content-Type"), Some("application/json"));
    }

    #[test]
    fn parses_chunked_body() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[1,2\r\n2;x=y\r\n,3\r\n1\r\n]\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.json().unwrap(), serde_json::json!([1, 2, 3]));
    }

    #[test]
    fn complete_length_waits_for_the_whole_body() {
        let r = b"HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\n{\"a\"";
        assert_eq!(complete_length(&r[..r.len() - 1]).unwrap(), None);
        assert_eq!(complete_length(r).unwrap(), Some(r.len()));
        let mut two = r.to_vec();
        two.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(complete_length(&two).unwrap(), Some(r.len()));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n";
        assert_eq!(complete_length(chunked).unwrap(), Some(chunked.len()));
        assert!(complete_length(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_response(b"SIP/2.0 200 OK\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
    }
}
