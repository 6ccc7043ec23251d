//! [`HashedMap`]: a `BTreeMap` that keeps its own content hash current at the cost of
//! the entries that changed, so the state hash after an entry does not grow with the
//! number of tasks (or remembered sequence numbers) the state holds.
//!
//! The map's root is defined over its content only (never over the order of updates).
//! A map of at most [`FLAT_MAX`] items is hashed flat: root = SHA-256(`FLAT_DOMAIN` ‖
//! len as u64 LE ‖ its item hashes in key order). A larger one is a two-level tree of
//! 16 groups of 16 buckets:
//! - item hash = SHA-256(`ITEM_DOMAIN` ‖ postcard(key) ‖ the value's [`ItemHash`]
//!   bytes: its postcard encoding, or for a value holding a `HashedMap` the root of
//!   that map in place of its encoding);
//! - each key falls in one of [`BUCKETS`] buckets by [`BucketKey::bucket`] (a fixed
//!   mix of the key's bits); bucket `b` is in group `b / 16`;
//! - bucket hash = SHA-256(`BUCKET_DOMAIN` ‖ the bucket's item hashes in key order);
//! - group hash = SHA-256(`GROUP_DOMAIN` ‖ for each non-empty bucket of the group in
//!   order: its index byte ‖ its hash);
//! - root = SHA-256(`ROOT_DOMAIN` ‖ len as u64 LE ‖ for each non-empty group in order:
//!   its index byte ‖ its hash).
//!
//! A changed item costs its own hash, its bucket (about len / 256 item hashes), its
//! group (≤ 16 hashes) and the root (≤ 16 hashes). Every mutating method marks the keys
//! it touches; [`HashedMap::root`] re-hashes only those. The cache lives in a `RefCell`
//! so the root can be read through `&self`; it is never serialized (a decoded map
//! starts with every item to hash) and plays no part in equality.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;
use core::ops::Deref;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use xdv_types::{Hash32, NodeId, TaskId, TenantId};

/// Buckets per map (16 groups of 16).
pub const BUCKETS: usize = 256;
/// Largest map hashed flat (no buckets): members, vote rounds, most tenants and
/// contracts, a short anti-replay window.
pub const FLAT_MAX: usize = 16;
const FLAT_DOMAIN: &[u8] = b"XDV-MAP-FLAT\0";
const GROUPS: usize = 16;
const ITEM_DOMAIN: &[u8] = b"XDV-MAP-ITEM\0";
const GROUP_DOMAIN: &[u8] = b"XDV-MAP-GROUP\0";
const BUCKET_DOMAIN: &[u8] = b"XDV-MAP-BUCKET\0";
const ROOT_DOMAIN: &[u8] = b"XDV-MAP-ROOT\0";

/// A key's bucket: a fixed function of its value, the same on every node.
pub trait BucketKey {
    /// 64 bits that depend on every bit of the key.
    fn mix(&self) -> u64;
    /// The bucket, `0..BUCKETS`.
    fn bucket(&self) -> usize {
        // The project's one PRNG, seeded with the key: its first draw moves every bit.
        let z = xdv_types::rng::SplitMix64::new(self.mix()).next_u64();
        (z >> 56) as usize % BUCKETS
    }
}

impl BucketKey for u64 {
    fn mix(&self) -> u64 {
        *self
    }
}

impl BucketKey for TaskId {
    fn mix(&self) -> u64 {
        self.0
    }
}

impl BucketKey for TenantId {
    fn mix(&self) -> u64 {
        u64::from(self.0)
    }
}

impl BucketKey for NodeId {
    fn mix(&self) -> u64 {
        u64::from(self.0)
    }
}

impl BucketKey for (TenantId, u64) {
    fn mix(&self) -> u64 {
        u64::from(self.0.0).rotate_left(40) ^ self.1
    }
}

