"""The data the README's examples use, seeded into an emulator so each example succeeds.

``python -m tim_async.testing`` seeds it unless given ``--no-examples``; a test can call
:func:`seed_examples` on its own :class:`~tim_async.testing.FakeTimServer`::

    async with FakeTimServer() as server:
        seed_examples(server)
        # tim-async ext get --group @TGS#1ABC --msg-seq 158  ... now succeeds against it
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .server import FakeTimServer

__all__ = [
    "API_C2C",
    "API_COUNTER_GROUP",
    "API_GROUP",
    "CLI_C2C",
    "CLI_GROUP",
    "seed_examples",
]

#: the group of the README's command-line examples, its messages 158 and 159
CLI_GROUP: Final = "@TGS#1ABC"
#: (from, to, msg keys) of the command-line examples' one-to-one messages
CLI_C2C: Final = ("alice", "bob", ("1847913567_1_1700000000", "1847913567_2_1700000000"))
#: the group message of the README's msg_ext examples (GroupId, MsgSeq)
API_GROUP: Final = ("@TGS#1YMVAB3IZ", 158)
#: (from, to, msg key) of the msg_ext one-to-one examples
API_C2C: Final = ("62768", "116400", "44739199_12_1665388280")
#: the group of the group_attr, group_counter and tim.call examples
API_COUNTER_GROUP: Final = "@TGS#aC5SZEAEF"


def seed_examples(server: FakeTimServer) -> list[str]:
    """Seed the README's example groups, messages, attributes and counters into ``server``;
    return one line per seeded object, for printing. Raises ValueError when one of the example
    ids exists already."""
    lines: list[str] = []

    # Command line: `ext get --group @TGS#1ABC --msg-seq 158` answers k1 at seq 1, latest 2.
    gid = server.create_group(CLI_GROUP, "Public", name="README example group")
    for seq in (158, 159):
        server.send_group_msg(gid, msg_seq=seq)
    server.put_group_extensions(gid, 158, {"k1": "v1", "k2": "v2"})
    server.delete_group_extensions(gid, 158, ["k2"])
    server.put_group_extensions(gid, 159, {"k1": "v1", "votes": "12"})
    server.set_group_attrs(gid, {"topic": "launch"})
    server.set_group_counters(gid, {"likes": 7, "views": 100})
    lines.append(
        f"group {gid} (Public): msg seqs 158, 159 with extensions; "
        "attribute topic; counters likes, views"
    )
    sender, receiver, keys = CLI_C2C
    for i, key in enumerate(keys, 1):
        server.send_c2c_msg(sender, receiver, msg_key=key)
        server.put_c2c_extensions(sender, receiver, key, {"reaction": f"+{i}"})
    lines.append(f"one-to-one {sender} -> {receiver}: msg keys {', '.join(keys)}")

    # API reference: msg_ext on @TGS#1YMVAB3IZ 158 (250 pairs, 50 seqs: paging and start_seq).
    api_gid, api_seq = API_GROUP
    server.create_group(api_gid, "Public", name="README msg_ext example")
    server.send_group_msg(api_gid, msg_seq=api_seq)
    for start in range(0, 250, 5):
        server.put_group_extensions(
            api_gid, api_seq, {f"key{i}": str(i) for i in range(start + 1, start + 6)}
        )
    lines.append(f"group {api_gid} (Public): msg seq {api_seq} with 250 extension pairs")
    sender, receiver, key = API_C2C
    server.send_c2c_msg(sender, receiver, msg_key=key)
    server.put_c2c_extensions(sender, receiver, key, {"k": "v"})
    lines.append(f"one-to-one {sender} -> {receiver}: msg key {key}")

    # API reference: group_attr / group_counter / tim.call("...get_group_info").
    server.create_group(API_COUNTER_GROUP, "Public", name="README attribute example")
    server.set_group_attrs(API_COUNTER_GROUP, {"attr_key1": "attr_val1"})
    server.set_group_counters(API_COUNTER_GROUP, {"like": 5})
    lines.append(f"group {API_COUNTER_GROUP} (Public): attribute attr_key1; counter like")
    return lines
