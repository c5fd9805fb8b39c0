"""A loopback stand-in for one Pinecone index's data plane (what the real client speaks).

Implements POST /vectors/upsert, POST /query (dot product, metadata filters with
$in/$eq/$and), GET /vectors/fetch, POST /vectors/delete, POST
/describe_index_stats and GET /vectors/list, checks the Api-Key header, and
records every request so tests can assert what the client sent.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np


class FakePinecone:
    def __init__(self, dimension: int, api_key: str = "test-key") -> None:
        self.dimension = dimension
        self.api_key = api_key
        self.spaces: dict[str, dict[str, dict]] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}") if n else {}
                url = urlparse(self.path)
                fake.requests.append((self.command, url.path, {**body, "headers": dict(self.headers)}))
                if self.headers.get("Api-Key") != fake.api_key:
                    return self._reply(401, {"code": 16, "message": "Invalid API Key"})
                with fake.lock:
                    status, payload = fake.route(self.command, url.path, parse_qs(url.query), body)
                self._reply(status, payload)

            do_GET = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> FakePinecone:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ the API

    def route(self, method: str, path: str, query: dict, body: dict) -> tuple[int, dict]:
        if path == "/vectors/upsert":
            space = self.spaces.setdefault(body.get("namespace", ""), {})
            for v in body["vectors"]:
                if len(v["values"]) != self.dimension:
                    return 400, {"code": 3, "message": f"Vector dimension {len(v['values'])} does not match the dimension of the index {self.dimension}"}
                space[v["id"]] = {"id": v["id"], "values": v["values"], "metadata": v.get("metadata") or {}}
            return 200, {"upsertedCount": len(body["vectors"])}
        if path == "/query":
            space = self.spaces.get(body.get("namespace", ""), {})
            q = np.asarray(body["vector"], np.float64)
            flt = body.get("filter")
            scored = [(float(np.dot(q, v["values"])), v) for v in space.values() if matches(v["metadata"], flt)]
            scored.sort(key=lambda t: -t[0])
            return 200, {"namespace": body.get("namespace", ""), "matches": [
                {"id": v["id"], "score": s, **({"metadata": v["metadata"]} if body.get("includeMetadata") else {})}
                for s, v in scored[: body["topK"]]]}
        if path == "/vectors/fetch":
            space = self.spaces.get(query.get("namespace", [""])[0], {})
            ids = query.get("ids", [])
            return 200, {"namespace": query.get("namespace", [""])[0], "vectors": {i: space[i] for i in ids if i in space}}
        if path == "/vectors/delete":
            ns = body.get("namespace", "")
            if body.get("deleteAll"):
                self.spaces.pop(ns, None)
            else:
                for i in body.get("ids", []):
                    self.spaces.get(ns, {}).pop(i, None)
            return 200, {}
        if path == "/describe_index_stats":
            spaces = {ns: {"vectorCount": len(v)} for ns, v in self.spaces.items() if v}
            return 200, {"namespaces": spaces, "dimension": self.dimension, "indexFullness": 0.0,
                         "totalVectorCount": sum(len(v) for v in self.spaces.values())}
        if path == "/vectors/list":
            ns = query.get("namespace", [""])[0]
            ids = sorted(self.spaces.get(ns, {}))
            start = int(query.get("paginationToken", ["0"])[0])
            limit = int(query.get("limit", ["100"])[0])
            page = ids[start:start + limit]
            nxt = {"next": str(start + limit)} if start + limit < len(ids) else None
            return 200, {"vectors": [{"id": i} for i in page], "namespace": ns, **({"pagination": nxt} if nxt else {})}
        return 404, {"code": 5, "message": f"no route {method} {path}"}


def matches(meta: dict, flt: dict | None) -> bool:
    if not flt:
        return True
    if "$and" in flt:
        return all(matches(meta, f) for f in flt["$and"])
    for field, cond in flt.items():
        if isinstance(cond, dict):
            if "$in" in cond and meta.get(field) not in cond["$in"]:
                return False
            if "$eq" in cond and meta.get(field) != cond["$eq"]:
                return False
        elif meta.get(field) != cond:
            return False
    return True
