# A gatehouse plugin in Python: API-key auth for the request phase, the same behaviour as
# examples/js-plugin.
#
# Config (the route's table for this plugin): { "keys": ["k1", "k2"], "header": "x-api-key" }.
# A request without a listed key gets 401 with a JSON error; an allowed one continues upstream
# with `x-py-auth: <key index>` added. Targets the `request-filter` world, so the component
# exports only `request-hook` and the gateway calls only that.
import json

from wit_world import exports
from wit_world.imports import context, types


def respond(status, value):
    return types.Decision_Respond(
        types.FullResponse(
            status=status,
            headers=[("content-type", b"application/json")],
            body=json.dumps(value).encode(),
        )
    )


class RequestHook(exports.RequestHook):
    def on_request(self, req: types.Request) -> types.Decision:
        cfg = json.loads(context.config() or "{}")
        header = cfg.get("header", "x-api-key")
        keys = cfg.get("keys", [])
        raw = req.header(header)
        key = raw.decode("utf-8", "replace") if raw is not None else None
        if key is None or key not in keys:
            context.log(
                context.Level.INFO,
                f"rejected {req.method()} {req.path()}: no valid {header}",
            )
            return respond(401, {"error": "invalid API key", "plugin": "py-auth"})
        req.set_header("x-py-auth", str(keys.index(key)).encode())
        return types.Decision_Continue()
