//! The built-in profiles, user files and docs/hardware.md.
//!
//! Set `WEFT_BLESS=1` to rewrite the canonical forms (the profile JSON files and the generated
//! part of docs/hardware.md) after an intended change; the tests then compare against them.

use std::path::{Path, PathBuf};

use weft_hardware::{BytesPerSec, Profile, ProfileError};

fn crate_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn bless() -> bool {
    std::env::var_os("WEFT_BLESS").is_some()
}

#[test]
fn every_builtin_profile_loads_and_validates() {
    let names: Vec<_> = Profile::builtin_names().collect();
    assert_eq!(
        names,
        [
            "h100-sxm-8",
            "h200-sxm-8",
            "a100-sxm-8",
            "h800-sxm-8",
            "l20-pcie-8",
            "h100-sxm-8x2-ndr",
            "a40-pcie-8x4-ib100"
        ]
    );
    for name in names {
        let p = Profile::builtin(name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.name, name);
        p.validate(name).unwrap();
        let expected = match name {
            "h100-sxm-8x2-ndr" => 16,
            "a40-pcie-8x4-ib100" => 32,
            _ => 8,
        };
        assert_eq!(p.total_devices(), Some(expected), "{name}");
        assert_eq!(p.inter_node.is_some(), p.nodes > 1, "{name}");
    }
}

#[test]
fn builtin_json_round_trips_exactly() {
    for p in Profile::builtins().unwrap() {
        let path = crate_path(&format!("profiles/{}.json", p.name));
        let text = std::fs::read_to_string(&path).unwrap();
        let canonical = p.to_json();
        if bless() {
            std::fs::write(&path, &canonical).unwrap();
        } else {
            assert_eq!(text, canonical, "{}: not in canonical form", p.name);
        }
        let again = Profile::from_json_str(&canonical, "round trip").unwrap();
        assert_eq!(again, p);
        assert_eq!(again.to_json(), canonical);
    }
}

#[test]
fn h100_defaults_match_the_reference() {
    // cost-model.md §4.2's headline figures, pinned so an edit of the data is deliberate.
    let p = Profile::builtin("h100-sxm-8").unwrap();
    assert_eq!(p.device.sm_count.as_ref().unwrap().value.0, 132);
    assert_eq!(
        p.device.achievable_dense_16bit.as_ref().unwrap().value.0,
        794.5e12
    );
    assert_eq!(
        p.intra_node.allreduce_bus_bandwidth.value,
        BytesPerSec(480e9)
    );
    assert_eq!(
        p.intra_node.allgather_bus_bandwidth.value,
        BytesPerSec(370e9)
    );
    assert!(
        p.device
            .memory_achievable_bandwidth
            .unwrap()
            .confidence
            .is_estimate()
    );
    let x2 = Profile::builtin("h100-sxm-8x2-ndr").unwrap();
    assert_eq!(
        x2.inter_node.unwrap().bandwidth_per_gpu.value,
        BytesPerSec(48e9)
    );
}

/// The h100 profile's JSON with `edit` applied, written to a temporary file, then loaded.
fn load_edited(edit: impl FnOnce(&mut serde_json::Value)) -> (PathBuf, ProfileError) {
    let mut v: serde_json::Value =
        serde_json::from_str(&Profile::builtin("h100-sxm-8").unwrap().to_json()).unwrap();
    edit(&mut v);
    write_and_load(&serde_json::to_string_pretty(&v).unwrap())
}

fn write_and_load(text: &str) -> (PathBuf, ProfileError) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.json");
    std::fs::write(&path, text).unwrap();
    let err = Profile::from_json_file(&path).expect_err("the file should be refused");
    (path, err)
}

