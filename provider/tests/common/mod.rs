//! Shared helpers of the provider integration tests: release trees in tempdirs and a real
//! `plasmd serve` on 127.0.0.1 with an ephemeral port.
#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use phase_provider::config::ServeConfig;
use phase_provider::routes::{AppState, ProviderInfo};
use phase_provider::server::ShutdownReport;
use phase_provider::store::{Store, StoreOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Deterministic, non-sparse bytes: a simple LCG stream.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

/// Writes `{root}/stable/x86_64/{kernel,initramfs}` with the given contents.
pub fn tree(root: &Path, kernel: &[u8], initramfs: &[u8]) -> std::path::PathBuf {
    let dir = root.join("stable/x86_64");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kernel"), kernel).unwrap();
    std::fs::write(dir.join("initramfs"), initramfs).unwrap();
    dir
}

/// A signed manifest for the files of `dir`, written to `dir/manifest.json`; returns the key.
pub fn sign_release(dir: &Path) -> ed25519_dalek::SigningKey {
    use phase_provider::generate::{build_manifest, sign_to_text, unsigned_json, ReleaseInfo};
    let key = phase_protocol::signing::generate_key();
    let cache = phase_provider::hashcache::HashCache::load(dir.join(".cache-unused"));
    let info = ReleaseInfo::new(
        "stable".into(),
        phase_protocol::Arch::X86_64,
        semver::Version::new(1, 2, 3),
        Duration::from_secs(86_400),
        "console=ttyS0".into(),
    );
    let m = build_manifest(dir, &info, &cache, chrono::Utc::now()).unwrap();
    let text = sign_to_text(unsigned_json(&m).unwrap(), &key, chrono::Utc::now()).unwrap();
    std::fs::write(dir.join("manifest.json"), text).unwrap();
    let _ = std::fs::remove_file(dir.join(".cache-unused"));
    key
}

pub fn store_opts(root: &Path) -> StoreOptions {
    StoreOptions {
        artifacts: root.to_owned(),
        channels: vec!["stable".into()],
        arch: phase_protocol::Arch::X86_64,
        key: None,
        hash_cache: root.join(".plasmd-hashes.json"),
        release_version: semver::Version::new(0, 1, 0),
        expires_in: Duration::from_secs(86_400),
        cmdline: String::new(),
    }
}

/// Router state over `root`, background work already done.
pub fn state(opts: StoreOptions) -> Arc<AppState> {
    let store = Arc::new(Store::scan(opts));
    store.complete();
    AppState::new(
        store,
        ProviderInfo {
            name: "test".into(),
            advertise_url: "http://192.0.2.1:8080".into(),
        },
    )
}

/// A running server; dropping it without `stop` aborts it.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<ShutdownReport>>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Signals shutdown and waits (bounded) for the report.
    pub async fn stop(mut self) -> ShutdownReport {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("server did not stop")
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Starts `plasmd serve` over `root` on 127.0.0.1:0 without mDNS/DHT; `tweak` edits settings.
pub async fn serve(root: &Path, tweak: impl FnOnce(&mut ServeConfig)) -> Server {
    let mut cfg = ServeConfig::with_defaults(root);
    cfg.bind = "127.0.0.1".parse().unwrap();
    cfg.port = 0;
    cfg.mdns = false;
    cfg.dht = false;
    cfg.arch = phase_protocol::Arch::X86_64;
    tweak(&mut cfg);
    let running = phase_provider::serve::start(cfg).await.unwrap();
    let addr = running.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(running.run(async move {
        let _ = rx.await;
    }));
    Server {
        addr,
        stop: Some(tx),
        task: Some(task),
    }
}

/// Polls `/health` until the background hashing is done (bounded: 200 × 25 ms).
pub async fn wait_ready(server: &Server) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(server.url("/health")).send().await {
            if let Ok(b) = r.bytes().await {
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
                if v["hashing"] == false {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("provider never finished hashing");
}
