//! The clean-up verde-webrtc applies to a browser's offer before rtc reads it
//! (`verde_webrtc::offer`, as `WebRtcLeg::answer` chains it). These are string functions over
//! untrusted SDP from a web page. Asserts no panic, and that `prefer` only reorders: every
//! audio line keeps the same formats.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verde_webrtc::offer::{chosen_clock_rate, keep_telephone_events_at, prefer};
use verde_webrtc::AudioCodec;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, sdp)) = data.split_first() else {
        return;
    };
    let Ok(sdp) = std::str::from_utf8(sdp) else {
        return;
    };
    let codecs: &[AudioCodec] = match choice % 3 {
        0 => &[AudioCodec::Pcmu, AudioCodec::Pcma, AudioCodec::Opus],
        1 => &[AudioCodec::Opus],
        _ => &[AudioCodec::Pcma],
    };

    let preferred = prefer(sdp, codecs);
    assert_eq!(
        audio_formats(sdp),
        audio_formats(&preferred),
        "prefer changed the set of offered formats"
    );
    let rate = chosen_clock_rate(&preferred, codecs);
    assert!(rate > 0);
    let _ = keep_telephone_events_at(&preferred, rate);
});

/// The sorted formats of each `m=audio` line. Empty tokens are left out (`prefer` rewrites a
/// line with fewer than two fields with empty ones) and so are CRs that end a token: a
/// format `101\r` that `prefer` moves to the end of the line merges with the CRLF there.
fn audio_formats(sdp: &str) -> Vec<Vec<&str>> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("m=audio "))
        .map(|rest| {
            let mut f: Vec<&str> = rest
                .split(' ')
                .skip(2)
                .map(|f| f.trim_end_matches('\r'))
                .filter(|f| !f.is_empty())
                .collect();
            f.sort_unstable();
            f
        })
        .collect()
}
