//! SRTP/SRTCP keyed by SDES (RFC 4568 `a=crypto`) for SIP legs.
//!
//! [`crate::sdp`] negotiates a suite and the two master keys (ours, for what we send; the
//! remote's, for what we receive); [`SrtpContext`] turns them into the two one-way contexts
//! of `rtc-srtp` (the webrtc-rs implementation, already used by our WebRTC legs through
//! DTLS-SRTP) and protects/unprotects whole datagrams. The [`crate::MediaSession`] applies it
//! at its edge, so everything above (jitter buffer, DTMF, relay, recording) sees plain RTP.
//!
//! Key material never leaves this module in printable form: [`MasterKey`]'s `Debug` is
//! redacted and only the SDP module encodes it, into the SDP body.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use rtc_srtp::context::Context;
use rtc_srtp::crypto::RTCCryptoProvider;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;

/// Master key (16 bytes) followed by master salt (14 bytes), as `inline:` carries them for
/// both suites we support.
pub const MASTER_LEN: usize = 30;
const KEY_LEN: usize = 16;
/// How far back a received packet may be and still be accepted once (RFC 3711 §3.3.2
/// suggests at least 64).
const REPLAY_WINDOW: usize = 128;

/// The SDES crypto suites verde accepts, in our order of preference for offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CryptoSuite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl CryptoSuite {
    pub const ALL: [CryptoSuite; 2] = [
        CryptoSuite::AesCm128HmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_32,
    ];

    /// The suite name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            CryptoSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    pub fn from_name(name: &str) -> Option<CryptoSuite> {
        CryptoSuite::ALL.into_iter().find(|s| s.name() == name)
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            CryptoSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        }
    }
}

/// A master key and salt. `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey(pub(crate) [u8; MASTER_LEN]);

impl MasterKey {
    /// A fresh key from the operating system's random number generator.
    pub fn random() -> MasterKey {
        use rand::TryRngCore as _;
        let mut k = [0u8; MASTER_LEN];
        if rand::rngs::OsRng.try_fill_bytes(&mut k).is_err() {
            // getrandom does not fail on a running Linux; should it, the thread RNG is a
            // CSPRNG seeded from the same source.
            use rand::RngCore as _;
            rand::rng().fill_bytes(&mut k);
        }
        MasterKey(k)
    }

    pub fn from_bytes(bytes: [u8; MASTER_LEN]) -> MasterKey {
        MasterKey(bytes)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// The outcome of an SDES negotiation: one suite, one key each way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub suite: CryptoSuite,
    /// Protects what we send (the key in our `a=crypto`).
    pub local: MasterKey,
    /// Unprotects what we receive (the key in the remote's `a=crypto`).
    pub remote: MasterKey,
}

#[derive(Debug, thiserror::Error)]
pub enum SrtpError {
    #[error("SRTP context: {0}")]
    Context(String),
    #[error("no crypto provider: {0}")]
    Provider(String),
}

/// Why a received packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Authentication failed (wrong key, corrupted, or plain RTP on a secure leg), too short,
    /// or a replay.
    Unprotect,
}

fn provider() -> Result<&'static Arc<dyn RTCCryptoProvider>, SrtpError> {
    static PROVIDER: OnceLock<Result<Arc<dyn RTCCryptoProvider>, String>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| rtc_srtp::crypto::default_provider().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| SrtpError::Provider(e.clone()))
}

/// Both directions of one leg's SRTP: protect with our key, unprotect with the remote's.
pub struct SrtpContext {
    keys: SrtpKeys,
    // `rtc-srtp` contexts are `Send` but not `Sync`, while call tasks hold sessions by
    // reference across awaits. Only ever reached through `&mut self` (`Mutex::get_mut`): the
    // mutex is never locked, it just makes the type `Sync` without `unsafe`.
    tx: Mutex<Context>,
    rx: Mutex<Context>,
}

