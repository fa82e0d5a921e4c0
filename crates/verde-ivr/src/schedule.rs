//! Opening hours, Italian national holidays and working-time arithmetic.
//!
//! Hours are local wall-clock times in the schedule's time zone (Europe/Rome by default), so a
//! 08:00–19:00 range stays 08:00–19:00 on the days daylight saving time starts or ends; the
//! conversion to UTC happens per calendar day. All functions take the instant to evaluate as an
//! argument: nothing here reads the clock.

use std::collections::BTreeMap;
use std::fmt;

use chrono::offset::LocalResult;
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;

/// How far [`Schedule::next_opening`] and [`Schedule::add_working_time`] look ahead before
/// giving up (a schedule with no hours at all never opens).
const LOOKAHEAD_DAYS: i64 = 3 * 366;

const DAY_SECS: u32 = 24 * 3600;

/// Why a schedule (or a piece of one) could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("bad time range `{0}`: expected HH:MM-HH:MM (24h clock, 24:00 allowed as an end)")]
    BadRange(String),
    #[error("time range `{0}` ends before it starts (or is empty)")]
    EndBeforeStart(String),
    #[error("time ranges `{0}` and `{1}` overlap")]
    Overlap(String, String),
    #[error(
        "bad weekday `{0}`: expected mon, tue, wed, thu, fri, sat, sun or a span like mon-fri"
    )]
    BadWeekday(String),
    #[error("weekday {0} is given hours twice")]
    DuplicateWeekday(String),
    #[error("bad date `{0}`: expected YYYY-MM-DD, YYYY-MM-DD..YYYY-MM-DD or MM-DD (every year)")]
    BadDate(String),
    #[error("bad time zone `{0}`: expected an IANA name such as Europe/Rome")]
    BadTimezone(String),
}

/// A half-open range `[start, end)` of local clock time within one day, in seconds from midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeRange {
    start: u32,
    end: u32,
}

impl TimeRange {
    /// Parses `HH:MM-HH:MM`; `24:00` is accepted as an end ("until midnight").
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let bad = || ScheduleError::BadRange(text.to_string());
        let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
        let start = parse_clock(a.trim()).ok_or_else(bad)?;
        let end = parse_clock(b.trim()).ok_or_else(bad)?;
        if start >= DAY_SECS {
            return Err(bad());
        }
        if end <= start {
            return Err(ScheduleError::EndBeforeStart(text.to_string()));
        }
        Ok(TimeRange { start, end })
    }

    fn contains(&self, secs: u32) -> bool {
        self.start <= secs && secs < self.end
    }

    /// Start, in seconds from local midnight.
    pub fn start_secs(&self) -> u32 {
        self.start
    }

    /// End (exclusive), in seconds from local midnight; 86 400 for `24:00`.
    pub fn end_secs(&self) -> u32 {
        self.end
    }

    /// Whether the local clock time `t` falls inside the range.
    pub fn contains_time(&self, t: chrono::NaiveTime) -> bool {
        self.contains(t.num_seconds_from_midnight())
    }
}

impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 3600,
            self.start / 60 % 60,
            self.end / 3600,
            self.end / 60 % 60
        )
    }
}

fn parse_clock(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 3600 + m * 60)
}

/// Sorts ranges and refuses overlapping ones (touching ranges such as 08:00-13:00 and
/// 13:00-19:00 are fine).
pub fn check_ranges(mut ranges: Vec<TimeRange>) -> Result<Vec<TimeRange>, ScheduleError> {
    ranges.sort();
    for pair in ranges.windows(2) {
        if pair[1].start < pair[0].end {
            return Err(ScheduleError::Overlap(
                pair[0].to_string(),
                pair[1].to_string(),
            ));
        }
    }
    Ok(ranges)
}

