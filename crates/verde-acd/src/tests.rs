//! Behaviour tests with an injected clock.

use std::time::{Duration, Instant};

use crate::*;

struct Harness {
    acd: Acd,
    t0: Instant,
    now: Instant,
}

fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

fn ck(n: u64) -> CallKey {
    CallKey(n)
}

/// A queue without announcements or wrap-up, so tests see only what they look at.
fn queue(name: &str, strategy: Strategy) -> QueueConfig {
    let mut q = QueueConfig::new(name);
    q.strategy = strategy;
    q.wrap_up = Duration::ZERO;
    q.announce.position = false;
    q.announce.estimated_wait = false;
    q
}

fn agents(ids: &[&str], queues: &[&str]) -> Vec<AgentConfig> {
    ids.iter().map(|id| AgentConfig::new(*id, queues)).collect()
}

impl Harness {
    fn new(queues: Vec<QueueConfig>, agents: Vec<AgentConfig>) -> Harness {
        let t0 = Instant::now();
        Harness {
            acd: Acd::new(queues, agents, t0).expect("valid config"),
            t0,
            now: t0,
        }
    }

    /// Runs every timer up to `t0 + secs` at its own deadline, like the runtime would.
    fn at(&mut self, secs: f64) -> Vec<Action> {
        let target = self.t0 + s(secs);
        assert!(target >= self.now, "time goes forward");
        while let Some(t) = self.acd.poll_timeout() {
            if t > target {
                break;
            }
            self.now = self.now.max(t);
            self.acd.handle_timeout(self.now);
        }
        self.now = target;
        self.drain()
    }

    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.acd.poll_action()).collect()
    }

    fn try_input(&mut self, input: Input) -> Result<Vec<Action>, AcdError> {
        self.acd.handle(input, self.now)?;
        Ok(self.drain())
    }

    fn input(&mut self, input: Input) -> Vec<Action> {
        let text = format!("{input:?}");
        self.try_input(input)
            .unwrap_or_else(|e| panic!("{text} refused: {e}"))
    }

    fn enqueue(&mut self, call: u64, queue: &str, priority: u8, caller: &str) -> Vec<Action> {
        self.input(Input::Enqueue {
            call: ck(call),
            queue: queue.into(),
            priority,
            caller: caller.into(),
        })
    }

    /// Enqueues a callback whose caller first joined at `enqueued_at`.
    fn callback(&mut self, call: u64, queue: &str, enqueued_at: Instant) -> Vec<Action> {
        self.input(Input::EnqueueCallback {
            call: ck(call),
            queue: queue.into(),
            priority: 0,
            caller: format!("+39{call}"),
            enqueued_at,
        })
    }

    /// The instant `secs` after the start (negative: before the ACD existed).
    fn t(&self, secs: f64) -> Instant {
        if secs >= 0.0 {
            self.t0 + s(secs)
        } else {
            self.t0
                .checked_sub(s(-secs))
                .expect("clock far enough from its origin")
        }
    }

    /// (call, kind, position, waited) of every entry of queue `qi`, in snapshot order.
    fn line(&self, qi: usize) -> Vec<(u64, CallerKind, Option<u32>, Duration)> {
        self.acd.snapshot(self.now).queues[qi]
            .callers
            .iter()
            .map(|c| (c.call.0, c.kind, c.position, c.waited))
            .collect()
    }

    /// Ends the current call of a single agent again and again; the order callers got it.
    fn serve_all(&mut self, agent: &str, first: u64) -> Vec<u64> {
        let mut order = vec![first];
        let mut current = first;
        loop {
            let acts = self.end(current, agent);
            let Some(&(next, _)) = offers(&acts).first() else {
                return order;
            };
            self.answer(next, agent);
            order.push(next);
            current = next;
        }
    }

    fn login(&mut self, agent: &str) -> Vec<Action> {
        self.input(Input::AgentLogin {
            agent: agent.into(),
            queues: None,
        })
    }

    fn answer(&mut self, call: u64, agent: &str) -> Vec<Action> {
        self.input(Input::OfferAnswered {
            call: ck(call),
            agent: agent.into(),
        })
    }

    fn fail(&mut self, call: u64, agent: &str, reason: OfferFailure) -> Vec<Action> {
        self.input(Input::OfferFailed {
            call: ck(call),
            agent: agent.into(),
            reason,
        })
    }

    fn end(&mut self, call: u64, agent: &str) -> Vec<Action> {
        self.input(Input::CallEnded {
            call: ck(call),
            agent: agent.into(),
        })
    }

    fn pause(&mut self, agent: &str) -> Vec<Action> {
        self.input(Input::AgentPause {
            agent: agent.into(),
            reason: "break".into(),
        })
    }

    fn state(&self, agent: &str) -> AgentState {
        self.acd.agent_state(agent).expect("agent exists")
    }

    /// Enqueues, answers and ends one call, returning the agent that took it.
    fn serve(&mut self, call: u64, queue: &str) -> String {
        let acts = self.enqueue(call, queue, 0, "");
        let [(c, agent)] = offers(&acts)[..] else {
            panic!("expected one offer, got {acts:?}");
        };
        assert_eq!(c, call);
        let agent = agent.to_string();
        self.answer(call, &agent);
        self.end(call, &agent);
        agent
    }
}

/// (call, agent) of every Offer, in order.
fn offers(actions: &[Action]) -> Vec<(u64, &str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Offer { call, agent, .. } => Some((call.0, agent.as_str())),
            _ => None,
        })
        .collect()
}

fn cancels(actions: &[Action]) -> Vec<(u64, &str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CancelOffer { call, agent } => Some((call.0, agent.as_str())),
            _ => None,
        })
        .collect()
}

fn exits(actions: &[Action]) -> Vec<(u64, ExitReason, Option<&str>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Exit { call, reason, node } => Some((call.0, *reason, node.as_deref())),
            _ => None,
        })
        .collect()
}

fn announced(actions: &[Action]) -> Vec<(u64, Option<u32>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Announce { call, position, .. } => Some((call.0, *position)),
            _ => None,
        })
        .collect()
}

fn paused(reason: &str) -> AgentState {
    AgentState::Paused {
        reason: reason.into(),
    }
}

// ---- strategies ---------------------------------------------------------------------------

#[test]
fn longest_idle_picks_the_agent_idle_longest_not_config_order() {
    let mut h = Harness::new(
        vec![queue("q", Strategy::LongestIdle)],
        agents(&["a1", "a2", "a3"], &["q"]),
    );
    h.login("a3");
    h.at(1.0);
    h.login("a1");
    h.at(2.0);
    h.login("a2");
    h.at(3.0);
    assert_eq!(h.serve(1, "q"), "a3", "a3 logged in first");
    h.at(4.0);
    assert_eq!(h.serve(2, "q"), "a1");
    h.at(5.0);
    assert_eq!(h.serve(3, "q"), "a2");
    // Now a3's call ended longest ago.
    h.at(6.0);
    assert_eq!(h.serve(4, "q"), "a3");
}

