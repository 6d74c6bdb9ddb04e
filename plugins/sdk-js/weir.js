// weir: write Weir event handlers in JavaScript or TypeScript.
//
// A Weir plugin is a WebAssembly component for the `weir:plugin/batch-handler`
// world. componentize-js builds one from an ES module (`weir build` runs it for
// you); this module wraps the world's imports so a handler reads like ordinary
// JavaScript:
//
//     import * as weir from "./weir.js";
//     import { cache, publish } from "./weir.js";
//
//     export const { init, handle, handleBatch } = weir.exportHandler({
//       handle(event) {
//         const body = event.json();                       // malformed JSON -> Reject
//         cache.delete(`presigned:${body.userId}`);        // backend down -> Retry
//         publish.message("audit").key(body.userId).json(body).send();
//       },
//     });
//
// Outcomes: return normally and the event is handled (what it published is sent,
// its offset moves on). Throw `new weir.Retry(reason)` for a transient failure (the
// host retries with backoff, then dead-letters) or `new weir.Reject(reason)` for a
// permanent one (dead-lettered at once). A failed capability call throws a
// `weir.CapabilityError`: `Unavailable` retries, `Denied` and `Invalid` reject, so
// leaving it uncaught does the right thing. Any other exception escaping `handle`
// is a bug: the component traps, the host reports the message and stack, replaces
// the instance and retries.

import * as witBatch from "weir:plugin/batch@0.1.0";
import * as witCache from "weir:plugin/cache@0.1.0";
import * as witConfig from "weir:plugin/config@0.1.0";
import * as witLog from "weir:plugin/log@0.1.0";
import * as witPublish from "weir:plugin/publish@0.1.0";
import * as witStorage from "weir:plugin/storage@0.1.0";

// --- Outcomes ----------------------------------------------------------------------

/** Why a handler did not finish an event (base of `Retry`, `Reject` and `CapabilityError`). */
export class HandlerError extends Error {
  constructor(reason = "", outcome = "reject") {
    super(String(reason));
    this.name = new.target.name;
    this.reason = String(reason);
    /** What the host does with the event: "retry" or "reject". */
    this.outcome = outcome;
  }

  /** The WIT `handle-error` this stands for. */
  toWit() {
    return { tag: this.outcome, val: this.reason };
  }
}

/** A transient failure: the host retries the event with backoff. */
export class Retry extends HandlerError {
  constructor(reason = "") {
    super(reason, "retry");
  }
}

/** A permanent failure: the host dead-letters the event at once. */
export class Reject extends HandlerError {
  constructor(reason = "") {
    super(reason, "reject");
  }
}

/** A capability call failed. `message` is the host's explanation. */
export class CapabilityError extends HandlerError {
  constructor(kind, message, outcome) {
    super(`${kind}: ${message}`, outcome);
    this.kind = kind;
    this.message = String(message);
  }
}

/** The manifest does not grant the call (a topic, a storage prefix): fix one of them. A reject. */
export class Denied extends CapabilityError {
  constructor(message) {
    super("denied", message, "reject");
  }
}

/** The arguments are not acceptable; the same call fails the same way again. A reject. */
export class Invalid extends CapabilityError {
  constructor(message) {
    super("invalid", message, "reject");
  }
}

/** The backend failed or could not be reached; the same call may succeed later. A retry. */
export class Unavailable extends CapabilityError {
  constructor(message) {
    super("unavailable", message, "retry");
  }
}

function capabilityError(thrown) {
  // componentize-js throws an imported function's `err` value (a `capability-error`),
  // or an Error carrying it as `payload`.
  const err = thrown && typeof thrown === "object" && "payload" in thrown ? thrown.payload : thrown;
  if (!err || typeof err !== "object" || typeof err.tag !== "string") {
    return null;
  }
  switch (err.tag) {
    case "denied":
      return new Denied(err.val);
    case "invalid":
      return new Invalid(err.val);
    default:
      return new Unavailable(err.val);
  }
}

/** Call an imported capability function; its `err` becomes a `CapabilityError`. */
function call(f, ...args) {
  try {
    return f(...args);
  } catch (thrown) {
    throw capabilityError(thrown) ?? thrown;
  }
}

// --- Bytes and numbers ---------------------------------------------------------------

