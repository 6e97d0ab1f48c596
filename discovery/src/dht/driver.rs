//! The task that owns the libp2p swarm of a [`super::DhtNode`]: it runs commands, republishes,
//! drives lookups and logs what other peers store here.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::kad::{
    self, store::MemoryStore, store::RecordStore, GetProvidersOk, GetRecordOk, QueryId, QueryResult,
};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{behaviour::toggle::Toggle, NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use phase_protocol::record::{
    dht_key, peers_dht_key, ManifestRecord, PeerRecord, MAX_RECORD_BYTES,
};
use phase_protocol::{Arch, Sha256Digest};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    binding, per_peer_key, Command, DhtConfig, DhtError, FoundPeer, Publication, Role,
    IDENTIFY_PROTOCOL, KAD_PROTOCOL,
};
use crate::{Found, FoundSource};

/// Longest any single Kademlia query may run; lookups end earlier at their own deadline.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often deadlines and republication are checked.
const TICK: Duration = Duration::from_millis(100);

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    kad: kad::Behaviour<MemoryStore>,
    /// Servers only: a client asks a few nodes once and is in no one's routing table, so the
    /// identify exchange on each of its connections would only cost CPU on the boot path.
    identify: Toggle<identify::Behaviour>,
}

/// A record kept published: real or raw bytes (tests), with its next due time.
struct Published {
    shared_key: String,
    what: PublishedValue,
    ttl: Duration,
    due: Instant,
}

enum PublishedValue {
    Record(Publication),
    /// A boot-stage peer's record: the release (signed manifest digest) and its chunk server.
    Peer {
        manifest_sha256: Sha256Digest,
        url: String,
    },
    Raw(Vec<u8>),
}

/// What a lookup is for, and where its answer goes.
enum Wanted {
    /// Manifest records of a channel and arch.
    Manifest {
        channel: String,
        arch: Arch,
        reply: Option<oneshot::Sender<Vec<Found>>>,
        found: Vec<Found>,
    },
    /// Boot-stage peers of one release.
    Peers {
        manifest_sha256: Sha256Digest,
        reply: Option<oneshot::Sender<Vec<FoundPeer>>>,
        found: Vec<FoundPeer>,
    },
}

impl Wanted {
    fn found(&self) -> usize {
        match self {
            Wanted::Manifest { found, .. } => found.len(),
            Wanted::Peers { found, .. } => found.len(),
        }
    }

    /// Sends what was found, once.
    fn answer(&mut self) {
        match self {
            Wanted::Manifest { reply, found, .. } => {
                if let Some(r) = reply.take() {
                    let _ = r.send(std::mem::take(found));
                }
            }
            Wanted::Peers { reply, found, .. } => {
                if let Some(r) = reply.take() {
                    let _ = r.send(std::mem::take(found));
                }
            }
        }
    }
}

struct Lookup {
    wanted: Wanted,
    shared_key: String,
    want: usize,
    deadline: Instant,
    /// (peer id, URL) pairs already taken.
    seen: HashSet<(String, String)>,
    asked: HashSet<PeerId>,
    queries: HashSet<QueryId>,
    /// Keys whose bad record was already logged (each copy from another peer is not).
    skipped: HashSet<String>,
    /// Whether records' TTL and created_at are judged against this host's clock.
    clock_trusted: bool,
}

pub(super) struct Driver {
    swarm: Swarm<Behaviour>,
    commands: mpsc::UnboundedReceiver<Command>,
    listen_tx: watch::Sender<Vec<Multiaddr>>,
    published: Vec<Published>,
    lookups: Vec<Lookup>,
    puts: HashMap<QueryId, String>,
}

