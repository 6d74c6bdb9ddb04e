// track-deletions in TypeScript: NovaTune's lifecycle worker (seeds 000 and 001).
//
// The same plugin as `plugins/track-deletions` (Rust) and `plugins/track-deletions-py`
// (Python), written with the JavaScript SDK; all three make the same capability calls
// on the same events (a test checks it).
//
// On a `TrackDeletedEvent` it removes the track's presigned-URL cache entries and
// schedules the deletion of the audio object (and its waveform). Every step is idempotent.
//
// - schema version 2 (seed 000): all fields; deletions at `ScheduledDeletionAt`.
// - schema version 1 (seed 001): only `TrackId`, `UserId`, `Timestamp`; the object key
//   comes from the `object_key_template` config value, due after `grace_period_hours`
//   (default 24).
// - anything else, or malformed JSON: rejected with the reason. Backend down: retried.

import * as weir from "./weir.js";
import { cache, config, log, storage } from "./weir.js";

type Body = Record<string, unknown>;

/** `body[name]` (PascalCase, or camelCase as some producers send), checked. */
function field(body: Body, name: string, kind: "string"): string;
function field(body: Body, name: string, kind: "string", required: false): string | undefined;
function field(body: Body, name: string, kind: "integer"): number;
function field(body: Body, name: string, kind: "string" | "integer", required = true): unknown {
  const camel = name[0].toLowerCase() + name.slice(1);
  const value = body[name] ?? body[camel];
  if (value === undefined || value === null) {
    if (required) {
      throw new weir.Reject(`missing field \`${name}\``);
    }
    return undefined;
  }
  const ok = kind === "string" ? typeof value === "string" : Number.isSafeInteger(value);
  if (!ok) {
    throw new weir.Reject(`field \`${name}\`: expected ${kind}, got ${JSON.stringify(value)}`);
  }
  return value;
}

// RFC 3339: date, `T`, time, optional fraction, `Z` or an offset.
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/** Milliseconds since the Unix epoch of an RFC 3339 timestamp (fraction truncated). */
function unixMs(name: string, value: string): number {
  const m = RFC3339.exec(value);
  const fail = (why: string) =>
    new weir.Reject(`${name} ${JSON.stringify(value)} is not an RFC 3339 timestamp${why}`);
  if (!m) {
    throw fail("");
  }
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number);
  const millis = Number((m[7] ?? "").padEnd(3, "0").slice(0, 3));
  const local = Date.UTC(year, month - 1, day, hour, minute, second, millis);
  const back = new Date(local);
  // Date.UTC rolls 2026-02-30 over into March: a date that does not exist is refused.
  if (
    back.getUTCFullYear() !== year || back.getUTCMonth() !== month - 1 || back.getUTCDate() !== day ||
    back.getUTCHours() !== hour || back.getUTCMinutes() !== minute || back.getUTCSeconds() !== second
  ) {
    throw fail(": a field is out of range");
  }
  const offset = m[8] ? 0 : (m[9] === "-" ? -1 : 1) * (Number(m[10]) * 60 + Number(m[11])) * 60_000;
  return local - offset;
}

/** Remove the presigned-URL cache entries of the track (and of its waveform). */
function invalidate(userId: string, trackId: string, waveform: boolean): number {
  if (!userId || !trackId) {
    throw new weir.Reject("UserId and TrackId must not be empty");
  }
  const key = `presigned:${userId}:${trackId}`;
  let removed = Number(cache.delete(key));
  if (waveform) {
    removed += Number(cache.delete(`${key}:waveform`));
  }
  return removed;
}

function handleV2(body: Body): void {
  const trackId = field(body, "TrackId", "string");
  const userId = field(body, "UserId", "string");
  const objectKey = field(body, "ObjectKey", "string");
  const waveform = field(body, "WaveformObjectKey", "string", false);
  field(body, "FileSizeBytes", "integer");
  const deletedAt = field(body, "DeletedAt", "string");
  const scheduledAt = field(body, "ScheduledDeletionAt", "string");
  const correlationId = field(body, "CorrelationId", "string");
  field(body, "Timestamp", "string");

  const due = unixMs("ScheduledDeletionAt", scheduledAt);
  unixMs("DeletedAt", deletedAt);
  const removed = invalidate(userId, trackId, waveform !== undefined);
  storage.scheduleDeletionAt(objectKey, due);
  if (waveform !== undefined) {
    storage.scheduleDeletionAt(waveform, due);
  }
  log.info("track deleted: cache invalidated, deletion scheduled", [
    ["track-id", trackId],
    ["user-id", userId],
    ["cache-entries-removed", removed],
    ["scheduled-deletion-at", scheduledAt],
    ["correlation-id", correlationId],
  ]);
}

function handleV1(body: Body): void {
  const trackId = field(body, "TrackId", "string");
  const userId = field(body, "UserId", "string");
  field(body, "Timestamp", "string");

  const template = config.getOr("object_key_template", "audio/{userId}/{trackId}");
  const graceHours = config.getInt("grace_period_hours") ?? 24;
  const objectKey = template.replaceAll("{userId}", userId).replaceAll("{trackId}", trackId);
  const removed = invalidate(userId, trackId, false);
  storage.scheduleDeletionAfter(objectKey, graceHours * 3600 * 1000);
  log.info("track deleted (schema v1): cache invalidated, deletion scheduled", [
    ["track-id", trackId],
    ["object-key", objectKey],
    ["cache-entries-removed", removed],
    ["grace-period-hours", graceHours],
  ]);
}

function handleDeleted(event: weir.Event): void {
  const body = event.json<unknown>();
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new weir.Reject("payload is not a JSON object");
  }
  const version = (body as Body).SchemaVersion ?? (body as Body).schemaVersion ?? 2;
  if (version === 2) {
    handleV2(body as Body);
  } else if (version === 1) {
    handleV1(body as Body);
  } else {
    throw new weir.Reject(`unsupported SchemaVersion ${JSON.stringify(version)} (this plugin handles 1 and 2)`);
  }
}

export const { init, handle, handleBatch } = weir.exportHandler({ handle: handleDeleted });
