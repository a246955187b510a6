"""The demo's walk through every endpoint method, checked against the emulator."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO

from tim_async.models import CounterMode, ExtensionList

if TYPE_CHECKING:
    from tim_async.client import TimClient
    from tim_async.testing import FakeTimServer


@dataclasses.dataclass
class _Checks:
    """The demo's checks, printed as they pass or fail."""

    out: TextIO
    passed: int = 0
    failed: list[str] = dataclasses.field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
        mark = "ok  " if ok else "FAIL"
        line = f"  [{mark}] {name}"
        if detail:
            line += f"  ({detail})"
        self.out.write(line + "\n")
        self.out.flush()
        return ok


def _same_as_emulator(
    extensions: ExtensionList, visible: Mapping[str, tuple[str, int]], latest: int, clear: int
) -> bool:
    pulled = {item.key: (item.value, item.seq) for item in extensions.items}
    return (
        pulled == dict(visible)
        and len(pulled) == len(extensions.items)
        and extensions.latest_seq == latest
        and extensions.clear_seq == clear
    )


def _group_matches(server: FakeTimServer, gid: str, seq: int, extensions: ExtensionList) -> bool:
    meta = server.group_extension_meta(gid, seq)
    return _same_as_emulator(
        extensions, server.group_extensions(gid, seq), meta.latest_seq, meta.clear_seq
    )


