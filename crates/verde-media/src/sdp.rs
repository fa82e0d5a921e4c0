//! SDP offer/answer (RFC 3264) for one G.711 audio stream.
//!
//! Both roles are covered: [`LocalSdp::answer`] for offers we receive (trunk INVITEs,
//! re-INVITEs), [`LocalSdp::offer`] plus [`LocalSdp::accept_answer`] for SDP we originate
//! (the INVITE to an agent's phone, or the 200 to a delayed-offer INVITE whose answer comes
//! in the ACK).
//!
//! Parsing is done by `rtc-sdp` (the sans-IO webrtc-rs SDP lexer): it is strict about line
//! order and the mandatory `v=`/`o=`/`s=`/`t=` lines, which is what we want from trunks.
//! The answer itself is written by hand: it is a dozen fixed lines and we need exact control
//! of the `o=` version and the attribute order.

use std::fmt::Write as _;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rtc_sdp::description::media::MediaDescription;
use rtc_sdp::description::session::SessionDescription;

/// The audio codecs verde speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 μ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551).
    pub fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name used in `a=rtpmap`.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    fn from_name(name: &str) -> Option<Codec> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }
}

/// Media direction, always from *our* point of view once negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction an answerer uses for an offer with this direction (RFC 3264 §6.1).
    pub fn mirrored(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether we may send RTP in this direction.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether we expect to receive RTP in this direction.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_attribute(key: &str) -> Option<Direction> {
        match key {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// Why an offer could not be answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    /// The offer is not valid SDP or misses what we need (maps to SIP 400).
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// No offered audio codec is one we support, or an answer picked a codec we did not
    /// offer (maps to SIP 488; for an answer, end the call).
    #[error("no common codec")]
    NoCommonCodec,
    /// The offer has no usable RTP/AVP audio stream, or the answer refused ours (maps to 488).
    #[error("no audio stream in offer")]
    NoAudio,
    /// [`LocalSdp::accept_answer`] was called before any [`LocalSdp::offer`]: a bug in the
    /// caller, not in the remote's SDP.
    #[error("SDP answer without an outstanding offer")]
    NoPendingOffer,
}

/// The outcome of one offer/answer exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Our SDP for this exchange: the answer to send for [`LocalSdp::answer`]; for
    /// [`LocalSdp::accept_answer`], the offer that was already sent (kept for the record).
    pub answer: String,
    pub codec: Codec,
    /// Payload type to use for `codec` (the offerer's, usually the static one).
    pub payload_type: u8,
    /// Payload type of telephone-event/8000, if the offer had it (we keep the offerer's PT).
    pub dtmf_pt: Option<u8>,
    /// Where to send RTP, from `c=` and `m=` (0.0.0.0 when the remote put us on hold old-style).
    pub remote: SocketAddr,
    /// Where to send RTCP: `a=rtcp` (RFC 3605) if present, else RTP port + 1.
    pub remote_rtcp: SocketAddr,
    /// Our direction: as written in our answer, or for an answer we accepted, what our offer
    /// and the remote's answer both allow.
    pub direction: Direction,
}

/// Our side of the SDP exchange across the dialog: keeps the `o=` session id and bumps the
/// version when a re-answer changes the body (RFC 3264 §8), e.g. on hold/unhold re-INVITEs.
#[derive(Debug, Clone)]
pub struct LocalSdp {
    local_ip: IpAddr,
    local_port: u16,
    supported: Vec<Codec>,
    session_id: u64,
    version: u64,
    last_body: Option<String>,
    /// What our last offer proposed, until a remote offer supersedes it.
    pending_offer: Option<PendingOffer>,
}

#[derive(Debug, Clone)]
struct PendingOffer {
    direction: Direction,
    sdp: String,
}

/// The payload type we offer for telephone-event/8000 (the de-facto common choice).
pub const OFFER_DTMF_PT: u8 = 101;

impl LocalSdp {
    /// `session_id` should be random or time based; the first answer uses it as version too.
    pub fn new(local_ip: IpAddr, local_port: u16, supported: &[Codec], session_id: u64) -> Self {
        LocalSdp {
            local_ip,
            local_port,
            supported: supported.to_vec(),
            session_id,
            version: session_id,
            last_body: None,
            pending_offer: None,
        }
    }

    /// The current `o=` version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Answers an (initial or re-) offer.
    pub fn answer(&mut self, offer: &str) -> Result<Negotiated, SdpError> {
        let remote = parse_offer(offer, &self.supported)?;
        let body = self.body(&remote);
        let answer = self.commit(body);
        // A remote offer supersedes ours (glare is resolved by SIP, not here).
        self.pending_offer = None;
        Ok(Negotiated {
            answer,
            codec: remote.codec,
            payload_type: remote.payload_type,
            dtmf_pt: remote.dtmf_pt,
            remote: remote.rtp,
            remote_rtcp: remote.rtcp,
            direction: remote.answer_direction,
        })
    }

    /// A `sendrecv` offer: every supported codec in our preference order, with their static
    /// payload types, telephone-event/8000 as PT [`OFFER_DTMF_PT`], ptime 20.
    pub fn offer(&mut self) -> String {
        self.offer_with_direction(Direction::SendRecv)
    }

    /// An offer with an explicit direction: `SendOnly` puts the remote on hold, `Inactive`
    /// stops media both ways, `SendRecv` resumes. Use it for re-INVITEs too; the `o=` version
    /// is bumped when the body differs from the last SDP we sent.
    pub fn offer_with_direction(&mut self, direction: Direction) -> String {
        let mut s = String::with_capacity(256);
        let at = self.addr_type();
        let _ = write!(
            s,
            "s=verde\r\nc=IN {at} {}\r\nt=0 0\r\nm=audio {} RTP/AVP",
            self.local_ip, self.local_port
        );
        for c in &self.supported {
            let _ = write!(s, " {}", c.static_payload_type());
        }
        let _ = write!(s, " {OFFER_DTMF_PT}\r\n");
        for c in &self.supported {
            let _ = write!(
                s,
                "a=rtpmap:{} {}/8000\r\n",
                c.static_payload_type(),
                c.encoding_name()
            );
        }
        let _ = write!(
            s,
            "a=rtpmap:{OFFER_DTMF_PT} telephone-event/8000\r\na=fmtp:{OFFER_DTMF_PT} 0-15\r\n\
             a=ptime:20\r\na={}\r\n",
            direction.attribute()
        );
        let sdp = self.commit(s);
        self.pending_offer = Some(PendingOffer {
            direction,
            sdp: sdp.clone(),
        });
        sdp
    }

    /// Takes the remote's answer to our last offer (a 200 to our INVITE or re-INVITE, or the
    /// ACK of a delayed-offer INVITE). The answer must accept our audio stream with one of the
    /// codecs we offered; its telephone-event PT (if any) becomes `dtmf_pt`, and our direction
    /// is what both our offer and the mirrored answer allow (RFC 3264 §6.1).
    ///
    /// We send with the answer's payload types (they say what the remote expects to receive).
    pub fn accept_answer(&mut self, answer: &str) -> Result<Negotiated, SdpError> {
        let offer = self
            .pending_offer
            .as_ref()
            .ok_or(SdpError::NoPendingOffer)?;
        let remote = parse_offer(answer, &self.supported)?;
        let direction = intersect(offer.direction, remote.answer_direction);
        Ok(Negotiated {
            answer: offer.sdp.clone(),
            codec: remote.codec,
            payload_type: remote.payload_type,
            dtmf_pt: remote.dtmf_pt,
            remote: remote.rtp,
            remote_rtcp: remote.rtcp,
            direction,
        })
    }

    /// Renders `body` under an `o=` line whose version changes only when the body does.
    fn commit(&mut self, body: String) -> String {
        if self.last_body.as_ref().is_some_and(|b| *b != body) {
            self.version += 1;
        }
        let sdp = self.render(&body);
        self.last_body = Some(body);
        sdp
    }

    fn addr_type(&self) -> &'static str {
        if self.local_ip.is_ipv4() {
            "IP4"
        } else {
            "IP6"
        }
    }

    /// Everything after the `o=` line; compared across re-answers to decide on a version bump.
    fn body(&self, r: &OfferSummary) -> String {
        let mut s = String::with_capacity(256);
        let at = self.addr_type();
        let _ = write!(s, "s=verde\r\nc=IN {at} {}\r\nt=0 0\r\n", self.local_ip);
        for rejected in &r.rejected_before {
            let _ = write!(s, "m={rejected}\r\n");
        }
        let _ = write!(s, "m=audio {} RTP/AVP {}", self.local_port, r.payload_type);
        if let Some(dtmf) = r.dtmf_pt {
            let _ = write!(s, " {dtmf}");
        }
        s.push_str("\r\n");
        let _ = write!(
            s,
            "a=rtpmap:{} {}/8000\r\n",
            r.payload_type,
            r.codec.encoding_name()
        );
        if let Some(dtmf) = r.dtmf_pt {
            let _ = write!(
                s,
                "a=rtpmap:{dtmf} telephone-event/8000\r\na=fmtp:{dtmf} 0-15\r\n"
            );
        }
        let _ = write!(s, "a=ptime:20\r\na={}\r\n", r.answer_direction.attribute());
        for rejected in &r.rejected_after {
            let _ = write!(s, "m={rejected}\r\n");
        }
        s
    }

    fn render(&self, body: &str) -> String {
        format!(
            "v=0\r\no=verde {} {} IN {} {}\r\n{body}",
            self.session_id,
            self.version,
            self.addr_type(),
            self.local_ip
        )
    }
}

