//! rabbitmqctl's two output formats for lists: tab-separated rows (a header row unless
//! `--no-table-headers`, none at all for an empty list) and `--formatter json` (one
//! object per line, columns in the order asked for, `[`/`,`/`]` leading each line).
//! Values are rendered the way rabbitmqctl renders the Erlang terms behind them.

use serde_json::{Map, Value};

/// How a cell's JSON value turns into rabbitmqctl's text.
pub fn cell(col: &str, v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) if col == "tags" => tags_text(&split_tags(s)),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // User tags are atoms: `[administrator, monitoring]`, no quotes.
        Value::Array(a) if col == "tags" => tags_text(
            &a.iter()
                .map(|t| t.as_str().map_or_else(|| t.to_string(), str::to_string))
                .collect::<Vec<_>>(),
        ),
        Value::Array(a) => format!("[{}]", a.iter().map(erl_term).collect::<Vec<_>>().join(",")),
        // A vhost's nodes and their states are atoms: `[{rabbit@vm, running}]`.
        Value::Object(m) if col == "cluster_state" => format!(
            "[{}]",
            m.iter()
                .map(|(k, v)| format!("{{{k}, {}}}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        // Argument tables: `[{"x-max-length",10},{"x-queue-type","classic"}]`, `[]` empty.
        Value::Object(m) => erl_table(m),
    }
}

/// How a cell's JSON value appears under `--formatter json`: argument tables become
/// rabbitmqctl's `[[key, type, value], ...]` triples; tags a list.
pub fn json_cell(col: &str, v: &Value) -> Value {
    match v {
        Value::Object(m) => typed_table(m),
        Value::String(s) if col == "tags" => {
            Value::Array(split_tags(s).into_iter().map(Value::String).collect())
        }
        other => other.clone(),
    }
}

fn split_tags(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn tags_text(tags: &[String]) -> String {
    format!("[{}]", tags.join(", "))
}

fn erl_table(m: &Map<String, Value>) -> String {
    let entries: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{{\"{}\",{}}}", k, erl_term(v)))
        .collect();
    format!("[{}]", entries.join(","))
}

fn erl_term(v: &Value) -> String {
    match v {
        Value::Null => "undefined".to_string(),
        Value::String(s) => format!("\"{s}\""),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(erl_term).collect::<Vec<_>>().join(",")),
        Value::Object(m) => erl_table(m),
    }
}

/// AMQP field-table types as rabbitmqctl names them in JSON output.
fn typed_table(m: &Map<String, Value>) -> Value {
    Value::Array(
        m.iter()
            .map(|(k, v)| {
                let (ty, val) = match v {
                    Value::Null => ("void", Value::Null),
                    Value::Bool(_) => ("bool", v.clone()),
                    Value::Number(n) if n.is_f64() => ("double", v.clone()),
                    Value::Number(_) => ("long", v.clone()),
                    Value::String(_) => ("longstr", v.clone()),
                    Value::Array(_) => ("array", v.clone()),
                    Value::Object(inner) => ("table", typed_table(inner)),
                };
                Value::Array(vec![
                    Value::String(k.clone()),
                    Value::String(ty.into()),
                    val,
                ])
            })
            .collect(),
    )
}

/// Walks `a/b` paths into nested objects; a missing field is null (an empty cell).
pub fn field<'a>(obj: &'a Value, path: &str) -> &'a Value {
    let mut cur = obj;
    for part in path.split('/') {
        cur = match cur.get(part) {
            Some(v) => v,
            None => return &Value::Null,
        };
    }
    cur
}

/// Writes a list in the chosen format. `rows` hold one JSON value per column.
pub fn print_rows(cols: &[String], rows: &[Vec<Value>], json: bool, headers: bool) -> String {
    let mut out = String::new();
    if json {
        out.push_str("[\n");
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Built by hand so the keys keep the order the columns were asked in
            // (serde_json's Map sorts them).
            let fields: Vec<String> = cols
                .iter()
                .zip(row)
                .map(|(c, v)| format!("{}:{}", Value::String(c.clone()), json_cell(c, v)))
                .collect();
            out.push_str(&format!("{{{}}}\n", fields.join(",")));
        }
        out.push_str("]\n");
        return out;
    }
    if rows.is_empty() {
        return out;
    }
    if headers {
        out.push_str(&cols.join("\t"));
        out.push('\n');
    }
    for row in rows {
        let cells: Vec<String> = cols.iter().zip(row).map(|(c, v)| cell(c, v)).collect();
        out.push_str(&cells.join("\t"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_like_rabbitmqctl() {
        let args = json!({"x-max-length": 10, "x-queue-type": "classic"});
        assert_eq!(
            cell("arguments", &args),
            r#"[{"x-max-length",10},{"x-queue-type","classic"}]"#
        );
        assert_eq!(cell("arguments", &json!({})), "[]");
        assert_eq!(cell("tags", &json!(["administrator"])), "[administrator]");
        assert_eq!(cell("tags", &json!("a,b")), "[a, b]");
        assert_eq!(
            cell("cluster_state", &json!({"rabbit@vm": "running"})),
            "[{rabbit@vm, running}]"
        );
        assert_eq!(cell("durable", &json!(true)), "true");
        assert_eq!(
            json_cell("arguments", &args),
            json!([
                ["x-max-length", "long", 10],
                ["x-queue-type", "longstr", "classic"]
            ])
        );
        let cols = vec!["name".to_string(), "messages".to_string()];
        let rows = vec![vec![json!("a"), json!(1)], vec![json!("b"), json!(0)]];
        assert_eq!(
            print_rows(&cols, &rows, true, true),
            "[\n{\"name\":\"a\",\"messages\":1}\n,{\"name\":\"b\",\"messages\":0}\n]\n"
        );
        assert_eq!(
            print_rows(&cols, &rows, false, true),
            "name\tmessages\na\t1\nb\t0\n"
        );
        assert_eq!(print_rows(&cols, &[], false, true), "");
    }
}
