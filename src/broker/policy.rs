//! Policies and operator policies (RabbitMQ 3.10's `policy` and `operator_policy`
//! runtime parameters): per vhost, a name, a regex over queue/exchange names, what it
//! applies to, a priority and a definition (a JSON object of settings).
//!
//! Which policy applies to an object is RabbitMQ's rule (`rabbit_policy:match`): of the
//! policies whose pattern matches the name somewhere (a regex search, not a full match)
//! and that apply to the object's kind, the highest priority; on a tie, the greatest
//! name (what RabbitMQ 3.10 picks). One user policy and one operator policy apply at
//! most, and they combine per key as `rabbit_policy:merge_policy_value` does: the
//! smaller of two numbers (operator policies only carry numeric limits).
//!
//! A policy takes effect through the arguments Warren already acts on: for a queue,
//! [`queue_args`] folds the applied policies into a copy of its `x-` arguments with
//! RabbitMQ 3.10's precedence per key (`rabbit_amqqueue_process:process_args_policy`:
//! the smaller for TTL, expiry and length limits; the argument over the policy for the
//! dead-letter exchange and routing key and the overflow mode), and
//! `queue::Features::from_args` reads that copy; for an exchange, [`alternate`] gives
//! `alternate-exchange` (the argument wins, as `rabbit_policy:get_arg`). A vhost without
//! policies never builds that copy: declaring a queue there costs one emptiness test,
//! and nothing here is on the per-message path. Setting or clearing a policy
//! re-applies them to every queue and exchange of the vhost at once
//! (`Broker::apply_policies`).
//!
//! Validation and its texts are RabbitMQ's (`rabbit_policy`, `rabbit_policies`), so
//! that the API's 400 bodies and warrenctl's errors read the same.

use std::borrow::Cow;

use bytes::Bytes;
use regex::bytes::Regex;
use serde_json::{Map, Value};

use crate::proto::{FieldTable, FieldValue};

/// What a policy applies to (3.10 knows no `classic_queues`/`quorum_queues`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApplyTo {
    Queues,
    Exchanges,
    #[default]
    All,
}

impl ApplyTo {
    pub fn parse(s: &str) -> Option<ApplyTo> {
        match s {
            "queues" => Some(ApplyTo::Queues),
            "exchanges" => Some(ApplyTo::Exchanges),
            "all" => Some(ApplyTo::All),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApplyTo::Queues => "queues",
            ApplyTo::Exchanges => "exchanges",
            ApplyTo::All => "all",
        }
    }
}

/// One policy or operator policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub pattern: String,
    regex: Regex,
    pub apply_to: ApplyTo,
    pub priority: i64,
    /// The settings, keys sorted (serde_json's map is ordered by key, as RabbitMQ shows).
    pub definition: Map<String, Value>,
}

/// The settings RabbitMQ 3.10 accepts in a policy; those Warren acts on are named in
/// the README. The others (mirroring, federation, streams...) are accepted and kept,
/// with no effect on one node, as RabbitMQ's plugins would validate them.
const USER_KEYS: &[&str] = &[
    "alternate-exchange",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "dead-letter-strategy",
    "delivery-limit",
    "expires",
    "federation-upstream",
    "federation-upstream-set",
    "ha-mode",
    "ha-params",
    "ha-promote-on-failure",
    "ha-promote-on-shutdown",
    "ha-sync-batch-size",
    "ha-sync-mode",
    "initial-cluster-size",
    "max-age",
    "max-in-memory-bytes",
    "max-in-memory-length",
    "max-length",
    "max-length-bytes",
    "message-ttl",
    "overflow",
    "queue-leader-locator",
    "queue-master-locator",
    "queue-mode",
    "queue-version",
    "stream-max-segment-size-bytes",
];

/// The settings an operator policy may carry (RabbitMQ 3.10's
/// `operator_policy_validator` registrations).
const OPERATOR_KEYS: &[&str] = &[
    "delivery-limit",
    "expires",
    "max-in-memory-bytes",
    "max-in-memory-length",
    "max-length",
    "max-length-bytes",
    "message-ttl",
];

/// Keys whose user and operator values combine as the smaller
/// (`rabbit_policies:merge_policy_value`).
const MERGED_MIN: &[&str] = &[
    "delivery-limit",
    "expires",
    "max-in-memory-bytes",
    "max-in-memory-length",
    "max-length",
    "max-length-bytes",
    "message-ttl",
];

