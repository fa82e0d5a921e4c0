//! Contract thresholds: the windows a KPI is measured over and the targets it is judged by.

use serde::{Deserialize, Serialize};

use crate::ReportError;

/// Which calls the service level is a share of. See `docs/kpi.md`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceLevelBase {
    /// Asterisk-like: answered + abandoned after the short-abandon threshold. Callers who left
    /// through an exit (timeout, full, empty, key, callback) are not counted.
    #[default]
    AnsweredAndAbandoned,
    /// Every call that entered the queue, less the short abandons (as the live wallboard):
    /// exits count as not answered in time.
    Offered,
}

/// Measurement windows and targets, as the contract states them.
///
/// A target set to `None` is not judged (`missed` stays false). Ratios are fractions in
/// `0.0..=1.0` (0.8 = 80 %), times are seconds. Every field has a default (see
/// [`Targets::default`] and `docs/kpi.md`), so a config names only what its contract changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Targets {
    /// Abandons in the queue quicker than this are not held against the service.
    pub short_abandon_s: u32,
    pub service_level_base: ServiceLevelBase,
    /// A callback is on time when first reached within this many working hours of the request.
    pub callback_working_hours: u32,
    /// A voicemail is on time when taken in charge within this many working hours.
    pub voicemail_working_hours: u32,

    /// At least: share answered within 30 s of entering the queue.
    pub service_level_30s: Option<f64>,
    /// At least: share answered within 60 s of entering the queue.
    pub service_level_60s: Option<f64>,
    /// At most: abandons after the short-abandon threshold, as a share.
    pub abandon_rate: Option<f64>,
    /// At least: calls answered by an agent out of those that entered a queue.
    pub answered_of_queued: Option<f64>,
    /// At most: average speed of answer (queue entry to agent answer), seconds.
    pub speed_of_answer_s: Option<f64>,
    /// At most: average hold time in the tenders' sense (arrival to agent answer), seconds.
    pub hold_time_s: Option<f64>,
    /// At most: average time from arrival to the IVR's answer, seconds.
    pub ivr_answer_s: Option<f64>,
    /// At least: callbacks reached within `callback_working_hours`.
    pub callbacks_on_time: Option<f64>,
    /// At least: voicemails taken in charge within `voicemail_working_hours`.
    pub voicemails_on_time: Option<f64>,
    /// At least: survey answers scoring 5 or 6.
    pub survey_positive: Option<f64>,
    /// At most: survey answers scoring 1 or 2.
    pub survey_negative: Option<f64>,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            short_abandon_s: 15,
            service_level_base: ServiceLevelBase::AnsweredAndAbandoned,
            callback_working_hours: 8,
            voicemail_working_hours: 4,
            service_level_30s: Some(0.80),
            service_level_60s: Some(0.90),
            abandon_rate: Some(0.05),
            answered_of_queued: Some(0.90),
            speed_of_answer_s: None,
            hold_time_s: None,
            ivr_answer_s: Some(5.0),
            callbacks_on_time: Some(0.90),
            voicemails_on_time: Some(0.90),
            survey_positive: Some(0.70),
            survey_negative: None,
        }
    }
}

impl Targets {
    /// Refuses targets that could never be judged sensibly (a share above 100 %, a negative
    /// time), naming the field.
    pub fn validate(&self) -> Result<(), ReportError> {
        let shares = [
            ("service_level_30s", self.service_level_30s),
            ("service_level_60s", self.service_level_60s),
            ("abandon_rate", self.abandon_rate),
            ("answered_of_queued", self.answered_of_queued),
            ("callbacks_on_time", self.callbacks_on_time),
            ("voicemails_on_time", self.voicemails_on_time),
            ("survey_positive", self.survey_positive),
            ("survey_negative", self.survey_negative),
        ];
        for (field, v) in shares {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    return Err(ReportError::Target {
                        field,
                        value: v,
                        expect: "a share between 0.0 and 1.0 (0.8 means 80 %)",
                    });
                }
            }
        }
        let times = [
            ("speed_of_answer_s", self.speed_of_answer_s),
            ("hold_time_s", self.hold_time_s),
            ("ivr_answer_s", self.ivr_answer_s),
        ];
        for (field, v) in times {
            if let Some(v) = v {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(ReportError::Target {
                        field,
                        value: v,
                        expect: "a number of seconds, 0 or more",
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_only_what_changes_and_unknown_fields_are_refused() {
        let t: Targets = serde_yaml::from_str("service_level_30s: 0.9\nabandon_rate: null\n")
            .expect("partial targets parse");
        assert_eq!(t.service_level_30s, Some(0.9));
        assert_eq!(t.abandon_rate, None);
        assert_eq!(t.short_abandon_s, 15, "unnamed fields keep their default");
        let bad = serde_yaml::from_str::<Targets>("service_level_3s: 0.9\n");
        assert!(
            bad.is_err(),
            "a misspelt target must not be silently ignored"
        );
        let base: Targets = serde_yaml::from_str("service_level_base: offered\n").unwrap();
        assert_eq!(base.service_level_base, ServiceLevelBase::Offered);
    }

    #[test]
    fn a_percentage_written_as_80_is_refused_with_the_field_name() {
        let t = Targets {
            service_level_30s: Some(80.0),
            ..Targets::default()
        };
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("service_level_30s"), "{e}");
        assert!(Targets::default().validate().is_ok());
        let t = Targets {
            hold_time_s: Some(f64::NAN),
            ..Targets::default()
        };
        assert!(t.validate().is_err());
    }
}
