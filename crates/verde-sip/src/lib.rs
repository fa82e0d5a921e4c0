//! SIP for verde: our own message type, the RFC 3261 transaction layer and UAS dialogs.
//!
//! This crate sits between the binary's transport tasks (which own the UDP/TCP sockets) and the
//! per-call logic. It is sans-IO: bytes and a `now: Instant` go in, [`Transmit`]s, [`Event`]s and
//! the next deadline come out. It never reads the clock, sleeps or touches a socket.
//!
//! It must not know about media (SDP bodies are opaque bytes here), IVR flows or storage.
//!
//! * [`message`]: [`Message`], [`Request`], [`Response`], [`Headers`], [`Via`]; parsing (rsip is
//!   used only inside `message/codec.rs`), our own serializer, TCP framing ([`frame`]).
//! * [`transaction`]: [`Endpoint`], RFC 3261 section 17 client and server transactions with
//!   timers A–K, RFC 6026 "Accepted" handling of 2xx to INVITE, CANCEL, RFC 3581 `rport`, and
//!   stateless rejection of malformed requests.
//! * [`dialog`]: [`Dialog`], the UAS side of an INVITE dialog, plus tag/branch generators.

pub mod dialog;
pub mod message;
pub mod transaction;

#[cfg(test)]
mod testdata;

pub use dialog::{new_branch, new_call_id, new_tag, Dialog, DialogError};
pub use message::{
    frame, Frame, FrameError, Headers, Message, Method, ParseError, Peer, Request, Response,
    Transport, Via,
};
pub use transaction::{ClientTxId, Config, Endpoint, Event, SendError, ServerTxId, Transmit};
