//! Strict checks of the header values a server must understand before it answers: From, To,
//! Contact (RFC 3261 20.10 name-addr / addr-spec) and Via. The accessors elsewhere are
//! deliberately forgiving; these decide whether a request is refused with 400, so a value
//! the accessors would misread (an unterminated quote, a URI broken by spaces) is caught
//! before anyone acts on it.

use super::split_list;

/// `name-addr` (`["display name"] <uri> *(;param)`) or `addr-spec` (`uri *(;param)`).
pub(crate) fn name_addr_is_valid(value: &str) -> bool {
    let value = value.trim();
    let (uri, params) = if let Some(rest) = value.strip_prefix('"') {
        // A quoted display name must end, and only LWS may separate it from `<`.
        let Some(end) = quoted_end(rest) else {
            return false;
        };
        match rest[end..].trim_start().strip_prefix('<') {
            Some(inner) => match inner.split_once('>') {
                Some(parts) => parts,
                None => return false,
            },
            None => return false,
        }
    } else if let Some(lt) = value.find('<') {
        // An unquoted display name is tokens separated by LWS: `Bell, Alexander` is not.
        let display = &value[..lt];
        if !display
            .bytes()
            .all(|b| is_token(b) || b == b' ' || b == b'\t')
        {
            return false;
        }
        match value[lt + 1..].split_once('>') {
            Some(parts) => parts,
            None => return false,
        }
    } else {
        // Without brackets a URI may not hold `,`, `?` or `;` (RFC 3261 20): what follows
        // the first `;` are header parameters.
        let (uri, params) = match value.find(';') {
            Some(i) => (&value[..i], &value[i..]),
            None => (value, ""),
        };
        let uri = uri.trim_end();
        if uri.contains([',', '?']) {
            return false;
        }
        (uri, params)
    };
    uri_is_plausible(uri) && params_are_valid(params)
}

/// Every Contact entry of a header value (`*` alone is valid).
pub(crate) fn contact_is_valid(value: &str) -> bool {
    if value.trim() == "*" {
        return true;
    }
    no_empty_elements(value) && split_list(value).all(name_addr_is_valid)
}

/// Every entry of a Via header value: `SIP/2.0/transport sent-by *(;param)`, no empty
/// list elements or parameters (`;;,;,,` in RFC 4475 3.1.2.1).
pub(crate) fn via_is_valid(value: &str) -> bool {
    no_empty_elements(value)
        && split_list(value).all(|entry| {
            let Some(via) = super::Via::parse(entry) else {
                return false;
            };
            // The parameters as written, leading `;` included.
            let params = entry.find(';').map_or("", |i| &entry[i..]);
            !via.transport.is_empty() && params_are_valid(params)
        })
}

/// The scheme of a URI, lower-cased comparison left to the caller.
pub(crate) fn scheme(uri: &str) -> Option<&str> {
    let (scheme, _) = uri.trim().split_once(':')?;
    let mut chars = scheme.chars();
    (chars.next()?.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

fn uri_is_plausible(uri: &str) -> bool {
    scheme(uri).is_some()
        && !uri
            .chars()
            .any(|c| c.is_whitespace() || c == '<' || c == '"')
}

/// `*(SEMI param)` where a param is `token [EQUAL (token / host / quoted-string)]`, LWS
/// allowed around `;` and `=`.
fn params_are_valid(params: &str) -> bool {
    let params = params.trim();
    if params.is_empty() {
        return true;
    }
    let Some(rest) = params.strip_prefix(';') else {
        return false;
    };
    split_outside_quotes(rest, ';').into_iter().all(|p| {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (p.trim(), None),
        };
        !name.is_empty()
            && name.bytes().all(is_token)
            && value.is_none_or(|v| match v.strip_prefix('"') {
                Some(q) => quoted_end(q).is_some_and(|end| q[end..].trim().is_empty()),
                None => !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '"'),
            })
    })
}

/// After an opening quote, the byte index just past the closing quote (quoted-pairs skipped).
fn quoted_end(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i + 1),
            _ => {}
        }
    }
    None
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut in_quotes, mut escaped, mut start) = (false, false, 0);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c == sep && !in_quotes => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A comma-separated list with no empty element (`a,,b` or a trailing comma).
fn no_empty_elements(value: &str) -> bool {
    let mut depth_quote = false;
    let mut in_angle = false;
    let mut escaped = false;
    let mut seen_content = false;
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if depth_quote => escaped = true,
            '"' => depth_quote = !depth_quote,
            '<' if !depth_quote => in_angle = true,
            '>' if !depth_quote => in_angle = false,
            ',' if !depth_quote && !in_angle => {
                if !seen_content {
                    return false;
                }
                seen_content = false;
                continue;
            }
            _ => {}
        }
        if !c.is_whitespace() {
            seen_content = true;
        }
    }
    seen_content
}

/// RFC 3261 25.1 `token` characters.
pub(super) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_forms() {
        for ok in [
            "sip:a@b",
            "<sip:a@b>;tag=1",
            "\"A \\\"B\\\"\" <sip:a@b> ; tag = 9",
            "caller<sip:caller@example.com>;tag=323",
            "token1~` token2'+_ <sip:m@e>;p''~=\"x;y\";tag=_t",
            "sip:a@b ;   tag    = 1918181833n",
            "<sip:a@b;transport=udp>;+sip.instance=\"<urn:uuid:1>\";expires=60",
            "isbn:2983792873",
        ] {
            assert!(name_addr_is_valid(ok), "{ok}");
        }
        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>",
            "Bell, Alexander <sip:a@b>;tag=43",
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "\"Joe\" <sip:joe@example.org>;;;;",
            "<sip:a@b",
            "no-scheme",
        ] {
            assert!(!name_addr_is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn via_lists() {
        assert!(via_is_valid(
            "SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bK1;rport"
        ));
        assert!(via_is_valid(
            "SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8  , SIP / 2.0 / UDP 192.168.255.111 ; branch= z9hG4bK30239"
        ));
        assert!(!via_is_valid("SIP/2.0/UDP 192.0.2.15;;,;,,"));
        assert!(!via_is_valid("SIP/2.0/UDP 1.2.3.4;branch=x,"));
        assert!(!via_is_valid("garbage"));
    }

    #[test]
    fn contacts() {
        assert!(contact_is_valid("*"));
        assert!(contact_is_valid("<sip:a@b>, \"X, Y\" <sip:c@d>;q=0.5"));
        assert!(!contact_is_valid("\"Joe\" <sip:joe@example.org>;;;;"));
        assert!(!contact_is_valid("<sip:a@b>,,<sip:c@d>"));
    }
}
