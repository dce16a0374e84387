//! Simulated communication between ranks (threads that share nothing else).
//!
//! Semantics, fixed and documented so runs are bit-reproducible (they follow NCCL's
//! definitions of each collective; only the summation order is our choice):
//!
//! - ranks of a group are ordered by their coordinate on the mesh axis;
//! - `all_reduce` / `reduce_scatter` reduce element-wise in that order, left to right,
//!   in f32 (`((x0 + x1) + x2) + …`), and round once to the value's dtype; integers wrap;
//! - `all_gather` concatenates in group order; `reduce_scatter` gives group member `i`
//!   slice `i`; `all_to_all` sends chunk `j` of each input to member `j`, who
//!   concatenates what arrives in sender order; `broadcast` copies the root's input;
//! - `send` is buffered (never blocks); `recv` takes messages from one sender in the
//!   order they were sent.
//!
//! Every collective is matched across its group by a per-axis sequence number. Members
//! compare what they are doing (op, attributes, dtype, shape); any difference is an
//! error naming every member's view. A member that never arrives (it failed, or took
//! another path) is reported after the timeout, and a failure on one rank wakes the
//! others at once, so a run never hangs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use weft_ir::Tensor;

use crate::mesh_coords::RankGrid;

/// What a member contributes to a collective.
struct Deposit {
    /// `op(attrs) dtype[shape]`: must be identical across the group.
    signature: String,
    node: String,
    tensor: Arc<Tensor>,
}

#[derive(Hash, PartialEq, Eq, Clone)]
struct SlotKey {
    axis: String,
    /// The group's lowest rank identifies it.
    group: usize,
    seq: u64,
}

struct Slot {
    deposits: Vec<Option<Deposit>>,
    taken: usize,
}

struct Message {
    node: String,
    tensor: Arc<Tensor>,
}

#[derive(Default)]
struct State {
    slots: HashMap<SlotKey, Slot>,
    /// (axis, from, to) → messages in send order.
    mailboxes: HashMap<(String, usize, usize), VecDeque<Message>>,
    failed: Option<(usize, String)>,
    /// Ranks that ran their whole program: they will never arrive anywhere again.
    finished: Vec<usize>,
}

/// The shared medium all ranks of one run talk through.
pub struct World {
    grid: RankGrid,
    state: Mutex<State>,
    wake: Condvar,
    timeout: Duration,
}

/// Why a collective could not complete (the caller adds node and rank context).
#[derive(Debug)]
pub enum CommError {
    /// Members disagree or never arrived.
    Collective(String),
    /// Another rank failed; this one gives up.
    PeerFailed(usize, String),
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("ranks", &self.grid.ranks())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The time left before `deadline`: `None` once it has passed, `Some(None)` when there is
/// no deadline.
fn time_left(deadline: Option<Instant>) -> Option<Option<Duration>> {
    match deadline {
        None => Some(None),
        Some(d) => d
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .map(Some),
    }
}

impl World {
    pub fn new(grid: RankGrid, timeout: Duration) -> World {
        World {
            grid,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            timeout,
        }
    }

    pub fn grid(&self) -> &RankGrid {
        &self.grid
    }

    /// When a wait that starts now gives up; `None` when the timeout reaches past what
    /// the clock can represent (`--timeout 1e19`): such a wait never gives up, where
    /// `Instant + Duration` would panic.
    fn deadline(&self) -> Option<Instant> {
        Instant::now().checked_add(self.timeout)
    }

