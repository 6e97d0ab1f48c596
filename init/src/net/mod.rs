//! (in progress) DHCP client and link configuration, see issue 6 §4.
