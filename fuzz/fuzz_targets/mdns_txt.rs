//! mDNS TXT record data from the network through `phase_discovery::mdns::advert_from_txt`
//! (the conversion `browse` applies to every resolved instance) and `MdnsAdvert::from_txt`, and
//! through `peer_from_txt` (`PeerAdvert::from_txt`, peers in the boot stage).
//!
//! Input: the TXT RDATA as on the wire (RFC 6763 §6.1: length-prefixed strings). It is split
//! into properties the way mdns-sd does (its `decode_txt` is crate-private): each string is cut
//! at its first `=`, a string without `=` is a key with no value, a non-UTF-8 key is dropped,
//! a zero length or a string past the end stops.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mdns_sd::{IntoTxtProperties, TxtProperty};
use phase_discovery::mdns::{advert_from_txt, peer_from_txt};
use phase_protocol::Arch;

fuzz_target!(|data: &[u8]| {
    let mut props = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || len > tail.len() {
            break;
        }
        let (s, tail) = tail.split_at(len);
        rest = tail;
        let (key, val) = match s.iter().position(|&b| b == b'=') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        let Ok(key) = std::str::from_utf8(key) else {
            continue;
        };
        props.push(match val {
            Some(v) => TxtProperty::from((key, v)),
            None => TxtProperty::from(key),
        });
    }
    let props = props.into_txt_properties();
    if let Ok(peer) = peer_from_txt(&props) {
        // What is accepted announces itself the same way.
        let txt = peer.txt_properties();
        let back =
            phase_protocol::mdns::PeerAdvert::from_txt(txt.iter().map(|(k, v)| (*k, v.as_str())));
        assert_eq!(back.as_ref(), Ok(&peer));
        assert!(peer.url.starts_with("http://") && !peer.url.ends_with('/'));
    }
    if let Ok(advert) = advert_from_txt(&props) {
        let _ = advert.matches("stable", Arch::X86_64);
        let _ = advert.instance_name("phase-0123abcd");
        let _ = advert.txt_properties();
    }
});
