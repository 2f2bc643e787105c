//! Hash maps for entry ids on hot paths: foldhash is several times faster than the standard SipHash
//! and still randomly seeded per process, so crafted ids cannot aim at buckets.

pub(crate) type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