/// Parses a weekday key: `mon` .. `sun`, or an inclusive span such as `mon-fri`.
pub fn parse_weekdays(text: &str) -> Result<Vec<Weekday>, ScheduleError> {
    let one = |s: &str| -> Result<Weekday, ScheduleError> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "mon" => Weekday::Mon,
            "tue" => Weekday::Tue,
            "wed" => Weekday::Wed,
            "thu" => Weekday::Thu,
            "fri" => Weekday::Fri,
            "sat" => Weekday::Sat,
            "sun" => Weekday::Sun,
            _ => return Err(ScheduleError::BadWeekday(text.to_string())),
        })
    };
    match text.split_once('-') {
        None => Ok(vec![one(text)?]),
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if b.num_days_from_monday() < a.num_days_from_monday() {
                return Err(ScheduleError::BadWeekday(text.to_string()));
            }
            let mut days = vec![a];
            let mut d = a;
            while d != b {
                d = d.succ();
                days.push(d);
            }
            Ok(days)
        }
    }
}

/// Parses an IANA time zone name.
pub fn parse_timezone(text: &str) -> Result<Tz, ScheduleError> {
    text.parse::<Tz>()
        .map_err(|_| ScheduleError::BadTimezone(text.to_string()))
}

/// Parses a `YYYY-MM-DD` date.
pub fn parse_date(text: &str) -> Result<NaiveDate, ScheduleError> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| ScheduleError::BadDate(text.to_string()))
}

/// An extra closure day declared by a flow, on top of the national holidays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolidayRule {
    /// One date.
    Date(NaiveDate),
    /// An inclusive range of dates.
    Range(NaiveDate, NaiveDate),
    /// The same day every year (month, day), e.g. a city's patron saint.
    Yearly(u32, u32),
}

impl HolidayRule {
    /// Parses `YYYY-MM-DD`, `YYYY-MM-DD..YYYY-MM-DD` or `MM-DD`.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let bad = || ScheduleError::BadDate(text.to_string());
        let t = text.trim();
        if let Some((a, b)) = t.split_once("..") {
            let (a, b) = (
                parse_date(a).map_err(|_| bad())?,
                parse_date(b).map_err(|_| bad())?,
            );
            if b < a {
                return Err(bad());
            }
            return Ok(HolidayRule::Range(a, b));
        }
        if t.len() == 5 {
            let (m, d) = t.split_once('-').ok_or_else(bad)?;
            let (m, d): (u32, u32) = (m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
            // 2024 is a leap year, so 02-29 is accepted as a yearly date.
            NaiveDate::from_ymd_opt(2024, m, d).ok_or_else(bad)?;
            return Ok(HolidayRule::Yearly(m, d));
        }
        Ok(HolidayRule::Date(parse_date(t).map_err(|_| bad())?))
    }

    fn matches(&self, date: NaiveDate) -> bool {
        match *self {
            HolidayRule::Date(d) => d == date,
            HolidayRule::Range(a, b) => a <= date && date <= b,
            HolidayRule::Yearly(m, d) => date.month() == m && date.day() == d,
        }
    }
}

/// Easter Sunday of a Gregorian year (anonymous Gregorian algorithm, a.k.a. Meeus/Jones/Butcher).
pub fn easter_sunday(year: i32) -> Option<NaiveDate> {
    let a = year.rem_euclid(19);
    let b = year.div_euclid(100);
    let c = year.rem_euclid(100);
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15).rem_euclid(30);
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k).rem_euclid(7);
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32)
}