fn exclusive(m: &mut Mutex<Context>) -> &mut Context {
    m.get_mut().unwrap_or_else(|e| e.into_inner())
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.keys.suite)
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    pub fn new(keys: &SrtpKeys) -> Result<SrtpContext, SrtpError> {
        Ok(SrtpContext {
            tx: Mutex::new(Self::context(keys.suite, &keys.local, false)?),
            rx: Mutex::new(Self::context(keys.suite, &keys.remote, true)?),
            keys: keys.clone(),
        })
    }

    /// Applies a re-negotiation. A direction whose key and suite are unchanged keeps its
    /// context: rebuilding ours would restart the rollover counter and the SRTCP index under
    /// the same key, i.e. reuse keystream.
    pub fn update(&mut self, keys: &SrtpKeys) -> Result<(), SrtpError> {
        let same_suite = keys.suite == self.keys.suite;
        if !same_suite || keys.local != self.keys.local {
            self.tx = Mutex::new(Self::context(keys.suite, &keys.local, false)?);
        }
        if !same_suite || keys.remote != self.keys.remote {
            self.rx = Mutex::new(Self::context(keys.suite, &keys.remote, true)?);
        }
        self.keys = keys.clone();
        Ok(())
    }

    fn context(suite: CryptoSuite, key: &MasterKey, rx: bool) -> Result<Context, SrtpError> {
        // Replay protection only makes sense on what we receive.
        let (srtp, srtcp) = if rx {
            (
                Some(srtp_replay_protection(REPLAY_WINDOW)),
                Some(srtcp_replay_protection(REPLAY_WINDOW)),
            )
        } else {
            (None, None)
        };
        Context::new(
            &key.0[..KEY_LEN],
            &key.0[KEY_LEN..],
            suite.profile(),
            srtp,
            srtcp,
            provider()?.crypto(),
        )
        .map_err(|e| SrtpError::Context(e.to_string()))
    }

    pub fn keys(&self) -> &SrtpKeys {
        &self.keys
    }

    /// An SRTP packet for a plain RTP packet we built; `None` if it cannot be protected
    /// (not RTP, or 2^48 packets sent on one key).
    pub fn protect_rtp(&mut self, plain: &[u8]) -> Option<Bytes> {
        match exclusive(&mut self.tx).encrypt_rtp(plain) {
            Ok(b) => Some(b.freeze()),
            Err(e) => {
                tracing::debug!(error = %e, "RTP not protected");
                None
            }
        }
    }

    pub fn protect_rtcp(&mut self, plain: &[u8]) -> Option<Bytes> {
        match exclusive(&mut self.tx).encrypt_rtcp(plain) {
            Ok(b) => Some(b.freeze()),
            Err(e) => {
                tracing::debug!(error = %e, "RTCP not protected");
                None
            }
        }
    }

    pub fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<Bytes, Rejected> {
        exclusive(&mut self.rx)
            .decrypt_rtp(packet)
            .map(|b| b.freeze())
            .map_err(|_| Rejected::Unprotect)
    }

    pub fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<Bytes, Rejected> {
        exclusive(&mut self.rx)
            .decrypt_rtcp(packet)
            .map(|b| b.freeze())
            .map_err(|_| Rejected::Unprotect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::RtpSender;
    use std::time::Instant;

    fn keys(suite: CryptoSuite) -> (SrtpKeys, SrtpKeys) {
        let a = MasterKey::random();
        let b = MasterKey::random();
        (
            SrtpKeys {
                suite,
                local: a.clone(),
                remote: b.clone(),
            },
            SrtpKeys {
                suite,
                local: b,
                remote: a,
            },
        )
    }

    fn rtp_packets(n: usize) -> Vec<Bytes> {
        let mut sender = RtpSender::new(0x1234_5678, 0, 1000, 0, Instant::now());
        (0..n)
            .map(|i| {
                let payload: Vec<u8> = (0..160).map(|j| (i * 7 + j) as u8).collect();
                sender.build(0, i == 0, (i * 160) as u32, &payload)
            })
            .collect()
    }

    #[test]
    fn round_trip_both_suites() {
        for suite in CryptoSuite::ALL {
            let (ours, theirs) = keys(suite);
            let mut a = SrtpContext::new(&ours).unwrap();
            let mut b = SrtpContext::new(&theirs).unwrap();
            for plain in rtp_packets(5) {
                let sealed = a.protect_rtp(&plain).unwrap();
                let tag = match suite {
                    CryptoSuite::AesCm128HmacSha1_80 => 10,
                    CryptoSuite::AesCm128HmacSha1_32 => 4,
                };
                assert_eq!(sealed.len(), plain.len() + tag, "{suite:?}");
                // Header in clear, payload not.
                assert_eq!(sealed[..12], plain[..12]);
                assert_ne!(sealed[12..plain.len()], plain[12..]);
                assert_eq!(b.unprotect_rtp(&sealed).unwrap(), plain);
            }
            let rr = crate::rtp::build_report(0x1234_5678, None, None, "verde");
            let sealed = a.protect_rtcp(&rr).unwrap();
            assert_ne!(sealed, rr);
            assert_eq!(b.unprotect_rtcp(&sealed).unwrap(), rr);
        }
    }

    #[test]
    fn wrong_key_replay_and_plain_are_rejected() {
        let (ours, _) = keys(CryptoSuite::AesCm128HmacSha1_80);
        let (stranger, _) = keys(CryptoSuite::AesCm128HmacSha1_80);
        let mut a = SrtpContext::new(&ours).unwrap();
        let mut wrong = SrtpContext::new(&stranger).unwrap();
        let plain = &rtp_packets(1)[0];
        let sealed = a.protect_rtp(plain).unwrap();
        assert_eq!(wrong.unprotect_rtp(&sealed), Err(Rejected::Unprotect));
        assert_eq!(wrong.unprotect_rtp(plain), Err(Rejected::Unprotect));

        let mut right = SrtpContext::new(&SrtpKeys {
            suite: ours.suite,
            local: ours.remote.clone(),
            remote: ours.local.clone(),
        })
        .unwrap();
        assert!(right.unprotect_rtp(&sealed).is_ok());
        assert_eq!(right.unprotect_rtp(&sealed), Err(Rejected::Unprotect));
        let mut tampered = sealed.to_vec();
        tampered[20] ^= 1;
        assert_eq!(right.unprotect_rtp(&tampered), Err(Rejected::Unprotect));
    }

    #[test]
    fn keys_are_fresh_and_never_printed() {
        let a = MasterKey::random();
        let b = MasterKey::random();
        assert_ne!(a, b);
        let shown = format!(
            "{:?}",
            SrtpKeys {
                suite: CryptoSuite::AesCm128HmacSha1_32,
                local: a.clone(),
                remote: b
            }
        );
        assert!(shown.contains("redacted"), "{shown}");
        let hex: String = a.0.iter().map(|x| format!("{x:02x}")).collect();
        assert!(!shown.contains(&hex[..8]), "{shown}");
    }

    #[test]
    fn sessions_holding_a_context_can_cross_tasks() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<SrtpContext>();
        send_sync::<crate::MediaSession>();
    }

    #[test]
    fn suite_names_round_trip() {
        for s in CryptoSuite::ALL {
            assert_eq!(CryptoSuite::from_name(s.name()), Some(s));
        }
        assert_eq!(CryptoSuite::from_name("AES_256_CM_HMAC_SHA1_80"), None);
    }
}
