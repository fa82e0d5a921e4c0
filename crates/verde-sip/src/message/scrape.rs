//! A lenient line scraper for requests the real parser rejected. It only needs enough to send
//! a stateless error response back (RFC 3261 8.2.6 needs Via, From, To, Call-ID, CSeq), so the
//! sender learns what was wrong instead of retransmitting into silence.

use bytes::Bytes;

use super::headers::canonical;
use super::{Headers, Response};

/// The fields needed for an error response, as found in the raw bytes.
#[derive(Debug, Default)]
pub(crate) struct Scraped {
    pub method: String,
    pub vias: Vec<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub call_id: Option<String>,
    pub cseq: Option<String>,
}

/// Returns `None` unless the first line looks like a request line.
pub(crate) fn scrape(bytes: &[u8]) -> Option<Scraped> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next()?;
    // A request line that lost its Request-URI ("INVITE SIP/2.0") or has spaces inside it
    // ("INVITE sip:a@b; lr SIP/2.0") still names a method and SIP: worth a 400 so the sender
    // learns what is wrong.
    let parts: Vec<&str> = first.split_whitespace().collect();
    let (method, version) = match parts.as_slice() {
        [m, .., v] => (*m, *v),
        _ => return None,
    };
    if method.starts_with("SIP/") || !version.starts_with("SIP/") {
        return None;
    }
    let mut s = Scraped {
        method: method.to_owned(),
        ..Scraped::default()
    };
    let mut last: Option<(&'static str, String)> = None;
    for line in lines {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = last.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some(prev) = last.take() {
            s.store(prev);
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let Some(name) = canonical(name.trim()) {
            last = Some((name, value.trim().to_owned()));
        }
    }
    if let Some(prev) = last {
        s.store(prev);
    }
    Some(s)
}

impl Scraped {
    fn store(&mut self, (name, value): (&'static str, String)) {
        let slot = match name {
            "Via" => {
                self.vias.push(value);
                return;
            }
            "From" => &mut self.from,
            "To" => &mut self.to,
            "Call-ID" => &mut self.call_id,
            "CSeq" => &mut self.cseq,
            _ => return,
        };
        slot.get_or_insert(value);
    }

    /// The top Via entry text, if any.
    pub fn top_via(&self) -> Option<&str> {
        self.vias.first().map(String::as_str)
    }

    /// An error response, or `None` if a header it must echo is missing.
    pub fn response(&self, status: u16, reason: &str, to_tag: &str) -> Option<Response> {
        if self.vias.is_empty() {
            return None;
        }
        let mut headers = Headers::with_capacity(self.vias.len() + 4);
        for v in &self.vias {
            headers.push("Via", v.clone());
        }
        headers.push("From", self.from.clone()?);
        headers.push("To", self.to.clone()?);
        headers.push("Call-ID", self.call_id.clone()?);
        headers.push("CSeq", self.cseq.clone()?);
        headers.add_to_tag(to_tag);
        Some(Response {
            status,
            reason: reason.to_owned(),
            headers,
            body: Bytes::new(),
        })
    }
}

#[cfg(test)]
mod missing_uri_tests {
    use super::scrape;

    #[test]
    fn a_request_line_without_uri_is_still_scraped() {
        let raw = b"INVITE SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\nCall-ID: a@b\r\nCSeq: 1 INVITE\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\n\r\n";
        let s = scrape(raw).expect("scraped");
        assert_eq!(s.method, "INVITE");
        assert_eq!(s.call_id.as_deref(), Some("a@b"));
        assert!(scrape(b"garbage\r\n\r\n").is_none());
        let spaced = scrape(b"INVITE sip:a@b; lr SIP/2.0\r\nCall-ID: x\r\n\r\n").expect("scraped");
        assert_eq!(spaced.call_id.as_deref(), Some("x"));
        assert!(scrape(b"SIP/2.0 200 OK\r\n\r\n").is_none());
    }
}
