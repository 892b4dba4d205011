//! Push rules through every path form of the specification: the whole set with and without
//! the trailing slash, a scope, a rule, its `enabled` and `actions`; rule ids with any
//! characters; `before` and `after`; and the errors the specification names.

#![allow(clippy::unwrap_used)]

mod common;

use common::TestServer;
use http::Method;
use serde_json::{Value, json};

const BASE: &str = "/_matrix/client/v3/pushrules";

fn rule_ids(rules: &Value) -> Vec<String> {
    rules
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| rule["rule_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn push_rule_paths_ids_and_errors() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    // A first sync carries the rules, though Alice never changed them.
    let sync = server.sync(&alice, "").await;
    let pushed = sync["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["type"] == "m.push_rules")
        .unwrap_or_else(|| panic!("no m.push_rules in {sync}"));
    assert!(
        rule_ids(&pushed["content"]["global"]["override"]).contains(&".m.rule.master".to_owned())
    );
    assert_eq!(pushed["content"]["global"]["content"], json!([]));
    // The whole set and the global scope, with and without the trailing slash.
    for path in [format!("{BASE}/"), BASE.to_owned()] {
        let all = server.get(&path, &alice).await.assert_ok();
        assert!(
            rule_ids(&all["global"]["override"]).contains(&".m.rule.master".to_owned()),
            "{path}: {all}"
        );
    }
    for path in [format!("{BASE}/global/"), format!("{BASE}/global")] {
        let global = server.get(&path, &alice).await.assert_ok();
        assert!(global["override"].is_array(), "{path}: {global}");
        assert!(global["content"].is_array(), "{path}: {global}");
    }
    // A rule id with spaces, a hash, a question mark, a percent sign and non-ASCII characters,
    // percent-encoded (slashes and backslashes are the characters the specification forbids).
    let odd = "my rule #1? 100% ✓";
    let encoded = "my%20rule%20%231%3F%20100%25%20%E2%9C%93";
    for forbidden in ["a%2Fb", "a%5Cb"] {
        server
            .put(
                &format!("{BASE}/global/override/{forbidden}"),
                &alice,
                json!({"actions": [], "conditions": []}),
            )
            .await
            .assert_error(400, "M_INVALID_PARAM");
    }
    let rule_path = format!("{BASE}/global/override/{encoded}");
    server
        .put(
            &rule_path,
            &alice,
            json!({"actions": ["notify"], "conditions": [{"kind": "event_match", "key": "content.body", "pattern": "cake"}]}),
        )
        .await
        .assert_ok();
    let rule = server.get(&rule_path, &alice).await.assert_ok();
    assert_eq!(rule["rule_id"], odd);
    assert_eq!(rule["enabled"], true);
    assert_eq!(rule["default"], false);
    assert_eq!(rule["actions"], json!(["notify"]));
    // Enabled and actions.
    server
        .put(
            &format!("{rule_path}/enabled"),
            &alice,
            json!({"enabled": false}),
        )
        .await
        .assert_ok();
    assert_eq!(
        server
            .get(&format!("{rule_path}/enabled"), &alice)
            .await
            .assert_ok(),
        json!({"enabled": false})
    );
    server
        .put(
            &format!("{rule_path}/actions"),
            &alice,
            json!({"actions": ["notify", {"set_tweak": "sound", "value": "default"}]}),
        )
        .await
        .assert_ok();
    assert_eq!(
        server
            .get(&format!("{rule_path}/actions"), &alice)
            .await
            .assert_ok()["actions"][1]["value"],
        "default"
    );
    // Order: before and after other user rules.
    let second = format!("{BASE}/global/override/second");
    server
        .put(
            &format!("{second}?before={encoded}"),
            &alice,
            json!({"actions": [], "conditions": []}),
        )
        .await
        .assert_ok();
    let third = format!("{BASE}/global/override/third");
    server
        .put(
            &format!("{third}?after={encoded}"),
            &alice,
            json!({"actions": [], "conditions": []}),
        )
        .await
        .assert_ok();
    let overrides = rule_ids(
        &server
            .get(&format!("{BASE}/global/"), &alice)
            .await
            .assert_ok()["override"],
    );
    let user_rules: Vec<&str> = overrides
        .iter()
        .map(String::as_str)
        .filter(|id| !id.starts_with('.'))
        .collect();
    assert_eq!(user_rules, ["second", odd, "third"]);
    // Content rules need a pattern; sender and room rules are named by the user or room.
    server
        .put(
            &format!("{BASE}/global/content/cakes"),
            &alice,
            json!({"actions": ["notify"]}),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    server
        .put(
            &format!("{BASE}/global/content/cakes"),
            &alice,
            json!({"actions": ["notify"], "pattern": "cake*"}),
        )
        .await
        .assert_ok();
    server
        .put(
            &format!("{BASE}/global/sender/%40bob%3Atest.example"),
            &alice,
            json!({"actions": []}),
        )
        .await
        .assert_ok();
    let global = server
        .get(&format!("{BASE}/global/"), &alice)
        .await
        .assert_ok();
    assert!(rule_ids(&global["content"]).contains(&"cakes".to_owned()));
    assert_eq!(rule_ids(&global["sender"]), ["@bob:test.example"]);

    // Errors.
    server
        .get(&format!("{BASE}/global/override/nothing"), &alice)
        .await
        .assert_error(404, "M_NOT_FOUND");
    server
        .get(&format!("{BASE}/global/override/nothing/enabled"), &alice)
        .await
        .assert_error(404, "M_NOT_FOUND");
    server
        .put(
            &format!("{BASE}/global/override/nothing/actions"),
            &alice,
            json!({"actions": []}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    server
        .call(
            Method::DELETE,
            &format!("{BASE}/global/override/nothing"),
            Some(&alice),
            None,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    // `before` naming no rule.
    server
        .put(
            &format!("{BASE}/global/override/fourth?before=nothing"),
            &alice,
            json!({"actions": [], "conditions": []}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    // Server-default rules cannot be added or removed, only enabled, disabled and given
    // actions.
    server
        .put(
            &format!("{BASE}/global/override/.m.rule.mine"),
            &alice,
            json!({"actions": [], "conditions": []}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server
        .call(
            Method::DELETE,
            &format!("{BASE}/global/override/.m.rule.master"),
            Some(&alice),
            None,
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server
        .put(
            &format!("{BASE}/global/underride/.m.rule.message/actions"),
            &alice,
            json!({"actions": []}),
        )
        .await
        .assert_ok();
    // A scope that does not exist is no endpoint; a kind that does not exist is a bad parameter.
    server
        .get(&format!("{BASE}/device/override/x"), &alice)
        .await
        .assert_error(404, "M_UNRECOGNIZED");
    server
        .get(&format!("{BASE}/global/sideways/x"), &alice)
        .await
        .assert_error(400, "M_INVALID_PARAM");
    // Bad bodies.
    server
        .put(
            &format!("{BASE}/global/override/fifth"),
            &alice,
            json!({"conditions": []}),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    server
        .put(
            &format!("{rule_path}/enabled"),
            &alice,
            json!({"enabled": "yes"}),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    // Deleting a user rule.
    server
        .call(Method::DELETE, &rule_path, Some(&alice), None)
        .await
        .assert_ok();
    server
        .get(&rule_path, &alice)
        .await
        .assert_error(404, "M_NOT_FOUND");
}
