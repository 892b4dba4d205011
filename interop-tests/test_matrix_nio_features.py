"""Interop test: what matrix-nio exercises of the client API beyond the basics.

Push rules (nio's set_pushrule, enable_pushrule, set_pushrule_actions, and the rules it reads
from sync's account data, present from the first sync); relations as nio pages them
(room_get_event_relations by type, room_get_threads) and the aggregations bundled into events
nio reads (room_get_event, room_context, room_messages); lazy-loaded members with a stored
and an inline filter; a device deleted through nio's
user-interactive delete_devices reaching the other user's sync as a device-list change.

Run: python interop-tests/test_matrix_nio_features.py --causeway target/debug/causeway
"""

from __future__ import annotations

import time
from typing import Any, Callable

from nio import (
    AsyncClient,
    AsyncClientConfig,
    DeleteDevicesAuthResponse,
    DeleteDevicesResponse,
    EnablePushRuleResponse,
    LoginResponse,
    PushRulesEvent,
    RegisterResponse,
    RoomContextResponse,
    RoomCreateResponse,
    RoomGetEventResponse,
    RoomMessagesResponse,
    RoomSendResponse,
    SetPushRuleActionsResponse,
    SetPushRuleResponse,
    SyncResponse,
)
from nio.api import PushRuleKind, RelationshipType
from nio.events.account_data import PushEventMatch, PushNotify, PushSetTweak

import harness

PASSWORD = "a long and careful passphrase"


def new_client(server: harness.ServerProcess) -> tuple[AsyncClient, harness.HttpRecorder]:
    config = AsyncClientConfig(max_limit_exceeded=0, max_timeouts=2, request_timeout=60)
    client = AsyncClient(server.base_url, "", config=config)
    return client, harness.HttpRecorder(client)


