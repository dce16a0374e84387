//! Collectives as NCCL runs them: every algorithm and protocol NCCL could pick for the
//! group and size is costed with NCCL's own α–β tuner model, and the fastest wins, as in
//! NCCL's `tuning.cc` (cost-model.md §2.4).
//!
//! ```text
//! time = launch + latency + message / algbw
//! ring   latency = base[p] + steps · ringStep[p]   steps: all-reduce 2(n−1), others n−1, p2p 1
//! tree   latency = base[p] + 2(n−1) · treeStep[p]  (all-reduce; a chain inside one node)
//! NVLS   latency = nvls_latency                    (all-reduce only, n ≥ 3, NVSwitch with SHARP)
//! busbw  Simple = the profile's ring asymptote; LL = min(llMaxBw, Simple) (a deviation: below);
//!        LL128 = min(0.92 · Simple, channels · perChannelLL128)
//! algbw  = busbw / factor, factor = 2(n−1)/n all-reduce, (n−1)/n AG/RS/A2A, 1 p2p/bcast
//! NVLS   algbw = allreduce busbw / (2(N−1)/N) at the profile's node size N, the same for
//!        every n (each GPU's link to the switch is the bound)
//! ```
//!
//! Groups spanning nodes (device index row-major over the mesh axes, node = index /
//! devices_per_node) are hierarchical: an intra-node phase (ring reduce-scatter +
//! all-gather, or NVLS for an all-reduce) and an inter-node ring over InfiniBand on each
//! GPU's own NIC carrying 1/g of the data. NCCL pipelines the phases over chunks, so the
//! bandwidth term is the slower phase's, and the latencies add:
//!
//! ```text
//! intra = (wire share over g) · S / ring busbw     (NVLS all-reduce: S / NVLS algbw)
//! inter = (wire share over m) · S / g / IB bw      (all-to-all: (m−1)/m · S / IB bw)
//! time  = launch + intra latency + inter steps · IB step latency + max(intra, inter)
//! ```
//!
//! Profiles without NCCL tuner constants (A100, L20: the reference has no `llMaxBw` for
//! them) use the plain α–β figures of the profile: the node's latency and bus bandwidth.
//!
//! **Deviation from NCCL:** `tuning.cc` ("Various model refinements") multiplies the ring LL
//! bus bandwidth by 1/4 (all-reduce, or more than one node) or 1/3 (otherwise) before
//! capping it at `llMaxBw`; this model uses `min(llMaxBw, Simple)`. With the refinement
//! (370/4 = 92.5 GB/s on H100) an 8-GPU 1 MiB all-reduce is costed faster on NVLS
//! (≈ 28.8 µs plus launch) than on ring/LL (≈ 34.8 µs plus launch), contradicting the
//! measured choice (nccl-tests #309: ring/LL up to 1 MiB, NVLS/Simple from 2 MiB); without
//! it ring/LL wins at 1 MiB (≈ 28.0 µs) and NVLS at 2 MiB, as measured. The tiny-message latencies are the
//! same either way. Tried and measured against that held-aside table, so its 1 MiB row is
//! not independent evidence for this choice.

use weft_hardware::{NcclTuning, Profile, ProtocolSeconds};
use weft_ir::{CollectiveKind, Mesh};
use weft_plan::CollectiveConfig;

use super::CostError;
use super::memory_bound::to_f64;

/// Which GPUs a collective over one mesh axis spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Group {
    /// Devices in the group.
    pub size: u64,
    /// Nodes it spans.
    pub nodes: u64,
    /// Devices of the group on each node (the most on any node).
    pub per_node: u64,
}

