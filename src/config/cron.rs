//! Cron expressions for `cleanup.schedule`: the five classic fields (minute, hour, day of
//! month, month, day of week), evaluated in UTC so a schedule means the same on every replica
//! whatever its local zone. Cleanups are wanted at quiet hours ("every night at 03:00"), which
//! an interval counted from the last run cannot express.
//!
//! Grammar per field: `*`, `N`, `N-M`, any of them with `/STEP`, comma-separated lists; months
//! and weekdays also by name (`jan`, `mon`); weekday `7` is Sunday like `0`. Shorthands:
//! `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`). As in
//! Vixie cron, when both day of month and day of week are restricted, a day matching either
//! fires.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed expression: one bit per allowed value of each field.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Both day fields restricted: either may match.
    days_or: bool,
}

/// How far ahead a next run is looked for: a leap day on a given weekday recurs within 28
/// years; no sane schedule waits longer.
const SEARCH_DAYS: i64 = 28 * 366;

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value of the first name (months count from 1, weekdays from 0).
    first_name: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        first_name: 0,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        first_name: 0,
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        first_name: 0,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        first_name: 1,
    },
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &WEEKDAYS,
        first_name: 0,
    },
];

impl Field {
    fn value(&self, text: &str) -> Result<u32, String> {
        let lower = text.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + self.first_name);
        }
        let value: u32 = text
            .parse()
            .map_err(|_| format!("{}: {text:?} is not a number", self.name))?;
        if value < self.min || value > self.max {
            return Err(format!(
                "{}: {value} is outside {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(value)
    }

    /// The set of values `text` allows, as bits, and whether it is unrestricted (starts with
    /// `*`, as Vixie cron decides for the day fields).
    fn parse(&self, text: &str) -> Result<(u64, bool), String> {
        let mut bits = 0u64;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => {
                    let step: u32 = step
                        .parse()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| format!("{}: bad step in {item:?}", self.name))?;
                    (range, Some(step))
                }
                None => (item, None),
            };
            let (low, high) = if range == "*" {
                (self.min, self.max)
            } else if let Some((low, high)) = range.split_once('-') {
                (self.value(low)?, self.value(high)?)
            } else {
                let low = self.value(range)?;
                // `N/STEP` runs from N to the end of the field.
                (low, if step.is_some() { self.max } else { low })
            };
            if low > high {
                return Err(format!("{}: range {range:?} runs backwards", self.name));
            }
            for value in (low..=high).step_by(step.unwrap_or(1) as usize) {
                bits |= 1 << value;
            }
        }
        Ok((bits, text.starts_with('*')))
    }
}

impl FromStr for Cron {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => {
                return Err(format!(
                    "cron {text:?}: unknown shorthand (use @hourly, @daily, @weekly, @monthly or @yearly)"
                ));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "cron {text:?}: expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        }
        let mut parsed = [(0u64, false); 5];
        for (i, (field, spec)) in fields.iter().zip(&FIELDS).enumerate() {
            parsed[i] = spec
                .parse(field)
                .map_err(|e| format!("cron {text:?}: {e}"))?;
        }
        let weekdays = parsed[4].0;
        // 7 is Sunday too.
        let weekdays = (weekdays | (weekdays >> 7)) & 0x7f;
        let cron = Self {
            text: text.trim().to_string(),
            minutes: parsed[0].0,
            hours: parsed[1].0 as u32,
            days: parsed[2].0 as u32,
            months: parsed[3].0 as u16,
            weekdays: weekdays as u8,
            days_or: !parsed[2].1 && !parsed[4].1,
        };
        if cron.next_after(0).is_none() {
            return Err(format!(
                "cron {text:?} never fires (a day that does not exist in those months?)"
            ));
        }
        Ok(cron)
    }
}