class FeaturesTest:
    def __init__(self, server: harness.ServerProcess) -> None:
        self.server = server
        self.hs = server.server_name
        self.c = harness.Checks("test_matrix_nio_features")
        self.alice, self.alice_http = new_client(server)
        self.bob, self.bob_http = new_client(server)
        self.clients = [self.alice, self.bob]
        self.room_id = ""

    def ok(self, resp: Any, cls: type, what: str, client: AsyncClient) -> None:
        http = self.alice_http if client is self.alice else self.bob_http
        self.c.require(
            isinstance(resp, cls),
            what,
            f"nio returned {type(resp).__name__}: {getattr(resp, 'message', '')} "
            f"{getattr(resp, 'status_code', '')}\n{http.of(resp)}",
        )

    async def sync_until(
        self, client: AsyncClient, since: str | None, done: Callable[[SyncResponse], bool],
        timeout: float = 15.0,
    ) -> tuple[SyncResponse | None, str | None]:
        deadline = time.monotonic() + timeout
        token = since
        while time.monotonic() < deadline:
            resp = await client.sync(timeout=1000, since=token)
            self.ok(resp, SyncResponse, "sync answers", client)
            token = resp.next_batch
            if done(resp):
                return resp, token
        return None, token

    # -- steps ------------------------------------------------------------------------------
    async def register(self) -> None:
        for client, name in ((self.alice, "alice"), (self.bob, "bob")):
            resp = await client.register(name, PASSWORD, device_name=f"{name}'s nio")
            self.ok(resp, RegisterResponse, f"{name} registers through nio", client)

    async def push_rules(self) -> None:
        c = self.c
        first = await self.alice.sync(timeout=0, full_state=True)
        self.ok(first, SyncResponse, "alice's first sync", self.alice)
        rules = [e for e in first.account_data_events if isinstance(e, PushRulesEvent)]
        c.require(len(rules) == 1, "the first sync carries the push rules (m.push_rules)",
                  f"account data: {first.account_data_events}")
        master = [r for r in rules[0].global_rules.override if r.id == ".m.rule.master"]
        c.check(len(master) == 1, "nio reads the server-default rules from it")

        resp = await self.alice.set_pushrule(
            "global", PushRuleKind.override, "cake-alert",
            actions=[PushNotify()],
            conditions=[PushEventMatch("content.body", "*cake*")],
        )
        self.ok(resp, SetPushRuleResponse, "nio sets an override rule", self.alice)
        resp = await self.alice.set_pushrule_actions(
            "global", PushRuleKind.override, "cake-alert",
            [PushNotify(), PushSetTweak("sound", "default")],
        )
        self.ok(resp, SetPushRuleActionsResponse, "nio sets the rule's actions", self.alice)
        resp = await self.alice.enable_pushrule("global", PushRuleKind.override, "cake-alert", False)
        self.ok(resp, EnablePushRuleResponse, "nio disables the rule", self.alice)

        def has_rule(resp: SyncResponse) -> bool:
            for event in resp.account_data_events:
                if isinstance(event, PushRulesEvent):
                    for rule in event.global_rules.override:
                        if rule.id == "cake-alert" and not rule.enabled and len(rule.actions) == 2:
                            return True
            return False

        seen, _ = await self.sync_until(self.alice, first.next_batch, has_rule)
        c.check(seen is not None,
                "the changed rule (disabled, two actions) reaches nio through sync's m.push_rules")

    async def relations(self) -> None:
        c = self.c
        resp = await self.alice.room_create(name="threads", invite=[f"@bob:{self.hs}"])
        self.ok(resp, RoomCreateResponse, "alice creates a room and invites bob", self.alice)
        self.room_id = resp.room_id
        await self.bob.join(self.room_id)

        async def send(client: AsyncClient, content: dict[str, Any]) -> str:
            resp = await client.room_send(self.room_id, "m.room.message", content)
            self.ok(resp, RoomSendResponse, "a message is sent", client)
            return resp.event_id

        root = await send(self.alice, {"msgtype": "m.text", "body": "plans for friday"})
        edit = await send(self.alice, {
            "msgtype": "m.text", "body": "* plans for saturday",
            "m.new_content": {"msgtype": "m.text", "body": "plans for saturday"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": root},
        })
        replies = []
        for text in ("count me in", "me too"):
            replies.append(await send(self.bob, {
                "msgtype": "m.text", "body": text,
                "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": True,
                                 "m.in_reply_to": {"event_id": root}},
            }))

        related = [e.event_id async for e in
                   self.bob.room_get_event_relations(self.room_id, root, limit=1)]
        c.equal(related, [replies[1], replies[0], edit],
                "room_get_event_relations pages every relation, newest first, one at a time")
        threaded = [e.event_id async for e in self.bob.room_get_event_relations(
            self.room_id, root, rel_type=RelationshipType.thread)]
        c.equal(threaded, [replies[1], replies[0]], "relations by type: the thread's replies")
        threads = [e.event_id async for e in self.bob.room_get_threads(self.room_id)]
        c.equal(threads, [root], "room_get_threads lists the thread root")

        def check_bundle(source: dict[str, Any], where: str) -> None:
            relations = source.get("unsigned", {}).get("m.relations", {})
            c.equal(relations.get("m.replace", {}).get("event_id"), edit,
                    f"{where}: the latest edit is bundled")
            thread = relations.get("m.thread", {})
            c.equal(thread.get("count"), 2, f"{where}: the thread summary counts the replies")
            c.equal(thread.get("latest_event", {}).get("event_id"), replies[1],
                    f"{where}: the thread summary names the latest reply")
            c.equal(thread.get("current_user_participated"), True,
                    f"{where}: bob took part in the thread")

        event = await self.bob.room_get_event(self.room_id, root)
        self.ok(event, RoomGetEventResponse, "room_get_event reads the root", self.bob)
        check_bundle(event.event.source, "room_get_event")
        context = await self.bob.room_context(self.room_id, root, limit=2)
        self.ok(context, RoomContextResponse, "room_context reads around the root", self.bob)
        check_bundle(context.event.source, "room_context")
        messages = await self.bob.room_messages(self.room_id, start="", limit=20)
        self.ok(messages, RoomMessagesResponse, "room_messages reads the history", self.bob)
        roots = [e for e in messages.chunk if e.event_id == root]
        c.require(len(roots) == 1, "room_messages has the root")
        check_bundle(roots[0].source, "room_messages")

    async def lazy_members(self) -> None:
        c = self.c
        # A third member who never speaks: a lazy-loading sync leaves her member event out.
        carol, _ = new_client(self.server)
        self.clients.append(carol)
        resp = await carol.register("carol", PASSWORD)
        self.ok(resp, RegisterResponse, "carol registers", carol)
        invite = await self.alice.room_invite(self.room_id, f"@carol:{self.hs}")
        c.check(not hasattr(invite, "status_code") or invite.status_code is None,
                "alice invites carol", str(invite))
        await carol.join(self.room_id)
        # Her join falls out of a five-event timeline.
        for i in range(5):
            sent = await self.alice.room_send(self.room_id, "m.room.message",
                                              {"msgtype": "m.text", "body": f"news {i}"})
            self.ok(sent, RoomSendResponse, "alice writes", self.alice)
        resp = await self.bob.upload_filter(
            room={"state": {"lazy_load_members": True}, "timeline": {"limit": 5}})
        c.require(hasattr(resp, "filter_id"), "nio uploads a lazy-loading filter", str(resp))
        sync = await self.bob.sync(timeout=0, sync_filter=resp.filter_id, full_state=True)
        self.ok(sync, SyncResponse, "bob syncs with the filter", self.bob)
        room = sync.rooms.join.get(self.room_id)
        c.require(room is not None, "the room is in bob's sync")
        senders = {e.sender for e in room.timeline.events}
        members = {e.state_key for e in room.state if getattr(e, "state_key", None) and
                   e.source.get("type") == "m.room.member"}
        c.equal(senders, {f"@alice:{self.hs}"}, "the timeline is alice's five messages")
        c.check(f"@carol:{self.hs}" not in members,
                "carol, who sent nothing in the timeline, is not among the members sent",
                f"members {members}, senders {senders}")
        c.check(f"@alice:{self.hs}" in members, "alice, who did, is", f"members {members}")
        c.check(members <= senders | {f"@bob:{self.hs}"},
                "only the timeline's senders and bob himself are sent", f"members {members}")
        # nio continues from its last token unless told otherwise: start over.
        self.bob.next_batch = None
        inline = await self.bob.sync(
            timeout=0, full_state=True,
            sync_filter={"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 5}}})
        self.ok(inline, SyncResponse, "bob syncs with the same filter inline", self.bob)
        inline_room = inline.rooms.join.get(self.room_id)
        c.require(inline_room is not None, "the room is in the inline-filtered sync")
        c.equal(len(inline_room.timeline.events), len(room.timeline.events),
                "the inline filter limits the timeline as the stored one does")

    async def device_deletion(self) -> None:
        c = self.c
        first = await self.bob.sync(timeout=0)
        self.ok(first, SyncResponse, "bob syncs", self.bob)
        second, second_http = new_client(self.server)
        self.clients.append(second)
        second.user = f"@alice:{self.hs}"
        resp = await second.login(PASSWORD, device_name="alice's second")
        self.ok(resp, LoginResponse, "alice logs in a second device", self.alice)
        doomed = resp.device_id
        seen, token = await self.sync_until(
            self.bob, first.next_batch,
            lambda r: f"@alice:{self.hs}" in r.device_list.changed)
        c.check(seen is not None, "bob learns of alice's new device (device_lists.changed)")

        resp = await self.alice.delete_devices([doomed])
        self.ok(resp, DeleteDevicesAuthResponse, "deleting a device asks for authentication",
                self.alice)
        auth = {"type": "m.login.password", "session": resp.session,
                "identifier": {"type": "m.id.user", "user": f"@alice:{self.hs}"},
                "password": PASSWORD}
        resp = await self.alice.delete_devices([doomed], auth)
        self.ok(resp, DeleteDevicesResponse, "nio deletes the device with the password", self.alice)
        seen, _ = await self.sync_until(
            self.bob, token, lambda r: f"@alice:{self.hs}" in r.device_list.changed)
        c.check(seen is not None, "bob learns of the deletion (device_lists.changed)")

    async def run(self) -> int:
        c = self.c
        try:
            await c.step("register", self.register)
            await c.step("push rules", self.push_rules, needs=("register",))
            await c.step("relations and threads", self.relations, needs=("register",))
            await c.step("lazy-loaded members", self.lazy_members,
                         needs=("relations and threads",))
            await c.step("device deletion reaches others", self.device_deletion,
                         needs=("relations and threads",))
        finally:
            for client in self.clients:
                await client.close()
        return c.summary()


async def main() -> int:
    args = harness.test_argparser(__doc__.splitlines()[0]).parse_args()
    server = harness.server_from_args(args)
    with server:
        server.start()
        print(f"{server.kind} ready at {server.base_url} (work dir {server.workdir})")
        code = await FeaturesTest(server).run()
        if code != 0:
            print(server.log_tail(30))
            raise SystemExit(code)
        return code


if __name__ == "__main__":
    harness.run_async_test(main)
