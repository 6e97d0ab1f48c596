//! Artifact bytes from a peer through `phase_init::fetch::pieces::ChunkGate` (manifest v2,
//! issue 19): whatever the bytes and however the network slices them, the gate passes on
//! exactly the chunks whose digest matches, in order, and nothing after the first bad one.
//!
//! Input: `[chunk size: u8 -> 1..=256 bytes][flip: u8][slice lengths: 8 x u8][data]`. The
//! manifest's digests are those of `data`; when `flip` is odd, byte `flip / 2` of the fed copy
//! is changed, so the chunk holding it (if any) must be refused and nothing from it on passed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phase_fuzz::Input;
use phase_init::fetch::pieces::ChunkGate;
use phase_protocol::Sha256Digest;

fuzz_target!(|raw: &[u8]| {
    let mut input = Input::new(raw);
    let chunk = usize::from(input.u8()) + 1;
    let flip = input.u8();
    let slices: Vec<usize> = input.bytes(8).iter().map(|b| usize::from(*b) + 1).collect();
    let data = input.rest();
    let digests: Vec<Sha256Digest> = data.chunks(chunk).map(Sha256Digest::of).collect();
    let mut fed = data.to_vec();
    let bad_at = usize::from(flip / 2);
    let bad_chunk = (flip % 2 == 1 && bad_at < fed.len()).then(|| {
        fed[bad_at] ^= 0x5a;
        bad_at / chunk
    });
    let mut gate = ChunkGate::new(data.len() as u64, chunk as u64, &digests);
    let mut ready = Vec::new();
    let mut refused = None;
    let mut rest = &fed[..];
    let mut i = 0;
    while !rest.is_empty() && refused.is_none() {
        let n = slices[i % slices.len()].min(rest.len());
        i += 1;
        if let Err(m) = gate.feed(bytes::Bytes::copy_from_slice(&rest[..n]), &mut ready) {
            refused = Some(m.index as usize);
        }
        rest = &rest[n..];
    }
    let passed: Vec<u8> = ready.iter().flat_map(|b| b.iter().copied()).collect();
    assert_eq!(refused, bad_chunk, "the flipped chunk and only it is refused");
    let good_len = bad_chunk.map_or(data.len(), |c| c * chunk);
    assert_eq!(passed, &data[..good_len], "exactly the good prefix passes");
});
