//! SIP for verde: our own message type, the RFC 3261 transaction layer, dialogs, digest
//! authentication and registrar state.
//!
//! This crate sits between the binary's transport tasks (which own the UDP/TCP sockets) and the
//! per-call logic. It is sans-IO: bytes and a `now: Instant` go in, [`Transmit`]s, [`Event`]s and
//! the next deadline come out. It never reads the clock, sleeps or touches a socket.
//!
//! It must not know about media (SDP bodies are opaque bytes here), IVR flows or storage.
//!
//! * [`message`]: [`Message`], [`Request`], [`Response`], [`Headers`], [`Via`]; the parser
//!   (`message/codec.rs`: rsip's tokenizer for the common message, our own reader for what rsip
//!   refuses; checked against the RFC 4475 torture messages) and
//!   serializer, TCP framing ([`frame`]).
//! * [`transaction`]: [`Endpoint`], RFC 3261 section 17 client and server transactions with
//!   timers A–K, RFC 6026 "Accepted" handling of 2xx to INVITE, CANCEL, RFC 3581 `rport`, and
//!   stateless rejection of malformed requests.
//! * [`dialog`]: [`Dialog`], both sides of an INVITE dialog, [`OutboundInvite`] to start one,
//!   [`DialogState`] to store one, plus tag/branch/Call-ID generators.
//! * [`auth`]: server-side Digest ([`DigestAuth`], MD5 and SHA-256, stateless nonces with
//!   nonce-count replay protection) and [`FailureLimiter`] for brute-force sources.
//! * [`flood`]: [`FloodGuard`], per-source token buckets for REGISTER/INVITE and a penalty box
//!   for scanners and brute-force sources, consulted before a packet is parsed.
//! * [`registrar`]: [`Registrar`], RFC 3261 10.3 bindings that remember the source address
//!   of each REGISTER, so calls reach phones behind NAT and over TCP.
//! * [`refer`]: `Refer-To` parsing and sipfrag NOTIFYs for transfers.

pub mod auth;
pub mod dialog;
pub mod flood;
pub mod message;
pub mod refer;
pub mod registrar;
#[cfg(test)]
mod torture;
pub mod transaction;

#[cfg(test)]
mod testdata;

pub use auth::{AuthError, Credentials, DigestAuth, FailureLimiter};
pub use dialog::{
    name_addr, new_branch, new_call_id, new_tag, uri_socket_addr, uri_transport, Dialog,
    DialogError, DialogState, OutboundInvite,
};
pub use flood::{FloodGuard, Offence, Throttled, Verdict};
pub use message::{
    frame, Frame, FrameError, Headers, Message, Method, ParseError, Peer, Request, Response,
    Transport, Via,
};
pub use refer::{refer_to, ReferError, ReferTo};
pub use registrar::{Binding, Registrar};
pub use transaction::{ClientTxId, Config, Endpoint, Event, SendError, ServerTxId, Transmit};