/// The name of the Italian national holiday falling on `date`, if any (Sundays are not listed).
///
/// St Francis (4 October) is a national holiday again from 2026 (law 8 October 2025 n. 151).
pub fn italian_national_holiday(date: NaiveDate) -> Option<&'static str> {
    let fixed = match (date.month(), date.day()) {
        (1, 1) => Some("Capodanno"),
        (1, 6) => Some("Epifania"),
        (4, 25) => Some("Festa della Liberazione"),
        (5, 1) => Some("Festa del Lavoro"),
        (6, 2) => Some("Festa della Repubblica"),
        (8, 15) => Some("Ferragosto"),
        (10, 4) if date.year() >= 2026 => Some("San Francesco d'Assisi"),
        (11, 1) => Some("Ognissanti"),
        (12, 8) => Some("Immacolata Concezione"),
        (12, 25) => Some("Natale"),
        (12, 26) => Some("Santo Stefano"),
        _ => None,
    };
    if fixed.is_some() {
        return fixed;
    }
    let easter = easter_sunday(date.year())?;
    if date == easter {
        Some("Pasqua")
    } else if Some(date) == easter.succ_opt() {
        Some("Lunedì dell'Angelo")
    } else {
        None
    }
}

/// What a schedule says about one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleState {
    /// Inside opening hours; `band` names the first time band containing the local time.
    Open { band: Option<String> },
    /// Outside opening hours on a working day (or a date override says closed).
    Closed,
    /// A national holiday or one of the flow's extra closures (unless a date override applies).
    Holiday,
}

/// Weekly opening hours with holidays and per-date overrides, in one time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    tz: Tz,
    weekly: [Vec<TimeRange>; 7],
    overrides: BTreeMap<NaiveDate, Vec<TimeRange>>,
    national_holidays: bool,
    extra_holidays: Vec<HolidayRule>,
    bands: Vec<(String, TimeRange)>,
}

impl Schedule {
    /// An always-closed schedule in `tz` that observes Italian national holidays.
    pub fn new(tz: Tz) -> Self {
        Schedule {
            tz,
            weekly: Default::default(),
            overrides: BTreeMap::new(),
            national_holidays: true,
            extra_holidays: Vec::new(),
            bands: Vec::new(),
        }
    }

    /// Sets the opening ranges of one weekday (replacing earlier ones).
    pub fn set_hours(&mut self, day: Weekday, ranges: Vec<TimeRange>) -> Result<(), ScheduleError> {
        self.weekly[day.num_days_from_monday() as usize] = check_ranges(ranges)?;
        Ok(())
    }

    /// Gives a date its own hours (an empty list means closed all day); wins over holidays.
    pub fn set_override(
        &mut self,
        date: NaiveDate,
        ranges: Vec<TimeRange>,
    ) -> Result<(), ScheduleError> {
        self.overrides.insert(date, check_ranges(ranges)?);
        Ok(())
    }

    /// Whether Italian national holidays close the service (default true).
    pub fn set_national_holidays(&mut self, on: bool) {
        self.national_holidays = on;
    }

    /// Adds an extra closure.
    pub fn add_holiday(&mut self, rule: HolidayRule) {
        self.extra_holidays.push(rule);
    }

    /// Adds a named time band (evaluated in order; bands may not overlap).
    pub fn add_band(&mut self, name: &str, range: TimeRange) -> Result<(), ScheduleError> {
        for (_, other) in &self.bands {
            if range.start < other.end && other.start < range.end {
                return Err(ScheduleError::Overlap(other.to_string(), range.to_string()));
            }
        }
        self.bands.push((name.to_string(), range));
        Ok(())
    }

    /// The schedule's time zone.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// Whether `date` is a holiday for this schedule (national or extra).
    pub fn is_holiday(&self, date: NaiveDate) -> bool {
        (self.national_holidays && italian_national_holiday(date).is_some())
            || self.extra_holidays.iter().any(|r| r.matches(date))
    }

    /// The state at instant `t`.
    pub fn state_at(&self, t: DateTime<Utc>) -> ScheduleState {
        let local = t.with_timezone(&self.tz);
        let date = local.date_naive();
        if !self.overrides.contains_key(&date) && self.is_holiday(date) {
            return ScheduleState::Holiday;
        }
        if self
            .intervals_on(date)
            .iter()
            .any(|&(s, e)| s <= t && t < e)
        {
            let secs = local.num_seconds_from_midnight();
            let band = self
                .bands
                .iter()
                .find(|(_, r)| r.contains(secs))
                .map(|(n, _)| n.clone());
            ScheduleState::Open { band }
        } else {
            ScheduleState::Closed
        }
    }

