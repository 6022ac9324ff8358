//! `docs/admin-api.openapi.json` describes exactly the routes the admin API serves: every path
//! the router registers is in the document and every path in the document is routed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

const ROUTER: &str = include_str!("../src/admin/mod.rs");
const OPENAPI: &str = include_str!("../../../docs/admin-api.openapi.json");

fn routed() -> BTreeSet<String> {
    // Every "/admin/v1/..." string literal in the router's source.
    ROUTER
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("/admin/v1/"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_openapi_document_lists_every_routed_path_and_nothing_else() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routed = routed();
    assert!(routed.len() >= 12, "{routed:?}");
    assert_eq!(documented, routed);
    // Every operation answers 401 without credentials, and every $ref resolves.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            assert!(op["responses"]["401"].is_object(), "{method} {path}");
        }
    }
    for r in OPENAPI.split("\"$ref\": \"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
}
