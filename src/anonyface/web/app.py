"""The ASGI app (Starlette): the page, the HTTP API and its OpenAPI description.

Every upload is written into its own temporary folder, processed by one of a
bounded pool of workers through `anonyface.files.process_file` (the CLI's code:
same options, same checks, metadata stripped, atomic writes), and the folder is
removed when the response is done, on an error, or when the client goes away.
The result is streamed from a file already unlinked, so nothing stays on disk
whatever happens to the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import AsyncIterator, BinaryIO
from urllib.parse import quote, urlsplit

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import __version__
from ..media import ImageError, sniff
from ..video import VideoError
from .jobs import (
    Busy, Cancelled, Job, LiveSession, LiveSessions, Models, NotMedia, Output, ResultStore, ServerConfig, Upload,
    WorkerPool, classify, friendly, run_anonymize, run_detect,
)
from .openapi import docs_page, openapi_spec
from .options import KEEP_BOXES_FIELD, OptionError, parse_keep_boxes, parse_options, with_frame_limit

CHUNK = 1 << 20
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}

#: The page loads nothing from anywhere but this server (no CDN, no font, no analytics),
#: and talks to nothing else: enforced by the browser.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class TooLarge(Exception):
    pass


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _limited(receive, limit: int):
    """`receive` that raises `TooLarge` once the body passes `limit` bytes (chunked uploads
    have no Content-Length to check first)."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise TooLarge()
        return message

    return wrapped


class Server:
    """The state behind the routes: configuration, models, workers, temporary folders."""

    def __init__(self, config: ServerConfig, models: Models) -> None:
        self.config, self.models = config, models
        self.pool = WorkerPool(config.workers, config.queue)
        self.root = Path(tempfile.mkdtemp(prefix="anonyface-web-", dir=config.temp_dir))
        self.jobs_dir = self.root / "jobs"
        self.jobs_dir.mkdir()
        self.results = ResultStore(self.root / "results", config.result_ttl)
        self.live = LiveSessions()
        self.started = time.time()

    def close(self) -> None:
        self.pool.shutdown()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- access ---------------------------------------------------------------------
    def check_access(self, request: Request) -> None:
        """Bearer token when one is set; a page of another site may not drive the API
        (its Origin differs), and no other Host than ours (DNS rebinding)."""
        host = request.headers.get("host", "")
        if "*" not in self.config.allowed_hosts and _hostname(host) not in self.config.allowed_hosts:
            raise HTTPError(403, f"host {host!r} is not served here")
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != host:
            raise HTTPError(403, "requests from another site's page are refused")
        token = self.config.token
        if token:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                raise HTTPError(401, "this server needs its access token (Authorization: Bearer TOKEN)",
                                {"WWW-Authenticate": "Bearer"})

    # -- uploads ----------------------------------------------------------------------
    async def receive(self, request: Request, job: Job) -> tuple[Upload, dict[str, str]]:
        """The uploaded file into the job's folder and the option fields: multipart
        (`file` plus fields), or the raw body with the options in the query string."""
        length = request.headers.get("content-length")
        limit = self.config.max_upload_bytes
        if length and length.isdigit() and int(length) > limit + (1 << 20):
            raise TooLarge()
        request = Request(request.scope, _limited(request.receive, limit + (1 << 20)))
        fields: dict[str, str] = dict(request.query_params)
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            async with request.form(max_files=1, max_fields=100) as form:
                upload = None
                for key, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        if key != "file":
                            raise HTTPError(400, f"the file goes in the field 'file', not {key!r}")
                        upload = await self._store(value, value.filename or "upload", job)
                    else:
                        fields[key] = value
                if upload is None:
                    raise HTTPError(400, "no file: send the photo or video in the form field 'file'")
        else:
            name = fields.pop("filename", "upload")
            upload = await self._store_stream(request.stream(), name, job)
        return upload, fields

    async def _store(self, file: UploadFile, name: str, job: Job) -> Upload:
        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await file.read(CHUNK):
                yield chunk

        return await self._store_stream(chunks(), name, job)

    async def _store_stream(self, chunks: AsyncIterator[bytes], name: str, job: Job) -> Upload:
        tmp = job.dir / "upload"
        size, head = 0, b""
        with open(tmp, "wb") as f:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.config.max_upload_bytes:
                    raise TooLarge()
                if len(head) < 16:
                    head += chunk[: 16 - len(head)]
                f.write(chunk)
        if size == 0:
            raise HTTPError(400, "the file is empty")
        kind, suffix = classify(head, name)
        path = job.dir / f"input{suffix}"
        tmp.rename(path)
        out = job.dir / "out"
        out.mkdir()
        return Upload(path, Path(name).name, kind)

    # -- running ----------------------------------------------------------------------
    async def wait(self, job: Job, request: Request):
        """The job's result; cancels it when the client goes away meanwhile."""
        fut = asyncio.wrap_future(job.future)
        fut.add_done_callback(_consume)  # a job cancelled here still ends, with nobody waiting
        while True:
            done, _ = await asyncio.wait({fut}, timeout=0.25)
            if done:
                return fut.result()
            if await request.is_disconnected():
                job.cancel.set()
                raise Cancelled("the client went away")


