//! Assertions shared by several interop tests: what verde's SDP answer says and whether the RTP
//! it sent carried a prompt intact and at the right pace.

use crate::pcap::{gaps_ms, quantile, rtp_stream, Datagram};
use crate::wav::{envelope_correlation, Audio};
use std::net::Ipv4Addr;

/// The fields of an SDP answer the tests check.
#[derive(Debug, Clone)]
pub struct SdpAnswer {
    pub connection: Option<Ipv4Addr>,
    pub port: u16,
    pub payload_types: Vec<u8>,
    pub text: String,
}

impl SdpAnswer {
    pub fn parse(sdp: &str) -> SdpAnswer {
        let mut connection = None;
        let mut audio: Option<(u16, Vec<u8>)> = None;
        for line in sdp.lines().map(str::trim) {
            if let Some(c) = line.strip_prefix("c=IN IP4 ") {
                connection = c.split('/').next().and_then(|a| a.trim().parse().ok());
            } else if let Some(m) = line.strip_prefix("m=audio ") {
                let mut f = m.split_whitespace();
                let port = f.next().and_then(|p| p.parse().ok());
                let _proto = f.next();
                let pts = f.filter_map(|p| p.parse().ok()).collect();
                audio = port.map(|p| (p, pts));
            }
        }
        let (port, payload_types) =
            audio.unwrap_or_else(|| panic!("SDP answer has no usable m=audio line:\n{sdp}"));
        SdpAnswer {
            connection,
            port,
            payload_types,
            text: sdp.to_string(),
        }
    }

    /// What verde must answer on loopback: c=127.0.0.1, an even port in its RTP range, a G.711
    /// codec first.
    pub fn assert_loopback_g711(&self, rtp_range: (u16, u16), what: &str) {
        assert_eq!(
            self.connection,
            Some(Ipv4Addr::LOCALHOST),
            "{what}: SDP answer c= is not 127.0.0.1:\n{}",
            self.text
        );
        assert!(
            self.port.is_multiple_of(2) && (rtp_range.0..=rtp_range.1).contains(&self.port),
            "{what}: SDP answer port {} is not an even port in --rtp-ports {}-{}",
            self.port,
            rtp_range.0,
            rtp_range.1
        );
        assert!(
            matches!(self.payload_types.first(), Some(0) | Some(8)),
            "{what}: SDP answer does not put PCMU/PCMA first: {:?}",
            self.payload_types
        );
    }
}

/// What [`check_prompt_stream`] measured, for logs.
#[derive(Debug, Clone)]
pub struct StreamReport {
    pub prompt: String,
    pub packets: usize,
    pub packets_during_prompt: usize,
    pub expected_during_prompt: usize,
    pub median_gap_ms: f64,
    pub p5_gap_ms: f64,
    pub p95_gap_ms: f64,
    pub long_gaps: usize,
    pub correlation: f64,
    pub lag_ms: i64,
}

