//! A peer's have-map and the peer server's answers (issue 19 §3): bytes from the network through
//! `phase_protocol::chunks::decode_have`, then a `phase_init::fetch::share::Shelf` offering the
//! decoded chunks answers a fuzzed `Range`. A map that parses has one flag per chunk and
//! encodes back to the same bytes; a 206 or 200 answer carries exactly the asked bytes of the
//! file, at most one chunk's size, and only bytes of chunks the map holds.
//!
//! Input: `[chunks: u8][range length: u8][range header][map bytes]`. Chunks are 16 bytes; the
//! artifact is `chunks * 16 - 3` bytes of a fixed file (the last chunk is short).
#![no_main]

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use phase_fuzz::Input;
use phase_init::fetch::share::Shelf;
use phase_protocol::chunks::{decode_have, encode_have};

const CHUNK: u64 = 16;
const PATH: &str = "/stable/x86_64/rootfs";

fn file() -> &'static File {
    static FILE: OnceLock<File> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("phase-fuzz-have-{}", std::process::id()));
        let mut f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("temp file");
        let _ = std::fs::remove_file(&path);
        let bytes: Vec<u8> = (0..256 * CHUNK).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&bytes).expect("write");
        f
    })
}

fuzz_target!(|raw: &[u8]| {
    let mut input = Input::new(raw);
    let chunks = u64::from(input.u8());
    let range_len = usize::from(input.u8());
    let range = String::from_utf8_lossy(input.bytes(range_len)).into_owned();
    let map = input.rest();
    let Ok(have) = decode_have(map, chunks) else {
        return;
    };
    assert_eq!(have.len() as u64, chunks);
    assert_eq!(encode_have(&have), map, "a map that parses encodes back");
    let size = (chunks * CHUNK).saturating_sub(3);
    let shelf = Shelf::new();
    shelf.offer(PATH, file().try_clone().expect("dup"), size, CHUNK, have.clone());
    let a = shelf.answer(&Method::GET, PATH, Some(&range));
    if a.status.is_success() {
        let (start, end) = match a.headers.iter().find(|(n, _)| *n == "content-range") {
            Some((_, v)) => {
                let spec = v.strip_prefix("bytes ").expect("bytes unit");
                let (span, total) = spec.split_once('/').expect("total");
                assert_eq!(total.parse::<u64>().ok(), Some(size));
                let (s, e) = span.split_once('-').expect("span");
                (s.parse::<u64>().expect("start"), e.parse::<u64>().expect("end"))
            }
            None => (0, size - 1),
        };
        assert!(start <= end && end < size);
        assert!(end - start < CHUNK, "an answer of more than one chunk's size");
        let body = a.read_body().expect("read the answer's range");
        assert_eq!(body.len() as u64, end - start + 1);
        assert_eq!(a.len(), body.len() as u64);
        for c in start / CHUNK..=end / CHUNK {
            assert!(have[c as usize], "served chunk {c}, which is not held");
        }
        let mut want = vec![0u8; body.len()];
        file().read_exact_at(&mut want, start).expect("read");
        assert_eq!(body, want);
    }
});
