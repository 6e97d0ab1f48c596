//! Binding of a DHT manifest record to the peer that published it (issue 15 §4).
//!
//! Kademlia records are not signed, but the peer that PUTs a record to a storing node is
//! authenticated by Noise. A storing node therefore keeps a `/phase/` record only when the
//! record's `peer_id`, the per-peer key's suffix and that authenticated sender agree, and
//! records the sender as the record's publisher; a client keeps a record only when `peer_id`,
//! key suffix and publisher agree. So a hostile peer cannot publish under an honest provider's
//! per-peer key or in its name, and each sender has a quota of records per storing node
//! ([`MAX_RECORDS_PER_PUBLISHER`]), so a flood of junk `/phase/` keys from a few peers cannot
//! fill a store and keep an honest provider's record out. A record still only points: the
//! manifest it leads to is verified like any other.

use libp2p::PeerId;
use phase_protocol::record::{dht_key, ManifestRecord, RecordError};
use phase_protocol::Arch;

use super::per_peer_key;

/// Records one publisher may keep on one storing node (a provider needs two per channel/arch
/// it serves: the shared key and its per-peer key).
pub const MAX_RECORDS_PER_PUBLISHER: usize = 16;
/// Records a storing node keeps in all (64 MiB at the 4 KiB record cap).
pub const MAX_STORED_RECORDS: usize = 16_384;

/// Why a record is not bound to its publisher.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// The value is not a manifest record (size cap, JSON, shape).
    #[error("value is not a manifest record")]
    NotARecord(#[source] Box<RecordError>),
    /// The record carries no publisher (a client cannot tell who put it).
    #[error("record has no publisher")]
    NoPublisher,
    /// The record's `peer_id` is not its publisher.
    #[error("record names peer {named} but was published by {publisher}")]
    PeerMismatch {
        /// `peer_id` inside the record.
        named: String,
        /// The publisher (the authenticated sender, for a storing node).
        publisher: String,
    },
    /// The key is neither the record's shared key nor its publisher's per-peer key.
    #[error("key {key} is not {shared} or its per-peer key for {publisher}")]
    KeyMismatch {
        /// The key the record was stored under.
        key: String,
        /// The shared key of the record's channel and arch.
        shared: String,
        /// The publisher.
        publisher: String,
    },
    /// The record's arch is no architecture this project knows.
    #[error("record arch {0:?} is unknown")]
    UnknownArch(String),
}

/// Checks that `value`, stored under `key` and published by `publisher`, is a manifest record
/// that names `publisher` as its `peer_id` and sits under its own shared key or under
/// `publisher`'s per-peer key. Returns the parsed record (not yet validated for a channel or a
/// clock: [`ManifestRecord::validate_for`] does that).
///
/// # Errors
/// The first failing [`BindingError`].
pub fn check(
    key: &str,
    value: &[u8],
    publisher: Option<&PeerId>,
) -> Result<ManifestRecord, BindingError> {
    let record =
        ManifestRecord::from_bytes(value).map_err(|e| BindingError::NotARecord(Box::new(e)))?;
    let publisher = publisher.ok_or(BindingError::NoPublisher)?;
    if record.peer_id != publisher.to_string() {
        return Err(BindingError::PeerMismatch {
            named: record.peer_id,
            publisher: publisher.to_string(),
        });
    }
    let arch: Arch = record
        .arch
        .parse()
        .map_err(|_| BindingError::UnknownArch(record.arch.clone()))?;
    let shared = dht_key(&record.channel, arch);
    if key != shared && key != per_peer_key(&shared, publisher) {
        return Err(BindingError::KeyMismatch {
            key: key.to_owned(),
            shared,
            publisher: publisher.to_string(),
        });
    }
    Ok(record)
}