#[test]
fn first_free_follows_config_order() {
    let mut h = Harness::new(
        vec![queue("q", Strategy::FirstFree)],
        agents(&["a1", "a2", "a3"], &["q"]),
    );
    for a in ["a3", "a2", "a1"] {
        h.login(a);
        h.at(h.now.duration_since(h.t0).as_secs_f64() + 1.0);
    }
    let acts = h.enqueue(1, "q", 0, "");
    assert_eq!(offers(&acts), vec![(1, "a1")]);
    h.answer(1, "a1");
    assert_eq!(offers(&h.enqueue(2, "q", 0, "")), vec![(2, "a2")]);
    h.answer(2, "a2");
    h.end(1, "a1");
    // a3 has been idle longest, but a1 comes first in the list.
    assert_eq!(offers(&h.enqueue(3, "q", 0, "")), vec![(3, "a1")]);
}

#[test]
fn round_robin_rotates_and_wraps() {
    let mut h = Harness::new(
        vec![queue("q", Strategy::RoundRobin)],
        agents(&["a1", "a2", "a3"], &["q"]),
    );
    for a in ["a1", "a2", "a3"] {
        h.login(a);
    }
    let served: Vec<String> = (1..=5).map(|c| h.serve(c, "q")).collect();
    assert_eq!(served, ["a1", "a2", "a3", "a1", "a2"]);
}

#[test]
fn fewest_calls_beats_idle_time() {
    let mut h = Harness::new(
        vec![queue("q", Strategy::FewestCalls)],
        agents(&["a1", "a2"], &["q"]),
    );
    h.login("a1");
    assert_eq!(h.serve(1, "q"), "a1");
    assert_eq!(h.serve(2, "q"), "a1");
    h.at(100.0);
    h.login("a2");
    // a1 has been idle for 100 s, a2 just arrived, but a2 has handled fewer calls.
    assert_eq!(h.serve(3, "q"), "a2");
    h.at(101.0);
    assert_eq!(h.serve(4, "q"), "a2");
    h.at(102.0);
    // 2 each: the tie goes to the one idle longest.
    assert_eq!(h.serve(5, "q"), "a1");
    h.at(103.0);
    h.acd.reset_daily_counters();
    let snap = h.acd.snapshot(h.now);
    assert!(snap.agents.iter().all(|a| a.calls_handled == 0));
    // After the reset both have 0 calls: a2 has been idle longer now.
    assert_eq!(h.serve(6, "q"), "a2");
}

#[test]
fn ring_all_offers_everyone_and_cancels_the_rest_on_answer() {
    let mut h = Harness::new(
        vec![queue("q", Strategy::RingAll)],
        agents(&["a1", "a2", "a3"], &["q"]),
    );
    for a in ["a1", "a2", "a3"] {
        h.login(a);
    }
    let acts = h.enqueue(1, "q", 0, "");
    assert_eq!(offers(&acts), vec![(1, "a1"), (1, "a2"), (1, "a3")]);
    for a in ["a1", "a2", "a3"] {
        assert_eq!(h.state(a), AgentState::Reserved);
    }
    let acts = h.answer(1, "a2");
    assert!(acts.iter().any(|a| matches!(a,
        Action::Connected { call, agent, .. } if call.0 == 1 && agent == "a2")));
    assert_eq!(cancels(&acts), vec![(1, "a1"), (1, "a3")]);
    assert_eq!(h.state("a2"), AgentState::OnCall);
    assert_eq!(h.state("a1"), AgentState::Ready);
    // A late answer from a cancelled agent is refused.
    assert!(matches!(
        h.try_input(Input::OfferAnswered {
            call: ck(1),
            agent: "a1".into()
        }),
        Err(AcdError::NoSuchOffer { .. })
    ));
    let acts = h.enqueue(2, "q", 0, "");
    assert_eq!(offers(&acts), vec![(2, "a1"), (2, "a3")]);
}

#[test]
fn ring_all_timeout_cancels_all_without_misses_and_requeues() {
    let mut q = queue("q", Strategy::RingAll);
    q.ring_timeout = s(10.0);
    let mut h = Harness::new(vec![q], agents(&["a1", "a2"], &["q"]));
    h.login("a1");
    h.login("a2");
    h.enqueue(1, "q", 0, "");
    let acts = h.at(10.0);
    assert_eq!(cancels(&acts)[..2], [(1, "a1"), (1, "a2")]);
    assert!(acts.contains(&Action::Requeued { call: ck(1) }));
    // Both ring again at once, and nobody was blamed.
    assert_eq!(offers(&acts), vec![(1, "a1"), (1, "a2")]);
    let snap = h.acd.snapshot(h.now);
    assert!(snap.agents.iter().all(|a| a.missed == 0));
}

// ---- ordering, positions, estimates -------------------------------------------------------

#[test]
fn fifo_within_priority_and_higher_priority_first() {
    let mut h = Harness::new(
        vec![queue("q", Strategy::LongestIdle)],
        agents(&["a1"], &["q"]),
    );
    h.login("a1");
    h.enqueue(1, "q", 0, "");
    h.answer(1, "a1");
    for (call, prio) in [(2, 0), (3, 0), (4, 5), (5, 0), (6, 5)] {
        h.at(call as f64);
        h.enqueue(call, "q", prio, "");
    }
    let mut order = Vec::new();
    let mut current = 1;
    for _ in 0..5 {
        let acts = h.end(current, "a1");
        let [(next, _)] = offers(&acts)[..] else {
            panic!("one offer expected: {acts:?}");
        };
        h.answer(next, "a1");
        order.push(next);
        current = next;
    }
    assert_eq!(order, vec![4, 6, 2, 3, 5]);
}

#[test]
fn announcements_give_position_in_this_queue_and_ewt_from_live_service() {
    let mut q = QueueConfig::new("q");
    q.wrap_up = Duration::ZERO;
    q.default_handle_time = s(120.0);
    q.announce.first_delay = s(15.0);
    q.announce.frequency = s(30.0);
    let other = queue("other", Strategy::LongestIdle);
    let mut h = Harness::new(vec![q, other], agents(&["a1", "a2"], &["q"]));
    h.login("a1");
    h.login("a2");
    h.enqueue(1, "q", 0, "");
    h.enqueue(2, "q", 0, "");
    h.answer(1, "a1");
    // Callers of another queue never count.
    h.enqueue(90, "other", 0, "");
    h.enqueue(3, "q", 0, "");
    h.enqueue(91, "other", 0, "");
    h.enqueue(4, "q", 0, "");
    h.enqueue(5, "q", 0, "");
    h.at(10.0);
    h.answer(2, "a2");
    let acts = h.at(15.0);
    let ann: Vec<(u64, Option<u32>, Option<Duration>)> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Announce {
                call,
                position,
                estimated_wait,
            } => Some((call.0, *position, *estimated_wait)),
            _ => None,
        })
        .collect();
    // No handle time measured yet: H = 120 s. a1 talks since 0 (105 s left), a2 since 10 (115).
    let (hnd, r1, r2) = (s(120.0), s(105.0), s(115.0));
    assert_eq!(
        ann,
        vec![
            (3, Some(0), Some(r1)),
            (4, Some(1), Some(r2)),
            (5, Some(2), Some(hnd + r1)),
        ]
    );
    // a1 hangs up after 20 s: H becomes 20 s and caller 3 goes to a1.
    h.at(20.0);
    let acts = h.end(1, "a1");
    assert_eq!(offers(&acts), vec![(3, "a1")]);
    h.answer(3, "a1");
    let snap = h.acd.snapshot(h.now);
    let qs = &snap.queues[0];
    assert_eq!(qs.handle_time, s(20.0));
    // a1 just started (20 s left), a2 has talked 10 s (10 s left, H - 10).
    // A new caller would have 2 ahead: floor(2/2) * 20 + 10.
    assert_eq!(qs.estimated_wait, Some(s(30.0)));
    let acts = h.at(45.0);
    let positions: Vec<(u64, Option<u32>)> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Announce { call, position, .. } => Some((call.0, *position)),
            _ => None,
        })
        .collect();
    assert_eq!(positions, vec![(4, Some(0)), (5, Some(1))]);
}

