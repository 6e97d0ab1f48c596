//! Boot modes and their policy (DESIGN §4, seed 003 "Boot Mode Pattern").

use std::fmt;
use std::str::FromStr;

/// How a machine finds, keeps and identifies itself while it boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BootMode {
    /// Full network: DHT (and mDNS), writes the verified release to the cache, stable identity.
    #[default]
    Internet,
    /// LAN only: cache first, then mDNS; reads the cache, never writes it.
    Local,
    /// DHT as a client with a fresh key each boot; writes nothing to any disk.
    Private,
}

/// A place a boot mode looks for a manifest, in the order [`BootMode::sources`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The `phase-cache` partition (or ESP directory) written by an earlier internet boot.
    Cache,
    /// `_phase-image._tcp.local.` on the LAN.
    Mdns,
    /// The Kademlia DHT.
    Dht,
}

/// An unknown `phase.mode=` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown boot mode {0:?} (expected internet, local or private)")]
pub struct UnknownMode(pub String);

impl BootMode {
    /// The `phase.mode=` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Internet => "internet",
            BootMode::Local => "local",
            BootMode::Private => "private",
        }
    }

    /// Where this mode looks for a manifest, first to last.
    pub fn sources(self) -> &'static [Source] {
        match self {
            BootMode::Internet => &[Source::Mdns, Source::Dht],
            BootMode::Local => &[Source::Cache, Source::Mdns],
            BootMode::Private => &[Source::Dht],
        }
    }

    /// True when the verified manifest and artifacts are written to the cache (internet only).
    pub fn writes_cache(self) -> bool {
        matches!(self, BootMode::Internet)
    }

    /// True when the mode may read the cache partition.
    pub fn reads_cache(self) -> bool {
        !matches!(self, BootMode::Private)
    }

    /// True when the boot stage may serve verified chunks to peers on the LAN and announce
    /// itself for them (issue 19 §3): local and internet. Private mode never listens.
    pub fn serves_peers(self) -> bool {
        !matches!(self, BootMode::Private)
    }

    /// True when the libp2p identity is generated fresh each boot and never stored.
    pub fn ephemeral_identity(self) -> bool {
        matches!(self, BootMode::Private)
    }

    /// True when the DHT node runs in Kademlia client mode (stores nothing for others).
    pub fn dht_client_only(self) -> bool {
        matches!(self, BootMode::Private)
    }
}

impl FromStr for BootMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "internet" => Ok(BootMode::Internet),
            "local" => Ok(BootMode::Local),
            "private" => Ok(BootMode::Private),
            other => Err(UnknownMode(other.to_owned())),
        }
    }
}

impl fmt::Display for BootMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_internet_writes_the_cache_and_private_reads_nothing() {
        assert!(BootMode::Internet.writes_cache());
        assert!(BootMode::Local.serves_peers() && BootMode::Internet.serves_peers());
        assert!(
            !BootMode::Private.serves_peers(),
            "private mode never listens"
        );
        assert!(!BootMode::Local.writes_cache());
        assert!(!BootMode::Private.writes_cache());
        assert!(!BootMode::Private.reads_cache());
        assert!(BootMode::Private.ephemeral_identity());
        assert!(BootMode::Private.dht_client_only());
        assert!(!BootMode::Internet.dht_client_only());
    }

    #[test]
    fn local_tries_the_cache_before_mdns() {
        assert_eq!(BootMode::Local.sources(), &[Source::Cache, Source::Mdns]);
        assert_eq!(BootMode::Private.sources(), &[Source::Dht]);
    }

    #[test]
    fn modes_round_trip_and_unknown_is_refused() {
        for m in [BootMode::Internet, BootMode::Local, BootMode::Private] {
            assert_eq!(m.as_str().parse::<BootMode>(), Ok(m));
        }
        assert!("tor".parse::<BootMode>().is_err());
        assert_eq!(BootMode::default(), BootMode::Internet);
    }
}
