//! mDNS / DNS-SD advertisement and browsing of `_phase-image._tcp.local.` (DESIGN §6, seed 002
//! "mDNS Service"; RFC 6762/6763), on top of the `mdns-sd` crate.
//!
//! Boot flow: `plasmd serve` runs an [`MdnsAdvertiser`] with one instance per (channel, arch) it
//! serves and withdraws them (goodbye packets, TTL 0) on shutdown; the init in local and
//! internet modes and `phase discover` call [`browse`], which keeps only instances whose TXT
//! `channel`/`arch` match.
//!
//! Names are made robust for a VM with one interface and no host name: the host label comes from
//! the provider name, else the kernel host name, else `phase-<random hex>`, reduced to
//! `[a-z0-9-]` and at most 40 bytes.

use std::time::{Duration, Instant};

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use phase_protocol::mdns::{MdnsAdvert, PeerAdvert, TxtError, PEER_SERVICE_TYPE, SERVICE_TYPE};
use phase_protocol::Arch;

use crate::{Found, FoundSource};

/// How long [`MdnsAdvertiser::shutdown`] waits for each goodbye to be sent.
const GOODBYE_WAIT: Duration = Duration::from_secs(2);

/// Errors of mDNS advertisement and browsing.
#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    /// The mdns-sd daemon (its thread and sockets) could not start.
    #[error("starting the mDNS daemon")]
    Daemon(#[source] mdns_sd::Error),
    /// Restricting the daemon to one interface failed.
    #[error("selecting mDNS interface {iface}")]
    Interface {
        /// The interface name.
        iface: String,
        /// The daemon's error.
        #[source]
        source: mdns_sd::Error,
    },
    /// The service description was refused (bad name, TXT too large...).
    #[error("describing mDNS instance {instance} for {url}")]
    ServiceInfo {
        /// The instance name.
        instance: String,
        /// The manifest URL advertised.
        url: String,
        /// The daemon's error.
        #[source]
        source: mdns_sd::Error,
    },
    /// Registering an instance failed.
    #[error("registering mDNS instance {instance}")]
    Register {
        /// The instance name.
        instance: String,
        /// The daemon's error.
        #[source]
        source: mdns_sd::Error,
    },
    /// The manifest URL has no usable port for the SRV record.
    #[error("manifest URL {0:?} has no usable host:port")]
    BadUrl(String),
    /// Starting a browse of this service type failed.
    #[error("browsing {0}")]
    Browse(&'static str, #[source] mdns_sd::Error),
}

/// What a browse sees: `A` is [`MdnsAdvert`] for providers, [`PeerAdvert`] for peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdnsEvent<A = MdnsAdvert> {
    /// An instance was resolved and its TXT is a valid advertisement.
    Resolved {
        /// The instance's full name (`<instance>._phase-image._tcp.local.`).
        fullname: String,
        /// What its TXT says.
        advert: A,
    },
    /// An instance was resolved but its TXT is not an advertisement (skipped by [`browse`]).
    Invalid {
        /// The instance's full name.
        fullname: String,
        /// Why it was refused.
        error: TxtError,
    },
    /// An instance was withdrawn (goodbye packet or expiry).
    Removed {
        /// The instance's full name.
        fullname: String,
    },
}

fn daemon_for(iface: Option<&str>) -> Result<ServiceDaemon, MdnsError> {
    let daemon = ServiceDaemon::new().map_err(MdnsError::Daemon)?;
    if let Some(name) = iface {
        let err = |source| MdnsError::Interface {
            iface: name.to_owned(),
            source,
        };
        daemon.disable_interface(IfKind::All).map_err(err)?;
        daemon
            .enable_interface(IfKind::Name(name.to_owned()))
            .map_err(err)?;
    }
    Ok(daemon)
}

/// A DNS label from `name`: lower-case `[a-z0-9-]`, no leading/trailing `-`, at most 40 bytes.
/// `None` when nothing usable is left or the name is a placeholder (`localhost`, `(none)`).
pub fn host_label(name: &str) -> Option<String> {
    let mapped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let label = mapped.trim_matches('-').to_owned();
    (!label.is_empty() && label != "localhost" && label != "none").then_some(label)
}

/// The host label to advertise under: `provider_name`, else the kernel host name, else
/// `phase-<8 random hex digits>`.
pub fn default_host_label(provider_name: Option<&str>) -> String {
    provider_name
        .and_then(host_label)
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .as_deref()
                .and_then(host_label)
        })
        .unwrap_or_else(|| format!("phase-{:08x}", rand::random::<u32>()))
}