    /// Whether the service is open at `t`.
    pub fn is_open(&self, t: DateTime<Utc>) -> bool {
        matches!(self.state_at(t), ScheduleState::Open { .. })
    }

    /// The time band applying at `t` when open (None when closed or outside every band).
    pub fn band_at(&self, t: DateTime<Utc>) -> Option<String> {
        match self.state_at(t) {
            ScheduleState::Open { band } => band,
            _ => None,
        }
    }

    /// `t` itself when open, else the start of the next opening range (None if the schedule does
    /// not open within about three years).
    pub fn next_opening(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let first = t.with_timezone(&self.tz).date_naive();
        for offset in 0..LOOKAHEAD_DAYS {
            let date = first + TimeDelta::days(offset);
            for (s, e) in self.intervals_on(date) {
                if e > t {
                    return Some(s.max(t));
                }
            }
        }
        None
    }

    /// Total opening time within `[a, b)`; zero when `b <= a`.
    pub fn working_time_between(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> TimeDelta {
        let mut total = TimeDelta::zero();
        if b <= a {
            return total;
        }
        let mut date = a.with_timezone(&self.tz).date_naive();
        let last = b.with_timezone(&self.tz).date_naive();
        while date <= last {
            for (s, e) in self.intervals_on(date) {
                let (s, e) = (s.max(a), e.min(b));
                if e > s {
                    total += e - s;
                }
            }
            date += TimeDelta::days(1);
        }
        total
    }

    /// The instant at which `duration` of opening time has elapsed after `start` (None if the
    /// schedule does not provide that much within about three years).
    pub fn add_working_time(
        &self,
        start: DateTime<Utc>,
        duration: TimeDelta,
    ) -> Option<DateTime<Utc>> {
        if duration <= TimeDelta::zero() {
            return Some(start);
        }
        let mut left = duration;
        let first = start.with_timezone(&self.tz).date_naive();
        for offset in 0..LOOKAHEAD_DAYS {
            for (s, e) in self.intervals_on(first + TimeDelta::days(offset)) {
                let s = s.max(start);
                if e <= s {
                    continue;
                }
                if left <= e - s {
                    return Some(s + left);
                }
                left -= e - s;
            }
        }
        None
    }

    /// Opening intervals of one local calendar day, as UTC instants, in order.
    fn intervals_on(&self, date: NaiveDate) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let ranges: &[TimeRange] = match self.overrides.get(&date) {
            Some(r) => r,
            None if self.is_holiday(date) => &[],
            None => &self.weekly[date.weekday().num_days_from_monday() as usize],
        };
        ranges
            .iter()
            .map(|r| {
                (
                    local_to_utc(self.tz, date, r.start),
                    local_to_utc(self.tz, date, r.end),
                )
            })
            .filter(|(s, e)| e > s)
            .collect()
    }
}

