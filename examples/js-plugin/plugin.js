// A gatehouse plugin in JavaScript: API-key auth for the request phase.
//
// Config (the route's table for this plugin): { "keys": ["k1", "k2"], "header": "x-api-key" }.
// A request without a listed key gets 401 with a JSON error; an allowed one continues upstream
// with `x-js-auth: <key index>` added. Targets the `request-filter` world, so the component
// exports only `request-hook` and the gateway calls only that.
import { config, log } from 'gatehouse:plugin/context@0.1.3';

// The QuickJS backend has no TextEncoder/TextDecoder; these cover UTF-8 for headers and JSON.
const encoder = {
  encode(s) {
    return new Uint8Array(unescape(encodeURIComponent(s)).split('').map((c) => c.charCodeAt(0)));
  },
};
const decoder = {
  decode(bytes) {
    return decodeURIComponent(escape(String.fromCharCode(...bytes)));
  },
};

function respond(status, value) {
  return {
    tag: 'respond',
    val: {
      status,
      headers: [['content-type', encoder.encode('application/json')]],
      body: encoder.encode(JSON.stringify(value)),
    },
  };
}

export const requestHook = {
  onRequest(req) {
    const cfg = JSON.parse(config() || '{}');
    const header = cfg.header || 'x-api-key';
    const keys = cfg.keys || [];
    const raw = req.header(header);
    // An absent header (option::none) arrives as null or undefined.
    const key = raw == null ? null : decoder.decode(raw);
    const index = key === null ? -1 : keys.indexOf(key);
    if (index < 0) {
      log('info', `rejected ${req.method()} ${req.path()}: no valid ${header}`);
      return respond(401, { error: 'invalid API key', plugin: 'js-auth' });
    }
    req.setHeader('x-js-auth', encoder.encode(String(index)));
    return { tag: 'continue' };
  },
};
