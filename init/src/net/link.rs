//! Waiting for a network interface with a carrier (issue 6 §4), the first network step of the
//! boot stage, right after the NIC's module (virtio_net) is loaded.
//!
//! Interfaces are listed from sysfs (`/sys/class/net/<name>/{ifindex,address,type,carrier}`),
//! set up through rtnetlink (`ip link set <name> up`; the kernel reports the carrier only on an
//! up link), and polled until one has `carrier` = 1 or the timeout passes. `phase.iface` picks
//! the interface by name; otherwise the first Ethernet interface (ARPHRD_ETHER) in name order
//! that has a carrier wins.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the kernel lists network interfaces.
pub const SYS_CLASS_NET: &str = "/sys/class/net";

/// How often the carrier files are polled.
const POLL: Duration = Duration::from_millis(50);

/// `/sys/class/net/<if>/type` of Ethernet (ARPHRD_ETHER, `linux/if_arp.h`).
const ARPHRD_ETHER: u32 = 1;

/// A network interface chosen for DHCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Kernel name (`eth0`).
    pub name: String,
    /// Interface index (`ifindex`), used in netlink requests.
    pub index: u32,
    /// Hardware (MAC) address, the DHCP `chaddr`.
    pub mac: [u8; 6],
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A sysfs file could not be read.
    #[error("reading {path}")]
    ReadSys {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A sysfs value did not parse (ifindex not a number, address not a 6-byte MAC).
    #[error("unexpected value {value:?} in {path}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// Its content.
        value: String,
    },
    /// `ip link set <iface> up` failed.
    #[error("netlink: ip link set {iface} up")]
    SetUp {
        /// Interface name.
        iface: String,
        /// rtnetlink's error.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// The interface named by `phase.iface` did not appear.
    #[error("interface {iface} not found after {waited_ms}ms (present: {present:?})")]
    NotFound {
        /// The requested name.
        iface: String,
        /// How long we waited, ms.
        waited_ms: u128,
        /// Interfaces that do exist.
        present: Vec<String>,
    },
    /// No candidate interface reported a carrier in time.
    #[error("no carrier on {candidates:?} after {waited_ms}ms")]
    NoCarrier {
        /// The interfaces that were set up and polled.
        candidates: Vec<String>,
        /// How long we waited, ms.
        waited_ms: u128,
    },
}

/// Reads one interface from `sys` (normally [`SYS_CLASS_NET`]).
/// Errors: [`LinkError::ReadSys`], [`LinkError::BadValue`].
pub fn read_link(sys: &Path, name: &str) -> Result<Link, LinkError> {
    let dir = sys.join(name);
    let index_path = dir.join("ifindex");
    let index_text = read(&index_path)?;
    let index = index_text.parse().map_err(|_| LinkError::BadValue {
        path: index_path,
        value: index_text,
    })?;
    let mac_path = dir.join("address");
    let mac_text = read(&mac_path)?;
    let mac = parse_mac(&mac_text).ok_or(LinkError::BadValue {
        path: mac_path,
        value: mac_text,
    })?;
    Ok(Link {
        name: name.to_owned(),
        index,
        mac,
    })
}

