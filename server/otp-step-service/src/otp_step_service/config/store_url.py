"""OTP_STEP_CHALLENGE_STORE read once: which store, which Redis topology, where, and as whom.

The schemes are fixed (operators script against them):

- `memory` — this process only;
- `redis://[user[:password]@]host:port[/db]`, `rediss://…` (TLS), `unix:///path?db=N` — one Redis (a primary,
  perhaps with replicas it does not know about);
- `redis+sentinel://[user[:password]@]host:port[,host:port…]/<master name>[?db=N]` — the primary named
  `<master name>`, discovered (and re-discovered after a failover) through those sentinels; the sentinels' own
  credentials as query options `sentinel_username` and `sentinel_password`; `rediss+sentinel://` speaks TLS
  to the sentinels and to the primary;
- `redis+cluster://[user[:password]@]host:port[,host:port…]` — a Redis Cluster (or Valkey, ElastiCache,
  MemoryDB in cluster mode) reached through any of those seed nodes; `rediss+cluster://` for TLS.

Percent-escapes are decoded in user names and passwords. A password may instead come from
OTP_STEP_CHALLENGE_STORE_PASSWORD_FILE (see `adapters.redis_connection`), which wins over the URL's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from otp_step_service.steps.errors import ConfigurationError

StoreKind = Literal["memory", "redis", "sentinel", "cluster"]

SCHEMES: dict[str, tuple[StoreKind, bool]] = {
    "redis": ("redis", False),
    "rediss": ("redis", True),
    "unix": ("redis", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_SENTINEL_OPTIONS = frozenset({"db", "sentinel_username", "sentinel_password"})
DEFAULT_PORTS = {"redis": 6379, "sentinel": 26379, "cluster": 6379}


class StoreUrlError(ConfigurationError, ValueError):
    """OTP_STEP_CHALLENGE_STORE cannot be used; the message never repeats the URL (it may hold a password)."""


@dataclass(frozen=True)
class StoreAddress:
    """A parsed store URL. Passwords are kept out of `repr`."""

    kind: StoreKind
    tls: bool = False
    # The URL itself, for one Redis (redis-py reads it: db, unix sockets, its own query options).
    url: str = field(default="", repr=False)
    nodes: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def shared(self) -> bool:
        """Whether several instances can share this store (everything but `memory`)."""
        return self.kind != "memory"


def parse_store_url(value: str) -> StoreAddress:
    """The store `value` names, or StoreUrlError saying what is wrong (and how to write it)."""
    if value == "memory":
        return StoreAddress("memory")
    scheme, sep, _ = value.partition("://")
    if not sep or scheme not in SCHEMES:
        raise StoreUrlError(
            "use 'memory' or a URL of scheme "
            + ", ".join(f"{s}://" for s in SCHEMES)
            + " (see docs/fleet.md)"
        )
    kind, tls = SCHEMES[scheme]
    if kind == "redis":
        return StoreAddress("redis", tls=tls, url=value)
    parts = urlsplit(value)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at:
        hosts = parts.netloc
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = tuple(_node(item, DEFAULT_PORTS[kind]) for item in hosts.split(",") if item)
    if not nodes:
        raise StoreUrlError(f"{scheme}:// needs at least one host:port")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    if kind == "cluster":
        if parts.path not in ("", "/") or options:
            raise StoreUrlError(
                f"{scheme}:// takes no database and no options: a cluster has database 0 only "
                f"({scheme}://[user[:password]@]host:port[,host:port...])"
            )
        return StoreAddress("cluster", tls=tls, nodes=nodes, username=username, password=password)
    unknown = set(options) - _SENTINEL_OPTIONS
    if unknown:
        raise StoreUrlError(
            f"{scheme}:// options are {', '.join(sorted(_SENTINEL_OPTIONS))}; not {sorted(unknown)}"
        )
    master = unquote(parts.path.strip("/"))
    if not master or "/" in master:
        raise StoreUrlError(
            f"{scheme}:// needs the master name as its path: {scheme}://host:port,.../<master name>"
        )
    db = options.get("db", "0")
    if not db.isdigit():
        raise StoreUrlError(f"{scheme}:// db must be a number")
    return StoreAddress(
        "sentinel",
        tls=tls,
        nodes=nodes,
        master=master,
        db=int(db),
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
    )


def _node(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # [v6 address]:port
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise StoreUrlError("a host in the store URL is empty")
    if port and not port.isdigit():
        raise StoreUrlError("a port in the store URL is not a number")
    return host, int(port) if port else default_port
