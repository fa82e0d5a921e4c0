//! verde's own SIP message type.
//!
//! Parsing the wire grammar of a whole message is `codec.rs`'s job (rsip's tokenizer, and our
//! own reader for the valid RFC 4475 messages rsip refuses); header values are read lazily by the accessors and
//! checked strictly by `syntax.rs` where a server must refuse them.

mod codec;
mod framing;
mod headers;
pub(crate) mod scrape;
pub(crate) mod syntax;
mod via;

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;

pub use framing::{frame, Frame, FrameError};
pub use headers::Headers;
pub(crate) use via::split_host_port;
pub use via::Via;

/// Why bytes could not be turned into a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The start line or a header line does not follow the SIP grammar.
    #[error("malformed message: {0}")]
    Syntax(String),
    /// A header name or value (or the start line) is not UTF-8.
    #[error("header is not valid UTF-8")]
    NotUtf8,
    /// The start line names a SIP version other than 2.0.
    #[error("unsupported SIP version {0}")]
    UnsupportedVersion(String),
    /// Content-Length is not a number.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// Fewer body bytes arrived than Content-Length announces (a truncated UDP datagram).
    #[error("body truncated: Content-Length {declared}, {actual} bytes received")]
    TruncatedBody { declared: usize, actual: usize },
}

/// The transport a message came in on or goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    /// TCP under TLS (RFC 3261 26.2): framed and timed like TCP.
    Tls,
}

impl Transport {
    /// Whether the transport itself retransmits (RFC 3261 17: no A/E/G, zero D/I/J/K).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }

    /// The token used in Via headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The port a URI without one means on this transport (RFC 3263: 5061 for TLS).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            Transport::Udp | Transport::Tcp => 5060,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The far end of a message: where it came from or where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// A SIP method. Method names are case-sensitive (RFC 3261 7.1), so `invite` is `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Prack,
    Refer,
    Notify,
    Subscribe,
    Message,
    Publish,
    Other(String),
}

impl Method {
    /// Maps a method token to a `Method`; unknown tokens become `Other`.
    pub fn from_token(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SIP request. `uri` is kept as text: verde routes on it, it never rewrites it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: String,
    pub headers: Headers,
    pub body: Bytes,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Bytes,
}

/// Either kind of SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

/// Header accessors shared by requests, responses and messages; they forward to [`Headers`].
macro_rules! header_accessors {
    () => {
        /// The Call-ID header value.
        pub fn call_id(&self) -> Option<&str> {
            self.headers().call_id()
        }
        /// The CSeq number and method, if the header is well formed.
        pub fn cseq(&self) -> Option<(u32, Method)> {
            self.headers().cseq()
        }
        /// The first Via entry (the one added by the previous hop).
        pub fn top_via(&self) -> Option<Via> {
            self.headers().top_via()
        }
        /// The `tag` parameter of From.
        pub fn from_tag(&self) -> Option<&str> {
            self.headers().from_tag()
        }
        /// The `tag` parameter of To.
        pub fn to_tag(&self) -> Option<&str> {
            self.headers().to_tag()
        }
        /// The URI of the first Contact.
        pub fn contact_uri(&self) -> Option<&str> {
            self.headers().contact_uri()
        }
        /// The Content-Type header value.
        pub fn content_type(&self) -> Option<&str> {
            self.headers().content_type()
        }
    };
}

impl Request {
    /// A request with no headers and an empty body.
    pub fn new(method: Method, uri: impl Into<String>) -> Request {
        Request {
            method,
            uri: uri.into(),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    header_accessors!();

    /// Appends a header (e.g. `Call-Info: <sip:verde>;answer-after=0` on an INVITE to an
    /// agent's phone).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push(name.into(), value.into());
        self
    }

    /// Sets the body and its Content-Type.
    pub fn with_body(mut self, content_type: &str, body: impl Into<Bytes>) -> Request {
        self.headers.set("Content-Type", content_type);
        self.body = body.into();
        self
    }

    /// Builds a response per RFC 3261 8.2.6: copies every Via (in order), From, To, Call-ID and
    /// CSeq, and for 101–299 answers to INVITE also Record-Route (12.1.1), so a dialog can form.
    /// The To tag is not added here: use [`Response::with_to_tag`], because the tag belongs to
    /// the dialog, not to the response.
    pub fn response(&self, status: u16, reason: impl Into<String>) -> Response {
        let mut headers = Headers::with_capacity(8);
        for (name, value) in self.headers.iter() {
            let copy = match headers::canonical(name) {
                Some("Via" | "From" | "To" | "Call-ID" | "CSeq") => true,
                Some("Record-Route") => {
                    self.method == Method::Invite && (101..=299).contains(&status)
                }
                _ => false,
            };
            if copy {
                headers.push(name.to_owned(), value.to_owned());
            }
        }
        Response {
            status,
            reason: reason.into(),
            headers,
            body: Bytes::new(),
        }
    }

    /// Serializes with a Content-Length computed from the body.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(256 + self.headers.approx_len() + self.body.len());
        self.write_to(&mut out);
        out.into()
    }

