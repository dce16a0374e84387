//! The plan as readable text (`weft inspect` without `--json`): a header saying what
//! it was compiled from and what it predicts, then per rank per stream the tasks in
//! order with their times, events and kernels, then the rank's memory.

use std::fmt::Write;

use crate::{KernelConfig, Plan, RankPlan};

impl Plan {
    /// The readable text form (see the module docs).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        self.write_text(&mut s)
            .unwrap_or_else(|e| unreachable!("writing to a String cannot fail: {e}"));
        s
    }

    fn write_text(&self, s: &mut String) -> std::fmt::Result {
        writeln!(
            s,
            "plan {} v{} (written by {})",
            self.format, self.version, self.compiler
        )?;
        writeln!(
            s,
            "source    {} ({}, sha256 {})",
            self.source.path, self.source.format, self.source.sha256
        )?;
        let dims: Vec<String> = self.dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            s,
            "dims      {}",
            if dims.is_empty() {
                "(none)".into()
            } else {
                dims.join(", ")
            }
        )?;
        let mesh: Vec<String> = self
            .mesh
            .iter()
            .map(|a| format!("{}={}", a.name, a.size))
            .collect();
        writeln!(
            s,
            "mesh      {} ({})",
            if mesh.is_empty() {
                "(single device)".into()
            } else {
                mesh.join(",")
            },
            rank_count(self.ranks.len())
        )?;
        writeln!(
            s,
            "hardware  {} (sha256 {})",
            self.hardware.name, self.hardware.sha256
        )?;
        writeln!(
            s,
            "options   strategy={} sp_norms={} max_memory={}",
            self.options.strategy,
            self.options.sp_norms,
            self.options
                .max_memory_bytes
                .map_or_else(|| "none".to_owned(), |b| format!("{b} B"))
        )?;
        let rules: Vec<String> = self
            .rules_applied
            .iter()
            .map(|r| format!("{}×{}", r.rule, r.count))
            .collect();
        writeln!(
            s,
            "rules     {}",
            if rules.is_empty() {
                "(none)".into()
            } else {
                rules.join(", ")
            }
        )?;
        writeln!(
            s,
            "rewrites  {}",
            if self.model_changing_rewrites.is_empty() {
                "(none: the program computes what the model does)".into()
            } else {
                format!(
                    "{} — {}",
                    weft_ir::model_change::summaries(&self.model_changing_rewrites),
                    weft_ir::model_change::OUTPUTS_DIFFER
                )
            }
        )?;
        let p = &self.prediction;
        writeln!(
            s,
            "predicted {:.3} µs (no-overlap baseline {:.3} µs, bound {:.3} µs, exposed comm {:.3} µs, overlap efficiency {:.3})",
            p.predicted_us, p.baseline_us, p.bound_us, p.exposed_comm_us, p.overlap_efficiency
        )?;
        for rp in &self.ranks {
            write_rank(s, rp)?;
        }
        Ok(())
    }
}

fn write_rank(s: &mut String, rp: &RankPlan) -> std::fmt::Result {
    let coords: Vec<String> = rp.coords.iter().map(u64::to_string).collect();
    writeln!(s, "\nrank {} (coords {})", rp.rank, coords.join(","))?;
    for stream in &rp.streams {
        writeln!(
            s,
            "  stream {} `{}` ({:?})",
            stream.id.0, stream.name, stream.kind
        )?;
        for task in rp.tasks.iter().filter(|t| t.stream == stream.id) {
            write!(
                s,
                "    #{:<4} {:>10.3} .. {:>10.3} µs  {}",
                task.id.0,
                task.start_us,
                task.end_us,
                task.nodes.join(", ")
            )?;
            if let Some(l) = task.layer {
                write!(s, "  [layer {l}]")?;
            }
            if !task.waits.is_empty() {
                let w: Vec<String> = task.waits.iter().map(|e| format!("e{}", e.0)).collect();
                write!(s, "  waits {}", w.join(","))?;
            }
            if let Some(e) = task.record {
                write!(s, "  records e{}", e.0)?;
            }
            if let Some(c) = &task.collective {
                write!(s, "  {} over {} {:?} #{}", c.kind, c.axis, c.group, c.seq)?;
            }
            writeln!(s, "  {}", kernel_text(&task.kernel))?;
        }
    }
    let m = &rp.memory;
    writeln!(
        s,
        "  memory: weights {} B, activation pool {} B, peak {} B{} ({} buffers)",
        m.weight_bytes,
        m.activation_peak_bytes,
        m.peak_bytes,
        m.peak_at
            .map_or_else(String::new, |t| format!(" at task #{}", t.0)),
        rp.buffers.len()
    )
}

/// One kernel configuration in a few words.
pub(crate) fn kernel_text(k: &KernelConfig) -> String {
    match k {
        KernelConfig::View => "view".into(),
        KernelConfig::Gemm {
            batch,
            m,
            n,
            k,
            tiles,
            waves,
        } => {
            format!("gemm {batch}×{m}×{n}×{k} ({tiles} tiles, {waves} waves)")
        }
        KernelConfig::MemoryBound { bytes } => format!("memory-bound {bytes} B"),
        KernelConfig::Collective(c) => format!(
            "nccl {}/{} {} B over {}{}",
            c.algorithm,
            c.protocol,
            c.message_bytes,
            c.group_size,
            if c.inter_node { " (inter-node)" } else { "" }
        ),
        KernelConfig::Pipelined {
            chunks,
            gemm_m,
            gemm_n,
            gemm_k,
            collective,
        } => format!(
            "pipelined gemm {gemm_m}×{gemm_n}×{gemm_k} in {chunks} chunks with nccl {}/{} {} B",
            collective.algorithm, collective.protocol, collective.message_bytes
        ),
        KernelConfig::CommNorm {
            sms,
            norm_bytes,
            collective,
        } => format!(
            "comm+norm on {sms} SMs: {}/{} {} B over {}, norm {norm_bytes} B",
            collective.algorithm,
            collective.protocol,
            collective.message_bytes,
            collective.group_size
        ),
        KernelConfig::Unconfigured { chunks: Some(c) } => format!("unconfigured, {c} chunks"),
        KernelConfig::Unconfigured { chunks: None } => "unconfigured".into(),
    }
}

/// `1 rank`, `8 ranks`: a rank count for people to read.
pub fn rank_count(n: usize) -> String {
    if n == 1 {
        "1 rank".to_owned()
    } else {
        format!("{n} ranks")
    }
}
