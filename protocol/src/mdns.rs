//! The mDNS advertisement schema (DESIGN §6, seed 002 "mDNS Service").
//!
//! Service type `_phase-image._tcp.local.`, one instance per (channel, arch) served, with TXT
//! keys `arch`, `channel`, `manifest` (absolute URL) and `version`.

use crate::arch::Arch;

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