    /// Appends the wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.uri.as_bytes());
        out.extend_from_slice(b" SIP/2.0\r\n");
        write_headers_and_body(&self.headers, &self.body, out);
    }
}

impl Response {
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    header_accessors!();

    /// Adds `;tag=` to To unless it already carries one (a retransmitted or forked answer
    /// keeps the tag it was first sent with).
    pub fn with_to_tag(mut self, tag: &str) -> Response {
        self.headers.add_to_tag(tag);
        self
    }

    /// Appends a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Response {
        self.headers.push(name.into(), value.into());
        self
    }

    /// Sets the body and its Content-Type.
    pub fn with_body(mut self, content_type: &str, body: impl Into<Bytes>) -> Response {
        self.headers.set("Content-Type", content_type);
        self.body = body.into();
        self
    }

    /// 1xx.
    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Serializes with a Content-Length computed from the body.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(64 + self.headers.approx_len() + self.body.len());
        self.write_to(&mut out);
        out.into()
    }

    /// Appends the wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        // write! into a Vec cannot fail.
        let _ = write!(out, "SIP/2.0 {} ", self.status);
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        write_headers_and_body(&self.headers, &self.body, out);
    }
}

impl Message {
    /// Parses one complete message (for TCP, cut it out with [`frame`] first).
    ///
    /// Checks Content-Length against the body: a shorter body is [`ParseError::TruncatedBody`],
    /// extra bytes after the announced length are dropped (RFC 3261 18.3).
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        codec::parse(bytes)
    }

    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    header_accessors!();

    pub fn to_bytes(&self) -> Bytes {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

fn write_headers_and_body(headers: &Headers, body: &[u8], out: &mut Vec<u8>) {
    for (name, value) in headers.iter() {
        // Content-Length is always recomputed from the body, so a stale one never goes out.
        if headers::canonical(name) == Some("Content-Length") {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
}

/// Splits a header value at commas that are outside quotes and `<...>` (RFC 3261 7.3.1
/// allows several Via/Route/Contact entries on one line).
pub(crate) fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut in_quotes, mut in_angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ',' if !in_quotes && !in_angle => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts.into_iter().filter(|p| !p.is_empty())
}

/// Splits a name-addr / addr-spec header value (From, To, Contact, Route) into its URI and the
/// header parameters that follow it.
pub(crate) fn split_name_addr(value: &str) -> (&str, &str) {
    let value = value.trim();
    let mut in_quotes = false;
    for (i, c) in value.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => {
                let rest = &value[i + 1..];
                return match rest.find('>') {
                    Some(end) => (&rest[..end], &rest[end + 1..]),
                    None => (rest, ""),
                };
            }
            _ => {}
        }
    }
    // Without angle brackets, parameters after the URI belong to the header (RFC 3261 20).
    match value.find(';') {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, ""),
    }
}

/// Finds `name` in a `;a=b;c` parameter list (case-insensitive name). Valueless parameters
/// return `Some("")`.
pub(crate) fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').find_map(|p| {
        let p = p.trim();
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests;
