//! REFER (RFC 3515) for transfers started by the peer: reading `Refer-To` and reporting the
//! outcome to the referrer with `message/sipfrag` NOTIFYs in the REFER's dialog.
//!
//! Where the transfer goes (queue, agent, number) is the caller's decision; this module only
//! speaks the protocol.

use crate::dialog::Dialog;
use crate::message::{split_list, split_name_addr, Method, Request};

/// Where the referrer wants the call to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferTo {
    /// The target URI without its embedded headers, e.g. `sip:agent2@verde.example`.
    pub uri: String,
    /// The decoded `Replaces` embedded header of an attended transfer
    /// (`call-id;to-tag=..;from-tag=..`), if any.
    pub replaces: Option<String>,
}

/// Why a REFER cannot be acted on; answer 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferError {
    #[error("REFER has no Refer-To")]
    Missing,
    #[error("REFER has more than one Refer-To")]
    Multiple,
    #[error("Refer-To is not a URI")]
    Malformed,
}

/// Reads the single `Refer-To` (compact `r`) of a REFER.
pub fn refer_to(request: &Request) -> Result<ReferTo, ReferError> {
    let mut entries = request.headers.get_all("Refer-To").flat_map(split_list);
    let entry = entries.next().ok_or(ReferError::Missing)?;
    if entries.next().is_some() {
        return Err(ReferError::Multiple);
    }
    let (uri, _) = split_name_addr(entry);
    let uri = uri.trim();
    let (uri, headers) = uri.split_once('?').unwrap_or((uri, ""));
    match uri.split_once(':') {
        Some((scheme, rest)) if !scheme.is_empty() && !rest.is_empty() => {}
        _ => return Err(ReferError::Malformed),
    }
    let replaces = headers.split('&').find_map(|h| {
        let (name, value) = h.split_once('=')?;
        name.eq_ignore_ascii_case("Replaces")
            .then(|| percent_decode(value))
    });
    Ok(ReferTo {
        uri: uri.to_owned(),
        replaces,
    })
}

impl Dialog {
    /// A NOTIFY telling the referrer how the referred call is going (RFC 3515 2.4.4): the
    /// status line as a `message/sipfrag` body, `Event: refer` (with `;id=` the REFER's CSeq
    /// when `refer_cseq` is given, needed from the second REFER of a dialog on), and
    /// `Subscription-State` active, or terminated once `status` is final.
    pub fn refer_notify(&mut self, refer_cseq: Option<u32>, status: u16, reason: &str) -> Request {
        let event = match refer_cseq {
            Some(id) => format!("refer;id={id}"),
            None => "refer".to_owned(),
        };
        let state = if status >= 200 {
            "terminated;reason=noresource"
        } else {
            "active;expires=60"
        };
        self.request(Method::Notify)
            .with_header("Event", event)
            .with_header("Subscription-State", state)
            .with_body(
                "message/sipfrag;version=2.0",
                format!("SIP/2.0 {status} {reason}\r\n"),
            )
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
