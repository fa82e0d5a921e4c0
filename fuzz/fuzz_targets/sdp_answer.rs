//! SDP offer/answer as a SIP leg runs it: `LocalSdp::answer` on an arbitrary offer (initial
//! and re-offer), and `LocalSdp::accept_answer` on arbitrary bytes taken as the remote's answer
//! to our offer. Asserts no panic, that answering the same offer twice yields the same SDP
//! (RFC 3264 §8: the o= version moves only when the body does), and that the answer we write
//! is SDP our own offerer side accepts with the same codec.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use verde_media::{Codec, CryptoSuite, LocalSdp, SrtpPolicy};

fuzz_target!(|data: &[u8]| {
    // The first byte picks our side's address family and codec list; the rest is the SDP.
    let Some((&choice, sdp)) = data.split_first() else {
        return;
    };
    let Ok(sdp) = std::str::from_utf8(sdp) else {
        return;
    };
    let ip = if choice & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
    };
    let codecs: &[Codec] = match (choice >> 1) % 3 {
        0 => &[Codec::Pcma, Codec::Pcmu],
        1 => &[Codec::Pcmu, Codec::Pcma],
        _ => &[Codec::Pcma],
    };

    let mut us = LocalSdp::new(ip, 40_000, codecs, 1_234_567);
    if let Ok(first) = us.answer(sdp) {
        let again = us.answer(sdp).expect("the same offer answered twice");
        assert_eq!(
            first, again,
            "re-answering the same offer changed the answer"
        );

        // An RTP/SAVP answer only fits an offerer that offered SRTP, and echoes the offer's
        // crypto tag: our offerer side tags each suite with a fixed number, so the round trip
        // holds only when the fuzzed offer used that same tag.
        let secure = us.srtp().is_some();
        let mut offerer = LocalSdp::new(
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)),
            30_000,
            codecs,
            7,
        )
        .with_srtp(if secure {
            SrtpPolicy::Require
        } else {
            SrtpPolicy::Accept
        });
        let _ = offerer.offer();
        let accepted = offerer.accept_answer(&first.answer);
        if !secure || tag_is_ours(&first.answer) {
            let theirs = accepted
                .unwrap_or_else(|e| panic!("our own answer is refused: {e}\n{}", first.answer));
            assert_eq!(theirs.codec, first.codec, "answer names another codec");
            assert_eq!(
                offerer.srtp().map(|k| k.suite),
                us.srtp().map(|k| k.suite),
                "the two sides settled on different SRTP suites"
            );
        }
    }

    // The same bytes as the answer to our offer (a 200 to our INVITE).
    let mut offerer = LocalSdp::new(ip, 40_002, codecs, 42);
    let _ = offerer.offer();
    let _ = offerer.accept_answer(sdp);
});

/// Whether the answer's `a=crypto` line carries the tag our offerer uses for its suite (1 for
/// AES_CM_128_HMAC_SHA1_80, 2 for _32: the order of `CryptoSuite::ALL`, as `LocalSdp` offers).
fn tag_is_ours(answer: &str) -> bool {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .and_then(|v| {
            let mut f = v.split_whitespace();
            let tag: usize = f.next()?.parse().ok()?;
            let suite = CryptoSuite::from_name(f.next()?)?;
            Some(CryptoSuite::ALL.iter().position(|s| *s == suite)? + 1 == tag)
        })
        .unwrap_or(false)
}
