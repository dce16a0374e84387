//! Built-in profiles, loading a user's file, and validation.

use std::path::Path;

use crate::profile::{IntraNodeKind, Profile};

/// The largest profile file read; a real one is a few KiB.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The built-in profiles: name and JSON text (hardware/profiles/*.json, compiled in).
const BUILTIN: &[(&str, &str)] = &[
    ("h100-sxm-8", include_str!("../profiles/h100-sxm-8.json")),
    ("h200-sxm-8", include_str!("../profiles/h200-sxm-8.json")),
    ("a100-sxm-8", include_str!("../profiles/a100-sxm-8.json")),
    ("h800-sxm-8", include_str!("../profiles/h800-sxm-8.json")),
    ("l20-pcie-8", include_str!("../profiles/l20-pcie-8.json")),
    (
        "h100-sxm-8x2-ndr",
        include_str!("../profiles/h100-sxm-8x2-ndr.json"),
    ),
    (
        "a40-pcie-8x4-ib100",
        include_str!("../profiles/a40-pcie-8x4-ib100.json"),
    ),
];

/// Why a profile could not be had. `origin` is the file's path, or `built-in profile NAME`.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The name is neither a built-in profile nor an existing file.
    #[error(
        "unknown hardware profile `{name}`: not a built-in profile nor a file; the built-in profiles are: {known}"
    )]
    Unknown {
        /// What was asked for.
        name: String,
        /// The built-in names, comma-separated.
        known: String,
    },
    /// The file could not be read.
    #[error("{origin}: cannot read the hardware profile: {reason}")]
    Read {
        /// The file.
        origin: String,
        /// The I/O error or the size limit.
        reason: String,
    },
    /// Not JSON of the profile's shape (syntax, unknown field, missing field, wrong type).
    #[error("{origin}: not a valid hardware profile: {reason}")]
    Parse {
        /// The file.
        origin: String,
        /// serde's message, with line and column.
        reason: String,
    },
    /// Well-formed, but a value is meaningless.
    #[error("{origin}: field `{field}`: {reason}")]
    Invalid {
        /// The file.
        origin: String,
        /// The JSON path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Profile {
    /// The names of the built-in profiles, in listing order.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(n, _)| *n)
    }

    /// A built-in profile by name.
    pub fn builtin(name: &str) -> Result<Profile, ProfileError> {
        let (n, text) = BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| unknown(name))?;
        let origin = format!("built-in profile {n}");
        let p = Self::from_json_str(text, &origin)?;
        if p.name != *n {
            return Err(ProfileError::Invalid {
                origin,
                field: "name".into(),
                reason: format!("is `{}`, but the profile is registered as `{n}`", p.name),
            });
        }
        Ok(p)
    }

    /// Every built-in profile.
    pub fn builtins() -> Result<Vec<Profile>, ProfileError> {
        Self::builtin_names().map(Self::builtin).collect()
    }

    /// A built-in profile if `name_or_path` names one, otherwise the file at that path.
    pub fn resolve(name_or_path: &str) -> Result<Profile, ProfileError> {
        if Self::builtin_names().any(|n| n == name_or_path) {
            return Self::builtin(name_or_path);
        }
        let path = Path::new(name_or_path);
        if path.exists() {
            Self::from_json_file(path)
        } else {
            Err(unknown(name_or_path))
        }
    }

    /// Loads and validates a user's profile file.
    pub fn from_json_file(path: &Path) -> Result<Profile, ProfileError> {
        let origin = path.display().to_string();
        let read_err = |reason: String| ProfileError::Read {
            origin: origin.clone(),
            reason,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| read_err(e.to_string()))?
            .len();
        if len > MAX_FILE_BYTES {
            return Err(read_err(format!(
                "the file is {len} bytes; a profile is at most {MAX_FILE_BYTES}"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
        Self::from_json_str(&text, &origin)
    }

    /// Parses and validates profile JSON; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        let p: Profile = serde_json::from_str(text).map_err(|e| ProfileError::Parse {
            origin: origin.to_string(),
            reason: e.to_string(),
        })?;
        p.validate(origin)?;
        Ok(p)
    }

    /// The profile as pretty JSON, the form of hardware/profiles/*.json (ends in a newline).
    pub fn to_json(&self) -> String {
        // Serialising plain structs of numbers, strings and enums cannot fail.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Checks every value: positive finite numbers, non-empty sources, counts ≥ 1, a total
    /// device count that fits, and links that match the node count and fabric.
    pub fn validate(&self, origin: &str) -> Result<(), ProfileError> {
        let bad = |field: &str, reason: String| ProfileError::Invalid {
            origin: origin.to_string(),
            field: field.to_string(),
            reason,
        };
        if self.name.trim().is_empty() || self.name.chars().any(char::is_whitespace) {
            return Err(bad(
                "name",
                "must be non-empty and contain no spaces".into(),
            ));
        }
        if self.device.gpu.trim().is_empty() {
            return Err(bad("device.gpu", "must be non-empty".into()));
        }
        if self.nodes == 0 {
            return Err(bad("nodes", "must be at least 1, got 0".into()));
        }
        if self.devices_per_node == 0 {
            return Err(bad("devices_per_node", "must be at least 1, got 0".into()));
        }
        if self.total_devices().is_none() {
            return Err(bad(
                "devices_per_node",
                format!(
                    "nodes × devices_per_node = {} × {} overflows a 32-bit device count",
                    self.nodes, self.devices_per_node
                ),
            ));
        }
        match (self.nodes, &self.inter_node) {
            (1, Some(_)) => {
                return Err(bad(
                    "inter_node",
                    "is given but nodes is 1; remove it or raise nodes".into(),
                ));
            }
            (n, None) if n > 1 => {
                return Err(bad("inter_node", format!("is required: nodes is {n}")));
            }
            _ => {}
        }
        if let (IntraNodeKind::Pcie, Some(s)) =
            (self.intra_node.kind, &self.intra_node.nvlink_sharp)
            && s.value
        {
            return Err(bad(
                "intra_node.nvlink_sharp",
                "is yes, but the intra-node link is PCIe (NVLink SHARP needs NVSwitch)".into(),
            ));
        }
        for c in self.constants() {
            if let Some(reason) = c.problem {
                return Err(bad(&c.field, reason));
            }
        }
        self.validate_comm_sms().map_err(|(f, r)| bad(f, r))
    }

    /// The SMs a communication kernel takes: NVLS SMs no more than the GPU has, and every
    /// share at most [`MAX_COMM_SM_FRACTION`]. The cost model slows compute beside a
    /// collective by `1 / (1 − share)`, so a share of 1 would mean compute never runs.
    fn validate_comm_sms(&self) -> Result<(), (&'static str, String)> {
        let cap = MAX_COMM_SM_FRACTION;
        let shares = [
            (
                "intra_node.comm_sm_fraction",
                self.intra_node.comm_sm_fraction.as_ref(),
            ),
            (
                "inter_node.comm_sm_fraction",
                self.inter_node
                    .as_ref()
                    .and_then(|i| i.comm_sm_fraction.as_ref()),
            ),
        ];
        for (field, share) in shares {
            if let Some(s) = share
                && s.value.0 > cap
            {
                return Err((
                    field,
                    format!(
                        "is {}, more than {cap}: a communication kernel does not take over half the SMs (published budgets are at most 24 of 132, NeMo userbuffers presets)",
                        s.value.0
                    ),
                ));
            }
        }
        if let Some(nvls) = &self.intra_node.nvls_sms {
            let Some(sms) = &self.device.sm_count else {
                return Err((
                    "intra_node.nvls_sms",
                    "is given but device.sm_count is not, so its share cannot be checked".into(),
                ));
            };
            let (n, total) = (nvls.value.0, sms.value.0);
            if n > total {
                return Err((
                    "intra_node.nvls_sms",
                    format!("is {n}, more than device.sm_count ({total})"),
                ));
            }
            // Counts of SMs are far below 2^53: exact in f64.
            #[allow(clippy::cast_precision_loss)]
            let share = n as f64 / total as f64;
            if share > cap {
                return Err((
                    "intra_node.nvls_sms",
                    format!(
                        "is {n} of {total} SMs, a share over {cap}: a communication kernel does not take over half the SMs"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The largest share of a GPU's SMs a profile may give a communication kernel. Published
/// budgets are far below it — Calculon's 0.15 for NVLink, NeMo's userbuffers presets at most
/// 24 of 132 SMs (0.18), TokenWeave's 2–8 SMs (cost-model.md §1, §2.7, §4.2) — and at 0.5 the cost
/// model already slows overlapped compute 2×, beyond the +40% largest measured slowdown
/// (arXiv 2507.03114, cost-model.md §2.7). A share near 1 would make compute beside a
/// collective stall almost completely.
pub const MAX_COMM_SM_FRACTION: f64 = 0.5;

fn unknown(name: &str) -> ProfileError {
    ProfileError::Unknown {
        name: name.to_string(),
        known: Profile::builtin_names().collect::<Vec<_>>().join(", "),
    }
}
