"""Data centres of Tencent Cloud Chat and their REST API domains."""

from __future__ import annotations

import enum

__all__ = ["Region"]


class Region(enum.Enum):
    """One member per data centre. ``value`` is the domain; ``backup_domain`` the one to use
    when DNS resolution of the main domain fails. The SDKAppID's region decides which one is
    right: a wrong one answers 70016/70020."""

    CHINA = ("console.tim.qq.com", "adminapi.my-imcloud.com")
    SINGAPORE = ("adminapisgp.im.qcloud.com", "adminapisgp.my-imcloud.com")
    SEOUL = ("adminapikr.im.qcloud.com", "adminapikr.my-imcloud.com")
    TOKYO = ("adminapijpn.im.qcloud.com", "adminapijpn.my-imcloud.com")
    FRANKFURT = ("adminapiger.im.qcloud.com", "adminapiger.my-imcloud.com")
    MUMBAI = ("adminapiind.im.qcloud.com", "adminapiind.my-imcloud.com")
    SILICON_VALLEY = ("adminapiusa.im.qcloud.com", "adminapiusa.my-imcloud.com")
    JAKARTA = ("adminapiidn.im.qcloud.com", "adminapiidn.my-imcloud.com")

    @property
    def domain(self) -> str:
        return self.value[0]

    @property
    def backup_domain(self) -> str:
        return self.value[1]

    @property
    def base_url(self) -> str:
        return f"https://{self.domain}"

    @property
    def backup_base_url(self) -> str:
        return f"https://{self.backup_domain}"

    @classmethod
    def parse(cls, name: str | Region) -> Region:
        """Accept a member, its name (``"singapore"``, ``"SILICON_VALLEY"``) or its domain."""
        if isinstance(name, Region):
            return name
        if not isinstance(name, str):
            raise TypeError(f"region must be a Region or a string, got {type(name).__name__}")
        key = name.strip().upper().replace("-", "_").replace(" ", "_")
        if key in cls.__members__:
            return cls.__members__[key]
        for member in cls:
            if name.strip().lower() in member.value:
                return member
        known = ", ".join(m.name.lower() for m in cls)
        raise ValueError(f"unknown region {name!r}; known regions: {known}")
