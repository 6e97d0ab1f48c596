//! QEMU + network-namespace harness for the Phase Boot boot tests (DESIGN §10.3, issue 9).
//!
//! A test creates a [`netns::Lan`] (namespace, bridge br0 at 192.0.2.1/24, dnsmasq), starts the
//! host provider and DHT nodes ([`provider`]), boots VMs ([`qemu::Vm`]) on tap devices and reads
//! their serial consoles; [`release`] holds the end checks and [`disk`] the cache disk.
//! Everything it starts is killed by PID and the namespace is deleted on drop, even on panic.

pub mod disk;
pub mod env;
pub mod netns;
pub mod process;
pub mod provider;
pub mod qemu;
pub mod release;
pub mod timing;
