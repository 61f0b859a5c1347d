//! Hash maps on the request path (ports, hosts, path segments, cluster names). Their keys are
//! configuration, so the DoS resistance of std's SipHash buys nothing, while every request pays
//! for it several times; foldhash (randomly seeded) is several times cheaper per lookup.

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