#[test]
fn negative_bandwidth_is_refused_naming_file_and_field() {
    let (path, e) = load_edited(|v| {
        v["intra_node"]["allgather_bus_bandwidth"]["value"] = (-370e9).into();
    });
    let msg = e.to_string();
    assert!(matches!(e, ProfileError::Invalid { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("field `intra_node.allgather_bus_bandwidth`"),
        "{msg}"
    );
    assert!(msg.contains("must be positive"), "{msg}");
}

#[test]
fn unknown_field_is_refused() {
    let (path, e) = load_edited(|v| {
        v["device"]["hbm_bandwith"] = 1.into();
    });
    let msg = e.to_string();
    assert!(matches!(e, ProfileError::Parse { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("unknown field `hbm_bandwith`"), "{msg}");
}

#[test]
fn zero_devices_is_refused() {
    let (_, e) = load_edited(|v| v["devices_per_node"] = 0.into());
    assert!(
        e.to_string()
            .contains("field `devices_per_node`: must be at least 1, got 0"),
        "{e}"
    );
    let (_, e) = load_edited(|v| v["nodes"] = 0.into());
    assert!(
        e.to_string().contains("field `nodes`: must be at least 1"),
        "{e}"
    );
}

#[test]
fn overflowing_device_count_is_refused() {
    let (_, e) = load_edited(|v| {
        v["nodes"] = 70000.into();
        v["devices_per_node"] = 70000.into();
    });
    assert!(e.to_string().contains("overflows"), "{e}");
}

#[test]
fn nan_is_refused() {
    // JSON has no NaN: the parser refuses it with the position ...
    let text = Profile::builtin("h100-sxm-8")
        .unwrap()
        .to_json()
        .replace("794500000000000.0", "NaN");
    let (path, e) = write_and_load(&text);
    let msg = e.to_string();
    assert!(matches!(e, ProfileError::Parse { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("line"), "{msg}");
    // ... and a profile built in code with one fails validation naming the field.
    let mut p = Profile::builtin("h100-sxm-8").unwrap();
    p.device.memory_peak_bandwidth.as_mut().unwrap().value = BytesPerSec(f64::NAN);
    let e = p.validate("in memory").unwrap_err().to_string();
    assert!(
        e.contains("field `device.memory_peak_bandwidth`: must be a finite number, got NaN"),
        "{e}"
    );
}

#[test]
fn node_count_and_inter_node_link_must_agree() {
    let (_, e) = load_edited(|v| v["nodes"] = 2.into());
    assert!(
        e.to_string().contains("field `inter_node`: is required"),
        "{e}"
    );
    let x2 = Profile::builtin("h100-sxm-8x2-ndr").unwrap();
    let mut one = x2.clone();
    one.nodes = 1;
    let e = one.validate("edited").unwrap_err().to_string();
    assert!(e.contains("is given but nodes is 1"), "{e}");
}

#[test]
fn empty_source_is_refused() {
    let (_, e) = load_edited(|v| v["kernel_launch_overhead"]["source"] = "".into());
    assert!(
        e.to_string()
            .contains("field `kernel_launch_overhead`: its `source` is empty"),
        "{e}"
    );
}

#[test]
fn unknown_name_lists_the_builtins() {
    let e = Profile::resolve("h100-sxm-9").unwrap_err().to_string();
    assert!(e.contains("unknown hardware profile `h100-sxm-9`"), "{e}");
    for n in Profile::builtin_names() {
        assert!(e.contains(n), "{e}");
    }
}

const DOC_BEGIN: &str = "<!-- generated from hardware/profiles by `WEFT_BLESS=1 cargo test -p weft-hardware`; do not edit by hand -->\n";
const DOC_END: &str = "<!-- end of generated tables -->\n";

/// docs/hardware.md holds every profile's table verbatim, so every name, value, confidence and
/// source in the data appears in the doc and the doc cannot drift from the data.
#[test]
fn docs_hardware_md_lists_every_profile_and_constant() {
    let path = crate_path("../docs/hardware.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let tables: String = Profile::builtins()
        .unwrap()
        .iter()
        .map(|p| p.markdown_table())
        .collect::<Vec<_>>()
        .join("\n");
    let (head, rest) = doc
        .split_once(DOC_BEGIN)
        .expect("the doc has the begin marker");
    let (_, tail) = rest
        .split_once(DOC_END)
        .expect("the doc has the end marker");
    let expected = format!("{head}{DOC_BEGIN}\n{tables}\n{DOC_END}{tail}");
    if bless() {
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    assert_eq!(
        doc, expected,
        "docs/hardware.md is out of date: run WEFT_BLESS=1 cargo test -p weft-hardware"
    );
    for p in Profile::builtins().unwrap() {
        assert!(doc.contains(&format!("### `{}`", p.name)));
        for c in p.constants() {
            if let Some(v) = c.value {
                assert!(
                    doc.contains(&format!("| `{}` | {v} |", c.field)),
                    "{}",
                    c.field
                );
            }
        }
    }
}

#[test]
fn nvlink_sharp_on_pcie_is_refused() {
    let mut p = Profile::builtin("l20-pcie-8").unwrap();
    p.intra_node.nvlink_sharp.as_mut().unwrap().value = true;
    let e = p.validate("edited").unwrap_err().to_string();
    assert!(
        e.contains("field `intra_node.nvlink_sharp`: is yes, but the intra-node link is PCIe"),
        "{e}"
    );
}

#[test]
fn oversized_file_is_refused_before_reading() {
    let (path, e) = write_and_load(&" ".repeat((1 << 20) + 1));
    let msg = e.to_string();
    assert!(matches!(e, ProfileError::Read { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("a profile is at most 1048576"), "{msg}");
}

#[test]
fn missing_required_field_is_named() {
    let (_, e) = load_edited(|v| {
        v["device"]
            .as_object_mut()
            .unwrap()
            .remove("peak_dense_16bit");
    });
    assert!(
        e.to_string().contains("missing field `peak_dense_16bit`"),
        "{e}"
    );
}

#[test]
fn a_share_above_one_is_refused() {
    let (_, e) = load_edited(|v| {
        v["intra_node"]["comm_sm_fraction"]["value"] = 1.5.into();
    });
    let msg = e.to_string();
    assert!(msg.contains("field `intra_node.comm_sm_fraction`"), "{msg}");
    assert!(msg.contains("(0, 1]"), "{msg}");
}

#[test]
fn an_unordered_gemm_table_is_refused() {
    let (_, e) = load_edited(|v| {
        let t = v["device"]["gemm_table"]["value"].as_array_mut().unwrap();
        t.swap(0, 1);
    });
    let msg = e.to_string();
    assert!(msg.contains("field `device.gemm_table`"), "{msg}");
    assert!(msg.contains("strictly increasing"), "{msg}");
}

#[test]
fn a_negative_nccl_latency_is_refused() {
    let (_, e) = load_edited(|v| {
        v["intra_node"]["nccl"]["ring_step_latency"]["value"]["ll"] = (-1e-6).into();
    });
    let msg = e.to_string();
    assert!(
        msg.contains("field `intra_node.nccl.ring_step_latency`"),
        "{msg}"
    );
}

/// The cost model's inputs in the H100 profile are the reference's figures (cost-model.md
/// §2.1, §2.2, §2.4, §2.7).
#[test]
fn h100_cost_model_inputs_match_the_reference() {
    let p = Profile::builtin("h100-sxm-8").unwrap();
    let table: Vec<(u64, u64, u64, u64, f64)> = p
        .device
        .gemm_table
        .as_ref()
        .unwrap()
        .value
        .iter()
        .map(|g| (g.batch, g.m, g.n, g.k, g.throughput.0))
        .collect();
    assert_eq!(
        table,
        vec![
            (1, 512, 256, 256, 11.5e12),
            (1, 1024, 2048, 256, 139.5e12),
            (1, 1024, 2048, 2048, 524.3e12),
            (1, 4096, 4096, 4096, 783.3e12),
        ]
    );
    let t = p.intra_node.nccl.as_ref().unwrap();
    assert_eq!(t.ring_base_latency.value.ll.0, 6.6e-6);
    assert_eq!(t.ring_step_latency.value.simple.0, 3.4e-6);
    assert_eq!(t.tree_step_latency.value.ll128.0, 1.25e-6);
    assert_eq!(t.nvls_latency.as_ref().unwrap().value.0, 25e-6);
    assert_eq!(t.ll_max_bus_bandwidth.value.0, 141e9);
    assert_eq!(t.ll128_channel_bandwidth.value.0, 36.7e9);
    assert_eq!(
        p.intra_node.comm_sm_fraction.as_ref().unwrap().value.0,
        0.15
    );
    assert_eq!(p.intra_node.nvls_sms.as_ref().unwrap().value.0, 8);
    let eff: Vec<f64> = p
        .device
        .memory_efficiency
        .as_ref()
        .unwrap()
        .value
        .iter()
        .map(|s| s.efficiency.0)
        .collect();
    assert_eq!(eff, vec![0.3, 0.6, 0.75, 0.9]);
}

#[test]
fn more_nvls_sms_than_the_gpu_has_is_refused() {
    let (path, e) = load_edited(|v| {
        v["intra_node"]["nvls_sms"]["value"] = 200.into();
    });
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("field `intra_node.nvls_sms`"), "{msg}");
    assert!(msg.contains("more than device.sm_count (132)"), "{msg}");
}

#[test]
fn nvls_sms_over_half_the_gpu_is_refused() {
    let (_, e) = load_edited(|v| {
        v["intra_node"]["nvls_sms"]["value"] = 67.into();
    });
    let msg = e.to_string();
    assert!(msg.contains("field `intra_node.nvls_sms`"), "{msg}");
    assert!(msg.contains("67 of 132 SMs"), "{msg}");
}

#[test]
fn a_comm_kernel_taking_every_sm_is_refused() {
    // 1.0 passes the (0, 1] share check, and the cost model would slow compute beside
    // the collective by 1 / (1 − share): refused, naming the file and field.
    for share in [1.0, 0.51] {
        let (path, e) = load_edited(|v| {
            v["intra_node"]["comm_sm_fraction"]["value"] = share.into();
        });
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("field `intra_node.comm_sm_fraction`"), "{msg}");
        assert!(msg.contains("more than 0.5"), "{msg}");
    }
    // Half is the largest accepted share.
    let mut p = Profile::builtin("h100-sxm-8").unwrap();
    p.intra_node.comm_sm_fraction.as_mut().unwrap().value.0 = weft_hardware::MAX_COMM_SM_FRACTION;
    p.validate("edited").unwrap();
}

#[test]
fn an_inter_node_comm_share_of_one_is_refused() {
    let mut p = Profile::builtin("h100-sxm-8x2-ndr").unwrap();
    p.inter_node
        .as_mut()
        .unwrap()
        .comm_sm_fraction
        .as_mut()
        .unwrap()
        .value
        .0 = 1.0;
    let msg = p.validate("edited.json").unwrap_err().to_string();
    assert!(msg.contains("edited.json"), "{msg}");
    assert!(msg.contains("field `inter_node.comm_sm_fraction`"), "{msg}");
}

#[test]
fn a_zero_comm_share_is_refused() {
    let (_, e) = load_edited(|v| {
        v["intra_node"]["comm_sm_fraction"]["value"] = 0.0.into();
    });
    let msg = e.to_string();
    assert!(msg.contains("field `intra_node.comm_sm_fraction`"), "{msg}");
    assert!(msg.contains("(0, 1]"), "{msg}");
}
