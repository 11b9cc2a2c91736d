//! Value converters shared by the `cluster`, `group`, `iscsi` and `targets` sections: each takes the
//! raw [`Scalar`] and a field path relative to a prefix, and words its error as `FILE: PATH: problem`.

use super::raw::Scalar;
use super::{ConfigError, Source, format_duration, units};
use std::fmt::Display;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

/// Field paths under one prefix (`cluster`, `targets.IQN`, ...).
pub(crate) struct Fields<'a> {
    pub src: &'a Source<'a>,
    pub prefix: String,
}

impl<'a> Fields<'a> {
    pub fn new(src: &'a Source<'a>, prefix: impl Into<String>) -> Fields<'a> {
        Fields {
            src,
            prefix: prefix.into(),
        }
    }

    /// The same file, one level deeper: `prefix.suffix`.
    pub fn nested(&self, suffix: &str) -> Fields<'a> {
        Fields::new(self.src, self.path(suffix))
    }

    pub fn path(&self, suffix: &str) -> String {
        if suffix.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}.{suffix}", self.prefix)
        }
    }

    pub fn invalid(&self, suffix: &str, problem: impl Display) -> ConfigError {
        self.src.invalid(self.path(suffix), problem)
    }

    pub fn duration(
        &self,
        suffix: &str,
        value: Option<&Scalar>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(s) => {
                units::parse_duration(&s.text, &s.shown()).map_err(|e| self.invalid(suffix, e))
            }
        }
    }

    /// A duration that must be positive (a zero timer would spin or fire at once).
    pub fn positive_duration(
        &self,
        suffix: &str,
        value: Option<&Scalar>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(suffix, value, default)?;
        if d.is_zero() {
            let shown = value
                .map(Scalar::shown)
                .unwrap_or_else(|| format_duration(d));
            return Err(self.invalid(suffix, format_args!("{shown} must be greater than zero")));
        }
        Ok(d)
    }

    /// A yes/no setting. Accepts `on/off`, `yes/no` and `true/false` in any case, because ha.cf
    /// writes `on`, ietd.conf writes `Yes` and YAML writes `true`.
    pub fn flag(
        &self,
        suffix: &str,
        value: Option<&Scalar>,
        default: bool,
    ) -> Result<bool, ConfigError> {
        let Some(s) = value else { return Ok(default) };
        match s.text.to_ascii_lowercase().as_str() {
            "on" | "yes" | "true" => Ok(true),
            "off" | "no" | "false" => Ok(false),
            _ => Err(self.invalid(
                suffix,
                format_args!(
                    "{} is not a yes/no value (expected on/off, yes/no or true/false)",
                    s.shown()
                ),
            )),
        }
    }

    /// A whole number in `range`.
    pub fn number<T>(
        &self,
        suffix: &str,
        value: &Scalar,
        range: RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: TryFrom<u64> + PartialOrd + Display + Copy,
    {
        let out_of_range = || {
            self.invalid(
                suffix,
                format_args!(
                    "{} is out of range {}..={}",
                    value.text,
                    range.start(),
                    range.end()
                ),
            )
        };
        let text = value.text.trim();
        if value.quoted || text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            if text.starts_with('-') && !value.quoted {
                return Err(out_of_range());
            }
            return Err(self.invalid(
                suffix,
                format_args!("{} is not a whole number", value.shown()),
            ));
        }
        let n: u64 = text.parse().map_err(|_| out_of_range())?;
        match T::try_from(n) {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(out_of_range()),
        }
    }

    pub fn number_or<T>(
        &self,
        suffix: &str,
        value: Option<&Scalar>,
        default: T,
        range: RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: TryFrom<u64> + PartialOrd + Display + Copy,
    {
        match value {
            None => Ok(default),
            Some(s) => self.number(suffix, s, range),
        }
    }

    /// An IP address (no host names: failover must not depend on DNS).
    pub fn ip(&self, suffix: &str, value: &Scalar) -> Result<IpAddr, ConfigError> {
        value.text.trim().parse().map_err(|_| {
            self.invalid(
                suffix,
                format_args!(
                    "{} is not an IP address (expected like 10.10.1.250)",
                    value.shown()
                ),
            )
        })
    }

    /// Free text (a command, an alias): not empty, no control characters (they would corrupt logs
    /// and, in commands, hide what is run).
    pub fn text(&self, suffix: &str, value: &Scalar) -> Result<String, ConfigError> {
        if value.text.trim().is_empty() {
            return Err(self.invalid(suffix, "empty value; remove the line to leave it unset"));
        }
        if value.text.chars().any(char::is_control) {
            return Err(self.invalid(suffix, "control characters are not allowed"));
        }
        Ok(value.text.clone())
    }

    /// A path, relative to the config file's directory.
    pub fn path_value(&self, suffix: &str, value: &Scalar) -> Result<PathBuf, ConfigError> {
        if value.text.trim().is_empty() {
            return Err(self.invalid(suffix, "empty path"));
        }
        Ok(self.src.resolve(&value.text))
    }

    /// A network interface name as the kernel accepts it (at most 15 bytes, no `/`, no blanks).
    pub fn interface(&self, suffix: &str, value: &Scalar) -> Result<String, ConfigError> {
        let name = &value.text;
        let ok = !name.is_empty()
            && name.len() <= 15
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if !ok {
            return Err(self.invalid(
                suffix,
                format_args!(
                    "{} is not a network interface name (1 to 15 characters, no `/`, `:` or blanks)",
                    value.shown()
                ),
            ));
        }
        Ok(name.clone())
    }
}

/// Parses `ADDRESS/PREFIX` (a bare address means the full-length prefix when `bare_ok`).
/// Returns `Err(problem)` for the caller to place.
pub(crate) fn parse_cidr(text: &str, shown: &str, bare_ok: bool) -> Result<(IpAddr, u8), String> {
    let text = text.trim();
    let bad = || format!("{shown} is not ADDRESS/PREFIX (expected like 192.168.0.0/16)");
    let (addr_text, prefix_text) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None if bare_ok => (text, None),
        None => return Err(bad()),
    };
    let addr: IpAddr = addr_text.parse().map_err(|_| bad())?;
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix_text {
        None => max,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{shown}: the prefix length must be 0..={max}")),
            }
        }
        Some(_) => return Err(bad()),
    };
    Ok((addr, prefix))
}

/// `addr` with the bits past `prefix` cleared.
pub(crate) fn network_of(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}
