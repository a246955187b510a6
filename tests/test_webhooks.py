"""tim_async.webhooks: verification (Sign, age, app) and parsing of the documented samples."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tim_async.errors import TimError, TimWebhookError
from tim_async.models import ExtensionItem
from tim_async.webhooks import (
    C2CMsgExtensionEvent,
    ExtensionOperation,
    GroupAttrChangedEvent,
    GroupAttrOperation,
    GroupMsgExtensionEvent,
    UnknownWebhookEvent,
    WebhookBodyError,
    WebhookVerificationError,
    dedupe_key,
    parse_webhook,
    sign,
    verify_webhook,
)

APP = 1400000000
TOKEN = "xxxxyyyy"
TIME = 1669872112
# The vector of Tencent's "Webhook Overview" (spec section 9).
DOCUMENTED_SIGN = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"

# The three documented samples, verbatim (spec section 9).
C2C_SAMPLE = (
    '{"CallbackCommand": "C2C.CallbackAfterC2CMsgExtension","From_Account":"user1",'
    '"To_Account":"user2","MsgKey":"93847636_1287657_1764688415","OperateType":1,'
    '"ExtensionList":[{"Key":"k1","Value":"v1","Seq":1},{"Key":"k2","Value":"v2","Seq":1},'
    '{"Key":"k3","Value":"v3","Seq":1}],"Seq":1,"EventTime":1764688540182}'
)
GROUP_SAMPLE = (
    '{"CallbackCommand": "Group.CallbackAfterGroupMsgExtension","GroupId":"test","MsgSeq":10,'
    '"OperateType":1,"ExtensionList":[{"Key":"key2","Value":"value2","Seq":56},'
    '{"Key":"key3","Value":"12122","Seq":56}],"Seq":56,"EventTime":1764688294360}'
)
ATTR_SAMPLE = (
    '{"CallbackCommand": "Group.CallbackAfterGroupAttrChanged","GroupId": "@TGS#2J4SZEAEL",'
    '"Type": "Public","Operator_Account": "leckie","OptionType":"set","GroupAttr": '
    '[{"key": "key1","value": "value1"},{"key": "key2","value": "values"}],'
    '"EventTime":"1670574414123"}'
)
C2C = "C2C.CallbackAfterC2CMsgExtension"
GROUP = "Group.CallbackAfterGroupMsgExtension"
ATTR = "Group.CallbackAfterGroupAttrChanged"


def signed_query(
    token: str = TOKEN, request_time: int = TIME, app: int | str = APP, **extra: str
) -> dict[str, str]:
    query = {
        "SdkAppid": str(app),
        "CallbackCommand": GROUP,
        "contenttype": "json",
        "ClientIP": "127.0.0.1",
        "OptPlatform": "RESTAPI",
        "Sign": sign(token, request_time),
        "RequestTime": str(request_time),
    }
    query.update(extra)
    return query


def refused(query: dict[str, str], **kwargs: Any) -> WebhookVerificationError:
    kwargs.setdefault("sdkappid", APP)
    kwargs.setdefault("token", TOKEN)
    kwargs.setdefault("now", TIME)
    with pytest.raises(TimWebhookError) as info:
        verify_webhook(query, **kwargs)
    assert isinstance(info.value, WebhookVerificationError)
    return info.value


# --------------------------------------------------------------------------- Sign


def test_documented_sign_vector() -> None:
    assert sign("xxxxyyyy", "1669872112") == DOCUMENTED_SIGN
    assert sign("xxxxyyyy", 1669872112) == DOCUMENTED_SIGN


def test_documented_request_verifies() -> None:
    query = signed_query()
    assert query["Sign"] == DOCUMENTED_SIGN
    verify_webhook(query, sdkappid=APP, token=TOKEN, now=TIME)
    verify_webhook(query, sdkappid=APP, token=TOKEN, now=TIME + 60)  # exactly max_age: accepted
    verify_webhook(query, sdkappid=APP, token=TOKEN, now=TIME - 60)
    # A sign sent in upper-case hex is the same digest.
    verify_webhook({**query, "Sign": DOCUMENTED_SIGN.upper()}, sdkappid=APP, token=TOKEN, now=TIME)


def test_error_is_a_tim_error_and_value_error() -> None:
    err = refused(signed_query(token="other-token"))
    assert isinstance(err, TimError) and isinstance(err, ValueError)


# --------------------------------------------------------------------------- replay


def test_too_old_is_refused() -> None:
    err = refused(signed_query(), now=TIME + 61)
    assert err.field == "RequestTime" and "old" in str(err)


def test_from_the_future_is_refused() -> None:
    err = refused(signed_query(), now=TIME - 61)
    assert err.field == "RequestTime" and "future" in str(err)


def test_max_age_is_a_parameter() -> None:
    verify_webhook(signed_query(), sdkappid=APP, token=TOKEN, now=TIME + 250, max_age=300)
    assert refused(signed_query(), now=TIME + 11, max_age=10).field == "RequestTime"


def test_now_defaults_to_the_current_time() -> None:
    # TIME is years in the past: with the real clock the documented request is a replay.
    with pytest.raises(TimWebhookError, match="RequestTime"):
        verify_webhook(signed_query(), sdkappid=APP, token=TOKEN)


# --------------------------------------------------------------------------- tampering


def test_sign_for_another_time_is_refused() -> None:
    # The RequestTime was changed after signing (to pass the age check): Sign no longer matches.
    query = signed_query()
    query["RequestTime"] = str(TIME + 30)
    err = refused(query, now=TIME + 30)
    assert err.field == "Sign" and "does not match" in str(err)


def test_one_flipped_digit_is_refused() -> None:
    query = signed_query()
    last = query["Sign"][-1]
    query["Sign"] = query["Sign"][:-1] + ("0" if last != "0" else "1")
    assert refused(query).field == "Sign"


def test_wrong_token_is_refused() -> None:
    assert refused(signed_query(token="xxxxyyyz")).field == "Sign"


@pytest.mark.parametrize("bad", ["abc", "z" * 64, DOCUMENTED_SIGN + "0", " " + DOCUMENTED_SIGN[1:]])
def test_malformed_sign_is_refused(bad: str) -> None:
    err = refused(signed_query(Sign=bad))
    assert err.field == "Sign"


@pytest.mark.parametrize("bad", ["-1", "1669872112.5", "soon", "1" * 13, "١٦٦٩٨٧٢١١٢"])
def test_malformed_request_time_is_refused(bad: str) -> None:
    assert refused(signed_query(RequestTime=bad)).field == "RequestTime"


# --------------------------------------------------------------------------- app and presence


def test_wrong_app_is_refused() -> None:
    err = refused(signed_query(app=1400000001))
    assert err.field == "SdkAppid" and err.wrong_app
    assert "1400000001" in str(err)


def test_app_is_checked_without_a_token() -> None:
    verify_webhook({"SdkAppid": str(APP)}, sdkappid=APP, token=None)
    err = refused({"SdkAppid": "1400000001"}, token=None)
    assert err.wrong_app


@pytest.mark.parametrize("name", ["SdkAppid", "Sign", "RequestTime"])
def test_missing_parameter_is_refused(name: str) -> None:
    query = signed_query()
    del query[name]
    err = refused(query)
    assert err.field == name and "missing" in str(err)
    assert err.wrong_app is (name == "SdkAppid")


def test_sdkappid_spelling_is_exact() -> None:
    query = signed_query()
    query["SdkAppID"] = query.pop("SdkAppid")
    assert refused(query).field == "SdkAppid"


def test_without_token_sign_is_not_required() -> None:
    query = signed_query()
    del query["Sign"], query["RequestTime"]
    verify_webhook(query, sdkappid=APP, token=None)


def test_bad_arguments_are_refused_before_checking() -> None:
    with pytest.raises(TimError, match="token"):
        verify_webhook(signed_query(), sdkappid=APP, token="", now=TIME)
    with pytest.raises(TimError, match="max_age"):
        verify_webhook(signed_query(), sdkappid=APP, token=TOKEN, now=TIME, max_age=0)


def test_token_never_in_messages_or_reprs() -> None:
    token = "S3cr3t-T0ken/ForWebhooks!"
    errors = [
        refused(signed_query(token="another one"), token=token),
        refused(signed_query(token=token), token=token, now=TIME + 999),
        refused(signed_query(token=token), token=token, now=TIME - 999),
        refused(signed_query(token=token, Sign="q"), token=token),
        refused(signed_query(token=token, app=1), token=token),
    ]
    texts = [str(e) for e in errors] + [repr(e) for e in errors]
    pieces = {token[i : i + 8] for i in range(len(token) - 7)}
    for text in texts:
        assert not any(piece in text for piece in pieces), text


# --------------------------------------------------------------------------- samples


def test_c2c_sample_parses_to_documented_values() -> None:
    event = parse_webhook(C2C, C2C_SAMPLE.encode())
    assert event == C2CMsgExtensionEvent(
        from_account="user1",
        to_account="user2",
        msg_key="93847636_1287657_1764688415",
        operation=ExtensionOperation.SET,
        items=(
            ExtensionItem("k1", "v1", 1),
            ExtensionItem("k2", "v2", 1),
            ExtensionItem("k3", "v3", 1),
        ),
        seq=1,
        event_time=1764688540182,
    )
    assert event.operation == "set" and event.operation.wire == 1
    assert isinstance(event.items, tuple)


def test_group_sample_parses_to_documented_values() -> None:
    event = parse_webhook(GROUP, GROUP_SAMPLE)
    assert event == GroupMsgExtensionEvent(
        group_id="test",
        msg_seq=10,
        operation=ExtensionOperation.SET,
        items=(ExtensionItem("key2", "value2", 56), ExtensionItem("key3", "12122", 56)),
        seq=56,
        event_time=1764688294360,
    )


def test_attr_sample_parses_to_documented_values() -> None:
    event = parse_webhook(ATTR, json.loads(ATTR_SAMPLE))
    assert event == GroupAttrChangedEvent(
        group_id="@TGS#2J4SZEAEL",
        group_type="Public",
        operator="leckie",
        operation=GroupAttrOperation.SET,
        attrs={"key1": "value1", "key2": "values"},
        event_time=1670574414123,  # a string in the sample
    )
    # The Integer of the field table is accepted too.
    as_int = parse_webhook(ATTR, {**json.loads(ATTR_SAMPLE), "EventTime": 1670574414123})
    assert as_int == event


def test_events_are_frozen() -> None:
    event = parse_webhook(GROUP, GROUP_SAMPLE)
    with pytest.raises(AttributeError):
        event.seq = 57  # type: ignore[misc]


@pytest.mark.parametrize(
    ("op", "wire", "items", "expected"),
    [
        (ExtensionOperation.DELETE, 2, [{"Key": "k1", "Value": "", "Seq": 7}], ("k1", "", 7)),
        (ExtensionOperation.DELETE, 2, [{"Key": "k1", "Seq": 7}], ("k1", "", 7)),
        (ExtensionOperation.CLEAR, 3, [], None),
    ],
)
def test_delete_and_clear_operations(
    op: ExtensionOperation, wire: int, items: list[Any], expected: tuple[str, str, int] | None
) -> None:
    body = {**json.loads(GROUP_SAMPLE), "OperateType": wire, "ExtensionList": items, "Seq": 7}
    event = parse_webhook(GROUP, body)
    assert isinstance(event, GroupMsgExtensionEvent)
    assert event.operation is op
    assert event.items == (() if expected is None else (ExtensionItem(*expected),))


def test_clear_without_extension_list() -> None:
    body = {**json.loads(GROUP_SAMPLE), "OperateType": 3}
    del body["ExtensionList"]
    event = parse_webhook(GROUP, body)
    assert isinstance(event, GroupMsgExtensionEvent) and event.items == ()


@pytest.mark.parametrize("option", ["modify", "delete", "clear", "SET"])
def test_attr_operations(option: str) -> None:
    body = {**json.loads(ATTR_SAMPLE), "OptionType": option}
    if option in ("delete", "clear"):
        body["GroupAttr"] = [{"key": "key1"}] if option == "delete" else []
    event = parse_webhook(ATTR, body)
    assert isinstance(event, GroupAttrChangedEvent)
    assert event.operation is GroupAttrOperation(option.lower())
    if option == "delete":
        assert event.attrs == {"key1": ""}


def test_unknown_extra_fields_are_ignored() -> None:
    body = {**json.loads(GROUP_SAMPLE), "NewField": {"x": 1}}
    body["ExtensionList"][0]["Extra"] = True
    assert parse_webhook(GROUP, body) == parse_webhook(GROUP, GROUP_SAMPLE)


# --------------------------------------------------------------------------- unknown commands


def test_unknown_command_is_kept_whole() -> None:
    body = {
        "CallbackCommand": "Group.CallbackAfterSendMsg",
        "GroupId": "g",
        "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "hi"}}],
        "Nested": {"list": [1, 2, {"deep": None}]},
    }
    event = parse_webhook("Group.CallbackAfterSendMsg", json.dumps(body))
    assert event == UnknownWebhookEvent(command="Group.CallbackAfterSendMsg", body=body)


# --------------------------------------------------------------------------- malformed bodies


def _broken(base: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(base)
    for name, value in changes.items():
        if value is ...:
            del body[name]
        else:
            body[name] = value
    return body


MALFORMED = [
    (GROUP, b"{not json", "body"),
    (GROUP, b"[1, 2]", "body"),
    (GROUP, _broken(GROUP_SAMPLE, GroupId=...), "GroupId"),
    (GROUP, _broken(GROUP_SAMPLE, GroupId=5), "GroupId"),
    (GROUP, _broken(GROUP_SAMPLE, MsgSeq="10"), "MsgSeq"),
    (GROUP, _broken(GROUP_SAMPLE, MsgSeq=-1), "MsgSeq"),
    (GROUP, _broken(GROUP_SAMPLE, OperateType=4), "OperateType"),
    (GROUP, _broken(GROUP_SAMPLE, OperateType=True), "OperateType"),
    (GROUP, _broken(GROUP_SAMPLE, Seq=...), "Seq"),
    (GROUP, _broken(GROUP_SAMPLE, Seq=1.5), "Seq"),
    (GROUP, _broken(GROUP_SAMPLE, EventTime="soon"), "EventTime"),
    (GROUP, _broken(GROUP_SAMPLE, ExtensionList=...), "ExtensionList"),
    (GROUP, _broken(GROUP_SAMPLE, ExtensionList={"Key": "k"}), "ExtensionList"),
    (GROUP, _broken(GROUP_SAMPLE, ExtensionList=["k"]), "ExtensionList[0]"),
    (
        GROUP,
        _broken(GROUP_SAMPLE, ExtensionList=[{"Value": "v", "Seq": 1}]),
        "ExtensionList[0].Key",
    ),
    (
        GROUP,
        _broken(GROUP_SAMPLE, ExtensionList=[{"Key": "k", "Seq": 1}]),
        "ExtensionList[0].Value",
    ),
    (
        GROUP,
        _broken(GROUP_SAMPLE, ExtensionList=[{"Key": "k", "Value": "v", "Seq": 1}, {"Key": "k"}]),
        "ExtensionList[1].Value",
    ),
    (
        GROUP,
        _broken(GROUP_SAMPLE, ExtensionList=[{"Key": "k", "Value": "v"}]),
        "ExtensionList[0].Seq",
    ),
    (GROUP, _broken(GROUP_SAMPLE, CallbackCommand=C2C), "CallbackCommand"),
    (C2C, _broken(C2C_SAMPLE, From_Account=...), "From_Account"),
    (C2C, _broken(C2C_SAMPLE, MsgKey=""), "MsgKey"),
    (ATTR, _broken(ATTR_SAMPLE, OptionType="replace"), "OptionType"),
    (ATTR, _broken(ATTR_SAMPLE, Type=...), "Type"),
    (ATTR, _broken(ATTR_SAMPLE, Operator_Account=...), "Operator_Account"),
    (ATTR, _broken(ATTR_SAMPLE, GroupAttr=...), "GroupAttr"),
    (ATTR, _broken(ATTR_SAMPLE, GroupAttr=[{"key": "k1"}]), "GroupAttr[0].value"),
    (ATTR, _broken(ATTR_SAMPLE, GroupAttr=[{"key": 1, "value": "v"}]), "GroupAttr[0].key"),
    (ATTR, _broken(ATTR_SAMPLE, EventTime=...), "EventTime"),
]


@pytest.mark.parametrize(("command", "body", "field"), MALFORMED)
def test_malformed_body_is_refused_naming_the_field(command: str, body: Any, field: str) -> None:
    with pytest.raises(TimWebhookError) as info:
        parse_webhook(command, body)
    assert isinstance(info.value, WebhookBodyError)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_body_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(TimWebhookError, match="body"):
        parse_webhook(GROUP, 42)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- dedupe_key


def test_dedupe_key_is_stable_and_distinguishes_writes() -> None:
    first = parse_webhook(GROUP, GROUP_SAMPLE)
    again = parse_webhook(GROUP, GROUP_SAMPLE.encode())
    assert dedupe_key(first) == dedupe_key(again) == first.dedupe_key
    assert first.dedupe_key == "Group.CallbackAfterGroupMsgExtension|test|10|56"
    later = parse_webhook(GROUP, _broken(GROUP_SAMPLE, Seq=57))
    other_msg = parse_webhook(GROUP, _broken(GROUP_SAMPLE, MsgSeq=11))
    assert len({first.dedupe_key, later.dedupe_key, other_msg.dedupe_key}) == 3
    c2c = parse_webhook(C2C, C2C_SAMPLE)
    assert c2c.dedupe_key == "C2C.CallbackAfterC2CMsgExtension|93847636_1287657_1764688415|1"
    attr = parse_webhook(ATTR, ATTR_SAMPLE)
    assert attr.dedupe_key == parse_webhook(ATTR, ATTR_SAMPLE.encode()).dedupe_key
    assert attr.dedupe_key != parse_webhook(ATTR, _broken(ATTR_SAMPLE, EventTime=1)).dedupe_key
    changed = _broken(ATTR_SAMPLE, GroupAttr=[{"key": "key1", "value": "other"}])
    assert attr.dedupe_key != parse_webhook(ATTR, changed).dedupe_key
    unknown = parse_webhook("X.Y", '{"a": 1, "b": 2}')
    assert unknown.dedupe_key == parse_webhook("X.Y", '{"b": 2, "a": 1}').dedupe_key