#[test]
fn no_estimate_when_nobody_serves() {
    let mut q = QueueConfig::new("q");
    q.announce.first_delay = s(5.0);
    let mut h = Harness::new(vec![q], agents(&["a1"], &["q"]));
    h.login("a1");
    h.pause("a1");
    h.enqueue(1, "q", 0, "");
    let acts = h.at(5.0);
    assert_eq!(
        acts,
        vec![Action::Announce {
            call: ck(1),
            position: Some(0),
            estimated_wait: None
        }]
    );
}

// ---- failures -----------------------------------------------------------------------------

#[test]
fn no_answer_requeues_at_head_and_pauses_after_n_misses() {
    let mut h = Harness::new(
        vec![queue("q", Strategy::FirstFree)],
        agents(&["a1", "a2"], &["q"]),
    );
    h.login("a1");
    h.enqueue(1, "q", 0, "");
    h.at(1.0);
    h.enqueue(2, "q", 0, "");
    let acts = h.fail(1, "a1", OfferFailure::NoAnswer);
    assert!(acts.contains(&Action::Requeued { call: ck(1) }));
    // Back at the head: the only agent gets caller 1 again, not caller 2.
    assert_eq!(offers(&acts), vec![(1, "a1")]);
    let acts = h.fail(1, "a1", OfferFailure::NoAnswer);
    assert!(acts.contains(&Action::AgentAutoPaused {
        agent: "a1".into(),
        reason: "no-answer".into()
    }));
    assert_eq!(h.state("a1"), paused("no-answer"));
    assert!(offers(&acts).is_empty());
    let snap = h.acd.snapshot(h.now);
    let callers: Vec<(u64, Option<u32>)> = snap.queues[0]
        .callers
        .iter()
        .map(|c| (c.call.0, c.position))
        .collect();
    assert_eq!(callers, vec![(1, Some(0)), (2, Some(1))]);
    assert_eq!(snap.agents[0].missed, 2);
    assert_eq!(offers(&h.login("a2")), vec![(1, "a2")]);
    // Ready again clears the misses.
    h.input(Input::AgentReady { agent: "a1".into() });
    assert_eq!(h.acd.snapshot(h.now).agents[0].missed, 0);
}

#[test]
fn ring_timeout_cancels_counts_a_miss_and_tries_another_agent() {
    let mut q = queue("q", Strategy::FirstFree);
    q.ring_timeout = s(15.0);
    q.max_misses_before_pause = 3;
    let mut h = Harness::new(vec![q], agents(&["a1", "a2"], &["q"]));
    h.login("a1");
    h.login("a2");
    assert_eq!(offers(&h.enqueue(1, "q", 0, "")), vec![(1, "a1")]);
    h.input(Input::OfferRinging {
        call: ck(1),
        agent: "a1".into(),
    });
    assert_eq!(h.state("a1"), AgentState::Ringing);
    assert!(h.at(14.9).is_empty());
    let acts = h.at(15.0);
    assert_eq!(cancels(&acts), vec![(1, "a1")]);
    // a1 is skipped for this caller although first in order.
    assert_eq!(offers(&acts), vec![(1, "a2")]);
    assert_eq!(h.acd.snapshot(h.now).agents[0].missed, 1);
    assert_eq!(h.state("a1"), AgentState::Ready);
    assert!(matches!(
        h.try_input(Input::OfferAnswered {
            call: ck(1),
            agent: "a1".into()
        }),
        Err(AcdError::NoSuchOffer { .. })
    ));
}

#[test]
fn busy_tries_the_next_agent_and_unreachable_pauses() {
    let mut h = Harness::new(
        vec![queue("q", Strategy::FirstFree)],
        agents(&["a1", "a2", "a3"], &["q"]),
    );
    for a in ["a1", "a2", "a3"] {
        h.login(a);
    }
    assert_eq!(offers(&h.enqueue(1, "q", 0, "")), vec![(1, "a1")]);
    let acts = h.fail(1, "a1", OfferFailure::Busy);
    assert_eq!(offers(&acts), vec![(1, "a2")]);
    assert_eq!(h.state("a1"), AgentState::Ready, "busy is not a miss");
    assert_eq!(h.acd.snapshot(h.now).agents[0].missed, 0);
    let acts = h.fail(1, "a2", OfferFailure::Unreachable);
    assert_eq!(offers(&acts), vec![(1, "a3")]);
    assert_eq!(h.state("a2"), paused("unreachable"));
    // Everyone but a1 is busy or paused: the next caller goes to a1.
    assert_eq!(offers(&h.enqueue(2, "q", 0, "")), vec![(2, "a1")]);
}

#[test]
fn max_wait_reached_while_ringing_exits_when_the_offer_fails() {
    let mut q = queue("q", Strategy::LongestIdle);
    q.max_wait = Some(s(20.0));
    q.ring_timeout = s(15.0);
    q.exits.timeout = Some("voicemail".into());
    let mut h = Harness::new(vec![q], agents(&["a1"], &["q"]));
    h.enqueue(1, "q", 0, "");
    h.at(10.0);
    assert_eq!(offers(&h.login("a1")), vec![(1, "a1")]);
    assert!(exits(&h.at(20.0)).is_empty(), "the agent may still answer");
    let acts = h.at(25.0);
    assert_eq!(cancels(&acts), vec![(1, "a1")]);
    assert_eq!(
        exits(&acts),
        vec![(1, ExitReason::Timeout, Some("voicemail"))]
    );
    assert!(!acts.contains(&Action::Requeued { call: ck(1) }));
}

// ---- agent states -------------------------------------------------------------------------

#[test]
fn wrap_up_blocks_every_queue_until_timer_or_done() {
    let mut q1 = queue("q1", Strategy::LongestIdle);
    q1.wrap_up = s(10.0);
    let q2 = queue("q2", Strategy::LongestIdle);
    let mut h = Harness::new(vec![q1, q2], agents(&["a1"], &["q1", "q2"]));
    h.login("a1");
    h.enqueue(1, "q1", 0, "");
    h.answer(1, "a1");
    h.at(5.0);
    h.end(1, "a1");
    assert_eq!(h.state("a1"), AgentState::WrapUp);
    h.at(6.0);
    assert!(offers(&h.enqueue(2, "q2", 0, "")).is_empty());
    assert!(offers(&h.at(14.9)).is_empty());
    let acts = h.at(15.0);
    assert_eq!(offers(&acts), vec![(2, "a1")]);
    // Second time, wrap-up is ended early.
    h.answer(2, "a1");
    h.enqueue(3, "q1", 0, "");
    // q2 has no wrap-up: the q1 caller gets the agent as soon as the q2 call ends.
    assert_eq!(offers(&h.end(2, "a1")), vec![(3, "a1")]);
    h.answer(3, "a1");
    h.enqueue(4, "q2", 0, "");
    h.end(3, "a1");
    assert_eq!(h.state("a1"), AgentState::WrapUp);
    let acts = h.input(Input::WrapUpDone { agent: "a1".into() });
    assert_eq!(offers(&acts), vec![(4, "a1")]);
    // Now offered the next call: there is no wrap-up to end, and the click is told so.
    assert!(matches!(
        h.try_input(Input::WrapUpDone { agent: "a1".into() }),
        Err(AcdError::NotInWrapUp(_))
    ));
}

