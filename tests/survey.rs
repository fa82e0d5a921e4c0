//! What the post-call survey tests share: a SIPp caller whose every key waits for the test
//! (`uac_caller_released.xml`), the "release" the test sends it, and waits on verde's log lines
//! of one call.
//!
//! A survey question is asked by a prompt of several seconds and verde takes keys only once the
//! survey node has started (keys typed before are dropped), so a fully scripted SIPp would have
//! to guess how long the IVR, the queue and the agent's talk take. Here SIPp stops before each
//! key on a `<recv request="NOTIFY">`; the test waits for what verde logged (the node entered,
//! the previous key received) and then sends SIPp, on its own SIP port, a NOTIFY carrying the
//! call's Call-ID. SIPp files it under that call, and the step goes on.

use crate::acd::{call_log, LogLine};
use crate::pcap::{parse_rtp, read_pcap, shift_rtp_in_pcap, shipped_dtmf_pcap};
use crate::sipp::{scenario, SippRun};
use crate::verde::Verde;
use crate::{try_wait_for, TestDir};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One step of a released caller, taken when the test releases it.
#[derive(Debug, Clone)]
pub enum Step {
    /// Replays this RFC 4733 pcap (one key, from [`crate::pcap::dtmf_pcaps`]).
    Key(PathBuf),
    /// Sends BYE at once.
    HangUp,
}

/// A `uac_caller_released.xml` scenario for a caller From `caller`, taking `steps` one release
/// at a time; after the last one it stays up to `listen_ms` for verde's BYE (answered 200), then
/// hangs up itself. A [`Step::HangUp`] ends the steps.
pub fn released_caller_scenario(
    dir: &TestDir,
    caller: &str,
    steps: &[Step],
    listen_ms: u64,
) -> PathBuf {
    let mut xml = String::new();
    for (i, step) in steps.iter().enumerate() {
        xml.push_str(&format!("  <!-- step {} -->\n", i + 1));
        match step {
            Step::Key(pcap) => xml.push_str(&format!(
                "  <recv request=\"NOTIFY\"/>\n  <nop>\n    <action>\n      <exec play_pcap_audio=\"{}\"/>\n    </action>\n  </nop>\n",
                pcap.display()
            )),
            Step::HangUp => {
                xml.push_str("  <recv request=\"NOTIFY\" next=\"we_hang_up\"/>\n");
                break;
            }
        }
    }
    scenario(
        dir,
        "uac_caller_released.xml",
        &[
            ("CALLER", caller.to_string()),
            ("STEPS", xml),
            ("LISTEN_MS", listen_ms.to_string()),
        ],
    )
}