/// What a map has hashed so far.
#[derive(Clone)]
struct Cache<K> {
    /// Keys changed since the last root (inserted, changed or removed).
    dirty: BTreeSet<K>,
    /// Nothing is hashed yet (a new or decoded map); `items` is empty then.
    cold: bool,
    items: Vec<BTreeMap<K, Hash32>>,
    buckets: Vec<Option<Hash32>>,
    groups: Vec<Option<Hash32>>,
    root: Option<Hash32>,
}

impl<K: Ord> Cache<K> {
    fn cold() -> Self {
        Cache {
            dirty: BTreeSet::new(),
            cold: true,
            items: Vec::new(),
            buckets: Vec::new(),
            groups: Vec::new(),
            root: None,
        }
    }
}

/// A value's contribution to its item hash.
pub trait ItemHash {
    /// Feeds the value's content to `h`; `scratch` ignores every cached part (the
    /// reference hash that tests compare the incremental one with).
    fn feed(&self, h: &mut Sha256, scratch: bool);
}

/// [`ItemHash`] as the value's postcard encoding.
#[macro_export]
macro_rules! postcard_item_hash {
    ($($t:ty),* $(,)?) => {$(
        impl $crate::hashed::ItemHash for $t {
            fn feed(&self, h: &mut sha2::Sha256, _scratch: bool) {
                $crate::hashed::feed_postcard(h, self);
            }
        }
    )*};
}

postcard_item_hash!(
    (),
    u64,
    TaskId,
    BTreeMap<NodeId, Hash32>,
    xdv_federation::timeout::TimeoutState
);

/// A `BTreeMap` with an incrementally maintained content hash (see the module doc).
/// Reads go through `Deref`; writes only through the methods here, which mark what
/// they touch.
pub struct HashedMap<K, V> {
    map: BTreeMap<K, V>,
    cache: RefCell<Cache<K>>,
}

impl<K: Ord + Clone + Serialize + BucketKey, V: ItemHash> HashedMap<K, V> {
    pub fn new() -> Self {
        HashedMap {
            map: BTreeMap::new(),
            cache: RefCell::new(Cache::cold()),
        }
    }