#[test]
fn pause_and_logout_during_a_call_wait_for_its_end() {
    let mut q = queue("q", Strategy::LongestIdle);
    q.wrap_up = s(5.0);
    let mut h = Harness::new(vec![q], agents(&["a1", "a2"], &["q"]));
    h.login("a1");
    h.enqueue(1, "q", 0, "");
    h.answer(1, "a1");
    h.pause("a1");
    assert_eq!(h.state("a1"), AgentState::OnCall);
    h.end(1, "a1");
    h.at(5.0);
    assert_eq!(h.state("a1"), paused("break"));
    // Logout while an offer rings: the offer is withdrawn and the caller requeued.
    h.login("a2");
    h.enqueue(2, "q", 0, "");
    let acts = h.input(Input::AgentLogout { agent: "a2".into() });
    assert_eq!(cancels(&acts), vec![(2, "a2")]);
    assert!(acts.contains(&Action::Requeued { call: ck(2) }));
    assert_eq!(h.state("a2"), AgentState::LoggedOut);
    assert!(matches!(
        h.try_input(Input::AgentReady { agent: "a2".into() }),
        Err(AcdError::NotLoggedIn(_))
    ));
}

// ---- exits --------------------------------------------------------------------------------

#[test]
fn max_wait_exit() {
    let mut q = queue("q", Strategy::LongestIdle);
    q.max_wait = Some(s(30.0));
    q.exits.timeout = Some("overflow".into());
    let mut h = Harness::new(vec![q], agents(&["a1"], &["q"]));
    h.enqueue(1, "q", 0, "");
    h.at(10.0);
    h.enqueue(2, "q", 0, "");
    assert!(exits(&h.at(29.9)).is_empty());
    assert_eq!(
        exits(&h.at(30.0)),
        vec![(1, ExitReason::Timeout, Some("overflow"))]
    );
    assert_eq!(h.acd.waiting("q"), Some(1));
    assert_eq!(
        exits(&h.at(40.0)),
        vec![(2, ExitReason::Timeout, Some("overflow"))]
    );
    assert_eq!(h.acd.poll_timeout(), None, "no timer left behind");
}

#[test]
fn max_len_full_exit() {
    let mut q = queue("q", Strategy::LongestIdle);
    q.max_len = Some(2);
    q.exits.full = Some("busy-message".into());
    let mut h = Harness::new(vec![q], agents(&["a1"], &["q"]));
    assert!(exits(&h.enqueue(1, "q", 0, "")).is_empty());
    assert!(exits(&h.enqueue(2, "q", 0, "")).is_empty());
    assert_eq!(
        exits(&h.enqueue(3, "q", 0, "")),
        vec![(3, ExitReason::Full, Some("busy-message"))]
    );
    assert_eq!(h.acd.waiting("q"), Some(2));
    h.input(Input::Abandon { call: ck(1) });
    assert!(exits(&h.enqueue(4, "q", 0, "")).is_empty());
}

#[test]
fn empty_exit_without_logged_in_agents() {
    let mut q = queue("q", Strategy::LongestIdle);
    q.exits.empty = Some("closed".into());
    let mut h = Harness::new(vec![q], agents(&["a1"], &["q"]));
    assert_eq!(
        exits(&h.enqueue(1, "q", 0, "")),
        vec![(1, ExitReason::Empty, Some("closed"))]
    );
    // A paused agent is still logged in: the caller waits.
    h.login("a1");
    h.pause("a1");
    assert!(exits(&h.enqueue(2, "q", 0, "")).is_empty());
    assert_eq!(h.acd.waiting("q"), Some(1));
    // The last agent leaves: waiting callers leave too.
    let acts = h.input(Input::AgentLogout { agent: "a1".into() });
    assert_eq!(exits(&acts), vec![(2, ExitReason::Empty, Some("closed"))]);
    assert_eq!(h.acd.waiting("q"), Some(0));
}

#[test]
fn key_exit_only_when_configured() {
    let mut with_key = queue("k", Strategy::LongestIdle);
    with_key.exits.key = Some("menu".into());
    let mut h = Harness::new(
        vec![with_key, queue("n", Strategy::LongestIdle)],
        agents(&["a1"], &["k"]),
    );
    h.enqueue(1, "k", 0, "");
    h.enqueue(2, "n", 0, "");
    let press = |call| Input::KeyPressed {
        call: ck(call),
        digit: '1',
    };
    assert_eq!(
        exits(&h.input(press(1))),
        vec![(1, ExitReason::Key, Some("menu"))]
    );
    assert!(h.input(press(2)).is_empty());
    assert_eq!(h.acd.waiting("n"), Some(1));
}

// ---- abandon ------------------------------------------------------------------------------

#[test]
fn abandoned_caller_resumes_place_within_window_only() {
    let mut q = queue("q", Strategy::LongestIdle);
    q.abandoned_resume = s(60.0);
    let mut h = Harness::new(vec![q], agents(&["a1"], &["q"]));
    h.enqueue(1, "q", 0, "+39111");
    h.at(5.0);
    h.enqueue(2, "q", 0, "+39222");
    h.at(10.0);
    let acts = h.input(Input::Abandon { call: ck(1) });
    assert_eq!(
        acts,
        vec![Action::Abandoned {
            call: ck(1),
            queue: "q".into(),
            waited: s(10.0)
        }]
    );
    h.at(40.0);
    h.enqueue(3, "q", 0, "+39111");
    let snap = h.acd.snapshot(h.now);
    let line: Vec<(u64, Option<u32>, Duration)> = snap.queues[0]
        .callers
        .iter()
        .map(|c| (c.call.0, c.position, c.waited))
        .collect();
    assert_eq!(
        line,
        vec![(3, Some(0), s(40.0)), (2, Some(1), s(35.0))],
        "caller 3 is caller 1 back in its place"
    );
    h.at(50.0);
    let acts = h.input(Input::Abandon { call: ck(3) });
    assert!(acts.contains(&Action::Abandoned {
        call: ck(3),
        queue: "q".into(),
        waited: s(50.0)
    }));
    // 61 s after abandoning: a new caller at the back.
    h.at(111.0);
    h.enqueue(4, "q", 0, "+39111");
    let snap = h.acd.snapshot(h.now);
    let line: Vec<(u64, Option<u32>, Duration)> = snap.queues[0]
        .callers
        .iter()
        .map(|c| (c.call.0, c.position, c.waited))
        .collect();
    assert_eq!(line, vec![(2, Some(0), s(106.0)), (4, Some(1), s(0.0))]);
    // Withheld numbers never resume.
    h.enqueue(5, "q", 0, "");
    h.input(Input::Abandon { call: ck(5) });
    h.enqueue(6, "q", 0, "");
    assert_eq!(h.acd.snapshot(h.now).queues[0].callers[2].call, ck(6));
}

