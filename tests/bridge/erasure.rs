//! An administrator erases an XMPP user's ghost.

use std::time::Duration;

use serde_json::json;

use crate::world::*;

#[tokio::test]
async fn an_erased_xmpp_user_leaves_nothing_behind() {
    let mut world = world().await;
    let token = world.token().await;
    let erin = "@_xmpp_erin=40later.test:gw.test";
    // Alice writes to Erin, whose server cannot be reached: the message waits in the outbox.
    let room = world
        .server
        .create_room(&token, json!({"is_direct": true, "invite": [erin]}))
        .await;
    world.wait_member(&token, &room, erin, "join").await;
    let sent = world
        .server
        .send_text(&token, &room, "e1", "Are you there?")
        .await
        .assert_ok();
    let event = sent["event_id"].as_str().unwrap().to_owned();
    let store = &world.server.services.store;
    let bridged = world._xmpp.bridge.store();
    for _ in 0..200 {
        if bridged
            .outbox_entry(&event)
            .await
            .unwrap()
            .is_some_and(|entry| entry.attempts > 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(bridged.outbox_entry(&event).await.unwrap().is_some());

    // The administrator erases Erin by her address (the admin API on her ghost's id).
    world
        .server
        .services
        .set_admin_secret("admin-secret".into());
    world
        .server
        .post(
            &format!("/_synapse/admin/v1/deactivate/{erin}"),
            "admin-secret",
            json!({"erase": true}),
        )
        .await
        .assert_ok();
    assert!(
        bridged.outbox_entry(&event).await.unwrap().is_none(),
        "dropped"
    );
    let ghost = store.user(erin).await.unwrap().unwrap();
    assert!(ghost.erased && ghost.displayname.is_none());
    // Her ghost left the chat.
    world.wait_member(&token, &room, erin, "leave").await;
    // Bob, on a server that can be reached, erased too: what he writes is not bridged again.
    world
        .peer
        .send(chat("bob@prosody.test/a", "b1", "<body>hello</body>"));
    world.invited_room(&token).await;
    world
        .server
        .post(
            &format!("/_synapse/admin/v1/deactivate/{BOB}"),
            "admin-secret",
            json!({"erase": true}),
        )
        .await
        .assert_ok();
    world
        .peer
        .send(chat("bob@prosody.test/a", "b2", "<body>again</body>"));
    let (id, condition, _) = error_of(&world.next_message().await);
    assert_eq!((id.as_str(), condition.as_str()), ("b2", "forbidden"));
}
