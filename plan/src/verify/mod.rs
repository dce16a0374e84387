//! `verify_plan`: the static checks a plan must pass before anything runs it.
//!
//! Every check collects all its violations (each naming the rank, the task(s) and the
//! node or buffer), so one run shows every problem. Checks that need a sound structure
//! (ids in range, no cycle) are skipped for a rank whose structure is broken, since
//! their findings would only repeat the first error. What is checked, rule by rule, is
//! listed in docs/plan-format.md.

mod buffers;
mod collectives;
mod deadlock;
mod ids;
mod kernel_facts;
mod order;
mod program;
mod times;

use std::collections::HashMap;

use weft_ir::{Graph, NodeId, ValueId};

use crate::{PLAN_FORMAT, PLAN_VERSION, Plan, PlanErrors, PlanRule, RankPlan, Violation};

pub(crate) use order::Order;

/// Checks `plan` against the program it runs (the plan's `program`, parsed): see the
/// module docs. Returns every violation found.
pub fn verify_plan(plan: &Plan, program: &Graph) -> Result<(), PlanErrors> {
    let mut v = Verifier::new(program);
    if !v.header(plan) {
        // Every rank check sizes groups and coordinates by the plan's mesh: one that is
        // not the program's, or whose device count is not the rank count, could ask for
        // billions of group members (a panic, not a finding), and every rank's findings
        // would only repeat the header's.
        return Err(PlanErrors(v.out));
    }
    let mut per_rank = Vec::with_capacity(plan.ranks.len());
    for rp in &plan.ranks {
        per_rank.push(v.rank(plan, rp));
    }
    collectives::across_ranks(&mut v, plan, &per_rank);
    kernel_facts::chunks_across_ranks(&mut v, plan, &per_rank);
    if v.out.is_empty() {
        deadlock::across_ranks(&mut v, plan, &per_rank);
    }
    times::prediction(&mut v, plan);
    if v.out.is_empty() {
        Ok(())
    } else {
        Err(PlanErrors(v.out))
    }
}

/// The program's lookups and the violations found so far.
pub(crate) struct Verifier<'a> {
    pub program: &'a Graph,
    pub node_by_name: HashMap<&'a str, NodeId>,
    pub value_by_name: HashMap<&'a str, ValueId>,
    pub out: Vec<Violation>,
}

/// What one rank's checks learned, for the checks across ranks.
pub(crate) struct RankFacts {
    /// Whether every check of the rank ran (a rank with broken structure is left out of
    /// the comparisons across ranks, which would only repeat its error).
    pub complete: bool,
    /// The rank's collective calls per group, in issue order: (axis, group) →
    /// (task, kind, node names).
    pub calls: collectives::Calls,
}

impl<'a> Verifier<'a> {
    fn new(program: &'a Graph) -> Verifier<'a> {
        Verifier {
            program,
            node_by_name: program
                .nodes()
                .map(|(id, n)| (n.name.as_str(), id))
                .collect(),
            value_by_name: program
                .values()
                .map(|(id, v)| (v.name.as_str(), id))
                .collect(),
            out: Vec::new(),
        }
    }

    pub fn err(&mut self, rank: Option<u32>, rule: PlanRule, message: String) {
        self.out.push(Violation {
            rank,
            rule,
            message,
        });
    }

    /// Checks the header; returns whether the mesh and the rank count are sound (the
    /// plan's mesh is the program's and has one device per rank entry).
    fn header(&mut self, plan: &Plan) -> bool {
        if plan.format != PLAN_FORMAT {
            let m = format!("`format` is `{}`, not `{PLAN_FORMAT}`", plan.format);
            self.err(None, PlanRule::Header, m);
        }
        if plan.version != PLAN_VERSION {
            let m = format!("`version` is {}, not {PLAN_VERSION}", plan.version);
            self.err(None, PlanRule::Header, m);
        }
        let program_mesh: Vec<(&str, u64)> = self
            .program
            .mesh
            .axes()
            .iter()
            .map(|a| (a.name.as_str(), a.size))
            .collect();
        let plan_mesh: Vec<(&str, u64)> = plan
            .mesh
            .iter()
            .map(|a| (a.name.as_str(), a.size))
            .collect();
        let mut sound = program_mesh == plan_mesh;
        if !sound {
            let m = format!("the plan's mesh {plan_mesh:?} is not the program's {program_mesh:?}");
            self.err(None, PlanRule::Header, m);
        }
        if plan.dims != self.program.dims {
            let m = format!(
                "the plan's dims {:?} are not the program's {:?}",
                plan.dims, self.program.dims
            );
            self.err(None, PlanRule::Header, m);
        }
        match crate::mesh::device_count(&plan.mesh) {
            Some(n) if n as usize == plan.ranks.len() => {}
            n => {
                sound = false;
                let m = format!(
                    "the mesh has {} device(s) but the plan has {} rank(s)",
                    n.map_or_else(|| "more than 2^32".to_owned(), |n| n.to_string()),
                    plan.ranks.len()
                );
                self.err(None, PlanRule::Header, m);
            }
        }
        for (i, rp) in plan.ranks.iter().enumerate() {
            if rp.rank as usize != i {
                let m = format!("rank entry {i} says it is rank {}", rp.rank);
                self.err(Some(rp.rank), PlanRule::Header, m);
            } else if rp.coords != crate::mesh::coords(&plan.mesh, rp.rank) {
                let m = format!(
                    "coordinates {:?} are not the mesh's {:?}",
                    rp.coords,
                    crate::mesh::coords(&plan.mesh, rp.rank)
                );
                self.err(Some(rp.rank), PlanRule::Header, m);
            }
        }
        sound
    }

    fn rank(&mut self, plan: &Plan, rp: &RankPlan) -> RankFacts {
        let mut facts = RankFacts {
            complete: false,
            calls: Vec::new(),
        };
        let r = Some(rp.rank);
        if !ids::check(self, rp) {
            return facts;
        }
        ids::issue_order(self, rp);
        let Some(placed) = program::place_nodes(self, rp) else {
            return facts;
        };
        program::kernels(self, rp);
        kernel_facts::on_rank(self, plan, rp);
        let order = match Order::new(rp) {
            Ok(o) => o,
            Err(cycle) => {
                let names: Vec<String> = cycle.iter().map(|&t| task_label(rp, t)).collect();
                let m = format!(
                    "the stream orders and event waits form a cycle (the rank would hang): {}",
                    names.join(" -> ")
                );
                self.err(r, PlanRule::Deadlock, m);
                return facts;
            }
        };
        program::dependencies(self, rp, &placed, &order);
        buffers::check(self, rp, &placed, &order);
        facts.calls = collectives::on_rank(self, plan, rp, &order);
        times::on_rank(self, rp, &order);
        facts.complete = true;
        facts
    }
}

/// `task 3 (stream compute: `a`, `b`)`, for messages.
pub(crate) fn task_label(rp: &RankPlan, t: usize) -> String {
    let Some(task) = rp.tasks.get(t) else {
        return format!("task {t} (no such task)");
    };
    let stream = rp
        .streams
        .get(task.stream.0 as usize)
        .map_or("?", |s| s.name.as_str());
    let nodes: Vec<String> = task.nodes.iter().map(|n| format!("`{n}`")).collect();
    format!("task {t} (stream {stream}: {})", nodes.join(", "))
}