/// The port of an absolute http(s) URL (explicit, else 80/443).
fn url_port(url: &str) -> Option<u16> {
    let (rest, default) = if let Some(r) = url.strip_prefix("http://") {
        (r, 80)
    } else {
        (url.strip_prefix("https://")?, 443)
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() {
        return None;
    }
    match authority.rsplit_once(':') {
        Some((_, port)) if !authority.ends_with(']') => port.parse().ok(),
        _ => Some(default),
    }
}

/// Running mDNS advertisement of one instance per [`MdnsAdvert`].
pub struct MdnsAdvertiser {
    daemon: ServiceDaemon,
    fullnames: Vec<String>,
}

impl MdnsAdvertiser {
    /// Registers one `_phase-image._tcp.local.` instance per advert, named
    /// `{host}-{channel}-{arch}` on host `{host}.local.`, with the addresses of every interface
    /// (or only `iface`) and the port of the manifest URL.
    ///
    /// # Errors
    /// [`MdnsError`] when the daemon cannot start or an instance cannot be registered.
    pub fn start(
        adverts: &[MdnsAdvert],
        host: &str,
        iface: Option<&str>,
    ) -> Result<Self, MdnsError> {
        let daemon = daemon_for(iface)?;
        let mut fullnames = Vec::new();
        for a in adverts {
            let instance = a.instance_name(host);
            let props = a.txt_properties();
            let fullname = register(
                &daemon,
                SERVICE_TYPE,
                &instance,
                host,
                &a.manifest_url,
                &props,
            )?;
            fullnames.push(fullname);
        }
        Ok(MdnsAdvertiser { daemon, fullnames })
    }

    /// Registers one `_phase-peer._tcp.local.` instance `{host}-peer` on host `{host}.local.`
    /// for a machine in the boot stage (issue 19 §3), with the addresses of every interface (or
    /// only `iface`) and the port of `advert.url`.
    ///
    /// # Errors
    /// [`MdnsError`] when the daemon cannot start or the instance cannot be registered.
    pub fn start_peer(
        advert: &PeerAdvert,
        host: &str,
        iface: Option<&str>,
    ) -> Result<Self, MdnsError> {
        let daemon = daemon_for(iface)?;
        let instance = PeerAdvert::instance_name(host);
        let props = advert.txt_properties();
        let fullname = register(
            &daemon,
            PEER_SERVICE_TYPE,
            &instance,
            host,
            &advert.url,
            &props,
        )?;
        Ok(MdnsAdvertiser {
            daemon,
            fullnames: vec![fullname],
        })
    }

    /// The full DNS-SD names registered, one per advert.
    pub fn fullnames(&self) -> &[String] {
        &self.fullnames
    }

    /// Withdraws every instance (goodbye packets with TTL 0), waiting up to 2 s for each to be
    /// sent, then stops the daemon.
    pub async fn shutdown(mut self) {
        for name in std::mem::take(&mut self.fullnames) {
            match self.daemon.unregister(&name) {
                Ok(rx) => match tokio::time::timeout(GOODBYE_WAIT, rx.recv_async()).await {
                    Ok(Ok(status)) => tracing::info!(instance = %name, ?status, "mdns withdrawn"),
                    _ => tracing::warn!(instance = %name, "mdns goodbye not confirmed"),
                },
                Err(e) => tracing::warn!(instance = %name, error = %e, "mdns unregister failed"),
            }
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(GOODBYE_WAIT, rx.recv_async()).await;
        }
    }
}

impl Drop for MdnsAdvertiser {
    /// Withdraws what is still registered and stops the daemon without waiting: mdns-sd's
    /// thread only ends on an explicit shutdown, and one left behind keeps answering and
    /// announcing (in the boot stage, on the one vCPU a kexec then also needs).
    fn drop(&mut self) {
        for name in &self.fullnames {
            let _ = self.daemon.unregister(name);
        }
        let _ = self.daemon.shutdown();
    }
}

/// Registers instance `instance` of `service_type` on `{host}.local.` at the port of `url`, with
/// TXT `props`; returns its full name.
fn register(
    daemon: &ServiceDaemon,
    service_type: &str,
    instance: &str,
    host: &str,
    url: &str,
    props: &[(&'static str, String)],
) -> Result<String, MdnsError> {
    let port = url_port(url).ok_or_else(|| MdnsError::BadUrl(url.to_owned()))?;
    let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let info = ServiceInfo::new(
        service_type,
        instance,
        &format!("{host}.local."),
        "",
        port,
        &props[..],
    )
    .map_err(|source| MdnsError::ServiceInfo {
        instance: instance.to_owned(),
        url: url.to_owned(),
        source,
    })?
    .enable_addr_auto();
    let fullname = info.get_fullname().to_owned();
    daemon
        .register(info)
        .map_err(|source| MdnsError::Register {
            instance: instance.to_owned(),
            source,
        })?;
    tracing::info!(instance = %fullname, url = %url, "mdns advertising");
    Ok(fullname)
}

impl std::fmt::Debug for MdnsAdvertiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdnsAdvertiser")
            .field("fullnames", &self.fullnames)
            .finish_non_exhaustive()
    }
}

/// Reads an advertisement from the TXT properties of a resolved instance as mdns-sd decoded
/// them (keys as sent, values as bytes; a value that is not UTF-8 reads as empty). Untrusted
/// network input: also the entry point of the `mdns_txt` fuzz target (fuzz/).
///
/// # Errors
/// [`TxtError`] for a missing key, unknown arch or non-http URL.
pub fn advert_from_txt(props: &mdns_sd::TxtProperties) -> Result<MdnsAdvert, TxtError> {
    MdnsAdvert::from_txt(props.iter().map(|p| (p.key(), p.val_str())))
}

/// Reads a peer advertisement from the TXT properties of a resolved `_phase-peer._tcp`
/// instance. Untrusted network input: also fed by the `mdns_txt` fuzz target (fuzz/).
///
/// # Errors
/// [`TxtError`] for a missing key, a bad digest or a peer URL that is not `http://host:port`.
pub fn peer_from_txt(props: &mdns_sd::TxtProperties) -> Result<PeerAdvert, TxtError> {
    PeerAdvert::from_txt(props.iter().map(|p| (p.key(), p.val_str())))
}

/// A running browse of `_phase-image._tcp.local.` (providers, [`MdnsBrowser::start`]) or of
/// `_phase-peer._tcp.local.` (peers in the boot stage, [`MdnsBrowser::start_peers`]).
pub struct MdnsBrowser<A = MdnsAdvert> {
    daemon: ServiceDaemon,
    events: mdns_sd::Receiver<ServiceEvent>,
    service_type: &'static str,
    parse: fn(&mdns_sd::TxtProperties) -> Result<A, TxtError>,
}

impl MdnsBrowser<MdnsAdvert> {
    /// Starts browsing for providers on every interface, or only `iface`.
    ///
    /// # Errors
    /// [`MdnsError::Daemon`], [`MdnsError::Interface`], [`MdnsError::Browse`].
    pub fn start(iface: Option<&str>) -> Result<Self, MdnsError> {
        Self::start_with(iface, SERVICE_TYPE, advert_from_txt)
    }
}

impl MdnsBrowser<PeerAdvert> {
    /// Starts browsing for peers in the boot stage on every interface, or only `iface`.
    ///
    /// # Errors
    /// [`MdnsError::Daemon`], [`MdnsError::Interface`], [`MdnsError::Browse`].
    pub fn start_peers(iface: Option<&str>) -> Result<Self, MdnsError> {
        Self::start_with(iface, PEER_SERVICE_TYPE, peer_from_txt)
    }
}

impl<A> MdnsBrowser<A> {
    fn start_with(
        iface: Option<&str>,
        service_type: &'static str,
        parse: fn(&mdns_sd::TxtProperties) -> Result<A, TxtError>,
    ) -> Result<Self, MdnsError> {
        let daemon = daemon_for(iface)?;
        let events = daemon
            .browse(service_type)
            .map_err(|e| MdnsError::Browse(service_type, e))?;
        Ok(MdnsBrowser {
            daemon,
            events,
            service_type,
            parse,
        })
    }

    /// The next resolution or withdrawal, or `None` when `deadline` passes first.
    pub async fn next_event(&mut self, deadline: Instant) -> Option<MdnsEvent<A>> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let event = tokio::time::timeout(left, self.events.recv_async())
                .await
                .ok()?
                .ok()?;
            match event {
                ServiceEvent::ServiceResolved(info) => {
                    let fullname = info.get_fullname().to_owned();
                    return Some(match (self.parse)(info.get_properties()) {
                        Ok(advert) => MdnsEvent::Resolved { fullname, advert },
                        Err(error) => MdnsEvent::Invalid { fullname, error },
                    });
                }
                ServiceEvent::ServiceRemoved(_, fullname) => {
                    return Some(MdnsEvent::Removed { fullname })
                }
                _ => {}
            }
        }
    }

    /// Stops the browse and the daemon.
    pub fn stop(self) {
        drop(self);
    }
}

