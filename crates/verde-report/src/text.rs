//! The report as a plain-text table for the terminal (`verde report`).

use std::collections::BTreeSet;
use std::io::{self, Write};

use crate::kpi::{Bucket, Mean, Ratio, Report, Row, Target};

enum Line<'r> {
    Count(String, u64),
    Share(String, &'r Ratio),
    Time(String, &'r Mean),
}

impl Line<'_> {
    fn missed(&self) -> bool {
        match self {
            Line::Count(..) => false,
            Line::Share(_, r) => r.missed,
            Line::Time(_, m) => m.missed,
        }
    }

    /// `prefix` goes before the label, in the label's column.
    fn write(&self, prefix: &str, w: &mut dyn Write) -> io::Result<()> {
        let (label, value, detail, target, missed) = match self {
            Line::Count(label, n) => (label, n.to_string(), String::new(), None, false),
            Line::Share(label, r) => (
                label,
                r.value.map_or("-".to_string(), pct),
                format!("({}/{})", r.num, r.den),
                r.target.map(|t| target_text(t, true)),
                r.missed,
            ),
            Line::Time(label, m) => (
                label,
                m.avg_s.map_or("-".to_string(), |v| format!("{v:.1} s")),
                match m.max_s {
                    Some(max) => format!("(n={}, max {max:.1} s)", m.count),
                    None => format!("(n={})", m.count),
                },
                m.target.map(|t| target_text(t, false)),
                m.missed,
            ),
        };
        let label = format!("{prefix}{label}");
        let line = format!(
            "  {label:<50} {value:>9}  {detail:<26} {}{}",
            target.unwrap_or_default(),
            if missed { "  MISSED" } else { "" }
        );
        writeln!(w, "{}", line.trim_end())
    }
}

fn pct(v: f64) -> String {
    format!("{:.1} %", v * 100.0)
}

fn target_text(t: Target, as_pct: bool) -> String {
    let show = |v: f64| if as_pct { pct(v) } else { format!("{v} s") };
    match t {
        Target::AtLeast(v) => format!("target >= {}", show(v)),
        Target::AtMost(v) => format!("target <= {}", show(v)),
    }
}

fn lines(r: &Row) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let count = |l: &str, n| Line::Count(l.to_string(), n);
    let share = |l: &str, r| Line::Share(l.to_string(), r);
    let time = |l: &str, m| Line::Time(l.to_string(), m);
    if let Some(c) = &r.calls {
        out.extend([
            count("calls arriving", c.arriving),
            count("  rejected before the IVR", c.rejected),
            share("handled entirely in the IVR", &c.ivr_handled),
            count("  of which abandoned in the IVR", c.ivr_abandoned),
            count("  of which out of hours", c.out_of_hours),
            count("  of which voicemail left", c.voicemail_left),
            count(
                "  of which callback booked in the IVR",
                c.callback_booked_in_ivr,
            ),
            count("  of which queue unavailable", c.queue_unavailable),
            share("transferred out by the IVR", &c.transferred_out),
            share("sent to a queue", &c.to_queue),
            share("offered a callback", &c.callback_offered),
            share("requested a callback", &c.callback_requested),
            share("answered by an agent, of arriving", &c.answered_by_agent),
            time("IVR answer time", &c.ivr_answer),
            time("IVR navigation time", &c.ivr_navigation),
        ]);
    }
    let q = &r.queue_kpis;
    if q.offered > 0 || q.talk_time.count > 0 {
        out.extend([
            count("entered the queue", q.offered),
            count("  answered", q.answered),
            count("  abandoned", q.abandoned),
            count("  of which within the short threshold", q.abandoned_short),
        ]);
        for (reason, n) in &q.exits {
            out.push(Line::Count(format!("  left: {reason}"), *n));
        }
        out.extend([
            share("answered by an agent, of queued", &q.answered_of_queued),
            share("service level 30 s", &q.service_level_30s),
            share("service level 60 s", &q.service_level_60s),
            share("abandon rate (net of short abandons)", &q.abandon_rate),
            time("hold time (arrival to agent)", &q.hold_time),
            time("speed of answer (queue to agent)", &q.speed_of_answer),
            time("talk time", &q.talk_time),
            time("on hold during talk", &q.on_hold),
            count("transfers", q.transfers),
        ]);
    }
    let cb = &r.callbacks;
    if cb.requested > 0 {
        out.extend([
            count("callbacks requested", cb.requested),
            count("  cancelled", cb.cancelled),
            count("  still open", cb.open),
            count("  not reached", cb.not_reached),
            share("callbacks made on time", &cb.on_time),
            share("callbacks made by their deadline", &cb.by_deadline),
        ]);
    }
    let vm = &r.voicemails;
    if vm.received > 0 {
        out.extend([
            count("voicemails", vm.received),
            count("  still open", vm.open),
            share("voicemails taken in charge on time", &vm.on_time),
        ]);
    }
    let s = &r.survey;
    if s.surveys > 0 {
        out.extend([
            count("surveys", s.surveys),
            share("survey answers 5-6", &s.overall.positive),
            share("survey answers 1-2", &s.overall.negative),
        ]);
        for (question, sc) in &s.per_question {
            out.push(Line::Share(format!("  {question}: 5-6"), &sc.positive));
            out.push(Line::Share(format!("  {question}: 1-2"), &sc.negative));
        }
    }
    out
}

