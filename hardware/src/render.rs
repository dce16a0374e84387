//! Human-readable forms of a profile: the `weft hw list` line, the `weft hw show` text and
//! the docs/hardware.md table (checked against the doc by a test, so the doc cannot drift).

use std::fmt::Write;

use crate::profile::{InterNodeKind, IntraNodeKind, Profile};

const ABSENT: &str = "not given (optional; no sourced value)";

impl Profile {
    /// `weft hw list`'s line: name, device count, GPU, description.
    pub fn list_line(&self) -> String {
        format!(
            "{:<18} {:>3} × {:<26} {}",
            self.name,
            self.total_devices().unwrap_or(0),
            self.device.gpu,
            self.description
        )
    }

    fn machine_line(&self) -> String {
        format!(
            "{} node(s) × {} device(s) = {} × {}",
            self.nodes,
            self.devices_per_node,
            self.total_devices().unwrap_or(0),
            self.device.gpu
        )
    }

    /// `weft hw show`'s text: every constant with its unit, confidence and source.
    pub fn show_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}: {}", self.name, self.description);
        let _ = writeln!(s, "machine: {}", self.machine_line());
        let intra = match self.intra_node.kind {
            IntraNodeKind::Nvswitch => "NVLink through NVSwitch",
            IntraNodeKind::Pcie => "PCIe",
        };
        let _ = writeln!(s, "intra-node link: {intra}");
        if let Some(i) = &self.inter_node {
            let inter = match i.kind {
                InterNodeKind::InfinibandNdr => "InfiniBand NDR",
                InterNodeKind::Infiniband => "InfiniBand",
            };
            let _ = writeln!(s, "inter-node link: {inter}");
        }
        for c in self.constants() {
            match (&c.value, c.confidence) {
                (Some(v), Some(conf)) => {
                    let conf = if conf.is_estimate() {
                        "ESTIMATE"
                    } else {
                        conf.as_str()
                    };
                    let _ = writeln!(s, "  {:<38} {:<16} [{conf}]  {}", c.field, v, c.source);
                }
                _ => {
                    let _ = writeln!(s, "  {:<38} {ABSENT}", c.field);
                }
            }
        }
        s
    }

    /// The profile's section of docs/hardware.md.
    pub fn markdown_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "### `{}`\n", self.name);
        let _ = writeln!(s, "{} — {}.\n", self.description, self.machine_line());
        let _ = writeln!(s, "| Constant | Value | Confidence | Source |");
        let _ = writeln!(s, "|---|---|---|---|");
        for c in self.constants() {
            match (&c.value, c.confidence) {
                (Some(v), Some(conf)) => {
                    let conf = if conf.is_estimate() {
                        "**estimate**"
                    } else {
                        conf.as_str()
                    };
                    let _ = writeln!(
                        s,
                        "| `{}` | {} | {} | {} |",
                        c.field,
                        v,
                        conf,
                        c.source.replace('|', "\\|")
                    );
                }
                _ => {
                    let _ = writeln!(s, "| `{}` | — | — | {ABSENT} |", c.field);
                }
            }
        }
        s
    }
}
