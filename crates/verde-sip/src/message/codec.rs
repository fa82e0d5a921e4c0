//! The only module that knows the wire grammar of a whole message, and the only one that knows
//! rsip. rsip 0.4 tokenizes the common message (start line, header lines, body) and we turn its
//! borrowed tokens straight into our types; but the RFC 4475 torture messages showed it refusing
//! valid messages (whitespace before a header's colon, unusual but legal Request-URIs), so when
//! rsip refuses, or its tokens fail our checks, our own line reader below decides. Our rules
//! apply either way: liberal where RFC 4475 allows it (extra SP between request-line elements,
//! trailing SP, CRLFs before the start line), strict where it requires rejection (whitespace
//! inside the Request-URI, `<>` around it, status codes that are not three digits, conflicting
//! Content-Length values). Swapping rsip out means deleting `via_rsip`.

use std::borrow::Cow;

use bytes::Bytes;

use super::framing::find;
use super::headers::canonical;
use super::syntax::is_token;
use super::{Headers, Message, Method, ParseError, Request, Response};

pub(super) fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    via_rsip(bytes).map_or_else(|| own(bytes), Ok)
}

/// rsip's tokens for a message both it and our rules accept; None leaves the verdict (and the
/// error) to [`own`].
fn via_rsip(bytes: &[u8]) -> Option<Message> {
    use rsip::message::sip_message::Tokenizer;
    // A head with no empty line after it (a truncated datagram) is refused by our reader,
    // whose refusal still echoes From, To, Call-ID and CSeq; rsip would keep only some headers.
    find(bytes, b"\r\n\r\n")?;
    let (_, tokens) = Tokenizer::tokenize(bytes).ok()?;
    let start = strip_cr(&bytes[..find(bytes, b"\r\n")?]);
    // rsip ends lines at CRLF only; a bare LF is a line end to our reader and to `frame`.
    if start.contains(&b'\n') {
        return None;
    }
    let (header_tokens, raw_body) = match &tokens {
        Tokenizer::Request(t) => (&t.headers, t.body),
        Tokenizer::Response(t) => (&t.headers, t.body),
    };
    let mut headers = Headers::with_capacity(header_tokens.len());
    for h in header_tokens {
        // A continuation line (folding) or an odd name: our reader handles those.
        if h.name.is_empty() || !h.name.iter().copied().all(is_token) {
            return None;
        }
        if h.value.contains(&b'\n') {
            return None;
        }
        let name = utf8(h.name).ok()?;
        let name = match canonical(name) {
            Some(full) => Cow::Borrowed(full),
            None => Cow::Owned(name.to_owned()),
        };
        headers.push_raw(name, utf8(trim(h.value)).ok()?.to_owned());
    }
    let body = body(&headers, raw_body).ok()?;
    Some(match tokens {
        Tokenizer::Request(_) => {
            let (method, uri) = request_line(start).ok()?;
            // rsip reads any other scheme up to the next "://" in the whole message, swallowing
            // header lines on the way: those URIs are ours to read.
            if !super::syntax::scheme(&uri)
                .is_some_and(|s| ["sip", "sips"].iter().any(|k| s.eq_ignore_ascii_case(k)))
            {
                return None;
            }
            Message::Request(Request {
                method,
                uri,
                headers,
                body,
            })
        }
        Tokenizer::Response(_) => {
            let (status, reason) = status_line(start).ok()?;
            Message::Response(Response {
                status,
                reason,
                headers,
                body,
            })
        }
    })
}

/// Our own line reader: the verdict on everything rsip does not take.
fn own(bytes: &[u8]) -> Result<Message, ParseError> {
    // RFC 3261 7.5: CRLFs before the start line are ignored (keep-alives, sloppy senders).
    let skip = bytes
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let bytes = &bytes[skip..];
    let head_end =
        find(bytes, b"\r\n\r\n").ok_or_else(|| syntax("no empty line after the headers"))?;
    let raw_body = &bytes[head_end + 4..];
    let head = unfold(&bytes[..head_end]);
    let mut lines = head.split(|&b| b == b'\n').map(strip_cr);
    let start = lines.next().unwrap_or_default();
    let headers = headers(lines)?;
    let body = body(&headers, raw_body)?;
    if start.starts_with(b"SIP/") || start.starts_with(b"sip/") {
        let (status, reason) = status_line(start)?;
        Ok(Message::Response(Response {
            status,
            reason,
            headers,
            body,
        }))
    } else {
        let (method, uri) = request_line(start)?;
        Ok(Message::Request(Request {
            method,
            uri,
            headers,
            body,
        }))
    }
}

/// `Method SP Request-URI SP SIP-Version`. Runs of whitespace between the elements and after
/// the version are tolerated (RFC 4475 3.1.2.9/3.1.2.10 allow it); a fourth element means
/// whitespace inside the Request-URI, which must be refused (3.1.2.8).
fn request_line(line: &[u8]) -> Result<(Method, String), ParseError> {
    let line = utf8(line)?;
    let parts: Vec<&str> = line.split([' ', '\t']).filter(|p| !p.is_empty()).collect();
    let [method, uri, version] = parts[..] else {
        return Err(syntax("request line is not METHOD URI SIP/2.0"));
    };
    check_version(version)?;
    if !method.bytes().all(is_token) {
        return Err(syntax("method is not a token"));
    }
    if !is_request_uri(uri) {
        return Err(syntax("invalid Request-URI"));
    }
    Ok((Method::from_token(method), uri.to_owned()))
}

