//! What the node knows from chain, each fact with the blocks it is known to hold for
//! (`../shared/CHAIN.md`, "Caching: validity ranges, not TTLs").
//!
//! A fact read at block B holds from B on, until the follower sees an event that may change it
//! (at block E: the range becomes [B, E)). A task at block B' is answered from the cache when B'
//! falls in a range. Facts read at a block before the follower started (no logs were read
//! between it and now) hold for that one block only. A reorg drops what was read at orphaned
//! blocks and reopens what orphaned events had closed; the follower then reads those blocks
//! again.
//!
//! Invariant: a range is open (`until = None`) only if every event after its `from` block that
//! could change the fact has been, or will be, applied to it. Inserts that race the follower
//! keep this with the log of recent events: a read at B that lands after an event at E > B is
//! closed at E on insert.

use std::collections::{HashMap, VecDeque};

use alloy_primitives::Address;
use avsnode_signer::bn254::G2PublicKey;

/// What a fact is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum FactKey {
    /// AllocationManager `getAVSRegistrar(avs)`.
    Registrar(Address),
    /// The registrar's `getAvsConfig()`.
    AvsConfig(Address),
    /// KeyRegistrar `getOperatorSetCurveType((avs, id))`.
    CurveType(Address, u32),
    /// KeyRegistrar: the key of `operator` in `(avs, id)`, read as the set's curve type says.
    Key(Address, u32, Address, u8),
    /// AllocationManager `isMemberOfOperatorSet(operator, (avs, id))`.
    Member(Address, Address, u32),
}

impl FactKey {
    /// The metric label.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            FactKey::Registrar(_) => "registrar",
            FactKey::AvsConfig(_) => "avs_config",
            FactKey::CurveType(..) => "curve_type",
            FactKey::Key(..) => "key",
            FactKey::Member(..) => "membership",
        }
    }
}

/// A key registered in KeyRegistrar.
#[derive(Clone, Debug, PartialEq)]
pub enum RegisteredKey {
    /// None registered (or the set has another curve type).
    None,
    /// An ECDSA set's address.
    Ecdsa(Address),
    /// A BN254 set's key, decoded once when read.
    Bn254(G2PublicKey),
    /// A BN254 key that does not decode (not on the curve or not in the subgroup).
    Invalid(String),
}

/// A fact's value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Fact {
    Registrar(Address),
    AvsConfig {
        aggregator_set: u32,
        executor_sets: Vec<u32>,
    },
    CurveType(u8),
    Key(RegisteredKey),
    Member(bool),
}

#[derive(Debug)]
struct Range {
    from: u64,
    /// Exclusive; `None` while no event has changed it.
    until: Option<u64>,
    /// Closed by an event (reopened if a reorg orphans that event).
    by_event: bool,
    fact: Fact,
}

impl Range {
    fn contains(&self, block: u64) -> bool {
        self.from <= block && self.until.is_none_or(|u| block < u)
    }
}

/// Ranges kept per fact: the newest few (older tasks than that read again).
const RANGES_PER_FACT: usize = 4;
/// Recent events remembered for inserts that race the follower.
const RECENT_EVENTS: usize = 4096;

/// The facts, bounded by `capacity` (facts, not ranges).
#[derive(Debug)]
pub(crate) struct Cache {
    facts: HashMap<FactKey, Vec<Range>>,
    capacity: usize,
    /// Events in blocks after this one are, or will be, applied: reads at or after it are open.
    open_from: u64,
    recent: VecDeque<(FactKey, u64)>,
    /// Every event from this block on is in `recent`.
    recent_from: u64,
}

impl Cache {
    /// An empty cache whose follower reads logs after block `start`.
    pub(crate) fn new(capacity: usize, start: u64) -> Cache {
        Cache {
            facts: HashMap::new(),
            capacity: capacity.max(1),
            open_from: start,
            recent: VecDeque::new(),
            recent_from: start,
        }
    }

