"""weir: write Weir event handlers in Python.

A Weir plugin is a WebAssembly component for the `weir:plugin/batch-handler` world.
`componentize-py` builds one from a Python module (`weir build` runs it for you);
this module wraps the bindings it generates so a handler reads like ordinary Python:

    import weir
    from weir import cache, publish

    class Plugin(weir.Handler):
        def handle(self, event: weir.Event) -> None:
            body = event.json()                      # malformed JSON -> Reject
            cache.delete(f"presigned:{body['userId']}")  # backend down -> Retry
            publish.Message("audit").key(body["userId"]).json(body).send()

    WitWorld = weir.export(Plugin)

Outcomes: return normally and the event is handled (what it published is sent, its
offset moves on). Raise `weir.Retry(reason)` for a transient failure (the host
retries with backoff, then dead-letters) or `weir.Reject(reason)` for a permanent one
(dead-lettered at once). A failed capability call raises a `weir.CapabilityError`:
`Unavailable` is a `Retry`, `Denied` and `Invalid` are `Reject`s, so leaving it
uncaught does the right thing. Any other exception escaping `handle` is a bug: the
component traps, the host logs the traceback, replaces the instance and retries.
"""

from __future__ import annotations

import json as _json
import sys as _sys
from typing import Any, Callable, Iterable, List, Optional, Tuple

from componentize_py_types import Err, Ok
from wit_world.imports import batch as _batch
from wit_world.imports import cache as _cache
from wit_world.imports import config as _config
from wit_world.imports import log as _log
from wit_world.imports import publish as _publish
from wit_world.imports import storage as _storage
from wit_world.imports import types as _types

__all__ = [
    "Handler", "Event", "Header", "Retry", "Reject", "CapabilityError", "Denied",
    "Invalid", "Unavailable", "export", "cache", "storage", "publish", "log", "config",
]

Header = _types.Header


# --- Outcomes -------------------------------------------------------------------------

class HandlerError(Exception):
    """Why a handler did not finish an event (base of `Retry` and `Reject`)."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = str(reason)

    def to_wit(self) -> _types.HandleError:
        raise NotImplementedError


class Retry(HandlerError):
    """A transient failure: the host retries the event with backoff."""

    def to_wit(self) -> _types.HandleError:
        return _types.HandleError_Retry(self.reason)


class Reject(HandlerError):
    """A permanent failure: the host dead-letters the event at once."""

    def to_wit(self) -> _types.HandleError:
        return _types.HandleError_Reject(self.reason)


class CapabilityError(HandlerError):
    """A capability call failed. `message` is the host's explanation."""

    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(f"{self.kind}: {message}")
        self.message = message


class Denied(CapabilityError, Reject):
    """The manifest does not grant the call (a topic, a storage prefix): fix one of them."""

    kind = "denied"


class Invalid(CapabilityError, Reject):
    """The arguments are not acceptable; the same call fails the same way again."""

    kind = "invalid"


class Unavailable(CapabilityError, Retry):
    """The backend failed or could not be reached; the same call may succeed later."""

    kind = "unavailable"


def _capability_error(err: Err) -> CapabilityError:
    value = err.value
    if isinstance(value, _types.CapabilityError_Denied):
        return Denied(value.value)
    if isinstance(value, _types.CapabilityError_Invalid):
        return Invalid(value.value)
    return Unavailable(getattr(value, "value", str(value)))


def _call(f: Callable[..., Any], *args: Any) -> Any:
    """Call an imported capability function; its `Err` becomes a `CapabilityError`."""
    try:
        return f(*args)
    except Err as err:
        raise _capability_error(err) from None


# --- The event ------------------------------------------------------------------------

