//! An order-statistic map from small `Copy` keys to `u64` values (a treap with subtree sizes).
//!
//! A waiting line needs four things fast: the head (dispatch), insertion at the tail (a new
//! caller) and in the middle (requeue at the head, abandoned resume), removal from the middle
//! (abandon) and the *rank* of a key (the position announced to the caller). `BTreeMap` has no
//! rank, so announcing positions to 100,000 callers would cost O(n) each; this treap gives all
//! of them in O(log n) expected. Nodes live in one arena `Vec` (no per-node allocation, indices
//! instead of pointers) and freed slots are reused.

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Node<K> {
    key: K,
    val: u64,
    pri: u32,
    left: u32,
    right: u32,
    size: u32,
}

#[derive(Debug)]
pub(crate) struct RankedMap<K> {
    nodes: Vec<Node<K>>,
    free: Vec<u32>,
    root: u32,
    rng: u64,
}

impl<K: Ord + Copy> Default for RankedMap<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Copy> RankedMap<K> {
    pub(crate) fn new() -> Self {
        RankedMap {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.size(self.root) as usize
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.root == NIL
    }

    fn size(&self, n: u32) -> u32 {
        if n == NIL {
            0
        } else {
            self.nodes[n as usize].size
        }
    }

    fn fix(&mut self, n: u32) {
        let node = self.nodes[n as usize];
        self.nodes[n as usize].size = 1 + self.size(node.left) + self.size(node.right);
    }

    fn next_pri(&mut self) -> u32 {
        // xorshift64*: priorities only need to be unpredictable to the key order, not secure.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    fn alloc(&mut self, key: K, val: u64) -> u32 {
        let node = Node {
            key,
            val,
            pri: self.next_pri(),
            left: NIL,
            right: NIL,
            size: 1,
        };
        if let Some(i) = self.free.pop() {
            self.nodes[i as usize] = node;
            i
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        }
    }

    /// Splits `t` into (keys < key, keys >= key).
    fn split(&mut self, t: u32, key: K) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        if self.nodes[t as usize].key < key {
            let (a, b) = self.split(self.nodes[t as usize].right, key);
            self.nodes[t as usize].right = a;
            self.fix(t);
            (t, b)
        } else {
            let (a, b) = self.split(self.nodes[t as usize].left, key);
            self.nodes[t as usize].left = b;
            self.fix(t);
            (a, t)
        }
    }

