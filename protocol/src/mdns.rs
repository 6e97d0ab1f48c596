//! The mDNS advertisement schema (DESIGN §6, seed 002 "mDNS Service").
//!
//! Service type `_phase-image._tcp.local.`, one instance per (channel, arch) served, with TXT
//! keys `arch`, `channel`, `manifest` (absolute URL) and `version`.
//!
//! Peers (issue 19 §3): a machine in the boot stage that fetches a v2 release announces
//! `_phase-peer._tcp.local.` with TXT `manifest-sha256` (`sha256:<hex>` of the signed manifest
//! bytes it verified) and `url` (its chunk server, `http://<lease address>:<port>`), so that
//! machines booting the same release at the same time find each other ([`PeerAdvert`]).

use crate::arch::Arch;
use crate::digest::Sha256Digest;

/// The DNS-SD service type.
pub const SERVICE_TYPE: &str = "_phase-image._tcp.local.";
/// TXT key: architecture (canonical name).
pub const TXT_ARCH: &str = "arch";
/// TXT key: channel.
pub const TXT_CHANNEL: &str = "channel";
/// TXT key: absolute manifest URL.
pub const TXT_MANIFEST: &str = "manifest";
/// TXT key: version of the manifest served.
pub const TXT_VERSION: &str = "version";

/// The DNS-SD service type of peers in the boot stage.
pub const PEER_SERVICE_TYPE: &str = "_phase-peer._tcp.local.";
/// Peer TXT key: `sha256:<hex>` of the signed manifest bytes the peer fetches.
pub const TXT_MANIFEST_SHA256: &str = "manifest-sha256";
/// Peer TXT key: base URL of the peer's chunk server (`http://192.0.2.11:7400`).
pub const TXT_URL: &str = "url";

/// What one `_phase-peer._tcp` instance says: which release (by manifest digest) and where its
/// verified chunks are served. Untrusted: a peer's chunks are still checked against the signed
/// chunk list, so a lying advert costs at most the polls of one peer slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAdvert {
    /// SHA-256 of the exact signed manifest bytes (what [`crate::manifest`] verified).
    pub manifest_sha256: Sha256Digest,
    /// `http://<host>:<port>` with no path: the base the release's paths are served under.
    pub url: String,
}

/// What one mDNS service instance says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsAdvert {
    /// Channel served.
    pub channel: String,
    /// Architecture served.
    pub arch: Arch,
    /// Absolute http(s) URL of the manifest.
    pub manifest_url: String,
    /// Version served.
    pub version: String,
}

/// TXT properties that do not make an advertisement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxtError {
    /// A required key is absent.
    #[error("TXT record has no {0:?} key")]
    Missing(&'static str),
    /// The arch is not one Phase Boot knows.
    #[error(transparent)]
    Arch(#[from] crate::arch::UnknownArch),
    /// The manifest URL is not absolute http(s).
    #[error("TXT manifest {0:?} is not an absolute http(s) URL")]
    BadUrl(String),
    /// A peer's `manifest-sha256` is not 64 hex digits.
    #[error("TXT manifest-sha256 {0:?} is not sha256:<64 hex digits>")]
    BadDigest(String),
    /// A peer's `url` is not `http://host:port` without a path.
    #[error("TXT url {0:?} is not http://host:port")]
    BadPeerUrl(String),
}

impl PeerAdvert {
    /// The TXT properties to announce.
    pub fn txt_properties(&self) -> Vec<(&'static str, String)> {
        vec![
            (TXT_MANIFEST_SHA256, self.manifest_sha256.to_string()),
            (TXT_URL, self.url.clone()),
        ]
    }

    /// Reads a peer advertisement from TXT properties (key, value); unknown keys are ignored.
    ///
    /// # Errors
    /// [`TxtError::Missing`], [`TxtError::BadDigest`], [`TxtError::BadPeerUrl`] (not plain
    /// http, no host, no explicit port, or a path, query or user part).
    pub fn from_txt<'a>(
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, TxtError> {
        let (mut digest, mut url) = (None, None);
        for (k, v) in props {
            match k {
                TXT_MANIFEST_SHA256 => digest = Some(v),
                TXT_URL => url = Some(v),
                _ => {}
            }
        }
        let digest = digest.ok_or(TxtError::Missing(TXT_MANIFEST_SHA256))?;
        let manifest_sha256 = digest
            .parse()
            .map_err(|_| TxtError::BadDigest(digest.to_owned()))?;
        let url = url.ok_or(TxtError::Missing(TXT_URL))?;
        let url = peer_base_url(url).ok_or_else(|| TxtError::BadPeerUrl(url.to_owned()))?;
        Ok(PeerAdvert {
            manifest_sha256,
            url,
        })
    }

    /// A DNS-SD instance name unique per host: `{host}-peer`.
    pub fn instance_name(host: &str) -> String {
        format!("{host}-peer")
    }
}

/// A peer's chunk server base URL in its one accepted form, `http://<host>:<port>` (one
/// trailing `/` is dropped): plain http, a host of letters, digits, `.`, `-` or a bracketed IPv6
/// literal, an explicit non-zero port, and no user, path or query part. `None` for anything
/// else. Shared by the mDNS peer advert ([`PeerAdvert::from_txt`]) and the DHT peer record
/// ([`crate::record::PeerRecord`]), which both come from the network.
pub fn peer_base_url(url: &str) -> Option<String> {
    let authority = url.strip_prefix("http://")?;
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    let (host, port) = authority.rsplit_once(':')?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
        return None;
    }
    Some(format!("http://{authority}"))
}

