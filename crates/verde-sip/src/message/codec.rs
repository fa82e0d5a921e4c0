//! The only module that knows rsip. rsip 0.4 tokenizes (start line, header lines, body) and
//! checks the request line grammar; we turn its borrowed tokens straight into our types,
//! skipping rsip's typed headers (they would allocate a second copy of every header).
//! Swapping the parser means rewriting this file only.

use std::borrow::Cow;

use bytes::Bytes;
use rsip::message::request::Tokenizer as RequestTokens;
use rsip::message::response::Tokenizer as ResponseTokens;
use rsip::message::sip_message::Tokenizer;

use super::framing::find;
use super::headers::canonical;
use super::{Headers, Message, Method, ParseError, Request, Response};

pub(super) fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    // rsip does not understand header folding (RFC 3261 7.3.1); unfold into a copy only when
    // a continuation line is present, which is rare.
    let unfolded = unfold(bytes);
    let bytes = unfolded.as_deref().unwrap_or(bytes);
    let (_, tokens) =
        Tokenizer::tokenize(bytes).map_err(|e| ParseError::Syntax(short(&e.to_string())))?;
    match tokens {
        Tokenizer::Request(t) => request(bytes, t).map(Message::Request),
        Tokenizer::Response(t) => response(t).map(Message::Response),
    }
}

fn request(bytes: &[u8], t: RequestTokens<'_>) -> Result<Request, ParseError> {
    check_version(t.version.major, t.version.minor)?;
    let method = Method::from_token(utf8(t.method.value)?);
    // rsip splits the URI into parts; verde wants it verbatim, so cut it from the request
    // line rsip has just validated: METHOD SP URI SP VERSION.
    let line_end = find(bytes, b"\r\n").unwrap_or(bytes.len());
    let line = utf8(&bytes[..line_end])?;
    let uri = line
        .get(t.method.value.len() + 1..)
        .and_then(|rest| rest.rsplit_once(' '))
        .map(|(uri, _)| uri.trim().to_owned())
        .ok_or_else(|| ParseError::Syntax("request line".into()))?;
    let headers = headers(t.headers)?;
    let body = body(&headers, t.body)?;
    Ok(Request {
        method,
        uri,
        headers,
        body,
    })
}

fn response(t: ResponseTokens<'_>) -> Result<Response, ParseError> {
    check_version(t.version.major, t.version.minor)?;
    let status: u16 = utf8(t.status_code.code)?
        .parse()
        .ok()
        .filter(|s| (100..700).contains(s))
        .ok_or_else(|| ParseError::Syntax("status code".into()))?;
    let reason = utf8(t.status_code.reason)?.trim().to_owned();
    let headers = headers(t.headers)?;
    let body = body(&headers, t.body)?;
    Ok(Response {
        status,
        reason,
        headers,
        body,
    })
}

fn check_version(major: &[u8], minor: &[u8]) -> Result<(), ParseError> {
    if major == b"2" && minor == b"0" {
        Ok(())
    } else {
        Err(ParseError::UnsupportedVersion(format!(
            "SIP/{}.{}",
            String::from_utf8_lossy(major),
            String::from_utf8_lossy(minor)
        )))
    }
}

fn headers(tokens: Vec<rsip::headers::header::Tokenizer<'_>>) -> Result<Headers, ParseError> {
    let mut headers = Headers::with_capacity(tokens.len());
    for h in tokens {
        let name = utf8(h.name)?;
        let name = match canonical(name) {
            Some(full) => Cow::Borrowed(full),
            None => Cow::Owned(name.to_owned()),
        };
        headers.push_raw(name, utf8(h.value)?.trim().to_owned());
    }
    Ok(headers)
}

fn body(headers: &Headers, raw: &[u8]) -> Result<Bytes, ParseError> {
    match headers.content_length() {
        None => Ok(Bytes::copy_from_slice(raw)),
        Some(Err(())) => Err(ParseError::BadContentLength),
        Some(Ok(declared)) if declared > raw.len() => Err(ParseError::TruncatedBody {
            declared,
            actual: raw.len(),
        }),
        Some(Ok(declared)) => Ok(Bytes::copy_from_slice(&raw[..declared])),
    }
}

fn utf8(b: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(b).map_err(|_| ParseError::NotUtf8)
}

fn unfold(bytes: &[u8]) -> Option<Vec<u8>> {
    let head_end = find(bytes, b"\r\n\r\n")?;
    let head = &bytes[..head_end];
    let folded = head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && matches!(head.get(i + 1), Some(b' ' | b'\t')));
    if !folded {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < head.len() {
        if head[i..].starts_with(b"\r\n") && matches!(head.get(i + 2), Some(b' ' | b'\t')) {
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
    out.extend_from_slice(&bytes[head_end..]);
    Some(out)
}

/// rsip errors quote the remaining input; keep reasons to one short line.
fn short(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    line.chars().take(80).collect()
}
