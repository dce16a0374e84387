//! What a plan records about where it came from, and how its program is stored: the
//! source model's content hash, the hardware profile's hash, and the chosen program as
//! Weft JSON whose external weight paths are rewritten to stay valid next to the plan.

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use weft_ir::{Graph, Init, Op};

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// SHA-256 of a file's bytes.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    Ok(sha256_hex(&std::fs::read(path)?))
}

/// Whether the file at `path` is a plan (a JSON object whose `format` is `weft-plan`)
/// rather than a model: read by content, so a plan named `.json` is still a plan.
pub fn is_plan_file(path: &Path) -> bool {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&head[..n]);
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    compact.starts_with(&format!("{{\"format\":\"{}\"", weft_plan::PLAN_FORMAT))
}

/// `graph` with every external weight path (relative to `model_path`'s folder) rewritten
/// relative to `plan_path`'s folder, so the plan's program finds the same files.
pub fn rebase_external_paths(
    graph: &Graph,
    model_path: &Path,
    plan_path: &Path,
) -> std::io::Result<Graph> {
    let model_dir = absolute_dir(model_path)?;
    let plan_dir = absolute_dir(plan_path)?;
    let mut out = graph.clone();
    let ids: Vec<_> = out.nodes().map(|(id, _)| id).collect();
    for id in ids {
        let node = out.node_mut(id);
        let (Op::Weight { init, .. } | Op::Constant { init, .. }) = &mut node.op else {
            continue;
        };
        let path = match init {
            Init::Npy { path } | Init::Safetensors { path, .. } | Init::Raw { path, .. } => path,
            Init::Normal { .. }
            | Init::Uniform { .. }
            | Init::Fill { .. }
            | Init::Range { .. }
            | Init::Inline(_) => continue,
        };
        let target = normalize(&model_dir.join(&*path));
        *path = relative_path(&plan_dir, &target)
            .to_string_lossy()
            .replace('\\', "/");
    }
    Ok(out)
}

/// The folder of `file` as an absolute, normalised path (the file need not exist).
fn absolute_dir(file: &Path) -> std::io::Result<PathBuf> {
    let abs = std::path::absolute(file)?;
    Ok(normalize(abs.parent().unwrap_or(Path::new("/"))))
}

/// `a/b/../c` → `a/c`, lexically.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The path from folder `from` to `to`, both absolute and normalised.
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let a: Vec<_> = from.components().collect();
    let b: Vec<_> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c.as_os_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_abc_is_the_published_digest() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn relative_paths_climb_and_descend() {
        assert_eq!(
            relative_path(Path::new("/a/b/plans"), Path::new("/a/b/models/w.npy")),
            PathBuf::from("../models/w.npy")
        );
        assert_eq!(
            relative_path(Path::new("/a"), Path::new("/a/w.npy")),
            PathBuf::from("w.npy")
        );
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
    }
}
