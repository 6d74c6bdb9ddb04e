"""{{name}}: a Weir plugin.

The worked example: an `ItemViewed` event (`{"userId": "...", "itemId": "..."}`) is
decoded, remembered in the cache for an hour, and announced on the `{{name}}-out`
topic, keyed by user so one user's messages stay in order.

Outcomes: return normally and the event is done. `raise weir.Retry(reason)` asks the
host to retry (then dead-letter), `raise weir.Reject(reason)` dead-letters at once. A
failed capability call raises the right one by itself: `unavailable` retries, `denied`
and `invalid` reject. Handlers must be idempotent: at-least-once delivery means an
event may come again after a crash or a rebalance.
"""

import weir
from weir import cache, log, publish

# The topic this plugin publishes to (granted in {{name}}.toml).
OUT = "{{name}}-out"


class Plugin(weir.Handler):
    def handle(self, event: weir.Event) -> None:
        viewed = event.json()  # malformed JSON is rejected
        try:
            user_id, item_id = str(viewed["userId"]), str(viewed["itemId"])
        except (KeyError, TypeError) as e:
            raise weir.Reject(f"not an ItemViewed event: missing {e}") from None
        key = f"seen:{user_id}:{item_id}"
        first_time = cache.get(key) is None
        cache.set(key, b"1", ttl_ms=3600 * 1000)
        publish.Message(OUT).key(user_id).json(
            {"userId": user_id, "itemId": item_id, "firstTime": first_time}
        ).send()
        log.info("item viewed", [("user-id", user_id), ("first-time", first_time)])


# componentize-py looks for `WitWorld` in this module.
WitWorld = weir.export(Plugin)
