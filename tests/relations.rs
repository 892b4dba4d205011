//! Relations as clients read them: `/relations` in its three forms (paging both ways,
//! `recurse`), `/threads`, and the aggregations bundled into events in `/messages`, `/event`,
//! `/context` and sync.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, encode};
use serde_json::{Value, json};

struct Room<'a> {
    server: &'a TestServer,
    id: String,
    txn: std::cell::Cell<u32>,
}

impl Room<'_> {
    async fn send(&self, token: &str, event_type: &str, content: Value) -> String {
        self.txn.set(self.txn.get() + 1);
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/{event_type}/t{}",
            self.id,
            self.txn.get()
        );
        self.server.put(&path, token, content).await.assert_ok()["event_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn text(&self, token: &str, body: &str) -> String {
        self.send(
            token,
            "m.room.message",
            json!({"msgtype": "m.text", "body": body}),
        )
        .await
    }

    async fn related(&self, token: &str, target: &str, rel_type: &str, body: &str) -> String {
        let mut relation = json!({"rel_type": rel_type, "event_id": target});
        let mut content = json!({"msgtype": "m.text", "body": body});
        match rel_type {
            "m.replace" => {
                content["m.new_content"] = json!({"msgtype": "m.text", "body": body});
            }
            "m.thread" => {
                relation["is_falling_back"] = json!(true);
                relation["m.in_reply_to"] = json!({"event_id": target});
            }
            _ => {}
        }
        content["m.relates_to"] = relation;
        self.send(token, "m.room.message", content).await
    }

    async fn relations(&self, token: &str, rest: &str) -> Value {
        self.server
            .get(
                &format!("/_matrix/client/v1/rooms/{}/relations/{rest}", self.id),
                token,
            )
            .await
            .assert_ok()
    }

    /// Every page of a `/relations` query, `limit` at a time: the event ids in order.
    async fn all_pages(&self, token: &str, path: &str, query: &str, limit: u32) -> Vec<String> {
        let mut ids = Vec::new();
        let mut from = String::new();
        for _ in 0..20 {
            let page = self
                .relations(token, &format!("{path}?limit={limit}&{query}{from}"))
                .await;
            let chunk = page["chunk"].as_array().unwrap();
            assert!(chunk.len() <= limit as usize, "{page}");
            ids.extend(ids_of(chunk));
            match page["next_batch"].as_str() {
                Some(next) => from = format!("&from={next}"),
                None => return ids,
            }
        }
        panic!("paging did not end");
    }
}

fn ids_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| event["event_id"].as_str().unwrap().to_owned())
        .collect()
}

fn find<'a>(events: &'a Value, event_id: &str) -> &'a Value {
    events
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["event_id"] == event_id)
        .unwrap_or_else(|| panic!("{event_id} not in {events}"))
}

#[tokio::test]
async fn relations_threads_and_bundled_aggregations() {
    relations_scenario(TestServer::new().await).await;
}

#[tokio::test]
async fn relations_threads_and_bundled_aggregations_on_postgres() {
    let Some(server) = TestServer::postgres().await else {
        eprintln!("CAUSEWAY_TEST_POSTGRES_URL not set: PostgreSQL run skipped");
        return;
    };
    relations_scenario(server).await;
}

