//! The management API client: Basic auth, percent-encoded path segments, and the
//! mapping of transport failures to rabbitmqctl's exit codes. Everything warrenctl
//! knows about the broker comes through here.

use std::time::Duration;

use serde_json::Value;

use crate::Fail;

#[derive(Clone)]
pub struct Api {
    agent: ureq::Agent,
    /// The `--url` with no trailing slash; `/api/...` is appended to it, so a URL
    /// with a path prefix (a reverse proxy) works too.
    base: String,
    auth: String,
}

/// A status and its body, whatever the status: each command decides what a 404 or a
/// 400 means for it (rabbitmqctl reports them differently per command).
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    /// The body as JSON; a body that is not JSON is the broker's fault (70).
    pub fn json(&self) -> Result<Value, Fail> {
        serde_json::from_str(&self.body).map_err(|e| {
            Fail::internal(format!(
                "the management API answered {} with a body that is not JSON ({e})",
                self.status
            ))
        })
    }

    /// RabbitMQ's error bodies are `{"error": ..., "reason": ...}`: the reason is the
    /// part worth showing.
    pub fn reason(&self) -> String {
        match serde_json::from_str::<Value>(&self.body) {
            Ok(v) => match v.get("reason").or_else(|| v.get("error")) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => self.body.trim().to_string(),
            },
            Err(_) => self.body.trim().to_string(),
        }
    }
}

impl Api {
    pub fn new(url: &str, user: &str, password: &str, timeout: Duration) -> Result<Api, Fail> {
        let base = url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(Fail::usage(format!(
                "--url must be an http:// URL, got \"{url}\""
            )));
        }
        let agent = ureq::AgentBuilder::new()
            // A closed port answers at once; a black-holed one should not hang a script.
            .timeout_connect(Duration::from_secs(10).min(timeout))
            .timeout(timeout)
            .build();
        let auth = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
        Ok(Api { agent, base, auth })
    }

    /// `segs` are raw names (a vhost `/`, a queue `a b`): each is percent-encoded, so
    /// they can hold any character.
    pub fn path(segs: &[&str]) -> String {
        let mut p = String::new();
        for s in segs {
            p.push('/');
            p.push_str(&pct(s));
        }
        p
    }

    /// The same client logged in as someone else (`authenticate_user`).
    pub fn with_credentials(&self, user: &str, password: &str) -> Api {
        Api {
            auth: format!("Basic {}", base64(format!("{user}:{password}").as_bytes())),
            ..self.clone()
        }
    }

    /// A call whose 401 is an answer like any other, for a command that asks whether
    /// credentials are accepted.
    pub fn call_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, Fail> {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .agent
            .request(method, &url)
            .set("Authorization", &self.auth);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let res = match body {
            Some(b) => req.set("Content-Type", "application/json").send_bytes(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => return Err(self.transport(t)),
        };
        let status = resp.status();
        let body = resp.into_string().map_err(|e| {
            Fail::unreachable(format!(
                "lost the management API at {} while reading its answer: {e}",
                self.base
            ))
        })?;
        Ok(Reply { status, body })
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, Fail> {
        let Reply { status, body } = self.call_raw(method, path, headers, body)?;
        if status == 401 {
            return Err(Fail::failed(format!(
                "the management API at {} refused the credentials (401 {})",
                self.base,
                Reply {
                    status,
                    body: body.clone()
                }
                .reason()
            )));
        }
        Ok(Reply { status, body })
    }

    pub fn get(&self, segs: &[&str]) -> Result<Reply, Fail> {
        self.call("GET", &Api::path(segs), &[], None)
    }

    /// A GET that must succeed with JSON: anything but 200 is a failed command.
    pub fn get_ok(&self, segs: &[&str]) -> Result<Value, Fail> {
        let r = self.get(segs)?;
        if r.status != 200 {
            return Err(Fail::failed(format!(
                "GET {} answered {}: {}",
                Api::path(segs),
                r.status,
                r.reason()
            )));
        }
        r.json()
    }

    fn transport(&self, t: ureq::Transport) -> Fail {
        use ureq::ErrorKind as K;
        // ureq's message is generic ("Connect error"); the io error under it says what
        // happened ("Connection refused").
        let mut parts: Vec<String> = t.message().map(str::to_string).into_iter().collect();
        if let Some(src) = std::error::Error::source(&t) {
            parts.push(src.to_string());
        }
        if parts.is_empty() {
            parts.push(t.kind().to_string());
        }
        let detail = parts.join(": ");
        match t.kind() {
            K::InvalidUrl | K::UnknownScheme => {
                Fail::usage(format!("bad --url \"{}\": {detail}", self.base))
            }
            K::Io if detail.contains("timed out") => Fail {
                // rabbitmqctl's code for an operation that timed out (EX_TEMPFAIL).
                code: 75,
                msg: format!(
                    "Error: the management API at {} did not answer in time: {detail}",
                    self.base
                ),
            },
            _ => Fail::unreachable(format!(
                "Error: unable to reach the management API at {}: {detail}",
                self.base
            )),
        }
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters, as a path segment needs.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding, for the one Basic auth header we send.
fn base64(input: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes() {
        assert_eq!(base64(b"guest:guest"), "Z3Vlc3Q6Z3Vlc3Q=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(pct("/"), "%2F");
        assert_eq!(pct("a b.c"), "a%20b.c");
        assert_eq!(pct("é"), "%C3%A9");
    }
}
