//! `plasmd serve`: wires the store, the HTTP API, the server and advertisement together
//! (issue 3 "Must have" 1; seed 000 "Start boot artifact provider").
//!
//! Order, chosen for a fast first `/health` (seed 001: < 100 ms): list the artifacts dir (stat
//! only), bind, start serving; then hash in the background, generate manifests with `--key`,
//! and only then advertise (an advert names a manifest version). On SIGHUP: list the artifacts
//! again ([`Store::reload`]) and advertise what changed ([`Advertiser::update`]). On
//! SIGTERM/SIGINT: stop accepting, drain with a deadline, send mDNS goodbyes and stop the DHT
//! node.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::advertise::{self, Advert, AdvertiseOptions, Advertiser};
use crate::config::{detect_advertise_url, ServeConfig};
use crate::routes::{app, AppState, ProviderInfo};
use crate::server::{self, ServerError, ServerOptions, ShutdownReport};
use crate::store::{Store, StoreOptions};

/// Why `plasmd serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The `--key` file could not be read.
    #[error("cannot load signing key")]
    Key(#[source] phase_protocol::signing::SignError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] ServerError),
}

/// A provider that is listening; [`Running::run`] serves until shutdown.
#[derive(Debug)]
pub struct Running {
    listener: TcpListener,
    state: Arc<AppState>,
    cfg: ServeConfig,
    server: ServerOptions,
    advertiser: Arc<Mutex<Option<Advertiser>>>,
}

/// The provider name: `--name`, else the host name, else `plasmd`.
fn provider_name(cfg: &ServeConfig) -> String {
    cfg.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "plasmd".to_owned())
    })
}

/// Lists the artifacts, binds the listener and loads TLS; returns before any hashing.
///
/// # Errors
/// [`ServeError`].
pub async fn start(cfg: ServeConfig) -> Result<Running, ServeError> {
    let key = match &cfg.key {
        Some(path) => {
            Some(phase_protocol::signing::load_signing_key(path).map_err(ServeError::Key)?)
        }
        None => None,
    };
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(server::load_tls(cert, key)?),
        None => None,
    };
    let addr = SocketAddr::new(cfg.bind, cfg.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    let store = Arc::new(Store::scan(StoreOptions {
        artifacts: cfg.artifacts.clone(),
        channels: cfg.channels.clone(),
        arch: cfg.arch,
        key,
        hash_cache: cfg.hash_cache_path(),
        release_version: cfg.release_version.clone(),
        expires_in: cfg.expires_in,
        cmdline: cfg.cmdline.clone(),
    }));
    let advertise_url = cfg
        .advertise_url
        .clone()
        .unwrap_or_else(|| detect_advertise_url(cfg.bind, local.port(), tls.is_some()));
    let info = ProviderInfo {
        name: provider_name(&cfg),
        advertise_url: advertise_url.trim_end_matches('/').to_owned(),
    };
    let state = AppState::new(store, info);
    let snap = state.store.snapshot();
    for p in &snap.problems {
        tracing::warn!(problem = %p, "artifacts");
    }
    tracing::info!(
        addr = %local,
        url = %state.info.advertise_url,
        releases = snap.releases.len(),
        tls = tls.is_some(),
        "plasmd listening"
    );
    let server = ServerOptions {
        max_connections: cfg.max_connections,
        max_connections_per_ip: cfg.max_connections_per_ip,
        header_timeout: cfg.header_timeout,
        write_timeout: cfg.write_timeout,
        shutdown_timeout: cfg.shutdown_timeout,
        tls,
    };
    Ok(Running {
        listener,
        state,
        cfg,
        server,
        advertiser: Arc::new(Mutex::new(None)),
    })
}

impl Running {
    /// The bound address (useful with `--port 0`).
    ///
    /// # Errors
    /// The socket's error if it has no address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves; hashes and advertises in the background meanwhile,
    /// and reloads the artifacts on SIGHUP (a SIGHUP that arrives while the first hashing runs
    /// is handled after it).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> ShutdownReport {
        let Running {
            listener,
            state,
            cfg,
            server,
            advertiser,
        } = self;
        // Registered now, so SIGHUP never takes its default action (exit) from here on.
        let hangups = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP handler not installed: no reload");
                None
            }
        };
        let background = {
            let state = Arc::clone(&state);
            let slot = Arc::clone(&advertiser);
            tokio::spawn(async move {
                let store = Arc::clone(&state.store);
                if tokio::task::spawn_blocking(move || store.complete())
                    .await
                    .is_err()
                {
                    tracing::warn!("background hashing stopped");
                }
                advertise_all(&state, &cfg, &slot).await;
                let resign = async {
                    if cfg.key.is_some() {
                        resign_loop(&state.store, cfg.expires_in).await;
                    }
                };
                tokio::join!(resign, reload_on_hangup(hangups, &state, &cfg, &slot));
            })
        };
        let metrics = Arc::clone(&state.metrics);
        let report =
            server::serve(listener, app(Arc::clone(&state)), server, metrics, shutdown).await;
        background.abort();
        let running = advertiser.lock().ok().and_then(|mut a| a.take());
        if let Some(a) = running {
            a.shutdown().await;
        }
        tracing::info!(aborted = report.aborted, "plasmd stopped");
        report
    }
}

