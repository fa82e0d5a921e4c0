//! Offer clean-up before rtc sees it.
//!
//! rtc 0.21.1 matches an offered codec to a registered one by MIME type and fmtp only, not by
//! clock rate. Browsers offer telephone-event once per audio rate (Chrome: 110 at 48 kHz,
//! 126 at 8 kHz); both match our telephone-event, and the answer then names one of them
//! twice, so the browser (which sends events at its send codec's rate) may find no
//! telephone-event at the rate of the codec it sends and cannot send RFC 4733 digits at all.
//! The codec the answer will lead with is already known from the offer (the first one we
//! accept, in the offer's order), so we keep only the telephone-event at that codec's clock
//! rate: 8 kHz for G.711, 48 kHz for Opus. That is what our answer would say anyway.
//!
//! rtc answers with the first offered codec it accepts, so a browser's preference (Chrome: Opus
//! first) would win over ours and every call would be transcoded. [`prefer`] puts our codecs
//! first on the audio line, in our order, before rtc reads it: with `[pcmu, pcma, opus]` G.711
//! flows end to end and Opus is only for a browser that offers nothing else.

use crate::AudioCodec;

/// The codec an audio format names in this SDP, if it is one we know.
/// Every `a=rtpmap` of the SDP by payload type (the first one wins, as a lookup by line
/// would), read once: a hostile 64 KiB offer with thousands of formats must cost one pass,
/// not one pass per format (found by timing fuzz inputs).
fn rtpmaps(sdp: &str) -> std::collections::HashMap<&str, &str> {
    let mut maps = std::collections::HashMap::new();
    for l in sdp.lines() {
        if let Some((p, enc)) = l.strip_prefix("a=rtpmap:").and_then(|r| r.split_once(' ')) {
            maps.entry(p).or_insert(enc);
        }
    }
    maps
}

fn codec_of(maps: &std::collections::HashMap<&str, &str>, pt: &str) -> Option<AudioCodec> {
    match maps.get(pt).copied() {
        Some(enc) => {
            let name = enc.split('/').next().unwrap_or("");
            [AudioCodec::Pcmu, AudioCodec::Pcma, AudioCodec::Opus]
                .into_iter()
                .find(|c| c.encoding_name().eq_ignore_ascii_case(name))
        }
        // Static payload types need no rtpmap (RFC 3551).
        None if pt == "0" => Some(AudioCodec::Pcmu),
        None if pt == "8" => Some(AudioCodec::Pcma),
        None => None,
    }
}

/// Reorders the audio line's formats: ours first, in `codecs` order, then the rest as offered.
pub fn prefer(sdp: &str, codecs: &[AudioCodec]) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let maps = rtpmaps(sdp);
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines() {
        match line.strip_prefix("m=audio ") {
            Some(rest) => {
                let mut fields = rest.split(' ');
                let (port, proto) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
                let fmts: Vec<&str> = fields.collect();
                let ranks: Vec<usize> = fmts
                    .iter()
                    .map(|pt| {
                        codec_of(&maps, pt)
                            .and_then(|c| codecs.iter().position(|o| *o == c))
                            .unwrap_or(codecs.len())
                    })
                    .collect();
                let mut order: Vec<usize> = (0..fmts.len()).collect();
                // Stable: formats of one codec, and all the others, keep the browser's order.
                order.sort_by_key(|&i| ranks[i]);
                let sorted: Vec<&str> = order.into_iter().map(|i| fmts[i]).collect();
                out.push_str(&format!("m=audio {port} {proto} {}", sorted.join(" ")));
            }
            None => out.push_str(line),
        }
        out.push_str(eol);
    }
    out
}

/// Clock rate of the codec rtc will pick from this offer: the first format on the audio
/// line that is one of `codecs`. 8000 when there is none (the answer fails later anyway).
pub fn chosen_clock_rate(sdp: &str, codecs: &[AudioCodec]) -> u32 {
    let Some(formats) = sdp.lines().find_map(|l| l.strip_prefix("m=audio ")) else {
        return 8000;
    };
    let maps = rtpmaps(sdp);
    for pt in formats.split(' ').skip(2) {
        if let Some(codec) = codec_of(&maps, pt).filter(|c| codecs.contains(c)) {
            return codec.clock_rate();
        }
    }
    8000
}

/// Removes every `telephone-event` whose clock rate is not `rate` from the audio sections.
pub fn keep_telephone_events_at(sdp: &str, rate: u32) -> String {
    let rate = rate.to_string();
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
            let rate_of = enc.next().unwrap_or("");
            if name.eq_ignore_ascii_case("telephone-event") && rate_of != rate {
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
        let out = keep_telephone_events_at(sdp, 8000);
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
        assert_eq!(keep_telephone_events_at(sdp, 8000), sdp);
    }

    const CHROME_LIKE: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0 8 110 126\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\n";

    #[test]
    fn our_order_leads_the_audio_line_and_the_rest_keeps_the_browsers() {
        use AudioCodec::*;
        let out = prefer(CHROME_LIKE, &[Pcmu, Pcma, Opus]);
        assert!(
            out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 0 8 111 110 126\r\n"),
            "{out}"
        );
        assert_eq!(chosen_clock_rate(&out, &[Pcmu, Pcma, Opus]), 8000);
        // Opus preferred by configuration: it stays first, the 48 kHz event is the one kept.
        let out = prefer(CHROME_LIKE, &[Opus, Pcma]);
        assert!(out.contains("SAVPF 111 8 0 110 126\r\n"), "{out}");
        assert_eq!(chosen_clock_rate(&out, &[Opus, Pcma]), 48000);
        // Everything else in the SDP is untouched.
        assert_eq!(out.lines().count(), CHROME_LIKE.lines().count());
        assert!(out.contains("a=rtpmap:111 opus/48000/2\r\n"));
    }

    #[test]
    fn chosen_rate_follows_the_offer_order_among_accepted_codecs() {
        use AudioCodec::*;
        assert_eq!(chosen_clock_rate(CHROME_LIKE, &[Pcma, Opus]), 48000);
        assert_eq!(chosen_clock_rate(CHROME_LIKE, &[Pcma, Pcmu]), 8000);
        assert_eq!(chosen_clock_rate(CHROME_LIKE, &[Opus]), 48000);
        // Static PT 8 with no rtpmap still counts as PCMA; it comes before Opus here.
        let g711_first = "v=0\nm=audio 9 RTP/SAVPF 8 111\na=rtpmap:111 opus/48000/2\n";
        assert_eq!(chosen_clock_rate(g711_first, &[Opus, Pcma]), 8000);
        assert_eq!(chosen_clock_rate(g711_first, &[Opus]), 48000);
    }

    #[test]
    fn opus_keeps_the_48k_event_and_drops_the_8k_one() {
        let out = keep_telephone_events_at(CHROME_LIKE, 48000);
        assert!(
            out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8 110\r\n"),
            "{out}"
        );
        assert!(out.contains("a=rtpmap:110 telephone-event/48000\r\n"));
        assert!(!out.contains("126"), "{out}");
    }
}
