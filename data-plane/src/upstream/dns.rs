//! A caching DNS resolver for hostname endpoints (Goma `networking.dnsCache.ttl`): the system
//! resolver runs on a blocking thread, so a busy upstream should not pay it per connection.
//! IP endpoints never reach a resolver.

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Goma's default cache lifetime.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Entries beyond this are dropped oldest-first, so a stream of unique names cannot grow memory.
const MAX_ENTRIES: usize = 4096;

/// Resolved addresses with their expiry, by host name.
type Cache = HashMap<Box<str>, (Instant, Arc<[SocketAddr]>)>;

#[derive(Clone)]
pub struct CachingResolver {
    ttl: Duration,
    cache: Arc<Mutex<Cache>>,
    system: GaiResolver,
}

/// The addresses of one resolution, shared with the cache rather than copied.
pub struct Addrs {
    addrs: Arc<[SocketAddr]>,
    next: usize,
}

impl Addrs {
    fn new(addrs: Arc<[SocketAddr]>) -> Self {
        Self { addrs, next: 0 }
    }
}

impl Iterator for Addrs {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        let addr = self.addrs.get(self.next).copied();
        self.next += 1;
        addr
    }
}

impl CachingResolver {
    /// `ttl` zero caches nothing.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            cache: Arc::default(),
            system: GaiResolver::new(),
        }
    }

    fn cached(&self, host: &str, now: Instant) -> Option<Arc<[SocketAddr]>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(host)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, addrs)| addrs.clone())
    }

    fn store(&self, host: &str, addrs: Arc<[SocketAddr]>, now: Instant) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_ENTRIES && !cache.contains_key(host) {
            cache.retain(|_, (expires, _)| *expires > now);
            if cache.len() >= MAX_ENTRIES
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, (expires, _))| *expires)
                    .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(host.into(), (now + self.ttl, addrs));
    }
}

impl tower_service::Service<Name> for CachingResolver {
    type Response = Addrs;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Addrs>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let now = Instant::now();
        if !self.ttl.is_zero()
            && let Some(addrs) = self.cached(name.as_str(), now)
        {
            return Box::pin(std::future::ready(Ok(Addrs::new(addrs))));
        }
        let this = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let mut system = this.system.clone();
            let addrs: Arc<[SocketAddr]> = tower_service::Service::call(&mut system, name)
                .await?
                .collect();
            if addrs.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host}: no addresses"),
                ));
            }
            if !this.ttl.is_zero() {
                this.store(&host, addrs.clone(), Instant::now());
            }
            Ok(Addrs::new(addrs))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use tower_service::Service;

    #[tokio::test]
    async fn caches_until_the_ttl_expires() {
        let mut resolver = CachingResolver::new(Duration::from_secs(60));
        let addrs: Vec<_> = resolver
            .call(Name::from_str("localhost").unwrap())
            .await
            .expect("localhost resolves")
            .collect();
        assert!(!addrs.is_empty());
        let now = Instant::now();
        assert_eq!(
            resolver.cached("localhost", now).as_deref(),
            Some(&addrs[..])
        );
        // A fake entry proves later calls are answered from the cache.
        let fake: Arc<[SocketAddr]> = Arc::from(vec!["192.0.2.1:0".parse().unwrap()]);
        resolver.store("localhost", fake.clone(), now);
        let again: Vec<_> = resolver
            .call(Name::from_str("localhost").unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(again, &fake[..]);
        assert!(
            resolver
                .cached("localhost", now + Duration::from_secs(61))
                .is_none()
        );
    }

    #[tokio::test]
    async fn zero_ttl_never_caches_and_the_cache_is_bounded() {
        let mut resolver = CachingResolver::new(Duration::ZERO);
        resolver
            .call(Name::from_str("localhost").unwrap())
            .await
            .unwrap();
        assert!(resolver.cache.lock().unwrap().is_empty());

        let resolver = CachingResolver::new(Duration::from_secs(60));
        let now = Instant::now();
        let addr: Arc<[SocketAddr]> = Arc::from(vec!["192.0.2.1:0".parse().unwrap()]);
        for i in 0..MAX_ENTRIES + 10 {
            resolver.store(&format!("h{i}"), addr.clone(), now);
        }
        assert_eq!(resolver.cache.lock().unwrap().len(), MAX_ENTRIES);
    }
}
