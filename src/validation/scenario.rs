//! Scenario files (`examples/scenarios/*.json`): one paper's reported speedups, the setup
//! they were measured in, and the Weft setting that stands for each.
//!
//! Every number a scenario carries is the paper's (or its artifact's), with its source;
//! where the setup cannot be reproduced the scenario says so (`comparable: false` and
//! why) instead of guessing a shape or a figure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use weft_hardware::Profile;
use weft_ir::Mesh;
use weft_passes::model_change::{
    AllowOptions, DccaOptions, LadderLayers, LadderOptions, parse_ratio,
};
use weft_passes::strategy::Strategy;

/// A scenario file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    system: String,
    title: String,
    citation: String,
    paper_setup: String,
    paper_baseline: String,
    weft_setup: String,
    baseline_strategy: String,
    system_strategy: String,
    model: String,
    mesh: String,
    profile: String,
    #[serde(default)]
    sp_norms: bool,
    comparable: bool,
    comparability: String,
    settings: Vec<SettingFile>,
    #[serde(default)]
    expected_order: Option<ExpectedOrderFile>,
    /// The paper's times (`paper_times_ms`) measure the same work as Weft's setting, so
    /// the doc also sets them beside Weft's predicted times.
    #[serde(default)]
    times_same_scope: bool,
    /// Model-changing rewrites the system column is compiled with (`--allow`): the
    /// system strategy runs on the changed model, the baseline on the source model.
    #[serde(default)]
    system_allow: Option<AllowFile>,
    miss_note: String,
}

