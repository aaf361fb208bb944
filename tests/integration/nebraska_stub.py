"""A local stand-in for Nebraska's REST API: just the packages and channels part, driven by Nebraska's OpenAPI spec.

* Reads ``<repo>/../shared/vendor/nebraska/openapi-spec.yaml`` (Nebraska backend/api/spec.yaml).
* Routes only the operations of ``/api/apps/{appIDorProductID}/packages[/{packageID}]`` and
  ``/api/apps/{appIDorProductID}/channels[/{channelID}]``; every other path is 404.
* Validates every request against the spec: path and query parameters against their parameter schemas,
  and the JSON body against the operation's requestBody schema (jsonschema). Anything invalid is 400.
* Wire field names follow the spec's ``x-oapi-codegen-extra-tags: {json: ...}`` (what Nebraska's Go
  server actually (un)marshals, e.g. ``flatcar_action``, ``extra_files``, ``created_ts``); with
  ``strict`` (default) unknown body fields are rejected too, so a misspelt field cannot pass silently.
* Every response body is validated against the spec's response schema before it is sent.
* Requires ``Authorization: Bearer <token>`` (the spec's oidcBearerAuth) when a token is set; 401 otherwise.

Run standalone: ``python nebraska_stub.py --port 8123 --token T``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import jsonschema
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC_PATH = os.path.join(os.path.dirname(REPO), "shared", "vendor", "nebraska", "openapi-spec.yaml")
ROUTED = ("/api/apps/{appIDorProductID}/packages", "/api/apps/{appIDorProductID}/packages/{packageID}",
          "/api/apps/{appIDorProductID}/channels", "/api/apps/{appIDorProductID}/channels/{channelID}")


def load_spec(path=SPEC_PATH):
    with open(path, "r", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


class SchemaSet:
    """OpenAPI 3.0 schemas turned into JSON Schemas with wire (json tag) property names."""

    def __init__(self, spec, strict=True):
        self.spec = spec
        self.schemas = spec["components"]["schemas"]
        self.strict = strict

    def _resolve(self, ref):
        assert ref.startswith("#/components/schemas/"), ref
        return self.schemas[ref.split("/")[-1]]

    @staticmethod
    def _json_tag(schema):
        tag = (schema.get("x-oapi-codegen-extra-tags") or {}).get("json")
        return tag.split(",")[0] if tag else None

    def wire_name(self, name, prop):
        tag = self._json_tag(prop)
        if tag is None and "$ref" in prop:
            tag = self._json_tag(self._resolve(prop["$ref"]))
        return tag or name

    def convert(self, schema, closed=False):
        if "$ref" in schema:
            return self.convert(self._resolve(schema["$ref"]), closed)
        out = {}
        for key, value in schema.items():
            if key.startswith("x-") or key in ("nullable", "example", "description", "format", "properties", "required", "items"):
                continue
            out[key] = value
        if "items" in schema:
            out["items"] = self.convert(schema["items"], closed)
        if "properties" in schema:
            names = {}
            props = {}
            for name, prop in schema["properties"].items():
                wire = self.wire_name(name, prop)
                names[name] = wire
                props[wire] = self.convert(prop, closed)
            out["properties"] = props
            if schema.get("required"):
                out["required"] = [names.get(n, n) for n in schema["required"]]
            if closed:
                out["additionalProperties"] = False
        if schema.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
        return out

    def request_schema(self, schema):
        return self.convert(schema, closed=self.strict)

    def response_schema(self, schema):
        return self.convert(schema, closed=False)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NebraskaStub:
    def __init__(self, token=None, spec_path=SPEC_PATH, strict=True, host="127.0.0.1", port=0):
        self.spec = load_spec(spec_path)
        self.schemas = SchemaSet(self.spec, strict=strict)
        self.token = token
        self.lock = threading.Lock()
        self.packages = {}  # id -> package (wire format)
        self.channels = {}  # id -> channel (wire format, without nested package)
        self.requests = []  # (method, path, headers, body) as received
        self.routes = []
        for template in ROUTED:
            rx = "^" + re.sub(r"\{([^}]+)\}", r"(?P<\1>[^/]+)", template) + "$"
            self.routes.append((re.compile(rx), template))
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                stub.handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.url = "http://%s:%d" % self.server.server_address
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    # -- HTTP ------------------------------------------------------------------------------------
    def reply(self, h, status, body=None, schema=None):
        if body is not None and schema is not None:
            jsonschema.validate(body, self.schemas.response_schema(schema))  # the stub must speak the spec too
        data = json.dumps(body).encode() if body is not None else b""
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def error(self, h, status, code, text):
        self.reply(h, status, {"error": code, "description": text}, self.spec["components"]["schemas"]["errorResponse"])

    def handle(self, h):
        url = urlparse(h.path)
        path = unquote(url.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        self.requests.append({"method": h.command, "path": h.path, "headers": dict(h.headers), "body": raw.decode("utf-8", "replace")})
        for rx, template in self.routes:
            m = rx.match(url.path)
            if m:
                break
        else:
            return self.error(h, 404, "not_found", "no such route in the stub: %s" % path)
        op = self.spec["paths"][template].get(h.command.lower())
        if op is None:
            return self.error(h, 405, "method_not_allowed", "%s %s is not in the spec" % (h.command, template))
        if self.token is not None:
            auth = h.headers.get("Authorization") or ""
            if auth != "Bearer " + self.token:
                return self.error(h, 401, "unauthorized", "missing or wrong bearer token")
        params = dict((k, unquote(v)) for k, v in m.groupdict().items())
        query = dict((k, v[-1]) for k, v in parse_qs(url.query, keep_blank_values=True).items())
        # parameters
        for param in op.get("parameters", []):
            where, name = param["in"], param["name"]
            source = params if where == "path" else query if where == "query" else {}
            if name not in source:
                if param.get("required"):
                    return self.error(h, 400, "bad_request", "missing %s parameter %s" % (where, name))
                continue
            value = source[name]
            schema = self.schemas.request_schema(param.get("schema", {}))
            if schema.get("type") == "integer":
                if not re.match(r"^-?[0-9]+$", value):
                    return self.error(h, 400, "bad_request", "%s must be an integer" % name)
                value = int(value)
                (params if where == "path" else query)[name] = value
            try:
                jsonschema.validate(value, schema)
            except jsonschema.ValidationError as exc:
                return self.error(h, 400, "bad_request", "parameter %s: %s" % (name, exc.message))
        known = set(p["name"] for p in op.get("parameters", []) if p["in"] == "query")
        unknown = [k for k in query if k not in known]
        if unknown:
            return self.error(h, 400, "bad_request", "unknown query parameter(s) %s" % ", ".join(unknown))
        body = None
        rb = op.get("requestBody")
        if rb is not None:
            if not raw:
                if rb.get("required"):
                    return self.error(h, 400, "bad_request", "request body required")
            else:
                ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip()
                if ctype not in rb["content"]:
                    return self.error(h, 400, "bad_request", "content type %r not accepted" % ctype)
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self.error(h, 400, "bad_request", "body is not JSON")
                try:
                    jsonschema.validate(body, self.schemas.request_schema(rb["content"][ctype]["schema"]))
                except jsonschema.ValidationError as exc:
                    return self.error(h, 400, "bad_request", "body does not match %s: %s at %s" % (
                        op.get("operationId"), exc.message, "/".join(str(x) for x in exc.absolute_path)))
        elif raw:
            return self.error(h, 400, "bad_request", "%s takes no body" % op.get("operationId"))
        with self.lock:
            return getattr(self, "op_" + op["operationId"])(h, op, params, query, body)

    def _schema(self, op, status="200"):
        return op["responses"][status]["content"]["application/json"]["schema"]

    # -- operations --------------------------------------------------------------------------------
    @staticmethod
    def _page(items, query):
        page = max(1, int(query.get("page", 1) or 1))
        per = int(query.get("perpage", 10) or 10)
        return items[(page - 1) * per: page * per]

    def _package_out(self, pkg):
        out = copy.deepcopy(pkg)
        fa = out.get("flatcar_action")
        if fa is not None:
            out["flatcar_action"] = {"id": fa.get("id") or str(uuid.uuid4()), "event": "postinstall", "chromeos_version": "",
                                     "sha256": fa.get("sha256", ""), "needs_admin": False, "is_delta": False,
                                     "disable_payload_backoff": True, "metadata_signature_rsa": "", "metadata_size": "",
                                     "deadline": "", "created_ts": pkg["created_ts"]}
        return out

    def op_paginatePackages(self, h, op, params, query, body):
        items = [p for p in self.packages.values() if p["application_id"] == params["appIDorProductID"]]
        if query.get("searchVersion"):
            items = [p for p in items if query["searchVersion"] in p["version"]]
        items.sort(key=lambda p: p["created_ts"], reverse=True)
        page = [self._package_out(p) for p in self._page(items, query)]
        return self.reply(h, 200, {"totalCount": len(items), "count": len(page), "packages": page}, self._schema(op))

    def op_createPackage(self, h, op, params, query, body):
        if body["application_id"] != params["appIDorProductID"]:
            return self.error(h, 400, "bad_request", "application_id does not match the path")
        for p in self.packages.values():
            if p["application_id"] == body["application_id"] and p["version"] == body["version"] and p["arch"] == body["arch"]:
                return self.error(h, 400, "bad_request", "package version %s arch %s exists" % (body["version"], body["arch"]))
        pkg = copy.deepcopy(body)
        pkg["id"] = str(uuid.uuid4())
        pkg["created_ts"] = _now()
        for i, f in enumerate(pkg.get("extra_files") or []):
            f["id"] = i + 1
        self.packages[pkg["id"]] = pkg
        return self.reply(h, 200, self._package_out(pkg), self._schema(op))

    def op_getPackage(self, h, op, params, query, body):
        pkg = self.packages.get(params["packageID"])
        if not pkg:
            return self.error(h, 404, "not_found", "no package %s" % params["packageID"])
        return self.reply(h, 200, self._package_out(pkg), self._schema(op))

    def op_updatePackage(self, h, op, params, query, body):
        pkg = self.packages.get(params["packageID"])
        if not pkg:
            return self.error(h, 404, "not_found", "no package %s" % params["packageID"])
        keep = {"id": pkg["id"], "created_ts": pkg["created_ts"]}
        pkg.clear()
        pkg.update(copy.deepcopy(body), **keep)
        return self.reply(h, 200, self._package_out(pkg), self._schema(op))

    def op_deletePackage(self, h, op, params, query, body):
        self.packages.pop(params["packageID"], None)
        return self.reply(h, 200)

    def _channel_out(self, chan):
        out = copy.deepcopy(chan)
        if chan.get("package_id") in self.packages:
            out["package"] = self._package_out(self.packages[chan["package_id"]])
        return out

    def op_paginateChannels(self, h, op, params, query, body):
        items = [c for c in self.channels.values() if c["application_id"] == params["appIDorProductID"]]
        page = [self._channel_out(c) for c in self._page(items, query)]
        return self.reply(h, 200, {"totalCount": len(items), "count": len(page), "channels": page}, self._schema(op))

    def _check_channel(self, h, params, body):
        if body["application_id"] != params["appIDorProductID"]:
            self.error(h, 400, "bad_request", "application_id does not match the path")
            return False
        pid = body.get("package_id")
        if pid:
            pkg = self.packages.get(pid)
            if not pkg or pkg["arch"] != body["arch"]:
                self.error(h, 400, "bad_request", "package %s does not exist for arch %s" % (pid, body["arch"]))
                return False
        return True

    def op_createChannel(self, h, op, params, query, body):
        if not self._check_channel(h, params, body):
            return None
        chan = {"id": str(uuid.uuid4()), "name": body["name"], "color": body["color"], "created_ts": _now(),
                "application_id": body["application_id"], "package_id": body.get("package_id") or "", "arch": body["arch"]}
        self.channels[chan["id"]] = chan
        return self.reply(h, 200, self._channel_out(chan), self._schema(op))

    def op_getChannel(self, h, op, params, query, body):
        chan = self.channels.get(params["channelID"])
        if not chan:
            return self.error(h, 404, "not_found", "no channel")
        return self.reply(h, 200, self._channel_out(chan), self._schema(op))

    def op_updateChannel(self, h, op, params, query, body):
        chan = self.channels.get(params["channelID"])
        if not chan:
            return self.error(h, 404, "not_found", "no channel")
        if not self._check_channel(h, params, body):
            return None
        chan.update(name=body["name"], color=body["color"], arch=body["arch"], package_id=body.get("package_id") or "")
        return self.reply(h, 200, self._channel_out(chan), self._schema(op))

    def op_deleteChannel(self, h, op, params, query, body):
        self.channels.pop(params["channelID"], None)
        return self.reply(h, 200)

    # -- test helpers ---------------------------------------------------------------------------
    def add_channel(self, app, name, arch, color="#00aa00", package_id=""):
        chan = {"id": str(uuid.uuid4()), "name": name, "color": color, "created_ts": _now(), "application_id": app,
                "package_id": package_id, "arch": arch}
        self.channels[chan["id"]] = chan
        return chan


def main():
    ap = argparse.ArgumentParser(description="Nebraska packages/channels API stub validated against the OpenAPI spec")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--token")
    ap.add_argument("--spec", default=SPEC_PATH)
    args = ap.parse_args()
    stub = NebraskaStub(token=args.token, spec_path=args.spec, host=args.host, port=args.port)
    print("nebraska stub on %s" % stub.url, flush=True)
    stub.server.serve_forever()


if __name__ == "__main__":
    main()