class Event:
    """One Kafka record plus where it came from (see `event` in the WIT package)."""

    __slots__ = ("_wit",)

    def __init__(self, wit: _types.Event) -> None:
        self._wit = wit

    topic = property(lambda self: self._wit.topic, doc="Full topic name, prefix included.")
    logical_topic = property(
        lambda self: self._wit.logical_topic,
        doc="Topic name as the manifest names it: branch on this, not on `topic`.",
    )
    partition = property(lambda self: self._wit.partition)
    offset = property(lambda self: self._wit.offset)
    timestamp_ms = property(lambda self: self._wit.timestamp_ms)
    key = property(lambda self: self._wit.key, doc="The record key (bytes) or None.")
    payload = property(lambda self: self._wit.payload, doc="The record value (bytes).")
    headers = property(lambda self: self._wit.headers, doc="List of `Header(key, value)`.")
    cloud_event = property(
        lambda self: self._wit.cloud_event,
        doc="CloudEvents attributes (binary mode), or None.",
    )

    def json(self) -> Any:
        """The payload decoded as JSON; a payload that does not decode is rejected."""
        try:
            return _json.loads(self.payload)
        except (ValueError, UnicodeDecodeError) as e:
            raise Reject(f"payload is not valid JSON: {e}") from None

    def text(self) -> str:
        """The payload as UTF-8 text; other bytes are rejected."""
        try:
            return self.payload.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Reject(f"payload is not UTF-8: {e}") from None

    def key_str(self) -> Optional[str]:
        """The record key as text, if there is a key and it is UTF-8."""
        if self.key is None:
            return None
        try:
            return self.key.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def header(self, name: str) -> Optional[bytes]:
        """The first header named `name` (case-sensitive, as Kafka headers are)."""
        for h in self.headers:
            if h.key == name:
                return h.value
        return None

    def header_str(self, name: str) -> Optional[str]:
        """The first header named `name`, if it is UTF-8 text."""
        value = self.header(name)
        if value is None:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def correlation_id(self) -> Optional[str]:
        """`correlation-id`, `x-correlation-id` or `correlationId` from the headers."""
        for name in ("correlation-id", "x-correlation-id", "correlationId"):
            value = self.header_str(name)
            if value is not None:
                return value
        return None

    def __repr__(self) -> str:
        return f"Event({self.topic}[{self.partition}]@{self.offset}, key={self.key!r})"


# --- The handler and its export -------------------------------------------------------

