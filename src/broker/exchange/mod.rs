//! Exchanges: their declared properties, their bindings and the per-type index that
//! routes a message to destinations (direct: hash map; fanout: list; topic: trie;
//! headers: scan of the bindings' argument tables), and the name of its alternate
//! exchange (`alternate-exchange`), which `Broker::route` follows when the exchange
//! itself routes a message nowhere.

pub mod headers;
pub mod topic;

use bytes::Bytes;
use std::collections::HashMap;

use crate::proto::FieldTable;

use super::{Dest, VhostId};
use topic::TopicTrie;

/// The four exchange types RabbitMQ ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    pub fn parse(s: &[u8]) -> Option<ExchangeKind> {
        match s {
            b"direct" => Some(ExchangeKind::Direct),
            b"fanout" => Some(ExchangeKind::Fanout),
            b"topic" => Some(ExchangeKind::Topic),
            b"headers" => Some(ExchangeKind::Headers),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// One binding: identity is (source, destination, key, arguments), as in RabbitMQ.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub dest: Dest,
    pub key: Bytes,
    pub args: FieldTable,
}

/// The index a type keeps for routing; built from the bindings.
#[derive(Debug)]
enum Index {
    Direct(HashMap<Bytes, Vec<Dest>>),
    Fanout(Vec<Dest>),
    Topic(TopicTrie<Dest>),
    /// Headers routing scans `bindings` (their argument tables are the index).
    Headers,
}

#[derive(Debug)]
pub struct Exchange {
    pub(in crate::broker) gen: u32,
    /// The vhost it belongs to (its name is unique there; bindings stay inside it).
    pub vhost: VhostId,
    pub name: Bytes,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// The `alternate-exchange` argument: where `Broker::route` sends what this exchange
    /// cannot route (looked up by name at that moment, so an AE declared later or
    /// deleted and redeclared is found; a missing one is ignored, as in RabbitMQ).
    /// None for most exchanges: they pay one branch on an unroutable message only.
    pub alternate: Option<Bytes>,
    bindings: Vec<Binding>,
    index: Index,
    /// Last publish that visited this exchange (stops exchange-to-exchange cycles).
    pub(in crate::broker) stamp: u64,
    /// Changes with every change of the bindings: a route remembered with it (see
    /// `Broker::route_hinted`) holds while it is unchanged.
    pub(in crate::broker) version: u32,
    /// `publish` (RabbitMQ's publish_in) and `routed` (publish_out), boxed on first use.
    pub stats: crate::counters::ObjectStats,
}

impl Exchange {
    #[allow(clippy::too_many_arguments)]
    pub(in crate::broker) fn new(
        gen: u32,
        vhost: VhostId,
        name: Bytes,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Exchange {
        let index = match kind {
            ExchangeKind::Direct => Index::Direct(HashMap::new()),
            ExchangeKind::Fanout => Index::Fanout(Vec::new()),
            ExchangeKind::Topic => Index::Topic(TopicTrie::new()),
            ExchangeKind::Headers => Index::Headers,
        };
        // Validated as a long string on declare (`args::validate_exchange_declare`); a
        // value of another type (from an older data directory) means none.
        let alternate = match arguments.get(b"alternate-exchange") {
            Some(crate::proto::FieldValue::LongStr(n)) => Some(n.clone()),
            _ => None,
        };
        Exchange {
            gen,
            vhost,
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            alternate,
            bindings: Vec::new(),
            index,
            stamp: 0,
            version: 0,
            stats: None,
        }
    }

    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// Whether the index already holds an entry equivalent to `b` (fanout ignores the key).
    fn indexed_by_other(&self, dest: Dest, key: &[u8]) -> bool {
        self.bindings
            .iter()
            .any(|o| o.dest == dest && (self.kind == ExchangeKind::Fanout || o.key == key))
    }

    /// Adds a binding; false when the identical binding exists (binding is idempotent).
    pub fn bind(&mut self, b: Binding) -> bool {
        if self.bindings.contains(&b) {
            return false;
        }
        if !self.indexed_by_other(b.dest, &b.key) {
            match &mut self.index {
                Index::Direct(m) => m.entry(b.key.clone()).or_default().push(b.dest),
                Index::Fanout(v) => v.push(b.dest),
                Index::Topic(t) => {
                    t.insert(&b.key, b.dest);
                }
                Index::Headers => {}
            }
        }
        self.bindings.push(b);
        self.version = self.version.wrapping_add(1);
        true
    }

    /// Removes one binding; false when it did not exist.
    pub fn unbind(&mut self, dest: Dest, key: &[u8], args: &FieldTable) -> bool {
        let Some(at) = self
            .bindings
            .iter()
            .position(|o| o.dest == dest && o.key == key && &o.args == args)
        else {
            return false;
        };
        let b = self.bindings.swap_remove(at);
        self.version = self.version.wrapping_add(1);
        if !self.indexed_by_other(dest, &b.key) {
            match &mut self.index {
                Index::Direct(m) => {
                    if let Some(v) = m.get_mut(key) {
                        v.retain(|d| *d != dest);
                        if v.is_empty() {
                            m.remove(key);
                        }
                    }
                }
                Index::Fanout(v) => v.retain(|d| *d != dest),
                Index::Topic(t) => {
                    t.remove(key, dest);
                }
                Index::Headers => {}
            }
        }
        true
    }

    /// Removes every binding to `dest`; returns how many.
    pub fn unbind_all(&mut self, dest: Dest) -> usize {
        let mine: Vec<Binding> = self
            .bindings
            .iter()
            .filter(|b| b.dest == dest)
            .cloned()
            .collect();
        for b in &mine {
            self.unbind(dest, &b.key, &b.args);
        }
        mine.len()
    }

    pub fn has_bindings(&self) -> bool {
        !self.bindings.is_empty()
    }

    /// Appends the destinations a message with `key` and `headers` goes to (may repeat).
    /// `headers` is only consulted by headers exchanges.
    pub fn route(&self, key: &[u8], headers: Option<&FieldTable>, out: &mut Vec<Dest>) {
        match &self.index {
            Index::Direct(m) => {
                if let Some(v) = m.get(key) {
                    out.extend_from_slice(v);
                }
            }
            Index::Fanout(v) => out.extend_from_slice(v),
            Index::Topic(t) => t.matches(key, out),
            Index::Headers => {
                let empty = FieldTable::new();
                let h = headers.unwrap_or(&empty);
                out.extend(
                    self.bindings
                        .iter()
                        .filter(|b| headers::matches(&b.args, h))
                        .map(|b| b.dest),
                );
            }
        }
    }
}
