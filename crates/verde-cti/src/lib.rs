//! verde's CTI layer: the protocol agents' bars and supervisors' wallboards speak over the `/cti`
//! websocket, and the per-connection logic that decides what each of them may do.
//!
//! # Place in verde
//! The `verde` binary accepts the websocket (axum), owns one [`Session`] per connection and feeds
//! it the client's text ([`Session::handle_text`]), the engine's events ([`Session::handle_event`]),
//! the engine's answers to commands ([`Session::complete`]) and the wallboard frames
//! ([`Session::handle_frame`]); it sends and carries out the [`Out`]s that come back. This crate
//! knows nothing of SIP, media, axum, sockets or the config format: calls, agents and queues are
//! the ACD's names ([`verde_acd::CallKey`], [`verde_acd::AgentId`], [`verde_acd::QueueName`]), and
//! passwords are checked through the [`Credentials`] trait the binary implements. It is sans-IO:
//! every method takes `now`, nothing reads a clock, sleeps or spawns.
//!
//! # What is decided here
//! * The wire format (`docs/cti-protocol.md`): versioned, typed JSON; every command carries an
//!   `id` and gets one `result` or one `error` with a code.
//! * Authentication ([`Authenticator`]): opaque random tokens with an expiry, agent and
//!   supervisor roles, brute-force lockout per user id.
//! * Authorization, in the session: before login only `login`/`resume`; supervisor commands for
//!   supervisors, agent commands for agents; an agent acts only on calls the engine told *its*
//!   session about (offered to it, answered, held), and the agent in every [`EngineCommand`] is
//!   the logged-in one, never one named in the message. A command naming another call is refused
//!   (`forbidden`) and reported as an [`Alert`] for the log.
//! * Flow control: a token bucket per connection, a size limit per message; a malformed message
//!   gets `bad_request` and the connection carries on.
//! * Fan-out ([`Broadcast`]): one serialization of the ACD snapshot per tick, the same
//!   `Arc<str>` handed to every supervisor; sessions that kept up get the delta, others the
//!   snapshot.
//!
//! # What the binary must do
//! Route each agent's events to its sessions (after [`Out::Attach`], starting with the current
//! state, which is how a reconnect shows the truth); tick a [`Broadcast`] from the ACD's
//! published snapshot and hand frames to supervisor sessions; call [`Authenticator::purge`] now
//! and then; log [`Out::Alert`]s with the peer's address.

mod auth;
mod broadcast;
mod protocol;
mod session;

pub use auth::{AuthConfig, AuthError, Authenticator, Credentials, Grant, Identity};
pub use broadcast::{Broadcast, Frame};
pub use protocol::{
    state_label, CallOffer, Channel, Device, ErrorCode, Event, IvrChoice, RequestId, Role,
    SuperviseMode, TaskInfo, TaskKind, TaskRef, TransferMode, TransferTarget, VERSION,
};
pub use session::{Alert, EngineCommand, EngineError, ForcedState, Limits, Out, Reply, Session};

#[cfg(test)]
mod tests;