/// `"system_allow"`: `{"ladder": {"layers": "all"}}`, `{"dcca": {"ratio": "1/4"}}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowFile {
    #[serde(default)]
    ladder: Option<LadderFile>,
    #[serde(default)]
    dcca: Option<DccaFile>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LadderFile {
    /// As `--ladder-layers`: `all` (the default) or `A..B`; `auto` is a sweep, refused.
    #[serde(default)]
    layers: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DccaFile {
    /// As `--dcca-ratio` (default the paper's 1/4).
    #[serde(default)]
    ratio: Option<String>,
    /// As `--dcca-seed`.
    #[serde(default)]
    seed: Option<u64>,
}

/// The `--allow` options a scenario's `system_allow` asks for.
fn allow_options(f: AllowFile) -> Result<AllowOptions, String> {
    let mut out = AllowOptions::default();
    if let Some(l) = f.ladder {
        let layers = match l.layers {
            None => LadderLayers::All,
            Some(text) => text
                .parse::<LadderLayers>()
                .map_err(|e| format!("`system_allow.ladder.layers`: {e}"))?,
        };
        if layers == LadderLayers::Auto {
            return Err(
                "`system_allow.ladder.layers`: `auto` is a sweep of plans, not one \
                        system column; give `all` or `A..B`"
                    .to_owned(),
            );
        }
        out.ladder = Some(LadderOptions { layers });
    }
    if let Some(d) = f.dcca {
        let mut options = DccaOptions::default();
        if let Some(r) = d.ratio {
            options.ratio =
                parse_ratio(&r).map_err(|e| format!("`system_allow.dcca.ratio`: {e}"))?;
        }
        if let Some(seed) = d.seed {
            options.seed = seed;
        }
        out.dcca = Some(options);
    }
    if out.is_empty() {
        return Err("`system_allow` names no rewrite (`ladder` or `dcca`)".to_owned());
    }
    Ok(out)
}

/// The `weft compile` flags `allow` stands for, as the doc prints them.
pub fn allow_flags(allow: &AllowOptions) -> String {
    let mut names = Vec::new();
    let mut options = Vec::new();
    if let Some(l) = &allow.ladder {
        names.push("ladder");
        options.push(format!("--ladder-layers {}", l.layers));
    }
    if let Some(d) = &allow.dcca {
        names.push("dcca");
        options.push(format!("--dcca-ratio {}/{}", d.ratio.0, d.ratio.1));
        options.push(format!("--dcca-seed {}", d.seed));
    }
    let mut s = format!("--allow {}", names.join(","));
    for o in options {
        s.push(' ');
        s.push_str(&o);
    }
    s
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingFile {
    label: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    mesh: Option<String>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    sp_norms: Option<bool>,
    #[serde(default)]
    dims: BTreeMap<String, u64>,
    #[serde(default)]
    paper_speedup: Option<f64>,
    /// `[baseline, system]` times in ms: the speedup is their ratio.
    #[serde(default)]
    paper_times_ms: Option<[f64; 2]>,
    /// `[low, high]`: the paper states a range the setting's speedup lies in.
    #[serde(default)]
    paper_range: Option<[f64; 2]>,
    #[serde(default)]
    paper_source: Option<String>,
    #[serde(default)]
    comparable: Option<bool>,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedOrderFile {
    largest_first: Vec<String>,
    source: String,
}

/// What the paper reports for one setting.
#[derive(Clone, Debug, PartialEq)]
pub enum PaperFigure {
    /// No figure for this setting (the scenario shows Weft's prediction only).
    None,
    /// A speedup the paper states (or that its artifact's data gives).
    Speedup(f64),
    /// Two times the paper states (ms), baseline first; the speedup is their ratio.
    Times { baseline: f64, system: f64 },
    /// A range the setting's speedup lies in.
    Range { low: f64, high: f64 },
}

impl PaperFigure {
    /// The speedup to compare with: the stated one, or the ratio of the stated times.
    /// `None` for a range or no figure.
    pub fn speedup(&self) -> Option<f64> {
        match *self {
            PaperFigure::None | PaperFigure::Range { .. } => None,
            PaperFigure::Speedup(s) => Some(s),
            PaperFigure::Times { baseline, system } => Some(baseline / system),
        }
    }
}

/// One Weft run standing for one of the paper's settings.
#[derive(Clone, Debug)]
pub struct Setting {
    pub label: String,
    /// File name under `examples/scenarios/models/`.
    pub model: String,
    pub mesh: Mesh,
    pub profile: String,
    pub sp_norms: bool,
    pub dims: BTreeMap<String, u64>,
    pub paper: PaperFigure,
    pub paper_source: Option<String>,
    pub comparable: bool,
    pub note: Option<String>,
}

/// The order the paper ranks its settings in, largest speedup first, when it states one
/// without a figure per setting.
#[derive(Clone, Debug)]
pub struct ExpectedOrder {
    pub largest_first: Vec<String>,
    pub source: String,
}

/// One paper's scenario, checked.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The file's stem (`comet` for `comet.json`).
    pub name: String,
    pub system: String,
    pub title: String,
    pub citation: String,
    pub paper_setup: String,
    pub paper_baseline: String,
    pub weft_setup: String,
    /// The strategy standing for the paper's baseline: speedups are over it.
    pub baseline: Strategy,
    /// The strategy standing for the paper's system: its error is the one that counts.
    pub system_strategy: Strategy,
    pub comparable: bool,
    pub comparability: String,
    pub settings: Vec<Setting>,
    pub expected_order: Option<ExpectedOrder>,
    /// The paper's times measure the same work as Weft's settings (absolute times are
    /// compared too).
    pub times_same_scope: bool,
    /// Model-changing rewrites the system strategy's column is compiled with; `None`:
    /// the system runs on the source model like every other column.
    pub system_allow: Option<AllowOptions>,
    pub miss_note: String,
}

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{}: cannot read it: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: {reason}", .path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// The folder of scenario files below the repository root.
pub const SCENARIO_DIR: &str = "examples/scenarios";
/// The folder of scenario models below the repository root.
pub const MODEL_DIR: &str = "examples/scenarios/models";

/// Reads every `*.json` scenario in `root/examples/scenarios`, sorted by file name.
pub fn load_scenarios(root: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    let dir = root.join(SCENARIO_DIR);
    let read_dir = std::fs::read_dir(&dir).map_err(|source| ScenarioError::Read {
        path: dir.clone(),
        source,
    })?;
    let mut paths = Vec::new();
    for entry in read_dir {
        let entry = entry.map_err(|source| ScenarioError::Read {
            path: dir.clone(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .iter()
        .map(|p| load_scenario(root, p))
        .collect::<Result<Vec<_>, _>>()
}

/// Reads and checks one scenario file.
pub fn load_scenario(root: &Path, path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: ScenarioFile =
        serde_json::from_str(&text).map_err(|source| ScenarioError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
    let invalid = |reason: String| ScenarioError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    check(root, &name, file).map_err(invalid)
}

fn strategy(field: &str, value: &str) -> Result<Strategy, String> {
    value
        .parse::<Strategy>()
        .map_err(|e| format!("`{field}`: {e}"))
}

fn mesh(label: &str, value: &str) -> Result<Mesh, String> {
    value
        .parse::<Mesh>()
        .map_err(|e| format!("setting `{label}`: mesh `{value}`: {e}"))
}

fn check(root: &Path, name: &str, f: ScenarioFile) -> Result<Scenario, String> {
    let baseline = strategy("baseline_strategy", &f.baseline_strategy)?;
    let system_strategy = strategy("system_strategy", &f.system_strategy)?;
    if f.settings.is_empty() {
        return Err("it has no settings".to_owned());
    }
    let mut settings = Vec::with_capacity(f.settings.len());
    for s in f.settings {
        if settings.iter().any(|t: &Setting| t.label == s.label) {
            return Err(format!("two settings are labelled `{}`", s.label));
        }
        let model = s.model.unwrap_or_else(|| f.model.clone());
        if !root.join(MODEL_DIR).join(&model).is_file() {
            return Err(format!(
                "setting `{}`: no model `{MODEL_DIR}/{model}` (`cargo run --example validate` writes them)",
                s.label
            ));
        }
        let profile = s.profile.unwrap_or_else(|| f.profile.clone());
        Profile::builtin(&profile).map_err(|e| {
            format!(
                "setting `{}`: `{profile}` is no built-in profile: {e}",
                s.label
            )
        })?;
        let paper = match (s.paper_speedup, s.paper_times_ms, s.paper_range) {
            (None, None, None) => PaperFigure::None,
            (Some(x), None, None) => PaperFigure::Speedup(x),
            (None, Some([baseline, system]), None) => PaperFigure::Times { baseline, system },
            (None, None, Some([low, high])) => PaperFigure::Range { low, high },
            _ => {
                return Err(format!(
                    "setting `{}`: give at most one of `paper_speedup`, `paper_times_ms`, `paper_range`",
                    s.label
                ));
            }
        };
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let ok = match paper {
            PaperFigure::None => true,
            PaperFigure::Speedup(x) => positive(x),
            PaperFigure::Times { baseline, system } => positive(baseline) && positive(system),
            PaperFigure::Range { low, high } => positive(low) && positive(high) && low <= high,
        };
        if !ok {
            return Err(format!(
                "setting `{}`: the paper's figure must be positive and finite (a range low ≤ high)",
                s.label
            ));
        }
        if paper != PaperFigure::None && s.paper_source.is_none() {
            return Err(format!(
                "setting `{}`: a paper figure needs its `paper_source`",
                s.label
            ));
        }
        let mesh_text = s.mesh.unwrap_or_else(|| f.mesh.clone());
        settings.push(Setting {
            mesh: mesh(&s.label, &mesh_text)?,
            label: s.label,
            model,
            profile,
            sp_norms: s.sp_norms.unwrap_or(f.sp_norms),
            dims: s.dims,
            paper,
            paper_source: s.paper_source,
            comparable: s.comparable.unwrap_or(f.comparable),
            note: s.note,
        });
    }
    let expected_order = match f.expected_order {
        None => None,
        Some(o) => {
            for label in &o.largest_first {
                if !settings.iter().any(|s| &s.label == label) {
                    return Err(format!("`expected_order` names no setting `{label}`"));
                }
            }
            if o.largest_first.len() < 2 {
                return Err("`expected_order` needs two settings or more".to_owned());
            }
            Some(ExpectedOrder {
                largest_first: o.largest_first,
                source: o.source,
            })
        }
    };
    Ok(Scenario {
        name: name.to_owned(),
        system: f.system,
        title: f.title,
        citation: f.citation,
        paper_setup: f.paper_setup,
        paper_baseline: f.paper_baseline,
        weft_setup: f.weft_setup,
        baseline,
        system_strategy,
        comparable: f.comparable,
        comparability: f.comparability,
        settings,
        expected_order,
        times_same_scope: f.times_same_scope,
        system_allow: f.system_allow.map(allow_options).transpose()?,
        miss_note: f.miss_note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository-like folder with one model file and `scenario` as `s.json`.
    fn load(scenario: &str) -> Result<Scenario, ScenarioError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(MODEL_DIR)).unwrap();
        std::fs::write(dir.path().join(MODEL_DIR).join("m.json"), "{}").unwrap();
        std::fs::create_dir_all(dir.path().join(SCENARIO_DIR)).unwrap();
        let path = dir.path().join(SCENARIO_DIR).join("s.json");
        std::fs::write(&path, scenario).unwrap();
        load_scenario(dir.path(), &path)
    }

    fn scenario(baseline: &str, settings: &str) -> String {
        format!(
            r#"{{"system": "S", "title": "t", "citation": "c", "paper_setup": "p",
            "paper_baseline": "b", "weft_setup": "w", "baseline_strategy": "{baseline}",
            "system_strategy": "flux", "model": "m.json", "mesh": "tp=8",
            "profile": "h100-sxm-8", "comparable": true, "comparability": "x",
            "settings": [{settings}], "miss_note": ""}}"#
        )
    }

    fn error(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn a_valid_scenario_loads_with_its_defaults_and_figures() {
        let s = load(&scenario(
            "none",
            r#"{"label": "a", "dims": {"seq": 8}, "paper_times_ms": [3.0, 2.0], "paper_source": "src"},
               {"label": "b", "profile": "l20-pcie-8", "comparable": false}"#,
        ))
        .unwrap();
        assert_eq!(s.name, "s");
        assert_eq!(s.baseline, Strategy::None);
        assert_eq!(s.system_strategy, Strategy::Flux);
        assert_eq!(s.settings[0].paper.speedup(), Some(1.5));
        assert_eq!(s.settings[0].profile, "h100-sxm-8");
        assert_eq!(s.settings[0].mesh.to_string(), "tp=8");
        assert!(s.settings[0].comparable);
        assert_eq!(s.settings[1].profile, "l20-pcie-8");
        assert!(!s.settings[1].comparable);
        assert_eq!(s.settings[1].paper, PaperFigure::None);
    }

    #[test]
    fn system_allow_asks_for_ladder_or_dcca_and_refuses_what_it_cannot_use() {
        let with = |allow: &str| {
            scenario("none", r#"{"label": "a"}"#).replacen(
                r#""miss_note""#,
                &format!(r#""system_allow": {allow}, "miss_note""#),
                1,
            )
        };
        let s = load(&with(r#"{"ladder": {"layers": "all"}}"#)).unwrap();
        let a = s.system_allow.unwrap();
        assert_eq!(a.ladder.unwrap().layers, LadderLayers::All);
        assert!(a.dcca.is_none());
        let s = load(&with(r#"{"ladder": {"layers": "40..79"}}"#)).unwrap();
        let a = s.system_allow.unwrap();
        assert_eq!(allow_flags(&a), "--allow ladder --ladder-layers 40..79");
        let s = load(&with(r#"{"dcca": {"ratio": "1/4"}}"#)).unwrap();
        let a = s.system_allow.unwrap();
        assert_eq!(a.dcca.as_ref().unwrap().ratio, (1, 4));
        assert_eq!(
            allow_flags(&a),
            "--allow dcca --dcca-ratio 1/4 --dcca-seed 0"
        );
        assert!(
            load(&scenario("none", r#"{"label": "a"}"#))
                .unwrap()
                .system_allow
                .is_none()
        );
        let e = error(&with(r#"{"ladder": {"layers": "auto"}}"#));
        assert!(e.contains("`auto` is a sweep"), "{e}");
        let e = error(&with(r#"{"dcca": {"ratio": "2"}}"#));
        assert!(e.contains("system_allow.dcca.ratio"), "{e}");
        let e = error(&with("{}"));
        assert!(e.contains("names no rewrite"), "{e}");
        let e = error(&with(r#"{"ladder": {"layer": "all"}}"#));
        assert!(e.contains("unknown field `layer`"), "{e}");
    }

    #[test]
    fn bad_scenarios_are_refused_with_the_reason() {
        let e = error(&scenario("fastest", r#"{"label": "a"}"#));
        assert!(
            e.contains("`baseline_strategy`: unknown strategy `fastest`"),
            "{e}"
        );
        let e = error(&scenario("none", ""));
        assert!(e.contains("it has no settings"), "{e}");
        let e = error(&scenario("none", r#"{"label": "a"}, {"label": "a"}"#));
        assert!(e.contains("two settings are labelled `a`"), "{e}");
        let e = error(&scenario(
            "none",
            r#"{"label": "a", "paper_speedup": 1.2, "paper_range": [1.0, 2.0], "paper_source": "s"}"#,
        ));
        assert!(e.contains("give at most one of"), "{e}");
        let e = error(&scenario("none", r#"{"label": "a", "paper_speedup": 1.2}"#));
        assert!(e.contains("needs its `paper_source`"), "{e}");
        let e = error(&scenario(
            "none",
            r#"{"label": "a", "paper_range": [2.0, 1.0], "paper_source": "s"}"#,
        ));
        assert!(e.contains("low ≤ high"), "{e}");
        let e = error(&scenario(
            "none",
            r#"{"label": "a", "model": "other.json"}"#,
        ));
        assert!(
            e.contains("no model `examples/scenarios/models/other.json`"),
            "{e}"
        );
        let e = error(&scenario("none", r#"{"label": "a", "profile": "tpu-v9"}"#));
        assert!(e.contains("`tpu-v9` is no built-in profile"), "{e}");
        let e = error(&scenario("none", r#"{"label": "a", "mesh": "tp=zero"}"#));
        assert!(e.contains("setting `a`: mesh `tp=zero`"), "{e}");
        let e = error(&scenario("none", r#"{"label": "a", "typo": 1}"#));
        assert!(e.contains("unknown field `typo`"), "{e}");
    }
}