#[test]
fn abandon_while_ringing_cancels_the_offer_without_blame() {
    let mut h = Harness::new(
        vec![queue("q", Strategy::LongestIdle)],
        agents(&["a1"], &["q"]),
    );
    h.login("a1");
    h.enqueue(1, "q", 0, "x");
    let acts = h.input(Input::Abandon { call: ck(1) });
    assert_eq!(cancels(&acts), vec![(1, "a1")]);
    assert_eq!(h.state("a1"), AgentState::Ready);
    assert!(matches!(
        h.try_input(Input::Abandon { call: ck(1) }),
        Err(AcdError::UnknownCall(_))
    ));
}

// ---- skills -------------------------------------------------------------------------------

#[test]
fn escalation_widens_the_pool_over_time() {
    let mut q = queue("billing", Strategy::LongestIdle);
    q.skills.insert("billing".into(), 5);
    q.escalation = vec![
        EscalationTier {
            after: s(30.0),
            min_level: 3,
        },
        EscalationTier {
            after: s(60.0),
            min_level: 0,
        },
    ];
    let mut expert = AgentConfig::new("expert", &["billing"]);
    expert.skills.insert("billing".into(), 7);
    let mut junior = AgentConfig::new("junior", &["billing"]);
    junior.skills.insert("billing".into(), 3);
    let novice = AgentConfig::new("novice", &["billing"]);
    let mut h = Harness::new(vec![q], vec![novice, junior, expert]);
    h.login("novice");
    h.login("junior");
    h.login("expert");
    assert_eq!(offers(&h.enqueue(1, "billing", 0, "")), vec![(1, "expert")]);
    h.answer(1, "expert");
    h.enqueue(2, "billing", 0, "");
    h.at(10.0);
    h.enqueue(3, "billing", 0, "");
    assert!(offers(&h.at(29.9)).is_empty(), "only experts for 30 s");
    assert_eq!(offers(&h.at(30.0)), vec![(2, "junior")]);
    h.answer(2, "junior");
    // Caller 3 (joined at 10) reaches the junior tier at 40 but the junior is busy;
    // at 70 it may have anyone.
    assert!(offers(&h.at(69.9)).is_empty());
    assert_eq!(offers(&h.at(70.0)), vec![(3, "novice")]);
}

#[test]
fn an_agent_in_several_queues_is_reserved_in_all_of_them() {
    let mut h = Harness::new(
        vec![
            queue("q1", Strategy::LongestIdle),
            queue("q2", Strategy::RoundRobin),
        ],
        agents(&["a1"], &["q1", "q2"]),
    );
    h.login("a1");
    h.at(1.0);
    h.enqueue(1, "q2", 0, "");
    assert!(offers(&h.enqueue(2, "q1", 0, "")).is_empty());
    // The older caller across both queues goes first when the agent frees up.
    let acts = h.fail(1, "a1", OfferFailure::Busy);
    assert_eq!(offers(&acts), vec![(1, "a1")]);
    let snap = h.acd.snapshot(h.now);
    assert_eq!(snap.queues[0].agents_ready, 0);
    assert_eq!(snap.queues[1].agents_ready, 0);
}

// ---- snapshot and config ------------------------------------------------------------------

#[test]
fn snapshot_shows_queues_agents_and_callers() {
    let mut h = Harness::new(
        vec![
            queue("q", Strategy::FirstFree),
            queue("idle", Strategy::FirstFree),
        ],
        agents(&["a1", "a2", "a3"], &["q"]),
    );
    h.login("a1");
    h.login("a2");
    h.enqueue(1, "q", 0, "+391");
    h.enqueue(2, "q", 0, "+392");
    h.at(3.0);
    h.answer(1, "a1");
    h.enqueue(3, "q", 0, "+393");
    h.at(5.0);
    let snap = h.acd.snapshot(h.now);
    let q = &snap.queues[0];
    assert_eq!(q.name, "q");
    assert_eq!((q.waiting, q.offering), (1, 1));
    assert_eq!(q.longest_wait, Some(s(5.0)), "caller 2 ringing a2 since 0");
    assert_eq!((q.agents_logged_in, q.agents_ready), (2, 0));
    let callers: Vec<(u64, &str, Option<u32>, Duration)> = q
        .callers
        .iter()
        .map(|c| (c.call.0, c.caller.as_str(), c.position, c.waited))
        .collect();
    assert_eq!(
        callers,
        vec![(3, "+393", Some(0), s(2.0)), (2, "+392", None, s(5.0))]
    );
    let a1 = &snap.agents[0];
    assert_eq!(a1.state, AgentState::OnCall);
    assert_eq!(a1.in_state, s(2.0));
    assert_eq!(a1.current_call, Some(ck(1)));
    assert_eq!(snap.agents[1].state, AgentState::Reserved);
    assert_eq!(snap.agents[1].current_call, Some(ck(2)));
    let a3 = &snap.agents[2];
    assert_eq!(
        (a3.state.clone(), a3.current_call),
        (AgentState::LoggedOut, None)
    );
    assert_eq!(a3.queues, vec![QueueName::from("q")]);
    h.end(1, "a1");
    let snap = h.acd.snapshot(h.now);
    assert_eq!(snap.agents[0].calls_handled, 1);
    assert_eq!(snap.queues[1].waiting, 0);
    assert_eq!(snap.queues[1].longest_wait, None);
}

#[test]
fn bad_config_and_unknown_names_are_reported() {
    let now = Instant::now();
    let err = Acd::new(
        vec![queue("q", Strategy::FirstFree)],
        agents(&["a"], &["nope"]),
        now,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ConfigError::UnknownQueue {
            agent: "a".into(),
            queue: "nope".into()
        }
    );
    assert!(err.to_string().contains("queues:"));
    let dup = vec![
        queue("q", Strategy::FirstFree),
        queue("q", Strategy::RingAll),
    ];
    assert_eq!(
        Acd::new(dup, vec![], now).unwrap_err(),
        ConfigError::DuplicateQueue("q".into())
    );
    let mut h = Harness::new(
        vec![queue("q", Strategy::FirstFree)],
        agents(&["a"], &["q"]),
    );
    assert_eq!(
        h.try_input(Input::Enqueue {
            call: ck(1),
            queue: "zz".into(),
            priority: 0,
            caller: String::new()
        }),
        Err(AcdError::UnknownQueue("zz".into()))
    );
    h.enqueue(1, "q", 0, "");
    assert_eq!(
        h.try_input(Input::Enqueue {
            call: ck(1),
            queue: "q".into(),
            priority: 0,
            caller: String::new()
        }),
        Err(AcdError::DuplicateCall(ck(1)))
    );
    assert_eq!(
        h.try_input(Input::CallEnded {
            call: ck(1),
            agent: "a".into()
        }),
        Err(AcdError::NotOnCall {
            call: ck(1),
            agent: "a".into()
        })
    );
}

// ---- callbacks ----------------------------------------------------------------------------

use CallerKind::{Callback, Live};

