//! Topic matching (trie).
//!
//! A [`TopicTrie`] holds the `(pattern, destination)` bindings of one topic exchange
//! and answers "which destinations does this routing key reach?".
//!
//! # Semantics (RabbitMQ's)
//!
//! Routing keys and binding patterns are words separated by `.`. In a pattern, the
//! word `*` matches exactly one word and the word `#` matches zero or more words;
//! every other word (including `a*`, `##`, …) matches only itself, byte for byte.
//!
//! Splitting follows RabbitMQ's `rabbit_db_topic_exchange:split_topic_key/1`:
//! `"a..b"` is the three words `"a"`, `""`, `"b"`; `"a."` is `"a"`, `""`; but the
//! empty string `""` is **zero** words, not one empty word. Hence, for the key `""`:
//! `#` matches it, the pattern `""` matches it, and `*` does **not** (there is no word
//! for it to take). An empty word in a non-empty key is an ordinary word, so `*`
//! matches the key `"."` (two empty words) only as `*.*`.
//!
//! # Cost
//!
//! Matching walks the trie word by word: literal children are found by hash lookup,
//! and `*` / `#` have dedicated slots, so the cost does not grow with the number of
//! bindings (only with the number of *matching* bindings and the trie paths that the
//! key can follow). A `#` node is entered at some word index and then tries every
//! later index; when a `#` lies below another `#` (e.g. `#.a.#`, `#.#.#`) the same
//! node could be reached at the same index along many paths, so such visits are
//! memoized per call, which keeps the walk polynomial (every `(node, word index)`
//! pair is expanded at most once) instead of exponential. The memo is a thread-local
//! scratch map reused across calls, touched only when nested `#`s are actually
//! reached, so the common case does not allocate.
//!
//! Recursion depth is bounded by the depth of the trie (the number of words in the
//! longest pattern, ≤ 128 for an AMQP short-string pattern), never by the key.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// Up to this many appended destinations are de-duplicated by a linear scan;
/// beyond it, a temporary hash set is used.
const LINEAR_DEDUP_MAX: usize = 32;

/// Keys with at most this many words are split into an on-stack array.
/// An AMQP short string (≤ 255 bytes) has at most 256 words.
const STACK_WORDS: usize = 256;

thread_local! {
    /// Memo for nested `#` nodes: node address → the lowest word index from which
    /// that node's `#` loop has already run during the current `matches` call.
    static HASH_MEMO: Cell<HashMap<usize, usize>> = Cell::new(HashMap::new());
}

/// One word of a binding pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PatWord<'a> {
    Star,
    Hash,
    Lit(&'a [u8]),
}

/// Splits a pattern or key RabbitMQ's way: `""` is zero words, otherwise split at
/// every `.` (so empty words are possible).
fn split_words(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    let skip = usize::from(s.is_empty());
    s.split(|&b| b == b'.').skip(skip)
}

fn pattern_words(pattern: &[u8]) -> impl Iterator<Item = PatWord<'_>> {
    split_words(pattern).map(|w| match w {
        b"*" => PatWord::Star,
        b"#" => PatWord::Hash,
        lit => PatWord::Lit(lit),
    })
}

#[derive(Clone, Debug)]
struct Node<D> {
    /// Children reached by a literal word.
    children: HashMap<Box<[u8]>, Node<D>>,
    /// Child reached by the pattern word `*`.
    star: Option<Box<Node<D>>>,
    /// Child reached by the pattern word `#`.
    hash: Option<Box<Node<D>>>,
    /// Destinations whose pattern ends exactly at this node (no duplicates).
    dests: Vec<D>,
}