/// `SIP-Version SP Status-Code SP Reason-Phrase`; the code is exactly three digits.
fn status_line(line: &[u8]) -> Result<(u16, String), ParseError> {
    let line = utf8(line)?;
    let (version, rest) = line.split_once(' ').unwrap_or((line, ""));
    check_version(version)?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let status = (code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .then(|| code.parse::<u16>().ok())
        .flatten()
        .filter(|s| (100..700).contains(s))
        .ok_or_else(|| syntax("status code"))?;
    Ok((status, reason.trim().to_owned()))
}

fn check_version(version: &str) -> Result<(), ParseError> {
    let Some(number) = version
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("SIP/"))
        .map(|_| &version[4..])
    else {
        return Err(syntax("SIP version"));
    };
    match number.split_once('.') {
        Some(("2", "0")) => Ok(()),
        Some((major, minor))
            if !major.is_empty()
                && !minor.is_empty()
                && major
                    .bytes()
                    .chain(minor.bytes())
                    .all(|b| b.is_ascii_digit()) =>
        {
            Err(ParseError::UnsupportedVersion(format!("SIP/{number}")))
        }
        _ => Err(syntax("SIP version")),
    }
}

/// An absolute URI (RFC 3986 scheme, then characters a URI may hold). Angle brackets,
/// quotes and whitespace mean the sender wrote a name-addr or broke the line.
fn is_request_uri(uri: &str) -> bool {
    let Some((_, rest)) = uri.split_once(':') else {
        return false;
    };
    super::syntax::scheme(uri).is_some()
        && !rest.is_empty()
        && rest.chars().all(|c| {
            c.is_ascii_graphic()
                && !matches!(c, '<' | '>' | '"' | '\\' | '^' | '`' | '{' | '}' | '|')
        })
}

fn headers<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Result<Headers, ParseError> {
    let mut headers = Headers::with_capacity(16);
    for line in lines {
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| syntax("header line without a colon"))?;
        // RFC 3261 7.3.1: whitespace may precede the colon (`Via  : ...`).
        let name = trim(&line[..colon]);
        if name.is_empty() || !name.iter().copied().all(is_token) {
            return Err(syntax("invalid header name"));
        }
        let name = utf8(name)?;
        let name = match canonical(name) {
            Some(full) => Cow::Borrowed(full),
            None => Cow::Owned(name.to_owned()),
        };
        let value = utf8(trim(&line[colon + 1..]))?;
        headers.push_raw(name, value.to_owned());
    }
    Ok(headers)
}

fn body(headers: &Headers, raw: &[u8]) -> Result<Bytes, ParseError> {
    // Several Content-Length lines that disagree leave no way to frame the body (RFC 4475
    // 3.3.9); repeated equal values are harmless.
    let mut declared = None;
    for value in headers.get_all("Content-Length") {
        let n = value
            .trim()
            .parse::<usize>()
            .map_err(|_| ParseError::BadContentLength)?;
        if declared.is_some_and(|d| d != n) {
            return Err(ParseError::BadContentLength);
        }
        declared = Some(n);
    }
    match declared {
        // Datagrams without Content-Length: the body is the rest (RFC 3261 18.3).
        None => Ok(Bytes::copy_from_slice(raw)),
        Some(declared) if declared > raw.len() => Err(ParseError::TruncatedBody {
            declared,
            actual: raw.len(),
        }),
        Some(declared) => Ok(Bytes::copy_from_slice(&raw[..declared])),
    }
}

fn syntax(what: &str) -> ParseError {
    ParseError::Syntax(what.to_owned())
}

fn utf8(b: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(b).map_err(|_| ParseError::NotUtf8)
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().take_while(|c| matches!(c, b' ' | b'\t')).count();
    let end = b.len()
        - b[start..]
            .iter()
            .rev()
            .take_while(|c| matches!(c, b' ' | b'\t'))
            .count();
    &b[start..end]
}

