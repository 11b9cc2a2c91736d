//! Parsers for the unit-carrying values of ha.yaml: durations, resync rates, `HOST:PORT` addresses and
//! `meta-disk` forms.
//!
//! They return a [`UnitError`] that describes only the problem; the caller adds the file name and the
//! field path, so one parser serves every field that uses its syntax.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What is wrong with one value. The Display text is meant to follow `FILE: FIELD: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error(
        "{shown} is not a duration (expected like 500ms, 6s, 2m, or a whole number of seconds)"
    )]
    BadDuration { shown: String },
    #[error("{shown} is not a rate (expected like 250K, 100M, 1G, 0 or unlimited)")]
    BadRate { shown: String },
    #[error(
        "{shown} has no unit; write it with K, M or G (DRBD would read a bare number as KiB/s, so it is not guessed)"
    )]
    RateWithoutUnit { shown: String },
    #[error("{shown} is too large")]
    TooLarge { shown: String },
    #[error("{shown} is not HOST:PORT (expected like 10.10.2.251:7789)")]
    BadAddress { shown: String },
    #[error(
        "{shown} is not a meta-disk (expected `internal`, a device path, or PATH[INDEX] like /dev/vdb1[0])"
    )]
    BadMetaDisk { shown: String },
}

/// Parses `500ms`, `6s`, `2m`, `1h`, `7d` or a bare whole number of seconds (`6`). `shown` is how the value
/// appears in error messages (quoted if it was a YAML string).
pub fn parse_duration(text: &str, shown: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::BadDuration {
        shown: shown.to_string(),
    };
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(bad());
    }
    let value: u64 = number.parse().map_err(|_| UnitError::TooLarge {
        shown: shown.to_string(),
    })?;
    let millis_per_unit: u64 = match unit.trim_start() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let millis = value
        .checked_mul(millis_per_unit)
        .ok_or_else(|| UnitError::TooLarge {
            shown: shown.to_string(),
        })?;
    Ok(Duration::from_millis(millis))
}

/// A resync rate limit in bytes per second; `None` means no cap.
///
/// Kept as `Option` rather than a magic 0 so code that applies the cap cannot forget the "no cap" case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(pub Option<u64>);

impl Rate {
    pub const UNLIMITED: Rate = Rate(None);

    /// Bytes per second, or `None` for no cap.
    pub fn bytes_per_sec(self) -> Option<u64> {
        self.0
    }
}

impl fmt::Display for Rate {
    /// Shows the rate in the largest exact DRBD unit, so `Rate(Some(100 << 20))` prints `100M`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(bytes) = self.0 else {
            return f.write_str("unlimited");
        };
        for (suffix, size) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
            if bytes >= size && bytes % size == 0 {
                return write!(f, "{}{suffix}", bytes / size);
            }
        }
        write!(f, "{bytes}B")
    }
}

/// Parses a rate: a number with a `K`, `M` or `G` suffix (powers of 1024, as DRBD), or `0` /
/// `unlimited` for no cap. A bare non-zero number is refused because DRBD reads it as KiB/s while a
/// reader would assume bytes/s; forcing the suffix removes the ambiguity.
pub fn parse_rate(text: &str, shown: &str) -> Result<Rate, UnitError> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("unlimited") || text == "0" {
        return Ok(Rate::UNLIMITED);
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(UnitError::BadRate {
            shown: shown.to_string(),
        });
    }
    let multiplier: u64 = match unit {
        "" => {
            return Err(UnitError::RateWithoutUnit {
                shown: shown.to_string(),
            });
        }
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        _ => {
            return Err(UnitError::BadRate {
                shown: shown.to_string(),
            });
        }
    };
    let value: u64 = number.parse().map_err(|_| UnitError::TooLarge {
        shown: shown.to_string(),
    })?;
    let bytes = value
        .checked_mul(multiplier)
        .ok_or_else(|| UnitError::TooLarge {
            shown: shown.to_string(),
        })?;
    if bytes == 0 {
        return Ok(Rate::UNLIMITED);
    }
    Ok(Rate(Some(bytes)))
}

/// Parses `IP:PORT` (IPv6 as `[addr]:port`). Host names are refused on purpose: the replication
/// link must not depend on DNS being up while a node fails over.
pub fn parse_address(text: &str, shown: &str) -> Result<SocketAddr, UnitError> {
    let addr: SocketAddr = text.trim().parse().map_err(|_| UnitError::BadAddress {
        shown: shown.to_string(),
    })?;
    if addr.port() == 0 {
        return Err(UnitError::BadAddress {
            shown: shown.to_string(),
        });
    }
    Ok(addr)
}

/// Where a resource keeps its metadata on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaDisk {
    /// At the end of the data disk.
    Internal,
    /// On a separate device: the whole device when `index` is `None` (DRBD's flexible external
    /// metadata), or slot `index` of fixed-size slots (DRBD's indexed form `PATH[INDEX]`), which lets
    /// several resources share one metadata device.
    External { path: PathBuf, index: Option<u32> },
}

impl fmt::Display for MetaDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaDisk::Internal => f.write_str("internal"),
            MetaDisk::External { path, index: None } => write!(f, "{}", path.display()),
            MetaDisk::External {
                path,
                index: Some(i),
            } => write!(f, "{}[{i}]", path.display()),
        }
    }
}

