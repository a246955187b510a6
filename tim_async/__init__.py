"""tim_async: an asyncio SDK for the Tencent Cloud Chat (TIM) server-side REST API."""

__version__ = "0.1.0"