impl Driver {
    pub(super) fn new(
        config: DhtConfig,
        commands: mpsc::UnboundedReceiver<Command>,
        listen_tx: watch::Sender<Vec<Multiaddr>>,
    ) -> Result<Self, DhtError> {
        let bootstrap = config
            .bootstrap
            .iter()
            .map(|addr| match addr.iter().last() {
                Some(Protocol::P2p(peer)) => Ok((peer, addr.clone())),
                _ => Err(DhtError::BootstrapWithoutPeerId(addr.clone())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let role = config.role;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| DhtError::Transport(Box::new(e)))?
            .with_behaviour(|key| {
                let peer = key.public().to_peer_id();
                let mut cfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
                let ttl = Duration::from_secs(phase_protocol::record::DEFAULT_TTL_SECS);
                cfg.set_query_timeout(QUERY_TIMEOUT)
                    .set_record_ttl(Some(ttl))
                    .set_provider_record_ttl(Some(ttl))
                    // We republish ourselves with a fresh created_at every half TTL.
                    .set_publication_interval(None)
                    .set_provider_publication_interval(None)
                    .set_record_filtering(kad::StoreInserts::FilterBoth)
                    .set_caching(kad::Caching::Disabled);
                let store = MemoryStore::with_config(
                    peer,
                    kad::store::MemoryStoreConfig {
                        max_records: binding::MAX_STORED_RECORDS,
                        max_value_bytes: MAX_RECORD_BYTES,
                        ..Default::default()
                    },
                );
                let mut kad = kad::Behaviour::with_config(peer, store, cfg);
                kad.set_mode(Some(match role {
                    Role::Server => kad::Mode::Server,
                    Role::Client => kad::Mode::Client,
                }));
                let identify = Toggle::from((role == Role::Server).then(|| {
                    identify::Behaviour::new(
                        identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                            .with_agent_version(format!(
                                "phase-boot/{}",
                                env!("CARGO_PKG_VERSION")
                            )),
                    )
                }));
                Behaviour { kad, identify }
            })
            .map_err(|e| DhtError::Transport(Box::new(e)))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        for addr in config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|source| DhtError::Listen { addr, source })?;
        }
        for (peer, addr) in &bootstrap {
            swarm.behaviour_mut().kad.add_address(peer, addr.clone());
        }
        if !bootstrap.is_empty() && role == Role::Server {
            // Join: a self-lookup fills our table and puts us in others'.
            let _ = swarm.behaviour_mut().kad.bootstrap();
        }
        Ok(Driver {
            swarm,
            commands,
            listen_tx,
            published: Vec::new(),
            lookups: Vec::new(),
            puts: HashMap::new(),
        })
    }

