//! Capturing loopback traffic with `dumpcap` (Wireshark's capture engine, what `tshark -w` runs)
//! and reading the classic pcap file back into UDP datagrams and RTP packets, so tests can check
//! what verde actually put on the wire rather than what it believes it sent.

use crate::wav::Audio;
use crate::{read_lossy, signal, tail, TestDir};
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running capture on `lo`.
pub struct Capture {
    child: Option<Child>,
    path: PathBuf,
    log: PathBuf,
}

/// One captured UDP datagram.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// Seconds since the epoch, microsecond resolution.
    pub time: f64,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: Vec<u8>,
}

impl Capture {
    /// Starts capturing `filter` (BPF syntax, e.g. `udp and portrange 20000-20039`) on `lo` and
    /// returns once dumpcap reports that it is capturing, so nothing sent afterwards is missed.
    pub fn start(dir: &TestDir, name: &str, filter: &str) -> Capture {
        let path = dir.join(format!("{name}.pcap"));
        let log = dir.join(format!("{name}.dumpcap.log"));
        let err = fs::File::create(&log).expect("create dumpcap log");
        let child = Command::new("dumpcap")
            .args(["-i", "lo", "-P", "-q", "-f", filter, "-w"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run dumpcap ({e}); tests/run.sh installs it (package tshark)")
            });
        let mut cap = Capture {
            child: Some(child),
            path,
            log,
        };
        let ready = crate::try_wait_for(Duration::from_secs(15), || {
            if let Some(status) = cap.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "dumpcap exited ({status}) before capturing: {}",
                    read_lossy(&cap.log)
                );
            }
            read_lossy(&cap.log).contains("Capturing on").then_some(())
        });
        if ready.is_none() {
            panic!(
                "timed out after 15 s waiting for dumpcap to print \"Capturing on\": {}",
                tail(&read_lossy(&cap.log), 10)
            );
        }
        cap
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the capture (dumpcap flushes on SIGINT) and returns the UDP datagrams it saw.
    pub fn stop(mut self) -> Vec<Datagram> {
        if let Some(mut child) = self.child.take() {
            let status = signal(&mut child, libc::SIGINT, Duration::from_secs(10));
            if !status.is_some_and(|s| s.success()) {
                panic!(
                    "dumpcap did not stop cleanly ({status:?}): {}",
                    read_lossy(&self.log)
                );
            }
        }
        read_pcap(&self.path).unwrap_or_else(|e| panic!("{}: {e}", self.path.display()))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&mut child, libc::SIGINT, Duration::from_secs(5));
        }
    }
}

/// Reads a classic pcap file (either byte order, µs or ns timestamps) and returns its IPv4 UDP
/// datagrams. Link types: Ethernet (what Linux `lo` reports), raw IP, Linux cooked v1/v2.
pub fn read_pcap(path: &Path) -> Result<Vec<Datagram>, String> {
    let data = fs::read(path).map_err(|e| format!("cannot read capture: {e}"))?;
    parse_pcap(&data)
}

pub fn parse_pcap(data: &[u8]) -> Result<Vec<Datagram>, String> {
    if data.len() < 24 {
        return Err(format!(
            "{} bytes is too short for a pcap header",
            data.len()
        ));
    }
    let magic = [data[0], data[1], data[2], data[3]];
    let (le, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
        [0x0a, 0x0d, 0x0d, 0x0a] => return Err("pcapng file; capture with dumpcap -P".into()),
        other => return Err(format!("not a pcap file (magic {other:02x?})")),
    };
    let u32_at = |b: &[u8], i: usize| {
        let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let linktype = u32_at(data, 20);
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let sec = u32_at(data, off);
        let frac = u32_at(data, off + 4);
        let incl = u32_at(data, off + 8) as usize;
        off += 16;
        if off + incl > data.len() {
            break; // a capture cut short while writing its last record
        }
        let frame = &data[off..off + incl];
        off += incl;
        let time = f64::from(sec) + f64::from(frac) / if nanos { 1e9 } else { 1e6 };
        if let Some(d) = udp_in_frame(linktype, frame, time) {
            out.push(d);
        }
    }
    Ok(out)
}

