"""`anonyface serve [--host 127.0.0.1] [--port 8000]`: the page and the API, with uvicorn."""

from __future__ import annotations

import argparse
import secrets
import socket
import sys

from .. import __version__

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def build_parser() -> argparse.ArgumentParser:
    from .jobs import DEFAULT_MAX_UPLOAD_MB, DEFAULT_WEB_MAX_PIXELS

    p = argparse.ArgumentParser(
        prog="anonyface serve",
        description="A web page and an HTTP API on this machine: drop photos or videos in a browser, see them "
        "before and after, download them. Nothing leaves the machine; uploads are deleted when answered.",
        epilog="API: http://HOST:PORT/docs (OpenAPI at /openapi.json). Security: docs/web.md.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only; "
                   "any other address lets other machines in: use --token)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0 picks a free one)")
    p.add_argument("--token", metavar="TOKEN", help="require 'Authorization: Bearer TOKEN' on the API (the page asks "
                   "for it); 'random' makes one up and prints it")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="files processed at once; more wait in a "
                   "queue (default: %(default)s; each worker uses every core already)")
    p.add_argument("--queue", type=int, default=32, metavar="N", help="files that may wait for a worker; more are "
                   "refused with 503 (default: %(default)s)")
    p.add_argument("--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                   help="largest upload (default: %(default)s)")
    p.add_argument("--max-pixels", type=int, metavar="N", help=f"largest photo, and largest video frame "
                   f"(default: {DEFAULT_WEB_MAX_PIXELS} for photos, 4096×2160 for video frames)")
    p.add_argument("--version", action="version", version=f"anonyface {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        import uvicorn

        from .app import create_app
        from .jobs import ServerConfig
    except ImportError as e:
        print(f'anonyface serve: needs the web extra: pip install "anonyface[web]" ({e})', file=sys.stderr)
        return 1
    token = secrets.token_urlsafe(18) if args.token == "random" else args.token
    local = args.host in LOCAL_HOSTS
    if not local:
        print(f"anonyface serve: WARNING: listening on {args.host}: other machines can reach this server"
              + ("" if token else " and use it without a password; add --token"), file=sys.stderr)
    extra = {}
    if args.max_pixels:
        extra = {"max_pixels": args.max_pixels, "max_frame_pixels": args.max_pixels}
    try:
        config = ServerConfig(
            max_upload_bytes=args.max_upload_mb << 20, workers=args.workers, queue=args.queue, token=token,
            allowed_hosts=("127.0.0.1", "localhost", "[::1]") if local else ("*",), **extra,
        )
    except ValueError as e:
        parser.error(str(e))
    port = args.port or _free_port(args.host)
    print("anonyface serve: loading the models...", file=sys.stderr)
    app = create_app(config)
    shown = "localhost" if local else args.host
    fragment = f"#token={token}" if token else ""
    print(f"anonyface serve: open http://{shown}:{port}/{fragment} in a browser "
          f"(API docs: /docs); Ctrl-C stops", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=port, log_level="warning", server_header=False)
    return 0


def _free_port(host: str) -> int:
    """--port 0: a free port, chosen here so that the address printed is the real one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
