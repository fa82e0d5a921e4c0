//! `verde-webrtc-load`: N concurrent browser-free calls to verde's `/webrtc` websocket, each
//! an offering `verde_webrtc::WebRtcLeg` on its own UDP socket (real ICE, DTLS and SRTP), so
//! the engine's cost per WebRTC call can be set against a SIP call's
//! (benches/load/webrtc-load.sh runs both).
//!
//! Each call sends the protocol's `call` with its offer, feeds the answer back, streams a
//! 440 Hz tone in 20 ms G.711 frames once connected (Opus on the wire with `--codec opus`,
//! which makes verde transcode), sends one RFC 4733 digit after `--dtmf-after` seconds, holds
//! for `--hold` seconds and hangs up. It checks that it heard the prompts (loud G.711 frames).
//! Prints `connected: ...` once every call is up or failed (the script starts measuring
//! then), a line per call, and totals.
//!
//! It is a load client only: it knows the signaling document (docs/webrtc.md), not the
//! engine's code.

mod call;
mod media;

use clap::{Parser, ValueEnum};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use verde_webrtc::{AudioCodec, DtlsIdentity};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Codec {
    Pcmu,
    Pcma,
    Opus,
}

#[derive(Parser, Debug)]
#[command(about = "Concurrent browser-free WebRTC calls against verde's /webrtc")]
struct Args {
    #[arg(long, default_value = "ws://127.0.0.1:8080/webrtc")]
    url: String,
    /// The number called (a DID of the flows).
    #[arg(long, default_value = "803164")]
    number: String,
    /// Concurrent calls.
    #[arg(long, default_value_t = 50)]
    calls: usize,
    /// Seconds each call is held once connected.
    #[arg(long, default_value_t = 30.0)]
    hold: f64,
    /// Codec offered (the only one, so verde must take it); opus makes verde transcode.
    #[arg(long, value_enum, default_value = "pcmu")]
    codec: Codec,
    /// Seconds after connecting when the digit is sent (after the welcome prompt); negative: none.
    #[arg(long, default_value_t = 4.0)]
    dtmf_after: f64,
    #[arg(long, default_value_t = '1')]
    digit: char,
    /// Milliseconds between call starts.
    #[arg(long, default_value_t = 20)]
    ramp_ms: u64,
    /// Local address for the UDP sockets and the host candidate.
    #[arg(long, default_value = "127.0.0.1")]
    ip: std::net::IpAddr,
    /// Seconds a call may take from opening the websocket to ICE+DTLS up.
    #[arg(long, default_value_t = 20.0)]
    connect_timeout: f64,
    /// Seconds of loud audio (prompts) a call must hear.
    #[arg(long, default_value_t = 1.0)]
    min_audio: f64,
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn figures(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    match (
        media::percentile(&v, 0.5),
        media::percentile(&v, 0.99),
        v.last(),
    ) {
        (Some(p50), Some(p99), Some(max)) => format!(
            "p50 {p50:.0} ms  p99 {p99:.0} ms  max {max:.0} ms  ({} calls)",
            v.len()
        ),
        _ => "n/a (no call)".into(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.calls == 0 {
        eprintln!("--calls must be at least 1");
        return ExitCode::from(2);
    }
    let identity = match DtlsIdentity::generate() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("cannot make a DTLS certificate: {e}");
            return ExitCode::from(2);
        }
    };
    let setup = Arc::new(call::Setup {
        url: args.url.clone(),
        number: args.number.clone(),
        codec: match args.codec {
            Codec::Pcmu => AudioCodec::Pcmu,
            Codec::Pcma => AudioCodec::Pcma,
            Codec::Opus => AudioCodec::Opus,
        },
        ip: args.ip,
        hold: Duration::from_secs_f64(args.hold),
        dtmf: (args.dtmf_after >= 0.0)
            .then(|| (Duration::from_secs_f64(args.dtmf_after), args.digit)),
        identity,
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        min_loud: (args.min_audio * 50.0).ceil() as u64,
    });
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let (up_tx, mut up_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(args.calls);
    for i in 0..args.calls {
        if i > 0 && args.ramp_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.ramp_ms)).await;
        }
        let setup = setup.clone();
        let up = up_tx.clone();
        tasks.push(tokio::spawn(
            async move { call::run(i + 1, &setup, up).await },
        ));
    }
    drop(up_tx);
    let (mut ok, mut told) = (0, 0);
    while let Some(connected) = up_rx.recv().await {
        told += 1;
        ok += usize::from(connected);
        if told == args.calls {
            break;
        }
    }
    println!(
        "connected: {ok} of {} calls up ({} failed) {:.1} s after the first started",
        args.calls,
        args.calls - ok,
        t0.elapsed().as_secs_f64()
    );
    let mut reports = Vec::with_capacity(args.calls);
    for (i, t) in tasks.into_iter().enumerate() {
        reports.push(t.await.unwrap_or_else(|e| call::CallReport {
            index: i + 1,
            failure: Some(format!("task failed: {e}")),
            ..Default::default()
        }));
    }
    let cpu = cpu_seconds() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    summarize(&args, &setup, &reports, cpu, wall)
}