fn udp_in_frame(linktype: u32, frame: &[u8], time: f64) -> Option<Datagram> {
    let ip = match linktype {
        1 => {
            // Ethernet, possibly with one 802.1Q tag.
            let mut et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
            let mut start = 14;
            if et == 0x8100 {
                et = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
                start = 18;
            }
            if et != 0x0800 {
                return None;
            }
            frame.get(start..)?
        }
        101 | 228 => frame,
        113 => frame.get(16..)?,
        276 => frame.get(20..)?,
        _ => return None,
    };
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let udp = ip.get(ihl..total)?;
    if udp.len() < 8 {
        return None;
    }
    let src = SocketAddrV4::new(
        Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        u16::from_be_bytes([udp[0], udp[1]]),
    );
    let dst = SocketAddrV4::new(
        Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        u16::from_be_bytes([udp[2], udp[3]]),
    );
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]])).clamp(8, udp.len());
    Some(Datagram {
        time,
        src,
        dst,
        payload: udp[8..len].to_vec(),
    })
}

/// An RTP packet (RFC 3550), header fields and payload (CSRCs, extension and padding removed).
#[derive(Debug, Clone, PartialEq)]
pub struct Rtp {
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

pub fn parse_rtp(b: &[u8]) -> Option<Rtp> {
    if b.len() < 12 || b[0] >> 6 != 2 {
        return None;
    }
    let pt = b[1] & 0x7f;
    // RTCP shares the version bits; its packet types 200-204 show up as PT 72-76 with marker set.
    if (72..=76).contains(&pt) {
        return None;
    }
    let cc = usize::from(b[0] & 0x0f);
    let mut start = 12 + 4 * cc;
    if b[0] & 0x10 != 0 {
        let ext = b.get(start..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    let mut end = b.len();
    if b[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*b.last()?))?;
    }
    Some(Rtp {
        marker: b[1] & 0x80 != 0,
        payload_type: pt,
        seq: u16::from_be_bytes([b[2], b[3]]),
        timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        payload: b.get(start..end)?.to_vec(),
    })
}

/// The RTP packets of `datagrams` sent to `dst_port` from a source port within `src_ports`, in
/// capture order, with their capture times.
pub fn rtp_stream(
    datagrams: &[Datagram],
    src_ports: (u16, u16),
    dst_port: u16,
) -> Vec<(f64, SocketAddrV4, Rtp)> {
    datagrams
        .iter()
        .filter(|d| d.dst.port() == dst_port && (src_ports.0..=src_ports.1).contains(&d.src.port()))
        .filter_map(|d| parse_rtp(&d.payload).map(|r| (d.time, d.src, r)))
        .collect()
}

/// Where SIPp's package keeps its RFC 4733 pcaps (`dtmf_2833_<digit>.pcap`, payload type 101,
/// 140 ms, captured from a real device).
pub const SIPP_PCAP_DIR: &str = "/usr/share/sip-tester";

/// The pcap SIPp ships for `digit` (0-9, `*`, `#`).
pub fn shipped_dtmf_pcap(digit: char) -> PathBuf {
    let name = match digit {
        '0'..='9' => digit.to_string(),
        '*' => "star".into(),
        '#' => "pound".into(),
        other => panic!("SIPp ships no DTMF pcap for {other:?}"),
    };
    let p = Path::new(SIPP_PCAP_DIR).join(format!("dtmf_2833_{name}.pcap"));
    assert!(
        p.is_file(),
        "{} is missing: tests/run.sh installs sip-tester",
        p.display()
    );
    p
}

/// pcaps for SIPp to replay `digits` one after another in one call. SIPp replays a pcap verbatim
/// and all the shipped ones carry the same RTP sequence numbers and timestamp, so replaying two
/// in a row would look like one event retransmitted (RFC 4733 §2.5.1.3: same timestamp = same
/// event), and the same digit twice would rightly count once. The first digit uses the shipped
/// file as is; each later one is that file with sequence numbers and timestamp moved forward.
pub fn dtmf_pcaps(dir: &TestDir, digits: &str) -> Vec<PathBuf> {
    digits
        .chars()
        .enumerate()
        .map(|(i, d)| {
            let shipped = shipped_dtmf_pcap(d);
            if i == 0 {
                return shipped;
            }
            let out = dir.join(format!(
                "dtmf-{i}-{}.pcap",
                if d == '#' {
                    'p'
                } else if d == '*' {
                    's'
                } else {
                    d
                }
            ));
            // 100 packets and 1 s of RTP time per digit: far beyond one event's span.
            shift_rtp_in_pcap(&shipped, &out, 100 * i as u16, 8000 * i as u32)
                .unwrap_or_else(|e| panic!("rewriting {}: {e}", shipped.display()));
            out
        })
        .collect()
}

/// Copies an Ethernet/IPv4/UDP/RTP pcap adding `seq_add` to every RTP sequence number and
/// `ts_add` to every timestamp (UDP checksums are zeroed: "none" is valid for IPv4).
pub fn shift_rtp_in_pcap(src: &Path, dst: &Path, seq_add: u16, ts_add: u32) -> Result<(), String> {
    let mut data = fs::read(src).map_err(|e| e.to_string())?;
    if data.len() < 24 || data[..4] != [0xd4, 0xc3, 0xb2, 0xa1] || data[20..24] != [1, 0, 0, 0] {
        return Err("expected a little-endian microsecond Ethernet pcap".into());
    }
    let mut off = 24;
    while off + 16 <= data.len() {
        let incl =
            u32::from_le_bytes([data[off + 8], data[off + 9], data[off + 10], data[off + 11]])
                as usize;
        off += 16;
        let end = off + incl;
        if end > data.len() {
            return Err("truncated record".into());
        }
        let f = &mut data[off..end];
        if f.len() >= 14 + 20 && f[12..14] == [0x08, 0x00] && f[14 + 9] == 17 {
            let udp = 14 + usize::from(f[14] & 0x0f) * 4;
            if f.len() >= udp + 8 + 12 {
                f[udp + 6] = 0;
                f[udp + 7] = 0;
                let r = udp + 8;
                let seq = u16::from_be_bytes([f[r + 2], f[r + 3]]).wrapping_add(seq_add);
                f[r + 2..r + 4].copy_from_slice(&seq.to_be_bytes());
                let ts = u32::from_be_bytes([f[r + 4], f[r + 5], f[r + 6], f[r + 7]])
                    .wrapping_add(ts_add);
                f[r + 4..r + 8].copy_from_slice(&ts.to_be_bytes());
            }
        }
        off = end;
    }
    fs::write(dst, data).map_err(|e| e.to_string())
}

/// Builds an RTP packet (version 2, no CSRC, no extension).
pub fn rtp_packet(
    pt: u8,
    marker: bool,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + payload.len());
    b.push(0x80);
    b.push(pt | if marker { 0x80 } else { 0 });
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&ssrc.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// Writes a classic little-endian Ethernet pcap of UDP datagrams (`(seconds from start,
/// payload)`) from 127.0.0.1:10000 to 127.0.0.1:10002, the form SIPp's `play_pcap_audio` replays
/// (it keeps the payloads and timing and rewrites the addresses for the call).
pub fn write_udp_pcap(path: &Path, datagrams: &[(f64, Vec<u8>)]) {
    let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    for (t, payload) in datagrams {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        let total = u16::try_from(20 + 8 + payload.len()).expect("datagram fits in IPv4");
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let sum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&10000u16.to_be_bytes());
        frame.extend_from_slice(&10002u16.to_be_bytes());
        frame.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]); // no UDP checksum: valid for IPv4
        frame.extend_from_slice(payload);
        let micros = (t * 1e6).round() as u64;
        f.extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(&frame);
    }
    fs::write(path, f).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A pcap of `audio` (8 kHz) as 20 ms PCMU packets that continues the RTP stream of the first