async def _demo_endpoints(tim: TimClient, server: FakeTimServer, checks: _Checks) -> None:
    """Drive every endpoint method once (and ``tim.call``), checking against the emulator."""
    from tim_async.errors import TimNotFoundError

    gid = server.create_group("@TGS#DEMOSHOWCASE")
    big = server.send_group_msg(gid)
    server.put_group_extensions(gid, big, {f"key{i:03d}": f"value {i}" for i in range(260)})
    alice, bob = "alice", "bob"
    c2c = server.send_c2c_msg(alice, bob)
    server.put_c2c_extensions(alice, bob, c2c, {f"emoji{i:03d}": str(i) for i in range(230)})
    server.set_group_attrs(gid, {"topic": "release party", "owner": alice})
    server.set_group_counters(gid, {"likes": 10, "views": 1000})

    out = checks.out
    out.write("message extensions (openim_msg_ext_http_svc)\n")
    results = await tim.msg_ext.group_set_key_values(
        gid, big, {"reaction:thumbsup": "alice,bob", "pinned": "1"}
    )
    checks.check(
        "msg_ext.group_set_key_values (set 2 keys)",
        all(r.ok for r in results)
        and server.group_extensions(gid, big).get("pinned", ("", 0))[0] == "1",
    )
    await tim.msg_ext.group_set_key_values(gid, big, ["key000", "key001"], operation="delete")
    checks.check(
        "msg_ext.group_set_key_values (delete 2 keys)",
        "key000" not in server.group_extensions(gid, big),
    )
    pages = [page async for page in tim.msg_ext.iter_group_key_values(gid, big)]
    merged = ExtensionList.from_pages(pages)
    checks.check(
        "msg_ext.iter_group_key_values",
        len(pages) >= 2 and _group_matches(server, gid, big, merged),
        f"{len(pages)} pages, {len(merged)} keys",
    )
    whole = await tim.msg_ext.group_get_key_values(gid, big)
    checks.check(
        "msg_ext.group_get_key_values",
        _group_matches(server, gid, big, whole),
        f"{len(whole)} keys, latest_seq {whole.latest_seq}",
    )
    results = await tim.msg_ext.set_key_values(bob, c2c, {"read": "yes"}, from_account=alice)
    checks.check(
        "msg_ext.set_key_values",
        all(r.ok for r in results) and server.c2c_extensions(alice, bob, c2c)["read"][0] == "yes",
    )
    c2c_pages = [p async for p in tim.msg_ext.iter_key_values(bob, c2c, from_account=alice)]
    c2c_merged = ExtensionList.from_pages(c2c_pages)
    meta = server.c2c_extension_meta(alice, bob, c2c)
    checks.check(
        "msg_ext.iter_key_values",
        len(c2c_pages) >= 2
        and _same_as_emulator(
            c2c_merged, server.c2c_extensions(alice, bob, c2c), meta.latest_seq, meta.clear_seq
        ),
        f"{len(c2c_pages)} pages, {len(c2c_merged)} keys",
    )
    await tim.msg_ext.set_key_values(bob, c2c, None, from_account=alice, operation="clear")
    cleared = await tim.msg_ext.get_key_values(bob, c2c, from_account=alice)
    meta = server.c2c_extension_meta(alice, bob, c2c)
    checks.check(
        "msg_ext.get_key_values (after a clear)",
        len(cleared) == 0 and cleared.clear_seq == meta.clear_seq > 0,
        f"clear_seq {cleared.clear_seq}",
    )
    try:
        await tim.msg_ext.group_get_key_values(gid, big + 1000)
        missing_ok = False
    except TimNotFoundError as exc:
        missing_ok = exc.code == 23004
    checks.check("missing message raises TimNotFoundError 23004", missing_ok)

    out.write("group attributes\n")
    attrs = await tim.group_attr.get_group_attr(gid)
    checks.check("group_attr.get_group_attr", attrs == server.group_attrs(gid), f"{attrs}")
    await tim.group_attr.modify_group_attr(gid, {"topic": "after party", "lang": "en"})
    checks.check(
        "group_attr.modify_group_attr",
        server.group_attrs(gid) == {"topic": "after party", "owner": alice, "lang": "en"},
    )
    await tim.group_attr.set_group_attr(gid, {"topic": "archive", "lang": "en"})
    checks.check(
        "group_attr.set_group_attr", server.group_attrs(gid) == {"topic": "archive", "lang": "en"}
    )
    await tim.group_attr.delete_group_attr(gid, ["lang"])
    checks.check("group_attr.delete_group_attr", server.group_attrs(gid) == {"topic": "archive"})
    await tim.group_attr.clear_group_attr(gid)
    after = await tim.group_attr.get_group_attr(gid)
    checks.check("group_attr.clear_group_attr", after == {} == server.group_attrs(gid))

    out.write("group counters\n")
    counters = await tim.group_counter.get_group_counter(gid)
    checks.check(
        "group_counter.get_group_counter", counters == server.group_counters(gid), f"{counters}"
    )
    latest = await tim.group_counter.update_group_counter(gid, {"likes": 5}, mode="Increase")
    checks.check(
        "group_counter.update_group_counter (Increase)",
        latest == {"likes": 15} and server.group_counters(gid)["likes"] == 15,
    )
    latest = await tim.group_counter.update_group_counter(
        gid, {"views": 1}, mode=CounterMode.DECREASE
    )
    checks.check("group_counter.update_group_counter (Decrease)", latest == {"views": 999})
    latest = await tim.group_counter.update_group_counter(gid, {"shares": 3})
    checks.check(
        "group_counter.update_group_counter (Set)", server.group_counters(gid)["shares"] == 3
    )
    await tim.group_counter.delete_group_counter(gid, ["views"])
    counters = await tim.group_counter.get_group_counter(gid, ["likes", "shares"])
    checks.check(
        "group_counter.delete_group_counter",
        "views" not in server.group_counters(gid) and counters == {"likes": 15, "shares": 3},
    )

    out.write("any REST command\n")
    raw = await tim.call(
        "openim_msg_ext_http_svc/group_get_key_values", {"GroupId": gid, "MsgSeq": big}
    )
    checks.check(
        "tim.call (raw first page)",
        raw.get("CompleteFlag") == 0 and len(raw.get("ExtensionList", [])) == server.page_size,
        f"{len(raw.get('ExtensionList', []))} pairs, CompleteFlag {raw.get('CompleteFlag')}",
    )
