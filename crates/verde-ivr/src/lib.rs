//! verde-ivr: the IVR of verde — flow model, YAML loader with `file:line` validation,
//! schedules with Italian holidays, and the per-call interpreter.
//!
//! Place in the system: the `verde` binary loads a [`FlowSet`] from `ivr-flows/`, picks the
//! [`Flow`] for the called number, and drives one [`Interpreter`] per call, translating its
//! [`IvrAction`]s into SIP answers, media playback and hand-offs, and feeding back DTMF and
//! playback completion as [`IvrEvent`]s.
//!
//! What this crate must not know: SIP, RTP/media, sockets, storage, the clock. It is sans-IO:
//! time comes in as `Instant`s (and one wall-clock reading per call), prompts are names checked
//! through the [`PromptCatalog`] trait, and the only file access is reading flow files.
//!
//! The flow format is documented in `docs/flows.md`.

mod flow;
mod interpreter;
mod lines;
mod loader;
mod numbers;
pub mod schedule;

pub use flow::{BandSpec, DirCatalog, Flow, FlowError, FlowSet, PromptCatalog};
pub use interpreter::{
    CallInfo, CallbackRefusal, Interpreter, IvrAction, IvrEvent, Outcome, PromptRef,
};
pub use loader::{check_flow_file, load_flows, parse_flow, reload_flows};
pub use schedule::{Schedule, ScheduleState};

/// Prompt names that speak the number `n` in `lang` (digit by digit in languages without a
/// number grammar here), for announcements outside flows such as queue positions.
pub fn number_prompts(lang: &str, n: u64) -> Vec<String> {
    let digits = n.to_string();
    numbers::as_number(lang, &digits).unwrap_or_else(|| numbers::digit_by_digit(&digits))
}
