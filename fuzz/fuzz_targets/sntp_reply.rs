//! SNTP replies from the LAN (DHCP option 42 servers, or anyone who answers first) through
//! `phase_init::net::sntp::parse_reply` with a fuzz-chosen cookie and pivot date.
//!
//! Input: `[cookie u64][pivot: i64 s, u32 ns][reply bytes]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phase_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let cookie = input.u64();
    let pivot = input.datetime();
    let _ = phase_init::net::sntp::parse_reply(input.rest(), cookie, pivot);
});