/// `digits_before` pcaps from [`dtmf_pcaps`]: same SSRC, sequence numbers and timestamp carrying
/// on after the last digit. A caller that presses keys and then talks thus sends one stream from
/// one socket, as a phone does, and the far end sees no new source or sequence restart.
pub fn audio_pcap_after_dtmf(
    dir: &TestDir,
    name: &str,
    audio: &Audio,
    digits_before: usize,
) -> PathBuf {
    let shipped = read_pcap(&shipped_dtmf_pcap('1')).unwrap_or_else(|e| panic!("{e}"));
    let first = shipped
        .iter()
        .find_map(|d| parse_rtp(&d.payload))
        .expect("SIPp's dtmf_2833_1.pcap holds RTP");
    // dtmf_pcaps moves digit i by 100 packets and 8000 timestamp units.
    let n = digits_before.max(1) as u32;
    let seq0 = first.seq.wrapping_add((100 * n) as u16);
    let ts0 = first.timestamp.wrapping_add(8000 * n);
    let bytes = audio.to_ulaw();
    let datagrams: Vec<(f64, Vec<u8>)> = bytes
        .chunks_exact(160)
        .enumerate()
        .map(|(i, chunk)| {
            let rtp = rtp_packet(
                0,
                i == 0,
                seq0.wrapping_add(i as u16),
                ts0.wrapping_add(160 * i as u32),
                first.ssrc,
                chunk,
            );
            (i as f64 * 0.020, rtp)
        })
        .collect();
    let path = dir.join(format!("{name}.pcap"));
    write_udp_pcap(&path, &datagrams);
    path
}

