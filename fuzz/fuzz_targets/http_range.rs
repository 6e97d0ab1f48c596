//! `Range` / `If-Range` request headers from the network through
//! `phase_provider::routes::range_for` (and so `range::decide`), as `plasmd` answers a GET of
//! an artifact.
//!
//! Input: `[size u64][flags u8][Range value]\n[If-Range value]`; flags bit 0: the file has an
//! ETag (its hash is known), bit 1: `size` modulo 4096 (small files are the interesting ones).
//! A value that is not a valid header value is left out, as hyper would refuse the request.
//!
//! Checks besides "no panic": a partial answer lies inside the file, since the response is
//! built with `end - start + 1` bytes read from `start`.
#![no_main]

use http::header::{IF_RANGE, RANGE};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use phase_fuzz::Input;
use phase_provider::range::RangeDecision;
use phase_provider::routes::range_for;

const ETAG: &str = "\"a0c936696eb7d5ee3192bf53b9d281cecbb40ca9db520de72cb95817ad92ac72\"";

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut size = input.u64();
    let flags = input.u8();
    if flags & 2 != 0 {
        size %= 4096;
    }
    let etag = (flags & 1 != 0).then_some(ETAG);
    let mut parts = input.rest().splitn(2, |&b| b == b'\n');
    let mut headers = HeaderMap::new();
    for name in [RANGE, IF_RANGE] {
        if let Some(Ok(v)) = parts.next().map(HeaderValue::from_bytes) {
            headers.insert(name, v);
        }
    }
    if let RangeDecision::Partial { start, end } = range_for(&headers, etag, size) {
        assert!(start <= end && end < size, "{start}-{end} of {size}");
        let len = end - start + 1;
        assert!(start + len <= size);
    }
});
