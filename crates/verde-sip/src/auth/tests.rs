use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::*;
use crate::message::{Message, Method};

const REALM: &str = "verde.example";
const SECRET: [u8; 32] = [7; 32];
const TTL: Duration = Duration::from_secs(300);
const T0: u64 = 1_700_000_000;

fn auth() -> DigestAuth {
    DigestAuth::new(REALM, SECRET, TTL)
}

fn accounts(user: &str) -> Option<Credentials> {
    match user {
        "alice" => Some(Credentials::Password("s3cret".into())),
        "bob" => Some(Credentials::Ha1 {
            md5: Some(ha1(Algorithm::Md5, "bob", REALM, "hunter2").to_ascii_uppercase()),
            sha256: None,
        }),
        _ => None,
    }
}

/// A quoted or token parameter from a challenge, parsed independently of the server code.
fn challenge_param<'a>(challenge: &'a str, name: &str) -> Option<&'a str> {
    let start = challenge.find(&format!("{name}="))? + name.len() + 1;
    let rest = &challenge[start..];
    match rest.strip_prefix('"') {
        Some(q) => q.split('"').next(),
        None => rest.split(',').next().map(str::trim),
    }
}

fn md5_hex(s: &str) -> String {
    hex(&Md5::digest(s.as_bytes()))
}

fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

/// What a phone does with a challenge (RFC 7616 3.4.1), written out by hand.
fn client_authorization(
    challenge: &str,
    user: &str,
    password: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let realm = challenge_param(challenge, "realm").unwrap();
    let nonce = challenge_param(challenge, "nonce").unwrap();
    let alg = challenge_param(challenge, "algorithm").unwrap();
    let h = |s: &str| match alg {
        "MD5" => md5_hex(s),
        "SHA-256" => sha256_hex(s),
        other => panic!("unexpected algorithm {other}"),
    };
    let ha1 = h(&format!("{user}:{realm}:{password}"));
    let ha2 = h(&format!("REGISTER:{uri}"));
    let nc = format!("{nc:08x}");
    let response = h(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm={alg}, cnonce=\"{cnonce}\", qop=auth, nc={nc}"
    )
}

