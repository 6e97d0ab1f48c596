//! The rollback state files of the cache disk (`state.json` and `state.json.bak`, written by
//! anyone who had the disk) through `phase_init::fetch::state::RollbackState::load`: size cap,
//! empty-file check, JSON, format check and the merge of the two copies. Then the floors it
//! yields, and a round trip: what `save` would write for the loaded state loads back equal (a
//! state that cannot be read back would lose the rollback floor).
//!
//! Input: `[flags u8][len u16][len bytes of state.json][state.json.bak]`; flags bit 0 writes
//! `state.json`, bit 1 `state.json.bak` (a copy not written is missing). The files go to a
//! directory of this process under /dev/shm (or the temp dir), since the reader opens files.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use phase_fuzz::Input;
use phase_init::fetch::state::{RollbackState, BACKUP_FILE, STATE_FILE};
use phase_protocol::Expectation;

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("phase-fuzz-state-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create the state directory");
        d
    })
}

fn put(name: &str, bytes: Option<&[u8]>) {
    // Recreated if something cleaned /dev/shm meanwhile (scripts/fuzz.sh removes the
    // directories of finished runs).
    std::fs::create_dir_all(dir()).expect("create the state directory");
    let path = dir().join(name);
    match bytes {
        Some(b) => std::fs::write(&path, b).expect("write a state copy"),
        None => {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.u8();
    let len = usize::from(input.u16());
    let first = input.bytes(len);
    let second = input.rest();
    put(STATE_FILE, (flags & 1 != 0).then_some(first));
    put(BACKUP_FILE, (flags & 2 != 0).then_some(second));
    let Ok(state) = RollbackState::load(dir()) else {
        return;
    };
    let base = Expectation::default();
    let _ = state.tighten_time(&base);
    let _ = state.summary();
    for key in state.releases.keys() {
        let (channel, arch) = key.split_once('/').unwrap_or((key, ""));
        let _ = state.min_version(channel, arch);
        let _ = state.expectation_for(channel, arch, &base);
    }
    // The bytes RollbackState::save writes to both copies (without its fsyncs).
    let mut text = serde_json::to_vec_pretty(&state).expect("a loaded state serialises");
    text.push(b'\n');
    put(STATE_FILE, Some(&text));
    put(BACKUP_FILE, Some(&text));
    let back = RollbackState::load(dir()).expect("a saved state loads");
    assert_eq!(back, state);
});