    fn touch(&mut self, k: &K) {
        let c = self.cache.get_mut();
        c.root = None;
        if !c.cold {
            c.dirty.insert(k.clone());
        }
    }

    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.touch(&k);
        self.map.insert(k, v)
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let old = self.map.remove(k);
        if old.is_some() {
            self.touch(k);
        }
        old
    }

    /// Marks `k` changed whether or not the caller changes it.
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        if self.map.contains_key(k) {
            self.touch(k);
        }
        self.map.get_mut(k)
    }

    /// The value at `k`, inserted as `V::default()` if absent; marks `k` changed.
    pub fn get_or_insert_default(&mut self, k: K) -> &mut V
    where
        V: Default,
    {
        self.touch(&k);
        self.map.entry(k).or_default()
    }

    pub fn pop_first(&mut self) -> Option<(K, V)> {
        let (k, v) = self.map.pop_first()?;
        self.touch(&k);
        Some((k, v))
    }

    /// Every value mutably: every item is hashed again at the next root.
    pub fn values_mut(&mut self) -> alloc::collections::btree_map::ValuesMut<'_, K, V> {
        *self.cache.get_mut() = Cache::cold();
        self.map.values_mut()
    }

    /// The content hash (module doc), re-hashing only what changed since the last one.
    pub fn root(&self) -> Hash32 {
        let mut c = self.cache.borrow_mut();
        if let Some(r) = c.root {
            return r;
        }
        let c = &mut *c;
        if c.cold && self.map.is_empty() {
            // Nothing to cache: an empty map stays cold (no bucket tables) until it
            // holds something.
            let r = flat_hash::<K>(core::iter::empty());
            c.root = Some(r);
            return r;
        }
        let mut dirty_buckets = BTreeSet::new();
        if c.cold {
            c.items = (0..BUCKETS).map(|_| BTreeMap::new()).collect();
            c.buckets = alloc::vec![None; BUCKETS];
            c.groups = alloc::vec![None; GROUPS];
            for (k, v) in &self.map {
                let b = k.bucket();
                c.items[b].insert(k.clone(), item_hash(k, v, false));
                dirty_buckets.insert(b);
            }
            c.cold = false;
        } else {
            for k in core::mem::take(&mut c.dirty) {
                let b = k.bucket();
                match self.map.get(&k) {
                    Some(v) => {
                        let ih = item_hash(&k, v, false);
                        c.items[b].insert(k, ih)
                    }
                    None => c.items[b].remove(&k),
                };
                dirty_buckets.insert(b);
            }
        }
        let mut dirty_groups = BTreeSet::new();
        for b in dirty_buckets {
            c.buckets[b] = bucket_hash(c.items[b].values());
            dirty_groups.insert(b / GROUPS);
        }
        for g in dirty_groups {
            c.groups[g] = group_hash(&c.buckets[g * GROUPS..(g + 1) * GROUPS]);
        }
        let r = if self.map.len() <= FLAT_MAX {
            flat_hash(c.items.iter().flat_map(|b| b.iter()))
        } else {
            root_hash(self.map.len(), &c.groups)
        };
        c.root = Some(r);
        r
    }

    /// The root computed from nothing but the content, ignoring every cache: what
    /// [`HashedMap::root`] must equal (tests and debug checks).
    pub fn root_from_scratch(&self) -> Hash32 {
        let mut items: Vec<BTreeMap<&K, Hash32>> = (0..BUCKETS).map(|_| BTreeMap::new()).collect();
        for (k, v) in &self.map {
            items[k.bucket()].insert(k, item_hash(k, v, true));
        }
        if self.map.len() <= FLAT_MAX {
            return flat_hash(items.iter().flat_map(|b| b.iter().map(|(k, h)| (*k, h))));
        }
        let buckets: Vec<Option<Hash32>> = items.iter().map(|b| bucket_hash(b.values())).collect();
        let groups: Vec<Option<Hash32>> = buckets.chunks(GROUPS).map(group_hash).collect();
        root_hash(self.map.len(), &groups)
    }
}

fn item_hash<K: Serialize, V: ItemHash>(k: &K, v: &V, scratch: bool) -> Hash32 {
    let mut h = Sha256::new();
    h.update(ITEM_DOMAIN);
    feed_postcard(&mut h, k);
    v.feed(&mut h, scratch);
    Hash32(h.finalize().into())
}

/// A small map's root: its item hashes in key order (the pairs come bucket by bucket).
fn flat_hash<'a, K: Ord + 'a>(pairs: impl Iterator<Item = (&'a K, &'a Hash32)>) -> Hash32 {
    let mut sorted: Vec<(&K, &Hash32)> = pairs.collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    h.update(FLAT_DOMAIN);
    h.update((sorted.len() as u64).to_le_bytes());
    for (_, ih) in sorted {
        h.update(ih.0);
    }
    Hash32(h.finalize().into())
}

fn bucket_hash<'a>(items: impl ExactSizeIterator<Item = &'a Hash32>) -> Option<Hash32> {
    if items.len() == 0 {
        return None;
    }
    let mut h = Sha256::new();
    h.update(BUCKET_DOMAIN);
    for ih in items {
        h.update(ih.0);
    }
    Some(Hash32(h.finalize().into()))
}

/// Index bytes and hashes of the non-empty children, under `domain`.
fn children_hash(domain: &[u8], prefix: &[u8], children: &[Option<Hash32>]) -> Hash32 {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(prefix);
    for (i, c) in children.iter().enumerate() {
        if let Some(ch) = c {
            h.update([i as u8]);
            h.update(ch.0);
        }
    }
    Hash32(h.finalize().into())
}