fn register(authorization: Option<&str>) -> Request {
    let mut text = "REGISTER sip:verde.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-reg;rport\r\n\
From: <sip:alice@verde.example>;tag=a1\r\n\
To: <sip:alice@verde.example>\r\n\
Call-ID: reg-1@192.0.2.10\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:alice@192.0.2.10:5060>\r\n"
        .to_owned();
    if let Some(a) = authorization {
        text.push_str(&format!("Authorization: {a}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    match Message::parse(text.as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    }
}

fn answer(
    auth: &DigestAuth,
    alg_index: usize,
    user: &str,
    pw: &str,
    nc: u32,
    now: u64,
) -> (String, String) {
    let challenges = auth.challenge(now, false);
    let c = challenges[alg_index].clone();
    (
        client_authorization(&c, user, pw, "sip:verde.example", nc, "0a4f113b"),
        c,
    )
}

#[test]
fn rfc7616_and_rfc2617_vectors() {
    let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    let realm = "http-auth@example.org";
    for (alg, want) in [
        (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
        (
            Algorithm::Sha256,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ] {
        let ha1 = ha1(alg, "Mufasa", realm, "Circle of Life");
        let got = response_hex(
            alg,
            &ha1,
            "GET",
            "/dir/index.html",
            nonce,
            Some(("00000001", cnonce)),
        );
        assert_eq!(got, want, "RFC 7616 3.9.1 {alg:?}");
    }
    // RFC 2617 3.5.
    let ha1 = ha1(
        Algorithm::Md5,
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
    );
    let got = response_hex(
        Algorithm::Md5,
        &ha1,
        "GET",
        "/dir/index.html",
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        Some(("00000001", "0a4f113b")),
    );
    assert_eq!(got, "6629fae49393a05397450978507c4ef1");
}

#[test]
fn parses_rfc7616_authorization() {
    let value = "Digest username=\"Mufasa\",\r\n realm=\"http-auth@example.org\", \
        uri=\"/dir/index.html\", algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
        nc=00000001, cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, \
        response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\", \
        opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\", note=\"a \\\"quoted\\\", comma\"";
    let p = parse_digest(value).unwrap();
    assert_eq!(p.get("username"), Some("Mufasa"));
    assert_eq!(p.get("ALGORITHM"), Some("SHA-256"));
    assert_eq!(p.get("nc"), Some("00000001"));
    assert_eq!(p.get("qop"), Some("auth"));
    assert_eq!(p.get("note"), Some("a \"quoted\", comma"));
    assert_eq!(
        p.get("opaque"),
        Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
    );
    assert!(parse_digest("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==").is_none());
    assert!(
        parse_digest("Digest realm=\"open").is_none(),
        "unterminated quote"
    );
}

#[test]
fn challenge_offers_sha256_then_md5_with_one_fresh_nonce() {
    let a = auth();
    let c = a.challenge(T0, false);
    assert_eq!(c.len(), 2);
    assert_eq!(challenge_param(&c[0], "algorithm"), Some("SHA-256"));
    assert_eq!(challenge_param(&c[1], "algorithm"), Some("MD5"));
    for v in &c {
        assert!(v.starts_with("Digest "));
        assert_eq!(challenge_param(v, "realm"), Some(REALM));
        assert_eq!(challenge_param(v, "qop"), Some("auth"));
        assert!(!v.contains("stale"));
    }
    assert_eq!(
        challenge_param(&c[0], "nonce"),
        challenge_param(&c[1], "nonce")
    );
    let again = a.challenge(T0, true);
    assert_ne!(
        challenge_param(&again[0], "nonce"),
        challenge_param(&c[0], "nonce"),
        "two challenges in the same second must not share a nonce (nonce-counts would clash)"
    );
    assert!(again.iter().all(|v| v.ends_with(", stale=TRUE")));
    let quoted = DigestAuth::new("a \"b\"", SECRET, TTL).challenge(T0, false);
    assert!(quoted[0].starts_with("Digest realm=\"a \\\"b\\\"\", "));
}

#[test]
fn round_trip_sha256_and_md5() {
    for alg_index in [0, 1] {
        let mut a = auth();
        let (authz, _) = answer(&a, alg_index, "alice", "s3cret", 1, T0);
        let req = register(Some(&authz));
        assert_eq!(
            a.verify(&req, "Authorization", accounts, T0 + 1),
            Ok("alice".to_owned())
        );
    }
}

#[test]
fn proxy_authorization_and_precomputed_ha1() {
    let mut a = auth();
    let (authz, _) = answer(&a, 1, "bob", "hunter2", 1, T0);
    let mut req = register(None);
    req.headers.push("Proxy-Authorization", authz.clone());
    assert_eq!(
        a.verify(&req, "Proxy-Authorization", accounts, T0),
        Ok("bob".to_owned())
    );
    assert_eq!(
        a.verify(&req, "Authorization", accounts, T0),
        Err(AuthError::Missing)
    );
    // bob has no SHA-256 HA1: even the right password cannot answer that way.
    let (authz, _) = answer(&a, 0, "bob", "hunter2", 1, T0);
    assert_eq!(
        a.verify(&register(Some(&authz)), "Authorization", accounts, T0),
        Err(AuthError::BadResponse)
    );
}

#[test]
fn wrong_password_and_unknown_user_are_failures() {
    let mut a = auth();
    let (authz, _) = answer(&a, 0, "alice", "guess", 1, T0);
    let err = a
        .verify(&register(Some(&authz)), "Authorization", accounts, T0)
        .unwrap_err();
    assert_eq!(err, AuthError::BadResponse);
    assert!(err.is_failure());
    let (authz, _) = answer(&a, 0, "mallory", "x", 1, T0);
    let err = a
        .verify(&register(Some(&authz)), "Authorization", accounts, T0)
        .unwrap_err();
    assert_eq!(err, AuthError::UnknownUser);
    assert!(err.is_failure());
    // A tampered method: the response was computed for REGISTER.
    let (authz, _) = answer(&a, 0, "alice", "s3cret", 1, T0);
    let mut req = register(Some(&authz));
    req.method = Method::Invite;
    assert_eq!(
        a.verify(&req, "Authorization", accounts, T0),
        Err(AuthError::BadResponse)
    );
}

#[test]
fn missing_credentials_are_not_failures() {
    let mut a = auth();
    let err = a
        .verify(&register(None), "Authorization", accounts, T0)
        .unwrap_err();
    assert_eq!(err, AuthError::Missing);
    assert!(!err.is_failure());
    let other_realm = DigestAuth::new("elsewhere", SECRET, TTL);
    let (authz, _) = answer(&other_realm, 0, "alice", "s3cret", 1, T0);
    assert_eq!(
        a.verify(&register(Some(&authz)), "Authorization", accounts, T0),
        Err(AuthError::Missing)
    );
    let basic = register(Some("Basic YWxpY2U6czNjcmV0"));
    assert_eq!(
        a.verify(&basic, "Authorization", accounts, T0),
        Err(AuthError::Missing)
    );
}

#[test]
fn malformed_credentials() {
    let mut a = auth();
    let (authz, _) = answer(&a, 0, "alice", "s3cret", 1, T0);
    let cases = [
        (authz.replace("qop=auth", "qop=auth-int"), "qop"),
        (
            authz.replace("algorithm=SHA-256", "algorithm=SHA-512-256"),
            "alg",
        ),
        (authz.replace(", nc=00000001", ""), "nc missing"),
        (authz.replace("nc=00000001", "nc=1"), "nc too short"),
        (authz.replace("cnonce=\"0a4f113b\", ", ""), "cnonce"),
        (authz.replace("response=", "resp="), "response"),
        (format!("{authz}, userhash=true"), "userhash"),
    ];
    for (value, what) in cases {
        let err = a
            .verify(&register(Some(&value)), "Authorization", accounts, T0)
            .unwrap_err();
        assert!(matches!(err, AuthError::Malformed(_)), "{what}: {err:?}");
        assert!(err.is_failure());
    }
}

#[test]
fn expired_nonce_is_stale_only_with_the_right_password() {
    let mut a = auth();
    let (authz, _) = answer(&a, 0, "alice", "s3cret", 1, T0);
    let req = register(Some(&authz));
    let late = T0 + TTL.as_secs();
    let err = a.verify(&req, "Authorization", accounts, late).unwrap_err();
    assert_eq!(err, AuthError::Stale);
    assert!(!err.is_failure());
    // One second earlier it was still fine.
    assert!(a.verify(&req, "Authorization", accounts, late - 1).is_ok());
    let (wrong, _) = answer(&a, 0, "alice", "guess", 1, T0);
    assert_eq!(
        a.verify(&register(Some(&wrong)), "Authorization", accounts, late),
        Err(AuthError::BadResponse)
    );
    // A nonce from the future (another node's clock far ahead) is not honoured either.
    let (future, _) = answer(&a, 0, "alice", "s3cret", 1, T0 + 3600);
    assert_eq!(
        a.verify(&register(Some(&future)), "Authorization", accounts, T0),
        Err(AuthError::Stale)
    );
}

#[test]
fn nonce_from_another_secret_or_tampered_is_stale() {
    let mut a = auth();
    let other = DigestAuth::new(REALM, [9; 32], TTL);
    let (authz, _) = answer(&other, 0, "alice", "s3cret", 1, T0);
    assert_eq!(
        a.verify(&register(Some(&authz)), "Authorization", accounts, T0),
        Err(AuthError::Stale)
    );
    // Push the timestamp forward to extend the nonce's life: the MAC no longer matches.
    let (authz, c) = answer(&a, 0, "alice", "s3cret", 1, T0);
    let nonce = challenge_param(&c, "nonce").unwrap();
    let forged_nonce = format!("{:016x}{}", T0 + 10_000, &nonce[16..]);
    let forged = client_authorization(
        &c.replace(nonce, &forged_nonce),
        "alice",
        "s3cret",
        "sip:verde.example",
        1,
        "x",
    );
    assert_eq!(
        a.verify(
            &register(Some(&forged)),
            "Authorization",
            accounts,
            T0 + 5_000
        ),
        Err(AuthError::Stale)
    );
    assert!(a
        .verify(&register(Some(&authz)), "Authorization", accounts, T0)
        .is_ok());
}

#[test]
fn nonce_count_must_increase() {
    let mut a = auth();
    let (first, c) = answer(&a, 0, "alice", "s3cret", 1, T0);
    let req = register(Some(&first));
    assert!(a.verify(&req, "Authorization", accounts, T0).is_ok());
    let err = a.verify(&req, "Authorization", accounts, T0).unwrap_err();
    assert_eq!(err, AuthError::Replay);
    assert!(!err.is_failure());
    let uri = "sip:verde.example";
    let third = client_authorization(&c, "alice", "s3cret", uri, 3, "c3");
    assert!(a
        .verify(&register(Some(&third)), "Authorization", accounts, T0 + 1)
        .is_ok());
    let second = client_authorization(&c, "alice", "s3cret", uri, 2, "c2");
    assert_eq!(
        a.verify(&register(Some(&second)), "Authorization", accounts, T0 + 2),
        Err(AuthError::Replay)
    );
}

#[test]
fn rfc2069_answer_without_qop_is_single_use() {
    let mut a = auth();
    let c = a.challenge(T0, false)[1].clone();
    let nonce = challenge_param(&c, "nonce").unwrap();
    let uri = "sip:verde.example";
    let ha1 = md5_hex(&format!("alice:{REALM}:s3cret"));
    let ha2 = md5_hex(&format!("REGISTER:{uri}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
    let authz = format!(
        "Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{}\"",
        response.to_ascii_uppercase()
    );
    let req = register(Some(&authz));
    assert_eq!(
        a.verify(&req, "Authorization", accounts, T0),
        Ok("alice".into())
    );
    assert_eq!(
        a.verify(&req, "Authorization", accounts, T0),
        Err(AuthError::Replay)
    );
}

#[test]
fn tracked_nonces_are_dropped_once_expired() {
    let mut a = auth();
    for i in 0..20 {
        let (authz, _) = answer(&a, 0, "alice", "s3cret", 1, T0 + i);
        assert!(a
            .verify(&register(Some(&authz)), "Authorization", accounts, T0 + i)
            .is_ok());
    }
    assert_eq!(a.tracked_nonces(), 20);
    let later = T0 + 19 + TTL.as_secs();
    let (authz, _) = answer(&a, 0, "alice", "s3cret", 1, later);
    assert!(a
        .verify(&register(Some(&authz)), "Authorization", accounts, later)
        .is_ok());
    assert_eq!(a.tracked_nonces(), 1, "expired nonces were not evicted");
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
}

#[test]
fn limiter_blocks_after_n_failures_then_expires() {
    let mut l = FailureLimiter::default();
    let t0 = Instant::now();
    for i in 0..4 {
        assert!(!l.record_failure(ip(1), t0 + Duration::from_secs(i)));
        assert!(l.check(ip(1), t0 + Duration::from_secs(i)));
    }
    let t5 = t0 + Duration::from_secs(10);
    assert!(
        l.record_failure(ip(1), t5),
        "fifth failure starts the block"
    );
    assert!(!l.check(ip(1), t5));
    assert!(l.check(ip(2), t5), "other sources are unaffected");
    assert!(
        !l.record_failure(ip(1), t5 + Duration::from_secs(1)),
        "the block is reported once"
    );
    let end = t5 + Duration::from_secs(300);
    assert!(!l.check(ip(1), end - Duration::from_millis(1)));
    assert!(l.check(ip(1), end));
    // After the block the count starts again from zero.
    assert!(!l.record_failure(ip(1), end));
    assert!(l.check(ip(1), end));
}

#[test]
fn limiter_window_slides_and_success_forgives() {
    let mut l = FailureLimiter::new(3, Duration::from_secs(60), Duration::from_secs(60));
    let t0 = Instant::now();
    // Failures 40 s apart never put 3 inside one 60 s window.
    for i in 0..10 {
        assert!(!l.record_failure(ip(1), t0 + Duration::from_secs(40 * i)));
    }
    assert!(l.check(ip(1), t0 + Duration::from_secs(400)));
    let t = t0 + Duration::from_secs(1000);
    l.record_failure(ip(3), t);
    l.record_failure(ip(3), t);
    l.record_success(ip(3));
    assert!(!l.record_failure(ip(3), t), "success cleared the count");
    assert!(!l.record_failure(ip(3), t));
    assert!(l.record_failure(ip(3), t));
    l.record_success(ip(3));
    assert!(!l.check(ip(3), t), "success does not lift a block");
}

#[test]
fn limiter_groups_ipv6_by_64() {
    let mut l = FailureLimiter::new(2, Duration::from_secs(60), Duration::from_secs(60));
    let t = Instant::now();
    let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    l.record_failure(a, t);
    assert!(l.record_failure(b, t));
    assert!(!l.check(a, t) && !l.check(b, t));
    assert!(l.check(c, t));
    let mapped: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
    l.record_failure(mapped, t);
    assert!(l.record_failure(ip(7), t));
    assert!(!l.check(mapped, t));
}

#[test]
fn limiter_memory_is_bounded_and_keeps_blocks() {
    let mut l = FailureLimiter::new(2, Duration::from_secs(60), Duration::from_secs(300))
        .with_max_sources(8);
    let t0 = Instant::now();
    l.record_failure(ip(0), t0);
    assert!(l.record_failure(ip(0), t0));
    for i in 1..=200u8 {
        l.record_failure(ip(i), t0 + Duration::from_millis(u64::from(i)));
        assert!(l.tracked() <= 8, "tracked {}", l.tracked());
    }
    assert!(!l.check(ip(0), t0 + Duration::from_secs(1)), "block lost");
    // Once everything lapses, new sources push out the stale ones.
    let later = t0 + Duration::from_secs(600);
    l.record_failure(ip(250), later);
    assert_eq!(l.tracked(), 1);
}
