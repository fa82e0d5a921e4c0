//! What the interop tests rely on in the shipped flows (`ivr-flows/`) and prompts (`sounds/`):
//! the numbers, the node ids a call record's `path` must contain, and which prompts are heard
//! before each menu listens. Kept in one place so a change to the flows is one change here.

use crate::repo_root;
use crate::wav::Audio;
use std::path::PathBuf;

/// The numbers the default configuration serves (each declared by a flow's `numbers:`).
pub const DEFAULT_DIDS: [&str; 3] = ["803164", "800022399", "800779366"];

/// The INPS contact-center number (`ivr-flows/inps.yaml`).
pub const INPS: &str = "803164";

/// A number no flow serves.
pub const UNKNOWN_DID: &str = "800000000";

/// The prompts a caller of `did` may hear first, as (language, name). Two of the flows start
/// with a schedule node (open hours in Europe/Rome, morning/afternoon greeting, national
/// holidays), so which one plays depends on when the test runs: the tests accept any of these
/// and report which one matched.
pub fn first_prompts(did: &str) -> Vec<(&'static str, &'static str)> {
    match did {
        // inps.yaml: welcome (no schedule)
        "803164" => vec![("it", "inps_welcome")],
        // university-facilities.yaml: hours -> welcome_morning | welcome_afternoon | closed_message
        "800022399" => vec![
            ("it", "facilities_good_morning"),
            ("it", "facilities_good_afternoon"),
            ("it", "facilities_closed"),
        ],
        // teaching-helpdesk.yaml: hours -> welcome | closed_message
        "800779366" => vec![("it", "helpdesk_welcome"), ("it", "helpdesk_closed")],
        other => panic!("no first prompt known for {other}: update tests/flows.rs"),
    }
}

/// inps.yaml: service menu key 1 -> queue node for pensions, 2 -> benefits.
pub const NODE_PENSIONS_QUEUE: &str = "q_pensions";
pub const NODE_BENEFITS_QUEUE: &str = "q_benefits";

/// inps.yaml: what plays before the language menu starts reading its options (`welcome`).
pub const BEFORE_LANGUAGE_MENU: &[(&str, &str)] = &[("it", "inps_welcome")];

/// inps.yaml: what plays between choosing `lang` and the service menu starting to read its
/// options (`language_selected`, `privacy`), in the chosen language.
pub fn before_service_menu(lang: &str) -> Vec<(String, &'static str)> {
    vec![
        (lang.to_string(), "language_selected"),
        (lang.to_string(), "inps_privacy"),
    ]
}

/// `sounds/<lang>/<name>.wav`, or the Italian one when that language has no recording (verde
/// falls back to the flow's default language, Italian for all shipped flows).
pub fn prompt_path(lang: &str, name: &str) -> PathBuf {
    let sounds = repo_root().join("sounds");
    let p = sounds.join(lang).join(format!("{name}.wav"));
    if p.is_file() {
        return p;
    }
    let fallback = sounds.join("it").join(format!("{name}.wav"));
    assert!(
        fallback.is_file(),
        "prompt {} does not exist (have the flows or sounds changed? update tests/flows.rs)",
        p.display()
    );
    fallback
}

pub fn prompt(lang: &str, name: &str) -> Audio {
    Audio::load(&prompt_path(lang, name))
}

/// Total duration in seconds of a list of prompts.
pub fn duration_of<L: AsRef<str>>(prompts: &[(L, &str)]) -> f64 {
    prompts
        .iter()
        .map(|(l, n)| prompt(l.as_ref(), n).duration())
        .sum()
}