impl Group {
    /// The group along `axis` that device 0 belongs to (every group of an axis has the same
    /// shape when the node size divides evenly). Device index is row-major over the mesh's
    /// axes ([`Mesh::group`]); node = index / devices_per_node.
    pub(crate) fn of_axis(mesh: &Mesh, axis: &str, profile: &Profile) -> Result<Group, CostError> {
        let (members, _) = mesh.group(0, axis).ok_or_else(|| CostError::UnknownAxis {
            axis: axis.to_string(),
            mesh: mesh.axis_names().join(", "),
        })?;
        let size = members.len() as u64;
        let dpn = u64::from(profile.devices_per_node).max(1);
        // Devices of the group per node, in node order (the group's ranks increase).
        let mut counts: Vec<(u64, u64)> = Vec::new();
        for r in members {
            let node = r / dpn;
            match counts.last_mut() {
                Some((n, c)) if *n == node => *c += 1,
                _ => counts.push((node, 1)),
            }
        }
        Ok(Group {
            size,
            nodes: counts.len() as u64,
            per_node: counts.iter().map(|&(_, c)| c).max().unwrap_or(1),
        })
    }
}

/// NCCL protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Ll,
    Ll128,
    Simple,
}

impl Proto {
    const ALL: [Proto; 3] = [Proto::Ll, Proto::Ll128, Proto::Simple];
    fn name(self) -> &'static str {
        match self {
            Proto::Ll => "ll",
            Proto::Ll128 => "ll128",
            Proto::Simple => "simple",
        }
    }
    fn of(self, t: &ProtocolSeconds) -> f64 {
        match self {
            Proto::Ll => t.ll.0,
            Proto::Ll128 => t.ll128.0,
            Proto::Simple => t.simple.0,
        }
    }
}

/// NCCL's algorithms as the plan names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algo {
    Ring,
    Tree,
    Nvls,
    P2p,
    Hierarchical,
    NvlsTree,
    /// A group of one device: nothing to do.
    Local,
}

impl Algo {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Algo::Ring => "ring",
            Algo::Tree => "tree",
            Algo::Nvls => "nvls",
            Algo::P2p => "p2p",
            Algo::Hierarchical => "hierarchical",
            Algo::NvlsTree => "nvls_tree",
            Algo::Local => "local",
        }
    }
}

/// NCCL's choice for one collective and its predicted time.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CollectiveTime {
    /// Launch + latency + transfer, seconds.
    pub seconds: f64,
    pub algo: Algo,
    pub config: CollectiveConfig,
    /// Bytes this GPU sends over its links (ring accounting), for the HBM share.
    pub wire_bytes: f64,
}

/// The link figures collectives need, read once from the profile.
#[derive(Clone, Debug)]
pub(crate) struct CollectiveModel {
    launch: f64,
    /// Ring (SM-driven) bus bandwidth asymptote for all-reduce.
    ring_allreduce_busbw: f64,
    /// Ring bus bandwidth for all-gather, reduce-scatter, all-to-all, p2p.
    ring_busbw: f64,
    allreduce_latency: f64,
    allgather_latency: f64,
    tuning: Option<NcclTuning>,
    /// NVLS all-reduce algbw (bytes/s) where the node has NVLink SHARP and a latency.
    nvls_algbw: Option<f64>,
    nvls_latency: f64,
    inter: Option<(f64, f64)>,
}

/// nccl-tests' bus-bandwidth factor (`doc/PERFORMANCE.md`, techniques.md §11).
pub(crate) fn busbw_factor(kind: CollectiveKind, n: u64) -> f64 {
    let n = to_f64(n.max(1));
    match kind {
        CollectiveKind::AllReduce => 2.0 * (n - 1.0) / n,
        CollectiveKind::AllGather | CollectiveKind::ReduceScatter | CollectiveKind::AllToAll => {
            (n - 1.0) / n
        }
        CollectiveKind::Send | CollectiveKind::Recv | CollectiveKind::Broadcast => 1.0,
    }
}