fn summarize(
    args: &Args,
    setup: &call::Setup,
    reports: &[call::CallReport],
    cpu: f64,
    wall: f64,
) -> ExitCode {
    println!("--- verde-webrtc-load calls ---");
    for r in reports {
        let connect = r.connect.map_or("not connected".to_string(), |d| {
            format!("connected in {:.0} ms", ms(d))
        });
        let h = &r.heard;
        println!(
            "call {:3} {}: {}: {connect}; received {} packets ({} audio, {} loud = audio {}, {} lost); \
             sent {}{}{}; ended {}{}",
            r.index,
            r.call_id.as_deref().unwrap_or("-"),
            if r.failure.is_none() { "ok" } else { "FAILED" },
            h.packets,
            h.audio,
            h.loud,
            if r.heard_prompts(setup.min_loud) { "non-silent" } else { "SILENT" },
            h.lost,
            r.sent,
            if r.digit_sent { format!(" + DTMF '{}'", args.digit) } else { String::new() },
            if r.skipped > 0 { format!(" ({} slots skipped: tool late)", r.skipped) } else { String::new() },
            r.ended.as_deref().unwrap_or("-"),
            r.failure.as_deref().map(|f| format!(" -- {f}")).unwrap_or_default(),
        );
    }
    let ok = reports.iter().filter(|r| r.failure.is_none()).count();
    let codecs: std::collections::BTreeSet<String> = reports
        .iter()
        .filter_map(|r| r.wire_codec.map(|c| format!("{c:?}")))
        .collect();
    let sum = |f: &dyn Fn(&call::CallReport) -> u64| reports.iter().map(f).sum::<u64>();
    println!("--- verde-webrtc-load summary ---");
    println!(
        "calls:           {ok} ok, {} failed of {} (offered {:?}; on the wire: {})",
        reports.len() - ok,
        reports.len(),
        args.codec,
        if codecs.is_empty() {
            "-".into()
        } else {
            codecs.into_iter().collect::<Vec<_>>().join(", ")
        }
    );
    println!(
        "connect:         {}   (call sent -> ICE+DTLS up)",
        figures(reports.iter().filter_map(|r| r.connect.map(ms)).collect())
    );
    println!(
        "answer:          {}   (call sent -> SDP answer)",
        figures(reports.iter().filter_map(|r| r.answer.map(ms)).collect())
    );
    println!(
        "audio:           {} of {} calls heard the prompts; received {} packets ({} loud), {} lost; \
         sent {} packets, {} digits, {} slots skipped; {} connected events on the websocket",
        reports.iter().filter(|r| r.heard_prompts(setup.min_loud)).count(),
        reports.len(),
        sum(&|r| r.heard.packets),
        sum(&|r| r.heard.loud),
        sum(&|r| r.heard.lost),
        sum(&|r| r.sent),
        reports.iter().filter(|r| r.digit_sent).count(),
        sum(&|r| r.skipped),
        reports.iter().filter(|r| r.signaled_connected).count(),
    );
    println!(
        "legs:            {} ICE disconnects, {} datagrams rtc refused on our side",
        sum(&|r| r.disconnects),
        sum(&|r| r.rejected)
    );
    println!(
        "tool CPU:        {cpu:.2} s over {wall:.1} s = {:.1} % of a core",
        cpu / wall * 100.0
    );
    if ok == reports.len() {
        println!("result: OK");
        ExitCode::SUCCESS
    } else {
        for r in reports.iter().filter(|r| r.failure.is_some()).take(10) {
            println!(
                "  failed: call {}: {}",
                r.index,
                r.failure.as_deref().unwrap_or_default()
            );
        }
        println!("result: FAILED");
        ExitCode::FAILURE
    }
}
