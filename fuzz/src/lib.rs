//! Helpers shared by the fuzz targets in `fuzz_targets/`: a reader that takes fixed-size fields
//! off the front of the fuzz input (so the fuzzer chooses a state, a clock or a size along with
//! the bytes of the parser under test) and the mapping of fuzz bytes to a clock.
//!
//! Every target feeds the bytes to the real parser; nothing here parses a format of ours.

use chrono::{DateTime, Utc};

/// Takes fields off the front of the fuzz input; a short input yields zeros, never a panic, so
/// every input is a valid run.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// The next `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let b = self.bytes(N);
        out[..b.len()].copy_from_slice(b);
        out
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// Big-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    /// Big-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }

    /// Big-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }

    /// Big-endian i64.
    pub fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.array())
    }

    /// A clock from 12 bytes: seconds since the epoch (big-endian i64) and nanoseconds
    /// (big-endian u32, modulo 10^9). Seconds outside chrono's range (years ±262143) give
    /// chrono's earliest or latest date, so the extremes are reached often.
    pub fn datetime(&mut self) -> DateTime<Utc> {
        let secs = self.i64();
        let nanos = self.u32() % 1_000_000_000;
        DateTime::from_timestamp(secs, nanos).unwrap_or(if secs < 0 {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
    }

    /// Everything not taken yet.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}
