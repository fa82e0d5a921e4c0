//! verde's automatic call distributor (ACD): queues, agents, strategies, skills, announcements.
//!
//! # Place in verde
//! The ACD decides *who* takes *which* call and *when*. It knows nothing of SIP, media, the IVR
//! or storage: calls are opaque [`CallKey`]s, agents and queues are names, exits are flow-node
//! names it hands back untouched. The `verde` binary feeds it [`Input`]s (a queue node enqueued a
//! call, an agent's phone answered, a caller hung up, ...) and carries out its [`Action`]s (ring
//! an agent, bridge, play an announcement, leave through an exit). Like the other protocol
//! crates it is sans-IO: every call takes `now`, timers come out of [`Acd::poll_timeout`] and go
//! back in through [`Acd::handle_timeout`]; it never reads a clock, sleeps or spawns.
//!
//! # Why one owner instead of lock-free shared structures
//! [`Acd`] is a plain struct with `&mut self` methods, owned by **one** task and fed by a bounded
//! channel. There is no mutex anywhere, and no other thread ever touches its state, so the path
//! from "caller enqueued" or "agent ready" to "agent reserved" takes no lock and no CAS. This is
//! the design the issue calls "single-owner shards fed by channels", chosen over atomics/CAS
//! structures because of what a reservation really is: an agent belongs to *many* queues, and
//! reserving it must take it out of all of them at once, together with removing the caller from
//! its line. With CAS structures that is a multi-word transaction (a claim flag per agent plus
//! retries in every queue that sees it, and a caller that may be claimed by two dispatchers),
//! exactly where double-booking bugs live. With one owner the whole step is ordinary sequential
//! code, atomic for free, and correctness reduces to the single-threaded tests below plus the
//! channel. The owner's cost per input is a few O(log n) tree operations, far below the
//! channel hop, so one core sustains millions of dispatches per second (see `benches/acd.rs`).
//! Scale-out is by sharding: tenants or groups of queues that share no agent go to separate
//! owners, each its own task and channel.
//!
//! # Semantics
//! * Callers are ordered by priority (higher first), then by the time they first joined, then
//!   by arrival. A caller whose offer fails goes back **at the head** (it keeps its place key);
//!   a caller who abandons and redials from the same number into the same queue within
//!   `abandoned_resume` (60 s) regains its original place and enqueue time (its `max_wait`
//!   counts from the redial).
//! * Callbacks ([`Input::EnqueueCallback`]) keep the caller's place: a callback is a virtual
//!   caller whose time is the one its caller first joined at, so it stands behind everyone who
//!   called earlier and is still waiting and ahead of everyone who called later, and re-enqueuing
//!   it with the same time (a retry, or a new time band) puts it back in the same place. It is
//!   served like a live caller (same offers, strategies, skills, escalation counted from the
//!   original time) but gets no announcements and never leaves through max wait, max length
//!   or the empty exit. Live callers' positions and estimates count the callbacks ahead of them:
//!   those are people waiting too. Which callbacks may be dialed now (time bands, service hours,
//!   attempts) is the binary's decision: the ACD only holds the eligible ones. The binary asks
//!   [`Acd::callback_offer`] whether to offer a waiting caller a callback.
//! * Strategies: `longest-idle` (agent whose last call ended, or who logged in, longest ago),
//!   `first-free` (order of the `agents:` list), `round-robin` (rotating pointer per queue over
//!   that order), `fewest-calls` (fewest handled since [`Acd::reset_daily_counters`]), `ring-all`
//!   (every eligible free agent rings, the first answer wins, the others get `CancelOffer`).
//! * Skills: a queue requires skills with minimum levels; escalation tiers cap the required
//!   levels after a caller has waited `after`, widening the pool (`min_level: 0` opens it to every
//!   member). An agent's *level in a queue* is the lowest level it has among the skills where it
//!   falls short (255 when it meets them all); it is eligible when that level is at least the
//!   caller's current cap.
//! * Agent states: logged-out, ready, reserved (offered), ringing, on-call, wrap-up, paused.
//!   Login makes the agent ready. An offer reserves the agent in all its queues. No answer or
//!   rejection: the caller goes back to the head, the agent gets a miss, goes to the back of the
//!   idle line and is paused ("no-answer") after `max_misses_before_pause` in a row. Busy: the
//!   next agent is tried (the busy one is tried last for that caller). Unreachable: the next agent
//!   is tried and this one is paused ("unreachable"). After a call the agent wraps up (per the
//!   queue the call came from) and takes nothing from any queue until the timer or `WrapUpDone`.
//!   Pause and logout during an offer or call take effect after it.
//! * Ring timeout: the ACD itself cancels an unanswered offer after `ring_timeout` (a miss,
//!   except for ring-all where nobody answered and nobody is blamed).
//!
//! # Estimated wait
//! For a queue, let `N` be its serving agents (logged in, not paused) and `H` the handle time
//! (talk + wrap-up) averaged exponentially over recent calls (weight 0.2 for the newest call;
//! `default_handle_time` until one call ended). Agent `i` can take a new call after `r_i`:
//! 0 when ready, `H - talk so far` when on a call, the rest of its wrap-up, `H` while ringing for
//! another caller (each clamped to `[0, H]`). It then frees up again every `H`, so with the `r_i`
//! sorted ascending the caller with `p` callers ahead of it (in this queue only, callbacks
//! included) gets the
//! `(p + 1)`-th slot:
//!
//! ```text
//! EWT(p) = floor(p / N) * H + r_(p mod N)
//! ```
//!
//! which is the `ceil(p / N) * H` rule corrected by the remaining time of the calls in progress.
//!
//! # Costs
//! Each queue keeps its callers in an order-statistic treap keyed by `(priority, original time,
//! arrival)` packed in a `u128` (O(log n) for enqueue, dispatch, requeue, abandon, a callback
//! joining in the middle and the *position* of any caller) and its ready agents in `BTreeSet`s
//! ordered per strategy, one per skill level present. Dispatch looks at
//! the first key of each eligible level bucket: O(levels * log agents); round-robin is a range
//! query from the pointer. Reserving an agent removes it from the ready set of each of its queues:
//! O(queues per agent * log agents). Ring-all walks every eligible free agent (it offers to all of
//! them anyway), and an agent that already failed the caller is skipped by walking past it. With
//! escalation tiers, dispatch also looks at the head of each lower priority lane, since a lower
//! priority caller may have waited long enough for a wider pool. Timers (ring, wrap-up, max wait,
//! announcements, escalation) live in one ordered set and are removed when no longer needed.

mod acd;
pub mod config;
mod order;
mod types;

pub use acd::Acd;
pub use config::{
    AgentConfig, AnnounceConfig, CallbackConfig, CallbackMode, EscalationTier, ExitsConfig,
    QueueConfig, Strategy,
};
pub use types::{
    AcdError, Action, AgentId, AgentSnapshot, AgentState, CallKey, CallerKind, CallerSnapshot,
    ConfigError, ExitReason, Input, OfferFailure, QueueName, QueueSnapshot, Snapshot,
};

#[cfg(test)]
mod tests;
