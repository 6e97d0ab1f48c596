//! End checks against the publisher's release tree (`make release`): a provider, on the host or
//! inside a booted VM, must serve `/manifest.json` byte for byte and every artifact with the
//! hash the manifest signs (issue 9, test 1's end checks).

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::netns::Lan;

/// One artifact as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRef {
    /// Name (`kernel`, `initramfs`, `rootfs`).
    pub name: String,
    /// File name relative to the manifest (`download_url`).
    pub download_url: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Lower-case hex SHA-256.
    pub sha256: String,
}

/// The artifacts a manifest lists.
///
/// Errors: not JSON, or an artifact lacks `download_url`/`size_bytes`/`hash: "sha256:<hex>"`.
pub fn artifacts(manifest: &[u8]) -> Result<Vec<ArtifactRef>> {
    let v: serde_json::Value = serde_json::from_slice(manifest).context("manifest is not JSON")?;
    let arts = v
        .get("artifacts")
        .and_then(|a| a.as_object())
        .context("manifest has no artifacts map")?;
    let mut out = Vec::new();
    for (name, a) in arts {
        let hash = a
            .get("hash")
            .and_then(|h| h.as_str())
            .context("artifact hash")?;
        out.push(ArtifactRef {
            name: name.clone(),
            download_url: a
                .get("download_url")
                .and_then(|u| u.as_str())
                .or_else(|| a.get("filename").and_then(|u| u.as_str()))
                .unwrap_or(name)
                .to_string(),
            size_bytes: a
                .get("size_bytes")
                .and_then(|s| s.as_u64())
                .context("artifact size_bytes")?,
            sha256: hash
                .strip_prefix("sha256:")
                .context("hash is not sha256:<hex>")?
                .to_ascii_lowercase(),
        });
    }
    Ok(out)
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Hex SHA-256 of a file, streamed.
///
/// Errors: the file cannot be read.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Test 1's end checks, run from inside the namespace against `base` (e.g.
/// `http://192.0.2.101:8080`): `/health` is 200, `/manifest.json` equals `manifest` byte for
/// byte, and each artifact at `/<channel>/<arch>/<download_url>` (the manifest's own channel
/// and arch, e.g. `/stable/aarch64/`) has the size and hash listed.
///
/// Errors: the first check that fails, naming the URL.
pub fn check_provider(lan: &Lan, base: &str, manifest: &[u8]) -> Result<()> {
    let health = format!("{base}/health");
    let code = lan.http_status(&health);
    if code != 200 {
        bail!("GET {health} answered {code}, want 200");
    }
    let served = lan.http_get(&format!("{base}/manifest.json"))?;
    if served != manifest {
        bail!(
            "{base}/manifest.json differs from the publisher's ({} vs {} bytes, sha256 {} vs {})",
            served.len(),
            manifest.len(),
            sha256_hex(&served),
            sha256_hex(manifest)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(manifest).context("manifest JSON")?;
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (channel, arch) = (field("channel"), field("arch"));
    for a in artifacts(manifest)? {
        let url = format!("{base}/{channel}/{arch}/{}", a.download_url);
        let body = lan.http_get(&url)?;
        let got = sha256_hex(&body);
        if body.len() as u64 != a.size_bytes || got != a.sha256 {
            bail!(
                "{url}: {} bytes sha256 {got}, manifest says {} bytes sha256 {}",
                body.len(),
                a.size_bytes,
                a.sha256
            );
        }
        eprintln!("harness: {url} ok ({} bytes, sha256 {got})", body.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_artifacts_are_listed_with_hex_hashes() {
        let m = br#"{"artifacts":{"kernel":{"filename":"kernel","size_bytes":3,"hash":"sha256:AB","download_url":"kernel","urls":[]}}}"#;
        let a = artifacts(m).expect("parsed");
        assert_eq!(
            a,
            vec![ArtifactRef {
                name: "kernel".into(),
                download_url: "kernel".into(),
                size_bytes: 3,
                sha256: "ab".into()
            }]
        );
    }

    #[test]
    fn artifact_without_sha256_prefix_is_rejected() {
        let m = br#"{"artifacts":{"kernel":{"size_bytes":3,"hash":"md5:ab"}}}"#;
        assert!(artifacts(m).is_err());
    }
}