/// A JSON value as Erlang's `~p` shows the term jsx decodes it to.
pub fn erl(v: &Value) -> String {
    match v {
        Value::String(s) => format!("<<\"{s}\">>"),
        Value::Array(a) => format!("[{}]", a.iter().map(erl).collect::<Vec<_>>().join(",")),
        Value::Object(m) => format!(
            "[{}]",
            m.iter()
                .map(|(k, v)| format!("{{<<\"{k}\">>,{}}}", erl(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// A JSON integer (jsx's integer: not 1.0).
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// RabbitMQ's check of one setting's value; Err is its message.
fn check_value(key: &str, v: &Value) -> Result<(), String> {
    let at_least = |min: i64, what: &str| match int(v) {
        Some(n) if n >= min => Ok(()),
        // A u64 above i64::MAX is still a non-negative integer.
        None if v.as_u64().is_some() => Ok(()),
        _ => Err(format!("{} is not a valid {what}", erl(v))),
    };
    let string = |what: &str| match v {
        Value::String(_) => Ok(()),
        _ => Err(format!("{} is not a valid {what}", erl(v))),
    };
    let one_of = |ok: &[&str], what: &str| match v {
        Value::String(s) if ok.contains(&s.as_str()) => Ok(()),
        _ => Err(format!("{} is not a valid {what}", erl(v))),
    };
    match key {
        "alternate-exchange" => string("alternate exchange name"),
        "dead-letter-exchange" => string("dead letter exchange name"),
        "dead-letter-routing-key" => string("dead letter routing key"),
        "message-ttl" => at_least(0, "message TTL"),
        "expires" => at_least(1, "queue expiry"),
        "max-length" => at_least(0, "maximum length"),
        "max-length-bytes" => at_least(0, "maximum length in bytes"),
        "max-in-memory-length" => at_least(0, "maximum memory in length"),
        "max-in-memory-bytes" => at_least(0, "maximum memory in bytes"),
        "delivery-limit" => at_least(0, "delivery limit"),
        "queue-mode" => one_of(&["default", "lazy"], "queue-mode value"),
        "overflow" => one_of(
            &["drop-head", "reject-publish", "reject-publish-dlx"],
            "overflow value",
        ),
        "dead-letter-strategy" => {
            one_of(&["at-most-once", "at-least-once"], "dead letter strategy")
        }
        _ => Ok(()),
    }
}

/// RabbitMQ's validation of a definition (`rabbit_policy:validate_policy`): not empty,
/// no unknown key (all of them listed), then each value, keys in order. Err is the
/// text after "Validation failed\n\n".
pub fn validate_definition(def: &Map<String, Value>, operator: bool) -> Result<(), String> {
    if def.is_empty() {
        return Err("no policy provided".into());
    }
    let known = if operator { OPERATOR_KEYS } else { USER_KEYS };
    let mut keys: Vec<&String> = def.keys().collect();
    keys.sort();
    let unknown: Vec<String> = keys
        .iter()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| format!("{{<<\"{k}\">>,{}}}", erl(&def[k.as_str()])))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "[{}] are not recognised policy settings",
            unknown.join(",")
        ));
    }
    for k in keys {
        check_value(k, &def[k.as_str()])?;
    }
    Ok(())
}

impl Policy {
    /// A policy, validated as RabbitMQ does; Err is the text after "Validation
    /// failed\n\n".
    pub fn new(
        name: &str,
        pattern: &str,
        apply_to: ApplyTo,
        priority: i64,
        definition: Map<String, Value>,
        operator: bool,
    ) -> Result<Policy, String> {
        let regex = Regex::new(pattern).map_err(|e| {
            // Erlang's re reports {Reason, Offset}; the regex crate's text is kept whole.
            let first = e.to_string().replace('\n', " ");
            format!("pattern should be regular expression but is invalid: {{\"{first}\"}}")
        })?;
        validate_definition(&definition, operator)?;
        Ok(Policy {
            name: name.to_string(),
            pattern: pattern.to_string(),
            regex,
            apply_to,
            priority,
            definition,
        })
    }

    /// Whether it applies to a queue (`queue`) or exchange named `name`.
    pub fn matches(&self, name: &[u8], queue: bool) -> bool {
        let kind = match self.apply_to {
            ApplyTo::All => true,
            ApplyTo::Queues => queue,
            ApplyTo::Exchanges => !queue,
        };
        kind && self.regex.is_match(name)
    }

    /// The policy as RabbitMQ's API writes one (its field order: vhost, name, pattern,
    /// apply-to, definition, priority), as JSON text.
    pub fn to_json_text(&self, vhost: &str) -> String {
        let s = |v: &str| Value::String(v.to_string()).to_string();
        format!(
            "{{\"vhost\":{},\"name\":{},\"pattern\":{},\"apply-to\":{},\"definition\":{},\"priority\":{}}}",
            s(vhost),
            s(&self.name),
            s(&self.pattern),
            s(self.apply_to.as_str()),
            Value::Object(self.definition.clone()),
            self.priority
        )
    }

    /// The policy as the API and the definitions show it.
    pub fn to_json(&self, vhost: &str) -> Value {
        serde_json::json!({
            "vhost": vhost,
            "name": self.name,
            "pattern": self.pattern,
            "apply-to": self.apply_to.as_str(),
            "definition": self.definition,
            "priority": self.priority,
        })
    }
}

/// A vhost's policies and operator policies.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    pub user: Vec<Policy>,
    pub operator: Vec<Policy>,
}

impl Policies {
    pub fn is_empty(&self) -> bool {
        self.user.is_empty() && self.operator.is_empty()
    }

    fn kind_mut(&mut self, operator: bool) -> &mut Vec<Policy> {
        if operator {
            &mut self.operator
        } else {
            &mut self.user
        }
    }

    pub fn kind(&self, operator: bool) -> &[Policy] {
        if operator {
            &self.operator
        } else {
            &self.user
        }
    }

    /// Sets (adds or replaces) a policy; true when it is new.
    pub fn set(&mut self, operator: bool, p: Policy) -> bool {
        let list = self.kind_mut(operator);
        match list.iter_mut().find(|q| q.name == p.name) {
            Some(old) => {
                *old = p;
                false
            }
            None => {
                list.push(p);
                true
            }
        }
    }

    /// Removes a policy; false when there was none of that name.
    pub fn clear(&mut self, operator: bool, name: &str) -> bool {
        let list = self.kind_mut(operator);
        let before = list.len();
        list.retain(|p| p.name != name);
        list.len() != before
    }

    pub fn get(&self, operator: bool, name: &str) -> Option<&Policy> {
        self.kind(operator).iter().find(|p| p.name == name)
    }

    /// The policies in RabbitMQ's listing order: by priority, then name.
    pub fn listed(&self, operator: bool) -> Vec<&Policy> {
        let mut v: Vec<&Policy> = self.kind(operator).iter().collect();
        v.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        v
    }

    /// The (user, operator) policies that apply to a queue or exchange named `name`.
    pub fn applied(&self, name: &[u8], queue: bool) -> (Option<&Policy>, Option<&Policy>) {
        fn best<'p>(list: &'p [Policy], name: &[u8], queue: bool) -> Option<&'p Policy> {
            list.iter()
                .filter(|p| p.matches(name, queue))
                .max_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)))
        }
        let op = if queue {
            best(&self.operator, name, queue)
        } else {
            None
        };
        (best(&self.user, name, queue), op)
    }
}

