//! Kademlia DHT on loopback with real libp2p nodes (issue 4 "Tests: DHT, 8 or more nodes"):
//! 8 server nodes, providers publishing, fresh ephemeral clients looking up.

use std::time::Duration;

use phase_discovery::{identity, DhtConfig, DhtNode, FoundSource, Publication, Role};
use phase_protocol::record::{dht_key, ManifestRecord};
use phase_protocol::Arch;

const NODES: usize = 8;

/// Logs to the test output when RUST_LOG is set (e.g. `RUST_LOG=phase_discovery=debug`).
fn init_log() {
    phase_discovery::log_to_stderr_from_env();
}

fn listen() -> Vec<libp2p::Multiaddr> {
    vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]
}

/// Starts `NODES` server nodes, each bootstrapping from the first; returns them and the first's
/// address.
async fn network() -> (Vec<DhtNode>, libp2p::Multiaddr) {
    init_log();
    let first = DhtNode::start(DhtConfig {
        keypair: identity::ephemeral(),
        listen: listen(),
        bootstrap: vec![],
        role: Role::Server,
    })
    .unwrap();
    let boot = first
        .listen_addrs(Duration::from_secs(5))
        .await
        .into_iter()
        .next()
        .expect("first node listens");
    let mut nodes = vec![first];
    for _ in 1..NODES {
        let n = DhtNode::start(DhtConfig {
            keypair: identity::ephemeral(),
            listen: listen(),
            bootstrap: vec![boot.clone()],
            role: Role::Server,
        })
        .unwrap();
        assert!(!n.listen_addrs(Duration::from_secs(5)).await.is_empty());
        nodes.push(n);
    }
    // Let the self-lookups of the bootstrap fill the routing tables (bounded).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    (nodes, boot)
}

/// A server-mode node (listening, so that its provider records are handed out with its
/// address) for publishing raw records.
async fn server(boot: &libp2p::Multiaddr) -> DhtNode {
    let node = DhtNode::start(DhtConfig {
        keypair: identity::ephemeral(),
        listen: listen(),
        bootstrap: vec![boot.clone()],
        role: Role::Server,
    })
    .unwrap();
    node.listen_addrs(Duration::from_secs(5)).await;
    node
}

async fn provider(boot: &libp2p::Multiaddr, n: u32, ttl: Duration) -> DhtNode {
    let node = server(boot).await;
    node.publish(vec![Publication {
        channel: "stable".into(),
        arch: Arch::X86_64,
        manifest_url: format!("http://192.0.2.{n}:8080/stable/x86_64/manifest.json"),
        version: format!("1.0.{n}"),
        provider_name: Some(format!("p{n}")),
        ttl,
    }])
    .unwrap();
    node
}

fn client(boot: &libp2p::Multiaddr) -> DhtNode {
    DhtNode::start(DhtConfig {
        keypair: identity::ephemeral(),
        listen: vec![],
        bootstrap: vec![boot.clone()],
        role: Role::Client,
    })
    .unwrap()
}

async fn urls(boot: &libp2p::Multiaddr, want: usize, timeout: Duration) -> Vec<String> {
    let c = client(boot);
    let found = c
        .lookup("stable", Arch::X86_64, want, timeout)
        .await
        .unwrap();
    c.shutdown().await;
    assert!(found.iter().all(|f| f.source == FoundSource::Dht));
    let mut u: Vec<String> = found.into_iter().map(|f| f.manifest_url).collect();
    u.sort();
    u
}

