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
//!
//! SRTP keyed by SDES (RFC 4568): an `RTP/SAVP` stream carries `a=crypto` lines; we answer
//! with the first suite we support and our own key (one fresh key per [`LocalSdp`], i.e. per
//! leg), and offer `RTP/SAVP` only when the leg's [`SrtpPolicy`] requires it. There is no
//! standard way to offer SRTP *optionally* in a single `m=` line (`RTP/AVP` with `a=crypto`
//! is a common hack that some peers refuse and others silently ignore, leaving media in
//! clear), so an offer is either plainly `RTP/AVP` or `RTP/SAVP`. The keys are in the SDP
//! body: never log a body (use [`redact_keys`]); `Negotiated`'s `Debug` does so already.

use std::fmt::Write as _;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use base64::Engine as _;
use rtc_sdp::description::media::MediaDescription;
use rtc_sdp::description::session::SessionDescription;

use crate::srtp::{CryptoSuite, MasterKey, SrtpKeys, MASTER_LEN};

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
    /// An `RTP/SAVP` stream whose `a=crypto` lines name no suite we support (or have unusable
    /// keys), SRTP offered to a leg whose policy is off, or an answer to our `RTP/SAVP` offer
    /// that drops SRTP or picks a crypto line we did not offer (maps to 488).
    #[error("no supported SRTP crypto suite")]
    NoCryptoSuite,
    /// A plain `RTP/AVP` offer on a leg whose policy requires SRTP (maps to 488).
    #[error("SRTP required but the offer is plain RTP")]
    SrtpRequired,
}

/// Whether a leg speaks SRTP (SDES).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SrtpPolicy {
    /// Plain RTP only: an `RTP/SAVP` offer is refused.
    Off,
    /// Answer `RTP/SAVP` when offered, plain otherwise; our own offers are plain.
    #[default]
    Accept,
    /// Only `RTP/SAVP`: plain offers are refused and our offers are `RTP/SAVP`.
    Require,
}

/// The outcome of one offer/answer exchange.
///
/// SRTP keys, when negotiated, are read from [`LocalSdp::srtp`] (kept out of this struct so
/// that code building one by hand, e.g. for a WebRTC leg, needs no change).
#[derive(Clone, PartialEq, Eq)]
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

impl std::fmt::Debug for Negotiated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Negotiated")
            .field("answer", &redact_keys(&self.answer))
            .field("codec", &self.codec)
            .field("payload_type", &self.payload_type)
            .field("dtmf_pt", &self.dtmf_pt)
            .field("remote", &self.remote)
            .field("remote_rtcp", &self.remote_rtcp)
            .field("direction", &self.direction)
            .finish()
    }
}

