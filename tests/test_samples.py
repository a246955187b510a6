"""Tencent's documented samples (spec/samples/seed-samples.json): the SDK sends exactly each
sample request for the equivalent call, and each sample response decodes to the expected
values (also through a strict converter copy that refuses fields the models do not know)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from _fakes import FakeCaller

from tim_async import RetryPolicy, TimClient, _wire
from tim_async.endpoints import GroupAttr, GroupCounter, MsgExt
from tim_async.endpoints.group_attr import _GetAnswer
from tim_async.endpoints.group_counter import _CountersAnswer
from tim_async.errors import TimAPIError
from tim_async.models import ExtensionItem, ExtensionList
from tim_async.paging import KeyValuesAnswer
from tim_async.testing import FakeTimServer, Fault

# Tencent's documented samples: a verbatim copy of shared/spec/samples/seed-samples.json, kept
# in the repo so the tests are self-contained (test_embedded_samples_match_the_spec_file guards
# drift).
SAMPLES_FILE = Path(__file__).resolve().parent / "data" / "seed-samples.json"
SAMPLES: dict[str, Any] = json.loads(SAMPLES_FILE.read_text(encoding="utf-8"))
# The shared spec folder lies beside the repository checkout (the developers' and CI's layout).
SPEC_FILE = (
    Path(__file__).resolve().parents[2] / "shared" / "spec" / "samples" / "seed-samples.json"
)
ENVELOPE = ("ActionStatus", "ErrorCode", "ErrorInfo")


Call = Callable[[Any], Awaitable[Any]]


class _Endpoints:
    """The endpoint namespaces of a TimClient, over a test caller."""

    def __init__(self, caller: FakeCaller) -> None:
        self.msg_ext = MsgExt(caller)
        self.group_attr = GroupAttr(caller)
        self.group_counter = GroupCounter(caller)


def _on(target: FakeCaller | TimClient) -> _Endpoints | TimClient:
    return target if isinstance(target, TimClient) else _Endpoints(target)


def _sdk_call(command: str, request: dict[str, Any]) -> Call:
    """The SDK call equivalent to one sample request, built from the sample's values; run it
    on a FakeCaller or on a real TimClient."""
    if command == "group_get_key_values":
        kw = {"start_seq": request["StartSeq"]} if "StartSeq" in request else {}
        return lambda c: _on(c).msg_ext.group_get_key_values(
            request["GroupId"], request["MsgSeq"], **kw
        )
    if command == "get_key_values":
        kw = {"start_seq": request["StartSeq"]} if "StartSeq" in request else {}
        if "From_Account" in request:
            kw["from_account"] = request["From_Account"]
        return lambda c: _on(c).msg_ext.get_key_values(
            request["To_Account"], request["MsgKey"], **kw
        )
    if command == "get_group_attr":
        return lambda c: _on(c).group_attr.get_group_attr(request["GroupId"])
    if command == "update_group_counter":
        counters = {entry["Key"]: entry["Value"] for entry in request["GroupCounter"]}
        if request["Mode"] == "Set":
            return lambda c: _on(c).group_counter.update_group_counter(request["GroupId"], counters)
        return lambda c: _on(c).group_counter.update_group_counter(
            request["GroupId"], counters, mode=request["Mode"]
        )
    raise AssertionError(f"no SDK call for sample command {command}")


REQUEST_CASES = [
    pytest.param(command, index, id=f"{command}-{index}")
    for command, sample in SAMPLES.items()
    for index in range(len(sample["requests"]))
]


@pytest.mark.skipif(not SPEC_FILE.exists(), reason="the shared spec folder is not present")
def test_embedded_samples_match_the_spec_file() -> None:
    if not SPEC_FILE.exists():
        pytest.skip(f"no shared spec beside the checkout ({SPEC_FILE})")
    assert json.loads(SPEC_FILE.read_text(encoding="utf-8")) == SAMPLES


def test_samples_cover_the_four_commands() -> None:
    assert set(SAMPLES) == {
        "group_get_key_values",
        "get_key_values",
        "get_group_attr",
        "update_group_counter",
    }
    assert len(REQUEST_CASES) >= 6


@pytest.mark.parametrize(("command", "index"), REQUEST_CASES)
async def test_sample_request_is_what_the_sdk_sends(command: str, index: int) -> None:
    sample = SAMPLES[command]
    request = sample["requests"][index]
    caller = FakeCaller(sample["response"])
    await _sdk_call(command, request)(caller)
    assert len(caller.calls) == 1  # every sample response is complete: one call
    api, body, idempotent = caller.calls[0]
    assert f"v4/{api}" == sample["path"]
    assert body == request
    assert json.dumps(body, sort_keys=True) == json.dumps(request, sort_keys=True)
    assert idempotent is True


@pytest.mark.parametrize(("command", "index"), REQUEST_CASES)
async def test_sample_request_reaches_the_server_as_documented(command: str, index: int) -> None:
    """Through the real session: the body the emulator received is the sample request, on the
    sample's path, with the documented query."""
    sample = SAMPLES[command]
    request = sample["requests"][index]
    api = sample["path"].removeprefix("v4/")
    async with FakeTimServer(rate_limit=None) as server:
        async with TimClient(
            server.sdkappid,
            secret_key=server.secret_key,
            base_url=server.base_url,
            retry=RetryPolicy(max_retries=0),
        ) as tim:
            with contextlib.suppress(TimAPIError):  # the sample's ids are not seeded here
                await _sdk_call(command, request)(tim)
        log = server.requests_for(api)
    assert len(log) == 1
    assert log[0].body == request
    assert log[0].query["sdkappid"] == str(server.sdkappid)
    assert log[0].query["identifier"] == "administrator"
    assert log[0].query["contenttype"] == "json"