/// Ring steps of a collective over `n` devices.
fn ring_steps(kind: CollectiveKind, n: u64) -> f64 {
    let n1 = to_f64(n.saturating_sub(1));
    match kind {
        CollectiveKind::AllReduce => 2.0 * n1,
        CollectiveKind::AllGather
        | CollectiveKind::ReduceScatter
        | CollectiveKind::AllToAll
        | CollectiveKind::Broadcast => n1,
        CollectiveKind::Send | CollectiveKind::Recv => 1.0,
    }
}

impl CollectiveModel {
    pub(crate) fn new(profile: &Profile) -> CollectiveModel {
        let l = &profile.intra_node;
        let sharp = l.nvlink_sharp.as_ref().is_some_and(|s| s.value);
        let tuning = l.nccl.clone();
        let nvls_latency = tuning
            .as_ref()
            .and_then(|t| t.nvls_latency.as_ref())
            .map(|s| s.value.0);
        let nvls_algbw = (sharp && nvls_latency.is_some()).then(|| {
            l.allreduce_bus_bandwidth.value.0
                / busbw_factor(
                    CollectiveKind::AllReduce,
                    u64::from(profile.devices_per_node),
                )
        });
        // With NVLS the profile's all-reduce figure is NVLS's; the ring runs at the
        // SM-driven rate of the other collectives (sjeaugey, nccl-tests #212).
        let ring_allreduce_busbw = if sharp {
            l.allgather_bus_bandwidth.value.0
        } else {
            l.allreduce_bus_bandwidth.value.0
        };
        CollectiveModel {
            launch: profile.collective_launch_overhead.value.0,
            ring_allreduce_busbw,
            ring_busbw: l.allgather_bus_bandwidth.value.0,
            allreduce_latency: l.allreduce_latency.value.0,
            allgather_latency: l.allgather_latency.value.0,
            tuning,
            nvls_algbw,
            nvls_latency: nvls_latency.unwrap_or(0.0),
            inter: profile
                .inter_node
                .as_ref()
                .map(|i| (i.bandwidth_per_gpu.value.0, i.step_latency.value.0)),
        }
    }

    fn simple_busbw(&self, kind: CollectiveKind) -> f64 {
        match kind {
            CollectiveKind::AllReduce => self.ring_allreduce_busbw,
            CollectiveKind::AllGather
            | CollectiveKind::ReduceScatter
            | CollectiveKind::AllToAll
            | CollectiveKind::Send
            | CollectiveKind::Recv
            | CollectiveKind::Broadcast => self.ring_busbw,
        }
    }

    fn proto_busbw(&self, t: &NcclTuning, kind: CollectiveKind, p: Proto) -> f64 {
        let simple = self.simple_busbw(kind);
        match p {
            Proto::Simple => simple,
            // Not NCCL's `busBw · 1/4 (or 1/3)` refinement: see the module docs.
            Proto::Ll => simple.min(t.ll_max_bus_bandwidth.value.0),
            Proto::Ll128 => (simple * t.ll128_ring_factor.value.0)
                .min(t.ll128_channel_bandwidth.value.0 * to_f64(t.channels.value.0)),
        }
    }

    /// Every candidate inside one node: (algorithm, protocol, latency s, algbw B/s).
    fn intra_candidates(&self, kind: CollectiveKind, n: u64) -> Vec<(Algo, Proto, f64, f64)> {
        let factor = busbw_factor(kind, n);
        let mut c = Vec::new();
        let p2p = matches!(kind, CollectiveKind::Send | CollectiveKind::Recv);
        let ring = if p2p { Algo::P2p } else { Algo::Ring };
        match &self.tuning {
            Some(t) => {
                for p in Proto::ALL {
                    let lat = p.of(&t.ring_base_latency.value)
                        + ring_steps(kind, n) * p.of(&t.ring_step_latency.value);
                    c.push((ring, p, lat, self.proto_busbw(t, kind, p) / factor));
                    if kind == CollectiveKind::AllReduce {
                        let lat = p.of(&t.tree_base_latency.value)
                            + 2.0 * to_f64(n - 1) * p.of(&t.tree_step_latency.value);
                        c.push((Algo::Tree, p, lat, self.proto_busbw(t, kind, p) / factor));
                    }
                }
            }
            None => {
                let lat = if kind == CollectiveKind::AllReduce {
                    self.allreduce_latency
                } else {
                    self.allgather_latency
                };
                c.push((ring, Proto::Simple, lat, self.simple_busbw(kind) / factor));
            }
        }
        if let (CollectiveKind::AllReduce, Some(bw), true) = (kind, self.nvls_algbw, n >= 3) {
            c.push((Algo::Nvls, Proto::Simple, self.nvls_latency, bw));
        }
        c
    }

