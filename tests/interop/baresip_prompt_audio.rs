//! A real softphone (baresip) calls the INPS number: what it heard must be the welcome prompt
//! (by duration and energy envelope), and the keys it sends (RFC 4733, baresip's `sndcode`) must
//! take the call down the pensions branch.

use std::time::{Duration, Instant};
use verde_interop::baresip::{padded_source, Baresip};
use verde_interop::flows::{self, INPS, NODE_PENSIONS_QUEUE};
use verde_interop::verde::{assert_record_branch, Verde, VerdeOptions};
use verde_interop::wav::{envelope_correlation, Audio};
use verde_interop::{require_private_netns, TestDir};

/// Sleeps until `at`: the flow gives no event for "the menu is now listening", so keys are timed
/// from the prompts' known durations (measured from the WAVs, not hard-coded).
fn until(at: Instant) {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}

#[test]
fn baresip_hears_the_welcome_and_its_keys_choose_pensions() {
    require_private_netns();
    let dir = TestDir::new("baresip_prompt_audio");
    let verde = Verde::start(&dir, VerdeOptions::default());
    let (lang, name) = flows::first_prompts(INPS)[0];
    let welcome = flows::prompt(lang, name);

    let source = padded_source(&dir, 120.0);
    let mut phone = Baresip::start(&dir, "alice", &source);
    phone.ctrl.dial(&format!("sip:{INPS}@{}", verde.sip));
    phone
        .ctrl
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    let established = Instant::now();

    let first_at = established
        + Duration::from_secs_f64(flows::duration_of(flows::BEFORE_LANGUAGE_MENU))
        + Duration::from_millis(800);
    until(first_at);
    phone.ctrl.sndcode('1');
    let second_at = Instant::now()
        + Duration::from_secs_f64(flows::duration_of(&flows::before_service_menu("it")))
        + Duration::from_millis(1200);
    until(second_at);
    phone.ctrl.sndcode('1');

    // The queue node plays its hold prompt and hangs up; if it does not, we do.
    if !phone.ctrl.seen_event("CALL_CLOSED") {
        let closed = verde_interop::try_wait_for(Duration::from_secs(20), || {
            phone.ctrl.seen_event("CALL_CLOSED").then_some(())
        });
        if closed.is_none() {
            phone.ctrl.hangup();
            phone.ctrl.wait_event("CALL_CLOSED", Duration::from_secs(5));
        }
    }
    phone.quit();

    let recordings = phone.received_recordings();
    assert_eq!(
        recordings.len(),
        1,
        "expected one recording of the call, found {recordings:?}"
    );
    let heard = Audio::load(&recordings[0]);
    assert!(
        heard.duration() >= welcome.duration(),
        "baresip recorded {:.2} s, shorter than the {:.2} s welcome prompt",
        heard.duration(),
        welcome.duration()
    );
    assert!(
        heard.rms() > 0.005,
        "baresip's recording is silent (RMS {:.5})",
        heard.rms()
    );
    let window = heard.slice(0.0, welcome.duration() + 1.0);
    let (corr, lag) = envelope_correlation(&window, &welcome, 20, 1000);
    assert!(
        corr > 0.8,
        "the first {:.1} s baresip heard do not match {lang}/{name}.wav: envelope correlation {corr:.3} \
         (best lag {lag} ms); recording {}",
        window.duration(),
        recordings[0].display()
    );

    // baresip's Call-ID is not exposed on ctrl_tcp: find the record by its caller.
    let record = verde.wait_record_by_caller("alice", INPS);
    assert_record_branch(
        &record,
        "baresip pressed 1, 1",
        NODE_PENSIONS_QUEUE,
        "it",
        "11",
    );
}