/// Local wall-clock time to UTC. A time repeated when clocks go back takes its first
/// occurrence; a time skipped when clocks go forward is read with the offset in force before
/// the jump (02:30 on the spring-forward day becomes 03:30 summer time).
fn local_to_utc(tz: Tz, date: NaiveDate, secs: u32) -> DateTime<Utc> {
    let naive =
        date.and_hms_opt(0, 0, 0).expect("midnight exists") + TimeDelta::seconds(secs.into());
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            let before = tz
                .from_local_datetime(&(naive - TimeDelta::hours(3)))
                .earliest()
                .map(|t| t.naive_utc() - (naive - TimeDelta::hours(3)));
            let offset = before.unwrap_or_else(TimeDelta::zero);
            Utc.from_utc_datetime(&(naive + offset))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Rome;

    fn rome(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Rome.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn range(s: &str) -> TimeRange {
        TimeRange::parse(s).unwrap()
    }

    /// Mon–Fri 08:00–19:00, Sat 08:00–13:00.
    fn office() -> Schedule {
        let mut s = Schedule::new(Rome);
        for d in parse_weekdays("mon-fri").unwrap() {
            s.set_hours(d, vec![range("08:00-19:00")]).unwrap();
        }
        s.set_hours(Weekday::Sat, vec![range("08:00-13:00")])
            .unwrap();
        s
    }

    #[test]
    fn parses_ranges_and_refuses_bad_ones() {
        assert_eq!(range("08:00-24:00").to_string(), "08:00-24:00");
        assert!(matches!(
            TimeRange::parse("8-13"),
            Err(ScheduleError::BadRange(_))
        ));
        assert!(matches!(
            TimeRange::parse("08:61-13:00"),
            Err(ScheduleError::BadRange(_))
        ));
        assert!(matches!(
            TimeRange::parse("25:00-26:00"),
            Err(ScheduleError::BadRange(_))
        ));
        assert!(matches!(
            TimeRange::parse("13:00-08:00"),
            Err(ScheduleError::EndBeforeStart(_))
        ));
        assert!(matches!(
            check_ranges(vec![range("08:00-13:00"), range("12:00-18:00")]),
            Err(ScheduleError::Overlap(..))
        ));
        assert!(check_ranges(vec![range("13:00-19:00"), range("08:00-13:00")]).is_ok());
        assert!(matches!(
            parse_weekdays("fri-mon"),
            Err(ScheduleError::BadWeekday(_))
        ));
        assert!(matches!(
            parse_weekdays("lun"),
            Err(ScheduleError::BadWeekday(_))
        ));
        assert_eq!(parse_weekdays("mon-fri").unwrap().len(), 5);
        assert!(parse_timezone("Europe/Atlantis").is_err());
        assert!(HolidayRule::parse("2026-02-30").is_err());
        assert!(HolidayRule::parse("2026-12-31..2026-12-24").is_err());
        assert_eq!(
            HolidayRule::parse("12-07").unwrap(),
            HolidayRule::Yearly(12, 7)
        );
    }

    #[test]
    fn easter_and_national_holidays() {
        assert_eq!(easter_sunday(2026), NaiveDate::from_ymd_opt(2026, 4, 5));
        assert_eq!(easter_sunday(2027), NaiveDate::from_ymd_opt(2027, 3, 28));
        assert_eq!(easter_sunday(2019), NaiveDate::from_ymd_opt(2019, 4, 21));
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(
            italian_national_holiday(d(2026, 4, 6)),
            Some("Lunedì dell'Angelo")
        );
        assert_eq!(
            italian_national_holiday(d(2027, 3, 29)),
            Some("Lunedì dell'Angelo")
        );
        assert_eq!(italian_national_holiday(d(2027, 4, 6)), None);
        assert!(italian_national_holiday(d(2026, 10, 4)).is_some());
        assert!(italian_national_holiday(d(2025, 10, 4)).is_none());
        assert!(italian_national_holiday(d(2026, 6, 2)).is_some());
        assert!(italian_national_holiday(d(2026, 6, 3)).is_none());
    }

    #[test]
    fn easter_monday_closes_the_office() {
        let s = office();
        assert_eq!(s.state_at(rome(2026, 4, 6, 10, 0)), ScheduleState::Holiday);
        assert!(s.is_open(rome(2026, 4, 7, 10, 0)));
        assert_eq!(s.state_at(rome(2027, 3, 29, 10, 0)), ScheduleState::Holiday);
        assert!(s.is_open(rome(2027, 3, 30, 10, 0)));
        // Monday 6 April 2026 is closed, so the next opening is Tuesday at 08:00.
        assert_eq!(
            s.next_opening(rome(2026, 4, 6, 10, 0)),
            Some(rome(2026, 4, 7, 8, 0))
        );
    }

    #[test]
    fn saturday_morning_hours() {
        let s = office();
        // 2026-05-16 is a Saturday.
        assert!(!s.is_open(rome(2026, 5, 16, 7, 59)));
        assert!(s.is_open(rome(2026, 5, 16, 8, 0)));
        assert!(s.is_open(rome(2026, 5, 16, 12, 59)));
        assert_eq!(s.state_at(rome(2026, 5, 16, 13, 0)), ScheduleState::Closed);
        assert_eq!(
            s.next_opening(rome(2026, 5, 16, 13, 0)),
            Some(rome(2026, 5, 18, 8, 0))
        );
        assert_eq!(
            s.working_time_between(rome(2026, 5, 16, 0, 0), rome(2026, 5, 17, 0, 0)),
            TimeDelta::hours(5)
        );
    }

    #[test]
    fn dst_change_days_keep_local_hours() {
        let mut s = Schedule::new(Rome);
        s.set_hours(Weekday::Sun, vec![range("08:00-19:00")])
            .unwrap();
        // 29 March 2026: clocks go forward at 02:00 CET, so 08:00 local is 06:00 UTC.
        assert!(!s.is_open(utc(2026, 3, 29, 5, 59)));
        assert!(s.is_open(utc(2026, 3, 29, 6, 0)));
        assert!(!s.is_open(utc(2026, 3, 29, 17, 0)));
        // 25 October 2026: clocks go back at 03:00 CEST, so 08:00 local is 07:00 UTC.
        assert!(!s.is_open(utc(2026, 10, 25, 6, 59)));
        assert!(s.is_open(utc(2026, 10, 25, 7, 0)));
        assert!(s.is_open(utc(2026, 10, 25, 17, 59)));
        assert!(!s.is_open(utc(2026, 10, 25, 18, 0)));
        for day in [utc(2026, 3, 29, 0, 0), utc(2026, 10, 25, 0, 0)] {
            assert_eq!(
                s.working_time_between(day - TimeDelta::hours(3), day + TimeDelta::hours(30)),
                TimeDelta::hours(11)
            );
        }
    }

    #[test]
    fn whole_day_ranges_follow_the_short_and_long_days() {
        let mut s = Schedule::new(Rome);
        s.set_hours(Weekday::Sun, vec![range("00:00-24:00")])
            .unwrap();
        let a = utc(2026, 3, 27, 0, 0);
        let b = utc(2026, 3, 31, 0, 0);
        assert_eq!(s.working_time_between(a, b), TimeDelta::hours(23));
        let a = utc(2026, 10, 23, 0, 0);
        let b = utc(2026, 10, 27, 0, 0);
        assert_eq!(s.working_time_between(a, b), TimeDelta::hours(25));
    }

    #[test]
    fn a_skipped_local_time_maps_after_the_jump() {
        let mut s = Schedule::new(Rome);
        s.set_hours(Weekday::Sun, vec![range("02:30-04:00")])
            .unwrap();
        // 02:30 does not exist on 29 March 2026; it reads as 03:30 CEST (01:30 UTC).
        assert!(!s.is_open(utc(2026, 3, 29, 1, 29)));
        assert!(s.is_open(utc(2026, 3, 29, 1, 30)));
        assert!(!s.is_open(utc(2026, 3, 29, 2, 0)));
    }

    #[test]
    fn date_override_wins() {
        let mut s = office();
        let xmas_eve = NaiveDate::from_ymd_opt(2026, 12, 24).unwrap();
        s.set_override(xmas_eve, vec![range("09:00-12:00")])
            .unwrap();
        assert!(!s.is_open(rome(2026, 12, 24, 8, 30)));
        assert!(s.is_open(rome(2026, 12, 24, 11, 0)));
        assert_eq!(s.state_at(rome(2026, 12, 24, 12, 0)), ScheduleState::Closed);
        // An override can also open a holiday.
        let easter_monday = NaiveDate::from_ymd_opt(2026, 4, 6).unwrap();
        s.set_override(easter_monday, vec![range("10:00-11:00")])
            .unwrap();
        assert!(s.is_open(rome(2026, 4, 6, 10, 30)));
        // And close a working day.
        let closed = NaiveDate::from_ymd_opt(2026, 5, 15).unwrap();
        s.set_override(closed, vec![]).unwrap();
        assert_eq!(s.state_at(rome(2026, 5, 15, 10, 0)), ScheduleState::Closed);
    }

    #[test]
    fn st_francis_2026_is_closed_even_with_sunday_hours() {
        let mut s = office();
        s.set_hours(Weekday::Sun, vec![range("08:00-19:00")])
            .unwrap();
        assert_eq!(s.state_at(rome(2026, 10, 4, 10, 0)), ScheduleState::Holiday);
        assert!(s.is_open(rome(2026, 10, 11, 10, 0)));
        s.set_national_holidays(false);
        assert!(s.is_open(rome(2026, 10, 4, 10, 0)));
    }

    #[test]
    fn extra_holidays() {
        let mut s = office();
        s.add_holiday(HolidayRule::parse("2026-08-10..2026-08-14").unwrap());
        s.add_holiday(HolidayRule::parse("12-07").unwrap());
        assert_eq!(s.state_at(rome(2026, 8, 12, 10, 0)), ScheduleState::Holiday);
        assert!(s.is_open(rome(2026, 8, 17, 10, 0)));
        assert_eq!(s.state_at(rome(2027, 12, 7, 10, 0)), ScheduleState::Holiday);
    }

    #[test]
    fn bands_split_the_open_day() {
        let mut s = office();
        s.add_band("morning", range("00:00-13:00")).unwrap();
        s.add_band("afternoon", range("13:00-24:00")).unwrap();
        assert!(s.add_band("late", range("18:00-20:00")).is_err());
        assert_eq!(
            s.band_at(rome(2026, 5, 14, 9, 0)).as_deref(),
            Some("morning")
        );
        assert_eq!(
            s.band_at(rome(2026, 5, 14, 15, 0)).as_deref(),
            Some("afternoon")
        );
        assert_eq!(s.band_at(rome(2026, 5, 14, 20, 0)), None);
    }

    #[test]
    fn working_time_across_a_weekend_and_a_holiday() {
        let s = office();
        // Friday 24 April 2026 17:00 -> Monday 27 April 10:00: Sat 25 April is Liberation Day
        // (a holiday, so no Saturday hours) and Sunday is closed.
        let a = rome(2026, 4, 24, 17, 0);
        let b = rome(2026, 4, 27, 10, 0);
        assert_eq!(s.working_time_between(a, b), TimeDelta::hours(4));
        assert_eq!(s.add_working_time(a, TimeDelta::hours(4)), Some(b));
        // A week later Saturday 2 May is a normal Saturday with 5 hours.
        let a = rome(2026, 5, 1, 17, 0); // 1 May is itself a holiday
        let b = rome(2026, 5, 4, 10, 0);
        assert_eq!(s.working_time_between(a, b), TimeDelta::hours(7));
        assert_eq!(
            s.add_working_time(a, TimeDelta::hours(3)),
            Some(rome(2026, 5, 2, 11, 0))
        );
        // Starting inside hours counts from the start instant.
        let a = rome(2026, 5, 4, 18, 30);
        assert_eq!(
            s.add_working_time(a, TimeDelta::minutes(45)),
            Some(rome(2026, 5, 5, 8, 15))
        );
        assert_eq!(
            s.working_time_between(b, a),
            TimeDelta::minutes(8 * 60 + 30)
        );
        assert_eq!(s.working_time_between(a, b), TimeDelta::zero());
    }

    #[test]
    fn never_open_schedule_has_no_next_opening() {
        let s = Schedule::new(Rome);
        assert_eq!(s.next_opening(utc(2026, 1, 1, 0, 0)), None);
        assert_eq!(
            s.add_working_time(utc(2026, 1, 1, 0, 0), TimeDelta::hours(1)),
            None
        );
    }
}
