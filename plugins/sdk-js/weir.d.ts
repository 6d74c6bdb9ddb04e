// Type declarations of the Weir JavaScript SDK (weir.js). The WIT types they name
// (`weir:plugin/...`) are declared in `.weir/types`, which `weir build` generates
// from the WIT package the host carries, so a TypeScript handler is checked
// against the contract it runs under.

import type * as wit from "weir:plugin/types@0.1.0";

/** One Kafka record header: `value` is raw bytes, usually UTF-8 text. */
export type Header = wit.Header;
/** CloudEvents attributes of a binary-mode CloudEvent. */
export type CloudEvent = wit.CloudEvent;
/** The WIT `handle-error`: what a failed event tells the host. */
export type HandleError = wit.HandleError;

/** Why a handler did not finish an event (base of `Retry`, `Reject`, `CapabilityError`). */
export class HandlerError extends Error {
  constructor(reason?: string, outcome?: "retry" | "reject");
  readonly reason: string;
  /** What the host does with the event. */
  readonly outcome: "retry" | "reject";
  toWit(): HandleError;
}
/** A transient failure: the host retries the event with backoff, then dead-letters it. */
export class Retry extends HandlerError {
  constructor(reason?: string);
}
/** A permanent failure: the host dead-letters the event at once. */
export class Reject extends HandlerError {
  constructor(reason?: string);
}
/** A capability call failed; `message` is the host's explanation. */
export class CapabilityError extends HandlerError {
  readonly kind: "denied" | "invalid" | "unavailable";
}
/** The manifest does not grant the call: a reject. */
export class Denied extends CapabilityError {
  constructor(message: string);
}
/** The arguments are not acceptable: a reject. */
export class Invalid extends CapabilityError {
  constructor(message: string);
}
/** The backend failed or could not be reached: a retry. */
export class Unavailable extends CapabilityError {
  constructor(message: string);
}

/** One Kafka record plus where it came from. */
export class Event {
  private constructor();
  /** Full topic name, prefix included. */
  readonly topic: string;
  /** Topic name as the manifest names it: branch on this, not on `topic`. */
  readonly logicalTopic: string;
  readonly partition: number;
  readonly offset: bigint;
  /** Milliseconds since the Unix epoch, when the record has a timestamp. */
  readonly timestampMs: bigint | undefined;
  readonly key: Uint8Array | undefined;
  readonly payload: Uint8Array;
  readonly headers: readonly Header[];
  readonly cloudEvent: CloudEvent | undefined;
  /** The payload decoded as JSON; throws `Reject` when it does not decode. */
  json<T = any>(): T;
  /** The payload as UTF-8 text; throws `Reject` for other bytes. */
  text(): string;
  /** The key as text, if there is one and it is UTF-8. */
  keyStr(): string | undefined;
  /** The first header named `name` (case-sensitive), as bytes. */
  header(name: string): Uint8Array | undefined;
  /** The first header named `name`, if it is UTF-8 text. */
  headerStr(name: string): string | undefined;
  /** `correlation-id`, `x-correlation-id` or `correlationId` from the headers. */
  correlationId(): string | undefined;
}

/** What a plugin implements. `handle` may be async. */
export interface Handler {
  /** Called once per instance before the first event; throw to keep the plugin from loading. */
  init?(): void | Promise<void>;
  handle(event: Event): void | Promise<void>;
}

/** The exports of the `batch-handler` world. */
export interface Exports {
  init(): void;
  handle(event: wit.Event): void;
  handleBatch(events: wit.Event[]): unknown[];
}

/** `export const { init, handle, handleBatch } = weir.exportHandler({ handle(event) { ... } });` */
export function exportHandler(handler: Handler | ((event: Event) => void | Promise<void>)): Exports;

/** Text or bytes, where a capability takes bytes. */
export type Bytes = string | Uint8Array | ArrayBufferView | ArrayBuffer;
/** Milliseconds, as a number or a bigint. */
export type Millis = number | bigint;

export const cache: {
  get(key: string): Uint8Array | undefined;
  getString(key: string): string | undefined;
  set(key: string, value: Bytes, ttlMs?: Millis): void;
  /** Whether an entry was there. */
  delete(key: string): boolean;
  /** How many keys were removed. */
  deletePrefix(prefix: string): number;
};

export interface ObjectInfo {
  key: string;
  size: number;
  lastModifiedMs: number;
}

export const storage: {
  get(key: string): Uint8Array | undefined;
  put(key: string, data: Bytes): void;
  delete(key: string): void;
  list(prefix: string): ObjectInfo[];
  /** Delete the object at this instant (milliseconds since the Unix epoch), once the event succeeds. */
  scheduleDeletionAt(key: string, unixMs: Millis): void;
  /** Delete the object after this grace period, once the event succeeds. */
  scheduleDeletionAfter(key: string, graceMs: Millis): void;
  /** Whether a deletion was scheduled. */
  cancelDeletion(key: string): boolean;
};

export class Message {
  constructor(topic: string);
  key(key: Bytes): this;
  payload(payload: Bytes): this;
  json(value: unknown): this;
  header(key: string, value: Bytes): this;
  /** Queue the message; it is sent when the handler returns normally. */
  send(): void;
}

export const publish: {
  message(topic: string): Message;
  Message: typeof Message;
};

export type Level = "trace" | "debug" | "info" | "warn" | "error";
/** Structured fields: an object, or a list of pairs for names that repeat. */
export type Fields = Record<string, unknown> | ReadonlyArray<readonly [string, unknown]>;
type Write = (message: string, fields?: Fields) => void;

export const log: {
  write(level: Level, message: string, fields?: Fields): void;
  trace: Write;
  debug: Write;
  info: Write;
  warn: Write;
  error: Write;
};

export const config: {
  get(key: string): string | undefined;
  getOr(key: string, fallback: string): string;
  getInt(key: string): number | undefined;
  getJson<T = unknown>(key: string): T | undefined;
  getAll(): Record<string, string>;
};

declare global {
  /** StarlingMonkey's console: lines go to the host's log and the event's report. */
  var console: {
    log(...data: unknown[]): void;
    info(...data: unknown[]): void;
    warn(...data: unknown[]): void;
    error(...data: unknown[]): void;
    debug(...data: unknown[]): void;
  };
  class TextEncoder {
    encode(input?: string): Uint8Array;
  }
  class TextDecoder {
    constructor(label?: string, options?: { fatal?: boolean });
    decode(input?: Uint8Array): string;
  }
}
