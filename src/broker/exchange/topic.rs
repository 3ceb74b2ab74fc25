//! Topic matching (trie)
