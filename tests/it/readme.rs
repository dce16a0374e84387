//! The README shows what `weft compile` prints for its first command; this keeps that
//! text equal to what the CLI prints today (`WEFT_BLESS=1` rewrites the README's block).

use crate::cli::{stdout, weft};
use crate::repo;

const FENCE_START: &str = "```text\nplan of examples/llama3-70b.json";

#[test]
fn the_readme_start_shows_what_compile_prints() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("llama3-70b.plan.json");
    // `weft` runs from the repository root, so the model path prints as the README has it.
    let out = weft(&[
        "compile",
        "examples/llama3-70b.json",
        "--mesh",
        "tp=8",
        "--hw",
        "h100-sxm-8",
        "-o",
        plan.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = stdout(&out).replace(&plan.display().to_string(), "llama3-70b.plan.json");
    let readme_path = repo("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let start = readme
        .find(FENCE_START)
        .expect("the README's Start section shows the compile output")
        + "```text\n".len();
    let end = start + readme[start..].find("```").unwrap();
    if std::env::var_os("WEFT_BLESS").is_some() {
        let updated = format!("{}{}{}", &readme[..start], printed, &readme[end..]);
        std::fs::write(&readme_path, updated).unwrap();
        return;
    }
    assert_eq!(
        &readme[start..end],
        printed,
        "README.md's compile output is stale: rerun with WEFT_BLESS=1"
    );
    // The plan it wrote is the one inspect summarises the same way.
    let inspected = stdout(&weft(&["inspect", plan.to_str().unwrap()]));
    assert!(
        printed.starts_with(&inspected),
        "{inspected}\n---\n{printed}"
    );
}
