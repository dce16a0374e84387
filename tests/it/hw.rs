//! `weft hw list` and `weft hw show`: the built-in hardware profiles from the command line.

use weft::hardware::Profile;

use crate::cli::{assert_clean_failure, stderr, stdout, weft};

#[test]
fn hw_list_shows_every_builtin_one_line_each() {
    let o = weft(&["hw", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let names: Vec<_> = Profile::builtin_names().collect();
    assert_eq!(out.lines().count(), names.len(), "{out}");
    for (line, name) in out.lines().zip(&names) {
        let p = Profile::builtin(name).unwrap();
        assert!(line.starts_with(name), "{line}");
        assert!(line.contains(&p.device.gpu), "{line}");
        let devices = p.total_devices().unwrap().to_string();
        assert!(line.split_whitespace().any(|w| w == devices), "{line}");
    }
}

#[test]
fn hw_show_lists_every_constant_with_unit_source_and_estimate_mark() {
    let o = weft(&["hw", "show", "h100-sxm-8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let p = Profile::builtin("h100-sxm-8").unwrap();
    for c in p.constants() {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(c.field.as_str()))
            .unwrap_or_else(|| panic!("no line for {}: {out}", c.field));
        if let (Some(v), Some(conf)) = (&c.value, c.confidence) {
            assert!(line.contains(v.as_str()), "{line}");
            assert!(line.contains(&c.source), "{line}");
            let mark = if conf.is_estimate() {
                "[ESTIMATE]"
            } else {
                conf.as_str()
            };
            assert!(line.contains(mark), "{line}");
        }
    }
    assert!(
        out.contains("2800 GB/s") && out.contains("[ESTIMATE]"),
        "{out}"
    );
}

/// `hw show --json` of every built-in, written to a file, reloads as the same profile through
/// `hw show FILE`.
#[test]
fn hw_show_json_reloads_through_show_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in Profile::builtin_names() {
        let o = weft(&["hw", "show", name, "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let json = stdout(&o);
        assert_eq!(
            Profile::from_json_str(&json, name).unwrap(),
            Profile::builtin(name).unwrap()
        );
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, &json).unwrap();
        let again = weft(&["hw", "show", file.to_str().unwrap(), "--json"]);
        assert!(again.status.success(), "{}", stderr(&again));
        assert_eq!(stdout(&again), json, "{name}");
        let text = weft(&["hw", "show", file.to_str().unwrap()]);
        assert_eq!(stdout(&text), stdout(&weft(&["hw", "show", name])));
    }
}

#[test]
fn hw_show_unknown_name_lists_the_valid_ones() {
    let o = weft(&["hw", "show", "h100-sxm-16"]);
    assert_clean_failure(&o);
    let err = stderr(&o);
    assert!(
        err.contains("unknown hardware profile `h100-sxm-16`"),
        "{err}"
    );
    for n in Profile::builtin_names() {
        assert!(err.contains(n), "{err}");
    }
}

#[test]
fn hw_show_bad_file_names_file_field_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    let json = Profile::builtin("a100-sxm-8")
        .unwrap()
        .to_json()
        .replace("\"nodes\": 1", "\"nodes\": 0");
    std::fs::write(&file, json).unwrap();
    let o = weft(&["hw", "show", file.to_str().unwrap()]);
    assert_clean_failure(&o);
    let err = stderr(&o).replace('\n', " ");
    assert!(err.contains("bad.json"), "{err}");
    assert!(
        err.contains("field `nodes`: must be at least 1, got 0"),
        "{err}"
    );
}