    /// NCCL's choice and time for `kind` moving `message` bytes (nccl-tests `size`) over
    /// `group`.
    pub(crate) fn time(&self, kind: CollectiveKind, message: u64, group: Group) -> CollectiveTime {
        let s = to_f64(message);
        let wire = weft_ir::occupancy::ring_wire_bytes(kind, message, group.size)
            .map_or(f64::INFINITY, to_f64);
        let config = |algo: Algo, p: Proto| CollectiveConfig {
            algorithm: algo.name().to_string(),
            protocol: p.name().to_string(),
            message_bytes: message,
            group_size: group.size,
            inter_node: group.nodes > 1,
        };
        if group.size <= 1 {
            return CollectiveTime {
                seconds: 0.0,
                algo: Algo::Local,
                config: CollectiveConfig {
                    algorithm: Algo::Local.name().into(),
                    protocol: "none".into(),
                    message_bytes: message,
                    group_size: group.size,
                    inter_node: false,
                },
                wire_bytes: 0.0,
            };
        }
        let (algo, proto, seconds) = match (group.nodes > 1, self.inter) {
            (true, Some((ib_bw, ib_lat))) => self.hierarchical(kind, s, group, ib_bw, ib_lat),
            _ => self
                .intra_candidates(kind, group.size)
                .into_iter()
                .map(|(a, p, lat, bw)| (a, p, lat + s / bw))
                .fold((Algo::Ring, Proto::Simple, f64::INFINITY), |best, c| {
                    if c.2 < best.2 { c } else { best }
                }),
        };
        CollectiveTime {
            seconds: self.launch + seconds,
            algo,
            config: config(algo, proto),
            wire_bytes: wire.min(s * 2.0),
        }
    }

    /// An all-reduce in the switch (NVLS multimem) inside one node, whatever NCCL would
    /// choose: TokenWeave's fused kernel always reduces there. `None` without NVLink
    /// SHARP, under three devices (as NCCL: see `intra_candidates`) or across nodes.
    pub(crate) fn nvls_all_reduce(&self, message: u64, group: Group) -> Option<CollectiveTime> {
        let bw = self.nvls_algbw?;
        if group.nodes > 1 || group.size < 3 {
            return None;
        }
        let s = to_f64(message);
        let wire =
            weft_ir::occupancy::ring_wire_bytes(CollectiveKind::AllReduce, message, group.size)
                .map_or(f64::INFINITY, to_f64);
        Some(CollectiveTime {
            seconds: self.launch + self.nvls_latency + s / bw,
            algo: Algo::Nvls,
            config: CollectiveConfig {
                algorithm: Algo::Nvls.name().into(),
                protocol: Proto::Simple.name().into(),
                message_bytes: message,
                group_size: group.size,
                inter_node: false,
            },
            wire_bytes: wire.min(s * 2.0),
        })
    }