impl<A> Drop for MdnsBrowser<A> {
    /// Stops the browse and the daemon's thread (which only ends on an explicit shutdown), so
    /// a browser dropped without [`MdnsBrowser::stop`] (a cancelled task) leaves nothing running.
    fn drop(&mut self) {
        let _ = self.daemon.stop_browse(self.service_type);
        let _ = self.daemon.shutdown();
    }
}

impl<A> std::fmt::Debug for MdnsBrowser<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdnsBrowser")
            .field("service_type", &self.service_type)
            .finish_non_exhaustive()
    }
}

/// Browses for providers of `channel`/`arch`: returns when `want` distinct manifest URLs are
/// found or at `timeout`. Instances for other channels/arches and invalid TXT are skipped
/// (logged at debug). Order: newest version first.
///
/// # Errors
/// [`MdnsError`] when the daemon or the browse cannot start.
pub async fn browse(
    channel: &str,
    arch: Arch,
    want: usize,
    timeout: Duration,
    iface: Option<&str>,
) -> Result<Vec<Found>, MdnsError> {
    let deadline = Instant::now() + timeout;
    let mut browser = MdnsBrowser::start(iface)?;
    let mut found: Vec<Found> = Vec::new();
    while found.len() < want.max(1) {
        let Some(event) = browser.next_event(deadline).await else {
            break;
        };
        match event {
            MdnsEvent::Resolved { fullname, advert } if advert.matches(channel, arch) => {
                if !found.iter().any(|f| f.manifest_url == advert.manifest_url) {
                    tracing::debug!(instance = %fullname, url = %advert.manifest_url, "mdns provider found");
                    found.push(Found {
                        manifest_url: advert.manifest_url,
                        source: FoundSource::Mdns,
                        version: advert.version,
                        provider: Some(fullname),
                    });
                }
            }
            MdnsEvent::Resolved { fullname, advert } => {
                tracing::debug!(instance = %fullname, channel = %advert.channel, arch = %advert.arch, "mdns instance for another channel/arch skipped");
            }
            MdnsEvent::Invalid { fullname, error } => {
                tracing::warn!(instance = %fullname, error = %error, "mdns instance with bad TXT skipped");
            }
            MdnsEvent::Removed { fullname } => {
                found.retain(|f| f.provider.as_deref() != Some(fullname.as_str()));
            }
        }
    }
    browser.stop();
    crate::sort_best_first(&mut found);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads of this process named `mDNS_daemon` (mdns-sd's daemon thread).
    fn daemon_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|d| {
                d.flatten()
                    .filter(|t| {
                        std::fs::read_to_string(t.path().join("comm"))
                            .is_ok_and(|c| c.trim() == "mDNS_daemon")
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Waits up to 2 s for the daemon threads to number `n`.
    fn wait_threads(n: usize) -> usize {
        for _ in 0..40 {
            if daemon_threads() == n {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon_threads()
    }

    #[test]
    fn dropping_a_browser_or_advertiser_stops_its_daemon_thread() {
        // One test, so no other test's daemons run in this process meanwhile.
        let before = daemon_threads();
        let browser = MdnsBrowser::start_peers(Some("lo")).expect("browse on lo");
        assert_eq!(wait_threads(before + 1), before + 1, "the daemon started");
        drop(browser);
        assert_eq!(
            wait_threads(before),
            before,
            "a dropped browser left its daemon running"
        );
        let advert = PeerAdvert {
            manifest_sha256: phase_protocol::Sha256Digest::of(b"m"),
            url: "http://127.0.0.1:7400".into(),
        };
        let adv = MdnsAdvertiser::start_peer(&advert, "phase-test", Some("lo")).expect("register");
        assert_eq!(wait_threads(before + 1), before + 1, "the daemon started");
        drop(adv);
        assert_eq!(
            wait_threads(before),
            before,
            "a dropped advertiser left its daemon running"
        );
    }

    #[test]
    fn host_labels_are_dns_safe_and_placeholders_refused() {
        assert_eq!(host_label("Lab_Box.1").as_deref(), Some("lab-box-1"));
        assert_eq!(host_label("(none)"), None);
        assert_eq!(host_label("localhost"), None);
        assert_eq!(host_label("---"), None);
        assert_eq!(host_label(&"a".repeat(100)).map(|l| l.len()), Some(40));
        assert!(default_host_label(None)
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn url_ports_are_explicit_or_scheme_default() {
        assert_eq!(
            url_port("http://192.0.2.1:8080/stable/x86_64/manifest.json"),
            Some(8080)
        );
        assert_eq!(url_port("http://example.org/m.json"), Some(80));
        assert_eq!(url_port("https://example.org"), Some(443));
        assert_eq!(url_port("http://[2001:db8::1]/m"), Some(80));
        assert_eq!(url_port("http://[2001:db8::1]:81/m"), Some(81));
        assert_eq!(url_port("ftp://x/"), None);
        assert_eq!(url_port("http:///x"), None);
    }
}