/// pcaps for SIPp to replay `digits` one after another as one RTP stream: the sequence number
/// and timestamp of each digit carry on from the previous one (100 packets and 1 s of RTP time
/// later). SIPp's shipped pcaps do not share their numbers (`dtmf_2833_0.pcap` starts at
/// sequence 12080, `dtmf_2833_2.pcap` at 8042), so shifting each file by a fixed step from its
/// own start, as [`crate::pcap::dtmf_pcaps`] does, can send a later key with an earlier
/// sequence number and timestamp than the key before, which a receiver rightly drops as stale.
pub fn dtmf_stream_pcaps(dir: &TestDir, digits: &str) -> Vec<PathBuf> {
    let first_rtp = |path: &std::path::Path| {
        read_pcap(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .iter()
            .find_map(|d| parse_rtp(&d.payload))
            .unwrap_or_else(|| panic!("{} holds no RTP", path.display()))
    };
    let mut base = None;
    digits
        .chars()
        .enumerate()
        .map(|(i, d)| {
            let shipped = shipped_dtmf_pcap(d);
            let own = first_rtp(&shipped);
            let (seq0, ts0) = *base.get_or_insert((own.seq, own.timestamp));
            let seq = seq0.wrapping_add(100 * i as u16);
            let ts = ts0.wrapping_add(8000 * i as u32);
            let out = dir.join(format!("dtmf-stream-{i}.pcap"));
            shift_rtp_in_pcap(
                &shipped,
                &out,
                seq.wrapping_sub(own.seq),
                ts.wrapping_sub(own.timestamp),
            )
            .unwrap_or_else(|e| panic!("rewriting {}: {e}", shipped.display()));
            out
        })
        .collect()
}

/// Releases the steps of one running [`released_caller_scenario`].
pub struct Releaser {
    sock: UdpSocket,
    sipp: SocketAddr,
    call_id: String,
    sent: u32,
}

impl Releaser {
    /// Waits (up to 10 s) until SIPp has sent its INVITE, to learn the call's Call-ID.
    pub fn new(run: &SippRun) -> Releaser {
        let call_id = try_wait_for(Duration::from_secs(10), || {
            invite_call_id(&run.messages_so_far())
        })
        .unwrap_or_else(|| {
            panic!(
                "SIPp logged no INVITE with a Call-ID within 10 s; its messages so far:\n{}",
                run.messages_so_far()
            )
        });
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the releaser's UDP socket");
        Releaser {
            sock,
            sipp: SocketAddr::from(([127, 0, 0, 1], run.local_port)),
            call_id,
            sent: 0,
        }
    }

    /// The call's SIP Call-ID (verde's `call_id`).
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Lets SIPp take its next step. Must only be sent while SIPp waits for it: anything SIPp
    /// receives elsewhere in the scenario is an unexpected message and aborts the call.
    pub fn release(&mut self) {
        self.sent += 1;
        let local = self.sock.local_addr().expect("releaser socket address");
        let n = self.sent;
        let msg = format!(
            "NOTIFY sip:caller@{sipp} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-verde-test-release-{n}\r\n\
             From: <sip:test@{local}>;tag=release\r\n\
             To: <sip:caller@{sipp}>\r\n\
             Call-ID: {id}\r\n\
             CSeq: {n} NOTIFY\r\n\
             Event: verde-test-release\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            sipp = self.sipp,
            id = self.call_id,
        );
        self.sock
            .send_to(msg.as_bytes(), self.sipp)
            .unwrap_or_else(|e| panic!("sending release {n} to SIPp at {}: {e}", self.sipp));
    }
}

/// The Call-ID of the first INVITE in a SIPp `-trace_msg` log.
fn invite_call_id(messages: &str) -> Option<String> {
    let at = messages.find("INVITE sip:")?;
    messages[at..]
        .lines()
        .find_map(|l| l.trim().strip_prefix("Call-ID:"))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Waits for verde's first log line of call `call_id` containing `needle`; on timeout fails
/// with `what` and the call's log lines.
pub fn wait_call_log(
    verde: &Verde,
    call_id: &str,
    needle: &str,
    what: &str,
    timeout: Duration,
) -> LogLine {
    try_wait_for(timeout, || {
        call_log(verde, call_id, needle).into_iter().next()
    })
    .unwrap_or_else(|| {
        panic!(
            "timed out after {timeout:?} waiting for {what} (a log line of call {call_id} \
                 containing {needle:?}); the call's log lines:\n{}",
            verde.call_logs(call_id)
        )
    })
}

/// Sleeps until `epoch_secs` (seconds since the Unix epoch, as [`LogLine::time`]); returns at
/// once if it has passed.
pub fn sleep_until(epoch_secs: f64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    if epoch_secs > now {
        std::thread::sleep(Duration::from_secs_f64(epoch_secs - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_id_of_the_first_invite_is_read_from_the_message_log() {
        let log = "----------------------------------------------- 2026\n\
                   UDP message sent (500 bytes):\n\n\
                   INVITE sip:803164@127.0.0.1:5060 SIP/2.0\n\
                   Via: SIP/2.0/UDP 127.0.0.1:20000;branch=z9hG4bK-1\n\
                   Call-ID: interop-7-3-1@127.0.0.1\n\
                   CSeq: 1 INVITE\n\n";
        assert_eq!(
            invite_call_id(log).as_deref(),
            Some("interop-7-3-1@127.0.0.1")
        );
        assert_eq!(invite_call_id("SIP/2.0 200 OK\nCall-ID: x\n"), None);
    }

    #[test]
    fn dtmf_stream_moves_forward_from_key_to_key() {
        let dir = TestDir::new("survey_dtmf_stream");
        let pcaps = dtmf_stream_pcaps(&dir, "10692");
        let mut last: Option<(u16, u32)> = None;
        for (p, d) in pcaps.iter().zip("10692".chars()) {
            let rtp: Vec<_> = read_pcap(p)
                .unwrap()
                .iter()
                .filter_map(|d| parse_rtp(&d.payload))
                .collect();
            assert!(!rtp.is_empty(), "{}", p.display());
            // The event is still the key's own (RFC 4733 payload: event code first).
            assert_eq!(u32::from(rtp[0].payload[0]), d.to_digit(10).unwrap());
            if let Some((seq, ts)) = last {
                let ahead = rtp[0].seq.wrapping_sub(seq);
                assert!(
                    (1..1000).contains(&ahead),
                    "key {d}: sequence {} after {seq}",
                    rtp[0].seq
                );
                assert!(
                    rtp[0].timestamp.wrapping_sub(ts) < 1 << 31 && rtp[0].timestamp != ts,
                    "key {d}: timestamp {} after {ts}",
                    rtp[0].timestamp
                );
            }
            last = rtp.last().map(|r| (r.seq, r.timestamp));
        }
    }
}