#[test]
fn callback_stands_where_its_original_time_puts_it() {
    let mut q = QueueConfig::new("q");
    q.wrap_up = Duration::ZERO;
    q.announce.estimated_wait = false;
    q.announce.first_delay = s(30.0);
    q.announce.frequency = Duration::ZERO;
    let mut h = Harness::new(vec![q], agents(&["a1"], &["q"]));
    h.login("a1");
    h.pause("a1");
    h.enqueue(1, "q", 0, "+391");
    h.at(10.0);
    h.enqueue(2, "q", 0, "+392");
    h.at(20.0);
    h.enqueue(3, "q", 0, "+393");
    h.at(25.0);
    // The caller behind callback 10 first joined at 5: after caller 1, before callers 2 and 3.
    let at = h.t(5.0);
    h.callback(10, "q", at);
    let acts = h.at(50.0);
    assert_eq!(
        announced(&acts),
        vec![(1, Some(0)), (2, Some(2)), (3, Some(3))],
        "live positions count the callback ahead; the callback hears nothing"
    );
    assert_eq!(
        h.line(0),
        vec![
            (1, Live, Some(0), s(50.0)),
            (10, Callback, Some(1), s(45.0)),
            (2, Live, Some(2), s(40.0)),
            (3, Live, Some(3), s(30.0)),
        ]
    );
    let snap = h.acd.snapshot(h.now);
    assert_eq!(
        (snap.queues[0].waiting, snap.queues[0].callbacks_waiting),
        (4, 1)
    );
    assert_eq!(snap.queues[0].longest_wait, Some(s(50.0)));
    let acts = h.input(Input::AgentReady { agent: "a1".into() });
    assert_eq!(offers(&acts), vec![(1, "a1")]);
    h.answer(1, "a1");
    h.at(60.0);
    let acts = h.end(1, "a1");
    assert_eq!(
        acts.iter()
            .filter(|a| matches!(a, Action::Offer { .. }))
            .collect::<Vec<_>>(),
        vec![&Action::Offer {
            call: ck(10),
            agent: "a1".into(),
            queue: "q".into()
        }],
        "the same offer a live caller gets"
    );
    let acts = h.answer(10, "a1");
    assert!(
        acts.contains(&Action::Connected {
            call: ck(10),
            agent: "a1".into(),
            queue: "q".into(),
            waited: s(55.0),
        }),
        "waited counts from the original time: {acts:?}"
    );
    assert_eq!(h.serve_all("a1", 10), vec![10, 2, 3]);
    let snap = h.acd.snapshot(h.now);
    assert_eq!(
        (snap.queues[0].waiting, snap.queues[0].callbacks_waiting),
        (0, 0)
    );
}

#[test]
fn retried_callback_goes_back_behind_earlier_callers_and_ahead_of_later_ones() {
    let mut h = Harness::new(
        vec![queue("q", Strategy::LongestIdle)],
        agents(&["a1"], &["q"]),
    );
    h.login("a1");
    h.pause("a1");
    h.at(1.0);
    h.enqueue(1, "q", 0, "+39001");
    h.at(3.0);
    h.input(Input::Abandon { call: ck(1) });
    // The callback's caller joined at 2; caller 1 (joined at 1) has hung up for now.
    h.at(4.0);
    let at = h.t(2.0);
    h.callback(10, "q", at);
    let acts = h.input(Input::AgentReady { agent: "a1".into() });
    assert_eq!(offers(&acts), vec![(10, "a1")]);
    h.answer(10, "a1");
    h.pause("a1");
    // Agent-first: the customer does not answer; the agent goes to wrap-up (here: its pause).
    h.at(30.0);
    h.end(10, "a1");
    assert_eq!(h.state("a1"), paused("break"));
    // Caller 1 redials within the resume window and gets its place (joined at 1) back.
    h.at(40.0);
    h.enqueue(2, "q", 0, "+39001");
    assert_eq!(h.acd.enqueued_at(ck(2)), Some(h.t(1.0)));
    assert_eq!(h.acd.enqueued_at(ck(10)), None, "forgotten once connected");
    h.at(45.0);
    h.enqueue(3, "q", 0, "+39003");
    h.at(50.0);
    h.enqueue(4, "q", 0, "+39004");
    // The retry, with the original time.
    h.at(70.0);
    h.callback(10, "q", at);
    assert_eq!(
        h.line(0),
        vec![
            (2, Live, Some(0), s(69.0)),
            (10, Callback, Some(1), s(68.0)),
            (3, Live, Some(2), s(25.0)),
            (4, Live, Some(3), s(20.0)),
        ]
    );
    let acts = h.input(Input::AgentReady { agent: "a1".into() });
    assert_eq!(offers(&acts), vec![(2, "a1")]);
    h.answer(2, "a1");
    assert_eq!(h.serve_all("a1", 2), vec![2, 10, 3, 4]);
}

#[test]
fn callback_keeps_its_place_after_a_failed_offer_and_leaves_without_blame() {
    let mut q = queue("q", Strategy::FirstFree);
    q.max_misses_before_pause = 2;
    let mut h = Harness::new(vec![q], agents(&["a1"], &["q"]));
    h.login("a1");
    h.pause("a1");
    h.at(10.0);
    h.enqueue(1, "q", 0, "");
    h.at(20.0);
    let at = h.t(5.0);
    h.callback(10, "q", at);
    let acts = h.input(Input::AgentReady { agent: "a1".into() });
    assert_eq!(offers(&acts), vec![(10, "a1")]);
    let acts = h.fail(10, "a1", OfferFailure::NoAnswer);
    assert!(acts.contains(&Action::Requeued { call: ck(10) }));
    assert_eq!(offers(&acts), vec![(10, "a1")], "still ahead of caller 1");
    // Customer-first would find out here that the customer cannot be reached: the binary takes
    // the callback out, and the agent, who did nothing wrong, gets caller 1 at once.
    let acts = h.input(Input::RemoveCaller { call: ck(10) });
    assert_eq!(cancels(&acts), vec![(10, "a1")]);
    assert_eq!(offers(&acts), vec![(1, "a1")]);
    assert_eq!(
        h.acd.snapshot(h.now).agents[0].missed,
        1,
        "only the no-answer"
    );
    assert!(matches!(
        h.try_input(Input::RemoveCaller { call: ck(10) }),
        Err(AcdError::UnknownCall(_))
    ));
}

#[test]
fn callbacks_get_no_announcement_and_never_exit() {
    let mut q = QueueConfig::new("q");
    q.max_wait = Some(s(30.0));
    q.max_len = Some(1);
    q.announce.first_delay = s(5.0);
    q.announce.frequency = s(10.0);
    q.exits = ExitsConfig {
        timeout: Some("timeout".into()),
        full: Some("full".into()),
        empty: Some("closed".into()),
        key: Some("menu".into()),
    };
    let mut h = Harness::new(vec![q], agents(&["a1"], &["q"]));
    // Reloaded after a restart: the caller joined before this ACD existed.
    let at = h.t(-100.0);
    assert!(
        exits(&h.callback(10, "q", at)).is_empty(),
        "nobody logged in"
    );
    assert_eq!(
        exits(&h.enqueue(1, "q", 0, "")),
        vec![(1, ExitReason::Empty, Some("closed"))]
    );
    // The only agent gets the callback; its phone is busy, and it goes on a break.
    assert_eq!(offers(&h.login("a1")), vec![(10, "a1")]);
    h.pause("a1");
    let acts = h.fail(10, "a1", OfferFailure::Busy);
    assert!(acts.contains(&Action::Requeued { call: ck(10) }));
    assert_eq!(h.state("a1"), paused("break"));
    // The callback does not take the one live place.
    assert!(exits(&h.enqueue(2, "q", 0, "")).is_empty());
    assert_eq!(
        exits(&h.enqueue(3, "q", 0, "")),
        vec![(3, ExitReason::Full, Some("full"))]
    );
    assert!(h
        .input(Input::KeyPressed {
            call: ck(10),
            digit: '5'
        })
        .is_empty());
    let acts = h.at(100.0);
    assert!(announced(&acts).iter().all(|(c, _)| *c == 2), "{acts:?}");
    assert_eq!(announced(&acts)[0], (2, Some(1)), "the callback is ahead");
    assert_eq!(
        exits(&acts),
        vec![(2, ExitReason::Timeout, Some("timeout"))]
    );
    let acts = h.input(Input::AgentLogout { agent: "a1".into() });
    assert!(exits(&acts).is_empty());
    assert_eq!(h.line(0), vec![(10, Callback, Some(0), s(200.0))]);
    // It is served once someone logs in, with no timer of its own left behind.
    assert_eq!(offers(&h.login("a1")), vec![(10, "a1")]);
    h.answer(10, "a1");
    assert_eq!(h.acd.poll_timeout(), None);
}