    /// Waits for a wake-up, at most `left` (`None`: without a time limit).
    fn wait<'a>(
        &self,
        state: MutexGuard<'a, State>,
        left: Option<Duration>,
    ) -> MutexGuard<'a, State> {
        match left {
            Some(left) => {
                self.wake
                    .wait_timeout(state, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => self.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a rank panicked mid-update; the state is still usable
        // for reporting, and panics are bugs we want to surface, not hide.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `rank`'s group along `axis` and its position in it.
    fn group(&self, rank: usize, axis: &str) -> Result<(Vec<usize>, usize), CommError> {
        self.grid
            .group(rank, axis)
            .ok_or_else(|| CommError::Collective(format!("mesh axis `{axis}` does not exist")))
    }

    /// Records that `rank` failed, waking every rank that waits on it.
    pub fn fail(&self, rank: usize, reason: String) {
        let mut state = self.lock();
        if state.failed.is_none() {
            state.failed = Some((rank, reason));
        }
        self.wake.notify_all();
    }

    /// Ends `rank`'s wait with `msg`: releases the lock, marks the run failed (waking every
    /// other waiter) and returns the error for `rank` itself.
    fn give_up(&self, state: MutexGuard<'_, State>, rank: usize, msg: String) -> CommError {
        drop(state);
        self.fail(rank, msg.clone());
        CommError::Collective(msg)
    }

    /// Records that `rank` completed its program, so peers waiting on it stop at once.
    pub fn finish(&self, rank: usize) {
        let mut state = self.lock();
        state.finished.push(rank);
        self.wake.notify_all();
    }

    /// Contributes `tensor` to the collective `signature` over `axis` and returns every
    /// member's contribution in group order, once all have arrived.
    pub fn exchange(
        &self,
        rank: usize,
        axis: &str,
        seq: u64,
        node: &str,
        signature: String,
        tensor: Arc<Tensor>,
    ) -> Result<Vec<Arc<Tensor>>, CommError> {
        let (members, me) = self.group(rank, axis)?;
        let key = SlotKey {
            axis: axis.to_owned(),
            group: members[0],
            seq,
        };
        let deadline = self.deadline();
        let mut state = self.lock();
        let slot = state.slots.entry(key.clone()).or_insert_with(|| Slot {
            deposits: (0..members.len()).map(|_| None).collect(),
            taken: 0,
        });
        // Two calls of this rank with one sequence number (a plan or program that numbers
        // its calls wrongly) would otherwise overwrite each other's deposit.
        if let Some(first) = &slot.deposits[me] {
            let msg = format!(
                "collective #{seq} over `{axis}`: this rank issued two calls with one sequence number (`{}` and `{node}`)",
                first.node
            );
            return Err(self.give_up(state, rank, msg));
        }
        slot.deposits[me] = Some(Deposit {
            signature,
            node: node.to_owned(),
            tensor,
        });
        self.wake.notify_all();
        loop {
            if let Some((failed, reason)) = &state.failed {
                return Err(CommError::PeerFailed(*failed, reason.clone()));
            }
            let Some(slot) = state.slots.get(&key) else {
                // The peers completed this exchange and removed it before this rank saw it
                // complete: only possible when two calls share a sequence number.
                let msg = format!(
                    "collective #{seq} over `{axis}` (`{node}`) was completed by its peers without this rank: two calls share one sequence number"
                );
                return Err(self.give_up(state, rank, msg));
            };
            if slot.deposits.iter().all(Option::is_some) {
                break;
            }
            let missing: Vec<usize> = members
                .iter()
                .zip(&slot.deposits)
                .filter(|(_, d)| d.is_none())
                .map(|(r, _)| *r)
                .collect();
            let gone: Vec<String> = missing
                .iter()
                .filter(|r| state.finished.contains(r))
                .map(|r| r.to_string())
                .collect();
            if !gone.is_empty() {
                let msg = format!(
                    "collective #{seq} on this axis: rank(s) {} of group {members:?} finished their program without reaching it",
                    gone.join(", ")
                );
                return Err(self.give_up(state, rank, msg));
            }
            let Some(left) = time_left(deadline) else {
                let missing: Vec<String> = missing.iter().map(|r| r.to_string()).collect();
                let msg = format!(
                    "collective #{seq} on this axis: rank(s) {} of group {members:?} did not arrive within {:.1} s (they failed, or took a different path)",
                    missing.join(", "),
                    self.timeout.as_secs_f64()
                );
                return Err(self.give_up(state, rank, msg));
            };
            state = self.wait(state, left);
        }
        let slot = state.slots.get_mut(&key).expect("checked above");
        let deposits: Vec<&Deposit> = slot.deposits.iter().flatten().collect();
        let first = &deposits[0].signature;
        if deposits.iter().any(|d| &d.signature != first) {
            let views: Vec<String> = members
                .iter()
                .zip(&deposits)
                .map(|(r, d)| format!("rank {r} runs `{}` as {}", d.node, d.signature))
                .collect();
            let msg = format!(
                "collective #{seq} on this axis: peers disagree: {}",
                views.join("; ")
            );
            return Err(CommError::Collective(msg));
        }
        let tensors = deposits.iter().map(|d| Arc::clone(&d.tensor)).collect();
        slot.taken += 1;
        if slot.taken == members.len() {
            state.slots.remove(&key);
        }
        Ok(tensors)
    }

    /// Buffers `tensor` for the rank `shift` steps further along `axis`.
    pub fn send(
        &self,
        rank: usize,
        axis: &str,
        shift: i64,
        node: &str,
        tensor: Arc<Tensor>,
    ) -> Result<(), CommError> {
        let (members, me) = self.group(rank, axis)?;
        let to = members[(me as i64 + shift).rem_euclid(members.len() as i64) as usize];
        let mut state = self.lock();
        state
            .mailboxes
            .entry((axis.to_owned(), rank, to))
            .or_default()
            .push_back(Message {
                node: node.to_owned(),
                tensor,
            });
        self.wake.notify_all();
        Ok(())
    }

    /// Takes the next message from the rank `shift` steps back along `axis`.
    /// Returns the sending node's name with the tensor.
    pub fn recv(
        &self,
        rank: usize,
        axis: &str,
        shift: i64,
    ) -> Result<(String, Arc<Tensor>), CommError> {
        let (members, me) = self.group(rank, axis)?;
        let from = members[(me as i64 - shift).rem_euclid(members.len() as i64) as usize];
        let key = (axis.to_owned(), from, rank);
        let deadline = self.deadline();
        let mut state = self.lock();
        loop {
            if let Some(message) = state.mailboxes.get_mut(&key).and_then(VecDeque::pop_front) {
                return Ok((message.node, message.tensor));
            }
            if let Some((failed, reason)) = &state.failed {
                return Err(CommError::PeerFailed(*failed, reason.clone()));
            }
            if state.finished.contains(&from) {
                let msg = format!("rank {from} finished its program without sending anything more");
                return Err(self.give_up(state, rank, msg));
            }
            let Some(left) = time_left(deadline) else {
                let msg = format!(
                    "nothing arrived from rank {from} within {:.1} s (it failed, or never sends)",
                    self.timeout.as_secs_f64()
                );
                return Err(self.give_up(state, rank, msg));
            };
            state = self.wait(state, left);
        }
    }
}
