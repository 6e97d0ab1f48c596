//! DHT record values from the network through `phase_protocol::record::ManifestRecord`:
//! `from_bytes`, then `expires_at` and `validate_for` at a fuzz-chosen clock (chrono's extreme
//! dates included) for the record's own channel and arch, so every check is reached.
//!
//! The same bytes also go through the publisher binding of storing nodes and clients,
//! `phase_discovery::dht::binding::check`, under the shared key and a per-peer key.
//!
//! Input: `[now: i64 s, u32 ns][flags u8][record JSON]`; flags bit 0: clock not trusted
//! (`now` = `None`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use phase_fuzz::Input;
use phase_protocol::{Arch, ManifestRecord};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let now = input.datetime();
    let now = (input.u8() & 1 == 0).then_some(now);
    static PEER: std::sync::OnceLock<libp2p_identity::PeerId> = std::sync::OnceLock::new();
    let peer = PEER.get_or_init(libp2p_identity::PeerId::random);
    let per_peer = format!("/phase/stable/x86_64/manifest/{peer}");
    for key in ["/phase/stable/x86_64/manifest", per_peer.as_str()] {
        let _ = phase_discovery::dht::binding::check(key, input.rest(), Some(peer));
        let _ = phase_discovery::dht::binding::check(key, input.rest(), None);
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
