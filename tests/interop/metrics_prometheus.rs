//! `/metrics` as Prometheus reads it: both text formats parse with a parser that follows them,
//! and the counters move by exactly what the peers did. SIPp (over TCP, so nothing is
//! retransmitted) makes a call the IVR answers, a call refused 488 for want of a common codec
//! and a call to a number nobody serves (404); a raw UDP request with a broken header gets a
//! stateless 400. What SIPp logged it sent and received is the expected change of verde's SIP
//! counters, and the stored records are the expected change of `verde_calls_total`.

use openmetrics_parser::{OpenMetricsValue, PrometheusValue};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;
use verde_interop::flows::{INPS, UNKNOWN_DID};
use verde_interop::http::{parse_response, HttpResponse};
use verde_interop::sipp::{scenario, Sipp, SippOutcome, Transport};
use verde_interop::verde::{field, Verde, VerdeOptions};
use verde_interop::{require_private_netns, try_wait_for, TestDir};

/// Every sample as `name{k=v,...}` (labels sorted, values unescaped) -> value.
type Samples = BTreeMap<String, f64>;

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    l.sort();
    format!("{name}{{{}}}", l.join(","))
}

fn sample_key(name: &str, ls: openmetrics_parser::LabelSet) -> String {
    let l: Vec<(String, String)> = ls.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    key(name, &l)
}

/// `GET /metrics` with `accept` (None: no Accept header at all, as `curl` without options).
fn get_metrics(addr: SocketAddr, accept: Option<&str>) -> HttpResponse {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to http://{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send GET /metrics");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read /metrics");
    let r = parse_response(&raw).unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    r
}

/// Scrapes in the Prometheus text format (what `curl` gets) and parses it.
fn scrape(verde: &Verde) -> (Samples, String) {
    let r = get_metrics(verde.http, None);
    let ct = r.header("content-type").unwrap_or_default().to_string();
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "content type {ct:?}"
    );
    let text = r.text();
    let exp = openmetrics_parser::prometheus::parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("/metrics is not valid Prometheus text ({e}):\n{text}"));
    let mut out = Samples::new();
    for (name, family) in &exp.families {
        let help = family.help.trim();
        assert!(!help.is_empty(), "{name} has no HELP:\n{text}");
        for s in family.iter_samples() {
            let v = match &s.value {
                PrometheusValue::Counter(c) => {
                    assert!(name.ends_with("_total"), "counter {name} lacks _total");
                    c.value.as_f64()
                }
                PrometheusValue::Gauge(n) => n.as_f64(),
                other => panic!("{name}: unexpected {other:?} (every verde metric is typed)"),
            };
            out.insert(sample_key(name, s.get_labelset().unwrap()), v);
        }
    }
    (out, text)
}

/// Scrapes as Prometheus itself asks (OpenMetrics preferred) and parses it strictly.
fn scrape_openmetrics(verde: &Verde) -> Samples {
    let accept = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    let r = get_metrics(verde.http, Some(accept));
    let ct = r.header("content-type").unwrap_or_default().to_string();
    assert!(
        ct.starts_with("application/openmetrics-text"),
        "content type {ct:?}"
    );
    let text = r.text();
    assert!(text.ends_with("# EOF\n"), "OpenMetrics must end with # EOF");
    let exp = openmetrics_parser::openmetrics::parse_openmetrics(&text)
        .unwrap_or_else(|e| panic!("/metrics is not valid OpenMetrics ({e}):\n{text}"));
    let mut out = Samples::new();
    for (name, family) in &exp.families {
        for s in family.iter_samples() {
            let (name, v) = match &s.value {
                OpenMetricsValue::Counter(c) => (format!("{name}_total"), c.value.as_f64()),
                OpenMetricsValue::Gauge(n) => (name.clone(), n.as_f64()),
                other => panic!("{name}: unexpected {other:?}"),
            };
            out.insert(sample_key(&name, s.get_labelset().unwrap()), v);
        }
    }
    out
}

/// What SIPp logged, message by message: (sent?, start line, CSeq method).
fn sipp_messages(out: &SippOutcome) -> Vec<(bool, String, String)> {
    let mut msgs: Vec<(bool, String, String)> = Vec::new();
    let mut sent = None;
    for line in out.messages.replace('\r', "").lines() {
        let l = line.trim();
        if l.starts_with("-----") {
            sent = None;
            continue;
        }
        if l.contains("message sent") {
            sent = Some(true);
            continue;
        }
        if l.contains("message received") {
            sent = Some(false);
            continue;
        }
        let Some(dir) = sent else { continue };
        let is_status = l.starts_with("SIP/2.0 ");
        let is_request = l.ends_with(" SIP/2.0") && l.split(' ').count() == 3;
        if is_status || is_request {
            msgs.push((dir, l.to_string(), String::new()));
        } else if let Some(v) = l
            .split_once(':')
            .filter(|(h, _)| h.trim().eq_ignore_ascii_case("cseq"))
            .map(|(_, v)| v)
        {
            if let Some(m) = msgs.last_mut().filter(|m| m.2.is_empty()) {
                m.2 = v.split_whitespace().nth(1).unwrap_or_default().to_string();
            }
        }
    }
    msgs
}