    /// The fact at `block`, if known.
    pub(crate) fn get(&self, key: &FactKey, block: u64) -> Option<&Fact> {
        self.facts
            .get(key)?
            .iter()
            .find(|r| r.contains(block))
            .map(|r| &r.fact)
    }

    /// Records what was read at `block`.
    pub(crate) fn insert(&mut self, key: FactKey, block: u64, fact: Fact) {
        if self.get(&key, block).is_some() {
            return;
        }
        let (until, by_event) = if block < self.open_from || block + 1 < self.recent_from {
            (Some(block + 1), false)
        } else {
            let event = self
                .recent
                .iter()
                .filter(|(k, at)| *k == key && *at > block)
                .map(|(_, at)| *at)
                .min();
            (event, event.is_some())
        };
        if !self.facts.contains_key(&key) && self.facts.len() >= self.capacity {
            // Bounded memory: drop some other fact (it is read again if needed).
            if let Some(victim) = self.facts.keys().next().copied() {
                self.facts.remove(&victim);
            }
        }
        // Most facts never change: room for one range, not the default four.
        let ranges = self
            .facts
            .entry(key)
            .or_insert_with(|| Vec::with_capacity(1));
        if ranges.len() >= RANGES_PER_FACT
            && let Some(oldest) = ranges
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| r.from)
                .map(|(i, _)| i)
        {
            ranges.swap_remove(oldest);
        }
        ranges.push(Range {
            from: block,
            until,
            by_event,
            fact,
        });
    }

    /// An event at `block` may have changed `key`.
    pub(crate) fn invalidate(&mut self, key: FactKey, block: u64) {
        if self.recent.len() >= RECENT_EVENTS
            && let Some((_, at)) = self.recent.pop_front()
        {
            self.recent_from = self.recent_from.max(at + 1);
        }
        self.recent.push_back((key, block));
        if let Some(ranges) = self.facts.get_mut(&key) {
            for r in ranges.iter_mut() {
                if r.from < block && r.until.is_none_or(|u| u > block) {
                    r.until = Some(block);
                    r.by_event = true;
                }
            }
        }
    }

    /// Blocks after `ancestor` were orphaned: forget what was read there, and undo what their
    /// events closed (the follower reads their replacements again).
    pub(crate) fn rollback(&mut self, ancestor: u64) {
        for ranges in self.facts.values_mut() {
            ranges.retain(|r| r.from <= ancestor);
            for r in ranges.iter_mut() {
                if r.by_event && r.until.is_some_and(|u| u > ancestor) {
                    r.until = None;
                    r.by_event = false;
                }
            }
        }
        self.facts.retain(|_, ranges| !ranges.is_empty());
        self.recent.retain(|(_, at)| *at <= ancestor);
        self.open_from = self.open_from.min(ancestor);
        self.recent_from = self.recent_from.min(ancestor + 1);
    }

    /// The follower (re)starts after block `start`: reads from it on are open.
    pub(crate) fn restart(&mut self, start: u64) {
        self.open_from = start;
        self.recent_from = start;
        self.recent.clear();
    }

    /// Facts held.
    pub(crate) fn len(&self) -> usize {
        self.facts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process's resident memory in bytes (Linux).
    fn resident() -> i64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }

    fn key() -> FactKey {
        FactKey::Member(Address::repeat_byte(1), Address::repeat_byte(2), 3)
    }

    #[test]
    fn a_read_holds_until_an_event_changes_it() {
        let mut cache = Cache::new(10, 100);
        cache.insert(key(), 105, Fact::Member(true));
        assert_eq!(cache.get(&key(), 104), None, "before the read: unknown");
        assert_eq!(cache.get(&key(), 105), Some(&Fact::Member(true)));
        assert_eq!(cache.get(&key(), 10_000), Some(&Fact::Member(true)));
        cache.invalidate(key(), 110);
        assert_eq!(cache.get(&key(), 109), Some(&Fact::Member(true)));
        assert_eq!(cache.get(&key(), 110), None, "changed at 110: read again");
        cache.insert(key(), 112, Fact::Member(false));
        assert_eq!(cache.get(&key(), 109), Some(&Fact::Member(true)));
        assert_eq!(cache.get(&key(), 112), Some(&Fact::Member(false)));
        // An event older than a read is already in it.
        cache.invalidate(key(), 111);
        assert_eq!(cache.get(&key(), 113), Some(&Fact::Member(false)));
    }

    #[test]
    fn reads_before_the_follower_started_hold_for_their_block_only() {
        let mut cache = Cache::new(10, 100);
        cache.insert(key(), 90, Fact::Member(true));
        assert_eq!(cache.get(&key(), 90), Some(&Fact::Member(true)));
        assert_eq!(cache.get(&key(), 91), None);
    }

    #[test]
    fn a_read_racing_the_follower_is_closed_by_the_event_it_missed() {
        let mut cache = Cache::new(10, 100);
        // The follower applied an event at 120 while a read at 115 was on the wire.
        cache.invalidate(key(), 120);
        cache.insert(key(), 115, Fact::Member(true));
        assert_eq!(cache.get(&key(), 119), Some(&Fact::Member(true)));
        assert_eq!(cache.get(&key(), 120), None);
    }

    #[test]
    fn a_reorg_forgets_orphaned_reads_and_reopens_what_orphaned_events_closed() {
        let mut cache = Cache::new(10, 100);
        let other = FactKey::Registrar(Address::repeat_byte(9));
        cache.insert(key(), 101, Fact::Member(true));
        cache.invalidate(key(), 105);
        cache.insert(key(), 106, Fact::Member(false));
        cache.insert(other, 103, Fact::Registrar(Address::repeat_byte(8)));
        cache.rollback(104);
        assert_eq!(
            cache.get(&key(), 106),
            Some(&Fact::Member(true)),
            "reopened"
        );
        assert_eq!(
            cache.get(&other, 103),
            Some(&Fact::Registrar(Address::repeat_byte(8)))
        );
        cache.rollback(102);
        assert_eq!(cache.get(&other, 103), None, "read at an orphaned block");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn memory_is_bounded() {
        let mut cache = Cache::new(3, 0);
        for i in 0..10u8 {
            cache.insert(
                FactKey::Registrar(Address::repeat_byte(i)),
                1,
                Fact::Member(true),
            );
        }
        assert_eq!(cache.len(), 3);
        for b in 0..10 {
            cache.insert(key(), b * 10, Fact::Member(b % 2 == 0));
            cache.invalidate(key(), b * 10 + 5);
        }
        assert_eq!(cache.facts[&key()].len(), RANGES_PER_FACT);
    }

    /// The cache's memory with 10,000 operators' BN254 keys (the largest fact), each read at one
    /// block, with their membership: the growth of resident memory, printed for
    /// docs/PERFORMANCE.md (`cargo test -p avsnode-chain --release ten_thousand -- --nocapture`),
    /// and bounded.
    #[test]
    fn ten_thousand_operators_keys_take_a_few_megabytes() {
        let g2 = avsnode_signer::bn254::SecretKey::from_bytes(&[7; 32])
            .expect("a key")
            .public_key_g2();
        let before = resident();
        let mut cache = Cache::new(100_000, 0);
        for i in 0..10_000u32 {
            let mut operator = [0u8; 20];
            operator[..4].copy_from_slice(&i.to_be_bytes());
            let operator = Address::from(operator);
            let avs = Address::repeat_byte(0xa5);
            cache.insert(
                FactKey::Key(avs, 1, operator, 2),
                100,
                Fact::Key(RegisteredKey::Bn254(g2)),
            );
            cache.insert(FactKey::Member(operator, avs, 1), 100, Fact::Member(true));
        }
        let bytes = resident() - before;
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "20,000 facts (10,000 BN254 keys and memberships): {} KiB more resident memory",
                bytes / 1024
            );
        }
        assert_eq!(cache.len(), 20_000);
        assert!(bytes < 12 << 20, "{bytes} bytes");
    }
}