EXPECTED_EXTENSIONS = {
    "group_get_key_values": [("key1", "1", 1), ("key2", "2", 1), ("key3", "3", 2)],
    "get_key_values": [("k1", "v1", 1), ("k2", "v2", 1), ("k3", "v3", 2)],
}


@pytest.mark.parametrize("command", sorted(EXPECTED_EXTENSIONS))
async def test_extension_sample_response_decodes(command: str) -> None:
    sample = SAMPLES[command]
    request = sample["requests"][0]
    result = await _sdk_call(command, request)(FakeCaller(sample["response"]))
    assert isinstance(result, ExtensionList)
    assert [(i.key, i.value, i.seq) for i in result] == EXPECTED_EXTENSIONS[command]
    assert (result.latest_seq, result.clear_seq) == (2, 0)
    assert len(result) == 3
    assert result.as_dict() == {k: v for k, v, _ in EXPECTED_EXTENSIONS[command]}

    pages_iter = (
        MsgExt(FakeCaller(sample["response"])).iter_group_key_values(
            request["GroupId"], request["MsgSeq"]
        )
        if command == "group_get_key_values"
        else MsgExt(FakeCaller(sample["response"])).iter_key_values(
            request["To_Account"], request["MsgKey"], from_account=request["From_Account"]
        )
    )
    pages = [page async for page in pages_iter]
    assert len(pages) == 1
    assert pages[0].complete is True
    assert pages[0].items == tuple(ExtensionItem(*row) for row in EXPECTED_EXTENSIONS[command])


async def test_get_group_attr_sample_response_decodes() -> None:
    sample = SAMPLES["get_group_attr"]
    result = await _sdk_call("get_group_attr", sample["requests"][0])(
        FakeCaller(sample["response"])
    )
    assert result == {"attr_key1": "attr_val1", "attr_key2": "attr_val2"}


async def test_update_group_counter_sample_response_decodes() -> None:
    sample = SAMPLES["update_group_counter"]
    caller = FakeCaller(sample["response"])
    result = await _sdk_call("update_group_counter", sample["requests"][0])(caller)
    assert result == {"like": 5, "unlike": 1}
    assert caller.calls[0][2] is True  # Mode "Set" may be resent


@pytest.mark.parametrize(
    ("command", "model"),
    [
        ("group_get_key_values", KeyValuesAnswer),
        ("get_key_values", KeyValuesAnswer),
        ("get_group_attr", _GetAnswer),
        ("update_group_counter", _CountersAnswer),
    ],
)
def test_models_know_every_field_of_the_sample_responses(command: str, model: type) -> None:
    # Drift guard: a strict copy of the converter refuses fields the models do not declare.
    strict = _wire.converter.copy(forbid_extra_keys=True)
    response = {k: v for k, v in SAMPLES[command]["response"].items() if k not in ENVELOPE}
    decoded = _wire.structure(response, model, api=command, conv=strict)
    assert decoded == _wire.structure(SAMPLES[command]["response"], model, api=command)


ERROR_CASES = [
    pytest.param(command, int(code), info, id=f"{command}-{code}")
    for command, sample in SAMPLES.items()
    for code, info in sample["error_codes"].items()
]


@pytest.mark.parametrize(("command", "code", "info"), ERROR_CASES)
async def test_sample_error_codes_reach_the_caller_unchanged(
    command: str, code: int, info: str
) -> None:
    """The server answers the sample's error code: through the real session (HTTP, envelope,
    error mapping), the caller gets a TimAPIError with that code, ErrorInfo and command."""
    sample = SAMPLES[command]
    api = sample["path"].removeprefix("v4/")
    async with FakeTimServer(rate_limit=None) as server:
        server.faults.script(api, [Fault.code(code, info)])
        async with TimClient(
            server.sdkappid,
            secret_key=server.secret_key,
            base_url=server.base_url,
            retry=RetryPolicy(max_retries=0),  # one answer, even for a retried code
        ) as tim:
            with pytest.raises(TimAPIError) as raised:
                await _sdk_call(command, sample["requests"][0])(tim)
        assert [entry.error_code for entry in server.requests_for(api)] == [code]
    assert raised.value.code == code
    assert raised.value.info == info
    assert raised.value.api == api
    assert raised.value.body["ErrorCode"] == code
    assert info in str(raised.value)
