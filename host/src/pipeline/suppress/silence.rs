//! A silence: matchers, and the event time over which it holds back the
//! findings they all match. Checked whole when made, and again when read
//! back from the store.

use super::Key;
use super::matcher::{Matcher, MatcherSpec};
use crate::store::SilenceRow;

/// The latest time a silence may name (the end of year 9999, as RFC 3339
/// can write it): bounds the arithmetic on times.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;
/// Matchers per silence at most.
const MAX_MATCHERS: usize = 32;
const MAX_CREATOR: usize = 256;
const MAX_COMMENT: usize = 4096;

/// Where a silence stands at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SilenceState {
    /// Holding findings back at that time.
    Active,
    /// Not yet, or (recurring) between two of its windows.
    Pending,
    /// Its window is over (a recurring silence never expires).
    Expired,
    Deleted,
}

/// What makes a silence, its times resolved (ms since the epoch).
#[derive(Debug, Clone)]
pub struct NewSilence {
    pub matchers: Vec<MatcherSpec>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub repeat_every_secs: Option<u64>,
    pub creator: String,
    pub comment: String,
}

/// Why a silence cannot be made: the field (a JSON pointer into the
/// request body) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone)]
pub struct Silence {
    pub id: String,
    pub created_at: i64,
    pub starts_at: i64,
    pub ends_at: i64,
    /// Recurring: the window [starts_at, ends_at) again every period.
    pub repeat_every_ms: Option<i64>,
    pub creator: String,
    pub comment: String,
    pub matchers: Vec<Matcher>,
    /// Deleted at this time: from then on it holds nothing back (before
    /// it, in event time, it did: a backtest over that time sees it).
    pub deleted_at: Option<i64>,
}

impl Silence {
    /// A silence `id` made at `created_at` from `new`, every field checked.
    pub fn new(id: String, created_at: i64, new: NewSilence) -> Result<Silence, Invalid> {
        let repeat_every_ms = check_times(&new)?;
        check_people(&new)?;
        if new.matchers.is_empty() {
            return Err(invalid("/matchers", "at least one matcher is needed"));
        }
        if new.matchers.len() > MAX_MATCHERS {
            return Err(invalid("/matchers", format!("at most {MAX_MATCHERS}")));
        }
        let matchers = (new.matchers.into_iter().enumerate())
            .map(|(i, spec)| {
                Matcher::new(spec).map_err(|e| invalid(format!("/matchers/{i}/value"), e))
            })
            .collect::<Result<_, _>>()?;
        Ok(Silence {
            id,
            created_at,
            starts_at: new.starts_at,
            ends_at: new.ends_at,
            repeat_every_ms,
            creator: new.creator,
            comment: new.comment,
            matchers,
            deleted_at: None,
        })
    }

    /// Whether it holds findings back at event time `t`: within
    /// [starts_at, ends_at), or for a recurring one within the window
    /// repeated every period from starts_at; never from its deletion on.
    pub fn is_active(&self, t: i64) -> bool {
        if t < self.starts_at || self.deleted_at.is_some_and(|d| t >= d) {
            return false;
        }
        match self.repeat_every_ms {
            None => t < self.ends_at,
            // Checked: 0 < length <= period, and both times bounded.
            Some(period) => (t - self.starts_at) % period < self.ends_at - self.starts_at,
        }
    }

    pub fn state(&self, t: i64) -> SilenceState {
        if self.deleted_at.is_some() {
            SilenceState::Deleted
        } else if self.is_active(t) {
            SilenceState::Active
        } else if self.repeat_every_ms.is_none() && t >= self.ends_at {
            SilenceState::Expired
        } else {
            SilenceState::Pending
        }
    }

    /// Every matcher matches the finding.
    pub fn matches(&self, key: &Key) -> bool {
        self.matchers.iter().all(|m| m.matches(key))
    }

    pub fn to_row(&self) -> SilenceRow {
        let specs: Vec<&MatcherSpec> = self.matchers.iter().map(|m| &m.spec).collect();
        SilenceRow {
            id: self.id.clone(),
            created_at: self.created_at,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            repeat_every_secs: self.repeat_every_ms.map(|p| p / 1000),
            creator: self.creator.clone(),
            comment: self.comment.clone(),
            // Plain data: serializes.
            matchers: serde_json::to_string(&specs).unwrap_or_else(|_| "[]".into()),
            deleted_at: self.deleted_at,
        }
    }

