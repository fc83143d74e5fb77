//! Human durations in config files: Go-style (`90s`, `5m`, `1h30m`, `500ms`) plus `d` for days,
//! because retention windows are naturally written in days.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration written as `<number><unit>` segments: `ms`, `s`, `m`, `h`, `d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text == "0" {
            return Ok(Self(Duration::ZERO));
        }
        if text.is_empty() {
            return Err("empty duration (write e.g. 30s, 5m, 2h, 7d)".into());
        }
        let mut total = Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!("duration {text:?}: expected a number at {rest:?}"));
            }
            let number: f64 = rest[..digits]
                .parse()
                .map_err(|_| format!("duration {text:?}: bad number {:?}", &rest[..digits]))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            let seconds_per_unit = match unit {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                "" => {
                    return Err(format!(
                        "duration {text:?}: missing unit (ms, s, m, h or d)"
                    ));
                }
                other => {
                    return Err(format!(
                        "duration {text:?}: unknown unit {other:?} (use ms, s, m, h or d)"
                    ));
                }
            };
            total += Duration::try_from_secs_f64(number * seconds_per_unit)
                .map_err(|_| format!("duration {text:?} is out of range"))?;
            rest = &rest[unit_len..];
        }
        Ok(Self(total))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis == 0 {
            return f.write_str("0s");
        }
        if !millis.is_multiple_of(1000) {
            return write!(f, "{millis}ms");
        }
        let mut secs = self.0.as_secs();
        for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60)] {
            if secs >= size {
                write!(f, "{}{unit}", secs / size)?;
                secs %= size;
            }
        }
        if secs > 0 {
            write!(f, "{secs}s")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_and_days() {
        let cases = [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("2d", 172_800_000),
            ("1.5h", 5_400_000),
            ("0", 0),
        ];
        for (text, millis) in cases {
            let parsed: HumanDuration = text.parse().unwrap();
            assert_eq!(parsed.0.as_millis(), millis, "{text}");
        }
    }

    #[test]
    fn rejects_unknown_units_and_garbage() {
        for text in ["", "5", "5w", "abc", "m5", "-1s"] {
            assert!(
                text.parse::<HumanDuration>().is_err(),
                "{text} should be rejected"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["30s", "1h30m", "500ms", "2d", "1d2h3m4s"] {
            let parsed: HumanDuration = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
            assert_eq!(parsed.to_string().parse::<HumanDuration>().unwrap(), parsed);
        }
    }
}
