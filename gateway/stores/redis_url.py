"""`state.redis_url` as users write it: one server, Sentinel or Cluster, and the redis-py client for each.

Accepted forms (the password is optional everywhere, and never appears in `redacted()` or a log):

* `redis://[:password@]host:port[/db]`, `rediss://...` (TLS), `unix:///path/redis.sock` - one server;
* `redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]` - the primary Sentinel names
  `service_name` (`master_for`); the password authenticates to the primary, the sentinels are asked without;
* `redis+cluster://[:password@]host:port[,host:port...]` - any reachable nodes of a Redis Cluster (the client
  learns the slot map from them and follows MOVED/ASK redirections itself). A cluster has one database, 0.

Every client is made without automatic retries: a retried script (a rate-limit update, a reservation) could
apply twice, so a lost connection surfaces to the store, which applies `state.on_error` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.connection import parse_url

SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")
Topology = Literal["single", "sentinel", "cluster"]


@dataclass(frozen=True)
class RedisTarget:
    """A parsed `state.redis_url`: the topology, its seed hosts and what to select on them."""

    topology: Topology
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    password: str | None = None
    username: str | None = None
    service: str | None = None
    db: int = 0


def _hosts(netloc: str) -> tuple[tuple[str, int], ...]:
    hosts = []
    for item in netloc.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {item.strip()!r}")
        hosts.append((host.strip("[]"), int(port)))
    return tuple(hosts)


def parse_redis_url(url: str) -> RedisTarget:
    """The target `url` names; ValueError with a message fit for a config error (never the password)."""
    if not url.startswith(SCHEMES):
        raise ValueError(
            "must start with redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// "
            "(e.g. redis://127.0.0.1:6379/0)"
        )
    if not url.startswith(("redis+sentinel://", "redis+cluster://")):
        # redis-py's own parser, so `db` is the database the connection selects (the path, or unix's ?db=).
        return RedisTarget("single", url, db=int(parse_url(url).get("db") or 0))
    scheme, _, rest = url.partition("://")
    credentials, at, where = rest.rpartition("@")
    if not at:
        credentials, where = "", rest
    username, _, password = credentials.partition(":")
    netloc, _, path = where.partition("/")
    path = path.split("?", 1)[0].strip("/")
    if not netloc:
        raise ValueError(f"{scheme}:// needs at least one host:port")
    hosts = _hosts(netloc)
    secret, user = unquote(password) or None, unquote(username) or None
    if scheme == "redis+cluster":
        if path not in ("", "0"):
            raise ValueError("a Redis Cluster has only database 0; drop the path from redis+cluster://")
        return RedisTarget("cluster", url, hosts, password=secret, username=user)
    service, _, db = path.partition("/")
    if not service:
        raise ValueError(
            "redis+sentinel:// needs the monitored service name: redis+sentinel://host:port/mymaster"
        )
    if db and not db.isdigit():
        raise ValueError(f"the database after the service name must be a number, got {db!r}")
    return RedisTarget(
        "sentinel", url, hosts, password=secret, username=user, service=service, db=int(db or 0)
    )


def redacted(url: str) -> str:
    """`url` without credentials, safe for logs: `redis://host:port/db`, `redis+cluster://h1:p1,h2:p2`."""
    scheme, _, rest = url.partition("://")
    where = rest.rpartition("@")[2]
    if scheme in ("redis", "rediss"):
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"
    return f"{scheme}://{where.split('?', 1)[0]}"


def connect(url: str, *, timeout: float) -> Any:
    """A redis-py asyncio client for `url` (`Redis`, or `RedisCluster` for a cluster); connects lazily.

    Typed `Any` because `Redis` and `RedisCluster` share their command methods but no declared base.
    """
    target = parse_redis_url(url)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if target.topology == "single":
        return aioredis.Redis.from_url(url, **options)
    auth: dict[str, Any] = {"password": target.password, "username": target.username}
    if target.topology == "sentinel":
        sentinels = Sentinel(
            list(target.hosts),
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        )
        assert target.service is not None  # parse_redis_url requires it
        return sentinels.master_for(target.service, db=target.db, **auth, **options)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
        **auth,
        **options,
    )


async def close(client: Any) -> None:
    """Close `client` from `connect` and, for Sentinel, the connections to the sentinels it asked."""
    await client.aclose()
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    if manager is not None:
        # One by one (Sentinel.aclose is not in every redis-py this project accepts).
        for sentinel in manager.sentinels:
            await sentinel.aclose()