/// What two directions both allow.
fn intersect(a: Direction, b: Direction) -> Direction {
    match (a.sends() && b.sends(), a.receives() && b.receives()) {
        (true, true) => Direction::SendRecv,
        (true, false) => Direction::SendOnly,
        (false, true) => Direction::RecvOnly,
        (false, false) => Direction::Inactive,
    }
}

/// One-shot answer for an initial offer (random session id). Keep a [`LocalSdp`] instead when
/// re-INVITEs are expected.
pub fn answer(
    offer: &str,
    local_ip: IpAddr,
    local_port: u16,
    supported: &[Codec],
) -> Result<Negotiated, SdpError> {
    // Keep ids within 62 bits so they print the same as signed integers on picky peers.
    let session_id = rand::random::<u64>() >> 2;
    LocalSdp::new(local_ip, local_port, supported, session_id).answer(offer)
}

struct OfferSummary {
    codec: Codec,
    payload_type: u8,
    dtmf_pt: Option<u8>,
    rtp: SocketAddr,
    rtcp: SocketAddr,
    answer_direction: Direction,
    /// `m=` lines (without "m=") to echo with port 0 before/after the chosen one.
    rejected_before: Vec<String>,
    rejected_after: Vec<String>,
}

fn parse_offer(offer: &str, supported: &[Codec]) -> Result<OfferSummary, SdpError> {
    let mut cursor = Cursor::new(offer.as_bytes());
    let sd = SessionDescription::unmarshal(&mut cursor)
        .map_err(|e| SdpError::Malformed(e.to_string()))?;
    if sd.media_descriptions.is_empty() {
        return Err(SdpError::NoAudio);
    }

    let session_conn = connection_address(sd.connection_information.as_ref())?;
    let session_dir = sd
        .attributes
        .iter()
        .find_map(|a| Direction::from_attribute(&a.key));

    // The first usable audio stream wins; any other stream is refused with port 0, keeping the
    // m-line count and order as RFC 3264 §6 requires.
    let chosen = sd.media_descriptions.iter().position(|m| {
        m.media_name.media == "audio"
            && m.media_name.port.value > 0
            && m.media_name.protos.join("/") == "RTP/AVP"
    });
    let Some(chosen) = chosen else {
        return Err(SdpError::NoAudio);
    };
    let md = &sd.media_descriptions[chosen];

    let (codec, payload_type, dtmf_pt) = choose_codec(md, supported)?;

    let port = u16::try_from(md.media_name.port.value)
        .map_err(|_| SdpError::Malformed(format!("bad port {}", md.media_name.port.value)))?;
    let ip = match connection_address(md.connection_information.as_ref())? {
        Some(ip) => ip,
        None => session_conn
            .ok_or_else(|| SdpError::Malformed("no c= line for the audio stream".into()))?,
    };

    let offered_dir = md
        .attributes
        .iter()
        .find_map(|a| Direction::from_attribute(&a.key))
        .or(session_dir)
        .unwrap_or(Direction::SendRecv);
    // RFC 3264 §8.4: c=0.0.0.0 is the old way to say "do not send to me".
    let offered_dir = if ip.is_unspecified() {
        match offered_dir {
            Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
            _ => Direction::Inactive,
        }
    } else {
        offered_dir
    };

    let rtcp_port = md
        .attributes
        .iter()
        .find(|a| a.key == "rtcp")
        .and_then(|a| a.value.as_deref())
        .and_then(|v| v.split_whitespace().next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| port.wrapping_add(1));

    let reject = |m: &MediaDescription| {
        format!(
            "{} 0 {} {}",
            m.media_name.media,
            m.media_name.protos.join("/"),
            m.media_name
                .formats
                .first()
                .map(String::as_str)
                .unwrap_or("0")
        )
    };
    let rejected_before = sd.media_descriptions[..chosen].iter().map(reject).collect();
    let rejected_after = sd.media_descriptions[chosen + 1..]
        .iter()
        .map(reject)
        .collect();

    Ok(OfferSummary {
        codec,
        payload_type,
        dtmf_pt,
        rtp: SocketAddr::new(ip, port),
        rtcp: SocketAddr::new(ip, rtcp_port),
        answer_direction: offered_dir.mirrored(),
        rejected_before,
        rejected_after,
    })
}

