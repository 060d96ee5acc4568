//! `VecSet`: the core's small ordered sets of connections and peers that
//! have output (`dirty`, `active`), kept in a sorted `Vec`.
//!
//! Why not `BTreeSet`: these sets fill and empty on every flush, and a
//! `BTreeSet` allocates a node when it goes from empty to one element and
//! frees it when it empties again — an allocation per flush, and inline
//! transmits (the sending thread writes an idle link itself) flush once per
//! message. A sorted `Vec` keeps its capacity, so a steady flow allocates
//! nothing. It iterates in the same ascending order as the `BTreeSet` it
//! replaces, so the simulator's runs (which depend on flush order) are
//! unchanged. Inserting is a binary search plus a shift: cheap for the
//! sets' sizes (at most one entry per connection or peer).

/// A set kept as a sorted `Vec`, with the few operations the core uses.
#[derive(Debug, Clone)]
pub(crate) struct VecSet<T> {
    items: Vec<T>,
}

impl<T> Default for VecSet<T> {
    fn default() -> Self {
        Self { items: Vec::new() }
    }
}

impl<T: Ord + Copy> VecSet<T> {
    /// An empty set (allocates nothing until the first insert).
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds `item`; whether it was not there yet.
    pub(crate) fn insert(&mut self, item: T) -> bool {
        match self.items.binary_search(&item) {
            Ok(_) => false,
            Err(at) => {
                self.items.insert(at, item);
                true
            }
        }
    }

    /// Removes `item`; whether it was there.
    pub(crate) fn remove(&mut self, item: &T) -> bool {
        match self.items.binary_search(item) {
            Ok(at) => {
                self.items.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether `item` is in the set.
    #[cfg(test)]
    pub(crate) fn contains(&self, item: &T) -> bool {
        self.items.binary_search(item).is_ok()
    }

    /// Empties the set, keeping its capacity.
    pub(crate) fn clear(&mut self) {
        self.items.clear();
    }

    /// Whether the set is empty.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items in ascending order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::VecSet;
    use std::collections::BTreeSet;

    #[test]
    fn behaves_as_a_btreeset_in_order_and_membership() {
        // A fixed pseudo-random walk of inserts and removes, checked
        // against BTreeSet after every step.
        let mut ours = VecSet::new();
        let mut theirs = BTreeSet::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let item = (x % 64) as u16;
            if x & (1 << 40) == 0 {
                assert_eq!(ours.insert(item), theirs.insert(item));
            } else {
                assert_eq!(ours.remove(&item), theirs.remove(&item));
            }
            assert_eq!(ours.contains(&item), theirs.contains(&item));
            assert!(ours.iter().eq(theirs.iter()));
            assert_eq!(ours.is_empty(), theirs.is_empty());
        }
        ours.clear();
        assert!(ours.is_empty());
    }

    #[test]
    fn keeps_its_capacity_when_emptied() {
        let mut set = VecSet::new();
        for i in 0..8u32 {
            set.insert(i);
        }
        let capacity = set.items.capacity();
        set.clear();
        for _ in 0..100 {
            set.insert(3);
            set.remove(&3);
            set.insert(5);
            set.clear();
        }
        assert_eq!(set.items.capacity(), capacity);
    }
}