def _consume(fut: asyncio.Future) -> None:
    """Retrieve the outcome of work nobody waits for any more (a cancelled job's)."""
    if not fut.cancelled():
        fut.exception()


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[: host.index("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class ReleasingResponse(StreamingResponse):
    """A streamed response that releases its job when it ends, however it ends
    (finished, failed, or the client gone)."""

    def __init__(self, *args, job: Job, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.release()


def _file_chunks(f: BinaryIO):
    with f:
        while chunk := f.read(CHUNK):
            yield chunk


def file_response(output: Output, headers: dict[str, str] | None = None) -> StreamingResponse:
    """Stream a result from an already unlinked file: once open, nothing is left on disk."""
    f = open(output.path, "rb")
    size = output.path.stat().st_size
    output.path.unlink()
    disposition = f"attachment; filename=\"{_ascii_name(output.filename)}\"; filename*=UTF-8''{quote(output.filename)}"
    faces = output.report.get("faces_found", 0)
    hdrs = {"Content-Length": str(size), "Content-Disposition": disposition, "X-Anonyface-Faces": str(faces),
            "Cache-Control": "no-store", **(headers or {})}
    return StreamingResponse(_file_chunks(f), media_type=output.media_type, headers=hdrs)


def _ascii_name(name: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)


def _status_for(exc: BaseException) -> tuple[int, str]:
    """HTTP status and plain-words message for a failure."""
    if isinstance(exc, HTTPError):
        return exc.status, exc.message
    if isinstance(exc, TooLarge):
        return 413, "the file is too large for this server"
    if isinstance(exc, NotMedia):
        return 415, str(exc)
    if isinstance(exc, OptionError):
        return 400, str(exc)
    if isinstance(exc, Busy):
        return 503, str(exc)
    if isinstance(exc, Cancelled):
        return 499, "cancelled"
    if isinstance(exc, (ImageError, VideoError)):
        message = friendly(str(exc))
        return (413 if "over the limit" in message else 422), message
    if isinstance(exc, ValueError):
        return 422, str(exc)
    return 500, f"unexpected error: {type(exc).__name__}: {exc}"


def create_app(config: ServerConfig | None = None, models: Models | None = None) -> Starlette:
    """The app; loads the models now (once per process) unless given."""
    config = config or ServerConfig()
    server = Server(config, models or Models())

    def limit_text() -> str:
        return f"{config.max_upload_bytes >> 20} MB"

    async def guarded(request: Request, handler) -> Response:
        job = None
        try:
            server.check_access(request)
            server.results.expire()
            job = Job(server.jobs_dir)
            response = await handler(request, job)
            if isinstance(response, ReleasingResponse):
                job = None  # the response releases it when it ends
            return response
        except ClientDisconnect:
            return Response(status_code=499)
        except Exception as e:  # every failure is a JSON error in plain words
            status, message = _status_for(e)
            if status == 413 and isinstance(e, TooLarge):
                message = f"the file is too large: this server takes uploads up to {limit_text()}"
            headers = e.headers if isinstance(e, HTTPError) else ({"Retry-After": "5"} if status == 503 else None)
            return error_response(status, message, headers)
        finally:
            if job is not None:
                job.release()

    async def anonymize(request: Request) -> Response:
        return await guarded(request, _anonymize)

    async def _anonymize(request: Request, job: Job) -> Response:
        upload, fields = await server.receive(request, job)
        keep_text = fields.pop(KEEP_BOXES_FIELD, None)
        opts = parse_options(fields)
        files = with_frame_limit(opts.files, config.max_frame_pixels)
        if keep_text is not None:
            if upload.kind == "video":
                raise HTTPError(400, "keep_boxes (faces chosen by hand) works on photos only; to keep a person in a "
                                     "video, use the command line: anonyface --keep THEIR_PHOTO.jpg video.mp4")
            files = dataclasses.replace(files, keep_boxes=parse_keep_boxes(keep_text) or None)
        anon = server.models.anonymizer(opts, config.max_pixels)
        if "text/event-stream" in request.headers.get("accept", ""):
            return ReleasingResponse(_events(request, job, anon, upload, files), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}, job=job)
        job.future = server.pool.submit(run_anonymize, anon, upload, job.dir / "out", files, job.cancel)
        output: Output = await server.wait(job, request)
        return file_response(output)

    async def _events(request: Request, job: Job, anon, upload: Upload, files) -> AsyncIterator[str]:
        """Server-sent events: queued, progress (frames), then done (with the result's
        address) or error. The client closing the stream cancels the job."""
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue = asyncio.Queue()
        last = [0.0]

        def progress(n: int, total: int | None) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.2 or (total and n >= total):
                last[0] = now
                loop.call_soon_threadsafe(updates.put_nowait, (n, total))

        try:
            job.future = server.pool.submit(run_anonymize, anon, upload, job.dir / "out", files, job.cancel, progress)
        except Busy as e:
            yield _event("error", {"status": 503, "error": str(e)})
            return
        yield _event("queued", {"waiting": server.pool.waiting, "kind": upload.kind, "file": upload.name})
        done = asyncio.wrap_future(job.future)
        done.add_done_callback(_consume)
        while not done.done():
            getter = asyncio.ensure_future(updates.get())
            finished, _ = await asyncio.wait({getter, done}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            if getter in finished:
                n, total = getter.result()
                yield _event("progress", {"frames": n, "total": total})
            else:
                getter.cancel()
                if not finished:
                    yield ": still working\n\n"  # a comment: keeps proxies open, finds a gone client
            if await request.is_disconnected():
                job.cancel.set()
                return
        try:
            output: Output = done.result()
        except Exception as e:
            status, message = _status_for(e)
            yield _event("error", {"status": status, "error": message})
            return
        key = server.results.put(output)
        yield _event("done", {"result": f"/v1/results/{key}", "filename": output.filename,
                              "media_type": output.media_type, "report": output.report})

    async def detect(request: Request) -> Response:
        return await guarded(request, _detect)

    async def _detect(request: Request, job: Job) -> Response:
        upload, fields = await server.receive(request, job)
        opts = parse_options(fields)
        if upload.kind != "image":
            raise HTTPError(415, "/v1/detect takes a photo; for a video, POST it to /v1/anonymize with "
                                 "Accept: text/event-stream: its report lists the faces (one per track)")
        job.future = server.pool.submit(run_detect, server.models, upload, opts.threshold, config.max_pixels)
        return JSONResponse(await server.wait(job, request))

    async def live(request: Request) -> Response:
        return await guarded(request, _live)

    async def _live(request: Request, job: Job) -> Response:
        """One camera frame (a JPEG or PNG body) of session `session`, covered; the
        session's options are its first frame's query string."""
        fields = dict(request.query_params)
        key = fields.pop("session", "")
        if not 8 <= len(key) <= 64:
            raise HTTPError(400, "give the camera a session id (?session=..., 8 to 64 characters)")
        if request.method == "DELETE":
            return JSONResponse({"ended": server.live.end(key)})
        body = await Request(request.scope, _limited(request.receive, 16 << 20)).body()
        if sniff(body[:16]) != "image":
            raise NotMedia("a camera frame must be a JPEG, PNG or WebP image")

        def make() -> LiveSession:
            opts = parse_options(fields)
            return LiveSession(server.models.anonymizer(opts, config.max_pixels), opts)

        session = server.live.get(key, make)
        job.future = server.pool.submit(session.frame, body, config.max_pixels)
        data, faces = await server.wait(job, request)
        return Response(data, media_type="image/jpeg", headers={"X-Anonyface-Faces": str(faces), "Cache-Control": "no-store"})

    async def result(request: Request) -> Response:
        try:
            server.check_access(request)
        except HTTPError as e:
            return error_response(e.status, e.message, e.headers)
        output = server.results.take(request.path_params["key"])
        if output is None:
            return error_response(404, "no such result: results are kept until fetched once, at most "
                                       f"{config.result_ttl / 60:g} minutes")
        return file_response(output)

    async def health(request: Request) -> Response:
        return JSONResponse({
            "status": "ok", "version": __version__, "methods": server.models.methods,
            "workers": config.workers, "active": server.pool.active, "waiting": server.pool.waiting,
            "done": server.pool.done, "uptime_s": round(time.time() - server.started, 1),
            "token_required": bool(config.token), "live_sessions": len(server.live),
            "limits": {"max_upload_bytes": config.max_upload_bytes, "max_pixels": config.max_pixels,
                       "max_frame_pixels": config.max_frame_pixels, "queue": config.queue},
        })

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_spec(config))

    async def docs(request: Request) -> Response:
        return HTMLResponse(docs_page(openapi_spec(config)), headers=PAGE_HEADERS)

    static = Path(str(resources.files("anonyface") / "web" / "static"))

    assets = {f.name: f.read_bytes() for f in static.iterdir() if f.suffix in STATIC_TYPES}

    async def page(request: Request) -> Response:
        return Response(assets["index.html"], media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store", **PAGE_HEADERS})

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            return error_response(404, "no such file")
        return Response(assets[name], media_type=STATIC_TYPES[Path(name).suffix], headers=PAGE_HEADERS)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        server.close()

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/v1/anonymize", anonymize, methods=["POST"]),
            Route("/v1/detect", detect, methods=["POST"]),
            Route("/v1/results/{key}", result, methods=["GET"]),
            Route("/v1/live", live, methods=["POST", "DELETE"]),
            Route("/v1/health", health, methods=["GET"]),
            Route("/openapi.json", openapi),
            Route("/docs", docs),
            Route("/static/{name}", asset),
        ],
        lifespan=lifespan,
    )
    app.state.server = server
    return app


def _event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


__all__ = ["create_app", "ServerConfig", "Models"]
