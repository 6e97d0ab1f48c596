//! Discovery shared by `phase-init`, the `phase` tool and `plasmd` (DESIGN §6, seeds 002 and 004):
//! mDNS advertisement and browsing of `_phase-image._tcp.local.`, and Kademlia DHT publication
//! and lookup of `/phase/{channel}/{arch}/manifest` records. A record only points at a manifest
//! URL; the manifest it leads to is always verified by `phase_protocol::verify`.
#![forbid(unsafe_code)]
