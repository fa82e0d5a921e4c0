//! Offer clean-up before rtc sees it.
//!
//! rtc 0.21.1 matches an offered codec to a registered one by MIME type and fmtp only, not by
//! clock rate. Browsers offer telephone-event once per audio rate (Chrome: 110 at 48 kHz,
//! 126 at 8 kHz); both match our telephone-event/8000, and the answer then names the 48 kHz
//! one, twice, so the browser (which sends events at its send codec's rate) has no 8 kHz
//! telephone-event for G.711 and cannot send RFC 4733 digits at all. We only ever take
//! 8 kHz events, so dropping the others from the offer is what our answer would say anyway.

/// Removes every `telephone-event` whose clock rate is not 8000 from the audio sections.
pub(crate) fn keep_8k_telephone_events(sdp: &str) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = sdp.lines().collect();
    let mut drop: Vec<String> = Vec::new();
    for line in &lines {
        if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            let mut parts = rest.splitn(2, ' ');
            let (Some(pt), Some(enc)) = (parts.next(), parts.next()) else {
                continue;
            };
            let mut enc = enc.split('/');
            let name = enc.next().unwrap_or("");
            let rate = enc.next().unwrap_or("");
            if name.eq_ignore_ascii_case("telephone-event") && rate != "8000" {
                drop.push(pt.to_owned());
            }
        }
    }
    if drop.is_empty() {
        return sdp.to_owned();
    }
    let names_dropped = |attr: &str| {
        // a=rtpmap:PT ..., a=fmtp:PT ..., a=rtcp-fb:PT ...
        ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"].iter().any(|prefix| {
            attr.strip_prefix(prefix)
                .and_then(|rest| rest.split(' ').next())
                .is_some_and(|pt| drop.iter().any(|d| d == pt))
        })
    };
    let mut out = String::with_capacity(sdp.len());
    for line in lines {
        if names_dropped(line) {
            continue;
        }
        if let Some(rest) = line.strip_prefix("m=audio ") {
            // m=audio <port> <proto> <fmt>...
            let mut fields = rest.split(' ');
            let port = fields.next().unwrap_or("");
            let proto = fields.next().unwrap_or("");
            let fmts: Vec<&str> = fields.filter(|f| !drop.iter().any(|d| d == f)).collect();
            out.push_str(&format!("m=audio {port} {proto} {}", fmts.join(" ")));
        } else {
            out.push_str(line);
        }
        out.push_str(eol);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_48k_events_and_keeps_8k() {
        let sdp =
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0 110 126\r\na=rtpmap:111 opus/48000/2\r\n\
a=rtpmap:0 PCMU/8000\r\na=rtpmap:110 telephone-event/48000\r\na=fmtp:110 0-15\r\n\
a=rtpmap:126 telephone-event/8000\r\n";
        let out = keep_8k_telephone_events(sdp);
        assert!(
            out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111 0 126\r\n"),
            "{out}"
        );
        assert!(!out.contains(":110 "), "{out}");
        assert!(out.contains("a=rtpmap:126 telephone-event/8000\r\n"));
        assert!(out.contains("a=rtpmap:111 opus/48000/2\r\n"));
    }

    #[test]
    fn untouched_without_foreign_events() {
        let sdp = "v=0\nm=audio 9 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\n";
        assert_eq!(keep_8k_telephone_events(sdp), sdp);
    }
}