impl<D> Node<D> {
    fn new() -> Self {
        Node {
            children: HashMap::new(),
            star: None,
            hash: None,
            dests: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.dests.is_empty()
            && self.children.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
    }
}

/// Removes `dest` from the pattern path `words` below `node`, pruning nodes left
/// empty. Returns whether the binding was present.
fn remove_rec<D: Copy + Eq>(node: &mut Node<D>, words: &[PatWord<'_>], dest: D) -> bool {
    let Some((first, rest)) = words.split_first() else {
        return match node.dests.iter().position(|&d| d == dest) {
            Some(i) => {
                node.dests.swap_remove(i);
                if node.dests.is_empty() {
                    node.dests = Vec::new(); // release the allocation
                }
                true
            }
            None => false,
        };
    };
    match *first {
        PatWord::Star | PatWord::Hash => {
            let slot = if *first == PatWord::Star {
                &mut node.star
            } else {
                &mut node.hash
            };
            let Some(child) = slot.as_deref_mut() else {
                return false;
            };
            let removed = remove_rec(child, rest, dest);
            if removed && child.is_empty() {
                *slot = None;
            }
            removed
        }
        PatWord::Lit(w) => {
            let Some(child) = node.children.get_mut(w) else {
                return false;
            };
            let removed = remove_rec(child, rest, dest);
            if removed && child.is_empty() {
                node.children.remove(w);
                if node.children.is_empty() {
                    node.children = HashMap::new(); // release the table
                }
            }
            removed
        }
    }
}

/// Per-call matching state.
struct Walk<'w, 'k, 'o, D> {
    words: &'w [&'k [u8]],
    out: &'o mut Vec<D>,
    /// Number of trie nodes that contributed destinations; duplicates in `out` are
    /// only possible when this exceeds one.
    terminals: usize,
    /// Taken from [`HASH_MEMO`] on first use.
    memo: Option<HashMap<usize, usize>>,
}

impl<D: Copy + Eq + Hash> Walk<'_, '_, '_, D> {
    /// `node` has been reached having consumed `words[..i]`; `nested` says whether a
    /// `#` node lies on the path from the root to `node` (exclusive).
    fn node(&mut self, node: &Node<D>, i: usize, nested: bool) {
        if let Some(&w) = self.words.get(i) {
            if let Some(child) = node.children.get(w) {
                self.node(child, i + 1, nested);
            }
            if let Some(star) = node.star.as_deref() {
                self.node(star, i + 1, nested);
            }
        } else if !node.dests.is_empty() {
            self.terminals += 1;
            self.out.extend_from_slice(&node.dests);
        }
        if let Some(hash) = node.hash.as_deref() {
            self.hash(hash, i, nested);
        }
    }

    /// Enters the `#` node `hash` at word index `i`: it may swallow any number of
    /// the remaining words, so its subtree is tried at every index `i..=len`.
    fn hash(&mut self, hash: &Node<D>, i: usize, nested: bool) {
        let len = self.words.len();
        let end = if nested {
            // Reachable at several indices along several paths: run each index once.
            // Running from `start` covers every index from `start` to `len`, and a
            // node is never reachable from its own subtree, so a recorded start is a
            // finished loop.
            let memo = self
                .memo
                .get_or_insert_with(|| HASH_MEMO.try_with(Cell::take).unwrap_or_default());
            let key = hash as *const Node<D> as usize;
            let done_from = memo.get(&key).copied().unwrap_or(len + 1);
            if done_from <= i {
                return;
            }
            memo.insert(key, i);
            done_from
        } else {
            // Without a `#` above, the path from the root fixes the index at which
            // this node is entered, so it is entered at most once per call.
            len + 1
        };
        for j in i..end {
            self.node(hash, j, true);
        }
    }

    fn finish(self, start: usize) {
        if let Some(mut memo) = self.memo {
            memo.clear();
            if memo.capacity() > 1024 {
                memo.shrink_to(64);
            }
            let _ = HASH_MEMO.try_with(|m| m.set(memo));
        }
        if self.terminals <= 1 {
            return; // each node's destination list is already duplicate-free
        }
        dedup_from(self.out, start);
    }
}

/// Removes duplicates from `out[start..]`, keeping first occurrences in order.
fn dedup_from<D: Copy + Eq + Hash>(out: &mut Vec<D>, start: usize) {
    let n = out.len();
    let mut w = start;
    if n - start <= LINEAR_DEDUP_MAX {
        for r in start..n {
            let d = out[r];
            if !out[start..w].contains(&d) {
                out[w] = d;
                w += 1;
            }
        }
    } else {
        let mut seen = HashSet::with_capacity(n - start);
        for r in start..n {
            let d = out[r];
            if seen.insert(d) {
                out[w] = d;
                w += 1;
            }
        }
    }
    out.truncate(w);
}

/// A set of (pattern, destination) bindings. D is a small Copy id chosen by the caller.
///
/// See the [module documentation](self) for the matching rules.
#[derive(Clone, Debug)]
pub struct TopicTrie<D> {
    root: Node<D>,
    len: usize,
}

impl<D: Copy + Eq + Hash> Default for TopicTrie<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Copy + Eq + Hash> TopicTrie<D> {
    /// An empty set of bindings.
    pub fn new() -> Self {
        TopicTrie {
            root: Node::new(),
            len: 0,
        }
    }