fn connection_address(
    c: Option<&rtc_sdp::description::common::ConnectionInformation>,
) -> Result<Option<IpAddr>, SdpError> {
    let Some(c) = c else { return Ok(None) };
    if c.network_type != "IN" {
        return Err(SdpError::Malformed(format!(
            "unsupported network type {}",
            c.network_type
        )));
    }
    let Some(addr) = &c.address else {
        return Err(SdpError::Malformed("c= line without address".into()));
    };
    let ip: IpAddr = addr.address.parse().map_err(|_| {
        SdpError::Malformed(format!(
            "c= address {:?} is not an IP address",
            addr.address
        ))
    })?;
    match (c.address_type.as_str(), ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(Some(ip)),
        _ => Err(SdpError::Malformed(format!(
            "c= address type {} does not match {}",
            c.address_type, addr.address
        ))),
    }
}

fn choose_codec(
    md: &MediaDescription,
    supported: &[Codec],
) -> Result<(Codec, u8, Option<u8>), SdpError> {
    let rtpmaps = md.codecs();
    let mut chosen = None;
    let mut dtmf = None;
    for fmt in &md.media_name.formats {
        let pt: u8 = fmt
            .parse()
            .map_err(|_| SdpError::Malformed(format!("bad payload type {fmt:?}")))?;
        if pt > 127 {
            return Err(SdpError::Malformed(format!(
                "payload type {pt} out of range"
            )));
        }
        let codec = match rtpmaps.get(&pt) {
            Some(map) => {
                if map.name.eq_ignore_ascii_case("telephone-event") && map.clock_rate == 8000 {
                    dtmf.get_or_insert(pt);
                    continue;
                }
                Codec::from_name(&map.name).filter(|_| map.clock_rate == 8000)
            }
            None => match pt {
                0 => Some(Codec::Pcmu),
                8 => Some(Codec::Pcma),
                _ => None,
            },
        };
        if chosen.is_none() {
            if let Some(c) = codec.filter(|c| supported.contains(c)) {
                chosen = Some((c, pt));
            }
        }
    }
    let (codec, pt) = chosen.ok_or(SdpError::NoCommonCodec)?;
    Ok((codec, pt, dtmf))
}

