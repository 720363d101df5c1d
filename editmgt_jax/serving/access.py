"""Who may use the server: it binds 127.0.0.1 by default; another address needs passwords.

Example:
    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    >>> parse_credential("ann:s3cret:x")
    ('ann', 's3cret:x')
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence

LOOPBACK_NAMES = ("localhost", "ip6-localhost", "ip6-loopback")


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def parse_credential(text: str) -> tuple[str, str]:
    """(user, password) from "USER:PASSWORD" (the password may contain ':')."""
    user, sep, password = text.strip().partition(":")
    if not sep or not user or not password:
        raise ValueError(
            f"A credential must be USER:PASSWORD with both parts non-empty, got {text!r}"
        )
    return user, password


def read_auth_file(path: str) -> list[tuple[str, str]]:
    """Credentials from a file of USER:PASSWORD lines (blank lines and # comments skipped)."""
    if not os.path.isfile(path):
        raise ValueError(f"Auth file {path!r} does not exist")
    credentials = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                credentials.append(parse_credential(line.rstrip("\n")))
            except ValueError as e:
                raise ValueError(f"{path} line {number}: {e}") from None
    if not credentials:
        raise ValueError(f"Auth file {path!r} holds no USER:PASSWORD line")
    return credentials


def credentials(
    host: str,
    auth: Sequence[str] = (),
    auth_file: str | None = None,
    allow_unauthenticated: bool = False,
) -> list[tuple[str, str]] | None:
    """The logins the server asks for (None: no login), or ValueError when the address is reachable
    from other machines and neither passwords nor `allow_unauthenticated` were given."""
    logins = [parse_credential(a) for a in auth]
    if auth_file:
        logins += read_auth_file(auth_file)
    if not logins and not is_loopback(host) and not allow_unauthenticated:
        raise ValueError(
            f"--host {host} is reachable from other machines: give --auth USER:PASSWORD or "
            "--auth_file FILE, or --allow_unauthenticated to serve anyone who can connect"
        )
    return logins or None