fn group_hash(buckets: &[Option<Hash32>]) -> Option<Hash32> {
    buckets
        .iter()
        .any(Option::is_some)
        .then(|| children_hash(GROUP_DOMAIN, &[], buckets))
}

fn root_hash(len: usize, groups: &[Option<Hash32>]) -> Hash32 {
    children_hash(ROOT_DOMAIN, &(len as u64).to_le_bytes(), groups)
}

/// Feeds `v`'s postcard encoding into `h` as it is produced (the same bytes as
/// `postcard::to_allocvec`, without building them in a vector first).
pub fn feed_postcard<T: Serialize + ?Sized>(h: &mut Sha256, v: &T) {
    // Encoding into a hasher cannot fail: the flavor never refuses a byte.
    let _ = postcard::serialize_with_flavor::<T, _, ()>(
        v,
        HashFlavor {
            h,
            buf: [0; HASH_FLAVOR_BUF],
            len: 0,
        },
    );
}

const HASH_FLAVOR_BUF: usize = 128;

/// A postcard output that is a hasher, through a small buffer (postcard pushes most
/// bytes one at a time).
struct HashFlavor<'a> {
    h: &'a mut Sha256,
    buf: [u8; HASH_FLAVOR_BUF],
    len: usize,
}

impl HashFlavor<'_> {
    fn flush(&mut self) {
        self.h.update(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl postcard::ser_flavors::Flavor for HashFlavor<'_> {
    type Output = ();

    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        if self.len == HASH_FLAVOR_BUF {
            self.flush();
        }
        self.buf[self.len] = b;
        self.len += 1;
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if self.len + data.len() > HASH_FLAVOR_BUF {
            self.flush();
        }
        if data.len() >= HASH_FLAVOR_BUF {
            self.h.update(data);
        } else {
            self.buf[self.len..self.len + data.len()].copy_from_slice(data);
            self.len += data.len();
        }
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<()> {
        self.flush();
        Ok(())
    }
}

/// The root of a `BTreeMap` that another crate owns as a plain map (the task timeout
/// tracker's jobs), kept at the cost of what changed: a shadow [`HashedMap`] is made
/// equal to the content by comparing values (no hashing), and only the items that
/// differ are hashed again. The root is the one a `HashedMap` holding the same content
/// has (content-defined; [`ShadowRoot::root_from_scratch`] is that reference). The
/// shadow is a cache: never serialized nor compared; a stale one (a restored snapshot)
/// is simply brought up to date by the next comparison.
pub struct ShadowRoot<K, V> {
    shadow: RefCell<HashedMap<K, V>>,
}

impl<K, V> ShadowRoot<K, V>
where
    K: Ord + Clone + Serialize + BucketKey,
    V: ItemHash + Clone + PartialEq,
{
    pub fn new() -> Self {
        ShadowRoot {
            shadow: RefCell::new(HashedMap::new()),
        }
    }

    /// The root of `content` (key order, each key once, as a `BTreeMap` iterates).
    pub fn root<'a>(&self, content: impl Iterator<Item = (&'a K, &'a V)>) -> Hash32
    where
        K: 'a,
        V: 'a,
    {
        let mut shadow = self.shadow.borrow_mut();
        let mut changed: Vec<(K, V)> = Vec::new();
        let mut gone: Vec<K> = Vec::new();
        {
            let mut old = shadow.map.iter().peekable();
            for (k, v) in content {
                while let Some((ok, _)) = old.next_if(|(ok, _)| *ok < k) {
                    gone.push(ok.clone());
                }
                match old.next_if(|(ok, _)| *ok == k) {
                    Some((_, ov)) if ov == v => {}
                    _ => changed.push((k.clone(), v.clone())),
                }
            }
            gone.extend(old.map(|(k, _)| k.clone()));
        }
        for k in &gone {
            shadow.remove(k);
        }
        for (k, v) in changed {
            shadow.insert(k, v);
        }
        shadow.root()
    }

    /// The same root from nothing but `content` (tests and the from-scratch hash).
    pub fn root_from_scratch<'a>(content: impl Iterator<Item = (&'a K, &'a V)>) -> Hash32
    where
        K: 'a,
        V: 'a,
    {
        let m: HashedMap<K, V> = content.map(|(k, v)| (k.clone(), v.clone())).collect();
        m.root_from_scratch()
    }
}

impl<K, V> Default for ShadowRoot<K, V>
where
    K: Ord + Clone + Serialize + BucketKey,
    V: ItemHash + Clone + PartialEq,
{
    fn default() -> Self {
        Self::new()
    }
}

/// A map's root behind a trait object (the state hash walks maps of several types).
pub trait MapRoot {
    fn root(&self) -> Hash32;
    fn root_from_scratch(&self) -> Hash32;
}

impl<K: Ord + Clone + Serialize + BucketKey, V: ItemHash> MapRoot for HashedMap<K, V> {
    fn root(&self) -> Hash32 {
        HashedMap::root(self)
    }
    fn root_from_scratch(&self) -> Hash32 {
        HashedMap::root_from_scratch(self)
    }
}

impl<K: Ord + Clone + Serialize + BucketKey, V: ItemHash> Default for HashedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> Deref for HashedMap<K, V> {
    type Target = BTreeMap<K, V>;
    fn deref(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

impl<K: Clone, V: Clone> Clone for HashedMap<K, V> {
    fn clone(&self) -> Self {
        HashedMap {
            map: self.map.clone(),
            cache: RefCell::new(self.cache.borrow().clone()),
        }
    }
}

impl<K: PartialEq, V: PartialEq> PartialEq for HashedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<K: Eq, V: Eq> Eq for HashedMap<K, V> {}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for HashedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.map.fmt(f)
    }
}

/// Encoded exactly as the plain `BTreeMap` (snapshot images are unchanged).
impl<K: Serialize, V: Serialize> Serialize for HashedMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de, K, V> Deserialize<'de> for HashedMap<K, V>
where
    K: Ord + Clone + Deserialize<'de>,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(HashedMap {
            map: BTreeMap::deserialize(d)?,
            cache: RefCell::new(Cache::cold()),
        })
    }
}