/// Adds to `expected` what verde must have counted for one SIPp run.
fn expect_from_sipp(expected: &mut Samples, out: &SippOutcome) {
    for (sipp_sent, start, method) in sipp_messages(out) {
        assert!(
            !method.is_empty(),
            "no CSeq for {start:?} in\n{}",
            out.report()
        );
        let k = if let Some(rest) = start.strip_prefix("SIP/2.0 ") {
            let code = &rest[..3];
            let name = if sipp_sent {
                "verde_sip_responses_received_total"
            } else {
                "verde_sip_responses_total"
            };
            key(name, &[("code", code), ("method", &method)])
        } else {
            let m = start.split(' ').next().unwrap();
            let name = if sipp_sent {
                "verde_sip_requests_total"
            } else {
                "verde_sip_requests_sent_total"
            };
            key(name, &[("method", m)])
        };
        *expected.entry(k).or_default() += 1.0;
    }
}

/// The change of every SIP and call counter between two scrapes (zero changes left out).
fn counter_deltas(before: &Samples, after: &Samples) -> Samples {
    after
        .iter()
        .filter(|(k, _)| {
            let name = k.split('{').next().unwrap_or_default();
            (name.starts_with("verde_sip_") && name.ends_with("_total"))
                || name == "verde_calls_total"
        })
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

/// An INVITE whose SDP offers only G.729: verde answers 488 and records a refused call.
const UAC_NO_COMMON_CODEC: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac_no_common_codec">
  <send>
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "0612345678" <sip:0612345678@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:0612345678@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 18
      a=rtpmap:18 G729/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="488"/>
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: "0612345678" <sip:0612345678@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <timewait milliseconds="300"/>
</scenario>
"#;

#[test]
fn metrics_parse_in_both_formats_and_count_exactly_what_peers_did() {
    require_private_netns();
    let dir = TestDir::new("metrics_prometheus");
    let mut verde = Verde::start(&dir, VerdeOptions::default());

    let (before, text) = scrape(&verde);
    for name in [
        "verde_calls_active{}",
        "verde_registrations{}",
        "verde_agents{state=ready}",
        "verde_agents{state=loggedout}",
        "verde_rtp_packets_total{direction=sent}",
        "verde_rtp_packets_total{direction=received}",
    ] {
        assert!(before.contains_key(name), "no {name} in\n{text}");
    }
    assert!(
        before
            .keys()
            .any(|k| k.starts_with("verde_queue_callers{queue=")),
        "no per-queue callers gauge in\n{text}"
    );
    assert!(
        before
            .keys()
            .any(|k| k.starts_with("verde_queue_longest_wait_seconds{queue=")),
        "no longest-wait gauge in\n{text}"
    );

    let mut expected = Samples::new();

    // 1. A call the IVR answers; SIPp hangs up after 1.5 s of prompts.
    let call = scenario(
        &dir,
        "uac_call.xml",
        &[("ACTIONS", String::new()), ("LISTEN_MS", "1500".into())],
    );
    let answered = Sipp::new(&call, verde.sip)
        .service(INPS)
        .transport(Transport::Tcp)
        .timeout(Duration::from_secs(20))
        .run(&dir);
    answered.assert_success("a call the IVR answers, over TCP");
    expect_from_sipp(&mut expected, &answered);

    // 2. No common codec: 488, and a record of the refused call.
    let no_codec = dir.join("uac_no_common_codec.xml");
    std::fs::write(&no_codec, UAC_NO_COMMON_CODEC).unwrap();
    let refused = Sipp::new(&no_codec, verde.sip)
        .service(INPS)
        .transport(Transport::Tcp)
        .timeout(Duration::from_secs(15))
        .run(&dir);
    refused.assert_success("an INVITE offering only G.729, expecting 488");
    expect_from_sipp(&mut expected, &refused);

    // 3. A number nobody serves: 404, refused before any call starts (no record).
    let not_found = scenario(&dir, "uac_expect_status.xml", &[("STATUS", "404".into())]);
    let unknown = Sipp::new(&not_found, verde.sip)
        .service(UNKNOWN_DID)
        .transport(Transport::Tcp)
        .timeout(Duration::from_secs(15))
        .run(&dir);
    unknown.assert_success(&format!("INVITE to {UNKNOWN_DID}, expecting 404"));
    expect_from_sipp(&mut expected, &unknown);

    // 4. A request with a header line that has no colon: a stateless 400.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    let port = verde.sip.port();
    let bad = format!(
        "INVITE sip:{INPS}@127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKmetrics400;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:0612345678@127.0.0.1>;tag=m400\r\n\
         To: <sip:{INPS}@127.0.0.1:{port}>\r\n\
         Call-ID: metrics-400@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         This is not a header\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.send_to(bad.as_bytes(), verde.sip).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 65535];
    let (n, _) = sock
        .recv_from(&mut buf)
        .expect("verde answers a malformed INVITE within 5 s");
    let resp = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        resp.starts_with("SIP/2.0 400"),
        "expected a 400, got:\n{resp}"
    );
    for (k, n) in [
        (
            key("verde_sip_requests_total", &[("method", "INVITE")]),
            1.0,
        ),
        (
            key(
                "verde_sip_responses_total",
                &[("code", "400"), ("method", "INVITE")],
            ),
            1.0,
        ),
        (key("verde_sip_malformed_total", &[]), 1.0),
    ] {
        *expected.entry(k).or_default() += n;
    }

    // The calls that started a call task left records: those are what verde_calls_total counts.
    for (out, what) in [(&answered, "answered call"), (&refused, "488 call")] {
        let record = verde.wait_call_record(&out.call_id, Duration::from_secs(10));
        let disposition = field(&record, "disposition").as_str().unwrap().to_string();
        let channel = field(&record, "channel").as_str().unwrap().to_string();
        if out.call_id == refused.call_id {
            assert_eq!(disposition, "rejected", "{what}: {record:#}");
            assert_eq!(
                field(&record, "sip_status").as_u64(),
                Some(488),
                "{record:#}"
            );
        } else {
            assert!(
                !field(&record, "answered_at").is_null(),
                "{what}: {record:#}"
            );
        }
        *expected
            .entry(key(
                "verde_calls_total",
                &[("channel", &channel), ("disposition", &disposition)],
            ))
            .or_default() += 1.0;
    }

    // Counters move as messages leave and records are handed over; wait for them to settle.
    let mut last = (Samples::new(), String::new());
    let settled = try_wait_for(Duration::from_secs(10), || {
        last = scrape(&verde);
        (counter_deltas(&before, &last.0) == expected).then_some(())
    });
    let deltas = counter_deltas(&before, &last.0);
    assert!(
        settled.is_some(),
        "counters did not move by exactly what the peers did\nexpected: {expected:#?}\ngot: {deltas:#?}\nscrape:\n{}",
        last.1
    );
    eprintln!("counter changes, as expected: {deltas:#?}");
    // Independent of SIPp's log: verde counted each answer this test is about once.
    for (code, n) in [("200", 1.0), ("488", 1.0), ("404", 1.0), ("400", 1.0)] {
        let k = key(
            "verde_sip_responses_total",
            &[("code", code), ("method", "INVITE")],
        );
        assert_eq!(deltas.get(&k), Some(&n), "verde counted {k}: {deltas:#?}");
    }

    let after = last.0;
    assert_eq!(
        after.get("verde_calls_active{}"),
        Some(&0.0),
        "no call left"
    );
    for dir in ["sent", "received"] {
        let k = format!("verde_rtp_packets_total{{direction={dir}}}");
        assert!(after[&k] >= before[&k], "{k} went down");
    }
    // The call the IVR answered heard its prompts: verde sent RTP, counted when the call ended.
    let sent = "verde_rtp_packets_total{direction=sent}";
    assert!(
        after[sent] > before[sent],
        "{sent} must grow by the prompt packets of the answered call: {} -> {}",
        before[sent],
        after[sent]
    );

    // Every call is over: no request of verde's is still routed to a call (a leak would keep
    // the answered INVITEs of agent legs and grow with every call).
    assert_eq!(after.get("verde_sip_routed_transactions{}"), Some(&0.0));
    // The transaction layer keeps ended transactions for retransmissions (up to 32 s).
    assert!(after.contains_key("verde_sip_transactions{side=server}"));
    assert!(after.contains_key("verde_sip_transactions{side=client}"));

    // OpenMetrics, as Prometheus asks for it: the same values, under a strict parser (the
    // transaction counts may change between the two scrapes as kept transactions end).
    let om = scrape_openmetrics(&verde);
    for (k, v) in &after {
        if k.starts_with("verde_sip_transactions{") {
            assert!(om.contains_key(k), "OpenMetrics lacks {k}");
        } else {
            assert_eq!(om.get(k), Some(v), "OpenMetrics disagrees on {k}");
        }
    }
    assert_eq!(
        om.len(),
        after.len(),
        "the two formats list different series"
    );
    verde.assert_running();
}