/// `sdp` with every `inline:` key replaced by `<redacted>`, for logs.
pub fn redact_keys(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    let mut rest = sdp;
    while let Some(i) = rest.find("inline:") {
        out.push_str(&rest[..i + "inline:".len()]);
        rest = &rest[i + "inline:".len()..];
        let end = rest
            .find(|c: char| c.is_ascii_whitespace() || c == '|' || c == ';')
            .unwrap_or(rest.len());
        out.push_str("<redacted>");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
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
    srtp_policy: SrtpPolicy,
    /// Our master key for this leg, made the first time SRTP is offered or answered and kept
    /// across re-INVITEs (a re-answer that repeats the body must not bump the version).
    local_key: Option<MasterKey>,
    /// The SRTP of the last completed exchange; `None` when it was plain RTP.
    srtp: Option<SrtpKeys>,
}

#[derive(Debug, Clone)]
struct PendingOffer {
    direction: Direction,
    sdp: String,
    secure: bool,
}

/// The tag of each crypto line in our offers, by suite.
fn offer_tag(suite: CryptoSuite) -> u32 {
    match suite {
        CryptoSuite::AesCm128HmacSha1_80 => 1,
        CryptoSuite::AesCm128HmacSha1_32 => 2,
    }
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
            srtp_policy: SrtpPolicy::default(),
            local_key: None,
            srtp: None,
        }
    }

    /// Sets the leg's SRTP policy (the default is [`SrtpPolicy::Accept`]).
    pub fn with_srtp(mut self, policy: SrtpPolicy) -> Self {
        self.srtp_policy = policy;
        self
    }

    /// The suite and keys of the last completed exchange, for [`crate::MediaSession::set_srtp`];
    /// `None` when the media is plain RTP.
    pub fn srtp(&self) -> Option<&SrtpKeys> {
        self.srtp.as_ref()
    }

    fn local_key(&mut self) -> MasterKey {
        self.local_key.get_or_insert_with(MasterKey::random).clone()
    }

    /// The current `o=` version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Answers an (initial or re-) offer.
    pub fn answer(&mut self, offer: &str) -> Result<Negotiated, SdpError> {
        let want = match self.srtp_policy {
            SrtpPolicy::Off => Want::Plain,
            SrtpPolicy::Accept => Want::Either,
            SrtpPolicy::Require => Want::Secure,
        };
        let remote = parse_offer(offer, &self.supported, want)?;
        if let (Some(now), Some(c)) = (&self.srtp, &remote.crypto) {
            if now.suite != c.suite {
                // Our key under another suite would restart its packet indexes: new key.
                self.local_key = None;
            }
        }
        let srtp = remote.crypto.as_ref().map(|c| {
            (
                c.tag,
                SrtpKeys {
                    suite: c.suite,
                    local: self.local_key(),
                    remote: c.key.clone(),
                },
            )
        });
        let body = self.body(&remote, srtp.as_ref());
        let answer = self.commit(body);
        self.srtp = srtp.map(|(_, k)| k);
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
        let secure = self.srtp_policy == SrtpPolicy::Require;
        let mut s = String::with_capacity(256);
        let at = self.addr_type();
        let _ = write!(
            s,
            "s=verde\r\nc=IN {at} {}\r\nt=0 0\r\nm=audio {} {}",
            self.local_ip,
            self.local_port,
            if secure { "RTP/SAVP" } else { "RTP/AVP" }
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
        if secure {
            // One key for both lines: only the suite the answer picks is ever used.
            let key = self.local_key();
            for suite in CryptoSuite::ALL {
                write_crypto(&mut s, offer_tag(suite), suite, &key);
            }
        }
        let sdp = self.commit(s);
        self.pending_offer = Some(PendingOffer {
            direction,
            sdp: sdp.clone(),
            secure,
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
        let (secure, offered_direction, offered_sdp) = match &self.pending_offer {
            Some(o) => (o.secure, o.direction, o.sdp.clone()),
            None => return Err(SdpError::NoPendingOffer),
        };
        let want = if secure { Want::Secure } else { Want::Plain };
        let remote = parse_offer(answer, &self.supported, want)?;
        let srtp = match &remote.crypto {
            Some(c) if offer_tag(c.suite) == c.tag => Some(SrtpKeys {
                suite: c.suite,
                local: self.local_key.clone().ok_or(SdpError::NoPendingOffer)?,
                remote: c.key.clone(),
            }),
            Some(_) => return Err(SdpError::NoCryptoSuite),
            None => None,
        };
        let direction = intersect(offered_direction, remote.answer_direction);
        self.srtp = srtp;
        Ok(Negotiated {
            answer: offered_sdp,
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
    fn body(&self, r: &OfferSummary, srtp: Option<&(u32, SrtpKeys)>) -> String {
        let mut s = String::with_capacity(256);
        let at = self.addr_type();
        let _ = write!(s, "s=verde\r\nc=IN {at} {}\r\nt=0 0\r\n", self.local_ip);
        for rejected in &r.rejected_before {
            let _ = write!(s, "m={rejected}\r\n");
        }
        let proto = if srtp.is_some() {
            "RTP/SAVP"
        } else {
            "RTP/AVP"
        };
        let _ = write!(s, "m=audio {} {proto} {}", self.local_port, r.payload_type);
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
        if let Some((tag, keys)) = srtp {
            write_crypto(&mut s, *tag, keys.suite, &keys.local);
        }
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

fn write_crypto(s: &mut String, tag: u32, suite: CryptoSuite, key: &MasterKey) {
    let _ = write!(
        s,
        "a=crypto:{tag} {} inline:{}\r\n",
        suite.name(),
        base64::engine::general_purpose::STANDARD.encode(key.0)
    );
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

/// Which transport profiles a stream may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Plain,
    Secure,
    Either,
}

impl Want {
    fn allows(self, proto: &str) -> bool {
        matches!(
            (self, proto),
            (Want::Plain | Want::Either, "RTP/AVP") | (Want::Secure | Want::Either, "RTP/SAVP")
        )
    }
}

/// The crypto line we chose from an offer (or the one the answer picked).
struct CryptoChoice {
    tag: u32,
    suite: CryptoSuite,
    key: MasterKey,
}

/// Parses `a=crypto` values (`tag suite key-params [session-params]`, RFC 4568 §9.1) in
/// order and returns the first we can use: a supported suite and one inline key of the right
/// length, no MKI (our SRTP layer does not carry one) and no session parameters (an answerer
/// must not accept a line whose parameters it does not implement).
fn choose_crypto(md: &MediaDescription) -> Option<CryptoChoice> {
    md.attributes
        .iter()
        .filter(|a| a.key == "crypto")
        .filter_map(|a| a.value.as_deref())
        .find_map(parse_crypto)
}

fn parse_crypto(value: &str) -> Option<CryptoChoice> {
    let mut parts = value.split_whitespace();
    let tag: u32 = parts.next()?.parse().ok()?;
    if tag > 999_999_999 {
        return None;
    }
    let suite = CryptoSuite::from_name(parts.next()?)?;
    let key_params = parts.next()?;
    if parts.next().is_some() || key_params.contains(';') {
        return None;
    }
    let inline = key_params.strip_prefix("inline:")?;
    let mut fields = inline.split('|');
    let b64 = fields.next()?;
    for f in fields {
        // A lifetime (`2^31` or a number) is fine: we rekey by ending the call long before.
        // An MKI (`1:4`) is not.
        if f.contains(':') {
            return None;
        }
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
        .ok()?;
    let key: [u8; MASTER_LEN] = bytes.try_into().ok()?;
    Some(CryptoChoice {
        tag,
        suite,
        key: MasterKey::from_bytes(key),
    })
}

struct OfferSummary {
    crypto: Option<CryptoChoice>,
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

fn parse_offer(offer: &str, supported: &[Codec], want: Want) -> Result<OfferSummary, SdpError> {
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
    let audio_with = |w: Want| {
        sd.media_descriptions.iter().position(|m| {
            m.media_name.media == "audio"
                && m.media_name.port.value > 0
                && w.allows(&m.media_name.protos.join("/"))
        })
    };
    let Some(chosen) = audio_with(want) else {
        return Err(match want {
            Want::Secure if audio_with(Want::Plain).is_some() => SdpError::SrtpRequired,
            Want::Plain if audio_with(Want::Secure).is_some() => SdpError::NoCryptoSuite,
            _ => SdpError::NoAudio,
        });
    };
    let md = &sd.media_descriptions[chosen];
    let crypto = if md.media_name.protos.join("/") == "RTP/SAVP" {
        Some(choose_crypto(md).ok_or(SdpError::NoCryptoSuite)?)
    } else {
        None
    };

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
        crypto,
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
        // SRTP without a usable a=crypto line is a crypto refusal, not a missing stream.
        let srtp = offer("m=audio 30000 RTP/SAVP 0", "");
        assert_eq!(answer(&srtp, LOCAL, 1, BOTH), Err(SdpError::NoCryptoSuite));
        let savpf = offer("m=audio 30000 RTP/SAVPF 0", "");
        assert_eq!(answer(&savpf, LOCAL, 1, BOTH), Err(SdpError::NoAudio));
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

    mod srtp {
        use super::*;

        const KEY_A: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyBzcGFjZQ==";
        // 30 bytes each.
        const KEY_30: &str = "d0RmdmcyQjZFNndkOGVnQnBUS0xLQ3hkcVBXa1NQ";

        fn savp(cryptos: &str) -> String {
            offer(
                "m=audio 30000 RTP/SAVP 0 101",
                &format!("a=rtpmap:101 telephone-event/8000\r\n{cryptos}a=sendrecv\r\n"),
            )
        }

        fn inline_key(sdp: &str) -> Vec<u8> {
            let l = line(sdp, "a=crypto:").expect("a crypto line");
            let k = l.split("inline:").nth(1).unwrap();
            base64::engine::general_purpose::STANDARD
                .decode(k.trim())
                .unwrap()
        }

        #[test]
        fn savp_offer_is_answered_with_the_first_supported_suite_and_a_fresh_key() {
            assert_eq!(
                base64::engine::general_purpose::STANDARD
                    .decode(KEY_30)
                    .unwrap()
                    .len(),
                30
            );
            let o = savp(&format!(
                "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_A}\r\n\
                 a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_30}\r\n\
                 a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30}\r\n"
            ));
            let mut a = LocalSdp::new(LOCAL, 40000, BOTH, 7);
            let n = a.answer(&o).unwrap();
            assert_eq!(line(&n.answer, "m="), Some("m=audio 40000 RTP/SAVP 0 101"));
            let crypto = line(&n.answer, "a=crypto:").unwrap();
            assert!(
                crypto.starts_with("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:"),
                "{crypto}"
            );
            assert_eq!(n.answer.matches("a=crypto").count(), 1);
            let ours = inline_key(&n.answer);
            assert_eq!(ours.len(), 30);
            let keys = a.srtp().expect("SRTP negotiated");
            assert_eq!(keys.suite, CryptoSuite::AesCm128HmacSha1_32);
            assert_eq!(keys.local.0.to_vec(), ours);
            assert_eq!(
                keys.remote.0.to_vec(),
                base64::engine::general_purpose::STANDARD
                    .decode(KEY_30)
                    .unwrap()
            );
            assert_ne!(keys.local, keys.remote);
            assert_eq!(n.dtmf_pt, Some(101));

            // Another leg gets another key; a re-offer on this leg keeps ours and the version.
            let mut b = LocalSdp::new(LOCAL, 40002, BOTH, 8);
            b.answer(&o).unwrap();
            assert_ne!(b.srtp().unwrap().local, a.srtp().unwrap().local);
            let again = a.answer(&o).unwrap();
            assert_eq!(inline_key(&again.answer), ours);
            assert_eq!(line(&again.answer, "o="), line(&n.answer, "o="));
        }

        #[test]
        fn a_re_offer_that_changes_suite_gets_a_new_key() {
            let mut a = LocalSdp::new(LOCAL, 40000, BOTH, 7);
            let o80 = savp(&format!(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30}\r\n"
            ));
            let o32 = savp(&format!(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY_30}\r\n"
            ));
            let first = inline_key(&a.answer(&o80).unwrap().answer);
            let same = inline_key(&a.answer(&o80).unwrap().answer);
            let other = inline_key(&a.answer(&o32).unwrap().answer);
            assert_eq!(first, same);
            assert_ne!(first, other);
            assert_eq!(a.srtp().unwrap().local.0.to_vec(), other);
        }

        #[test]
        fn unusable_crypto_lines_get_no_crypto_suite() {
            for cryptos in [
                format!("a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_A}\r\n"),
                format!("a=crypto:1 F8_128_HMAC_SHA1_80 inline:{KEY_30}\r\n"),
                // MKI, session parameters, a short key, several keys, no line at all.
                format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30}|2^20|1:4\r\n"),
                format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30} UNENCRYPTED_SRTP\r\n"),
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=\r\n".to_string(),
                format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30};inline:{KEY_30}\r\n"),
                String::new(),
            ] {
                let mut a = LocalSdp::new(LOCAL, 40000, BOTH, 7);
                assert_eq!(
                    a.answer(&savp(&cryptos)),
                    Err(SdpError::NoCryptoSuite),
                    "{cryptos}"
                );
                assert!(a.srtp().is_none());
            }
            // A lifetime alone is fine.
            let mut a = LocalSdp::new(LOCAL, 40000, BOTH, 7);
            let o = savp(&format!(
                "a=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30}|2^31\r\n"
            ));
            assert!(a
                .answer(&o)
                .unwrap()
                .answer
                .contains("a=crypto:9 AES_CM_128_HMAC_SHA1_80"));
        }

        #[test]
        fn policies_decide_plain_and_secure_offers() {
            let plain = offer("m=audio 30000 RTP/AVP 0", "");
            let secure = savp(&format!(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30}\r\n"
            ));
            let mut accept = LocalSdp::new(LOCAL, 40000, BOTH, 7);
            let n = accept.answer(&plain).unwrap();
            assert_eq!(line(&n.answer, "m="), Some("m=audio 40000 RTP/AVP 0"));
            assert!(!n.answer.contains("crypto"));
            assert!(accept.srtp().is_none());

            let mut require = LocalSdp::new(LOCAL, 40000, BOTH, 7).with_srtp(SrtpPolicy::Require);
            assert_eq!(require.answer(&plain), Err(SdpError::SrtpRequired));
            assert!(require.answer(&secure).is_ok());
            assert!(require.srtp().is_some());

            let mut off = LocalSdp::new(LOCAL, 40000, BOTH, 7).with_srtp(SrtpPolicy::Off);
            assert_eq!(off.answer(&secure), Err(SdpError::NoCryptoSuite));
            assert!(off.answer(&plain).is_ok());
            // Plain offers from `Accept` and `Off` legs carry no key.
            assert!(!accept.offer().contains("crypto"));
            assert!(!off.offer().contains("RTP/SAVP"));
        }

        #[test]
        fn our_savp_offer_and_its_answer_agree_on_keys_both_ways() {
            let mut offerer = LocalSdp::new(LOCAL, 4000, BOTH, 1).with_srtp(SrtpPolicy::Require);
            let o = offerer.offer();
            assert_eq!(line(&o, "m="), Some("m=audio 4000 RTP/SAVP 0 8 101"));
            assert!(o.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"));
            assert!(o.contains("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:"));
            // A phone answering with verde's own answerer.
            let mut phone = LocalSdp::new(LOCAL, 5004, BOTH, 2);
            let answer = phone.answer(&o).unwrap().answer;
            offerer.accept_answer(&answer).unwrap();
            let ours = offerer.srtp().unwrap();
            let theirs = phone.srtp().unwrap();
            assert_eq!(ours.suite, CryptoSuite::AesCm128HmacSha1_80);
            assert_eq!(ours.local, theirs.remote);
            assert_eq!(ours.remote, theirs.local);
        }

        #[test]
        fn answers_that_drop_or_garble_srtp_are_refused() {
            let mut offerer = LocalSdp::new(LOCAL, 4000, BOTH, 1).with_srtp(SrtpPolicy::Require);
            offerer.offer();
            assert_eq!(
                offerer.accept_answer(&answer_sdp("m=audio 5004 RTP/AVP 0", "")),
                Err(SdpError::SrtpRequired)
            );
            // Tag 1 was our _80 line: an answer naming tag 1 with _32 is not our offer.
            let wrong_tag = format!("a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY_30}\r\n");
            assert_eq!(
                offerer.accept_answer(&answer_sdp("m=audio 5004 RTP/SAVP 0", &wrong_tag)),
                Err(SdpError::NoCryptoSuite)
            );
            let good = format!("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_30}\r\n");
            offerer
                .accept_answer(&answer_sdp("m=audio 5004 RTP/SAVP 0", &good))
                .unwrap();
            assert_eq!(
                offerer.srtp().unwrap().suite,
                CryptoSuite::AesCm128HmacSha1_32
            );
            // A plain offer answered with SAVP is refused too.
            let mut plain = LocalSdp::new(LOCAL, 4000, BOTH, 1);
            plain.offer();
            assert_eq!(
                plain.accept_answer(&answer_sdp("m=audio 5004 RTP/SAVP 0", &good)),
                Err(SdpError::NoCryptoSuite)
            );
        }

        #[test]
        fn keys_are_redacted_from_debug_and_logs() {
            let o = savp(&format!(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30}|2^31\r\n"
            ));
            let mut a = LocalSdp::new(LOCAL, 40000, BOTH, 7);
            let n = a.answer(&o).unwrap();
            let ours = line(&n.answer, "a=crypto:")
                .unwrap()
                .split("inline:")
                .nth(1)
                .unwrap();
            let shown = format!("{n:?} {:?}", a.srtp());
            assert!(!shown.contains(ours), "{shown}");
            assert!(shown.contains("inline:<redacted>"), "{shown}");
            let r = redact_keys(&o);
            assert!(!r.contains(KEY_30));
            assert!(r.contains("inline:<redacted>|2^31"), "{r}");
        }
    }
}
