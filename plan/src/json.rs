//! The plan's JSON form: what `weft compile -o` writes and `weft inspect`/`weft run`
//! read. Field order follows the types; floats print in Rust's shortest round-trip form,
//! so reading a written plan gives back exactly the same plan.

use crate::{PLAN_FORMAT, PLAN_VERSION, Plan, PlanError};

impl Plan {
    /// The plan as pretty-printed JSON.
    pub fn to_json_string(&self) -> String {
        // Every field is a plain struct, string, number or JSON value: serialisation
        // cannot fail (no maps with non-string keys, no foreign serialisers).
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| unreachable!("a plan always serialises to JSON: {e}"))
    }

    /// Reads a plan, refusing another `format` tag or `version` before anything else
    /// (with those named), and reporting malformed JSON with its line and column.
    pub fn from_json_str(text: &str) -> Result<Plan, PlanError> {
        let json_err = |e: serde_json::Error| PlanError::Json {
            message: e.to_string(),
            line: e.line(),
            column: e.column(),
        };
        // Look at the tag and the version first, so a plan of another version is told
        // as such, not as whatever field it added or dropped.
        let value: serde_json::Value = serde_json::from_str(text).map_err(json_err)?;
        let format = value.get("format").and_then(|f| f.as_str());
        if format != Some(PLAN_FORMAT) {
            return Err(PlanError::Format {
                found: format.map_or_else(|| "(missing)".to_owned(), str::to_owned),
                expected: PLAN_FORMAT.to_owned(),
            });
        }
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(PLAN_VERSION) => {}
            _ => {
                return Err(PlanError::Version {
                    found: value
                        .get("version")
                        .map_or_else(|| "(missing)".to_owned(), |v| v.to_string()),
                    expected: PLAN_VERSION,
                });
            }
        }
        // Parse the text again (not the value), so errors keep their line and column.
        let plan: Plan = serde_json::from_str(text).map_err(json_err)?;
        let found = crate::program_digest(&plan.program);
        if found != plan.program_sha256 {
            return Err(PlanError::ProgramEdited {
                found,
                recorded: plan.program_sha256,
            });
        }
        Ok(plan)
    }
}
