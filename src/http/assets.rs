//! The web dashboard's static files (issue 10), embedded in the binary with `include_bytes!`.
//!
//! Owns the table from URL path to (content type, bytes). The HTTP router hands every non-`/api`
//! GET here; a path that is not in the table answers `None` (the router's 404). Nothing is read
//! from the disk at run time, so no request path — `..`, `%2e%2e`, absolute paths — can reach a
//! file: the only files that exist are the ones compiled in.

/// The dashboard's files: exact path -> (content type, contents).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("static/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/app.js"),
    ),
    (
        "/app.css",
        "text/css; charset=utf-8",
        include_bytes!("static/app.css"),
    ),
];

/// The embedded file served at `path` (the raw request path, query already split off), with its
/// content type; `/` is the dashboard's page. `None` for anything else.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    // A query string is not part of the file's name; tolerate a router that leaves it on.
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let path = if path == "/" { "/index.html" } else { path };
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, ctype, body)| (*ctype, *body))
}

#[cfg(test)]
mod tests {
    use super::asset;

    #[test]
    fn root_and_index_are_the_page() {
        let (ctype, body) = asset("/").expect("root");
        assert!(ctype.starts_with("text/html"));
        assert_eq!(Some((ctype, body)), asset("/index.html"));
        assert!(asset("/app.js").is_some_and(|(t, _)| t.starts_with("text/javascript")));
        assert!(asset("/app.css").is_some_and(|(t, _)| t.starts_with("text/css")));
        assert!(asset("/app.js?v=1").is_some());
    }

    #[test]
    fn nothing_else_is_served() {
        for p in [
            "",
            "index.html",
            "/static/app.js",
            "/../Cargo.toml",
            "/..%2fCargo.toml",
            "/%2e%2e/%2e%2e/etc/passwd",
            "//etc/passwd",
            "/app.js/",
            "/APP.JS",
            "/src/http/static/app.js",
        ] {
            assert!(asset(p).is_none(), "{p:?} must not be served");
        }
    }
}