    pub(super) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        self.finish_all();
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => return,
                },
                _ = tick.tick() => self.on_tick(),
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Publish(pubs) => {
                self.published
                    .retain(|p| matches!(p.what, PublishedValue::Raw(_)));
                for p in pubs {
                    let shared_key = dht_key(&p.channel, p.arch);
                    let ttl = p.ttl;
                    self.published.push(Published {
                        shared_key,
                        what: PublishedValue::Record(p),
                        ttl,
                        due: now,
                    });
                }
                self.on_tick();
            }
            Command::PublishPeer {
                manifest_sha256,
                url,
                ttl,
            } => {
                let shared_key = peers_dht_key(&manifest_sha256);
                // Storing nodes hand out a provider record only with an address (a client is
                // in no routing table to take one from), and the record's addresses are this
                // node's external ones: the chunk server's, as `/ip4/<a>/tcp/<port>/http`,
                // which no libp2p transport dials.
                match http_multiaddr(&url) {
                    Some(addr) => self.swarm.add_external_address(addr),
                    None => tracing::warn!(url, "dht peer url has no multiaddr form"),
                }
                self.published.retain(|p| p.shared_key != shared_key);
                self.published.push(Published {
                    shared_key,
                    what: PublishedValue::Peer {
                        manifest_sha256,
                        url,
                    },
                    ttl,
                    due: now,
                });
                self.on_tick();
            }
            Command::PublishRaw {
                shared_key,
                value,
                ttl,
            } => {
                // Raw values are put once: `due` far away.
                let p = Published {
                    shared_key,
                    what: PublishedValue::Raw(value),
                    ttl,
                    due: now,
                };
                self.put(&p);
                self.published.push(Published {
                    due: now + Duration::from_secs(86_400 * 365),
                    ..p
                });
            }
            Command::Lookup {
                channel,
                arch,
                want,
                timeout,
                clock_trusted,
                reply,
            } => {
                let shared_key = dht_key(&channel, arch);
                let wanted = Wanted::Manifest {
                    channel,
                    arch,
                    reply: Some(reply),
                    found: Vec::new(),
                };
                self.start_lookup(shared_key, wanted, want, timeout, clock_trusted);
            }
            Command::LookupPeers {
                manifest_sha256,
                want,
                timeout,
                clock_trusted,
                reply,
            } => {
                let shared_key = peers_dht_key(&manifest_sha256);
                let wanted = Wanted::Peers {
                    manifest_sha256,
                    reply: Some(reply),
                    found: Vec::new(),
                };
                self.start_lookup(shared_key, wanted, want, timeout, clock_trusted);
            }
            Command::Shutdown(_) => {}
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = (0..self.published.len())
            .filter(|&i| self.published[i].due <= now)
            .collect();
        for i in due {
            let ttl = self.published[i].ttl;
            self.published[i].due = now + ttl / 2;
            let p = &self.published[i];
            let p = Published {
                shared_key: p.shared_key.clone(),
                what: clone_value(&p.what),
                ttl,
                due: now,
            };
            self.put(&p);
        }
        let expired: Vec<usize> = (0..self.lookups.len())
            .filter(|&i| self.lookups[i].deadline <= now)
            .collect();
        for i in expired.into_iter().rev() {
            let l = self.lookups.swap_remove(i);
            tracing::debug!(key = %l.shared_key, found = l.wanted.found(), "dht lookup reached its deadline");
            self.complete(l);
        }
    }

    /// Puts one publication: shared key, per-peer key, provider record.
    fn put(&mut self, p: &Published) {
        let me = *self.swarm.local_peer_id();
        let value = match &p.what {
            PublishedValue::Raw(v) => v.clone(),
            PublishedValue::Record(p2) => ManifestRecord {
                channel: p2.channel.clone(),
                arch: p2.arch.as_str().to_owned(),
                manifest_url: p2.manifest_url.clone(),
                peer_id: me.to_string(),
                provider_name: p2.provider_name.clone(),
                version: p2.version.clone(),
                created_at: chrono::Utc::now(),
                ttl_secs: p.ttl.as_secs().max(1),
            }
            .to_bytes(),
            PublishedValue::Peer {
                manifest_sha256,
                url,
            } => PeerRecord {
                manifest_sha256: *manifest_sha256,
                url: url.clone(),
                peer_id: me.to_string(),
                created_at: chrono::Utc::now(),
                ttl_secs: p.ttl.as_secs().max(1),
            }
            .to_bytes(),
        };
        let expires = Some(Instant::now() + p.ttl);
        let kad = &mut self.swarm.behaviour_mut().kad;
        for key in [p.shared_key.clone(), per_peer_key(&p.shared_key, &me)] {
            let record = kad::Record {
                key: kad::RecordKey::new(&key),
                value: value.clone(),
                publisher: Some(me),
                expires,
            };
            match kad.put_record(record, kad::Quorum::One) {
                Ok(id) => {
                    self.puts.insert(id, key);
                }
                Err(e) => tracing::warn!(key, error = %e, "dht put failed locally"),
            }
        }
        if let Err(e) = kad.start_providing(kad::RecordKey::new(&p.shared_key)) {
            tracing::warn!(key = p.shared_key, error = %e, "dht start_providing failed");
        }
    }

    fn start_lookup(
        &mut self,
        shared_key: String,
        wanted: Wanted,
        want: usize,
        timeout: Duration,
        clock_trusted: bool,
    ) {
        let key = kad::RecordKey::new(&shared_key);
        let kad = &mut self.swarm.behaviour_mut().kad;
        let mut queries = HashSet::new();
        queries.insert(kad.get_providers(key.clone()));
        queries.insert(kad.get_record(key));
        tracing::debug!(key = %shared_key, want, timeout_ms = timeout.as_millis() as u64, "dht lookup started");
        self.lookups.push(Lookup {
            wanted,
            shared_key,
            want,
            deadline: Instant::now() + timeout,
            seen: HashSet::new(),
            asked: HashSet::new(),
            queries,
            skipped: HashSet::new(),
            clock_trusted,
        });
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(*self.swarm.local_peer_id()));
                tracing::info!(addr = %full, "dht listening");
                self.listen_tx.send_modify(|a| a.push(full));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocols.iter().any(|p| p.as_ref() == KAD_PROTOCOL) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad_event(event),
            _ => {}
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => {
                self.store_inbound(source, record);
            }
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::AddProvider {
                        record: Some(provider),
                    },
            } => {
                let key = String::from_utf8_lossy(provider.key.as_ref()).into_owned();
                if key.starts_with("/phase/") {
                    tracing::info!(key, provider = %provider.provider, "dht stored provider record");
                    if let Err(e) = self
                        .swarm
                        .behaviour_mut()
                        .kad
                        .store_mut()
                        .add_provider(provider)
                    {
                        tracing::warn!(key, error = %e, "dht provider record not stored");
                    }
                }
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => self.on_query(id, result, step.last),
            _ => {}
        }
    }

    /// Stores a record another peer put here: only `/phase/` keys up to the record size cap,
    /// bound to the authenticated sender ([`binding::check`]) and within its quota
    /// ([`binding::within_quota`]). Clients still validate every record they read.
    fn store_inbound(&mut self, source: PeerId, mut record: kad::Record) {
        let key = String::from_utf8_lossy(record.key.as_ref()).into_owned();
        if !key.starts_with("/phase/") || record.value.len() > MAX_RECORD_BYTES {
            tracing::warn!(key, %source, bytes = record.value.len(), "dht refused inbound record");
            return;
        }
        if record.publisher.is_some_and(|p| p != source) {
            tracing::warn!(key, %source, "dht refused inbound record: publisher is not the sender");
            return;
        }
        if let Err(e) = binding::check(&key, &record.value, Some(&source)) {
            tracing::warn!(key, %source, error = %crate::error_chain(&e), "dht refused inbound record");
            return;
        }
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let stored = store
            .records()
            .map(|r| (r.key.to_vec(), r.publisher))
            .collect::<Vec<_>>();
        if !binding::within_quota(stored, record.key.as_ref(), &source) {
            tracing::warn!(key, %source, quota = binding::MAX_RECORDS_PER_PUBLISHER, "dht refused inbound record: publisher over its quota");
            return;
        }
        record.publisher = Some(source);
        let bytes = record.value.len();
        match self.swarm.behaviour_mut().kad.store_mut().put(record) {
            Ok(()) => tracing::info!(key, %source, bytes, "dht stored record"),
            Err(e) => tracing::warn!(key, %source, error = %e, "dht record not stored"),
        }
    }

    fn on_query(&mut self, id: QueryId, result: QueryResult, last: bool) {
        match result {
            QueryResult::PutRecord(r) => {
                if let Some(key) = self.puts.remove(&id) {
                    match r {
                        Ok(_) => tracing::info!("dht put ok {key}"),
                        Err(e) => tracing::warn!(key, error = %e, "dht put failed"),
                    }
                }
                return;
            }
            QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) => {
                if let Some(i) = self.lookup_of(id) {
                    let me = *self.swarm.local_peer_id();
                    for peer in providers {
                        if peer != me && self.lookups[i].asked.insert(peer) {
                            let key = per_peer_key(&self.lookups[i].shared_key, &peer);
                            let q = self
                                .swarm
                                .behaviour_mut()
                                .kad
                                .get_record(kad::RecordKey::new(&key));
                            self.lookups[i].queries.insert(q);
                        }
                    }
                }
            }
            QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(peer_record))) => {
                if let Some(i) = self.lookup_of(id) {
                    let from = peer_record
                        .peer
                        .map_or_else(|| "local store".to_owned(), |p| p.to_string());
                    self.consider(i, &peer_record.record, &from);
                }
            }
            _ => {}
        }
        if last {
            if let Some(i) = self.lookup_of(id) {
                self.lookups[i].queries.remove(&id);
            }
        }
        self.complete_ready();
    }

    fn lookup_of(&self, id: QueryId) -> Option<usize> {
        self.lookups.iter().position(|l| l.queries.contains(&id))
    }

    /// Validates one record for lookup `i` and keeps it when good, new and not this node's own.
    fn consider(&mut self, i: usize, record: &kad::Record, from: &str) {
        let me = self.swarm.local_peer_id().to_string();
        let l = &mut self.lookups[i];
        let key = String::from_utf8_lossy(record.key.as_ref()).into_owned();
        let now = l.clock_trusted.then(chrono::Utc::now);
        let boxed = |e| Box::new(e) as Box<dyn std::error::Error>;
        let bound = binding::check(&key, &record.value, record.publisher.as_ref())
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>);
        let taken = match (bound, &mut l.wanted) {
            (Err(e), _) => Err(e),
            (
                Ok(binding::Bound::Manifest(r)),
                Wanted::Manifest {
                    channel,
                    arch,
                    found,
                    ..
                },
            ) => r
                .validate_for(channel, *arch, now)
                .map_err(boxed)
                .map(|()| {
                    let new = l.seen.insert((r.peer_id.clone(), r.manifest_url.clone()));
                    if new {
                        tracing::debug!(key, from, url = %r.manifest_url, "dht record accepted");
                        found.push(Found {
                            manifest_url: r.manifest_url,
                            source: FoundSource::Dht,
                            version: r.version,
                            provider: Some(r.peer_id),
                        });
                    }
                }),
            (
                Ok(binding::Bound::Peer(r)),
                Wanted::Peers {
                    manifest_sha256,
                    found,
                    ..
                },
            ) => r
                .validate_for(manifest_sha256, now)
                .map_err(boxed)
                .map(|url| {
                    if r.peer_id != me && l.seen.insert((r.peer_id.clone(), url.clone())) {
                        tracing::debug!(key, from, url, "dht peer record accepted");
                        found.push(FoundPeer {
                            url,
                            peer_id: r.peer_id,
                        });
                    }
                }),
            (Ok(_), _) => Err("a record of the other kind".into()),
        };
        match taken {
            Ok(()) => {}
            Err(e) if l.skipped.insert(key.clone()) => {
                tracing::warn!(key, from, error = %crate::error_chain(e.as_ref()), "dht record skipped");
            }
            Err(_) => {}
        }
    }

    /// Answers every lookup that has enough results or no queries left.
    fn complete_ready(&mut self) {
        let mut i = 0;
        while i < self.lookups.len() {
            let l = &self.lookups[i];
            if l.wanted.found() >= l.want || l.queries.is_empty() {
                let l = self.lookups.swap_remove(i);
                self.complete(l);
            } else {
                i += 1;
            }
        }
    }

    fn complete(&mut self, mut l: Lookup) {
        for q in &l.queries {
            if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(q) {
                query.finish();
            }
        }
        l.wanted.answer();
    }

    fn finish_all(&mut self) {
        for l in std::mem::take(&mut self.lookups) {
            self.complete(l);
        }
    }
}