def _report_uncaught(e: BaseException) -> None:
    """Say what escaped the handler, on stderr: the host puts the `weir: uncaught` line
    into the trap's reason (and so the dead letter's), the traceback into the report."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = ""
    if tb is not None:
        where = f" (at {tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno})"
    print(f"weir: uncaught {type(e).__name__}: {e}{where}", file=_sys.stderr, flush=True)

class Handler:
    """What a plugin implements: `handle`, and optionally `init`."""

    def init(self) -> None:
        """Called once per instance before the first event. Raise to keep the plugin
        from loading; the message is shown to the operator."""

    def handle(self, event: Event) -> None:
        raise NotImplementedError("a weir.Handler must define handle(self, event)")


def export(handler_class: type) -> type:
    """The class componentize-py looks for: `WitWorld = weir.export(MyHandler)`."""

    class WitWorld:
        def __init__(self) -> None:
            self._handler = handler_class()

        def init(self) -> None:
            try:
                self._handler.init()
            except Exception as e:  # noqa: BLE001 - the operator sees the message
                raise Err(f"{type(e).__name__}: {e}") from None

        def handle(self, event: _types.Event) -> None:
            try:
                self._handler.handle(Event(event))
            except HandlerError as e:
                raise Err(e.to_wit()) from None
            except Exception as e:
                _report_uncaught(e)
                raise

        def handle_batch(self, events: List[_types.Event]) -> list:
            outcomes = []
            handle = self._handler.handle
            for i, event in enumerate(events):
                _batch.begin_event(i)
                try:
                    handle(Event(event))
                    outcomes.append(Ok(None))
                except HandlerError as e:
                    outcomes.append(Err(e.to_wit()))
                except Exception as e:
                    _report_uncaught(e)
                    raise
            return outcomes

    WitWorld.__name__ = WitWorld.__qualname__ = f"WitWorld[{handler_class.__name__}]"
    return WitWorld


# --- Capabilities ---------------------------------------------------------------------

class _Namespace:
    """A plain namespace, so `weir.cache.get(...)` reads like the Rust SDK."""

    def __init__(self, name: str, **members: Any) -> None:
        self.__name__ = name
        self.__dict__.update(members)


def _cache_get_string(key: str) -> Optional[str]:
    value = _call(_cache.get, key)
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(f"cache value of `{key}` is not UTF-8") from None


def _cache_set(key: str, value: Any, ttl_ms: Optional[int] = None) -> None:
    if isinstance(value, str):
        value = value.encode("utf-8")
    _call(_cache.set, key, bytes(value), ttl_ms)


cache = _Namespace(
    "weir.cache",
    get=lambda key: _call(_cache.get, key),
    get_string=_cache_get_string,
    set=_cache_set,
    delete=lambda key: _call(_cache.delete, key),
    delete_prefix=lambda prefix: _call(_cache.delete_prefix, prefix),
)
cache.__doc__ = """The cache capability: get, get_string, set(key, value, ttl_ms=None),
delete (returns whether the key was there), delete_prefix (returns how many)."""


def _storage_put(key: str, data: Any) -> None:
    if isinstance(data, str):
        data = data.encode("utf-8")
    _call(_storage.put, key, bytes(data))


storage = _Namespace(
    "weir.storage",
    get=lambda key: _call(_storage.get, key),
    put=_storage_put,
    delete=lambda key: _call(_storage.delete, key),
    list=lambda prefix: _call(_storage.list, prefix),
    schedule_deletion_at=lambda key, unix_ms: _call(
        _storage.schedule_deletion, key, _storage.DeletionTime_AtMs(int(unix_ms))
    ),
    schedule_deletion_after=lambda key, grace_ms: _call(
        _storage.schedule_deletion, key, _storage.DeletionTime_AfterMs(int(grace_ms))
    ),
    cancel_deletion=lambda key: _call(_storage.cancel_deletion, key),
)
storage.__doc__ = """The storage capability: get, put, delete, list(prefix) (objects with
key, size, last_modified_ms), schedule_deletion_at(key, unix_ms),
schedule_deletion_after(key, grace_ms), cancel_deletion (returns whether one was scheduled)."""


class Message:
    """A message under construction:
    `publish.Message("topic").key("k").json(value).header("h", "v").send()`."""

    __slots__ = ("topic", "_key", "_payload", "_headers")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._key: Optional[bytes] = None
        self._payload = b""
        self._headers: List[_types.Header] = []

    def key(self, key: Any) -> "Message":
        """The partitioning key: messages with one key stay in order."""
        self._key = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        return self

    def payload(self, payload: Any) -> "Message":
        self._payload = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        return self

    def json(self, value: Any) -> "Message":
        """Serialize `value` as the compact JSON payload."""
        try:
            self._payload = _json.dumps(value, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise Reject(f"cannot serialize message: {e}") from None
        return self

    def header(self, key: str, value: Any) -> "Message":
        value = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        self._headers.append(_types.Header(key, value))
        return self

    def send(self) -> None:
        """Queue the message; it is sent when the handler returns normally."""
        _call(_publish.send, _publish.Message(self.topic, self._key, self._payload, self._headers))


publish = _Namespace("weir.publish", Message=Message)


def _fields(fields: Any, named: dict) -> list:
    items = list(fields.items() if isinstance(fields, dict) else fields)
    items.extend(named.items())
    return [_log.Field(str(k), str(v)) for k, v in items]


def _writer(level: Any) -> Callable[..., None]:
    def write(message: str, fields: Any = (), **named: Any) -> None:
        try:
            _log.write(level, message, _fields(fields, named))
        except Err:
            pass  # the only failure is the per-event line limit: dropping the line is the point

    return write


log = _Namespace(
    "weir.log",
    Level=_log.Level,
    write=lambda level, message, fields=(), **named: _writer(level)(message, fields, **named),
    trace=_writer(_log.Level.TRACE),
    debug=_writer(_log.Level.DEBUG),
    info=_writer(_log.Level.INFO),
    warn=_writer(_log.Level.WARN),
    error=_writer(_log.Level.ERROR),
)
log.__doc__ = """The log capability: log.info("message", user_id=u, ...), or with fields
whose names are not identifiers: log.info("message", [("user-id", u)]) (a list of pairs or a
dict); also trace, debug, warn, error and write(level, message, ...)."""


def _config_get_or(key: str, default: str) -> str:
    value = _call(_config.get, key)
    return default if value is None else value


def _config_get_int(key: str) -> Optional[int]:
    value = _call(_config.get, key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as e:
        raise Invalid(f"config `{key}` = {value!r}: {e}") from None


def _config_get_json(key: str) -> Any:
    value = _call(_config.get, key)
    if value is None:
        return None
    try:
        return _json.loads(value)
    except ValueError as e:
        raise Invalid(f"config `{key}`: {e}") from None


config = _Namespace(
    "weir.config",
    get=lambda key: _call(_config.get, key),
    get_or=_config_get_or,
    get_int=_config_get_int,
    get_json=_config_get_json,
    get_all=lambda: dict(_call(_config.get_all)),
)
config.__doc__ = """The config capability (the manifest's [config] table): get, get_or,
get_int, get_json (tables and arrays), get_all (a dict)."""