/// Unspecified IPv4 address, handy for tests and for old-style hold detection by callers.
pub const HOLD_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    const BOTH: &[Codec] = &[Codec::Pcmu, Codec::Pcma];

    fn offer(media: &str, extra: &str) -> String {
        format!(
            "v=0\r\no=trunk 123 456 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n{media}\r\n{extra}"
        )
    }

    fn line<'a>(sdp: &'a str, prefix: &str) -> Option<&'a str> {
        sdp.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn picks_first_supported_codec_in_offer_order_and_keeps_dtmf_pt() {
        let o = offer(
            "m=audio 30000 RTP/AVP 18 8 0 101",
            "a=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n",
        );
        let n = answer(&o, LOCAL, 40000, BOTH).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.payload_type, 8);
        assert_eq!(n.dtmf_pt, Some(101));
        assert_eq!(n.remote, "198.51.100.7:30000".parse().unwrap());
        assert_eq!(n.remote_rtcp, "198.51.100.7:30001".parse().unwrap());
        assert_eq!(n.direction, Direction::SendRecv);
        assert_eq!(line(&n.answer, "m="), Some("m=audio 40000 RTP/AVP 8 101"));
        assert_eq!(line(&n.answer, "c="), Some("c=IN IP4 192.0.2.10"));
        assert!(n.answer.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(n.answer.contains("a=ptime:20\r\n"));
        assert!(n.answer.contains("a=sendrecv\r\n"));
        // The answer must itself be parseable SDP.
        SessionDescription::unmarshal(&mut Cursor::new(n.answer.as_bytes())).unwrap();
    }

    #[test]
    fn respects_our_supported_list() {
        let o = offer("m=audio 30000 RTP/AVP 0 8", "");
        let n = answer(&o, LOCAL, 40000, &[Codec::Pcma]).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.dtmf_pt, None);
        assert!(!n.answer.contains("telephone-event"));
    }

    #[test]
    fn dynamic_pt_matched_by_rtpmap_name() {
        let o = offer(
            "m=audio 30000 RTP/AVP 96 97",
            "a=rtpmap:96 pcmu/8000\r\na=rtpmap:97 telephone-event/8000\r\n",
        );
        let n = answer(&o, LOCAL, 40000, BOTH).unwrap();
        assert_eq!(
            (n.codec, n.payload_type, n.dtmf_pt),
            (Codec::Pcmu, 96, Some(97))
        );
        assert!(n.answer.contains("a=rtpmap:96 PCMU/8000\r\n"));
    }

    #[test]
    fn telephone_event_at_other_rate_is_ignored() {
        let o = offer(
            "m=audio 30000 RTP/AVP 0 101",
            "a=rtpmap:101 telephone-event/48000\r\n",
        );
        assert_eq!(answer(&o, LOCAL, 1, BOTH).unwrap().dtmf_pt, None);
    }

    #[test]
    fn no_common_codec() {
        let o = offer(
            "m=audio 30000 RTP/AVP 18 9",
            "a=rtpmap:18 G729/8000\r\na=rtpmap:9 G722/8000\r\n",
        );
        assert_eq!(answer(&o, LOCAL, 1, BOTH), Err(SdpError::NoCommonCodec));
    }

    #[test]
    fn no_audio_and_malformed() {
        let video = offer("m=video 30000 RTP/AVP 96", "a=rtpmap:96 H264/90000\r\n");
        assert_eq!(answer(&video, LOCAL, 1, BOTH), Err(SdpError::NoAudio));
        let srtp = offer("m=audio 30000 RTP/SAVP 0", "");
        assert_eq!(answer(&srtp, LOCAL, 1, BOTH), Err(SdpError::NoAudio));
        let rejected = offer("m=audio 0 RTP/AVP 0", "");
        assert_eq!(answer(&rejected, LOCAL, 1, BOTH), Err(SdpError::NoAudio));
        assert!(matches!(
            answer("hello", LOCAL, 1, BOTH),
            Err(SdpError::Malformed(_))
        ));
        let no_c = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 3 RTP/AVP 0\r\n";
        assert!(matches!(
            answer(no_c, LOCAL, 1, BOTH),
            Err(SdpError::Malformed(_))
        ));
        let bad_ip =
            offer("m=audio 30000 RTP/AVP 0", "").replace("198.51.100.7\r\nt", "pbx.example\r\nt");
        assert!(matches!(
            answer(&bad_ip, LOCAL, 1, BOTH),
            Err(SdpError::Malformed(_))
        ));
    }

    #[test]
    fn media_level_connection_and_rtcp_attribute_win() {
        let o = offer(
            "m=audio 30000 RTP/AVP 0",
            "c=IN IP4 203.0.113.9\r\na=rtcp:30011\r\n",
        );
        let n = answer(&o, LOCAL, 1, BOTH).unwrap();
        assert_eq!(n.remote, "203.0.113.9:30000".parse().unwrap());
        assert_eq!(n.remote_rtcp, "203.0.113.9:30011".parse().unwrap());
    }

    #[test]
    fn direction_is_mirrored() {
        for (offered, expected) in [
            ("sendrecv", Direction::SendRecv),
            ("sendonly", Direction::RecvOnly),
            ("recvonly", Direction::SendOnly),
            ("inactive", Direction::Inactive),
        ] {
            let o = offer("m=audio 30000 RTP/AVP 0", &format!("a={offered}\r\n"));
            let n = answer(&o, LOCAL, 1, BOTH).unwrap();
            assert_eq!(n.direction, expected, "{offered}");
            assert!(n
                .answer
                .contains(&format!("a={}\r\n", expected.attribute())));
        }
    }

    #[test]
    fn session_level_direction_applies() {
        let o = "v=0\r\no=t 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\na=sendonly\r\nm=audio 5 RTP/AVP 0\r\n".to_string();
        assert_eq!(
            answer(&o, LOCAL, 1, BOTH).unwrap().direction,
            Direction::RecvOnly
        );
    }

    #[test]
    fn other_streams_are_rejected_in_place() {
        let o = "v=0\r\no=t 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=video 6000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 5000 RTP/AVP 0\r\nm=image 7000 udptl t38\r\n".to_string();
        let n = answer(&o, LOCAL, 4000, BOTH).unwrap();
        let ms: Vec<&str> = n.answer.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            ms,
            vec![
                "m=video 0 RTP/AVP 96",
                "m=audio 4000 RTP/AVP 0",
                "m=image 0 udptl t38"
            ]
        );
    }

    #[test]
    fn reanswer_bumps_version_only_when_body_changes() {
        let mut local = LocalSdp::new(LOCAL, 4000, BOTH, 777);
        let base = offer(
            "m=audio 30000 RTP/AVP 0 101",
            "a=rtpmap:101 telephone-event/8000\r\n",
        );
        let first = local.answer(&base).unwrap();
        assert_eq!(
            line(&first.answer, "o="),
            Some("o=verde 777 777 IN IP4 192.0.2.10")
        );

        // Session refresh with the same offer: same version (RFC 3264 §8).
        let again = local.answer(&base).unwrap();
        assert_eq!(again.answer, first.answer);

        // Hold with a=sendonly.
        let hold = local.answer(&format!("{base}a=sendonly\r\n")).unwrap();
        assert_eq!(hold.direction, Direction::RecvOnly);
        assert_eq!(
            line(&hold.answer, "o="),
            Some("o=verde 777 778 IN IP4 192.0.2.10")
        );
        assert!(!hold.direction.sends());

        // Old-style hold: c=0.0.0.0 means "don't send to me".
        let old = local
            .answer(&base.replace("c=IN IP4 198.51.100.7", "c=IN IP4 0.0.0.0"))
            .unwrap();
        assert_eq!(old.direction, Direction::RecvOnly);
        assert_eq!(old.remote.ip(), HOLD_ADDRESS);
        assert_eq!(local.version(), 778, "same body as the sendonly hold");

        // Unhold.
        let unhold = local.answer(&base).unwrap();
        assert_eq!(unhold.direction, Direction::SendRecv);
        assert_eq!(
            line(&unhold.answer, "o="),
            Some("o=verde 777 779 IN IP4 192.0.2.10")
        );
    }

    fn answer_sdp(media: &str, extra: &str) -> String {
        format!(
            "v=0\r\no=phone 9 9 IN IP4 203.0.113.20\r\ns=-\r\nc=IN IP4 203.0.113.20\r\nt=0 0\r\n{media}\r\n{extra}"
        )
    }

    #[test]
    fn offer_lists_our_codecs_dtmf_and_direction_and_parses() {
        let mut local = LocalSdp::new(LOCAL, 4000, BOTH, 555);
        let o = local.offer();
        assert_eq!(line(&o, "o="), Some("o=verde 555 555 IN IP4 192.0.2.10"));
        assert_eq!(line(&o, "m="), Some("m=audio 4000 RTP/AVP 0 8 101"));
        assert_eq!(line(&o, "c="), Some("c=IN IP4 192.0.2.10"));
        for attr in [
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=ptime:20",
            "a=sendrecv",
        ] {
            assert!(o.lines().any(|l| l == attr), "{attr} missing from {o}");
        }
        // Our own offer must be answerable by our own answerer: proves it is well-formed SDP.
        let n = answer(&o, "198.51.100.1".parse().unwrap(), 6000, BOTH).unwrap();
        assert_eq!((n.codec, n.dtmf_pt), (Codec::Pcmu, Some(101)));
        assert_eq!(n.remote, "192.0.2.10:4000".parse().unwrap());

        // Same offer again (e.g. a session refresh): same version. Hold: new version.
        assert_eq!(local.offer(), o);
        let hold = local.offer_with_direction(Direction::SendOnly);
        assert!(hold.lines().any(|l| l == "a=sendonly"));
        assert_eq!(line(&hold, "o="), Some("o=verde 555 556 IN IP4 192.0.2.10"));

        let pcma_only = LocalSdp::new(LOCAL, 4000, &[Codec::Pcma], 1).offer();
        assert_eq!(line(&pcma_only, "m="), Some("m=audio 4000 RTP/AVP 8 101"));
        assert!(!pcma_only.contains("PCMU"));
    }

    #[test]
    fn accept_answer_reads_codec_address_dtmf_and_direction() {
        let mut local = LocalSdp::new(LOCAL, 4000, BOTH, 1);
        assert_eq!(
            local.accept_answer(&answer_sdp("m=audio 5004 RTP/AVP 0", "")),
            Err(SdpError::NoPendingOffer)
        );
        let offer = local.offer();
        let n = local
            .accept_answer(&answer_sdp(
                "m=audio 5004 RTP/AVP 8 101",
                "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n",
            ))
            .unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
        assert_eq!(n.dtmf_pt, Some(101));
        assert_eq!(n.remote, "203.0.113.20:5004".parse().unwrap());
        assert_eq!(n.remote_rtcp, "203.0.113.20:5005".parse().unwrap());
        assert_eq!(n.direction, Direction::SendRecv);
        assert_eq!(n.answer, offer);

        // A phone that does not do RFC 4733 and answers with a dynamic PT for PCMU.
        let n = local
            .accept_answer(&answer_sdp(
                "m=audio 5004 RTP/AVP 96",
                "a=rtpmap:96 PCMU/8000\r\n",
            ))
            .unwrap();
        assert_eq!(
            (n.codec, n.payload_type, n.dtmf_pt),
            (Codec::Pcmu, 96, None)
        );

        // The answerer puts itself on hold in the answer: we receive only.
        let n = local
            .accept_answer(&answer_sdp("m=audio 5004 RTP/AVP 0", "a=sendonly\r\n"))
            .unwrap();
        assert_eq!(n.direction, Direction::RecvOnly);
    }

    #[test]
    fn accept_answer_rejects_codecs_we_did_not_offer_and_refused_streams() {
        let mut local = LocalSdp::new(LOCAL, 4000, &[Codec::Pcmu], 1);
        local.offer();
        // PCMA was not in this offer, nor G.729.
        assert_eq!(
            local.accept_answer(&answer_sdp("m=audio 5004 RTP/AVP 8", "")),
            Err(SdpError::NoCommonCodec)
        );
        assert_eq!(
            local.accept_answer(&answer_sdp(
                "m=audio 5004 RTP/AVP 18",
                "a=rtpmap:18 G729/8000\r\n"
            )),
            Err(SdpError::NoCommonCodec)
        );
        assert_eq!(
            local.accept_answer(&answer_sdp("m=audio 0 RTP/AVP 0", "")),
            Err(SdpError::NoAudio)
        );
        assert!(matches!(
            local.accept_answer("garbage"),
            Err(SdpError::Malformed(_))
        ));
    }

    #[test]
    fn hold_offer_answered_recvonly_leaves_us_sending_only() {
        let mut local = LocalSdp::new(LOCAL, 4000, BOTH, 1);
        local.offer_with_direction(Direction::SendOnly);
        let n = local
            .accept_answer(&answer_sdp("m=audio 5004 RTP/AVP 0", "a=recvonly\r\n"))
            .unwrap();
        assert_eq!(n.direction, Direction::SendOnly);
        // A sloppy answerer that says sendrecv to our sendonly still does not make us receive.
        local.offer_with_direction(Direction::SendOnly);
        let n = local
            .accept_answer(&answer_sdp("m=audio 5004 RTP/AVP 0", "a=sendrecv\r\n"))
            .unwrap();
        assert_eq!(n.direction, Direction::SendOnly);
        // Inactive offer: nothing either way.
        local.offer_with_direction(Direction::Inactive);
        let n = local
            .accept_answer(&answer_sdp("m=audio 5004 RTP/AVP 0", "a=inactive\r\n"))
            .unwrap();
        assert!(!n.direction.sends() && !n.direction.receives());
    }

    #[test]
    fn delayed_offer_then_remote_reinvite_bumps_version_once() {
        // INVITE without SDP: we offer in the 200, the ACK carries the answer.
        let mut local = LocalSdp::new(LOCAL, 4000, BOTH, 40);
        let o = local.offer();
        local
            .accept_answer(&answer_sdp(
                "m=audio 5004 RTP/AVP 0 101",
                "a=rtpmap:101 telephone-event/8000\r\n",
            ))
            .unwrap();
        // Then the caller re-INVITEs (hold): our answer differs from our offer, so version + 1.
        let hold = answer_sdp(
            "m=audio 5004 RTP/AVP 0 101",
            "a=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n",
        );
        let n = local.answer(&hold).unwrap();
        assert_eq!(line(&o, "o="), Some("o=verde 40 40 IN IP4 192.0.2.10"));
        assert_eq!(
            line(&n.answer, "o="),
            Some("o=verde 40 41 IN IP4 192.0.2.10")
        );
        // The remote offer superseded ours.
        assert_eq!(local.accept_answer(&hold), Err(SdpError::NoPendingOffer));
    }

    #[test]
    fn ipv6_offer_and_local() {
        let o = "v=0\r\no=t 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 8\r\n";
        let n = answer(o, "2001:db8::2".parse().unwrap(), 4000, BOTH).unwrap();
        assert_eq!(n.remote, "[2001:db8::1]:5000".parse().unwrap());
        assert_eq!(line(&n.answer, "c="), Some("c=IN IP6 2001:db8::2"));
    }
}