impl<K: Ord + Clone + Serialize + BucketKey, V: ItemHash> FromIterator<(K, V)> for HashedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        HashedMap {
            map: iter.into_iter().collect(),
            cache: RefCell::new(Cache::cold()),
        }
    }
}

impl<'a, K, V> IntoIterator for &'a HashedMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = alloc::collections::btree_map::Iter<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

/// A set with the same incremental hash (a map to `()`).
pub type HashedSet<K> = HashedMap<K, ()>;

#[cfg(test)]
mod tests {
    use super::*;
    use xdv_types::rng::SplitMix64;

    #[test]
    fn the_incremental_root_equals_the_root_from_scratch_after_every_change() {
        let mut rng = SplitMix64::new(7);
        let mut m: HashedMap<u64, u64> = HashedMap::new();
        let mut roots = BTreeSet::new();
        for step in 0..3000u64 {
            // Small key ranges early on: the map crosses the flat/tree boundary.
            let k = rng.next_u64() % if step < 1000 { 24 } else { 300 };
            match rng.next_u64() % 5 {
                0 | 1 => {
                    m.insert(k, step);
                }
                2 => {
                    m.remove(&k);
                }
                3 => {
                    if let Some(v) = m.get_mut(&k) {
                        *v ^= 1;
                    }
                }
                _ => {
                    m.pop_first();
                }
            }
            // Read the root only some of the time, so changes pile up between roots.
            if step % 3 == 0 {
                let r = m.root();
                assert_eq!(r, m.root_from_scratch(), "step {step}");
                roots.insert(r);
            }
        }
        // Roots really depend on the content.
        assert!(roots.len() > 900, "{}", roots.len());
    }