impl MdnsAdvert {
    /// The TXT properties to announce.
    pub fn txt_properties(&self) -> Vec<(&'static str, String)> {
        vec![
            (TXT_ARCH, self.arch.as_str().to_owned()),
            (TXT_CHANNEL, self.channel.clone()),
            (TXT_MANIFEST, self.manifest_url.clone()),
            (TXT_VERSION, self.version.clone()),
        ]
    }

    /// Reads an advertisement from TXT properties (key, value); unknown keys are ignored.
    ///
    /// # Errors
    /// [`TxtError`] for a missing key, unknown arch or non-http URL.
    pub fn from_txt<'a>(
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, TxtError> {
        let (mut arch, mut channel, mut url, mut version) = (None, None, None, None);
        for (k, v) in props {
            match k {
                TXT_ARCH => arch = Some(v),
                TXT_CHANNEL => channel = Some(v),
                TXT_MANIFEST => url = Some(v),
                TXT_VERSION => version = Some(v),
                _ => {}
            }
        }
        let arch: Arch = arch.ok_or(TxtError::Missing(TXT_ARCH))?.parse()?;
        let url = url.ok_or(TxtError::Missing(TXT_MANIFEST))?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(TxtError::BadUrl(url.to_owned()));
        }
        Ok(MdnsAdvert {
            channel: channel.ok_or(TxtError::Missing(TXT_CHANNEL))?.to_owned(),
            arch,
            manifest_url: url.to_owned(),
            version: version.ok_or(TxtError::Missing(TXT_VERSION))?.to_owned(),
        })
    }

    /// True when this advertisement serves `channel` and `arch`.
    pub fn matches(&self, channel: &str, arch: Arch) -> bool {
        self.channel == channel && self.arch == arch
    }

    /// A DNS-SD instance name unique per host, channel and arch: `{host}-{channel}-{arch}`.
    pub fn instance_name(&self, host: &str) -> String {
        format!("{host}-{}-{}", self.channel, self.arch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_round_trips() {
        let a = MdnsAdvert {
            channel: "stable".into(),
            arch: Arch::X86_64,
            manifest_url: "http://192.0.2.1:8080/stable/x86_64/manifest.json".into(),
            version: "1.0.0".into(),
        };
        let props = a.txt_properties();
        let back = MdnsAdvert::from_txt(props.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
        assert_eq!(back, a);
        assert!(a.matches("stable", Arch::X86_64));
        assert!(!a.matches("testing", Arch::X86_64));
    }

    #[test]
    fn peer_txt_round_trips() {
        let a = PeerAdvert {
            manifest_sha256: Sha256Digest::of(b"manifest"),
            url: "http://192.0.2.11:7400".into(),
        };
        let props = a.txt_properties();
        let back = PeerAdvert::from_txt(props.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
        assert_eq!(back, a);
        let slash = [
            (TXT_MANIFEST_SHA256, a.manifest_sha256.to_string()),
            (TXT_URL, "http://[2001:db8::1]:7400/".into()),
        ];
        let back = PeerAdvert::from_txt(slash.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
        assert_eq!(back.url, "http://[2001:db8::1]:7400");
    }

    #[test]
    fn bad_peer_txt_is_refused() {
        let hex = Sha256Digest::of(b"m").to_string();
        assert_eq!(
            PeerAdvert::from_txt([(TXT_URL, "http://192.0.2.11:7400")]),
            Err(TxtError::Missing(TXT_MANIFEST_SHA256))
        );
        assert_eq!(
            PeerAdvert::from_txt([(TXT_MANIFEST_SHA256, hex.as_str())]),
            Err(TxtError::Missing(TXT_URL))
        );
        assert!(matches!(
            PeerAdvert::from_txt([(TXT_MANIFEST_SHA256, "abcd"), (TXT_URL, "http://h:1")]),
            Err(TxtError::BadDigest(_))
        ));
        for url in [
            "https://192.0.2.11:7400",
            "http://192.0.2.11",
            "http://192.0.2.11:0",
            "http://192.0.2.11:70000",
            "http://192.0.2.11:7400/stable",
            "http://user@192.0.2.11:7400",
            "http://192.0.2.11:7400?x=1",
            "http://:7400",
        ] {
            assert!(
                matches!(
                    PeerAdvert::from_txt([(TXT_MANIFEST_SHA256, hex.as_str()), (TXT_URL, url)]),
                    Err(TxtError::BadPeerUrl(_))
                ),
                "{url} accepted"
            );
        }
    }

    #[test]
    fn incomplete_txt_is_refused() {
        assert_eq!(
            MdnsAdvert::from_txt([("arch", "x86_64")]),
            Err(TxtError::Missing(TXT_MANIFEST))
        );
        let bad = [
            ("arch", "x86_64"),
            ("channel", "s"),
            ("manifest", "ftp://x"),
            ("version", "1"),
        ];
        assert!(matches!(
            MdnsAdvert::from_txt(bad),
            Err(TxtError::BadUrl(_))
        ));
    }
}
