//! OpenID tokens: a user proves who they are to a third party, which asks the user's server
//! (`/_matrix/federation/v1/openid/userinfo`, unsigned) whose the token is.

#![allow(clippy::unwrap_used)]

mod common;

use causeway_matrix::federation::client::FederationError;
use common::federation::*;
use http::Method;
use serde_json::json;

#[tokio::test]
async fn an_openid_token_tells_a_third_party_who_its_user_is() {
    let (a, b, _, _, _dir) = two_servers().await;
    let (alice_id, alice) = a.register("alice").await;
    let (bob_id, _) = a.register("bob").await;
    let granted = a
        .post(
            &format!("/_matrix/client/v3/user/{alice_id}/openid/request_token"),
            &alice,
            json!({}),
        )
        .await
        .assert_ok();
    assert_eq!(granted["token_type"], "Bearer");
    assert_eq!(granted["matrix_server_name"], "a.test");
    assert_eq!(granted["expires_in"], 3600);
    let token = granted["access_token"].as_str().unwrap();

    // The third party asks a.test over its federation listener, without signing.
    let userinfo = |token: String| {
        let b = &b;
        async move {
            b.services
                .federation
                .request(
                    &server("a.test"),
                    Method::GET,
                    &format!("/_matrix/federation/v1/openid/userinfo?access_token={token}"),
                    None,
                    false,
                )
                .await
        }
    };
    let info = userinfo(token.to_owned()).await.unwrap();
    assert_eq!(info, json!({"sub": alice_id}));
    // Not a token it gave, or no token: 401 M_UNKNOWN_TOKEN.
    for bad in ["made-up".to_owned(), String::new()] {
        match userinfo(bad).await {
            Err(FederationError::Status(_, 401, body)) => {
                assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
            }
            other => panic!("{other:?}"),
        }
    }
    // An access token is not an OpenID token.
    assert!(userinfo(alice.clone()).await.is_err());
    // Only for oneself, and only when logged in.
    let refused = a
        .post(
            &format!("/_matrix/client/v3/user/{bob_id}/openid/request_token"),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["errcode"], "M_FORBIDDEN");
    let anonymous = a
        .call(
            Method::POST,
            &format!("/_matrix/client/v3/user/{alice_id}/openid/request_token"),
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["errcode"], "M_MISSING_TOKEN");
}
