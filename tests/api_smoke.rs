//! The management API answers on the port the broker announces, with Basic auth.
mod support;

use support::api::Api;
use support::Broker;

#[test]
fn overview_needs_credentials_and_answers_with_them() {
    let b = Broker::start();
    let api = Api::new(&b);
    let r = api.get("/api/overview");
    assert_eq!(r.status, 200, "{}", r.body);
    let o = r.json();
    assert!(o["object_totals"]["queues"].is_u64(), "{o}");
    assert!(o["rabbitmq_version"].is_string(), "{o}");
    let bad = api.as_user("guest", "wrong").get("/api/overview");
    assert_eq!(bad.status, 401);
    assert!(
        bad.header("www-authenticate")
            .is_some_and(|h| h.starts_with("Basic realm=")),
        "{:?}",
        bad.headers
    );
    assert_eq!(bad.json()["error"], "not_authorized");
}
