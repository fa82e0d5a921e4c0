//! verde-media: everything a call leg needs to speak G.711 over RTP.
//!
//! It owns SDP offer/answer ([`sdp`]), RTP/RTCP ([`rtp`]), G.711 companding ([`g711`]),
//! DTMF by RFC 4733 and in-band Goertzel detection ([`dtmf`]), the prompt cache ([`prompt`]),
//! the per-leg [`MediaSession`] that ties them together, [`bridge_step`], which relays
//! audio and digits between the two legs of a B2BUA call, the supervision [`Mixer`] that joins
//! a third leg (a supervisor listening, whispering to the agent or barging in), the
//! [`Recorder`] that writes a leg's received audio to a WAV file (voicemail), and the
//! [`StereoRecorder`] that writes a call with the caller on the left and the agent on the right.
//! SIP legs may be SRTP keyed by SDES ([`srtp`]): the session protects and unprotects at its
//! edge, so bridging, DTMF and recording always see plain RTP.
//!
//! It is sans-IO: callers pass `now: Instant` (and wall-clock time where RTCP needs it) and
//! move datagrams in and out; nothing here opens sockets, sleeps or reads the clock. The
//! only I/O is [`PromptCache::load`] reading audio files at startup/reload and the
//! recorders writing their one file each.
//!
//! It must not know about SIP (it sees SDP bodies as strings and reports errors the caller
//! maps to 400/488) nor about IVR flows (it plays what it is given and reports digits).

pub mod bridge;
pub mod dtmf;
pub mod g711;
pub mod mixer;
pub mod prompt;
pub mod record;
pub mod rtp;
pub mod sdp;
pub mod session;
pub mod srtp;
pub mod stereo;
#[cfg(test)]
mod testaudio;

pub use bridge::bridge_step;
pub use mixer::{Mixer, Party, SupervisorMode};
pub use prompt::{Prompt, PromptCache, PromptError};
pub use record::{RecordError, RecordStatus, Recorder};
pub use sdp::{answer, redact_keys, Codec, Direction, LocalSdp, Negotiated, SdpError, SrtpPolicy};
pub use session::{
    DtmfSource, InbandDtmf, MediaConfig, MediaEvent, MediaSession, MediaStats, Relay, RelayFrame,
    Socket, TapDirection, TapFrame, Transmit,
};
pub use srtp::{CryptoSuite, SrtpError, SrtpKeys};
pub use stereo::{Channel, StereoRecorder};