impl Cron {
    /// The first minute strictly after `after` (ms since the epoch, UTC) that the expression
    /// allows, in ms; `None` if there is none within the search horizon.
    pub fn next_after(&self, after: u64) -> Option<u64> {
        let minute_ms = 60_000;
        let first = (after / minute_ms + 1) as i64;
        let first_day = first.div_euclid(1440);
        for day in first_day..first_day + SEARCH_DAYS {
            if !self.day_matches(day) {
                continue;
            }
            let from = if day == first_day {
                first.rem_euclid(1440)
            } else {
                0
            };
            for m in from..1440 {
                let (hour, minute) = (m / 60, m % 60);
                if self.hours & (1 << hour) != 0 && self.minutes & (1 << minute) != 0 {
                    return Some(((day * 1440 + m) as u64) * minute_ms);
                }
            }
        }
        None
    }

    fn day_matches(&self, day: i64) -> bool {
        let (_, month, day_of_month) = crate::calendar::civil_from_days(day);
        if self.months & (1 << month) == 0 {
            return false;
        }
        // 1970-01-01 was a Thursday.
        let weekday = (day + 4).rem_euclid(7) as u32;
        let by_date = self.days & (1 << day_of_month) != 0;
        let by_weekday = self.weekdays & (1 << weekday) != 0;
        if self.days_or {
            by_date || by_weekday
        } else {
            by_date && by_weekday
        }
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

impl<'de> Deserialize<'de> for Cron {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Cron {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ms since the epoch of a UTC date and time.
    fn at(year: i64, month: i64, day: i64, hour: u64, minute: u64) -> u64 {
        let days = crate::calendar::days_from_civil(year, month, day);
        (days as u64 * 1440 + hour * 60 + minute) * 60_000
    }

    fn next(cron: &str, after: u64) -> u64 {
        cron.parse::<Cron>().unwrap().next_after(after).unwrap()
    }

    #[test]
    fn next_runs_follow_the_fields() {
        let now = at(2026, 11, 29, 1, 27); // a Sunday
        assert_eq!(next("0 3 * * *", now), at(2026, 11, 29, 3, 0));
        assert_eq!(
            next("0 3 * * *", at(2026, 11, 29, 3, 0)),
            at(2026, 11, 30, 3, 0)
        );
        assert_eq!(next("*/15 * * * *", now), at(2026, 11, 29, 1, 30));
        assert_eq!(next("30 2 * * mon-fri", now), at(2026, 11, 30, 2, 30));
        assert_eq!(next("0 0 1 * *", now), at(2026, 12, 1, 0, 0));
        assert_eq!(next("0 0 1 jan *", now), at(2027, 1, 1, 0, 0));
        assert_eq!(next("@weekly", now), at(2026, 12, 6, 0, 0));
        assert_eq!(
            next("0 4 * * 7", now),
            at(2026, 11, 29, 4, 0),
            "7 is Sunday"
        );
        assert_eq!(next("0 12 29 2 *", now), at(2028, 2, 29, 12, 0));
        assert_eq!(next("5,10 1 * * *", now), at(2026, 11, 30, 1, 5));
        assert_eq!(next("0 8-18/4 * * *", now), at(2026, 11, 29, 8, 0));
        assert_eq!(next("0 20/2 * * *", now), at(2026, 11, 29, 20, 0));
        // Both day fields restricted: either matches (the 1st, or any Friday).
        assert_eq!(next("0 0 1 * fri", now), at(2026, 12, 1, 0, 0));
        assert_eq!(next("0 0 15 * fri", now), at(2026, 12, 4, 0, 0));
        // Only one restricted: the other (`*`) does not widen it.
        assert_eq!(next("0 0 * * fri", now), at(2026, 12, 4, 0, 0));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("0 3 * *", "expected 5 fields"),
            ("60 * * * *", "minute: 60 is outside 0-59"),
            ("0 24 * * *", "hour: 24"),
            ("0 0 0 * *", "day of month: 0"),
            ("0 0 * 13 *", "month: 13"),
            ("0 0 * * 8", "day of week: 8"),
            ("0 0 * * funday", "not a number"),
            ("*/0 * * * *", "bad step"),
            ("0 5-1 * * *", "runs backwards"),
            ("0 0 30 feb *", "never fires"),
            ("@fortnightly", "unknown shorthand"),
        ] {
            let error = text.parse::<Cron>().unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn displays_as_written() {
        let cron: Cron = " 0 3 * * * ".parse().unwrap();
        assert_eq!(cron.to_string(), "0 3 * * *");
    }
}
