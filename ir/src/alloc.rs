//! Buffers whose size comes from the user (dims, files, inputs), allocated without
//! aborting: Rust's infallible allocation aborts the process when the system refuses,
//! so every large buffer goes through [`try_collect`] or [`try_filled`] and a refusal is
//! an [`AllocError`] that names the size.

use std::collections::TryReserveError;

/// A buffer the system would not provide.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot allocate {elements} elements of {elem_bytes} bytes ({bytes} bytes): {reason}; \
     reduce the dims (`--dim`) or run on a machine with more memory"
)]
pub struct AllocError {
    pub elements: usize,
    pub elem_bytes: usize,
    /// `elements · elem_bytes`, exact.
    pub bytes: u128,
    pub reason: String,
}

impl AllocError {
    fn new<T>(elements: usize, e: TryReserveError) -> AllocError {
        let elem_bytes = std::mem::size_of::<T>();
        AllocError {
            elements,
            elem_bytes,
            bytes: elements as u128 * elem_bytes as u128,
            reason: e.to_string(),
        }
    }
}

/// An empty vector with room for exactly `n` elements, or an error.
pub fn try_with_capacity<T>(n: usize) -> Result<Vec<T>, AllocError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|e| AllocError::new::<T>(n, e))?;
    Ok(v)
}

/// `n` copies of `value`, or an error.
pub fn try_filled<T: Clone>(n: usize, value: T) -> Result<Vec<T>, AllocError> {
    let mut v = try_with_capacity(n)?;
    v.resize(n, value);
    Ok(v)
}

/// The items of `iter`, reserving its lower size bound up front (an iterator of exact
/// size never grows the buffer again), or an error.
pub fn try_collect<T>(iter: impl IntoIterator<Item = T>) -> Result<Vec<T>, AllocError> {
    let iter = iter.into_iter();
    let mut v = try_with_capacity(iter.size_hint().0)?;
    for x in iter {
        if v.len() == v.capacity() {
            v.try_reserve(1)
                .map_err(|e| AllocError::new::<T>(v.len() + 1, e))?;
        }
        v.push(x);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impossible_buffer_is_an_error_not_an_abort() {
        // 2^62 f32 = 2^64 bytes: beyond any address space.
        let e = try_filled(1usize << 62, 0f32).unwrap_err();
        assert_eq!(e.bytes, 1u128 << 64);
        assert!(e.to_string().contains("18446744073709551616 bytes"), "{e}");
        let e = try_collect((0..1usize << 61).map(|i| i as u64)).unwrap_err();
        assert_eq!(e.elem_bytes, 8);
        assert_eq!(try_collect(0..5u8).unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(try_filled(3, 7i64).unwrap(), vec![7; 3]);
    }
}