const encoder = new TextEncoder();
const strict = new TextDecoder("utf-8", { fatal: true });

function bytes(value, what) {
  if (typeof value === "string") {
    return encoder.encode(value);
  }
  if (value instanceof Uint8Array) {
    return value;
  }
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (value instanceof ArrayBuffer) {
    return new Uint8Array(value);
  }
  throw new Invalid(`${what} must be a string or bytes (a Uint8Array), not ${typeof value}`);
}

function utf8(data) {
  try {
    return strict.decode(data);
  } catch {
    return undefined;
  }
}

/** A count of milliseconds as the WIT's u64 or s64. */
function millis(value, what, signed) {
  if (typeof value === "bigint") {
    if (!signed && value < 0n) {
      throw new Invalid(`${what} must not be negative, got ${value}`);
    }
    return value;
  }
  if (typeof value !== "number" || !Number.isFinite(value) || (!signed && value < 0)) {
    throw new Invalid(`${what} must be a ${signed ? "" : "non-negative "}number of milliseconds, got ${value}`);
  }
  return BigInt(Math.trunc(value));
}

// --- The event ---------------------------------------------------------------------

/** One Kafka record plus where it came from (see `event` in the WIT package). */
export class Event {
  #wit;

  constructor(wit) {
    this.#wit = wit;
  }