    /// Joins two treaps where every key of `a` is below every key of `b`.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].pri > self.nodes[b as usize].pri {
            let r = self.merge(self.nodes[a as usize].right, b);
            self.nodes[a as usize].right = r;
            self.fix(a);
            a
        } else {
            let l = self.merge(a, self.nodes[b as usize].left);
            self.nodes[b as usize].left = l;
            self.fix(b);
            b
        }
    }

    pub(crate) fn contains(&self, key: K) -> bool {
        let mut t = self.root;
        while t != NIL {
            let n = &self.nodes[t as usize];
            if key == n.key {
                return true;
            }
            t = if key < n.key { n.left } else { n.right };
        }
        false
    }

    /// Inserts `key`; returns false (and changes nothing) when it is already present.
    pub(crate) fn insert(&mut self, key: K, val: u64) -> bool {
        if self.contains(key) {
            return false;
        }
        let n = self.alloc(key, val);
        self.root = self.insert_at(self.root, n);
        true
    }

    fn insert_at(&mut self, t: u32, n: u32) -> u32 {
        if t == NIL {
            return n;
        }
        let key = self.nodes[n as usize].key;
        if self.nodes[n as usize].pri > self.nodes[t as usize].pri {
            let (l, r) = self.split(t, key);
            self.nodes[n as usize].left = l;
            self.nodes[n as usize].right = r;
            self.fix(n);
            return n;
        }
        if key < self.nodes[t as usize].key {
            let l = self.insert_at(self.nodes[t as usize].left, n);
            self.nodes[t as usize].left = l;
        } else {
            let r = self.insert_at(self.nodes[t as usize].right, n);
            self.nodes[t as usize].right = r;
        }
        self.nodes[t as usize].size += 1;
        t
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove(&mut self, key: K) -> Option<u64> {
        let mut t = self.root;
        while t != NIL {
            let n = &self.nodes[t as usize];
            if key == n.key {
                let val = n.val;
                self.root = self.remove_at(self.root, key);
                return Some(val);
            }
            t = if key < n.key { n.left } else { n.right };
        }
        None
    }

    /// `key` must be present: sizes are decremented along the path on the way back.
    fn remove_at(&mut self, t: u32, key: K) -> u32 {
        let node = self.nodes[t as usize];
        if key == node.key {
            self.free.push(t);
            return self.merge(node.left, node.right);
        }
        if key < node.key {
            let l = self.remove_at(node.left, key);
            self.nodes[t as usize].left = l;
        } else {
            let r = self.remove_at(node.right, key);
            self.nodes[t as usize].right = r;
        }
        self.nodes[t as usize].size -= 1;
        t
    }

    pub(crate) fn first(&self) -> Option<(K, u64)> {
        let mut t = self.root;
        let mut best = None;
        while t != NIL {
            let n = &self.nodes[t as usize];
            best = Some((n.key, n.val));
            t = n.left;
        }
        best
    }

    /// The smallest entry whose key is `>= lower`.
    pub(crate) fn first_from(&self, lower: K) -> Option<(K, u64)> {
        let mut t = self.root;
        let mut best = None;
        while t != NIL {
            let n = &self.nodes[t as usize];
            if n.key >= lower {
                best = Some((n.key, n.val));
                t = n.left;
            } else {
                t = n.right;
            }
        }
        best
    }

    /// How many keys are strictly below `key`.
    pub(crate) fn rank(&self, key: K) -> usize {
        let mut t = self.root;
        let mut below = 0usize;
        while t != NIL {
            let n = &self.nodes[t as usize];
            if key <= n.key {
                t = n.left;
            } else {
                below += 1 + self.size(n.left) as usize;
                t = n.right;
            }
        }
        below
    }

    /// Entries in key order.
    pub(crate) fn iter(&self) -> Iter<'_, K> {
        let mut it = Iter {
            map: self,
            stack: Vec::new(),
        };
        it.push_left(self.root);
        it
    }
}

pub(crate) struct Iter<'a, K> {
    map: &'a RankedMap<K>,
    stack: Vec<u32>,
}

impl<K: Ord + Copy> Iter<'_, K> {
    fn push_left(&mut self, mut t: u32) {
        while t != NIL {
            self.stack.push(t);
            t = self.map.nodes[t as usize].left;
        }
    }
}

impl<K: Ord + Copy> Iterator for Iter<'_, K> {
    type Item = (K, u64);

    fn next(&mut self) -> Option<(K, u64)> {
        let t = self.stack.pop()?;
        let n = self.map.nodes[t as usize];
        self.push_left(n.right);
        Some((n.key, n.val))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Random operations checked against `BTreeMap` as the model.
    #[test]
    fn matches_btreemap_model() {
        let mut map = RankedMap::new();
        let mut model = BTreeMap::new();
        let mut x: u64 = 12345;
        for step in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (x >> 33) % 2000;
            match (x >> 20) % 4 {
                0 | 1 => {
                    assert_eq!(map.insert(key, step), !model.contains_key(&key));
                    model.entry(key).or_insert(step);
                }
                2 => assert_eq!(map.remove(key), model.remove(&key)),
                _ => {
                    let first = model.iter().next().map(|(k, v)| (*k, *v));
                    assert_eq!(map.first(), first);
                    if let Some((k, _)) = first {
                        assert_eq!(map.remove(k), model.remove(&k));
                    }
                }
            }
            assert_eq!(map.len(), model.len());
            assert_eq!(map.rank(key), model.range(..key).count());
            assert_eq!(
                map.first_from(key),
                model.range(key..).next().map(|(k, v)| (*k, *v))
            );
        }
        let ours: Vec<_> = map.iter().collect();
        let theirs: Vec<_> = model.into_iter().collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn reuses_freed_slots() {
        let mut map = RankedMap::new();
        for round in 0..10u64 {
            for k in 0..100 {
                map.insert(k, round);
            }
            for k in 0..100 {
                assert_eq!(map.remove(k), Some(round));
            }
        }
        assert!(map.is_empty());
        assert_eq!(map.nodes.len(), 100);
    }
}