/// Names of the Ethernet interfaces in `sys`, sorted (loopback, tunnels and other link types
/// are left out). Errors: [`LinkError::ReadSys`] if `sys` cannot be listed.
pub fn ethernet_interfaces(sys: &Path) -> Result<Vec<String>, LinkError> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(sys).map_err(|source| LinkError::ReadSys {
        path: sys.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_ether = read(&sys.join(&name).join("type"))
            .ok()
            .and_then(|t| t.parse::<u32>().ok())
            == Some(ARPHRD_ETHER);
        if is_ether {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// True when `/sys/class/net/<name>/carrier` reads `1` (reading it on a down link fails with
/// EINVAL, which counts as no carrier).
pub fn has_carrier(sys: &Path, name: &str) -> bool {
    read(&sys.join(name).join("carrier"))
        .map(|c| c == "1")
        .unwrap_or(false)
}

/// Sets links up and waits until one has a carrier: `iface` if given (waiting for it to appear
/// too), else the first Ethernet interface in name order. `sys` is normally [`SYS_CLASS_NET`].
/// Bounded by `timeout` (polls every 50 ms). Errors: [`LinkError::NotFound`],
/// [`LinkError::NoCarrier`], [`LinkError::SetUp`], sysfs read errors.
pub async fn wait_for_link(
    handle: &rtnetlink::Handle,
    sys: &Path,
    iface: Option<&str>,
    timeout: Duration,
) -> Result<Link, LinkError> {
    let start = Instant::now();
    let mut raised: Vec<String> = Vec::new();
    loop {
        let present = ethernet_interfaces(sys)?;
        let candidates: Vec<String> = match iface {
            Some(want) if sys.join(want).exists() => vec![want.to_owned()],
            Some(_) => Vec::new(),
            None => present.clone(),
        };
        for name in &candidates {
            if !raised.contains(name) {
                let link = read_link(sys, name)?;
                handle
                    .link()
                    .set(
                        rtnetlink::LinkUnspec::new_with_index(link.index)
                            .up()
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(|source| LinkError::SetUp {
                        iface: name.clone(),
                        source: Box::new(source),
                    })?;
                raised.push(name.clone());
            }
        }
        if let Some(name) = candidates.iter().find(|n| has_carrier(sys, n)) {
            return read_link(sys, name);
        }
        let waited = start.elapsed();
        if waited >= timeout {
            let waited_ms = waited.as_millis();
            return Err(match iface {
                Some(want) if candidates.is_empty() => LinkError::NotFound {
                    iface: want.to_owned(),
                    waited_ms,
                    present,
                },
                _ => LinkError::NoCarrier {
                    candidates,
                    waited_ms,
                },
            });
        }
        tokio::time::sleep(POLL.min(timeout - waited)).await;
    }
}

fn read(path: &Path) -> Result<String, LinkError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| LinkError::ReadSys {
            path: path.to_owned(),
            source,
        })
}

/// Parses `52:54:00:12:34:56`.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_iface(sys: &Path, name: &str, kind: u32, carrier: Option<&str>) {
        let d = sys.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
        std::fs::write(d.join("ifindex"), "3\n").unwrap();
        std::fs::write(d.join("address"), "52:54:00:12:34:56\n").unwrap();
        if let Some(c) = carrier {
            std::fs::write(d.join("carrier"), c).unwrap();
        }
    }

    #[test]
    fn loopback_and_non_ethernet_interfaces_are_not_candidates() {
        let dir = tempfile::tempdir().unwrap();
        fake_iface(dir.path(), "lo", 772, Some("1\n"));
        fake_iface(dir.path(), "eth1", 1, Some("0\n"));
        fake_iface(dir.path(), "eth0", 1, None);
        fake_iface(dir.path(), "wg0", 65534, Some("1\n"));
        assert_eq!(
            ethernet_interfaces(dir.path()).unwrap(),
            vec!["eth0", "eth1"]
        );
    }

    #[test]
    fn carrier_is_read_from_sysfs_and_missing_means_none() {
        let dir = tempfile::tempdir().unwrap();
        fake_iface(dir.path(), "eth0", 1, Some("1\n"));
        fake_iface(dir.path(), "eth1", 1, Some("0\n"));
        fake_iface(dir.path(), "eth2", 1, None);
        assert!(has_carrier(dir.path(), "eth0"));
        assert!(!has_carrier(dir.path(), "eth1"));
        assert!(!has_carrier(dir.path(), "eth2"));
    }

    #[test]
    fn link_reads_index_and_mac_and_rejects_bad_mac() {
        let dir = tempfile::tempdir().unwrap();
        fake_iface(dir.path(), "eth0", 1, None);
        let l = read_link(dir.path(), "eth0").unwrap();
        assert_eq!((l.index, l.mac), (3, [0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        std::fs::write(dir.path().join("eth0/address"), "52:54:00:12:34\n").unwrap();
        assert!(matches!(
            read_link(dir.path(), "eth0"),
            Err(LinkError::BadValue { .. })
        ));
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
    }
}
