"""The API's OpenAPI 3.1 description, written here and checked by the tests against
the routes; the option fields come from the CLI's parser. `/docs` renders it as one
plain HTML page, on the server, with nothing loaded from elsewhere."""

from __future__ import annotations

import html

from .. import __version__
from .jobs import ServerConfig
from .options import KEEP_BOXES_FIELD, MAX_KEEP_BOXES, openapi_fields

_ERROR = {"$ref": "#/components/schemas/Error"}


def _err(text: str) -> dict:
    return {"description": text, "content": {"application/json": {"schema": _ERROR}}}


def _upload_body(extra: dict) -> dict:
    form = {"type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary", "description": "the photo or video"}, **extra}}
    return {
        "required": True,
        "description": "multipart/form-data with the file in `file` and any options as fields; or the file itself "
                       "as the body (any other content type), with the options and `filename` in the query string.",
        "content": {"multipart/form-data": {"schema": form},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }


def openapi_spec(config: ServerConfig) -> dict:
    fields = openapi_fields()
    errors = {
        "400": _err("bad options (named, with the reason), or no file"),
        "401": _err("the server was started with --token and the request has not got it"),
        "403": _err("a page of another site, or another Host than the server's"),
        "413": _err(f"the file is over {config.max_upload_bytes >> 20} MB, or the photo over "
                    f"{config.max_pixels / 1e6:g} megapixels, or video frames over {config.max_frame_pixels / 1e6:g}"),
        "415": _err("not a photo or video anonyface reads"),
        "422": _err("a photo or video that cannot be decoded (corrupt, truncated, unsupported)"),
        "503": _err("every worker busy and the queue full: try again (Retry-After)"),
    }
    face = {"type": "object", "properties": {
        "box": {"type": "array", "items": {"type": "number"}, "description": "x1, y1, x2, y2 in pixels"},
        "landmarks": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        "score": {"type": "number"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "anonyface",
            "version": __version__,
            "description": "Anonymize every face in photos and videos on this machine. Nothing is sent anywhere; "
                           "uploads and results are deleted when the response ends. Options are the command line's "
                           "(`anonyface --help`), named without dashes: `--mask-scale` is `mask_scale`, flags take "
                           "true or false.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "only when the server was started with --token"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}},
                "Face": face,
            },
        },
        "security": [{"bearer": []}] if config.token else [],
        "paths": {
            "/v1/anonymize": {"post": {
                "summary": "Anonymize a photo or a video",
                "description": "Returns the anonymized file (photos keep their format unless `format`; videos their "
                               "container), with identifying metadata removed unless `keep_metadata`. Header "
                               "`X-Anonyface-Faces`: faces covered. With `Accept: text/event-stream` the answer is "
                               "server-sent events instead: `queued`, `progress` ({frames, total}) for a video, then "
                               "`done` ({result, filename, media_type, report}: GET `result` once to download) or "
                               "`error` ({status, error}); closing the stream cancels the job.",
                "requestBody": _upload_body({**fields, KEEP_BOXES_FIELD: {
                    "type": "string", "description":
                        "photos only: faces to leave visible, chosen by hand (the page's clicks), as JSON "
                        f"[[x1, y1, x2, y2], ...] in the photo's pixels (at most {MAX_KEEP_BOXES}); the detected face "
                        "overlapping each box (IoU ≥ 0.5) is kept, every other face is covered and audited. The "
                        "report's `kept` lists them. Refused for a video (the command line's --keep does videos)."}}),
                "responses": {
                    "200": {"description": "the anonymized file, or the event stream",
                            "headers": {"X-Anonyface-Faces": {"schema": {"type": "integer"}}},
                            "content": {"image/*": {}, "video/*": {}, "text/event-stream": {}}},
                    **errors,
                },
            }},
            "/v1/detect": {"post": {
                "summary": "Find the faces in a photo",
                "description": "Only `threshold` changes the answer; the other options are checked and ignored.",
                "requestBody": _upload_body({"threshold": fields["threshold"]}),
                "responses": {
                    "200": {"description": "the faces, best first", "content": {"application/json": {"schema": {
                        "type": "object", "properties": {
                            "file": {"type": "string"}, "width": {"type": "integer"}, "height": {"type": "integer"},
                            "faces": {"type": "array", "items": {"$ref": "#/components/schemas/Face"}}}}}}},
                    **errors,
                },
            }},
            "/v1/results/{key}": {"get": {
                "summary": "Download a result announced by a `done` event (once; then it is deleted)",
                "parameters": [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the anonymized file"},
                              "404": _err(f"unknown, already fetched, or older than {config.result_ttl / 60:g} minutes")},
            }},
            "/v1/live": {
                "post": {
                    "summary": "One frame of a browser camera, anonymized (the page's Webcam tab)",
                    "description": "The body is one JPEG, PNG or WebP frame; the answer is the frame as JPEG with every "
                                   "face covered, header `X-Anonyface-Faces`. Frames of one `session` go through one "
                                   "tracker, as in `anonyface live`: faces are followed between frames and keep one fake "
                                   "identity. The options (query string, as for /v1/anonymize) are the first frame's. At "
                                   "most 4 sessions; one idle for 30 s ends.",
                    "parameters": [{"name": "session", "in": "query", "required": True,
                                    "schema": {"type": "string", "minLength": 8, "maxLength": 64}},
                                   *({"name": k, "in": "query", "required": False, "schema": v} for k, v in fields.items())],
                    "requestBody": {"required": True, "content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}},
                    "responses": {"200": {"description": "the covered frame", "content": {"image/jpeg": {}}}, **errors},
                },
                "delete": {
                    "summary": "End a camera session",
                    "parameters": [{"name": "session", "in": "query", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "{ended: bool}"}},
                },
            },
            "/v1/health": {"get": {
                "summary": "Status, methods available, workers, limits",
                "security": [],
                "responses": {"200": {"description": "status", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "status": {"type": "string", "enum": ["ok"]}, "version": {"type": "string"},
                        "methods": {"type": "array", "items": {"type": "string"}},
                        "workers": {"type": "integer"}, "active": {"type": "integer"}, "waiting": {"type": "integer"},
                        "done": {"type": "integer"}, "token_required": {"type": "boolean"},
                        "limits": {"type": "object"}}}}}}},
            }},
        },
    }


