"""``tim.call`` takes Tencent's command paths as they are spelled, mixed case included."""

from __future__ import annotations

import pytest

from tim_async import TimClient, TimInvalidParameterError, TimValidationError
from tim_async.testing import FakeTimServer


def _client(server: FakeTimServer) -> TimClient:
    return TimClient(
        server.sdkappid, server.admin, secret_key=server.secret_key, base_url=server.base_url
    )


async def test_mixed_case_command_is_sent() -> None:
    # v4/ConfigSvc/GetIPList (the webhook egress allow-list) is spelled in mixed case.
    async with FakeTimServer(rate_limit=None) as server:
        async with _client(server) as tim:
            with pytest.raises(TimInvalidParameterError) as raised:
                await tim.call("ConfigSvc/GetIPList", {})
        # It reached the emulator, which does not emulate it (60009), and names it.
        assert raised.value.code == 60009
        assert "ConfigSvc/GetIPList" in raised.value.info
        assert [r.command for r in server.requests] == ["ConfigSvc/GetIPList"]


@pytest.mark.parametrize("api", ["ConfigSvc", "a/b/c", "bad path/x", "", "svc/cmd?x=1"])
async def test_malformed_api_paths_are_refused_before_sending(api: str) -> None:
    async with FakeTimServer(rate_limit=None) as server:
        async with _client(server) as tim:
            with pytest.raises(TimValidationError, match="api"):
                await tim.call(api, {})
        assert server.requests == []