    /// A stored silence, checked as when it was made (the database may
    /// have been edited by hand).
    pub fn from_row(row: SilenceRow) -> Result<Silence, String> {
        let why = |e: String| format!("silence {}: {e}", row.id);
        let matchers: Vec<MatcherSpec> =
            serde_json::from_str(&row.matchers).map_err(|e| why(format!("matchers: {e}")))?;
        let repeat = match row.repeat_every_secs {
            None => None,
            Some(p) => Some(u64::try_from(p).map_err(|_| why("repeat_every_secs < 0".into()))?),
        };
        let new = NewSilence {
            matchers,
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            repeat_every_secs: repeat,
            creator: row.creator,
            comment: row.comment,
        };
        let mut s = Silence::new(row.id.clone(), row.created_at, new)
            .map_err(|e| why(format!("{}: {}", e.field, e.message)))?;
        s.deleted_at = row.deleted_at;
        Ok(s)
    }
}

/// The window is not empty and within range; a period covers it. The
/// period in milliseconds.
fn check_times(new: &NewSilence) -> Result<Option<i64>, Invalid> {
    for (field, t) in [("/starts_at", new.starts_at), ("/ends_at", new.ends_at)] {
        if !(0..=MAX_TIME_MS).contains(&t) {
            return Err(invalid(field, "must be between 1970 and the end of 9999"));
        }
    }
    if new.ends_at <= new.starts_at {
        return Err(invalid(
            "/ends_at",
            "must be after starts_at (the duration must be positive)",
        ));
    }
    let Some(secs) = new.repeat_every_secs else {
        return Ok(None);
    };
    let period = i64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .filter(|p| *p <= MAX_TIME_MS)
        .ok_or_else(|| invalid("/repeat_every", "too long"))?;
    let length = new.ends_at - new.starts_at;
    if period < length {
        return Err(invalid(
            "/repeat_every",
            format!(
                "{secs} s is shorter than the silence ({} s): its windows would overlap",
                length as f64 / 1000.0
            ),
        ));
    }
    Ok(Some(period))
}