fn url(n: u32) -> String {
    format!("http://192.0.2.{n}:8080/stable/x86_64/manifest.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_providers_of_one_key_are_all_found_by_a_fresh_client() {
    let (_nodes, boot) = network().await;
    let hour = Duration::from_secs(3600);
    let _p = [
        provider(&boot, 11, hour).await,
        provider(&boot, 12, hour).await,
        provider(&boot, 13, hour).await,
    ];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let found = urls(&boot, 3, Duration::from_secs(10)).await;
    assert_eq!(found, [url(11), url(12), url(13)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_wanting_one_returns_with_one() {
    let (_nodes, boot) = network().await;
    let hour = Duration::from_secs(3600);
    let _p = [
        provider(&boot, 21, hour).await,
        provider(&boot, 22, hour).await,
    ];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let found = urls(&boot, 1, Duration::from_secs(10)).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0] == url(21) || found[0] == url(22));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_that_stops_republishing_expires_and_one_that_refreshes_stays() {
    let (_nodes, boot) = network().await;
    let ttl = Duration::from_secs(4);
    let stopping = provider(&boot, 31, ttl).await;
    let refreshing = provider(&boot, 32, ttl).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        urls(&boot, 2, Duration::from_secs(10)).await,
        [url(31), url(32)]
    );
    stopping.shutdown().await;
    // Three TTLs later only the provider that republished every ttl/2 is still found.
    tokio::time::sleep(ttl * 3).await;
    assert_eq!(urls(&boot, 2, Duration::from_secs(10)).await, [url(32)]);
    drop(refreshing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_records_are_skipped_and_the_good_one_found() {
    let (_nodes, boot) = network().await;
    let key = dht_key("stable", Arch::X86_64);
    let hour = Duration::from_secs(3600);
    let good = ManifestRecord {
        channel: "stable".into(),
        arch: "x86_64".into(),
        manifest_url: url(99),
        peer_id: "x".into(),
        provider_name: None,
        version: "9.9.9".into(),
        created_at: chrono::Utc::now(),
        ttl_secs: 3600,
    };
    let wrong_channel = ManifestRecord {
        channel: "testing".into(),
        manifest_url: url(41),
        ..good.clone()
    };
    let wrong_arch = ManifestRecord {
        arch: "aarch64".into(),
        manifest_url: url(42),
        ..good.clone()
    };
    let expired = ManifestRecord {
        created_at: chrono::Utc::now() - chrono::Duration::hours(2),
        manifest_url: url(43),
        ..good.clone()
    };
    let bad_url = ManifestRecord {
        manifest_url: "file:///etc/shadow".into(),
        ..good.clone()
    };
    let poisons: Vec<Vec<u8>> = vec![
        b"garbage \xff not json".to_vec(),
        b"{\"manifest_url\": 1}".to_vec(),
        wrong_channel.to_bytes(),
        wrong_arch.to_bytes(),
        expired.to_bytes(),
        bad_url.to_bytes(),
    ];
    let mut attackers = Vec::new();
    for p in poisons {
        let a = DhtNode::start(DhtConfig {
            keypair: identity::ephemeral(),
            listen: listen(),
            bootstrap: vec![boot.clone()],
            role: Role::Server,
        })
        .unwrap();
        a.listen_addrs(Duration::from_secs(5)).await;
        a.publish_raw(key.clone(), p, hour).unwrap();
        attackers.push(a);
    }
    let _honest = provider(&boot, 44, hour).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Want more than exist, so the lookup reads every record before it ends.
    assert_eq!(urls(&boot, 10, Duration::from_secs(10)).await, [url(44)]);
}

/// Issue 15 §4: a hostile peer that publishes a newer record in an honest provider's name (its
/// peer id, a higher version, the attacker's URL) and floods junk channels is not believed: the
/// storing nodes refuse records not bound to their authenticated sender, clients skip them, and
/// the honest provider's record is found. Without the binding the lie is a valid record for
/// this channel and arch and would be found first (higher version).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_another_peers_name_are_refused_and_a_junk_flood_keeps_nothing_out() {
    let (_nodes, boot) = network().await;
    let hour = Duration::from_secs(3600);
    let honest = provider(&boot, 55, hour).await;
    let attacker = server(&boot).await;
    let lie = ManifestRecord {
        channel: "stable".into(),
        arch: "x86_64".into(),
        manifest_url: url(66),
        peer_id: honest.peer_id().to_string(),
        provider_name: Some("p55".into()),
        version: "99.0.0".into(),
        created_at: chrono::Utc::now(),
        ttl_secs: 3600,
    };
    let key = dht_key("stable", Arch::X86_64);
    attacker.publish_raw(key, lie.to_bytes(), hour).unwrap();
    for n in 0..20 {
        let junk = ManifestRecord {
            channel: format!("junk{n}"),
            peer_id: attacker.peer_id().to_string(),
            ..lie.clone()
        };
        attacker
            .publish_raw(dht_key(&junk.channel, Arch::X86_64), junk.to_bytes(), hour)
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(urls(&boot, 10, Duration::from_secs(10)).await, [url(55)]);
}

/// A boot-stage peer: a client-mode node (as the init runs) announcing its chunk server for
/// release `m`.
fn boot_peer(boot: &libp2p::Multiaddr, m: &[u8], n: u32) -> DhtNode {
    let node = client(boot);
    node.publish_peer(
        phase_protocol::Sha256Digest::of(m),
        format!("http://192.0.2.{n}:7400"),
        Duration::from_secs(60),
    )
    .unwrap();
    node
}

/// Issue 19 §3: boot-stage peers of one release (by signed-manifest digest) find each other in
/// the DHT, leaving out themselves and peers of another release. A record that names another
/// peer (so that its fleet would be sent to the attacker's URL) is refused by the storing
/// nodes and skipped by the client, and a record with a URL that is not `http://host:port` is
/// skipped. Both are put last, so that they are what the release's shared key holds, and by
/// providers the lookup finds: without the binding the forged record is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_peers_of_one_release_find_each_other_and_forged_or_malformed_records_are_skipped() {
    use phase_protocol::record::{peers_dht_key, PeerRecord};
    let (_nodes, boot) = network().await;
    let release = phase_protocol::Sha256Digest::of(b"m");
    let peers = [
        boot_peer(&boot, b"m", 21),
        boot_peer(&boot, b"m", 22),
        boot_peer(&boot, b"n", 23),
    ];
    let me = boot_peer(&boot, b"m", 24);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hour = Duration::from_secs(3600);
    let attacker = server(&boot).await;
    let lie = PeerRecord {
        manifest_sha256: release,
        url: "http://192.0.2.66:7400".into(),
        peer_id: peers[0].peer_id().to_string(),
        created_at: chrono::Utc::now(),
        ttl_secs: 60,
    };
    attacker
        .publish_raw(peers_dht_key(&release), lie.to_bytes(), hour)
        .unwrap();
    let liar = server(&boot).await;
    let malformed = PeerRecord {
        url: "http://192.0.2.67:7400/elsewhere".into(),
        peer_id: liar.peer_id().to_string(),
        ..lie
    };
    liar.publish_raw(peers_dht_key(&release), malformed.to_bytes(), hour)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let found = me
        .lookup_peers(release, 64, Duration::from_secs(10), true)
        .await
        .unwrap();
    let mut urls: Vec<String> = found.iter().map(|p| p.url.clone()).collect();
    urls.sort();
    assert_eq!(urls, ["http://192.0.2.21:7400", "http://192.0.2.22:7400"]);
    assert_eq!(found.len(), 2, "each peer once: {found:?}");
    me.shutdown().await;
}

/// A bare libp2p node speaking only identify (`/phase/id/1.0.0`), listening on loopback, that
/// reports every identify it receives, by sender.
struct IdentifyProbe {
    swarm: libp2p::Swarm<libp2p::identify::Behaviour>,
    addr: libp2p::Multiaddr,
}

impl IdentifyProbe {
    async fn start() -> Self {
        use futures::StreamExt;
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|key| {
                libp2p::identify::Behaviour::new(libp2p::identify::Config::new(
                    phase_discovery::dht::IDENTIFY_PROTOCOL.to_owned(),
                    key.public(),
                ))
            })
            .unwrap()
            .build();
        swarm.listen_on(listen().remove(0)).unwrap();
        let addr = loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                swarm.select_next_some().await
            {
                break address.with(libp2p::multiaddr::Protocol::P2p(*swarm.local_peer_id()));
            }
        };
        Self { swarm, addr }
    }

    /// Polls for up to `window`: (whether `peer` connected, whether `peer` sent its identify).
    async fn watch(&mut self, peer: libp2p::PeerId, window: Duration) -> (bool, bool) {
        use futures::StreamExt;
        use libp2p::swarm::SwarmEvent;
        let (mut connected, mut identified) = (false, false);
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(event) = tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await
        {
            match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer => {
                    connected = true
                }
                SwarmEvent::Behaviour(libp2p::identify::Event::Received { peer_id, .. })
                    if peer_id == peer =>
                {
                    identified = true
                }
                _ => {}
            }
        }
        (connected, identified)
    }
}

/// Identify runs on server nodes only: a boot-time client connects, asks and answers Kademlia,
/// and never spends the identify exchange (its CPU under TCG is on the boot path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_skip_identify_and_servers_run_it() {
    init_log();
    let mut probe = IdentifyProbe::start().await;
    let c = client(&probe.addr);
    let lookup = c.lookup("stable", Arch::X86_64, 1, Duration::from_secs(2));
    let ((connected, identified), _) =
        tokio::join!(probe.watch(c.peer_id(), Duration::from_secs(2)), lookup);
    c.shutdown().await;
    assert!(connected, "the client dialled its bootstrap node");
    assert!(!identified, "a client node must not send identify");

    let s = server(&probe.addr).await;
    let (connected, identified) = probe.watch(s.peer_id(), Duration::from_secs(3)).await;
    s.shutdown().await;
    assert!(connected && identified, "a server node sends identify");
}