/// RabbitMQ's `effective_policy_definition`: the user policy's settings with the
/// operator policy's folded in (the smaller number where both set a key).
pub fn effective_definition(user: Option<&Policy>, op: Option<&Policy>) -> Map<String, Value> {
    let mut out = user.map(|p| p.definition.clone()).unwrap_or_default();
    if let Some(op) = op {
        for (k, v) in &op.definition {
            let merged = match (out.get(k), MERGED_MIN.contains(&k.as_str())) {
                (Some(mine), true) => match (mine.as_f64(), v.as_f64()) {
                    (Some(a), Some(b)) if b < a => v.clone(),
                    (Some(_), Some(_)) => mine.clone(),
                    _ => v.clone(),
                },
                _ => v.clone(),
            };
            out.insert(k.clone(), merged);
        }
    }
    out
}

/// A queue's arguments with the applied policies folded in as RabbitMQ 3.10 resolves
/// each key (see the module header); borrowed as is when no policy applies.
pub fn queue_args<'a>(
    args: &'a FieldTable,
    user: Option<&Policy>,
    op: Option<&Policy>,
) -> Cow<'a, FieldTable> {
    if user.is_none() && op.is_none() {
        return Cow::Borrowed(args);
    }
    let def = effective_definition(user, op);
    let mut out = args.clone();
    for (key, arg) in [
        ("message-ttl", &b"x-message-ttl"[..]),
        ("expires", b"x-expires"),
        ("max-length", b"x-max-length"),
        ("max-length-bytes", b"x-max-length-bytes"),
        ("delivery-limit", b"x-delivery-limit"),
    ] {
        let Some(p) = def.get(key).and_then(int) else {
            continue;
        };
        let v = match args.get(arg).and_then(FieldValue::as_i64) {
            Some(a) => a.min(p),
            None => p,
        };
        out.insert(Bytes::from_static(arg), FieldValue::I64(v));
    }
    for (key, arg) in [
        ("dead-letter-exchange", &b"x-dead-letter-exchange"[..]),
        ("dead-letter-routing-key", b"x-dead-letter-routing-key"),
        ("overflow", b"x-overflow"),
    ] {
        if args.get(arg).is_some() {
            continue;
        }
        if let Some(Value::String(s)) = def.get(key) {
            out.insert(
                Bytes::from_static(arg),
                FieldValue::LongStr(Bytes::copy_from_slice(s.as_bytes())),
            );
        }
    }
    Cow::Owned(out)
}

