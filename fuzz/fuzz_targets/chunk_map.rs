//! `<artifact>.partial.chunks`, the resume map a failed v2 fetch leaves beside its partial file
//! (bytes from a disk), through `phase_init::fetch::resume::parse_map`: a map that parses has
//! one flag per chunk and writes back to the same bytes.
//!
//! Input: `[size: u64][chunk size: u16 + 1][flip: u8][map bytes]`. The artifact hash is fixed;
//! when `flip` is odd the map's hash field is taken from the input as is, else it is set to the
//! fixed hash so the flag checks are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phase_fuzz::Input;
use phase_init::fetch::resume::{fresh_map, parse_map, MAP_HEADER};
use phase_protocol::Sha256Digest;

fuzz_target!(|raw: &[u8]| {
    let hash = Sha256Digest([7u8; 32]);
    let mut input = Input::new(raw);
    let size = input.u64() % (1 << 20);
    let chunk_size = u64::from(input.u16()) + 1;
    let flip = input.u8();
    let mut map = input.rest().to_vec();
    if flip % 2 == 0 && map.len() >= 40 {
        map[8..40].copy_from_slice(&hash.0);
    }
    if let Some(flags) = parse_map(&map, &hash, size, chunk_size) {
        assert_eq!(flags.len() as u64, size.div_ceil(chunk_size));
        let mut again = fresh_map(&hash, size, chunk_size, flags.len());
        for (i, f) in flags.iter().enumerate() {
            again[MAP_HEADER + i] = u8::from(*f);
        }
        assert_eq!(again, map, "a map that parses writes back to the same bytes");
    }
});