fn title(r: &Row) -> String {
    format!(
        "== {} | {} | {} ==",
        r.bucket,
        r.queue.as_deref().unwrap_or("all queues"),
        r.channel.as_deref().unwrap_or("all channels")
    )
}

/// Writes the report as readable text: first the targets missed over the whole period, then
/// one block per row. A missed target is marked `MISSED` at the end of its line. Rows per
/// channel are left out when the report holds one channel only, and rows per bucket when the
/// period holds one bucket only (the total says the same).
pub fn write_text(report: &Report, w: &mut dyn Write) -> io::Result<()> {
    let bucket = match report.bucket {
        Bucket::Day => "day",
        Bucket::Month => "month",
        Bucket::Quarter => "quarter",
    };
    writeln!(
        w,
        "verde report {} .. {} ({}, by {bucket}), as of {}",
        report.from, report.to, report.tz, report.as_of
    )?;
    if let Some(q) = &report.queue_filter {
        writeln!(w, "queue {q} only")?;
    }
    let channels: BTreeSet<&str> = report
        .rows
        .iter()
        .filter_map(|r| r.channel.as_deref())
        .collect();
    let buckets: BTreeSet<&str> = report.rows.iter().map(|r| r.bucket.as_str()).collect();
    let shown = |r: &&Row| {
        (r.channel.is_none() || channels.len() > 1) && (r.bucket == "total" || buckets.len() > 2)
    };

    let totals = report
        .rows
        .iter()
        .filter(|r| r.bucket == "total" && r.channel.is_none());
    let mut missed = Vec::new();
    for r in totals {
        for line in lines(r).into_iter().filter(Line::missed) {
            missed.push((r.queue.as_deref().unwrap_or("all queues"), line));
        }
    }
    writeln!(w)?;
    if missed.is_empty() {
        writeln!(w, "no target missed over the period")?;
    } else {
        writeln!(w, "targets missed over the period: {}", missed.len())?;
        for (queue, line) in &missed {
            line.write(&format!("{queue}: "), w)?;
        }
    }
    for row in report.rows.iter().filter(shown) {
        writeln!(w)?;
        writeln!(w, "{}", title(row))?;
        for line in lines(row) {
            line.write("", w)?;
        }
    }
    if !report.skipped.is_empty() {
        writeln!(w)?;
        writeln!(w, "left out ({}):", report.skipped.len())?;
        for s in &report.skipped {
            writeln!(w, "  {}: {}", s.id, s.reason)?;
        }
    }
    Ok(())
}