/// An exchange's alternate exchange: its `alternate-exchange` argument, else the
/// applied user policy's.
pub fn alternate(args: &FieldTable, user: Option<&Policy>) -> Option<Bytes> {
    match args.get(b"alternate-exchange") {
        Some(FieldValue::LongStr(n)) => Some(n.clone()),
        Some(_) => None,
        None => match user.and_then(|p| p.definition.get("alternate-exchange")) {
            Some(Value::String(s)) => Some(Bytes::copy_from_slice(s.as_bytes())),
            _ => None,
        },
    }
}

// ----- the broker's side: storing policies and applying them ---------------------------

use super::{Broker, ExchangeId, QueueId, VhostId};

/// How many earlier message TTLs a queue remembers (see `Features::ttl_before`).
const TTL_HISTORY: usize = 16;

impl Broker {
    /// Sets (adds or replaces) a policy of vhost `vhost` and applies the vhost's
    /// policies again to its queues and exchanges. Returns None when the vhost does
    /// not exist, else whether the policy is new.
    pub fn set_policy(&mut self, vhost: VhostId, operator: bool, p: Policy) -> Option<bool> {
        let created = self.vhost_mut(vhost)?.policies.set(operator, p);
        self.meta_dirty = true;
        self.apply_policies(vhost);
        Some(created)
    }

    /// Removes a policy of vhost `vhost` and applies the rest again; false when there
    /// was no such policy.
    pub fn clear_policy(&mut self, vhost: VhostId, operator: bool, name: &str) -> bool {
        let cleared = self
            .vhost_mut(vhost)
            .is_some_and(|v| v.policies.clear(operator, name));
        if cleared {
            self.meta_dirty = true;
            self.apply_policies(vhost);
        }
        cleared
    }

    /// The (user, operator) policy that applies to queue `id`.
    pub fn queue_policies(&self, id: QueueId) -> (Option<&Policy>, Option<&Policy>) {
        let Some(q) = self.queue(id) else {
            return (None, None);
        };
        match self.vhost(q.vhost) {
            Some(v) => v.policies.applied(&q.name, true),
            None => (None, None),
        }
    }

    /// The policy that applies to exchange `id`.
    pub fn exchange_policy(&self, id: ExchangeId) -> Option<&Policy> {
        let x = self.exchange(id)?;
        self.vhost(x.vhost)?.policies.applied(&x.name, false).0
    }

    /// Applies the policies of `vhost` to every queue and exchange in it, at once: a
    /// lower TTL expires, a length limit drops heads, a dead-letter exchange and an
    /// alternate exchange take effect for what happens next.
    pub fn apply_policies(&mut self, vhost: VhostId) {
        let Some(v) = self.vhost(vhost) else { return };
        let queues: Vec<QueueId> = v.queues.values().copied().collect();
        let exchanges: Vec<ExchangeId> = v.exchanges.values().copied().collect();
        for id in exchanges {
            self.apply_exchange_policy(id);
        }
        for id in queues {
            self.apply_queue_policy(id);
        }
    }

