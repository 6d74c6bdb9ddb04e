"""track-deletions in Python: NovaTune's lifecycle worker (seeds 000 and 001).

The same plugin as `plugins/track-deletions` (Rust), written with the Python SDK; both
make the same capability calls on the same events (a test checks it).

On a `TrackDeletedEvent` it removes the track's presigned-URL cache entries and
schedules the deletion of the audio object (and its waveform). Every step is idempotent.

- schema version 2 (seed 000): all fields; deletions at `ScheduledDeletionAt`.
- schema version 1 (seed 001): only `TrackId`, `UserId`, `Timestamp`; the object key comes
  from the `object_key_template` config value, due after `grace_period_hours` (default 24).
- anything else, or malformed JSON: rejected with the reason. Backend down: retried.
"""

import json
import re
from datetime import datetime

import weir
from weir import cache, config, log, storage

# RFC 3339: date, `T`, time, optional fraction, `Z` or an offset.
RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def field(body: dict, name: str, kind: type, required: bool = True):
    """`body[name]` (PascalCase, or camelCase as some producers send), checked."""
    camel = name[0].lower() + name[1:]
    value = body.get(name, body.get(camel))
    if value is None:
        if required:
            raise weir.Reject(f"missing field `{name}`")
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise weir.Reject(f"field `{name}`: expected {kind.__name__}, got {value!r}")
    return value


def unix_ms(name: str, value: str) -> int:
    m = RFC3339.match(value)
    if not m:
        raise weir.Reject(f"{name} {json.dumps(value)} is not an RFC 3339 timestamp")
    text = value.upper().replace("Z", "+00:00")
    # datetime takes at most 6 fraction digits; .NET writes 7.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError as e:
        raise weir.Reject(f"{name} {json.dumps(value)} is not an RFC 3339 timestamp: {e}") from None


def invalidate(user_id: str, track_id: str, waveform: bool) -> int:
    """Remove the presigned-URL cache entries of the track (and of its waveform)."""
    if not user_id or not track_id:
        raise weir.Reject("UserId and TrackId must not be empty")
    key = f"presigned:{user_id}:{track_id}"
    removed = int(cache.delete(key))
    if waveform:
        removed += int(cache.delete(f"{key}:waveform"))
    return removed


def handle_v2(body: dict) -> None:
    track_id = field(body, "TrackId", str)
    user_id = field(body, "UserId", str)
    object_key = field(body, "ObjectKey", str)
    waveform = field(body, "WaveformObjectKey", str, required=False)
    field(body, "FileSizeBytes", int)
    deleted_at = field(body, "DeletedAt", str)
    scheduled_at = field(body, "ScheduledDeletionAt", str)
    correlation_id = field(body, "CorrelationId", str)
    field(body, "Timestamp", str)

    due = unix_ms("ScheduledDeletionAt", scheduled_at)
    unix_ms("DeletedAt", deleted_at)
    removed = invalidate(user_id, track_id, waveform is not None)
    storage.schedule_deletion_at(object_key, due)
    if waveform is not None:
        storage.schedule_deletion_at(waveform, due)
    log.info(
        "track deleted: cache invalidated, deletion scheduled",
        [
            ("track-id", track_id),
            ("user-id", user_id),
            ("cache-entries-removed", removed),
            ("scheduled-deletion-at", scheduled_at),
            ("correlation-id", correlation_id),
        ],
    )


def handle_v1(body: dict) -> None:
    track_id = field(body, "TrackId", str)
    user_id = field(body, "UserId", str)
    field(body, "Timestamp", str)

    template = config.get_or("object_key_template", "audio/{userId}/{trackId}")
    grace_hours = config.get_int("grace_period_hours")
    grace_hours = 24 if grace_hours is None else grace_hours
    object_key = template.replace("{userId}", user_id).replace("{trackId}", track_id)
    removed = invalidate(user_id, track_id, False)
    storage.schedule_deletion_after(object_key, grace_hours * 3600 * 1000)
    log.info(
        "track deleted (schema v1): cache invalidated, deletion scheduled",
        [
            ("track-id", track_id),
            ("object-key", object_key),
            ("cache-entries-removed", removed),
            ("grace-period-hours", grace_hours),
        ],
    )


class TrackDeletions(weir.Handler):
    def handle(self, event: weir.Event) -> None:
        body = event.json()
        if not isinstance(body, dict):
            raise weir.Reject("payload is not a JSON object")
        version = body.get("SchemaVersion", body.get("schemaVersion", 2))
        if version == 2:
            handle_v2(body)
        elif version == 1:
            handle_v1(body)
        else:
            raise weir.Reject(f"unsupported SchemaVersion {version} (this plugin handles 1 and 2)")


WitWorld = weir.export(TrackDeletions)
