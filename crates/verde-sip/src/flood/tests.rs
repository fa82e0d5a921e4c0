use super::*;
use std::net::Ipv6Addr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn register(ua: &str) -> Vec<u8> {
    format!(
        "REGISTER sip:verde.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
         From: <sip:100@verde.example>;tag=1\r\nTo: <sip:100@verde.example>\r\nCall-ID: a\r\n\
         CSeq: 1 REGISTER\r\nUser-Agent: {ua}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

const INVITE: &[u8] = b"INVITE sip:1000@verde.example SIP/2.0\r\nUser-Agent: Yealink\r\n\r\n";
const OPTIONS: &[u8] = b"OPTIONS sip:verde.example SIP/2.0\r\nUser-Agent: Yealink\r\n\r\n";
const RESPONSE: &[u8] = b"SIP/2.0 200 OK\r\nUser-Agent: friendly-scanner\r\n\r\n";

fn passes(v: &Verdict) -> bool {
    *v == Verdict::Pass
}

/// Sends `n` copies at one instant and counts those that pass.
fn burst(g: &mut FloodGuard, from: IpAddr, packet: &[u8], n: usize, now: Instant) -> usize {
    (0..n)
        .filter(|_| passes(&g.check(from, packet, now)))
        .count()
}

#[test]
fn register_bucket_allows_the_burst_then_the_rate() {
    let mut g = FloodGuard::default();
    let t0 = Instant::now();
    let src = ip("198.51.100.7");
    let reg = register("Yealink SIP-T46S");
    assert_eq!(burst(&mut g, src, &reg, 100, t0), REGISTER_BURST as usize);
    // Half a second refills half the per-second rate.
    let t1 = t0 + Duration::from_millis(500);
    assert_eq!(
        burst(&mut g, src, &reg, 100, t1),
        (REGISTER_RATE / 2.0) as usize
    );
    // Refill never exceeds the burst, however long the source was quiet.
    let t2 = t1 + Duration::from_secs(3600);
    assert_eq!(burst(&mut g, src, &reg, 100, t2), REGISTER_BURST as usize);
    assert!(!g.is_boxed(src, t2), "rate limiting is not a box");
}

#[test]
fn invite_and_register_have_separate_buckets() {
    let mut g = FloodGuard::default();
    let t0 = Instant::now();
    let src = ip("198.51.100.8");
    assert_eq!(
        burst(&mut g, src, &register("x"), 1000, t0),
        REGISTER_BURST as usize
    );
    assert_eq!(burst(&mut g, src, INVITE, 1000, t0), INVITE_BURST as usize);
    match g.check(src, INVITE, t0) {
        Verdict::Drop { reason, .. } => assert_eq!(reason, Reason::InviteRate),
        v => panic!("{v:?}"),
    }
    // Another source is untouched by this one's buckets.
    assert!(passes(&g.check(ip("198.51.100.9"), INVITE, t0)));
}

#[test]
fn other_traffic_is_neither_limited_nor_tracked() {
    let mut g = FloodGuard::default();
    let t0 = Instant::now();
    let src = ip("198.51.100.10");
    for packet in [
        OPTIONS,
        b"SIP/2.0 180 Ringing\r\n\r\n",
        b"\r\n\r\n",
        b"\x00\xffgarbage",
    ] {
        assert_eq!(burst(&mut g, src, packet, 500, t0), 500, "{packet:?}");
    }
    assert_eq!(g.tracked(), 0, "plain traffic must not create entries");
    // Methods are case-sensitive: `register` is not REGISTER (the parser refuses it).
    assert_eq!(
        burst(&mut g, src, b"register sip:x SIP/2.0\r\n\r\n", 100, t0),
        100
    );
    // Empty lines before the start line are allowed and do not hide the method.
    let mut padded = b"\r\n\r\n".to_vec();
    padded.extend_from_slice(INVITE);
    assert_eq!(burst(&mut g, src, &padded, 100, t0), INVITE_BURST as usize);
}

#[test]
fn scanner_agent_is_boxed_at_once_and_silenced_entirely() {
    let mut g = FloodGuard::default();
    let t0 = Instant::now();
    let src = ip("203.0.113.5");
    match g.check(src, &register("friendly-scanner"), t0) {
        Verdict::Drop {
            reason: Reason::Scanner,
            report: Some(r),
        } => {
            assert_eq!(r.source, src);
            assert_eq!(r.dropped, 1);
            assert_eq!(r.silenced_for, Some(BOX_BASE));
        }
        v => panic!("first scanner packet: {v:?}"),
    }
    // Everything from it is dropped now, responses and harmless requests included.
    for packet in [OPTIONS, RESPONSE, INVITE, b"junk".as_slice()] {
        assert!(matches!(
            g.check(src, packet, t0 + Duration::from_secs(1)),
            Verdict::Drop {
                reason: Reason::Scanner,
                ..
            }
        ));
    }
    assert!(g.is_boxed(src, t0 + BOX_BASE - Duration::from_millis(1)));
    let after = t0 + BOX_BASE;
    assert!(!g.is_boxed(src, after));
    assert!(passes(&g.check(src, OPTIONS, after)));
    // Back with the same tool: boxed again, for twice as long.
    match g.check(src, OPTIONS_SCANNER, after) {
        Verdict::Drop {
            report: Some(r), ..
        } => assert_eq!(r.silenced_for, Some(BOX_BASE * 2)),
        v => panic!("{v:?}"),
    }
}

const OPTIONS_SCANNER: &[u8] =
    b"OPTIONS sip:100@203.0.113.1 SIP/2.0\r\nuser-agent :  SIPVicious 0.3.4\r\n\r\n";

#[test]
fn scanner_names_are_read_only_from_user_agent_headers_of_the_head() {
    for ua in [
        "VaxSIPUserAgent/3.1",
        "sipcli/v1.8",
        "pplsip",
        "Friendly-Scanner",
    ] {
        assert!(scanner_agent(&register(ua)), "{ua}");
    }
    assert!(scanner_agent(OPTIONS_SCANNER));
    for ua in [
        "Yealink SIP-T46S 66.86",
        "baresip v3.10",
        "Linphone/5.2",
        "sipsak 0.9.8",
    ] {
        assert!(!scanner_agent(&register(ua)), "{ua}");
    }
    // In another header, or in the body, the name does not count.
    assert!(!scanner_agent(
        b"INVITE sip:1@x SIP/2.0\r\nFrom: \"friendly-scanner\" <sip:1@x>\r\n\r\nUser-Agent: sipvicious\r\n"
    ));
    assert!(!scanner_agent(
        b"INVITE sip:1@x SIP/2.0\r\nUser-Agents: sipvicious\r\n\r\n"
    ));
}

#[test]
fn strikes_within_the_window_box_the_source_and_success_forgives() {
    let mut g = FloodGuard::default();
    let t0 = Instant::now();
    let src = ip("192.0.2.44");
    for i in 1..STRIKES {
        assert_eq!(
            g.offence(
                src,
                Offence::AuthFailure,
                t0 + Duration::from_secs(i.into())
            ),
            None
        );
    }
    // A phone behind the same address authenticates: the count starts over.
    g.forgive(src);
    for i in 1..STRIKES {
        assert_eq!(
            g.offence(
                src,
                Offence::AuthFailure,
                t0 + Duration::from_secs(20 + u64::from(i))
            ),
            None
        );
    }
    let boxed_at = t0 + Duration::from_secs(40);
    let r = g
        .offence(src, Offence::AuthFailure, boxed_at)
        .expect("the tenth failure within the window boxes the source");
    assert_eq!(
        (r.reason, r.silenced_for),
        (Reason::AuthFailures, Some(BOX_BASE))
    );
    assert!(g.is_boxed(src, boxed_at));
    assert!(matches!(
        g.check(src, &register("Yealink"), boxed_at),
        Verdict::Drop {
            reason: Reason::AuthFailures,
            ..
        }
    ));
    // Offences while boxed change nothing.
    assert_eq!(g.offence(src, Offence::Malformed, boxed_at), None);
}

#[test]
fn strikes_spread_beyond_the_window_never_box() {
    let mut g = FloodGuard::default();
    let t0 = Instant::now();
    let src = ip("192.0.2.45");
    let step = STRIKE_WINDOW / (STRIKES - 1) + Duration::from_secs(1);
    for i in 0..(STRIKES * 5) {
        assert_eq!(
            g.offence(src, Offence::Malformed, t0 + step * i),
            None,
            "offence {i}"
        );
    }
}

#[test]
fn boxes_grow_to_the_maximum_and_shrink_after_good_behaviour() {
    let mut g = FloodGuard::default();
    let src = ip("192.0.2.46");
    let mut now = Instant::now();
    let mut lengths = Vec::new();
    for _ in 0..9 {
        let r = (0..STRIKES)
            .find_map(|_| g.offence(src, Offence::Rejected, now))
            .expect("boxed");
        let len = r.silenced_for.unwrap();
        lengths.push(len.as_secs());
        now += len;
    }
    assert_eq!(lengths, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
    now += BOX_MAX;
    let r = (0..STRIKES)
        .find_map(|_| g.offence(src, Offence::Rejected, now))
        .unwrap();
    assert_eq!(r.silenced_for, Some(BOX_BASE));
}

#[test]
fn a_flood_is_reported_once_per_period_with_its_count() {
    let mut g = FloodGuard::default();
    let t0 = Instant::now();
    let src = ip("203.0.113.9");
    let reg = register("x");
    let mut reports = Vec::new();
    // 1000 REGISTERs per second for 65 s.
    for ms in 0..65_000u64 {
        let now = t0 + Duration::from_millis(ms);
        if let Verdict::Drop {
            report: Some(r), ..
        } = g.check(src, &reg, now)
        {
            reports.push((ms, r));
        }
    }
    let at: Vec<u64> = reports.iter().map(|(ms, _)| *ms).collect();
    assert_eq!(at.len(), 3, "one report per LOG_EVERY: {at:?}");
    assert!(at[1] - at[0] >= LOG_EVERY.as_millis() as u64);
    let dropped: u64 = reports.iter().map(|(_, r)| r.dropped).sum();
    let passed = REGISTER_BURST + 65.0 * REGISTER_RATE;
    // Every drop up to the last report is counted in some report.
    let all_drops = 65_000.0 - passed;
    assert!(dropped as f64 <= all_drops && dropped as f64 > all_drops - 30_000.0);
    assert!(reports
        .iter()
        .all(|(_, r)| r.reason == Reason::RegisterRate));
    assert!(reports[1].1.dropped > 25_000, "{:?}", reports[1]);
}

#[test]
fn the_table_is_bounded_and_keeps_active_sources() {
    let mut g = FloodGuard::new(Limits {
        max_sources: 64,
        ..Limits::default()
    });
    let t0 = Instant::now();
    let scanner = ip("203.0.113.77");
    assert!(!passes(&g.check(scanner, &register("sipvicious"), t0)));
    // A spoofed flood: every packet a new source, the scanner still active among them.
    for i in 0..100_000u32 {
        let spoofed = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let now = t0 + Duration::from_micros(u64::from(i) * 50);
        g.check(spoofed, INVITE, now);
        if i % 16 == 0 {
            assert!(
                !passes(&g.check(scanner, INVITE, now)),
                "scanner forgotten at {i}"
            );
        }
        assert!(g.tracked() <= 64);
    }
    assert_eq!(g.tracked(), 64);
}

#[test]
fn ipv6_sources_are_grouped_by_64() {
    let mut g = FloodGuard::default();
    let t0 = Instant::now();
    let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert!(!passes(&g.check(a, &register("sipcli"), t0)));
    assert!(g.is_boxed(b, t0), "same /64");
    assert!(!g.is_boxed(other, t0));
    let mapped = IpAddr::V6(Ipv6Addr::from(0xffff_c000_0201u128));
    assert_eq!(key(mapped), ip("192.0.2.1"));
}