    /// Adds a binding; false if this exact (pattern, dest) was already present.
    ///
    /// Patterns are taken verbatim: `#.#` and `#` are different bindings (they match
    /// the same keys, and a destination bound with both is reported once).
    pub fn insert(&mut self, pattern: &[u8], dest: D) -> bool {
        let mut node = &mut self.root;
        for word in pattern_words(pattern) {
            node = match word {
                PatWord::Star => node.star.get_or_insert_with(|| Box::new(Node::new())),
                PatWord::Hash => node.hash.get_or_insert_with(|| Box::new(Node::new())),
                PatWord::Lit(w) => node.children.entry(w.into()).or_insert_with(Node::new),
            };
        }
        if node.dests.contains(&dest) {
            return false;
        }
        node.dests.push(dest);
        self.len += 1;
        true
    }

    /// Removes a binding; false if absent. Prunes nodes left empty so memory does not leak.
    pub fn remove(&mut self, pattern: &[u8], dest: D) -> bool {
        let words: Vec<PatWord<'_>> = pattern_words(pattern).collect();
        let removed = remove_rec(&mut self.root, &words, dest);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Appends every destination whose pattern matches `key` to `out`, each at most once.
    ///
    /// Only the appended part is de-duplicated: destinations already in `out` before
    /// the call are neither looked at nor removed. The order of the appended
    /// destinations is unspecified.
    ///
    /// Takes `&self`: any scratch state (the memo for nested `#` nodes) lives in a
    /// thread-local that is reused across calls. No allocation happens in the common
    /// case (key of ≤ 256 words, ≤ 32 matches or a single matching pattern, no `#`
    /// nested below another `#` on a path the key follows), apart from growing `out`.
    pub fn matches(&self, key: &[u8], out: &mut Vec<D>) {
        if self.len == 0 {
            return;
        }
        let n_words = if key.is_empty() {
            0
        } else {
            key.iter().filter(|&&b| b == b'.').count() + 1
        };
        let mut stack: [&[u8]; STACK_WORDS];
        let heap: Vec<&[u8]>;
        let words: &[&[u8]] = if n_words <= STACK_WORDS {
            stack = [&[] as &[u8]; STACK_WORDS];
            for (slot, w) in stack.iter_mut().zip(split_words(key)) {
                *slot = w;
            }
            &stack[..n_words]
        } else {
            heap = split_words(key).collect();
            &heap
        };
        let start = out.len();
        let mut walk = Walk {
            words,
            out,
            terminals: 0,
            memo: None,
        };
        walk.node(&self.root, 0, false);
        walk.finish(start);
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A slow, obviously-correct matcher over word lists, for differential tests and
/// fuzz targets. Exponential in the worst case (many `#`s): keep inputs small.
#[doc(hidden)]
pub mod reference {
    /// Splits like RabbitMQ: `""` is zero words, otherwise every `.` separates.
    pub fn split(s: &[u8]) -> Vec<&[u8]> {
        if s.is_empty() {
            Vec::new()
        } else {
            s.split(|&b| b == b'.').collect()
        }
    }

    /// Whether the pattern words `pat` match the key words `key`.
    pub fn match_words(pat: &[&[u8]], key: &[&[u8]]) -> bool {
        match (pat.split_first(), key.split_first()) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some((&p, prest)), _) if p == b"#" => {
                // zero words, or swallow one and stay on `#`
                match_words(prest, key) || (!key.is_empty() && match_words(pat, &key[1..]))
            }
            (Some(_), None) => false,
            (Some((&p, prest)), Some((&k, krest))) => {
                (p == b"*" || p == k) && match_words(prest, krest)
            }
        }
    }

    /// Whether binding pattern `pattern` matches routing key `key`.
    pub fn matches(pattern: &[u8], key: &[u8]) -> bool {
        match_words(&split(pattern), &split(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route<D: Copy + Eq + Hash + Ord>(t: &TopicTrie<D>, key: &str) -> Vec<D> {
        let mut out = Vec::new();
        t.matches(key.as_bytes(), &mut out);
        let n = out.len();
        out.sort();
        out.dedup();
        assert_eq!(n, out.len(), "duplicate destinations for key {key:?}");
        out
    }

    fn single(pattern: &str, key: &str) -> bool {
        let mut t = TopicTrie::new();
        assert!(t.insert(pattern.as_bytes(), 1u32));
        let got = !route(&t, key).is_empty();
        assert_eq!(
            got,
            reference::matches(pattern.as_bytes(), key.as_bytes()),
            "trie and reference disagree on pattern {pattern:?} key {key:?}"
        );
        got
    }

    #[test]
    fn tutorial_five() {
        const Q1: u8 = 1;
        const Q2: u8 = 2;
        let mut t = TopicTrie::new();
        assert!(t.insert(b"*.orange.*", Q1));
        assert!(t.insert(b"*.*.rabbit", Q2));
        assert!(t.insert(b"lazy.#", Q2));
        assert_eq!(t.len(), 3);
        assert_eq!(route(&t, "quick.orange.rabbit"), [Q1, Q2]);
        assert_eq!(route(&t, "lazy.orange.elephant"), [Q1, Q2]);
        assert_eq!(route(&t, "quick.orange.fox"), [Q1]);
        assert_eq!(route(&t, "lazy.brown.fox"), [Q2]);
        // Two bindings match, Q2 is delivered once.
        assert_eq!(route(&t, "lazy.pink.rabbit"), [Q2]);
        assert_eq!(route(&t, "quick.brown.fox"), [] as [u8; 0]);
        assert_eq!(route(&t, "orange"), [] as [u8; 0]);
        assert_eq!(route(&t, "quick.orange.male.rabbit"), [] as [u8; 0]);
        assert_eq!(route(&t, "lazy.orange.male.rabbit"), [Q2]);
    }

    /// RabbitMQ splits `""` into zero words (`split_topic_key(<<>>) -> []`), so `#`
    /// and the empty pattern match the empty key, and `*` does not.
    #[test]
    fn empty_key_is_zero_words() {
        assert!(single("#", ""));
        assert!(single("", ""));
        assert!(single("#.#", ""));
        assert!(!single("*", ""));
        assert!(!single("*.#", ""));
        assert!(!single("#.*", ""));
        // An empty word is not the same as no word.
        assert!(!single("#.", ""));
        assert!(!single(".", ""));
        assert!(!single("", "."));
        assert!(!single("", "a"));
    }

    #[test]
    fn hash_matches_everything() {
        for key in [
            "",
            "a",
            ".",
            "..",
            "a.b.c",
            "#",
            "*",
            "a..b",
            &".".repeat(255),
        ] {
            assert!(single("#", key), "{key:?}");
        }
    }

    #[test]
    fn hash_edges() {
        assert!(single("a.#", "a"));
        assert!(single("a.#", "a.b"));
        assert!(single("a.#", "a.b.c"));
        assert!(!single("a.#", "b.a"));
        assert!(!single("a.#", ""));
        assert!(single("a.#", "a."));
        assert!(single("#.a", "a"));
        assert!(single("#.a", "x.y.a"));
        assert!(!single("#.a", "a.x"));
        assert!(single("#.a.#", "x.a.y"));
        assert!(single("#.a.#", "a"));
        assert!(!single("#.a.#", "b"));
        assert!(!single("a.*.#", "a"));
        assert!(single("a.*.#", "a.b"));
        assert!(single("a.*.#", "a.b.c.d"));
        assert!(single("a.#.b", "a.b"));
        assert!(single("a.#.b", "a.x.y.b"));
        assert!(!single("a.#.b", "a.b.c"));
        assert!(single("#.#.#", "a.b"));
        assert!(single("a.#.#.b", "a.b"));
    }

    #[test]
    fn star_and_empty_words() {
        assert!(single("*", "a"));
        assert!(!single("*", "a.b"));
        assert!(!single("*", "."));
        assert!(single("*.*", "."));
        assert!(single("a.*.b", "a..b"));
        assert!(single("a..b", "a..b"));
        assert!(!single("a..b", "a.b"));
        assert!(single("a.", "a."));
        assert!(!single("a.", "a"));
        assert!(single(".a", ".a"));
        assert!(single("*.a", ".a"));
        assert!(single("a.*", "a."));
        // `*` and `#` are special only as whole words.
        assert!(single("a*", "a*"));
        assert!(!single("a*", "ab"));
        assert!(!single("a#", "a.b"));
        assert!(!single("##", "a"));
        assert!(single("##", "##"));
        // ... and a key word that looks like a wildcard is literal.
        assert!(single("#", "*.#"));
        assert!(!single("a", "*"));
    }

    #[test]
    fn insert_remove_prune() {
        let mut t: TopicTrie<u32> = TopicTrie::new();
        assert!(t.is_empty());
        assert!(t.insert(b"a.b.c", 1));
        assert!(!t.insert(b"a.b.c", 1));
        assert!(t.insert(b"a.b.c", 2));
        assert!(t.insert(b"a.*.#", 1));
        assert!(t.insert(b"#.#", 3));
        assert!(t.insert(b"#", 3)); // distinct binding, same meaning
        assert!(t.insert(b"", 4));
        assert_eq!(t.len(), 6);
        assert_eq!(route(&t, "a.b.c"), [1, 2, 3]);
        assert_eq!(route(&t, ""), [3, 4]);

        assert!(!t.remove(b"a.b.c", 9));
        assert!(!t.remove(b"a.b", 1));
        assert!(!t.remove(b"a.b.c.d", 1));
        assert!(!t.remove(b"x.y", 1));
        assert!(t.remove(b"a.b.c", 1));
        assert!(!t.remove(b"a.b.c", 1));
        assert_eq!(route(&t, "a.b.c"), [1, 2, 3]); // 1 still via a.*.#
        assert!(t.remove(b"a.*.#", 1));
        assert_eq!(route(&t, "a.b.c"), [2, 3]);
        assert!(t.remove(b"#", 3));
        assert_eq!(route(&t, "a.b.c"), [2, 3]); // 3 still via #.#
        assert!(t.remove(b"#.#", 3));
        assert!(t.remove(b"a.b.c", 2));
        assert_eq!(t.len(), 1);
        assert_eq!(route(&t, ""), [4]);
        assert!(t.remove(b"", 4));
        assert!(t.is_empty());
        assert!(t.root.is_empty(), "nodes leaked: {:?}", t.root);
    }

    #[test]
    fn prune_keeps_shared_prefixes() {
        let mut t: TopicTrie<u32> = TopicTrie::new();
        t.insert(b"a.b", 1);
        t.insert(b"a.b.c.d", 2);
        t.insert(b"a.*.#", 3);
        assert!(t.remove(b"a.b.c.d", 2));
        let a = t.root.children.get(&b"a"[..]).expect("a kept");
        let b = a.children.get(&b"b"[..]).expect("a.b kept");
        assert!(b.children.is_empty(), "a.b.c pruned");
        assert!(a.star.is_some());
        assert!(t.remove(b"a.b", 1));
        assert!(t.root.children[&b"a"[..]].children.is_empty());
        assert!(t.remove(b"a.*.#", 3));
        assert!(t.root.is_empty());
    }

    #[test]
    fn appends_without_touching_existing_out() {
        let mut t = TopicTrie::new();
        t.insert(b"#", 1u32);
        t.insert(b"a", 1);
        t.insert(b"a", 2);
        let mut out = vec![2, 2, 7];
        t.matches(b"a", &mut out);
        out[3..].sort_unstable();
        assert_eq!(out, [2, 2, 7, 1, 2]);
    }

    #[test]
    fn many_dests_on_many_patterns_are_deduplicated() {
        let mut t = TopicTrie::new();
        for d in 0..100u32 {
            t.insert(b"#", d);
            t.insert(b"a.#", d);
            t.insert(b"*.b", d);
        }
        assert_eq!(route(&t, "a.b"), (0..100).collect::<Vec<_>>());
    }

    /// Nested `#`s must not make matching exponential.
    #[test]
    fn nested_hashes_are_polynomial() {
        let mut t = TopicTrie::new();
        let hashes = vec!["#"; 128].join(".");
        assert_eq!(hashes.len(), 255);
        t.insert(hashes.as_bytes(), 1u32);
        let alt = vec!["#.a"; 42].join(".") + ".#";
        t.insert(alt.as_bytes(), 2);
        let star = vec!["#.*"; 60].join(".") + ".#";
        t.insert(star.as_bytes(), 3);
        let a_key = vec!["a"; 128].join(".");
        assert_eq!(route(&t, &a_key), [1, 2, 3]);
        let dots = ".".repeat(255);
        assert_eq!(route(&t, &dots), [1, 3]);
        let b_key = vec!["a"; 41].join(".") + ".b";
        assert_eq!(route(&t, &b_key), [1]);
        assert_eq!(route(&t, ""), [1]);
    }

    #[test]
    fn long_keys_and_patterns() {
        let mut t = TopicTrie::new();
        let dots = ".".repeat(255);
        t.insert(dots.as_bytes(), 1u32);
        let stars = vec!["*"; 128].join(".");
        t.insert(stars.as_bytes(), 2);
        assert_eq!(route(&t, &dots), [1]); // 256 empty words: not 128 `*`s
        let mut out = Vec::new();
        // More words than fit on the stack.
        t.matches(".".repeat(10_000).as_bytes(), &mut out);
        assert!(out.is_empty());
        t.insert(b"#", 3);
        t.matches(".".repeat(10_000).as_bytes(), &mut out);
        assert_eq!(out, [3]);
        t.matches(&[0xff, b'.', 0, b'.', 0x80], &mut out);
        assert_eq!(out, [3, 3]);
    }

    #[test]
    fn ten_thousand_bindings() {
        let mut t = TopicTrie::new();
        for i in 0..10_000u32 {
            let p = match i % 4 {
                0 => format!("stock.{i}.nyse"),
                1 => format!("stock.*.{i}"),
                2 => format!("{i}.#"),
                _ => format!("#.x{i}.#"),
            };
            assert!(t.insert(p.as_bytes(), i));
        }
        assert_eq!(t.len(), 10_000);
        assert_eq!(route(&t, "stock.4.nyse"), [4]);
        assert_eq!(route(&t, "stock.foo.9"), [9]);
        assert_eq!(route(&t, "stock.8.nyse"), [8]);
        assert_eq!(route(&t, "6.a.b"), [6]);
        assert_eq!(route(&t, "a.x7.b.x11"), [7, 11]);
        assert_eq!(route(&t, "stock.12.nyse.x15"), [15]);
        assert_eq!(route(&t, "nothing.here"), [] as [u32; 0]);
        t.insert(b"#", 10_000);
        let mut out = Vec::new();
        t.matches(b"stock.0.nyse", &mut out);
        out.sort_unstable();
        assert_eq!(out, [0, 10_000]);
        for i in 0..10_000u32 {
            let p = match i % 4 {
                0 => format!("stock.{i}.nyse"),
                1 => format!("stock.*.{i}"),
                2 => format!("{i}.#"),
                _ => format!("#.x{i}.#"),
            };
            assert!(t.remove(p.as_bytes(), i));
        }
        assert!(t.remove(b"#", 10_000));
        assert!(t.is_empty() && t.root.is_empty());
    }

    fn word() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("a"), Just("b"), Just(""), Just("*"), Just("#")]
    }

    fn key_word() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("a"), Just("b"), Just(""), Just("c")]
    }

