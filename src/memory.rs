//! `weft run`'s memory check: before anything is allocated, the run's estimated peak
//! ([`weft_backend_cpu::memory::estimate`]) is compared with the memory the machine has
//! free (`MemAvailable` in `/proc/meminfo`) and with `--max-memory`; a run that does not
//! fit is refused with both figures instead of aborting halfway through.

use std::path::Path;

use weft_backend_cpu::memory::{RunEstimate, estimate};
use weft_ir::Graph;

/// Why a run was refused before it started.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum MemoryError {
    #[error(
        "`{model}` needs at least {} to run ({}), but {limit_text}; \
         reduce the dims (`--dim`) or run on a machine with more memory",
        bytes(*need),
        breakdown(estimate)
    )]
    TooLarge {
        model: String,
        need: u128,
        estimate: Box<RunEstimate>,
        limit_text: String,
    },
    #[error("`{model}` cannot be run: {reason}")]
    Unsized { model: String, reason: String },
}

/// The limit a run must fit in, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    /// `--max-memory` or `/proc/meminfo MemAvailable`.
    pub source: &'static str,
}

/// The tighter of `--max-memory` and the memory available now; `None` when neither is
/// known (no flag, and no `/proc/meminfo`: the run then relies on fallible allocation).
pub fn limit(max_memory: Option<u64>) -> Option<MemoryLimit> {
    let flag = max_memory.map(|bytes| MemoryLimit {
        bytes,
        source: "--max-memory",
    });
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_available(&text))
        .map(|bytes| MemoryLimit {
            bytes,
            source: "MemAvailable in /proc/meminfo",
        });
    match (flag, available) {
        (Some(f), Some(a)) => Some(if a.bytes < f.bytes { a } else { f }),
        (f, a) => f.or(a),
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// Estimates `graph`'s run and refuses it when it exceeds `limit`. Returns the estimate.
pub fn check(
    model: &Path,
    graph: &Graph,
    limit: Option<&MemoryLimit>,
) -> Result<RunEstimate, MemoryError> {
    let model = model.display().to_string();
    let est = estimate(graph).map_err(|e| MemoryError::Unsized {
        model: model.clone(),
        reason: e.to_string(),
    })?;
    let need = est.total();
    tracing::info!(
        need = %bytes(need),
        limit = %limit.map_or_else(|| "unknown".to_owned(), |l| bytes(l.bytes.into())),
        "memory estimate: {}",
        breakdown(&est)
    );
    if let Some(l) = limit
        && need > u128::from(l.bytes)
    {
        return Err(MemoryError::TooLarge {
            model,
            need,
            estimate: Box::new(est),
            limit_text: format!("the limit is {} ({})", bytes(l.bytes.into()), l.source),
        });
    }
    Ok(est)
}

fn breakdown(e: &RunEstimate) -> String {
    let p = &e.per_rank;
    let peak = p
        .peak_node
        .as_deref()
        .map_or(String::new(), |n| format!(" at `{n}`"));
    format!(
        "per rank: weights {}, inputs {}, peak activations {}{peak}; {} rank(s); whole inputs {} and outputs {}",
        bytes(p.weights),
        bytes(p.inputs),
        bytes(p.peak_activations),
        e.ranks,
        bytes(e.logical_inputs),
        bytes(e.logical_outputs)
    )
}

/// `1234567` → `1.18 MiB (1234567 bytes)`.
fn bytes(n: u128) -> String {
    if n < 1024 {
        format!("{n} B")
    } else {
        format!("{} ({n} bytes)", human_bytes(n))
    }
}

/// `1234567` → `1.18 MiB`: binary units, two decimals.
pub fn human_bytes(n: u128) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut x = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if x < 1024.0 {
            break;
        }
        x /= 1024.0;
        unit = u;
    }
    if unit == "B" {
        format!("{n} B")
    } else {
        format!("{x:.2} {unit}")
    }
}

/// Parses a size: a whole or decimal number with an optional unit, `B`, `kB`/`MB`/`GB`/`TB`
/// (powers of 1000) or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), case-insensitive:
/// `8GiB`, `512MB`, `1.5 GiB`, `1000000`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    let out_of_range = || format!("`{text}` is not a size between 1 byte and 16 EiB - 1 byte");
    // A whole number is multiplied exactly (through f64 it would be rounded past 2^53, and
    // `18446744073709551615` refused as if it were 16 EiB); a decimal one is rounded to a
    // whole byte.
    if let Ok(whole) = number.parse::<u64>() {
        return match whole.checked_mul(scale) {
            Some(bytes) if bytes >= 1 => Ok(bytes),
            _ => Err(out_of_range()),
        };
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 8GiB or 512MB"))?;
    let bytes = (value * scale as f64).round();
    // `u64::MAX as f64` is 2^64, one past the largest u64.
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(out_of_range());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("512MB"), Ok(512_000_000));
        assert_eq!(parse_size("1.5 gib"), Ok(3 << 29));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("8 GiBs").unwrap_err().contains("unknown unit"));
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("1e30").is_err());
        // Review of issue 10: whole numbers were parsed through f64, so they were rounded
        // past 2^53 and the largest u64 was refused as out of range.
        assert_eq!(parse_size("9007199254740993"), Ok(9_007_199_254_740_993));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert!(parse_size("18446744073709551616").is_err());
        assert!(
            parse_size("16777216TiB")
                .unwrap_err()
                .contains("between 1 byte")
        );
        assert_eq!(parse_size("0.5"), Ok(1));
        assert!(parse_size("0.4").is_err());
    }

    #[test]
    fn mem_available_is_read_in_bytes() {
        let text = "MemTotal:       16318480 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(mem_available(text), Some(8_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 29), "1.50 GiB (1610612736 bytes)");
    }
}
