//! A headless Chromium for the dashboard tests, driven through chromedriver's W3C WebDriver
//! HTTP protocol with `ureq` and `serde_json` (no WebDriver crate: the dozen commands we use are
//! plain JSON over HTTP).
//!
//! Owns the chromedriver process it starts (on a free port), the browser session and its
//! throw-away profile directory; `Drop` ends the session (which quits Chromium) and then the
//! chromedriver process. Every wait polls the page with a deadline: nothing sleeps and hopes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key under which WebDriver wraps an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Panics (so that the test fails, not skips) when the browser is not installed.
pub fn require_installed() {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard tests need Debian's chromium and chromium-driver ({} missing): run the \
         install step of .ci/run (`apt-get install -y chromium chromium-driver`) and try again",
        missing.join(", ")
    );
}

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
    /// chromedriver's own output, for failure messages.
    driver_log: std::sync::Arc<std::sync::Mutex<String>>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a fresh profile.
    pub fn start() -> Browser {
        require_installed();
        let port = free_port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chromedriver");
        let driver_log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        for pipe in [
            driver
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            driver
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = driver_log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        let base = format!("http://127.0.0.1:{port}");
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let ready = wait_until(Duration::from_secs(20), || {
            agent
                .get(&format!("{base}/status"))
                .call()
                .ok()
                .and_then(|r| r.into_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true))
        });
        if !ready {
            let _ = driver.kill();
            let _ = driver.wait();
            panic!(
                "chromedriver did not become ready on port {port}; its output:\n{}",
                driver_log.lock().map(|l| l.clone()).unwrap_or_default()
            );
        }
        let profile = tempfile::TempDir::new().expect("profile dir");
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                            "--no-first-run", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync",
                            "--disable-dev-shm-usage", "--window-size=1400,1000",
                            format!("--user-data-dir={}", profile.path().display()),
                        ]
                    }
                }
            }
        });
        let resp = match agent.post(&format!("{base}/session")).send_json(caps) {
            Ok(r) => r.into_json::<Value>().expect("new session JSON"),
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!(
                    "chromedriver could not start chromium: {}\nchromedriver output:\n{}",
                    describe(e),
                    driver_log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
        };
        let session = resp["value"]["sessionId"]
            .as_str()
            .expect("sessionId in the new session answer")
            .to_string();
        Browser {
            driver,
            base,
            session,
            agent,
            _profile: profile,
            driver_log,
        }
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/session/{}{}", self.base, self.session, tail)
    }

    /// One WebDriver command; panics with WebDriver's error text on failure.
    fn cmd(&self, method: &str, tail: &str, body: Option<Value>) -> Value {
        match self.try_cmd(method, tail, body) {
            Ok(v) => v,
            Err(e) => panic!("WebDriver {method} {tail}: {e}"),
        }
    }

    fn try_cmd(&self, method: &str, tail: &str, body: Option<Value>) -> Result<Value, String> {
        let req = self.agent.request(method, &self.url(tail));
        let res = match body {
            Some(b) => req.send_json(b),
            None if method == "POST" => req.send_json(json!({})),
            None => req.call(),
        };
        match res {
            Ok(r) => r
                .into_json::<Value>()
                .map(|v| v["value"].clone())
                .map_err(|e| format!("bad JSON from chromedriver: {e}")),
            Err(e) => Err(describe(e)),
        }
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        self.try_cmd(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        )
        .ok()
        .and_then(|v| v[ELEMENT_KEY].as_str().map(str::to_string))
    }

    /// Waits (up to `d`) for an element matching `css` and returns it.
    pub fn wait_find(&self, css: &str, d: Duration) -> String {
        let mut found = None;
        if wait_until(d, || {
            found = self.find(css);
            found.is_some()
        }) {
            return found.unwrap_or_default();
        }
        panic!(
            "no element matches {css:?} after {d:?}; page: {}",
            self.page_summary()
        );
    }

    /// Clicks the element matching `css` (looked up afresh: refreshes replace rows).
    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let el = self.wait_find(css, Duration::from_secs(10));
            match self.try_cmd("POST", &format!("/element/{el}/click"), None) {
                Ok(_) => return,
                // The 5 s refresh can replace the element between finding and clicking it, and a
                // re-laid-out page can briefly cover it.
                Err(e)
                    if Instant::now() < deadline
                        && (e.contains("stale") || e.contains("intercepted")) =>
                {
                    // Poll again shortly (bounded by `deadline`), as every wait here does.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(e) => panic!("click {css:?}: {e}"),
            }
        }
    }

    /// Replaces the text of the input matching `css` with `text`, as typed keys.
    pub fn type_into(&self, css: &str, text: &str) {
        let el = self.wait_find(css, Duration::from_secs(10));
        self.cmd("POST", &format!("/element/{el}/clear"), None);
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// `getAttribute(attr)` of the first element matching `css` (None: no element or attribute).
    pub fn attr(&self, css: &str, attr: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]); \
             return e ? e.getAttribute(arguments[1]) : null;",
            json!([css, attr]),
        )
        .as_str()
        .map(str::to_string)
    }

    /// The text of the first element matching `css` (None: no such element).
    pub fn text(&self, css: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .as_str()
        .map(str::to_string)
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> usize {
        self.js(
            "return document.querySelectorAll(arguments[0]).length;",
            json!([css]),
        )
        .as_u64()
        .unwrap_or(0) as usize
    }

    /// Polls `f` until it is true; panics with `what` and the page's state otherwise.
    pub fn wait(&self, what: &str, d: Duration, mut f: impl FnMut(&Browser) -> bool) {
        if !wait_until(d, || f(self)) {
            panic!(
                "timed out after {d:?} waiting for {what}; page: {}",
                self.page_summary()
            );
        }
    }

    /// Where the page is and what it says, for failure messages.
    pub fn page_summary(&self) -> String {
        self.try_cmd(
            "POST",
            "/execute/sync",
            Some(json!({
                "script": "return location.href + '\\n' + \
                    (document.getElementById('status') || {}).textContent + '\\n' + \
                    (document.body ? document.body.innerText.slice(0, 3000) : '');",
                "args": []
            })),
        )
        .map(|v| v.as_str().unwrap_or("").to_string())
        .unwrap_or_else(|e| format!("(page not readable: {e})"))
    }

    /// Saves a PNG of the viewport under `target/screenshots/NAME.png`; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = decode_base64(b64.as_str().unwrap_or("")).expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("create target/screenshots");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session quits Chromium; then chromedriver, the process we started.
        let _ = self
            .agent
            .delete(&format!("{}/session/{}", self.base, self.session))
            .timeout(Duration::from_secs(10))
            .call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Polls `f` every 20 ms until it is true or `d` has passed (this module stands alone, so it
/// does not borrow `support::wait_until`).
fn wait_until(d: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + d;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn describe(e: ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, r) => {
            let body = r.into_string().unwrap_or_default();
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            match (v["value"]["error"].as_str(), v["value"]["message"].as_str()) {
                (Some(err), Some(msg)) => format!("{code} {err}: {msg}"),
                _ => format!("{code}: {body}"),
            }
        }
        other => other.to_string(),
    }
}

/// Standard base64 (RFC 4648, with padding) as WebDriver's screenshot command sends it.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..4 - pad]);
    }
    Some(out)
}