/// Who made it is said; creator and comment are of bounded length.
fn check_people(new: &NewSilence) -> Result<(), Invalid> {
    if new.creator.trim().is_empty() {
        return Err(invalid("/creator", "must say who made the silence"));
    }
    if new.creator.len() > MAX_CREATOR {
        return Err(invalid("/creator", format!("at most {MAX_CREATOR} bytes")));
    }
    if new.comment.len() > MAX_COMMENT {
        return Err(invalid("/comment", format!("at most {MAX_COMMENT} bytes")));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pipeline::suppress::matcher::{Field, Op};

    /// 2024-01-01T00:00:00Z.
    pub const DAY0: i64 = 1_704_067_200_000;
    const H: i64 = 3_600_000;

    pub fn on_rule(rule: &str) -> Vec<MatcherSpec> {
        vec![MatcherSpec {
            name: Field::Rule,
            op: Op::Equal,
            value: rule.into(),
        }]
    }

    pub fn new(starts_at: i64, ends_at: i64, repeat_every_secs: Option<u64>) -> NewSilence {
        NewSilence {
            matchers: on_rule("high_latency"),
            starts_at,
            ends_at,
            repeat_every_secs,
            creator: "ops".into(),
            comment: String::new(),
        }
    }

    fn silence(starts_at: i64, ends_at: i64, repeat: Option<u64>) -> Silence {
        Silence::new("s1".into(), 0, new(starts_at, ends_at, repeat)).unwrap()
    }

    /// [starts_at, ends_at): the start holds, the end does not.
    #[test]
    fn a_one_off_silence_holds_from_its_start_until_before_its_end() {
        let s = silence(DAY0 + H, DAY0 + 2 * H, None);
        let at = |t| (s.is_active(t), s.state(t));
        assert_eq!(at(DAY0 + H - 1), (false, SilenceState::Pending));
        assert_eq!(at(DAY0 + H), (true, SilenceState::Active));
        assert_eq!(at(DAY0 + 2 * H - 1), (true, SilenceState::Active));
        assert_eq!(at(DAY0 + 2 * H), (false, SilenceState::Expired));
    }

    /// Every night 02:00–03:00 from 2024-01-01: at 02:00 and 02:59:59.999
    /// of any later day, not at 03:00 nor 01:59:59.999; never before the
    /// first night.
    #[test]
    fn a_recurring_silence_holds_in_every_window_of_its_period() {
        let s = silence(DAY0 + 2 * H, DAY0 + 3 * H, Some(86_400));
        let day = 24 * H;
        for d in [0, 1, 30, 365] {
            let night = DAY0 + d * day;
            assert!(s.is_active(night + 2 * H), "day {d} 02:00");
            assert!(s.is_active(night + 3 * H - 1), "day {d} 02:59:59.999");
            assert!(!s.is_active(night + 3 * H), "day {d} 03:00");
            assert!(!s.is_active(night + 2 * H - 1), "day {d} 01:59:59.999");
            assert_eq!(
                s.state(night + 12 * H),
                SilenceState::Pending,
                "never expires"
            );
        }
        assert!(
            !s.is_active(DAY0 + 2 * H - day),
            "the night before the first"
        );
        // A period equal to the length: every moment from the start.
        let always = silence(DAY0, DAY0 + H, Some(3_600));
        assert!(always.is_active(DAY0 + 1_000 * H + 17));
    }

    #[test]
    fn a_deleted_silence_holds_only_before_its_deletion() {
        let mut s = silence(DAY0, DAY0 + 10 * H, Some(86_400));
        s.deleted_at = Some(DAY0 + 5 * H);
        assert!(s.is_active(DAY0 + 5 * H - 1));
        assert!(!s.is_active(DAY0 + 5 * H));
        assert!(!s.is_active(DAY0 + 24 * H), "nor any later window");
        assert_eq!(s.state(DAY0), SilenceState::Deleted);
    }

    #[test]
    fn validation_names_the_field() {
        let err = |n: NewSilence| Silence::new("x".into(), 0, n).unwrap_err();
        let e = err(new(DAY0, DAY0, None));
        assert_eq!(e.field, "/ends_at");
        let e = err(new(DAY0, DAY0 + 2 * H, Some(3_600)));
        assert_eq!(e.field, "/repeat_every");
        assert!(
            e.message
                .contains("3600 s is shorter than the silence (7200 s)"),
            "{}",
            e.message
        );
        assert_eq!(err(new(-1, DAY0, None)).field, "/starts_at");
        assert_eq!(err(new(DAY0, MAX_TIME_MS + 1, None)).field, "/ends_at");
        assert_eq!(
            err(new(DAY0, DAY0 + 1, Some(u64::MAX))).field,
            "/repeat_every"
        );
        let mut n = new(DAY0, DAY0 + H, None);
        n.matchers.clear();
        assert_eq!(err(n).field, "/matchers");
        let mut n = new(DAY0, DAY0 + H, None);
        n.matchers.push(MatcherSpec {
            name: Field::Subject,
            op: Op::Regex,
            value: "api[".into(),
        });
        let e = err(n);
        assert_eq!(e.field, "/matchers/1/value");
        assert!(e.message.contains("not a valid regex"), "{}", e.message);
        let mut n = new(DAY0, DAY0 + H, None);
        n.creator = "  ".into();
        assert_eq!(err(n).field, "/creator");
    }

    #[test]
    fn a_silence_survives_its_row() {
        let mut s = silence(DAY0 + 2 * H, DAY0 + 3 * H, Some(86_400));
        s.deleted_at = Some(DAY0 + 50 * H);
        let row = s.to_row();
        assert_eq!(row.repeat_every_secs, Some(86_400));
        assert_eq!(
            row.matchers,
            r#"[{"name":"rule","op":"=","value":"high_latency"}]"#
        );
        let back = Silence::from_row(row.clone()).unwrap();
        assert_eq!(back.to_row(), row);
        let broken = SilenceRow {
            matchers: "[{\"name\":\"rule\"}]".into(),
            ..row
        };
        let e = Silence::from_row(broken).unwrap_err();
        assert!(e.starts_with("silence s1: matchers:"), "{e}");
    }
}