/// Inter-arrival gaps in milliseconds.
pub fn gaps_ms(times: &[f64]) -> Vec<f64> {
    times.windows(2).map(|w| (w[1] - w[0]) * 1000.0).collect()
}

/// The `q`-quantile (0..=1, nearest rank) of `values`.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    assert!(!values.is_empty(), "quantile of no values");
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let idx = ((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1);
    v[idx]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp_bytes(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
        b[2..4].copy_from_slice(&seq.to_be_bytes());
        b[4..8].copy_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    fn eth_udp_frame(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 2,
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn reads_udp_and_rtp_from_a_little_endian_ethernet_pcap() {
        let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&65535u32.to_le_bytes());
        file.extend_from_slice(&1u32.to_le_bytes());
        for (i, (sport, pt)) in [(20000u16, 0u8), (20000, 101), (5060, 0)]
            .iter()
            .enumerate()
        {
            let payload = rtp_bytes(*pt, 7 + i as u16, 160 * i as u32, &[0xff; 160]);
            let frame = eth_udp_frame(*sport, 6000, &payload);
            file.extend_from_slice(&100u32.to_le_bytes());
            file.extend_from_slice(&(20_000 * i as u32).to_le_bytes());
            file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            file.extend_from_slice(&frame);
        }
        let d = parse_pcap(&file).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[1].src.to_string(), "127.0.0.1:20000");
        assert_eq!(d[1].dst.to_string(), "127.0.0.2:6000");
        assert!((d[1].time - 100.02).abs() < 1e-9);
        let s = rtp_stream(&d, (20000, 20039), 6000);
        assert_eq!(
            s.len(),
            2,
            "the datagram from port 5060 is outside the range"
        );
        assert_eq!(s[1].2.payload_type, 101);
        assert_eq!(s[1].2.seq, 8);
        assert_eq!(s[0].2.payload.len(), 160);
    }

    #[test]
    fn rejects_pcapng_and_rtcp() {
        assert!(parse_pcap(&[
            0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ])
        .unwrap_err()
        .contains("pcapng"));
        let mut sr = rtp_bytes(200, 0, 0, &[0; 16]);
        sr[1] = 200;
        assert!(parse_rtp(&sr).is_none());
        assert!(parse_rtp(&rtp_bytes(0, 1, 2, &[1, 2, 3])).is_some());
    }

    #[test]
    fn shifted_dtmf_pcap_moves_seq_and_timestamp_only() {
        let dir = TestDir::new("unit-dtmf-shift");
        let src = dir.join("src.pcap");
        let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&65535u32.to_le_bytes());
        file.extend_from_slice(&1u32.to_le_bytes());
        let payload = rtp_bytes(101, 65535, 23200, &[1, 0x0a, 0, 0]);
        let frame = eth_udp_frame(49176, 10000, &payload);
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        file.extend_from_slice(&frame);
        fs::write(&src, &file).unwrap();
        let dst = dir.join("dst.pcap");
        shift_rtp_in_pcap(&src, &dst, 2, 8000).unwrap();
        let d = read_pcap(&dst).unwrap();
        let r = parse_rtp(&d[0].payload).unwrap();
        assert_eq!(r.seq, 1, "sequence numbers wrap");
        assert_eq!(r.timestamp, 31200);
        assert_eq!(r.payload_type, 101);
        assert_eq!(r.payload, vec![1, 0x0a, 0, 0]);
        assert_eq!(d[0].dst.port(), 10000);
    }

    #[test]
    fn written_pcaps_read_back_and_audio_continues_the_dtmf_stream() {
        let dir = TestDir::new("unit-audio-pcap");
        let tone = Audio::tone(8000, 700.0, 0.5, 0.3);
        let p = audio_pcap_after_dtmf(&dir, "tone", &tone, 2);
        let d = read_pcap(&p).unwrap();
        assert_eq!(d.len(), 25, "0.5 s at 20 ms");
        assert!((d[1].time - d[0].time - 0.020).abs() < 1e-6);
        let pkts: Vec<Rtp> = d.iter().map(|x| parse_rtp(&x.payload).unwrap()).collect();
        let shipped = read_pcap(&shipped_dtmf_pcap('1')).unwrap();
        let digit = parse_rtp(&shipped[0].payload).unwrap();
        assert_eq!(pkts[0].ssrc, digit.ssrc);
        assert_eq!(pkts[0].seq, digit.seq.wrapping_add(200));
        assert!(pkts[0].marker && !pkts[1].marker);
        assert_eq!(pkts[1].timestamp.wrapping_sub(pkts[0].timestamp), 160);
        assert!(pkts
            .iter()
            .all(|r| r.payload_type == 0 && r.payload.len() == 160));
        let back = Audio::from_g711(0, pkts.iter().map(|r| r.payload.as_slice()));
        assert_eq!(back.dominant_frequency(300.0, 3000.0, 10.0).0, 700.0);
        // The IPv4 header checksum verifies (sums to 0xffff with the checksum included).
        let raw = fs::read(&p).unwrap();
        let ip = &raw[24 + 16 + 14..24 + 16 + 34];
        assert_eq!(ipv4_checksum(ip), 0);
    }

    #[test]
    fn quantiles_and_gaps() {
        let g = gaps_ms(&[0.0, 0.020, 0.041, 0.060]);
        assert_eq!(g.len(), 3);
        assert!((g[1] - 21.0).abs() < 1e-6);
        assert!((quantile(&[5.0, 1.0, 3.0], 0.5) - 3.0).abs() < 1e-9);
        assert!((quantile(&[1.0, 2.0, 3.0, 4.0, 100.0], 1.0) - 100.0).abs() < 1e-9);
    }
}
