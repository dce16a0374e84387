//! Compiles every setting of every scenario under every strategy and keeps each
//! prediction, or the error that stopped it (never a number in its place).

use std::collections::BTreeMap;
use std::path::Path;

use weft_hardware::Profile;
use weft_passes::model_change::AllowOptions;
use weft_passes::strategy::Strategy;

use super::scenario::{MODEL_DIR, Scenario, Setting};
use crate::compile::{CompileError, CompileRequest, compile};

/// What compiling one setting under one strategy gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The plan's predicted step time, µs.
    Predicted(f64),
    /// Why there is no plan: the compiler's error, as it reads (without the model path).
    Failed(String),
}

impl Outcome {
    pub fn predicted_us(&self) -> Option<f64> {
        match self {
            Outcome::Predicted(us) => Some(*us),
            Outcome::Failed(_) => None,
        }
    }
}

/// One setting's outcomes, by strategy.
#[derive(Clone, Debug)]
pub struct SettingResult {
    pub outcomes: BTreeMap<Strategy, Outcome>,
    /// What the compiler had to say beside a plan (`Compiled::notes`: a layout request
    /// dropped, a rule of a fixed strategy that did not fire, …), by strategy; the doc
    /// lists them so nothing a prediction rests on is lost.
    pub notes: BTreeMap<Strategy, Vec<String>>,
    /// For a scenario with `system_allow`: its system strategy on the model changed by
    /// those model-changing rewrites, and the compiler's notes on that plan.
    pub allowed: Option<(Outcome, Vec<String>)>,
}

impl SettingResult {
    pub fn outcome(&self, s: Strategy) -> &Outcome {
        // Every strategy of `Strategy::ALL` is measured (`measure_setting`).
        &self.outcomes[&s]
    }
}

/// Compiles `setting` (models below `root`) under every strategy of [`Strategy::ALL`].
pub fn measure_setting(root: &Path, setting: &Setting) -> SettingResult {
    let model = root.join(MODEL_DIR).join(&setting.model);
    let profile = Profile::builtin(&setting.profile);
    let mut result = SettingResult {
        outcomes: BTreeMap::new(),
        notes: BTreeMap::new(),
        allowed: None,
    };
    let none = AllowOptions::default();
    for strategy in Strategy::ALL {
        let (outcome, notes) = match &profile {
            Err(e) => (Outcome::Failed(e.to_string()), Vec::new()),
            Ok(profile) => run(&model, setting, profile, strategy, &none),
        };
        result.outcomes.insert(strategy, outcome);
        if !notes.is_empty() {
            result.notes.insert(strategy, notes);
        }
    }
    result
}

/// [`measure_setting`], and with `allow`, its system strategy on the model those
/// model-changing rewrites change ([`SettingResult::allowed`]).
pub fn measure_setting_allowing(
    root: &Path,
    setting: &Setting,
    allow: Option<(&AllowOptions, Strategy)>,
) -> SettingResult {
    let mut result = measure_setting(root, setting);
    if let Some((allow, strategy)) = allow {
        let model = root.join(MODEL_DIR).join(&setting.model);
        result.allowed = Some(match Profile::builtin(&setting.profile) {
            Err(e) => (Outcome::Failed(e.to_string()), Vec::new()),
            Ok(profile) => run(&model, setting, &profile, strategy, allow),
        });
    }
    result
}

fn run(
    model: &Path,
    setting: &Setting,
    profile: &Profile,
    strategy: Strategy,
    allow: &AllowOptions,
) -> (Outcome, Vec<String>) {
    let request = CompileRequest {
        model: model.to_path_buf(),
        dims: setting.dims.clone(),
        mesh: Some(setting.mesh.clone()),
        sp_norms: setting.sp_norms,
        profile: profile.clone(),
        max_memory: None,
        strategy,
        plan_path: None,
        allow: allow.clone(),
    };
    // The model's path (absolute, machine-dependent) stays out of the doc: the scenario
    // already names the model.
    let path = model.display().to_string();
    let local = |text: String| text.replace(&path, &setting.model);
    match compile(&request) {
        Ok(compiled) => (
            Outcome::Predicted(compiled.plan.prediction.predicted_us),
            compiled.notes.into_iter().map(local).collect(),
        ),
        Err(CompileError::Stage { reason, .. }) => (Outcome::Failed(local(reason)), Vec::new()),
        Err(e) => (Outcome::Failed(local(e.to_string())), Vec::new()),
    }
}

/// Every setting of `scenario`, in order.
pub fn measure_scenario(root: &Path, scenario: &Scenario) -> Vec<SettingResult> {
    scenario
        .settings
        .iter()
        .map(|s| {
            let allow = scenario
                .system_allow
                .as_ref()
                .map(|a| (a, scenario.system_strategy));
            measure_setting_allowing(root, s, allow)
        })
        .collect()
}