    fn joined(
        words: impl Strategy<Value = &'static str> + 'static,
        max: usize,
    ) -> BoxedStrategy<String> {
        prop::collection::vec(words, 0..=max)
            .prop_map(|ws| ws.join("."))
            .boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn differential_against_reference(
            patterns in prop::collection::vec((joined(word(), 5), 0u8..6), 0..24),
            keys in prop::collection::vec(joined(key_word(), 6), 1..16),
            removals in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut t = TopicTrie::new();
            let mut model: Vec<(String, u8)> = Vec::new();
            for (p, d) in &patterns {
                let fresh = !model.contains(&(p.clone(), *d));
                prop_assert_eq!(t.insert(p.as_bytes(), *d), fresh);
                if fresh {
                    model.push((p.clone(), *d));
                }
            }
            for ix in &removals {
                if model.is_empty() {
                    break;
                }
                let (p, d) = model.swap_remove(ix.index(model.len()));
                prop_assert!(t.remove(p.as_bytes(), d));
                prop_assert!(!t.remove(p.as_bytes(), d));
            }
            prop_assert_eq!(t.len(), model.len());
            let mut out = Vec::new();
            for k in &keys {
                let mut want: Vec<u8> = model
                    .iter()
                    .filter(|(p, _)| reference::matches(p.as_bytes(), k.as_bytes()))
                    .map(|&(_, d)| d)
                    .collect();
                want.sort_unstable();
                want.dedup();
                out.clear();
                t.matches(k.as_bytes(), &mut out);
                let n = out.len();
                out.sort_unstable();
                out.dedup();
                prop_assert_eq!(n, out.len(), "duplicates for key {:?}", k);
                prop_assert_eq!(&out, &want, "key {:?}", k);
            }
            for (p, d) in &model {
                prop_assert!(t.remove(p.as_bytes(), *d));
            }
            prop_assert!(t.is_empty());
            prop_assert!(t.root.is_empty());
        }
    }
}
