//! `plasmd`: the Phase Boot provider (seeds 000 and 001, DESIGN §8).
//!
//! The HTTP half of the self-hosting loop: it serves signed boot artifacts from an artifacts
//! directory and advertises them on mDNS and the DHT. It runs on an operator's machine and,
//! after kexec, inside every booted target (`plasmd serve --artifacts /var/lib/phase/boot`).
//! Modules: [`config`] (flags + TOML), [`store`] (what exists and may be served),
//! [`hashcache`] and [`generate`] (hashes, generated manifests), [`routes`] (the axum API),
//! [`range`] and [`body`] (Range requests, large-chunk file bodies), [`server`] (connections,
//! limits, TLS, shutdown) with [`connections`] (open connections, per-IP cap) and
//! [`write_timeout`] (dropping clients that stop reading), [`metrics`], [`serve`] (wiring), [`cli`] and [`commands`] (the CLI),
//! [`client`] (`plasmd provider status|list`), [`advertise`] (mDNS + DHT).
#![forbid(unsafe_code)]

pub mod advertise;
pub mod body;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod connections;
pub mod generate;
pub mod hashcache;
pub mod metrics;
/// HTTP `Range` decisions (RFC 9110 §14); shared with the peer server of `phase fetch --serve`.
pub use phase_protocol::range;
pub mod routes;
pub mod serve;
pub mod server;
pub mod store;
pub mod write_timeout;

/// `err` and its `source()` chain joined by `: ` (cloud-hypervisor `cli_print_error_chain`).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