    #[test]
    fn the_root_depends_on_content_not_history_and_survives_encoding() {
        let mut a: HashedMap<u64, u64> = HashedMap::new();
        let mut b: HashedMap<u64, u64> = HashedMap::new();
        for i in 0..200 {
            a.insert(i, i * 3);
        }
        let _ = a.root();
        for i in (0..200).rev() {
            b.insert(i, 0);
            let _ = b.root();
        }
        for i in 0..200 {
            *b.get_mut(&i).expect("present") = i * 3;
        }
        b.insert(1000, 1);
        let _ = b.root();
        b.remove(&1000);
        assert_eq!(a, b);
        assert_eq!(a.root(), b.root());
        let bytes = postcard::to_allocvec(&a).expect("encodes");
        assert_eq!(bytes, postcard::to_allocvec(&*a).expect("plain map"));
        let c: HashedMap<u64, u64> = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(c.root(), a.root());
        let d = c.clone();
        *b.get_mut(&5).expect("present") = 6;
        assert_ne!(b.root(), a.root());
        assert_eq!(d.root(), a.root());
    }

    #[test]
    fn feeding_postcard_hashes_the_same_bytes_as_encoding_first() {
        let mut rng = SplitMix64::new(3);
        for n in [0usize, 1, 127, 128, 129, 300, 5000] {
            let v: Vec<(u64, Vec<u8>)> = (0..n)
                .map(|i| (rng.next_u64() >> (i % 64), alloc::vec![i as u8; i % 200]))
                .collect();
            let mut a = Sha256::new();
            feed_postcard(&mut a, &v);
            let b = Sha256::digest(postcard::to_allocvec(&v).expect("encodes"));
            assert_eq!(a.finalize(), b, "n = {n}");
        }
    }

    #[test]
    fn values_mut_rehashes_everything() {
        let mut m: HashedMap<u64, u64> = (0..50).map(|i| (i, i)).collect();
        let before = m.root();
        for v in m.values_mut() {
            *v += 1;
        }
        assert_ne!(m.root(), before);
        assert_eq!(m.root(), m.root_from_scratch());
    }

    #[test]
    fn a_shadow_root_follows_a_plain_map_as_a_hashed_map_would() {
        let mut rng = SplitMix64::new(11);
        let mut plain: BTreeMap<u64, u64> = BTreeMap::new();
        let shadow: ShadowRoot<u64, u64> = ShadowRoot::new();
        let mut roots = BTreeSet::new();
        for step in 0..2000u64 {
            // The plain map changes freely (no marks): inserts, value changes,
            // removals at the front, the back and the middle, several between roots.
            let k = rng.next_u64() % if step < 600 { 20 } else { 400 };
            match rng.next_u64() % 4 {
                0 | 1 => {
                    plain.insert(k, step);
                }
                2 => {
                    plain.remove(&k);
                }
                _ => {
                    if step % 2 == 0 {
                        plain.pop_first();
                    } else {
                        plain.pop_last();
                    }
                }
            }
            if step % 3 == 0 {
                let r = shadow.root(plain.iter());
                assert_eq!(
                    r,
                    ShadowRoot::root_from_scratch(plain.iter()),
                    "step {step}"
                );
                let same: HashedMap<u64, u64> = plain.iter().map(|(k, v)| (*k, *v)).collect();
                assert_eq!(r, same.root_from_scratch(), "step {step}");
                roots.insert(r);
            }
        }
        assert!(roots.len() > 600, "{}", roots.len());
        // A changed value alone changes the root; emptied, it is the empty map's.
        let before = shadow.root(plain.iter());
        if let Some(v) = plain.values_mut().next() {
            *v += 1;
        }
        assert_ne!(shadow.root(plain.iter()), before);
        plain.clear();
        assert_eq!(
            shadow.root(plain.iter()),
            HashedMap::<u64, u64>::new().root()
        );
    }
}