/// Joins continuation lines (CRLF followed by SP/HT) into their header with one SP
/// (RFC 3261 7.3.1). Borrowed when nothing is folded, which is the common case.
fn unfold(head: &[u8]) -> Cow<'_, [u8]> {
    let folded = head
        .windows(3)
        .any(|w| w[0] == b'\r' && w[1] == b'\n' && matches!(w[2], b' ' | b'\t'));
    if !folded {
        return Cow::Borrowed(head);
    }
    let mut out = Vec::with_capacity(head.len());
    let mut i = 0;
    while i < head.len() {
        if head[i..].starts_with(b"\r\n") && matches!(head.get(i + 2), Some(b' ' | b'\t')) {
            // Whitespace already before the fold counts once, like the fold itself.
            while matches!(out.last(), Some(b' ' | b'\t')) {
                out.pop();
            }
            out.push(b' ');
            i += 2;
            while matches!(head.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
        } else {
            out.push(head[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsip_takes_the_common_message_and_both_readers_agree() {
        let invite = crate::testdata::invite("z9hG4bK-common", "common@host");
        let fast = via_rsip(invite.as_bytes()).expect("rsip tokenizes an ordinary INVITE");
        assert_eq!(fast, own(invite.as_bytes()).unwrap());
        // Whitespace before a colon is legal (RFC 3261 7.3.1) and rsip refuses it: ours reads it.
        let spaced = invite.replacen("Max-Forwards:", "Max-Forwards  :", 1);
        assert!(via_rsip(spaced.as_bytes()).is_none());
        assert!(matches!(parse(spaced.as_bytes()), Ok(Message::Request(_))));
    }

    #[test]
    fn request_line_tolerates_extra_spaces_but_not_spaces_in_the_uri() {
        assert!(request_line(b"INVITE  sip:a@b  SIP/2.0").is_ok());
        assert!(request_line(b"OPTIONS sip:a@b SIP/2.0  ").is_ok());
        assert_eq!(
            request_line(b"INVITE sip:a@b; lr SIP/2.0"),
            Err(syntax("request line is not METHOD URI SIP/2.0"))
        );
        assert_eq!(
            request_line(b"INVITE <sip:a@b> SIP/2.0"),
            Err(syntax("invalid Request-URI"))
        );
        assert_eq!(
            request_line(b"INVITE sip:a@b SIP/7.0"),
            Err(ParseError::UnsupportedVersion("SIP/7.0".into()))
        );
        assert_eq!(
            request_line(b"INV(ITE sip:a@b SIP/2.0"),
            Err(syntax("method is not a token"))
        );
    }

    #[test]
    fn status_codes_are_three_digits() {
        assert_eq!(status_line(b"SIP/2.0 100 ").unwrap(), (100, String::new()));
        assert_eq!(status_line(b"SIP/2.0 180").unwrap(), (180, String::new()));
        assert!(status_line(b"SIP/2.0 4294967301 big").is_err());
        assert!(status_line(b"SIP/2.0 099 low").is_err());
        assert!(status_line(b"SIP/2.0 20 short").is_err());
    }

    #[test]
    fn folding_collapses_to_one_space() {
        let head = b"A: x  \r\n   y\r\nB: z";
        assert_eq!(&unfold(head)[..], b"A: x y\r\nB: z");
        assert!(matches!(unfold(b"A: x\r\nB: y"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_bare_lf_ends_a_header_line_as_in_framing() {
        // Found by fuzz/ (sip_message): rsip kept "\nl:" as the value of `o` (Event) and read a
        // message with no empty line; re-serialized, the LF became a line of its own.
        let msg = b"S i:u SIP/2.0\r\no:\nl:\r\n";
        assert!(via_rsip(msg).is_none());
        assert!(parse(msg).is_err());
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nTo: <sip:a@b>\nl: 0\r\n\r\nabc";
        let Ok(Message::Request(req)) = parse(msg) else {
            panic!("a bare LF between headers is tolerated");
        };
        assert_eq!(req.headers.get("To"), Some("<sip:a@b>"));
        assert!(req.body.is_empty(), "l: 0 is a header, not part of To");
        // The same in the status line: the reason phrase ends at the LF.
        let msg = b"SIP/2.0 100 Trying\nl: 0\r\n\r\nabc";
        let Ok(Message::Response(resp)) = parse(msg) else {
            panic!("a bare LF after the status line is tolerated");
        };
        assert_eq!(resp.reason, "Trying");
        assert!(resp.body.is_empty());
    }

    #[test]
    fn rsip_does_not_read_past_the_request_line_of_a_non_sip_uri() {
        // Found by fuzz/ (sip_message): rsip took "s:5060 SIP/2.0\r\nSubject: " as the scheme
        // of a URI ending at the "://" of the next line, and the Subject header was lost.
        let msg = b"OPTIONS s:5060 SIP/2.0\r\nSubject: ://2 SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        assert!(via_rsip(msg).is_none());
        let Ok(Message::Request(req)) = parse(msg) else {
            panic!("an unknown URI scheme is still a request");
        };
        assert_eq!(req.uri, "s:5060");
        assert_eq!(req.headers.get("Subject"), Some("://2 SIP/2.0"));
        let tel =
            b"INVITE tel:+39800123456 SIP/2.0\r\nCall-Info: <http://x> SIP/2.0\r\nl: 0\r\n\r\n";
        let Ok(Message::Request(req)) = parse(tel) else {
            panic!("a tel: request parses");
        };
        assert_eq!(req.headers.get("Call-Info"), Some("<http://x> SIP/2.0"));
    }

    #[test]
    fn conflicting_content_lengths_are_refused() {
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 3\r\nl: 3\r\n\r\nabc";
        assert!(parse(msg).is_ok());
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 3\r\nl: 2\r\n\r\nabc";
        assert_eq!(parse(msg), Err(ParseError::BadContentLength));
    }
}
