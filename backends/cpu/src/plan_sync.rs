//! What a plan's stream threads share: events (a mutex and condition variable each,
//! carrying the recorder's vector clock) and each rank's value store, where every value
//! is stamped with the task that wrote it, so a read the plan does not order after its
//! write is caught whatever the threads' timing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use weft_ir::Tensor;

/// A vector clock over one rank's streams: entry `s` counts the tasks of stream `s`
/// known complete.
pub(crate) type Clock = Vec<u32>;

/// Who wrote a value: a task's (stream, position on the stream); `None` for sources,
/// present before any task starts.
pub(crate) type Stamp = Option<(usize, u32)>;

#[derive(Debug)]
struct Event {
    /// The recorder's clock once recorded.
    clock: Mutex<Option<Clock>>,
    cv: Condvar,
}

/// Why an event wait ended without the event.
#[derive(Debug)]
pub(crate) enum WaitError {
    /// Another thread of the run failed; this one stops.
    Stopped,
    /// Nothing recorded the event within the timeout.
    TimedOut,
}

/// Every rank's events and the run's failure flag.
#[derive(Debug)]
pub(crate) struct Events {
    per_rank: Vec<Vec<Event>>,
    stopped: AtomicBool,
    timeout: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a thread panicked; the data is still fine to read for the
    // error report, and the panic itself is reported by the join.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Events {
    /// `counts[r]` events for rank `r`.
    pub fn new(counts: &[usize], timeout: Duration) -> Events {
        Events {
            per_rank: counts
                .iter()
                .map(|&n| {
                    (0..n)
                        .map(|_| Event {
                            clock: Mutex::new(None),
                            cv: Condvar::new(),
                        })
                        .collect()
                })
                .collect(),
            stopped: AtomicBool::new(false),
            timeout,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Records event `e` of `rank` with the recorder's clock, waking its waiters.
    pub fn record(&self, rank: usize, e: usize, clock: &Clock) {
        let ev = &self.per_rank[rank][e];
        *lock(&ev.clock) = Some(clock.clone());
        ev.cv.notify_all();
    }

    /// Waits for event `e` of `rank` and returns the recorder's clock.
    pub fn wait(&self, rank: usize, e: usize) -> Result<Clock, WaitError> {
        let ev = &self.per_rank[rank][e];
        let deadline = Instant::now().checked_add(self.timeout);
        let mut state = lock(&ev.clock);
        loop {
            if let Some(c) = state.as_ref() {
                return Ok(c.clone());
            }
            if self.stopped.load(Ordering::SeqCst) {
                return Err(WaitError::Stopped);
            }
            state = match deadline {
                None => ev.cv.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(WaitError::TimedOut);
                    }
                    ev.cv
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Stops every waiting thread of the run (a thread failed).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for ev in self.per_rank.iter().flatten() {
            // Taking the lock orders the flag before any waiter's next check.
            drop(lock(&ev.clock));
            ev.cv.notify_all();
        }
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// A value in a rank's store.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub tensor: Arc<Tensor>,
    pub stamp: Stamp,
}

/// One rank's values by value index, with how many tasks have yet to read each (a value
/// goes once its last reader is done, unless it is a graph output).
#[derive(Debug)]
pub(crate) struct Store {
    inner: Mutex<(Vec<Option<Slot>>, Vec<u32>)>,
}

impl Store {
    pub fn new(values: usize, readers: Vec<u32>) -> Store {
        Store {
            inner: Mutex::new((vec![None; values], readers)),
        }
    }

    pub fn get(&self, v: usize) -> Option<Slot> {
        lock(&self.inner).0[v].clone()
    }

    /// Stores `v`, unless nothing will read it and `keep` is false.
    pub fn put(&self, v: usize, slot: Slot, keep: bool) {
        let mut inner = lock(&self.inner);
        if keep || inner.1[v] > 0 {
            inner.0[v] = Some(slot);
        }
    }

    /// A task that read `v` is done; drops `v` when it was the last reader and `keep`
    /// is false.
    pub fn release(&self, v: usize, keep: bool) {
        let mut inner = lock(&self.inner);
        let left = &mut inner.1[v];
        *left = left.saturating_sub(1);
        if *left == 0 && !keep {
            inner.0[v] = None;
        }
    }
}