/// How often a `--key` provider checks whether a generated manifest is due to be signed
/// again: a quarter of its lifetime, between 1 second and 1 hour.
pub fn resign_check_interval(expires_in: Duration) -> Duration {
    (expires_in / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Signs generated manifests again after half their lifetime ([`Store::resign_due`]), for as
/// long as the server runs.
async fn resign_loop(store: &Arc<Store>, expires_in: Duration) {
    let every = resign_check_interval(expires_in);
    loop {
        tokio::time::sleep(every).await;
        let store = Arc::clone(store);
        match tokio::task::spawn_blocking(move || store.resign_due(chrono::Utc::now())).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(manifests = n, "generated manifests signed again"),
            Err(_) => tracing::warn!("signing generated manifests again failed"),
        }
    }
}

/// On every SIGHUP: [`Store::reload`], then advertise what changed. Runs until the server
/// stops; returns at once when `hangups` is `None` (no handler could be installed).
async fn reload_on_hangup(
    hangups: Option<Signal>,
    state: &Arc<AppState>,
    cfg: &ServeConfig,
    slot: &Mutex<Option<Advertiser>>,
) {
    let Some(mut hangups) = hangups else {
        return;
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the artifacts directory");
        let store = Arc::clone(&state.store);
        let Ok(snap) = tokio::task::spawn_blocking(move || store.reload()).await else {
            tracing::warn!("reload stopped; still serving the previous snapshot");
            continue;
        };
        for p in &snap.problems {
            tracing::warn!(problem = %p, "artifacts");
        }
        tracing::info!(releases = snap.releases.len(), "artifacts reloaded");
        readvertise(state, cfg, slot).await;
    }
}

/// Advertises the current snapshot's releases: updates the running advertiser, or tries to
/// start one when none runs (it failed to start; with mDNS and the DHT both off this does
/// nothing).
async fn readvertise(state: &AppState, cfg: &ServeConfig, slot: &Mutex<Option<Advertiser>>) {
    // Taken out of the slot while it changes: the slot's lock is not held across awaits.
    let Some(mut a) = slot.lock().ok().and_then(|mut a| a.take()) else {
        return advertise_all(state, cfg, slot).await;
    };
    match a.update(adverts(state)).await {
        Ok(true) => tracing::info!(adverts = a.adverts().len(), "advertisement updated"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %crate::error_chain(&e), "advertisement not updated"),
    }
    if let Ok(mut s) = slot.lock() {
        *s = Some(a);
    }
}

/// One advert per release that has a manifest version to name.
fn adverts(state: &AppState) -> Vec<Advert> {
    let snap = state.store.snapshot();
    snap.releases
        .values()
        .filter_map(|r| {
            Some(Advert {
                channel: r.channel.clone(),
                arch: r.arch,
                manifest_url: format!(
                    "{}/{}/{}/manifest.json",
                    state.info.advertise_url, r.channel, r.arch
                ),
                version: r.manifest.version()?.to_owned(),
            })
        })
        .collect()
}

async fn advertise_all(state: &AppState, cfg: &ServeConfig, slot: &Mutex<Option<Advertiser>>) {
    if !cfg.mdns && !cfg.dht {
        return;
    }
    let opts = AdvertiseOptions {
        mdns: cfg.mdns,
        dht: cfg.dht,
        dht_listen: cfg.dht_listen.clone(),
        bootstrap: cfg.bootstrap.clone(),
        identity: cfg.identity.clone(),
        provider_name: Some(state.info.name.clone()),
    };
    match advertise::start(opts, adverts(state)).await {
        Ok(a) => {
            if let Ok(mut p) = state.peer_id.lock() {
                *p = a.peer_id().map(str::to_owned);
            }
            if let Ok(mut s) = slot.lock() {
                *s = Some(a);
            }
        }
        Err(e) => tracing::warn!(error = %crate::error_chain(&e), "advertisement not started"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resign_interval_is_a_quarter_of_the_lifetime_within_bounds() {
        let day = Duration::from_secs(86_400);
        assert_eq!(resign_check_interval(30 * day), Duration::from_secs(3600));
        assert_eq!(
            resign_check_interval(Duration::from_secs(2400)),
            Duration::from_secs(600)
        );
        assert_eq!(
            resign_check_interval(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }
}