  /** Full topic name, prefix included. */
  get topic() { return this.#wit.topic; }
  /** Topic name as the manifest names it: branch on this, not on `topic`. */
  get logicalTopic() { return this.#wit.logicalTopic; }
  get partition() { return this.#wit.partition; }
  /** The record's offset (a bigint). */
  get offset() { return this.#wit.offset; }
  /** Milliseconds since the Unix epoch (a bigint), or undefined. */
  get timestampMs() { return this.#wit.timestampMs; }
  /** The record key (bytes), or undefined. */
  get key() { return this.#wit.key; }
  /** The record value (bytes). */
  get payload() { return this.#wit.payload; }
  /** The headers, in order: `{ key, value }` with the value as bytes. */
  get headers() { return this.#wit.headers; }
  /** CloudEvents attributes (binary mode), or undefined. */
  get cloudEvent() { return this.#wit.cloudEvent; }

  /** The payload decoded as JSON; a payload that does not decode is rejected. */
  json() {
    const text = utf8(this.payload);
    if (text === undefined) {
      throw new Reject("payload is not valid JSON: it is not UTF-8");
    }
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new Reject(`payload is not valid JSON: ${e.message}`);
    }
  }

  /** The payload as UTF-8 text; other bytes are rejected. */
  text() {
    const text = utf8(this.payload);
    if (text === undefined) {
      throw new Reject("payload is not UTF-8");
    }
    return text;
  }

  /** The record key as text, if there is a key and it is UTF-8. */
  keyStr() {
    return this.key === undefined ? undefined : utf8(this.key);
  }

  /** The first header named `name` (case-sensitive, as Kafka headers are), as bytes. */
  header(name) {
    return this.headers.find((h) => h.key === name)?.value;
  }

  /** The first header named `name`, if it is UTF-8 text. */
  headerStr(name) {
    const value = this.header(name);
    return value === undefined ? undefined : utf8(value);
  }

  /** `correlation-id`, `x-correlation-id` or `correlationId` from the headers. */
  correlationId() {
    for (const name of ["correlation-id", "x-correlation-id", "correlationId"]) {
      const value = this.headerStr(name);
      if (value !== undefined) {
        return value;
      }
    }
    return undefined;
  }

  toString() {
    return `Event(${this.topic}[${this.partition}]@${this.offset})`;
  }
}

// --- The handler and its export ------------------------------------------------------

/**
 * Any exception other than a `HandlerError` is a bug in the plugin: say what it was
 * on stderr (the host puts the `weir: uncaught` line into the trap's reason, and
 * every line into the event's report and its log), then trap.
 */
function trap(thrown) {
  const what = thrown instanceof Error ? `${thrown.name}: ${thrown.message}` : `exception: ${String(thrown)}`;
  const stack = thrown instanceof Error && typeof thrown.stack === "string" ? thrown.stack : "";
  // SpiderMonkey's frames read `function@file:line:column`; the first is where it was thrown.
  const top = stack.split("\n")[0] ?? "";
  const at = top.includes("@") ? top.slice(top.lastIndexOf("@") + 1).replace(/^.*\.weir\/js\//, "") : "";
  console.error(`weir: uncaught ${what}${at ? ` (at ${at})` : ""}`);
  if (stack) {
    console.error(stack);
  }
  // A value that is no `handle-error` cannot be returned: the call traps.
  throw thrown;
}

/** What a thrown value means for the event: a WIT `handle-error`, or a trap. */
function failure(thrown) {
  if (thrown instanceof HandlerError) {
    return thrown.toWit();
  }
  return trap(thrown);
}

function isThenable(value) {
  return value !== null && typeof value === "object" && typeof value.then === "function";
}

/**
 * The exports componentize-js looks for, from a handler: an object with
 * `handle(event)` (and optionally `init()`), or a `handle` function.
 *
 *     export const { init, handle, handleBatch } = weir.exportHandler({ handle(event) { ... } });
 *
 * `handle` may be async (return a promise): the component waits for it.
 */
export function exportHandler(handler) {
  const target = typeof handler === "function" ? { handle: handler } : handler;
  if (!target || typeof target.handle !== "function") {
    throw new TypeError("weir.exportHandler needs an object with a handle(event) method, or a function");
  }
  const userHandle = target.handle.bind(target);
  const userInit = typeof target.init === "function" ? target.init.bind(target) : () => {};

  function init() {
    try {
      const done = userInit();
      if (isThenable(done)) {
        return done.then(undefined, (e) => {
          throw initError(e);
        });
      }
    } catch (e) {
      throw initError(e);
    }
  }

  function handle(wit) {
    let done;
    try {
      done = userHandle(new Event(wit));
    } catch (e) {
      throw failure(e);
    }
    if (isThenable(done)) {
      return done.then(
        () => undefined,
        (e) => {
          throw failure(e);
        },
      );
    }
    return undefined;
  }

  function handleBatch(events) {
    const outcomes = new Array(events.length);
    let pending = null;
    for (let i = 0; i < events.length; i++) {
      if (pending) {
        // An async handler: the rest of the batch waits for it, in order.
        pending = pending.then(() => one(i));
      } else {
        const done = one(i);
        if (isThenable(done)) {
          pending = done;
        }
      }
    }
    function one(i) {
      witBatch.beginEvent(i);
      let done;
      try {
        done = userHandle(new Event(events[i]));
      } catch (e) {
        outcomes[i] = { tag: "err", val: failure(e) };
        return undefined;
      }
      if (isThenable(done)) {
        return done.then(
          () => {
            outcomes[i] = { tag: "ok", val: undefined };
          },
          (e) => {
            outcomes[i] = { tag: "err", val: failure(e) };
          },
        );
      }
      outcomes[i] = { tag: "ok", val: undefined };
      return undefined;
    }
    return pending ? pending.then(() => outcomes) : outcomes;
  }

  return { init, handle, handleBatch };
}

function initError(e) {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

// --- Capabilities --------------------------------------------------------------------

/**
 * The cache capability: get (bytes or undefined), getString, set(key, value, ttlMs?),
 * delete (whether the key was there), deletePrefix (how many were removed).
 */
export const cache = Object.freeze({
  get(key) {
    return call(witCache.get, key);
  },
  getString(key) {
    const value = call(witCache.get, key);
    if (value === undefined) {
      return undefined;
    }
    const text = utf8(value);
    if (text === undefined) {
      throw new Invalid(`cache value of \`${key}\` is not UTF-8`);
    }
    return text;
  },
  set(key, value, ttlMs) {
    const ttl = ttlMs === undefined || ttlMs === null ? undefined : millis(ttlMs, "ttlMs", false);
    call(witCache.set, key, bytes(value, "a cache value"), ttl);
  },
  delete(key) {
    return call(witCache.delete, key);
  },
  deletePrefix(prefix) {
    return Number(call(witCache.deletePrefix, prefix));
  },
});

/**
 * The storage capability: get, put, delete, list(prefix) (objects with key, size,
 * lastModifiedMs), scheduleDeletionAt(key, unixMs), scheduleDeletionAfter(key, graceMs),
 * cancelDeletion (whether one was scheduled).
 */
export const storage = Object.freeze({
  get(key) {
    return call(witStorage.get, key);
  },
  put(key, data) {
    call(witStorage.put, key, bytes(data, "an object's data"));
  },
  delete(key) {
    call(witStorage.delete, key);
  },
  list(prefix) {
    return call(witStorage.list, prefix).map((o) => ({
      key: o.key,
      size: Number(o.size),
      lastModifiedMs: Number(o.lastModifiedMs),
    }));
  },
  scheduleDeletionAt(key, unixMs) {
    call(witStorage.scheduleDeletion, key, { tag: "at-ms", val: millis(unixMs, "unixMs", true) });
  },
  scheduleDeletionAfter(key, graceMs) {
    call(witStorage.scheduleDeletion, key, { tag: "after-ms", val: millis(graceMs, "graceMs", false) });
  },
  cancelDeletion(key) {
    return call(witStorage.cancelDeletion, key);
  },
});

/** A message under construction: `publish.message("topic").key("k").json(value).header("h", "v").send()`. */
export class Message {
  #topic;
  #key = undefined;
  #payload = new Uint8Array(0);
  #headers = [];

  constructor(topic) {
    this.#topic = String(topic);
  }

  /** The partitioning key: messages with one key stay in order. */
  key(key) {
    this.#key = bytes(key, "a message key");
    return this;
  }

  /** The payload, as text or bytes. */
  payload(payload) {
    this.#payload = bytes(payload, "a message payload");
    return this;
  }

  /** Serialize `value` as the compact JSON payload. */
  json(value) {
    let text;
    try {
      text = JSON.stringify(value);
    } catch (e) {
      throw new Reject(`cannot serialize message: ${e.message}`);
    }
    if (text === undefined) {
      throw new Reject(`cannot serialize message: ${typeof value} has no JSON form`);
    }
    this.#payload = encoder.encode(text);
    return this;
  }

  header(key, value) {
    this.#headers.push({ key: String(key), value: bytes(value, "a header value") });
    return this;
  }

  /** Queue the message; it is sent when the handler returns normally. */
  send() {
    call(witPublish.send, { topic: this.#topic, key: this.#key, payload: this.#payload, headers: this.#headers });
  }
}

/** The publish capability: `publish.message(topic)` starts a `Message`. */
export const publish = Object.freeze({
  message(topic) {
    return new Message(topic);
  },
  Message,
});

function fields(given) {
  if (given === undefined || given === null) {
    return [];
  }
  const pairs = Array.isArray(given) ? given : Object.entries(given);
  return pairs.map(([key, value]) => ({ key: String(key), value: String(value) }));
}

function writer(level) {
  return (message, given) => {
    try {
      witLog.write(level, String(message), fields(given));
    } catch {
      // The only failure is the per-event line limit: dropping the line is the point.
    }
  };
}

/**
 * The log capability: `log.info("message", { "user-id": u })` (an object or a list of
 * pairs); also trace, debug, warn, error and write(level, message, fields).
 */
export const log = Object.freeze({
  write(level, message, given) {
    writer(level)(message, given);
  },
  trace: writer("trace"),
  debug: writer("debug"),
  info: writer("info"),
  warn: writer("warn"),
  error: writer("error"),
});

/**
 * The config capability (the manifest's [config] table): get, getOr, getInt, getJson
 * (tables and arrays), getAll (an object).
 */
export const config = Object.freeze({
  get(key) {
    return call(witConfig.get, key);
  },
  getOr(key, fallback) {
    const value = call(witConfig.get, key);
    return value === undefined ? fallback : value;
  },
  getInt(key) {
    const value = call(witConfig.get, key);
    if (value === undefined) {
      return undefined;
    }
    if (!/^[+-]?\d+$/.test(value.trim())) {
      throw new Invalid(`config \`${key}\` = ${JSON.stringify(value)}: not an integer`);
    }
    return Number.parseInt(value, 10);
  },
  getJson(key) {
    const value = call(witConfig.get, key);
    if (value === undefined) {
      return undefined;
    }
    try {
      return JSON.parse(value);
    } catch (e) {
      throw new Invalid(`config \`${key}\`: ${e.message}`);
    }
  },
  getAll() {
    return Object.fromEntries(call(witConfig.getAll));
  },
});
