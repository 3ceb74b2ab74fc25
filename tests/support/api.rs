//! A small client for the management HTTP API (Warren's, or RabbitMQ's when
//! `WARREN_TEST_PORT` points the suite at it): status, headers and body of every answer,
//! 4xx and 5xx included.

use serde_json::Value;
use std::time::Duration;

use super::Broker;

pub struct Api {
    pub base: String,
    pub user: String,
    pub pass: String,
    agent: ureq::Agent,
}

/// One answer.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// A header by name, case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Api {
    /// guest/guest on the broker's management port.
    pub fn new(b: &Broker) -> Api {
        Api::at(&b.http_url(), "guest", "guest")
    }

    pub fn at(base: &str, user: &str, pass: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            user: user.to_owned(),
            pass: pass.to_owned(),
            // A fresh connection per request: RabbitMQ's HTTP server closes an idle or
            // long-used keep-alive connection on its own, and a PUT or POST sent on a
            // pooled connection it has just closed fails with "Unexpected EOF" (ureq
            // retries only idempotent reads). Keep-alive itself is tested in http_hostile.
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .max_idle_connections(0)
                .build(),
        }
    }

    /// The same server as another user.
    pub fn as_user(&self, user: &str, pass: &str) -> Api {
        Api::at(&self.base, user, pass)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, None, &[])
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, None, &[])
    }

    pub fn put(&self, path: &str, body: &Value) -> Resp {
        self.request("PUT", path, Some(&body.to_string()), &[])
    }

    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.request("POST", path, Some(&body.to_string()), &[])
    }

    /// Any request; `body` is sent as `application/json`. `path` starts with `/`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let auth = format!(
            "Basic {}",
            base64(format!("{}:{}", self.user, self.pass).as_bytes())
        );
        let mut r = self
            .agent
            .request(method, &format!("{}{}", self.base, path))
            .set("authorization", &auth);
        for (n, v) in headers {
            r = r.set(n, v);
        }
        let result = match body {
            Some(b) => r.set("content-type", "application/json").send_string(b),
            None => r.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_owned())))
            .collect();
        let body = resp.into_string().unwrap_or_default();
        Resp {
            status,
            headers,
            body,
        }
    }
}

/// Standard base64 with padding (for Basic auth).
pub fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (c as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                T[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// A path segment encoded as the API wants it (`/` is `%2F`).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}
