//! Two WebRTC legs over real localhost UDP sockets: "browser" (an offering leg, as the load
//! tool will use) and "verde" (an answering leg with a `verde_media::MediaSession` on top,
//! wired the way the binary will wire it). ICE, DTLS and SRTP run for real in between.
//!
//! Checked: the connection comes up; the browser's PCMU payloads reach the session intact
//! (through its relay queue); the browser's RFC 4733 digit is reported by the session; the
//! session's prompt reaches the browser byte for byte; the session's digit reaches the
//! browser as telephone-event packets; and nothing on the wire is clear RTP. The same with
//! Opus on the wire: both legs transcode and the session still sees PCMU.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use support::tone::{assert_tone, rms, sine};
use support::{digit_4, rtp, split, Legs};
use verde_media::session::Relay;
use verde_media::{g711, Codec, Prompt};
use verde_webrtc::AudioCodec;

#[test]
fn browser_leg_and_verde_leg_talk_over_udp_with_srtp() {
    let legs = Legs::negotiate(
        vec![AudioCodec::Pcmu, AudioCodec::Pcma],
        vec![AudioCodec::Pcmu],
    );
    let media = legs.verde.media().expect("negotiated audio");
    assert_eq!(media.codec, AudioCodec::Pcmu);
    let dtmf_pt = media.dtmf_pt.expect("telephone-event/8000 negotiated");
    assert_eq!(legs.browser.media().unwrap().dtmf_pt, Some(dtmf_pt));
    assert_eq!(legs.verde.session_media(), Some(media), "no transcoding");

    let prompt = Arc::new(Prompt::from_pcm(sine(440.0, 8000, 8000.0, 8000)));
    let mut lb = legs.with_session(prompt.clone());

    let mut browser_rx: Vec<Vec<u8>> = Vec::new(); // decrypted RTP at the browser
    let mut sent_by_browser: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut relayed_ok = 0;
    let mut seq: u16 = 100;

    loop {
        assert!(
            lb.in_time(),
            "timed out: connected={:?}, relayed={relayed_ok}, verde digits={:?}, \
             browser got {} RTP packets",
            lb.connected,
            lb.verde_digits,
            browser_rx.len()
        );
        let now = std::time::Instant::now();

        // The browser stand-in: 20 ms PCMU frames, a digit '4' after 10 frames.
        if seq < 200 && lb.frame_due(now) {
            seq += 1;
            let ts = u32::from(seq) * 160;
            if (110..116).contains(&seq) {
                let i = u32::from(seq - 110);
                lb.browser
                    .send_rtp(&rtp(dtmf_pt, i == 0, seq, 110 * 160, &digit_4(i)), now)
                    .unwrap();
            } else {
                let payload: Vec<u8> = (0..160).map(|i| (i as u8) ^ (seq as u8)).collect();
                sent_by_browser.insert(ts, payload.clone());
                lb.browser
                    .send_rtp(&rtp(0, false, seq, ts, &payload), now)
                    .unwrap();
            }
        }

        let now = lb.exchange(now);
        while let Some(pkt) = lb.browser.poll_rtp() {
            browser_rx.push(pkt.to_vec());
        }
        while let Some(relay) = lb.session.poll_relay() {
            if let Relay::Audio(frame) = relay {
                let sent = sent_by_browser
                    .get(&frame.timestamp)
                    .expect("relayed a frame the browser sent");
                assert_eq!(
                    frame.payload.as_ref(),
                    sent.as_slice(),
                    "payload altered in transit"
                );
                relayed_ok += 1;
            }
        }
        lb.finish_turn(now);

        let audio_at_browser: Vec<&[u8]> = browser_rx
            .iter()
            .map(|p| split(p))
            .filter(|(pt, _)| *pt == 0)
            .map(|(_, payload)| payload)
            .collect();
        let digit_at_browser = browser_rx
            .iter()
            .map(|p| split(p))
            .any(|(pt, payload)| pt == dtmf_pt && payload.first() == Some(&7));
        if relayed_ok >= 40
            && lb.verde_digits.contains(&'4')
            && audio_at_browser.len() >= 25
            && digit_at_browser
        {
            // The prompt arrived byte for byte, in order, from its first frame.
            let first = prompt.ulaw[..160].to_vec();
            let at = audio_at_browser
                .iter()
                .position(|p| *p == first.as_slice())
                .expect("the prompt's first frame reached the browser");
            let frames = &audio_at_browser[at..];
            for (i, frame) in frames.iter().take(20).enumerate() {
                assert_eq!(
                    *frame,
                    &prompt.ulaw[i * 160..(i + 1) * 160],
                    "prompt frame {i}"
                );
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }

    // SRTP on the wire: no datagram is the clear RTP the other side decrypted.
    for clear in &browser_rx {
        assert!(!lb.browser_wire.contains(clear), "clear RTP on the wire");
    }
    assert!(
        lb.verde.rejected() == 0 && lb.browser.rejected() == 0,
        "rtc rejected datagrams"
    );
}

/// Both legs negotiate Opus on the wire and transcode; each side only ever handles PCMU and
/// telephone-event/8000 (what `session_media` says), as the binary and the load tool will.
/// The verde side runs a real `MediaSession`: the browser's tone reaches its relay queue and
/// its digit is detected; the session's prompt and digit reach the browser.
#[test]
fn opus_legs_present_pcmu_to_the_media_session_over_udp() {
    let legs = Legs::negotiate(
        vec![AudioCodec::Opus],
        vec![AudioCodec::Pcma, AudioCodec::Opus],
    );
    assert_eq!(legs.verde.media().unwrap().codec, AudioCodec::Opus);
    let media = legs.verde.session_media().expect("session media");
    assert_eq!(
        (media.codec, media.payload_type, media.dtmf_pt),
        (AudioCodec::Pcmu, 0, Some(101))
    );
    assert_eq!(legs.browser.session_media(), Some(media));

    // Three seconds: still playing whenever the loop ends, so the tail below is prompt audio.
    let prompt = Arc::new(Prompt::from_pcm(sine(440.0, 8000, 8000.0, 3 * 8000)));
    let browser_tone = sine(1000.0, 8000, 8000.0, 160 * 100);
    let mut lb = legs.with_session(prompt.clone());

    let mut relayed: Vec<i16> = Vec::new();
    let mut at_browser: Vec<i16> = Vec::new();
    let mut digit_at_browser = false;
    let mut frame: usize = 0;

    loop {
        assert!(
            lb.in_time(),
            "timed out: connected={:?}, relayed {} samples, verde digits={:?}, \
             browser got {} samples, digit at browser {digit_at_browser}",
            lb.connected,
            relayed.len(),
            lb.verde_digits,
            at_browser.len()
        );
        let now = std::time::Instant::now();
        if frame < 100 && lb.frame_due(now) {
            let seq = 300 + frame as u16;
            let ts = 160 * frame as u32;
            if (40..46).contains(&frame) {
                let i = (frame - 40) as u32;
                lb.browser
                    .send_rtp(&rtp(101, i == 0, seq, 160 * 40, &digit_4(i)), now)
                    .unwrap();
            } else {
                let pcm = &browser_tone[frame * 160..(frame + 1) * 160];
                let ulaw: Vec<u8> = pcm.iter().map(|&s| g711::linear_to_ulaw(s)).collect();
                lb.browser
                    .send_rtp(&rtp(0, false, seq, ts, &ulaw), now)
                    .unwrap();
            }
            frame += 1;
        }

        let now = lb.exchange(now);
        while let Some(pkt) = lb.browser.poll_rtp() {
            let (pt, payload) = split(&pkt);
            match pt {
                0 => at_browser.extend(payload.iter().map(|&c| g711::ulaw_to_linear(c))),
                101 => digit_at_browser |= payload.first() == Some(&7),
                other => panic!("the browser leg passed PT {other} to its session side"),
            }
        }
        while let Some(relay) = lb.session.poll_relay() {
            if let Relay::Audio(frame) = relay {
                assert_eq!(frame.codec, Codec::Pcmu);
                relayed.extend(frame.payload.iter().map(|&c| g711::ulaw_to_linear(c)));
            }
        }
        lb.finish_turn(now);
        // 30 frames of tone before the digit (skip the codec's start-up), 30 of the prompt.
        if relayed.len() >= 160 * 35
            && lb.verde_digits.contains(&'4')
            && at_browser.len() >= 160 * 40
            && digit_at_browser
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_tone(
        &relayed[160 * 5..160 * 35],
        1000.0,
        8000,
        rms(&browser_tone),
        "relayed by the session",
    );
    // The prompt's 440 Hz, once the digit is over and the codec has started.
    let tail = &at_browser[at_browser.len() - 160 * 20..];
    let prompt_pcm: Vec<i16> = prompt
        .ulaw
        .iter()
        .map(|&c| g711::ulaw_to_linear(c))
        .collect();
    assert_tone(tail, 440.0, 8000, rms(&prompt_pcm), "prompt at the browser");
}