    /// Sets exchange `id`'s alternate exchange from its argument and its policy.
    pub(super) fn apply_exchange_policy(&mut self, id: ExchangeId) {
        let Some(x) = self.exchange(id) else { return };
        let Some(v) = self.vhost(x.vhost) else { return };
        if v.policies.user.is_empty() && x.alternate.is_none() {
            return;
        }
        let user = v.policies.applied(&x.name, false).0;
        let ae = alternate(&x.arguments, user);
        if let Some(x) = self.exchange_mut(id) {
            x.alternate = ae;
        }
    }

    /// Re-reads queue `id`'s settings from its arguments and policies, keeping the
    /// state its features track (ready bytes, armed timers), then enforces them now as
    /// RabbitMQ does when a policy changes: a length limit drops (dead-letters) heads,
    /// and messages keep the TTL they arrived under (RabbitMQ fixes a message's expiry
    /// on arrival), so a changed TTL applies to what arrives from now on.
    fn apply_queue_policy(&mut self, id: QueueId) {
        let Some(q) = self.queue(id) else { return };
        let Some(v) = self.vhost(q.vhost) else { return };
        let (user, op) = v.policies.applied(&q.name, true);
        let new = super::queue::Features::from_args(&queue_args(&q.props.arguments, user, op));
        let now = self.now_ms();
        let Some(q) = self.queue_mut(id) else { return };
        let created = match (q.features.is_some(), new.is_some()) {
            (false, false) => return,
            (false, true) => {
                // Created with the ready bytes counted, then configured below.
                q.features_mut();
                true
            }
            (true, _) => false,
        };
        let new = new.unwrap_or_default();
        let Some(q) = self.queue_mut(id) else { return };
        let empty = q.is_empty();
        let Some(f) = q.features.as_mut() else { return };
        if f.ttl != new.ttl {
            if empty {
                f.ttl_before.clear();
            } else {
                // Bounded: a policy changed in a loop over a queue nobody drains keeps
                // the latest changes (an older message then takes the oldest TTL kept).
                if f.ttl_before.len() >= TTL_HISTORY {
                    f.ttl_before.remove(1);
                }
                f.ttl_before.push((now.saturating_add(1), f.ttl));
            }
        }
        let expires_changed = created || f.expires != new.expires;
        f.dlx = new.dlx;
        f.dlrk = new.dlrk;
        f.ttl = new.ttl;
        f.max_len = new.max_len;
        f.max_bytes = new.max_bytes;
        f.overflow = new.overflow;
        f.expires = new.expires;
        f.delivery_limit = new.delivery_limit;
        if created {
            self.featured += 1;
        }
        if expires_changed {
            self.touch_unused(id);
        }
        self.enforce_limit(id);
        self.expire_due(id, false);
        self.mark_dirty(id);
    }
}

/// The metadata records of a vhost's policies (vhost name `vhost`).
pub fn meta_records(vhost: &Bytes, ps: &Policies) -> Vec<crate::store::meta::MetaPolicy> {
    let mut out = Vec::new();
    for (operator, list) in [(false, &ps.user), (true, &ps.operator)] {
        for p in list {
            out.push(crate::store::meta::MetaPolicy {
                vhost: vhost.clone(),
                operator,
                name: Bytes::copy_from_slice(p.name.as_bytes()),
                pattern: Bytes::copy_from_slice(p.pattern.as_bytes()),
                apply_to: Bytes::from_static(p.apply_to.as_str().as_bytes()),
                priority: p.priority,
                definition: Bytes::from(Value::Object(p.definition.clone()).to_string()),
            });
        }
    }
    out
}