/// `http://<host>:<port>` as the multiaddr `/ip4/<host>/tcp/<port>/http` (or `/ip6/`, or
/// `/dns/` for a name); `None` for any other form.
fn http_multiaddr(url: &str) -> Option<Multiaddr> {
    let authority = url.strip_prefix("http://")?.trim_end_matches('/');
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => Protocol::Ip4(a),
        Ok(std::net::IpAddr::V6(a)) => Protocol::Ip6(a),
        Err(_) if !host.is_empty() => Protocol::Dns(host.into()),
        Err(_) => return None,
    };
    Some(
        Multiaddr::empty()
            .with(ip)
            .with(Protocol::Tcp(port))
            .with(Protocol::Http),
    )
}

fn clone_value(v: &PublishedValue) -> PublishedValue {
    match v {
        PublishedValue::Record(p) => PublishedValue::Record(p.clone()),
        PublishedValue::Peer {
            manifest_sha256,
            url,
        } => PublishedValue::Peer {
            manifest_sha256: *manifest_sha256,
            url: url.clone(),
        },
        PublishedValue::Raw(b) => PublishedValue::Raw(b.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::http_multiaddr;

    #[test]
    fn a_peer_url_becomes_an_http_multiaddr() {
        let m = |u| http_multiaddr(u).map(|a| a.to_string());
        assert_eq!(
            m("http://192.0.2.11:7400").as_deref(),
            Some("/ip4/192.0.2.11/tcp/7400/http")
        );
        assert_eq!(
            m("http://[2001:db8::1]:7400/").as_deref(),
            Some("/ip6/2001:db8::1/tcp/7400/http")
        );
        assert_eq!(
            m("http://peer.lan:7400").as_deref(),
            Some("/dns/peer.lan/tcp/7400/http")
        );
        assert_eq!(m("https://192.0.2.11:7400"), None);
        assert_eq!(m("http://192.0.2.11"), None);
        assert_eq!(m("http://:7400"), None);
    }
}