#[test]
fn ring_all_rings_everyone_for_a_callback() {
    let mut h = Harness::new(
        vec![queue("q", Strategy::RingAll)],
        agents(&["a1", "a2", "a3"], &["q"]),
    );
    for a in ["a1", "a2", "a3"] {
        h.login(a);
    }
    let at = h.t(0.0);
    h.at(30.0);
    let acts = h.callback(10, "q", at);
    assert_eq!(offers(&acts), vec![(10, "a1"), (10, "a2"), (10, "a3")]);
    let acts = h.answer(10, "a3");
    assert_eq!(cancels(&acts), vec![(10, "a1"), (10, "a2")]);
    assert!(acts.contains(&Action::Connected {
        call: ck(10),
        agent: "a3".into(),
        queue: "q".into(),
        waited: s(30.0)
    }));
}

#[test]
fn skills_and_escalation_count_from_the_original_time() {
    let mut q = queue("billing", Strategy::LongestIdle);
    q.skills.insert("billing".into(), 5);
    q.escalation = vec![EscalationTier {
        after: s(30.0),
        min_level: 3,
    }];
    let mut expert = AgentConfig::new("expert", &["billing"]);
    expert.skills.insert("billing".into(), 7);
    let mut junior = AgentConfig::new("junior", &["billing"]);
    junior.skills.insert("billing".into(), 3);
    let mut h = Harness::new(vec![q], vec![junior, expert]);
    h.login("junior");
    h.enqueue(1, "billing", 0, "");
    h.at(10.0);
    // Joined 60 s ago: past the 30 s tier already, the junior may take it.
    let at = h.t(-50.0);
    assert_eq!(offers(&h.callback(10, "billing", at)), vec![(10, "junior")]);
    h.answer(10, "junior");
    // Joined at 5: the junior only from 35.
    let at = h.t(5.0);
    h.callback(11, "billing", at);
    assert_eq!(offers(&h.end(10, "junior")), Vec::<(u64, &str)>::new());
    assert_eq!(offers(&h.login("expert")), vec![(1, "expert")]);
    h.answer(1, "expert");
    assert!(offers(&h.at(34.9)).is_empty());
    assert_eq!(offers(&h.at(35.0)), vec![(11, "junior")]);
}

#[test]
fn customer_first_callback_reserves_the_agent_while_the_customer_rings() {
    let mut q = queue("q", Strategy::FirstFree);
    q.ring_timeout = s(15.0);
    q.callback.mode = CallbackMode::CustomerFirst;
    q.callback.customer_ring_timeout = s(30.0);
    let mut agent_first = queue("af", Strategy::FirstFree);
    agent_first.ring_timeout = s(15.0);
    let mut h = Harness::new(vec![q, agent_first], agents(&["a1", "a2"], &["q", "af"]));
    h.login("a1");
    h.login("a2");
    let at = h.t(0.0);
    assert_eq!(offers(&h.callback(10, "q", at)), vec![(10, "a1")]);
    assert_eq!(offers(&h.callback(11, "af", at)), vec![(11, "a2")]);
    // A live caller in the customer-first queue keeps the plain ring timeout.
    let acts = h.at(15.0);
    assert_eq!(cancels(&acts), vec![(11, "a2")]);
    assert_eq!(offers(&acts), vec![(11, "a2")], "only agent free for it");
    assert!(cancels(&h.at(44.9)).iter().all(|(c, _)| *c != 10));
    let acts = h.at(45.0);
    assert!(cancels(&acts).contains(&(10, "a1")), "{acts:?}");
}

#[test]
fn callback_offer_thresholds_and_ceiling() {
    let mut q = queue("q", Strategy::LongestIdle);
    q.default_handle_time = s(120.0);
    q.callback.enabled = true;
    q.callback.offer_when_wait_over = Some(s(120.0));
    q.callback.offer_when_len_over = None;
    q.callback.ceiling = 5;
    let mut by_len = q.clone();
    by_len.name = "len".into();
    by_len.callback.offer_when_wait_over = None;
    by_len.callback.offer_when_len_over = Some(2);
    let mut off = q.clone();
    off.name = "off".into();
    off.callback.enabled = false;
    let mut h = Harness::new(vec![q, by_len, off], agents(&["a1"], &["q", "off"]));
    h.login("a1");
    h.enqueue(1, "q", 0, "");
    h.answer(1, "a1");
    h.enqueue(2, "q", 0, "");
    h.enqueue(3, "q", 0, "");
    h.at(10.0);
    // One agent, 110 s left on its call, H = 120 s: 110 s for caller 2, 230 s for caller 3.
    assert_eq!(h.acd.estimated_wait_for(ck(2), h.now), Some(s(110.0)));
    assert_eq!(h.acd.estimated_wait_for(ck(3), h.now), Some(s(230.0)));
    assert!(!h.acd.callback_offer(ck(2), 0, h.now));
    assert!(h.acd.callback_offer(ck(3), 4, h.now));
    assert!(!h.acd.callback_offer(ck(3), 5, h.now), "the basket is full");
    // A callback ahead pushes caller 2 past the threshold.
    let at = h.t(-30.0);
    h.callback(10, "q", at);
    assert_eq!(h.acd.estimated_wait_for(ck(2), h.now), Some(s(230.0)));
    assert!(h.acd.callback_offer(ck(2), 0, h.now));
    assert!(!h.acd.callback_offer(ck(10), 0, h.now), "not to a callback");
    assert!(!h.acd.callback_offer(ck(99), 0, h.now), "unknown call");
    // Nobody serves "len": only its length counts, and it must be over 2.
    h.enqueue(20, "len", 0, "");
    h.enqueue(21, "len", 0, "");
    assert_eq!(h.acd.estimated_wait_for(ck(20), h.now), None);
    assert!(!h.acd.callback_offer(ck(20), 0, h.now));
    h.callback(22, "len", at);
    assert!(h.acd.callback_offer(ck(20), 0, h.now));
    assert!(h.acd.callback_offer(ck(21), 0, h.now));
    // Disabled: never, however long the wait.
    for c in 30..40 {
        h.enqueue(c, "off", 0, "");
    }
    assert!(!h.acd.callback_offer(ck(39), 0, h.now));
    // Being offered to an agent: about to be served.
    h.end(1, "a1");
    assert_eq!(h.acd.estimated_wait_for(ck(10), h.now), None);
    assert!(!h.acd.callback_offer(ck(10), 0, h.now));
}