impl Broker {
    /// Puts back the policies of a metadata snapshot (recovery, before any queue or
    /// exchange). A record that no longer parses or validates is logged and skipped:
    /// the broker starts without it rather than not at all.
    pub(super) fn recover_policies(&mut self, records: &[crate::store::meta::MetaPolicy]) {
        for r in records {
            let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
            let (vhost, name) = (text(&r.vhost), text(&r.name));
            let def = match serde_json::from_slice::<Value>(&r.definition) {
                Ok(Value::Object(m)) => m,
                _ => {
                    log::error!("policy '{name}' in vhost '{vhost}': stored definition is not a JSON object; skipped");
                    continue;
                }
            };
            let apply_to = ApplyTo::parse(&text(&r.apply_to)).unwrap_or_default();
            match Policy::new(
                &name,
                &text(&r.pattern),
                apply_to,
                r.priority,
                def,
                r.operator,
            ) {
                Ok(p) => {
                    let id = self.add_vhost(&vhost);
                    if let Some(v) = self.vhost_mut(id) {
                        v.policies.set(r.operator, p);
                    }
                }
                Err(e) => log::error!("policy '{name}' in vhost '{vhost}': {e}; skipped"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn pol(name: &str, pattern: &str, prio: i64, d: Value, op: bool) -> Policy {
        Policy::new(name, pattern, ApplyTo::All, prio, def(d), op).expect("valid")
    }

    #[test]
    fn validation_texts_are_rabbitmqs() {
        let e = |d: Value, op: bool| validate_definition(&def(d), op).unwrap_err();
        assert_eq!(e(json!({}), false), "no policy provided");
        assert_eq!(
            e(json!({"message-ttl": -1}), false),
            "-1 is not a valid message TTL"
        );
        assert_eq!(
            e(json!({"message-ttl": "a"}), false),
            "<<\"a\">> is not a valid message TTL"
        );
        assert_eq!(
            e(json!({"message-ttl": -1, "expires": 0}), false),
            "0 is not a valid queue expiry"
        );
        assert_eq!(
            e(json!({"foo": 1, "bar": 2}), true),
            "[{<<\"bar\">>,2},{<<\"foo\">>,1}] are not recognised policy settings"
        );
        assert_eq!(
            e(json!({"overflow": "drop-head"}), true),
            "[{<<\"overflow\">>,<<\"drop-head\">>}] are not recognised policy settings"
        );
        assert!(validate_definition(&def(json!({"queue-mode": "lazy"})), false).is_ok());
    }

    #[test]
    fn highest_priority_then_greatest_name_wins() {
        let mut ps = Policies::default();
        ps.set(false, pol("b0", "^q", 0, json!({"message-ttl": 1}), false));
        ps.set(false, pol("c5", "^q", 0, json!({"message-ttl": 1}), false));
        ps.set(false, pol("a9", "q", 0, json!({"message-ttl": 1}), false));
        assert_eq!(ps.applied(b"queue", true).0.map(|p| &*p.name), Some("c5"));
        ps.set(false, pol("a9", "q", 1, json!({"message-ttl": 1}), false));
        assert_eq!(ps.applied(b"xq", true).0.map(|p| &*p.name), Some("a9"));
        assert!(ps.applied(b"zzz", true).0.is_none());
    }

    #[test]
    fn precedence_per_key() {
        let user = pol(
            "u",
            ".",
            0,
            json!({"message-ttl": 5000, "max-length": 10, "dead-letter-exchange": "p", "overflow": "reject-publish"}),
            false,
        );
        let op = pol(
            "o",
            ".",
            0,
            json!({"message-ttl": 7000, "expires": 9000}),
            true,
        );
        let mut args = FieldTable::new();
        args.insert(&b"x-max-length"[..], FieldValue::I32(3));
        args.insert(
            &b"x-dead-letter-exchange"[..],
            FieldValue::LongStr(Bytes::from_static(b"a")),
        );
        let out = queue_args(&args, Some(&user), Some(&op));
        assert_eq!(
            out.get(b"x-message-ttl").and_then(|v| v.as_i64()),
            Some(5000)
        );
        assert_eq!(out.get(b"x-expires").and_then(|v| v.as_i64()), Some(9000));
        assert_eq!(out.get(b"x-max-length").and_then(|v| v.as_i64()), Some(3));
        assert_eq!(
            out.get(b"x-dead-letter-exchange")
                .and_then(|v| v.as_bytes()),
            Some(&b"a"[..])
        );
        assert_eq!(
            out.get(b"x-overflow").and_then(|v| v.as_bytes()),
            Some(&b"reject-publish"[..])
        );
        let eff = effective_definition(Some(&user), Some(&op));
        assert_eq!(eff["message-ttl"], json!(5000));
        assert_eq!(eff["expires"], json!(9000));
    }
}