def docs_page(spec: dict) -> str:
    """The description as a readable page (no script, no outside asset)."""
    e = html.escape
    out = [f"<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>"
           f"<title>anonyface API</title><link rel=stylesheet href='/static/style.css'>"
           f"<main class=docs><h1>anonyface API {e(spec['info']['version'])}</h1>"
           f"<p>{e(spec['info']['description'])}</p><p><a href='/openapi.json'>openapi.json</a> · <a href='/'>the page</a></p>"]
    for path, ops in spec["paths"].items():
        for verb, op in ops.items():
            out.append(f"<section><h2><code>{verb.upper()} {e(path)}</code></h2><p><b>{e(op['summary'])}</b></p>")
            if op.get("description"):
                out.append(f"<p>{e(op['description'])}</p>")
            form = op.get("requestBody", {}).get("content", {}).get("multipart/form-data")
            props = form["schema"]["properties"] if form else {p["name"]: p["schema"] for p in op.get("parameters", [])}
            if props:
                out.append("<table><tr><th>field</th><th>type</th><th>default</th><th>what it does</th></tr>")
                for name, s in props.items():
                    kind = s.get("type", "") + (f" ({' | '.join(map(str, s['enum']))})" if "enum" in s else "")
                    default = s.get("default", "")
                    out.append(f"<tr><td><code>{e(name)}</code></td><td>{e(kind)}</td><td>{e(str(default))}</td>"
                               f"<td>{e(s.get('description', ''))}</td></tr>")
                out.append("</table>")
            out.append("<ul>" + "".join(f"<li><b>{code}</b> {e(r['description'])}</li>" for code, r in op["responses"].items()) + "</ul></section>")
    out.append("</main></html>")
    return "".join(out)