#[test]
fn nobody_serving_counts_as_a_long_wait() {
    let mut q = queue("q", Strategy::LongestIdle);
    q.callback.enabled = true;
    let mut h = Harness::new(vec![q], agents(&["a1"], &["q"]));
    h.enqueue(1, "q", 0, "");
    assert!(h.acd.callback_offer(ck(1), 0, h.now), "nobody logged in");
    h.login("a1");
    h.enqueue(2, "q", 0, "");
    // a1 rings for caller 1: caller 2 would wait one handle time (120 s), not over 120 s.
    assert!(!h.acd.callback_offer(ck(2), 0, h.now));
    h.pause("a1");
    h.fail(1, "a1", OfferFailure::Busy);
    assert!(
        h.acd.callback_offer(ck(2), 0, h.now),
        "paused agents serve nobody"
    );
}

#[test]
fn the_offer_key_never_takes_the_key_exit() {
    let mut q = queue("q", Strategy::LongestIdle);
    q.exits.key = Some("menu".into());
    q.callback.enabled = true;
    q.callback.offer_key = '#';
    let mut h = Harness::new(vec![q], agents(&["a1"], &["q"]));
    h.enqueue(1, "q", 0, "");
    let press = |digit| Input::KeyPressed { call: ck(1), digit };
    assert!(h.input(press('#')).is_empty());
    assert_eq!(
        exits(&h.input(press('1'))),
        vec![(1, ExitReason::Key, Some("menu"))]
    );
}

#[test]
fn callback_config_is_checked() {
    let now = Instant::now();
    let mut q = QueueConfig::new("q");
    q.callback.offer_key = 'x';
    assert_eq!(
        Acd::new(vec![q.clone()], vec![], now).unwrap_err(),
        ConfigError::Callback {
            queue: "q".into(),
            field: "offer_key",
            reason: "must be a DTMF key: 0-9, *, # or A-D"
        }
    );
    q.callback.offer_key = '2';
    q.callback.max_attempts = 0;
    let err = Acd::new(vec![q], vec![], now).unwrap_err();
    assert!(err.to_string().contains("callback.max_attempts"), "{err}");
}

#[test]
fn callback_errors_change_nothing() {
    let mut h = Harness::new(
        vec![queue("q", Strategy::FirstFree)],
        agents(&["a1"], &["q"]),
    );
    let cb = |call: u64, queue: &str, enqueued_at| Input::EnqueueCallback {
        call: ck(call),
        queue: queue.into(),
        priority: 0,
        caller: String::new(),
        enqueued_at,
    };
    let at = h.t(0.0);
    assert_eq!(
        h.try_input(cb(1, "nope", at)),
        Err(AcdError::UnknownQueue("nope".into()))
    );
    h.enqueue(1, "q", 0, "");
    assert_eq!(
        h.try_input(cb(1, "q", at)),
        Err(AcdError::DuplicateCall(ck(1)))
    );
    assert_eq!(h.acd.snapshot(h.now).queues[0].callbacks_waiting, 0);
    // A time in the future counts as now: it cannot jump caller 1.
    let later = h.t(3600.0);
    h.input(cb(2, "q", later));
    let line: Vec<u64> = h.line(0).iter().map(|c| c.0).collect();
    assert_eq!(line, vec![1, 2]);
}

// ---- direct offers (transfer to a named agent) --------------------------------------------

fn direct_failed(actions: &[Action]) -> Vec<(u64, &str, Option<OfferFailure>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::DirectFailed {
                call,
                agent,
                reason,
                ..
            } => Some((call.0, agent.as_str(), *reason)),
            _ => None,
        })
        .collect()
}

fn direct(h: &mut Harness, call: u64, agent: &str) -> Vec<Action> {
    h.input(Input::Direct {
        call: ck(call),
        agent: agent.into(),
        queue: "q".into(),
    })
}

#[test]
fn direct_offer_reserves_a_ready_agent_and_connects_in_its_queue() {
    let mut h = Harness::new(
        vec![queue("q", Strategy::FirstFree)],
        agents(&["a1", "a2"], &["q"]),
    );
    h.login("a1");
    h.login("a2");
    // a2 is not first-free, but it is the one named.
    let acts = direct(&mut h, 9, "a2");
    assert_eq!(offers(&acts), vec![(9, "a2")]);
    assert_eq!(h.state("a2"), AgentState::Reserved);
    // While reserved, a queue caller goes to the other agent.
    assert_eq!(offers(&h.enqueue(1, "q", 0, "")), vec![(1, "a1")]);
    let acts = h.answer(9, "a2");
    assert!(acts.iter().any(|a| matches!(a, Action::Connected { call, queue, .. } if call.0 == 9 && queue.as_str() == "q")));
    assert_eq!(h.state("a2"), AgentState::OnCall);
    h.end(9, "a2");
    assert_eq!(h.state("a2"), AgentState::Ready);
}

#[test]
fn direct_offer_to_an_agent_not_ready_fails_at_once_with_its_state() {
    let mut h = Harness::new(
        vec![queue("q", Strategy::FirstFree)],
        agents(&["a1", "a2"], &["q"]),
    );
    h.login("a1");
    h.pause("a1");
    let acts = direct(&mut h, 9, "a1");
    assert!(offers(&acts).is_empty());
    assert!(acts.iter().any(|a| matches!(
        a,
        Action::DirectFailed {
            state: AgentState::Paused { .. },
            reason: None,
            ..
        }
    )));
    // Logged out: the same, and the ACD keeps nothing of the call.
    let acts = direct(&mut h, 10, "a2");
    assert_eq!(direct_failed(&acts), vec![(10, "a2", None)]);
    assert!(matches!(
        h.try_input(Input::Abandon { call: ck(10) }),
        Err(AcdError::UnknownCall(_))
    ));
}

#[test]
fn direct_offer_ring_timeout_counts_a_miss_and_reports_failure() {
    let mut q = queue("q", Strategy::FirstFree);
    q.ring_timeout = s(10.0);
    q.max_misses_before_pause = 1;
    let mut h = Harness::new(vec![q], agents(&["a1"], &["q"]));
    h.login("a1");
    direct(&mut h, 9, "a1");
    assert!(
        direct_failed(&h.at(9.9)).is_empty(),
        "no failure before the ring timeout"
    );
    let acts = h.at(10.0);
    assert_eq!(cancels(&acts), vec![(9, "a1")]);
    assert_eq!(
        direct_failed(&acts),
        vec![(9, "a1", Some(OfferFailure::NoAnswer))]
    );
    assert_eq!(h.state("a1"), paused("no-answer"));
}

#[test]
fn direct_offer_withdrawn_when_the_caller_leaves_and_declines_report_failure() {
    let mut h = Harness::new(
        vec![queue("q", Strategy::FirstFree)],
        agents(&["a1"], &["q"]),
    );
    h.login("a1");
    direct(&mut h, 9, "a1");
    let acts = h.input(Input::Abandon { call: ck(9) });
    assert_eq!(cancels(&acts), vec![(9, "a1")]);
    assert!(
        direct_failed(&acts).is_empty(),
        "the caller left: nothing to report"
    );
    assert_eq!(h.state("a1"), AgentState::Ready);
    // The ring timer went with it.
    assert!(h.at(60.0).is_empty());
    direct(&mut h, 11, "a1");
    let acts = h.fail(11, "a1", OfferFailure::Busy);
    assert_eq!(
        direct_failed(&acts),
        vec![(11, "a1", Some(OfferFailure::Busy))]
    );
    assert_eq!(h.state("a1"), AgentState::Ready);
}
