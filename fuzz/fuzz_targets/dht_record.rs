//! DHT record values from the network through `phase_protocol::record`: a `ManifestRecord`
//! (`from_bytes`, then `expires_at` and `validate_for` at a fuzz-chosen clock, chrono's extreme
//! dates included, for the record's own channel and arch, so every check is reached) and a
//! boot-stage `PeerRecord` (`from_bytes`, `expires_at`, `validate_for` for a fixed release and
//! for the record's own digest).
//!
//! The same bytes also go through the publisher binding of storing nodes and clients,
//! `phase_discovery::dht::binding::check`, under the manifest and peer shared keys and their
//! per-peer keys.
//!
//! Input: `[now: i64 s, u32 ns][flags u8][record JSON]`; flags bit 0: clock not trusted
//! (`now` = `None`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use phase_fuzz::Input;
use phase_protocol::record::{peers_dht_key, PeerRecord};
use phase_protocol::{Arch, ManifestRecord, Sha256Digest};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let now = input.datetime();
    let now = (input.u8() & 1 == 0).then_some(now);
    static PEER: std::sync::OnceLock<libp2p_identity::PeerId> = std::sync::OnceLock::new();
    let peer = PEER.get_or_init(libp2p_identity::PeerId::random);
    let release = Sha256Digest::of(b"release");
    let manifest_key = "/phase/stable/x86_64/manifest".to_owned();
    let peers_key = peers_dht_key(&release);
    for shared in [manifest_key, peers_key] {
        for key in [shared.clone(), format!("{shared}/{peer}")] {
            let _ = phase_discovery::dht::binding::check(&key, input.rest(), Some(peer));
            let _ = phase_discovery::dht::binding::check(&key, input.rest(), None);
        }
    }
    if let Ok(record) = PeerRecord::from_bytes(input.rest()) {
        let _ = record.expires_at();
        let _ = record.validate_for(&release, now);
        let _ = record.validate_for(&record.manifest_sha256, now);
        let _ = PeerRecord::from_bytes(&record.to_bytes());
    }
    let Ok(record) = ManifestRecord::from_bytes(input.rest()) else {
        return;
    };
    let _ = record.expires_at();
    let _ = record.validate_for("stable", Arch::X86_64, now);
    if let Ok(arch) = record.arch.parse::<Arch>() {
        let _ = record.validate_for(&record.channel, arch, now);
    }
    let _ = ManifestRecord::from_bytes(&record.to_bytes());
});
