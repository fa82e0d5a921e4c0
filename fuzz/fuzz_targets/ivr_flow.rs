//! The IVR flow loader on arbitrary text (`verde_ivr::parse_flow`, what `load_flows` and the
//! hot reload run on each `ivr-flows/*.yaml`): it must return errors, never panic. A flow that
//! loads is then run by the interpreter for one call, since validation is what lets the
//! interpreter trust the flow: keys come from a `#fuzz-keys: ...` comment line in the input
//! (the loader ignores comments, the fuzzer mutates it), default `1`.
#![no_main]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use verde_ivr::{
    parse_flow, CallInfo, CallbackRefusal, Interpreter, IvrAction, IvrEvent, PromptCatalog,
};

/// Every prompt exists, or none does (the loader then warns or refuses).
struct Catalog(bool);

impl PromptCatalog for Catalog {
    fn has(&self, _lang: &str, _name: &str) -> bool {
        self.0
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("ivr-flows/fuzz.yaml");
    let _ = parse_flow(text, file, &Catalog(false));
    let Ok(flow) = parse_flow(text, file, &Catalog(true)) else {
        return;
    };
    let keys: Vec<char> = text
        .lines()
        .find_map(|l| l.strip_prefix("#fuzz-keys:"))
        .map_or_else(|| vec!['1'], |k| k.trim().chars().take(64).collect());
    run_call(Arc::new(flow), &keys);
});

fn run_call(flow: Arc<verde_ivr::Flow>, keys: &[char]) {
    let mut now = Instant::now();
    // 2026-01-05 10:00 UTC, a Monday morning: most schedules are open.
    let wall = DateTime::from_timestamp(1_767_607_200, 0).expect("valid timestamp");
    let call = CallInfo {
        call_id: "fuzz-call".into(),
        caller: "+390212345678".into(),
        did: "800123456".into(),
    };
    let mut ivr = Interpreter::new(flow, call, wall, now);
    ivr.handle(IvrEvent::Start, now);
    let mut keys = keys.iter();
    for _ in 0..200 {
        // The agent hangs up on a queued call whose queue node names an `after_agent` node.
        if ivr.is_done() && !ivr.resume_after_agent(now) {
            break;
        }
        let mut reply = None;
        while let Some(action) = ivr.poll_action() {
            reply = match action {
                IvrAction::Play { .. } | IvrAction::Voicemail { .. } => Some(IvrEvent::PromptDone),
                IvrAction::Callback { .. } => Some(IvrEvent::CallbackRefused {
                    reason: CallbackRefusal::Full,
                }),
                IvrAction::Record { .. } => Some(IvrEvent::RecordingDone { duration_ms: 3_000 }),
                _ => reply,
            };
        }
        now += Duration::from_millis(700);
        match keys.next() {
            Some(&k) => ivr.handle(IvrEvent::Digit(k), now),
            None => match reply {
                Some(event) => ivr.handle(event, now),
                None => match ivr.poll_timeout() {
                    Some(at) => {
                        now = now.max(at);
                        ivr.handle_timeout(now);
                    }
                    None => break,
                },
            },
        }
    }
    ivr.handle(IvrEvent::Hangup, now);
    while ivr.poll_action().is_some() {}
    let _ = (
        ivr.outcome(),
        ivr.path(),
        ivr.choices(),
        ivr.survey_answers(),
    );
}
