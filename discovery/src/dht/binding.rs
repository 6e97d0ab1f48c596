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
//!
//! Boot-stage peer records ([`PeerRecord`], issue 19 §3) are bound the same way: under
//! `/phase/peers/<hex>` or the publisher's per-peer key below it, naming the publisher, within
//! the same quota.

use libp2p::PeerId;
use phase_protocol::record::{
    dht_key, peers_dht_key, ManifestRecord, PeerRecord, RecordError, PEERS_KEY_PREFIX,
};
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
    /// The value is not a record of its key's kind (size cap, JSON, shape): a manifest record,
    /// or a peer record under `/phase/peers/`.
    #[error("value is not a {kind} record")]
    NotARecord {
        /// `manifest` or `peer`.
        kind: &'static str,
        /// Why it did not parse.
        #[source]
        source: Box<RecordError>,
    },
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

/// A record bound to its publisher by [`check`]: which kind its key says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// A manifest record (`/phase/{channel}/{arch}/manifest[/<peer id>]`).
    Manifest(ManifestRecord),
    /// A boot-stage peer record (`/phase/peers/<hex>[/<peer id>]`).
    Peer(PeerRecord),
}

/// Checks that `value`, stored under `key` and published by `publisher`, is a record of the
/// kind `key` names (a [`PeerRecord`] under [`PEERS_KEY_PREFIX`], else a [`ManifestRecord`])
/// that names `publisher` as its `peer_id` and sits under its own shared key or under
/// `publisher`'s per-peer key. Returns the parsed record (not yet validated for a release or a
/// clock: `validate_for` does that).
///
/// # Errors
/// The first failing [`BindingError`].
pub fn check(key: &str, value: &[u8], publisher: Option<&PeerId>) -> Result<Bound, BindingError> {
    let not = |kind| {
        move |e| BindingError::NotARecord {
            kind,
            source: Box::new(e),
        }
    };
    let (named, shared, bound) = if key.starts_with(PEERS_KEY_PREFIX) {
        let record = PeerRecord::from_bytes(value).map_err(not("peer"))?;
        let shared = peers_dht_key(&record.manifest_sha256);
        (record.peer_id.clone(), shared, Bound::Peer(record))
    } else {
        let record = ManifestRecord::from_bytes(value).map_err(not("manifest"))?;
        let arch: Arch = record
            .arch
            .parse()
            .map_err(|_| BindingError::UnknownArch(record.arch.clone()))?;
        let shared = dht_key(&record.channel, arch);
        (record.peer_id.clone(), shared, Bound::Manifest(record))
    };
    let publisher = publisher.ok_or(BindingError::NoPublisher)?;
    if named != publisher.to_string() {
        return Err(BindingError::PeerMismatch {
            named,
            publisher: publisher.to_string(),
        });
    }
    if key != shared && key != per_peer_key(&shared, publisher) {
        return Err(BindingError::KeyMismatch {
            key: key.to_owned(),
            shared,
            publisher: publisher.to_string(),
        });
    }
    Ok(bound)
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
            Err(BindingError::NotARecord {
                kind: "manifest",
                ..
            })
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

    fn peer_record(peer: &PeerId, release: &[u8]) -> PeerRecord {
        PeerRecord {
            manifest_sha256: phase_protocol::Sha256Digest::of(release),
            url: "http://192.0.2.11:7400".into(),
            peer_id: peer.to_string(),
            created_at: chrono::Utc::now(),
            ttl_secs: 60,
        }
    }

    #[test]
    fn a_peer_record_under_its_release_key_or_own_per_peer_key_is_bound() {
        let me = PeerId::random();
        let rec = peer_record(&me, b"m");
        let shared = peers_dht_key(&rec.manifest_sha256);
        let value = rec.to_bytes();
        assert_eq!(
            check(&shared, &value, Some(&me)).unwrap(),
            Bound::Peer(rec.clone())
        );
        check(&per_peer_key(&shared, &me), &value, Some(&me)).unwrap();
    }

    #[test]
    fn peer_records_in_another_name_under_another_release_or_of_the_wrong_kind_are_refused() {
        let (me, liar) = (PeerId::random(), PeerId::random());
        let mine = peer_record(&me, b"m");
        let shared = peers_dht_key(&mine.manifest_sha256);
        // The liar announces a peer in my name (its URL would draw my fleet's requests).
        assert!(matches!(
            check(&shared, &mine.to_bytes(), Some(&liar)),
            Err(BindingError::PeerMismatch { .. })
        ));
        // Its own record under my per-peer key.
        let its_own = peer_record(&liar, b"m").to_bytes();
        assert!(matches!(
            check(&per_peer_key(&shared, &me), &its_own, Some(&liar)),
            Err(BindingError::KeyMismatch { .. })
        ));
        // A record for release m under release n's key.
        let other = peers_dht_key(&phase_protocol::Sha256Digest::of(b"n"));
        assert!(matches!(
            check(&other, &its_own, Some(&liar)),
            Err(BindingError::KeyMismatch { .. })
        ));
        // A manifest record under a peer key, and a peer record under a manifest key.
        assert!(matches!(
            check(&shared, &record(&liar, "stable").to_bytes(), Some(&liar)),
            Err(BindingError::NotARecord { kind: "peer", .. })
        ));
        assert!(matches!(
            check("/phase/stable/x86_64/manifest", &its_own, Some(&liar)),
            Err(BindingError::NotARecord {
                kind: "manifest",
                ..
            })
        ));
        assert!(matches!(
            check(&shared, &its_own, None),
            Err(BindingError::NoPublisher)
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
