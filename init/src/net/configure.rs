//! Applying a DHCP lease to the kernel and the resolver (issue 6 §4): address and default route
//! through rtnetlink, `/etc/resolv.conf` as a file. Runs after the ACK in the boot stage and
//! again when a renewal changes the address.
//!
//! Requests use "replace" semantics (`ip addr replace`, `ip route replace`) so applying the same
//! lease twice (target stage on the same kernel with `phase.kexec=never`) is not an error.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;

/// The resolver configuration written after DHCP.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    /// Opening the rtnetlink socket failed.
    #[error("opening an rtnetlink socket")]
    Connect(#[source] std::io::Error),
    /// An rtnetlink request failed; `op` is the equivalent `ip` command.
    #[error("netlink: {op}")]
    Netlink {
        /// The request as an `ip` command line (`ip addr replace 192.0.2.101/24 dev eth0`).
        op: String,
        /// rtnetlink's error (carries the kernel's errno).
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// Writing the resolver file (or creating its directory) failed.
    #[error("writing {path}")]
    Resolv {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// An rtnetlink handle whose connection task is aborted when this is dropped.
#[derive(Debug)]
pub struct Netlink {
    /// Handle for requests.
    pub handle: rtnetlink::Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Netlink {
    /// Opens an rtnetlink socket and spawns its connection on the current tokio runtime (works
    /// on a current-thread runtime). Errors: [`ConfigureError::Connect`].
    pub fn open() -> Result<Netlink, ConfigureError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(ConfigureError::Connect)?;
        let task = tokio::spawn(conn);
        Ok(Netlink { handle, task })
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Maps an rtnetlink error to [`ConfigureError::Netlink`] naming the `ip` command it stood for.
fn netlink_err(op: String) -> impl FnOnce(rtnetlink::Error) -> ConfigureError {
    move |source| ConfigureError::Netlink {
        op,
        source: Box::new(source),
    }
}

/// The interface index of `lo` in every network namespace (the kernel's `LOOPBACK_IFINDEX`,
/// `include/net/net_namespace.h`, fixed since Linux 3.7).
pub const LOOPBACK_IFINDEX: u32 = 1;

/// `ip link set lo up`, so services can use 127.0.0.1: one RTM_NEWLINK request for index
/// [`LOOPBACK_IFINDEX`], without a lookup by name first (the lookup's reply parsing cost
/// 10-15 ms per stage under TCG). Errors: [`ConfigureError::Netlink`].
pub async fn loopback_up(handle: &rtnetlink::Handle) -> Result<(), ConfigureError> {
    handle
        .link()
        .set(
            rtnetlink::LinkUnspec::new_with_index(LOOPBACK_IFINDEX)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(netlink_err("ip link set lo up".to_owned()))
}

/// `ip addr replace <addr>/<prefix_len> dev <iface>` (broadcast address derived from the prefix).
/// Errors: [`ConfigureError::Netlink`].
pub async fn add_address(
    handle: &rtnetlink::Handle,
    index: u32,
    iface: &str,
    addr: Ipv4Addr,
    prefix_len: u8,
) -> Result<(), ConfigureError> {
    handle
        .address()
        .add(index, IpAddr::V4(addr), prefix_len)
        .replace()
        .execute()
        .await
        .map_err(netlink_err(format!(
            "ip addr replace {addr}/{prefix_len} dev {iface}"
        )))
}

/// `ip addr del <addr> dev <iface>`; an address that is already gone is fine.
/// Errors: [`ConfigureError::Netlink`].
pub async fn remove_address(
    handle: &rtnetlink::Handle,
    index: u32,
    iface: &str,
    addr: Ipv4Addr,
) -> Result<(), ConfigureError> {
    let op = || format!("ip addr del {addr} dev {iface}");
    let mut found = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(IpAddr::V4(addr))
        .execute();
    while let Some(msg) = found.try_next().await.map_err(netlink_err(op()))? {
        handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(netlink_err(op()))?;
    }
    Ok(())
}

/// `ip route replace default via <router> dev <iface>`. Errors: [`ConfigureError::Netlink`].
pub async fn set_default_route(
    handle: &rtnetlink::Handle,
    index: u32,
    iface: &str,
    router: Ipv4Addr,
) -> Result<(), ConfigureError> {
    let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .gateway(router)
        .output_interface(index)
        .build();
    handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(netlink_err(format!(
            "ip route replace default via {router} dev {iface}"
        )))
}

/// The text of a resolv.conf naming `dns` (at most the first 3: glibc and musl read no more).
pub fn resolv_conf_text(dns: &[Ipv4Addr], iface: &str) -> String {
    let mut text = format!("# written by phase-init from the DHCP lease on {iface}\n");
    for ns in dns.iter().take(3) {
        text.push_str(&format!("nameserver {ns}\n"));
    }
    text
}

/// Writes [`resolv_conf_text`] to `path`, creating its directory if missing. Written in place
/// (not renamed over) because `ip netns exec` and containers bind-mount this file.
/// Errors: [`ConfigureError::Resolv`].
pub fn write_resolv_conf(path: &Path, dns: &[Ipv4Addr], iface: &str) -> Result<(), ConfigureError> {
    let err = |source| ConfigureError::Resolv {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(path, resolv_conf_text(dns, iface)).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lists_at_most_three_nameservers() {
        let dns: Vec<Ipv4Addr> = (1..=4).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
        let text = resolv_conf_text(&dns, "eth0");
        let ns: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("nameserver"))
            .collect();
        assert_eq!(
            ns,
            [
                "nameserver 192.0.2.1",
                "nameserver 192.0.2.2",
                "nameserver 192.0.2.3"
            ]
        );
    }

    #[test]
    fn resolv_conf_directory_is_created_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/resolv.conf");
        write_resolv_conf(&path, &[Ipv4Addr::new(192, 0, 2, 1)], "eth0").unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("nameserver 192.0.2.1\n"));
    }

    #[test]
    fn resolv_conf_write_to_unwritable_path_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = write_resolv_conf(&file.join("resolv.conf"), &[], "eth0").unwrap_err();
        assert!(err.to_string().contains("file/resolv.conf"), "{err}");
    }
}
