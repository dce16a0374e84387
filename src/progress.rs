//! Progress bars for `weft run` on a terminal: one bar per phase of the executor
//! (materialising weights, executing nodes), drawn on stderr only when stderr is a
//! terminal, so piped or redirected output carries no progress noise.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use weft_backend_cpu::{Phase, Progress};

/// A progress reporter drawing on stderr, or `None` when stderr is not a terminal.
pub fn terminal() -> Option<Progress> {
    std::io::stderr().is_terminal().then(bars)
}

/// A reporter that draws one bar per phase (hidden if the target is not a terminal).
fn bars() -> Progress {
    let current: Mutex<Option<(Phase, ProgressBar)>> = Mutex::new(None);
    Progress(Arc::new(move |phase, done, total| {
        let Ok(mut current) = current.lock() else {
            return;
        };
        if current.as_ref().is_none_or(|(p, _)| *p != phase) {
            if let Some((_, old)) = current.take() {
                old.finish_and_clear();
            }
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{msg:>22} [{bar:30}] {pos}/{len} ({elapsed})")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(phase.label());
            bar.enable_steady_tick(Duration::from_millis(200));
            *current = Some((phase, bar));
        }
        if let Some((_, bar)) = current.as_ref() {
            bar.set_position(done);
            if done >= total {
                bar.finish_and_clear();
            }
        }
    }))
}