/// Parses `internal`, `PATH` or `PATH[INDEX]`; relative paths are joined onto `base_dir`.
pub fn parse_meta_disk(text: &str, shown: &str, base_dir: &Path) -> Result<MetaDisk, UnitError> {
    let bad = || UnitError::BadMetaDisk {
        shown: shown.to_string(),
    };
    let text = text.trim();
    if text == "internal" {
        return Ok(MetaDisk::Internal);
    }
    let (path, index) = match text.strip_suffix(']') {
        Some(rest) => {
            let open = rest.rfind('[').ok_or_else(bad)?;
            let (path, bracketed) = rest.split_at(open);
            let digits = bracketed.strip_prefix('[').ok_or_else(bad)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let index: u32 = digits.parse().map_err(|_| UnitError::TooLarge {
                shown: shown.to_string(),
            })?;
            (path, Some(index))
        }
        None => (text, None),
    };
    if path.is_empty() || path.contains(['[', ']']) {
        return Err(bad());
    }
    Ok(MetaDisk::External {
        path: base_dir.join(path),
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(text: &str) -> Result<Duration, UnitError> {
        parse_duration(text, text)
    }

    fn rate(text: &str) -> Result<Rate, UnitError> {
        parse_rate(text, text)
    }

    #[test]
    fn durations_accept_every_documented_unit() {
        assert_eq!(dur("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(dur("6s"), Ok(Duration::from_secs(6)));
        assert_eq!(dur("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(dur("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(dur("120"), Ok(Duration::from_secs(120)));
        assert_eq!(dur("0"), Ok(Duration::ZERO));
        assert_eq!(dur(" 7 s "), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn durations_refuse_garbage_fractions_and_overflow() {
        for text in ["", "s", "6x", "1.5s", "-1", "6 seconds", "ms500"] {
            assert_eq!(
                dur(text),
                Err(UnitError::BadDuration {
                    shown: text.to_string()
                }),
                "{text}"
            );
        }
        assert!(matches!(
            dur("99999999999999999999s"),
            Err(UnitError::TooLarge { .. })
        ));
        assert!(matches!(
            dur("18446744073709551615h"),
            Err(UnitError::TooLarge { .. })
        ));
    }

    #[test]
    fn rates_use_powers_of_1024() {
        assert_eq!(rate("250K"), Ok(Rate(Some(250 * 1024))));
        assert_eq!(rate("100M"), Ok(Rate(Some(100 * 1024 * 1024))));
        assert_eq!(rate("1g"), Ok(Rate(Some(1 << 30))));
        assert_eq!(rate("0"), Ok(Rate::UNLIMITED));
        assert_eq!(rate("0M"), Ok(Rate::UNLIMITED));
        assert_eq!(rate("unlimited"), Ok(Rate::UNLIMITED));
    }

    #[test]
    fn rates_refuse_bare_numbers_and_unknown_units() {
        assert_eq!(
            rate("100"),
            Err(UnitError::RateWithoutUnit {
                shown: "100".into()
            })
        );
        assert_eq!(
            rate("100T"),
            Err(UnitError::BadRate {
                shown: "100T".into()
            })
        );
        assert_eq!(
            rate("fast"),
            Err(UnitError::BadRate {
                shown: "fast".into()
            })
        );
        assert!(matches!(
            rate("99999999999999G"),
            Err(UnitError::TooLarge { .. })
        ));
    }

    #[test]
    fn rate_display_round_trips() {
        for text in ["250K", "100M", "2G", "unlimited"] {
            let parsed = rate(text).unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(Rate(Some(1000)).to_string(), "1000B");
    }

    #[test]
    fn addresses_need_ip_and_nonzero_port() {
        assert_eq!(
            parse_address("10.10.2.251:7789", "x"),
            Ok("10.10.2.251:7789".parse().unwrap())
        );
        assert!(parse_address("[::1]:7788", "x").is_ok());
        for text in ["10.0.0.1", "node1:7788", "10.0.0.1:0", "10.0.0.1:70000", ""] {
            assert_eq!(
                parse_address(text, text),
                Err(UnitError::BadAddress { shown: text.into() }),
                "{text}"
            );
        }
    }

    #[test]
    fn meta_disk_forms() {
        let base = Path::new("/etc/ha");
        assert_eq!(
            parse_meta_disk("internal", "x", base),
            Ok(MetaDisk::Internal)
        );
        assert_eq!(
            parse_meta_disk("/dev/vdb1", "x", base),
            Ok(MetaDisk::External {
                path: PathBuf::from("/dev/vdb1"),
                index: None
            })
        );
        assert_eq!(
            parse_meta_disk("/dev/vdb1[1]", "x", base),
            Ok(MetaDisk::External {
                path: PathBuf::from("/dev/vdb1"),
                index: Some(1)
            })
        );
        assert_eq!(
            parse_meta_disk("meta.img[0]", "x", base),
            Ok(MetaDisk::External {
                path: PathBuf::from("/etc/ha/meta.img"),
                index: Some(0)
            })
        );
        for text in [
            "",
            "[1]",
            "/dev/x[]",
            "/dev/x[a]",
            "/dev/x[-1]",
            "/dev/x]",
            "/dev/x[1]]",
            "/d[1]/x",
        ] {
            assert_eq!(
                parse_meta_disk(text, text, base),
                Err(UnitError::BadMetaDisk { shown: text.into() }),
                "{text}"
            );
        }
        assert!(matches!(
            parse_meta_disk("/dev/x[99999999999]", "x", base),
            Err(UnitError::TooLarge { .. })
        ));
    }

    #[test]
    fn meta_disk_display_matches_config_spelling() {
        let base = Path::new("/");
        for text in ["internal", "/dev/vdb1", "/dev/vdb1[3]"] {
            let parsed = parse_meta_disk(text, text, base).unwrap();
            assert_eq!(parsed.to_string(), text);
        }
    }
}
