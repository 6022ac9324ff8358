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
            // Only what is marked open (`security: []`) is served without credentials.
            if op["security"] == serde_json::json!([]) {
                assert_eq!(path, "/admin/v1/openapi.json", "{method} {path} is open");
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

const INGEST_ROUTER: &str = include_str!("../src/ingest/mod.rs");
const INGEST_PROBLEMS: &str = include_str!("../src/ingest/problem.rs");
const INGEST_OPENAPI: &str = include_str!("../../../docs/ingest-api.openapi.json");

/// Every string literal of `source` starting with `prefix`.
fn literals<'a>(source: &'a str, prefix: &str) -> BTreeSet<&'a str> {
    source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with(prefix))
        .collect()
}

#[test]
fn the_ingest_openapi_document_lists_the_routed_path_and_every_problem_type() {
    let doc: serde_json::Value = serde_json::from_str(INGEST_OPENAPI).expect("valid JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // The router's code, not its unit tests' request URIs.
    let code = INGEST_ROUTER.split("#[cfg(test)]").next().unwrap();
    let routed: BTreeSet<&str> = literals(code, "/v1/devices/");
    assert_eq!(documented, routed);
    // Every problem type the server can answer with is documented, and nothing else.
    let problems: BTreeSet<&str> = literals(INGEST_PROBLEMS, "urn:wardgate:problem:");
    assert!(problems.len() >= 10, "{problems:?}");
    let responses = &doc["paths"]["/v1/devices/{id}/readings"]["post"]["responses"];
    let described: BTreeSet<&str> = responses
        .as_object()
        .unwrap()
        .values()
        .filter_map(|r| r["description"].as_str())
        .filter_map(|d| d.find(": ").map(|i| &d[..i]))
        .filter(|t| t.starts_with("urn:wardgate:problem:"))
        .collect();
    assert_eq!(described, problems);
    for r in INGEST_OPENAPI
        .split("\"$ref\": \"#/components/schemas/")
        .skip(1)
    {
        let name = r.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
}
