"""A small typed etcd v3 client for the ordering service, over aetcd's gRPC stubs.

aetcd's own ``Client`` talks to one ``host:port`` and has no failover, so this wrapper keeps one
gRPC channel per endpoint and talks to one member at a time: a call that finds its member down
(connection refused, unavailable, no leader, deadline) moves to the next endpoint and tries again,
until ``timeout`` seconds have passed in all; then it raises :class:`OrdererUnavailable`. A watch
that loses its member resumes on another one after the last revision it delivered.

Requests carry etcd's ``hasleader`` metadata: a member cut off from the leader refuses at once
(UNAVAILABLE) instead of holding the request, so the wrapper moves on to a member that can answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from fedledger.errors import (
    InvalidArgument,
    InvalidArgumentType,
    MissingDependency,
    OrdererUnavailable,
    RevisionCompacted,
)

try:
    from aetcd import rpc
except ImportError as exc:  # the node extra
    raise MissingDependency("aetcd", "node", "the etcd client of fedledger.node") from exc

__all__ = ["MAX_VALUE", "Etcd", "Event"]

MAX_VALUE: Final = 1 << 20  # bytes; etcd 3.4 refuses requests over 1.5 MiB by default, keys included

_T = TypeVar("_T")
_METADATA: Final = (("hasleader", "true"),)
_RETRY: Final = frozenset({rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED})
_OPTIONS: Final = (
    # get_prefix and watch responses may be larger than gRPC's 4 MiB default.
    ("grpc.max_receive_message_length", -1),
    # A restarted member is reachable again within a second, not after gRPC's 2-minute backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


@dataclass(frozen=True)
class Event:
    """One change under a watched prefix."""

    key: bytes
    value: bytes | None  # None: the key was deleted
    revision: int  # the mod revision of this change


@dataclass
class _Member:
    index: int
    endpoint: str
    channel: Any
    kv: Any
    lease: Any
    watch: Any


class Etcd:
    """A connection to an etcd cluster through any of its members' client endpoints."""

    def __init__(self, members: list[_Member], timeout: float) -> None:  # use Etcd.connect
        self._members = members
        self._current = 0
        self._timeout = timeout
        self._leases: dict[int, tuple[int, float]] = {}  # ttl -> (lease id, monotonic time granted)
        self._closed = False

    @classmethod
    async def connect(cls, endpoints: Sequence[str], *, timeout: float = 5.0) -> Etcd:
        """Connect through ``endpoints`` (``"http://host:port"``), checking that one member answers."""
        if isinstance(endpoints, str) or not endpoints:
            raise InvalidArgument("endpoints", "a non-empty list of URLs such as 'http://127.0.0.1:2379'")
        if not timeout > 0:
            raise InvalidArgument("timeout", f"must be positive, not {timeout!r}")
        members = []
        for index, endpoint in enumerate(endpoints):
            channel = rpc.insecure_channel(_target(endpoint), options=_OPTIONS)
            kv, lease, watch = rpc.KVStub(channel), rpc.LeaseStub(channel), rpc.WatchStub(channel)
            members.append(_Member(index, endpoint, channel, kv, lease, watch))
        self = cls(members, timeout)
        try:
            await self._call(lambda m, t: m.kv.Range(rpc.RangeRequest(key=b"\0"), timeout=t, metadata=_METADATA))
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Close every channel; watches end, calls in flight fail."""
        self._closed = True
        for member in self._members:
            await member.channel.close()

    async def get(self, key: bytes) -> tuple[bytes, int] | None:
        """(value, mod revision) of ``key``, or None when it does not exist; a linearizable read."""
        _check_key("key", key)
        response = await self._call(lambda m, t: m.kv.Range(rpc.RangeRequest(key=key), timeout=t, metadata=_METADATA))
        if not response.kvs:
            return None
        return response.kvs[0].value, response.kvs[0].mod_revision

    async def get_prefix(self, prefix: bytes) -> tuple[int, list[tuple[bytes, bytes, int]]]:
        """(store revision of the read, [(key, value, mod revision)] sorted by key): one read, so
        every key under ``prefix`` as of that one revision."""
        _check_bytes("prefix", prefix)
        request = rpc.RangeRequest(
            key=prefix or b"\0",
            range_end=_range_end(prefix),
            sort_order=rpc.RangeRequest.ASCEND,
            sort_target=rpc.RangeRequest.KEY,
        )
        response = await self._call(lambda m, t: m.kv.Range(request, timeout=t, metadata=_METADATA))
        return response.header.revision, [(kv.key, kv.value, kv.mod_revision) for kv in response.kvs]

    async def put(self, key: bytes, value: bytes, *, ttl: int | None = None) -> int:
        """Write ``key``; the store revision of the write. With ``ttl``, etcd deletes the key once its
        lease expires: at least 0.9 ttl seconds later (puts share a lease for a tenth of its life;
        etcd grants at least 2 s).

        A put retried on another member after its first attempt's fate was unknown may be
        applied twice (two revisions, the same value)."""
        _check_value(key, value)
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1):
            raise InvalidArgument("ttl", f"a whole number of seconds >= 1, not {ttl!r}")

        async def attempt(member: _Member, timeout: float) -> int:
            lease = 0 if ttl is None else await self._lease(member, ttl, timeout)
            request = rpc.PutRequest(key=key, value=value, lease=lease)
            response = await member.kv.Put(request, timeout=timeout, metadata=_METADATA)
            return int(response.header.revision)

        return await self._call(attempt)

    async def create(self, key: bytes, value: bytes) -> bool:
        """Write ``key`` only if it does not exist (one compare-and-swap); True if this call wrote it.

        When an attempt failed with its fate unknown and a retry finds the key holding exactly
        ``value``, the earlier attempt is taken to have written it (True): identical bytes from
        another writer cannot be told apart."""
        _check_value(key, value)
        request = rpc.TxnRequest(
            compare=[rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.VERSION, key=key, version=0)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
        )
        attempts = 0

        async def attempt(member: _Member, timeout: float) -> bool:
            nonlocal attempts
            attempts += 1
            response = await member.kv.Txn(request, timeout=timeout, metadata=_METADATA)
            if response.succeeded:
                return True
            kvs = response.responses[0].response_range.kvs
            return attempts > 1 and bool(kvs) and kvs[0].value == value

        return await self._call(attempt)

    async def delete(self, key: bytes) -> None:
        """Delete ``key`` (nothing happens when it does not exist)."""
        _check_key("key", key)
        request = rpc.DeleteRangeRequest(key=key)
        await self._call(lambda m, t: m.kv.DeleteRange(request, timeout=t, metadata=_METADATA))

    async def delete_prefix(self, prefix: bytes) -> None:
        """Delete every key under ``prefix`` in one revision (an empty prefix is refused)."""
        _check_key("prefix", prefix)
        request = rpc.DeleteRangeRequest(key=prefix, range_end=_range_end(prefix))
        await self._call(lambda m, t: m.kv.DeleteRange(request, timeout=t, metadata=_METADATA))

    async def delete_range(self, start: bytes, end: bytes) -> None:
        """Delete every key in ``[start, end)`` in one revision."""
        _check_key("start", start)
        _check_key("end", end)
        if not start < end:
            raise InvalidArgument("end", "must sort after start")
        request = rpc.DeleteRangeRequest(key=start, range_end=end)
        await self._call(lambda m, t: m.kv.DeleteRange(request, timeout=t, metadata=_METADATA))

    def watch_prefix(self, prefix: bytes, start_revision: int) -> AsyncIterator[Event]:
        """Every change under ``prefix`` at or after ``start_revision``, in revision order.

        When the member streaming it goes away the watch resumes on another one from the revision
        after the last event delivered: nothing lost, nothing repeated. :class:`RevisionCompacted`
        when etcd no longer keeps ``start_revision``; :class:`OrdererUnavailable` when no member
        takes the watch within the timeout. Ends when the client is closed."""
        _check_bytes("prefix", prefix)
        if isinstance(start_revision, bool) or not isinstance(start_revision, int) or start_revision < 1:
            raise InvalidArgument("start_revision", f"a revision >= 1, not {start_revision!r}")
        return self._watch(prefix, start_revision)

    # -- internals ------------------------------------------------------------------------------

    async def _watch(self, prefix: bytes, start_revision: int) -> AsyncIterator[Event]:
        next_revision = start_revision
        create = rpc.WatchCreateRequest(key=prefix or b"\0", range_end=_range_end(prefix))
        while True:
            create.start_revision = next_revision
            member, call = await self._call(lambda m, t: _open_watch(m, t, create))
            probing, reading = False, None
            try:
                while True:
                    # Cancelling a read cancels the whole call, so a slow read is waited on, shielded.
                    reading = reading or asyncio.ensure_future(call.read())
                    try:
                        response = await asyncio.wait_for(asyncio.shield(reading), self._timeout)
                    except asyncio.TimeoutError:
                        # Quiet for a while: ask for a progress report, which a live member sends
                        # at once. A member that hangs (stopped, cut off) sends nothing; move on.
                        # (gRPC keepalive did not break such a stream in 40 s.)
                        if probing:
                            break
                        probing = True
                        progress = rpc.WatchRequest(progress_request=rpc.WatchProgressRequest())
                        await asyncio.wait_for(call.write(progress), self._timeout)
                        continue
                    probing, reading = False, None
                    if not isinstance(response, rpc.WatchResponse):  # gRPC's EOF: the member ended the stream
                        break
                    if response.compact_revision:
                        raise RevisionCompacted(next_revision, response.compact_revision)
                    if response.canceled:
                        raise InvalidArgument("watch", f"etcd cancelled the watch: {response.cancel_reason}")
                    # etcd sends all the events of one revision in one response, so resuming
                    # after the last one delivered never splits a revision.
                    for event in response.events:
                        deleted = event.type == rpc.Event.DELETE
                        yield Event(event.kv.key, None if deleted else event.kv.value, event.kv.mod_revision)
                        next_revision = event.kv.mod_revision + 1
            except asyncio.CancelledError:
                if self._closed:  # gRPC cancels the calls of a closed channel
                    return
                raise
            except rpc.AioRpcError as exc:
                if self._closed:
                    return
                if exc.code() not in _RETRY:
                    raise
            except asyncio.TimeoutError:
                pass  # the progress request could not even be sent: move on
            finally:
                call.cancel()
                if reading is not None:
                    reading.cancel()
            if self._closed:
                return
            self._move_on(member)

    async def _call(self, attempt: Callable[[_Member, float], Awaitable[_T]]) -> _T:
        """Run ``attempt`` on the current member, moving to the next one while members are down."""
        deadline = time.monotonic() + self._timeout
        # One member may not eat the whole budget: a hung one is left after its share.
        share = max(self._timeout / len(self._members), 1.0)
        tried: list[str] = []
        last = "no attempt"
        failures = 0
        while (remaining := deadline - time.monotonic()) > 0:
            member = self._members[self._current]
            try:
                return await attempt(member, min(remaining, share))
            except rpc.AioRpcError as exc:
                if exc.code() not in _RETRY:
                    raise
                last = f"{member.endpoint}: {exc.code().name} {exc.details()}"
            except asyncio.TimeoutError:
                last = f"{member.endpoint}: no answer in time"
            if member.endpoint not in tried:
                tried.append(member.endpoint)
            self._move_on(member)
            failures += 1
            if failures % len(self._members) == 0:  # every member failed once: let them recover
                await asyncio.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
        raise OrdererUnavailable(tried, last)

    def _move_on(self, member: _Member) -> None:
        if self._current == member.index:  # another task may have moved on already
            self._current = (member.index + 1) % len(self._members)

    async def _lease(self, member: _Member, ttl: int, timeout: float) -> int:
        """A lease of ``ttl`` seconds, shared by the puts of a tenth of its life."""
        cached = self._leases.get(ttl)
        if cached is not None and time.monotonic() - cached[1] < ttl / 10:
            return cached[0]
        granted_at = time.monotonic()
        response = await member.lease.LeaseGrant(rpc.LeaseGrantRequest(TTL=ttl), timeout=timeout, metadata=_METADATA)
        self._leases[ttl] = (response.ID, granted_at)
        return int(response.ID)


async def _open_watch(member: _Member, timeout: float, create: Any) -> tuple[_Member, Any]:
    """A watch stream on ``member``, once etcd has confirmed it."""
    call = member.watch.Watch(metadata=_METADATA)
    try:
        await asyncio.wait_for(call.write(rpc.WatchRequest(create_request=create)), timeout)
        response = await asyncio.wait_for(call.read(), timeout)
        if not isinstance(response, rpc.WatchResponse) or not response.created:
            raise asyncio.TimeoutError
        if response.compact_revision:
            raise RevisionCompacted(create.start_revision, response.compact_revision)
        if response.canceled:
            raise InvalidArgument("watch", f"etcd refused the watch: {response.cancel_reason}")
    except BaseException:
        call.cancel()
        raise
    return member, call


def _target(endpoint: str) -> str:
    """``host:port`` of an ``http://host:port`` endpoint (no TLS)."""
    if not isinstance(endpoint, str):
        raise InvalidArgumentType("endpoints", f"URLs are str, not {type(endpoint).__name__}")
    url = urlsplit(endpoint)
    try:
        port = url.port
    except ValueError:
        port = None
    if url.scheme != "http" or not url.hostname or port is None or url.path not in ("", "/"):
        raise InvalidArgument("endpoints", f"{endpoint!r} is not http://host:port")
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    return f"{host}:{port}"


def _range_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (b"\\0": no end)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _check_bytes(argument: str, data: object) -> None:
    if not isinstance(data, bytes):
        raise InvalidArgumentType(argument, f"bytes, not {type(data).__name__}")


def _check_key(argument: str, key: object) -> None:
    _check_bytes(argument, key)
    if not key:
        raise InvalidArgument(argument, "must not be empty")


def _check_value(key: bytes, value: object) -> None:
    _check_key("key", key)
    _check_bytes("value", value)
    assert isinstance(value, bytes)
    if len(value) > MAX_VALUE:
        raise InvalidArgument("value", f"{len(value)} bytes for key {key!r}, over the limit of {MAX_VALUE}")
