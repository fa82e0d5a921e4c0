//! Helpers shared by the fuzz targets: the record format that lets one input carry a
//! sequence of datagrams with the time between them.
//!
//! An input is a list of records, each `[flags: u8][advance: u8][len: u16 BE][len bytes]`; a
//! last record shorter than its `len` takes what is left. `fuzz/make_seeds.py` writes seeds
//! in this format from real packets, so libFuzzer starts from valid traffic and mutates it.

use std::time::Duration;

/// One datagram of a fuzz input.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Target-specific choices (socket, source address, transport, TU reaction...).
    pub flags: u8,
    /// Virtual time that passes before this datagram arrives.
    pub advance: Duration,
    pub data: &'a [u8],
}

/// Splits `input` into records. Time steps are `advance * 4 ms` for values below 250 (up to
/// about 1 s), and 250..=255 jump 1..=6 *seconds x 10*, so a few records reach the long
/// timers (SIP timer B/F/H at 32 s, RTCP every 5 s).
pub fn records(mut input: &[u8]) -> impl Iterator<Item = Record<'_>> {
    std::iter::from_fn(move || {
        if input.len() < 4 {
            return None;
        }
        let flags = input[0];
        let advance = match input[1] {
            n @ 0..=249 => Duration::from_millis(u64::from(n) * 4),
            n => Duration::from_secs(u64::from(n - 249) * 10),
        };
        let len = usize::from(u16::from_be_bytes([input[2], input[3]]));
        let rest = &input[4..];
        let take = len.min(rest.len());
        let (data, tail) = rest.split_at(take);
        input = tail;
        Some(Record {
            flags,
            advance,
            data,
        })
    })
}
