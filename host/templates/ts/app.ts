// {{name}}: a Weir plugin.
//
// The worked example: an `ItemViewed` event (`{"userId": "...", "itemId": "..."}`) is
// decoded, remembered in the cache for an hour, and announced on the `{{name}}-out`
// topic, keyed by user so one user's messages stay in order.
//
// Outcomes: return normally and the event is done. `throw new weir.Retry(reason)` asks
// the host to retry (then dead-letter), `throw new weir.Reject(reason)` dead-letters at
// once. A failed capability call throws the right one by itself: `unavailable` retries,
// `denied` and `invalid` reject. Any other exception is a bug: the host reports it and
// retries. Handlers must be idempotent: at-least-once delivery means an event may
// come again after a crash or a rebalance.
//
// `weir build` type-checks this file against the SDK (weir.d.ts) and the WIT
// contract the host carries (written to .weir/types), then builds the component.

import * as weir from "./weir.js";
import { cache, log, publish } from "./weir.js";

// The topic this plugin publishes to (granted in {{name}}.toml).
const OUT = "{{name}}-out";

interface ItemViewed {
  userId: string;
  itemId: string;
}

function handleViewed(event: weir.Event): void {
  const viewed = event.json<Partial<ItemViewed> | null>(); // malformed JSON is rejected
  if (typeof viewed?.userId !== "string" || typeof viewed.itemId !== "string") {
    throw new weir.Reject("not an ItemViewed event: userId and itemId must be strings");
  }
  const { userId, itemId } = viewed;
  const key = `seen:${userId}:${itemId}`;
  const firstTime = cache.get(key) === undefined;
  cache.set(key, "1", 3600 * 1000);
  publish.message(OUT).key(userId).json({ userId, itemId, firstTime }).send();
  log.info("item viewed", { "user-id": userId, "first-time": firstTime });
}

// componentize-js looks for these exports (`init`, `handle`, `handleBatch`).
export const { init, handle, handleBatch } = weir.exportHandler({ handle: handleViewed });