/// Checks the audio RTP verde sent to `dst_port` during a call whose first prompt is one of
/// `candidates` (name, audio):
/// - it comes from the port verde's SDP announced (symmetric RTP) with one SSRC, in sequence;
/// - it starts with one of the prompts (energy-envelope correlation of the decoded audio > 0.9);
/// - during the prompt's duration after the first packet, duration/20 ms packets arrived (±3);
/// - over that prompt, RTP timestamps step by 160 and agree with arrival times within 30 ms;
/// - packets are paced at 20 ms: median gap 20 ±1 ms, 5th..95th percentile within 15..25 ms
///   (gaps over 100 ms are silences between prompts, reported separately).
pub fn check_prompt_stream(
    datagrams: &[Datagram],
    answer: &SdpAnswer,
    dst_port: u16,
    candidates: &[(String, Audio)],
    what: &str,
) -> StreamReport {
    let all = rtp_stream(datagrams, (answer.port, answer.port), dst_port);
    let others: Vec<u16> = datagrams
        .iter()
        .filter(|d| d.dst.port() == dst_port && d.src.port() != answer.port)
        .map(|d| d.src.port())
        .collect();
    assert!(
        others.is_empty(),
        "{what}: RTP reached SIPp's media port {dst_port} from ports {others:?}, not (only) from the \
         announced {}",
        answer.port
    );
    let audio_pt = answer.payload_types[0];
    let audio: Vec<_> = all
        .iter()
        .filter(|p| p.2.payload_type == audio_pt)
        .collect();
    assert!(
        !audio.is_empty(),
        "{what}: no RTP with payload type {audio_pt} from 127.0.0.1:{} to SIPp's media port {dst_port} \
         ({} datagrams captured in total)",
        answer.port,
        datagrams.len()
    );
    let ssrcs: std::collections::BTreeSet<u32> = audio.iter().map(|p| p.2.ssrc).collect();
    assert_eq!(
        ssrcs.len(),
        1,
        "{what}: several SSRCs in one call's stream: {ssrcs:x?}"
    );
    for w in audio.windows(2) {
        let (a, b) = (&w[0].2, &w[1].2);
        assert_eq!(
            b.seq,
            a.seq.wrapping_add(1),
            "{what}: RTP sequence jumps from {} to {} (lost, duplicated or reordered)",
            a.seq,
            b.seq
        );
        assert_eq!(
            b.payload.len(),
            160,
            "{what}: RTP packet seq {} carries {} bytes, not 20 ms (160)",
            b.seq,
            b.payload.len()
        );
    }

    // The first prompt's worth of audio, decoded, must be one of the candidate prompts.
    let mut scores = Vec::new();
    for (name, prompt) in candidates {
        let n = ((prompt.duration() / 0.020).round() as usize).min(audio.len());
        let heard = Audio::from_g711(audio_pt, audio[..n].iter().map(|p| p.2.payload.as_slice()));
        let (c, lag) =
            envelope_correlation(&heard, &prompt.slice(0.0, prompt.duration() - 0.2), 20, 400);
        scores.push((c, lag, name.clone(), prompt));
    }
    scores.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (correlation, lag_ms, prompt_name, prompt) = scores[0].clone();
    assert!(
        correlation > 0.9,
        "{what}: the first packets carry none of the expected prompts: envelope correlations {:?}",
        scores
            .iter()
            .map(|s| (s.2.as_str(), (s.0 * 1000.0).round() / 1000.0, s.1))
            .collect::<Vec<_>>()
    );

    let expected = (prompt.duration() / 0.020).round() as usize;
    let t0 = audio[0].0;
    let during = audio
        .iter()
        .filter(|p| p.0 < t0 + prompt.duration() - 0.010)
        .count();
    assert!(
        during.abs_diff(expected) <= 3,
        "{what}: {during} RTP packets arrived during the {:.3} s prompt {prompt_name}, expected \
         {expected} (±3) at 20 ms",
        prompt.duration()
    );

    // Pacing from a fixed origin: over the first prompt, wall-clock arrival and RTP time agree.
    let first = &audio[..expected.min(audio.len())];
    if let (Some(a), Some(b)) = (first.first(), first.last()) {
        let arrival = b.0 - a.0;
        let rtp_time = f64::from(b.2.timestamp.wrapping_sub(a.2.timestamp)) / 8000.0;
        assert!(
            (arrival - rtp_time).abs() < 0.030,
            "{what}: over the first prompt RTP time advanced {rtp_time:.3} s but {arrival:.3} s passed \
             on the wire: pacing drifts"
        );
        for w in first.windows(2) {
            assert_eq!(
                w[1].2.timestamp.wrapping_sub(w[0].2.timestamp),
                160,
                "{what}: RTP timestamp step between seq {} and {} is not 160",
                w[0].2.seq,
                w[1].2.seq
            );
        }
    }

    let times: Vec<f64> = audio.iter().map(|p| p.0).collect();
    let gaps = gaps_ms(&times);
    let paced: Vec<f64> = gaps.iter().copied().filter(|g| *g <= 100.0).collect();
    let long_gaps = gaps.len() - paced.len();
    assert!(
        paced.len() >= 10,
        "{what}: too few packets to judge pacing ({})",
        paced.len()
    );
    let median = quantile(&paced, 0.5);
    let p5 = quantile(&paced, 0.05);
    let p95 = quantile(&paced, 0.95);
    assert!(
        (median - 20.0).abs() <= 1.0,
        "{what}: median RTP gap {median:.2} ms, expected 20 ±1"
    );
    assert!(
        p5 >= 15.0 && p95 <= 25.0,
        "{what}: RTP gaps 5th..95th percentile {p5:.2}..{p95:.2} ms, expected within 15..25"
    );
    StreamReport {
        prompt: prompt_name,
        packets: audio.len(),
        packets_during_prompt: during,
        expected_during_prompt: expected,
        median_gap_ms: median,
        p5_gap_ms: p5,
        p95_gap_ms: p95,
        long_gaps,
        correlation,
        lag_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_answer() {
        let a = SdpAnswer::parse(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20002 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
        );
        assert_eq!(a.connection, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(a.port, 20002);
        assert_eq!(a.payload_types, vec![0, 101]);
        a.assert_loopback_g711((20000, 20039), "unit");
    }

    #[test]
    #[should_panic(expected = "not an even port")]
    fn odd_port_is_refused() {
        SdpAnswer::parse("c=IN IP4 127.0.0.1\nm=audio 20001 RTP/AVP 0\n")
            .assert_loopback_g711((20000, 20039), "unit");
    }
}