/// Whether `publisher` may store one more record under `key`, given the publishers of the
/// records already stored (`(key, publisher)` pairs): a key it already holds may always be
/// replaced; a new one only below [`MAX_RECORDS_PER_PUBLISHER`].
pub fn within_quota<K: AsRef<[u8]>>(
    stored: impl IntoIterator<Item = (K, Option<PeerId>)>,
    key: &[u8],
    publisher: &PeerId,
) -> bool {
    let mut held = 0;
    for (k, p) in stored {
        if p.as_ref() == Some(publisher) {
            if k.as_ref() == key {
                return true;
            }
            held += 1;
        }
    }
    held < MAX_RECORDS_PER_PUBLISHER
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(peer: &PeerId, channel: &str) -> ManifestRecord {
        ManifestRecord {
            channel: channel.into(),
            arch: "amd64".into(),
            manifest_url: "http://192.0.2.1:8080/stable/x86_64/manifest.json".into(),
            peer_id: peer.to_string(),
            provider_name: None,
            version: "1.0.0".into(),
            created_at: chrono::Utc::now(),
            ttl_secs: 60,
        }
    }

    #[test]
    fn a_record_under_its_shared_or_own_per_peer_key_is_bound() {
        let me = PeerId::random();
        let value = record(&me, "stable").to_bytes();
        let shared = "/phase/stable/x86_64/manifest";
        check(shared, &value, Some(&me)).unwrap();
        check(&per_peer_key(shared, &me), &value, Some(&me)).unwrap();
    }

    #[test]
    fn impersonation_wrong_keys_and_junk_are_refused() {
        let (me, liar) = (PeerId::random(), PeerId::random());
        let shared = "/phase/stable/x86_64/manifest";
        // The liar publishes a record in my name.
        let in_my_name = record(&me, "stable").to_bytes();
        assert!(matches!(
            check(shared, &in_my_name, Some(&liar)),
            Err(BindingError::PeerMismatch { .. })
        ));
        // Its own record under my per-peer key.
        let its_own = record(&liar, "stable").to_bytes();
        assert!(matches!(
            check(&per_peer_key(shared, &me), &its_own, Some(&liar)),
            Err(BindingError::KeyMismatch { .. })
        ));
        // Under another channel's key.
        assert!(matches!(
            check("/phase/beta/x86_64/manifest", &its_own, Some(&liar)),
            Err(BindingError::KeyMismatch { .. })
        ));
        assert!(matches!(
            check(shared, b"junk", Some(&liar)),
            Err(BindingError::NotARecord(_))
        ));
        assert!(matches!(
            check(shared, &its_own, None),
            Err(BindingError::NoPublisher)
        ));
        let mut odd = record(&liar, "stable");
        odd.arch = "m68k".into();
        assert!(matches!(
            check(shared, &odd.to_bytes(), Some(&liar)),
            Err(BindingError::UnknownArch(_))
        ));
    }

    #[test]
    fn a_publisher_is_held_to_its_quota_but_may_replace_what_it_holds() {
        let (flooder, honest) = (PeerId::random(), PeerId::random());
        let keys: Vec<Vec<u8>> = (0..MAX_RECORDS_PER_PUBLISHER)
            .map(|n| format!("/phase/junk{n}/x86_64/manifest").into_bytes())
            .collect();
        let stored = || keys.iter().map(|k| (k.as_slice(), Some(flooder)));
        assert!(!within_quota(
            stored(),
            b"/phase/junk99/x86_64/manifest",
            &flooder
        ));
        assert!(
            within_quota(stored(), &keys[3], &flooder),
            "replacing is fine"
        );
        assert!(within_quota(
            stored(),
            b"/phase/stable/x86_64/manifest",
            &honest
        ));
        // One short of the quota, a new key is still taken.
        let fewer = || keys.iter().skip(1).map(|k| (k.as_slice(), Some(flooder)));
        assert!(within_quota(
            fewer(),
            b"/phase/junk99/x86_64/manifest",
            &flooder
        ));
    }
}