async fn relations_scenario(server: TestServer) {
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let room = Room {
        server: &server,
        id: server
            .create_room(&alice, json!({"preset": "public_chat"}))
            .await,
        txn: Default::default(),
    };
    server.join(&bob, &room.id).await;

    let root = room.text(&alice, "root").await;
    let edit1 = room
        .related(&alice, &root, "m.replace", "root, edited")
        .await;
    let reply1 = room.related(&bob, &root, "m.thread", "reply 1").await;
    let edit2 = room
        .related(&alice, &root, "m.replace", "root, edited again")
        .await;
    // Bob's edit of Alice's message is no edit of it.
    let forged = room.related(&bob, &root, "m.replace", "forged").await;
    let reply2 = room.related(&alice, &root, "m.thread", "reply 2").await;
    let reaction = room
        .send(
            &bob,
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}}),
        )
        .await;
    let reference = room.related(&bob, &root, "m.reference", "see above").await;
    let redacted_reply = room.related(&bob, &root, "m.thread", "oops").await;
    server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r1",
                room.id,
                encode(&redacted_reply)
            ),
            &bob,
            json!({}),
        )
        .await
        .assert_ok();
    // An edit of a reply relates to the root only through the reply.
    let reply1_edit = room
        .related(&bob, &reply1, "m.replace", "reply 1, edited")
        .await;
    // A second thread, more recent, that Alice has no part in.
    let other_root = room.text(&bob, "another topic").await;
    room.related(&bob, &other_root, "m.thread", "more").await;

    // All direct relations, newest first, two at a time.
    let direct = vec![
        reference.clone(),
        reaction.clone(),
        reply2.clone(),
        forged.clone(),
        edit2.clone(),
        reply1.clone(),
        edit1.clone(),
    ];
    let root_path = encode(&root);
    assert_eq!(room.all_pages(&alice, &root_path, "", 2).await, direct);
    // Forwards, oldest first.
    let mut forward = direct.clone();
    forward.reverse();
    assert_eq!(
        room.all_pages(&alice, &root_path, "dir=f", 3).await,
        forward
    );
    // By relation type, and by relation and event type.
    let threads = room
        .relations(&alice, &format!("{root_path}/m.thread"))
        .await;
    assert_eq!(
        ids_of(threads["chunk"].as_array().unwrap()),
        [reply2.clone(), reply1.clone()]
    );
    assert!(threads.get("recursion_depth").is_none());
    let reactions = room
        .relations(&alice, &format!("{root_path}/m.annotation/m.reaction"))
        .await;
    assert_eq!(
        ids_of(reactions["chunk"].as_array().unwrap()),
        [reaction.as_str()]
    );
    let none = room
        .relations(&alice, &format!("{root_path}/m.annotation/m.room.message"))
        .await;
    assert_eq!(none["chunk"], json!([]));
    // Recursing reaches the edit of a reply.
    let recursed = room
        .relations(&alice, &format!("{root_path}?recurse=true"))
        .await;
    assert_eq!(recursed["recursion_depth"], 3);
    let recursed = ids_of(recursed["chunk"].as_array().unwrap());
    assert_eq!(recursed[0], reply1_edit);
    assert_eq!(recursed[1..], direct[..]);
    let replaced = room
        .relations(&alice, &format!("{root_path}/m.replace?recurse=true"))
        .await;
    assert_eq!(
        ids_of(replaced["chunk"].as_array().unwrap()),
        [
            reply1_edit.clone(),
            forged.clone(),
            edit2.clone(),
            edit1.clone()
        ]
    );
    // Unknown events, events of other rooms, rooms one may not read.
    server
        .get(
            &format!("/_matrix/client/v1/rooms/{}/relations/%24nothing", room.id),
            &alice,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    let elsewhere = server.create_room(&alice, json!({})).await;
    server
        .get(
            &format!("/_matrix/client/v1/rooms/{elsewhere}/relations/{root_path}"),
            &alice,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    server
        .get(
            &format!("/_matrix/client/v1/rooms/{elsewhere}/relations/{root_path}"),
            &carol,
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .get(
            &format!(
                "/_matrix/client/v1/rooms/{}/relations/{root_path}?from=nonsense",
                room.id
            ),
            &alice,
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");

    // Bundled aggregations on the root wherever it is read.
    let check_root = |event: &Value, participated: bool| {
        let relations = &event["unsigned"]["m.relations"];
        assert_eq!(relations["m.replace"]["event_id"], edit2, "{event}");
        assert_eq!(
            relations["m.replace"]["content"]["m.new_content"]["body"],
            "root, edited again"
        );
        let thread = &relations["m.thread"];
        assert_eq!(thread["count"], 2, "{event}");
        assert_eq!(thread["latest_event"]["event_id"], reply2);
        assert_eq!(thread["current_user_participated"], participated);
        assert_eq!(
            relations["m.reference"]["chunk"],
            json!([{"event_id": reference}])
        );
        // Reactions are not bundled.
        assert!(relations.get("m.annotation").is_none());
        // The original content stays as it was sent.
        assert_eq!(event["content"]["body"], "root");
    };
    let messages = server.messages(&alice, &room.id).await;
    check_root(find(&messages["chunk"], &root), true);
    // A reply's own edit is bundled into it; the thread's latest reply carries its edit.
    assert_eq!(
        find(&messages["chunk"], &reply1)["unsigned"]["m.relations"]["m.replace"]["event_id"],
        reply1_edit
    );
    // Events without relations have no bundle.
    assert!(
        find(&messages["chunk"], &reply2)["unsigned"]
            .get("m.relations")
            .is_none()
    );
    let event = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/event/{root_path}", room.id),
            &alice,
        )
        .await
        .assert_ok();
    check_root(&event, true);
    let context = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/context/{root_path}?limit=2",
                room.id
            ),
            &alice,
        )
        .await
        .assert_ok();
    check_root(&context["event"], true);
    let sync = server.sync(&bob, "").await;
    let timeline = &sync["rooms"]["join"][&room.id]["timeline"]["events"];
    if timeline
        .as_array()
        .unwrap()
        .iter()
        .any(|event| event["event_id"] == root)
    {
        check_root(find(timeline, &root), true);
    }
    let filter = json!({"room": {"timeline": {"limit": 100}}}).to_string();
    let sync = server
        .sync(&bob, &format!("filter={}", common::query_encode(&filter)))
        .await;
    check_root(
        find(
            &sync["rooms"]["join"][&room.id]["timeline"]["events"],
            &root,
        ),
        true,
    );
    // Carol joins later: she has not taken part.
    server.join(&carol, &room.id).await;
    let messages = server.messages(&carol, &room.id).await;
    check_root(find(&messages["chunk"], &root), false);
    // A redacted root shows no aggregations.
    server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r2",
                room.id,
                encode(&other_root)
            ),
            &bob,
            json!({}),
        )
        .await
        .assert_ok();
    let messages = server.messages(&alice, &room.id).await;
    assert!(
        find(&messages["chunk"], &other_root)["unsigned"]
            .get("m.relations")
            .is_none()
    );

    // Threads by latest activity; Alice's own; paged one at a time.
    let threads_path = format!("/_matrix/client/v1/rooms/{}/threads", room.id);
    let all = server.get(&threads_path, &alice).await.assert_ok();
    assert_eq!(
        ids_of(all["chunk"].as_array().unwrap()),
        [other_root.clone(), root.clone()]
    );
    check_root(&all["chunk"][1], true);
    let first = server
        .get(&format!("{threads_path}?limit=1"), &alice)
        .await
        .assert_ok();
    assert_eq!(
        ids_of(first["chunk"].as_array().unwrap()),
        [other_root.as_str()]
    );
    let next = first["next_batch"].as_str().unwrap();
    let second = server
        .get(&format!("{threads_path}?limit=1&from={next}"), &alice)
        .await
        .assert_ok();
    assert_eq!(ids_of(second["chunk"].as_array().unwrap()), [root.as_str()]);
    let mine = server
        .get(&format!("{threads_path}?include=participated"), &alice)
        .await
        .assert_ok();
    assert_eq!(ids_of(mine["chunk"].as_array().unwrap()), [root.as_str()]);
    // A new reply brings a thread to the top.
    room.related(&alice, &root, "m.thread", "reply 3").await;
    let all = server.get(&threads_path, &bob).await.assert_ok();
    assert_eq!(
        ids_of(all["chunk"].as_array().unwrap()),
        [root.clone(), other_root.clone()]
    );
}