    /// A group over `group.nodes` nodes: intra-node phase and InfiniBand phase, pipelined.
    fn hierarchical(
        &self,
        kind: CollectiveKind,
        s: f64,
        group: Group,
        ib_bw: f64,
        ib_lat: f64,
    ) -> (Algo, Proto, f64) {
        let g = group.per_node;
        let m = group.nodes;
        let ring_lat = |steps: f64| match &self.tuning {
            Some(t) => {
                t.ring_base_latency.value.simple.0 + steps * t.ring_step_latency.value.simple.0
            }
            None => {
                if kind == CollectiveKind::AllReduce {
                    self.allreduce_latency
                } else {
                    self.allgather_latency
                }
            }
        };
        let share = |k: CollectiveKind, n: u64| busbw_factor(k, n);
        let inter_steps = ring_steps(kind, m);
        let (algo, intra_lat, intra_bw_time, inter_bytes) = match kind {
            CollectiveKind::AllReduce => {
                let ring = share(kind, g) * s / self.ring_allreduce_busbw;
                let inter = share(kind, m) * s / to_f64(g);
                match self.nvls_algbw.filter(|_| g >= 3) {
                    Some(bw) if s / bw < ring => (Algo::NvlsTree, self.nvls_latency, s / bw, inter),
                    _ => (
                        Algo::Hierarchical,
                        ring_lat(ring_steps(kind, g)),
                        ring,
                        inter,
                    ),
                }
            }
            CollectiveKind::AllGather | CollectiveKind::ReduceScatter => (
                Algo::Hierarchical,
                ring_lat(ring_steps(kind, g)),
                share(kind, g) * s / self.ring_busbw,
                share(kind, m) * s / to_f64(g),
            ),
            CollectiveKind::AllToAll => (
                Algo::Hierarchical,
                ring_lat(ring_steps(kind, g)),
                share(kind, g) * s / self.ring_busbw,
                share(kind, m) * s,
            ),
            CollectiveKind::Broadcast => (
                Algo::Hierarchical,
                ring_lat(ring_steps(kind, g)),
                s / self.ring_busbw,
                s / to_f64(g),
            ),
            CollectiveKind::Send | CollectiveKind::Recv => (Algo::P2p, 0.0, 0.0, s),
        };
        let inter_time = inter_bytes / ib_bw;
        let lat = intra_lat + inter_steps * ib_lat;
        (algo, Proto::Simple, lat + intra_bw_time.max(inter_time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str) -> CollectiveModel {
        CollectiveModel::new(&Profile::builtin(name).unwrap())
    }

    fn node(n: u64) -> Group {
        Group {
            size: n,
            nodes: 1,
            per_node: n,
        }
    }

    /// Kernel time without the 5 µs launch, µs.
    fn kernel_us(m: &CollectiveModel, kind: CollectiveKind, bytes: u64, g: Group) -> f64 {
        (m.time(kind, bytes, g).seconds - m.launch) * 1e6
    }

    #[test]
    fn tiny_messages_cost_ncclss_tuner_latencies() {
        // cost-model.md §2.4, derived 8-rank latencies: AR ring-LL 15.0 µs, AG/RS ring-LL 10.8.
        let m = model("h100-sxm-8");
        let ar = m.time(CollectiveKind::AllReduce, 8, node(8));
        assert_eq!(
            (ar.config.algorithm.as_str(), ar.config.protocol.as_str()),
            ("ring", "ll")
        );
        assert!((kernel_us(&m, CollectiveKind::AllReduce, 0, node(8)) - 15.0).abs() < 1e-9);
        assert!((kernel_us(&m, CollectiveKind::AllGather, 0, node(8)) - 10.8).abs() < 1e-9);
        assert!((kernel_us(&m, CollectiveKind::ReduceScatter, 0, node(8)) - 10.8).abs() < 1e-9);
    }

    #[test]
    fn large_messages_reach_the_calibrated_bus_bandwidths() {
        let m = model("h100-sxm-8");
        let s: u64 = 1 << 40;
        let busbw = |kind, n| {
            let t = m.time(kind, s, node(n)).seconds - m.launch;
            to_f64(s) / t * busbw_factor(kind, n) / 1e9
        };
        // NVLS all-reduce 480, ring collectives 370 (nccl-tests #212).
        assert!((busbw(CollectiveKind::AllReduce, 8) - 480.0).abs() < 0.1);
        assert!((busbw(CollectiveKind::AllGather, 8) - 370.0).abs() < 0.1);
        assert!((busbw(CollectiveKind::ReduceScatter, 8) - 370.0).abs() < 0.1);
        assert_eq!(
            m.time(CollectiveKind::AllReduce, s, node(8)).algo,
            Algo::Nvls
        );
        // NVLS needs three GPUs: two use the ring at 370.
        assert_eq!(
            m.time(CollectiveKind::AllReduce, s, node(2)).algo,
            Algo::Ring
        );
    }

    #[test]
    fn a_group_of_one_costs_nothing() {
        let m = model("h100-sxm-8");
        let t = m.time(CollectiveKind::AllReduce, 1 << 30, node(1));
        assert_eq!(t.seconds, 0.0);
        assert_eq!(t.algo, Algo::Local);
    }

    #[test]
    fn time_grows_with_size_for_every_kind_and_profile() {
        for name in Profile::builtin_names() {
            let p = Profile::builtin(name).unwrap();
            let m = CollectiveModel::new(&p);
            let groups = [
                node(2),
                node(8),
                Group {
                    size: 16,
                    nodes: 2,
                    per_node: 8,
                },
            ];
            for kind in [
                CollectiveKind::AllReduce,
                CollectiveKind::AllGather,
                CollectiveKind::ReduceScatter,
                CollectiveKind::AllToAll,
                CollectiveKind::Send,
                CollectiveKind::Recv,
                CollectiveKind::Broadcast,
            ] {
                for g in groups {
                    let mut last = 0.0;
                    for e in 0..45 {
                        let t = m.time(kind, 1u64 << e, g).seconds;
                        assert!(t.is_finite() && t >= last, "{name} {kind:?} {g:?} 2^{e}");
                        last = t;
                    }
                }
            }
        }
    }

    #[test]
    fn groups_follow_the_row_major_device_order() {
        let p = Profile::builtin("h100-sxm-8x2-ndr").unwrap();
        let mesh = Mesh::new([("dp", 2), ("tp", 8)]).unwrap();
        assert_eq!(
            Group::of_axis(&mesh, "tp", &p).unwrap(),
            Group {
                size: 8,
                nodes: 1,
                per_node: 8
            }
        );
        // dp pairs device i with i+8: two nodes, one GPU each.
        assert_eq!(
            Group::of_axis(&mesh, "dp", &p).unwrap(),
            Group {
                size: 2,
                nodes: 2,
                per_node: 1
            }
        );
        let uneven = Mesh::new([("tp", 12)]).unwrap();
        assert_eq!(
            Group::of_axis(&uneven, "tp", &p).unwrap(),
            Group {
                size: 12,
                nodes: 2,
                per_node: 8
            }
        );
        let flat = Mesh::new([("tp", 16)]).unwrap();
        assert_eq!(
            Group::of_axis(&flat, "tp", &p).unwrap(),
            Group {
                size: 16,
                nodes: 2,
                per_node: 8
            }
        );
        assert!(Group::of_axis(&flat, "ep", &p).is_err());
    }

    #[test]
    fn profiles_without_tuner_constants_use_their_alpha_beta_figures() {
        // L20: 42 µs latency, 20 GB/s busbw (estimates in the profile).
        let m = model("l20-pcie-8");
        let t = m.time(CollectiveKind::AllReduce, 0, node(8));
        assert!(((t.seconds - m.launch) * 1e6 - 42.0).abs() < 1e-9);
        let s = 1u64 << 34;
        let t = m.time(CollectiveKind::AllReduce, s, node(8)).seconds - m.launch - 42e-6;
        let busbw = to_f64(s) / t * busbw_factor(CollectiveKind::AllReduce, 8);
        assert!((busbw / 20e9 - 1.0).abs() < 1e-9);
    }
}
