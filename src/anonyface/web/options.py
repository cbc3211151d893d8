"""The HTTP API's options are the command line's: form fields named like the long
options (`--mask-scale 1.5` is `mask_scale=1.5`, `--no-audit` is `no_audit=true`),
parsed and checked by the CLI's own parser and functions, so that the two never
disagree. The OpenAPI schema of the fields is made from the same parser."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from ..anonymizers import CoverSettings
from ..cli import _check_numbers, _file_options, build_parser, cover_settings
from ..files import FileOptions

#: CLI options that make no sense for one uploaded file, or that only the server's
#: owner may set (the pixel limit): refused as form fields.
SERVER_ONLY = frozenset({"help", "output", "in_place", "skip_existing", "max_pixels", "json", "quiet", "version"})

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class OptionError(ValueError):
    """A form field that the CLI would refuse; the message says which and why."""


@dataclass
class JobOptions:
    """Everything one upload is processed with."""

    method: str
    threshold: float
    seed: int | None
    audit: bool
    unsafe: bool
    settings: CoverSettings
    files: FileOptions


class _Parser(argparse.ArgumentParser):
    """The CLI's parser, raising instead of exiting."""

    def error(self, message: str):  # noqa: D401 - argparse's name
        raise OptionError(message)

    def exit(self, status: int = 0, message: str | None = None):
        raise OptionError(message or "bad options")


def _parser() -> argparse.ArgumentParser:
    p = build_parser()
    p.__class__ = _Parser  # same parser, same options; only error() differs
    return p


def field_name(action: argparse.Action) -> str:
    long = max(action.option_strings, key=len)
    return long.lstrip("-").replace("-", "_")


def form_actions() -> list[argparse.Action]:
    """The parser's options that a request may set, in the CLI's order."""
    return [a for a in _parser()._actions if a.option_strings and field_name(a) not in SERVER_ONLY]


def is_flag(action: argparse.Action) -> bool:
    return action.nargs == 0


def parse_options(fields: dict[str, str]) -> JobOptions:
    """A request's form fields → checked options, as the CLI checks them. Raises `OptionError`."""
    actions = {field_name(a): a for a in form_actions()}
    argv: list[str] = []
    for name, value in fields.items():
        action = actions.get(name)
        if action is None:
            known = ", ".join(sorted(actions))
            raise OptionError(f"unknown option {name!r}; the options are: {known}")
        flag = max(action.option_strings, key=len)
        if is_flag(action):
            text = str(value).strip().lower()
            if text not in _TRUE | _FALSE:
                raise OptionError(f"{name} is true or false, got {value!r}")
            if text in _TRUE:
                argv.append(flag)
        else:
            argv.append(f"{flag}={value}")
    parser = _parser()
    args = parser.parse_args([*argv, "upload"])
    args.quiet = True  # no progress bar on the server's terminal
    settings = cover_settings(args, parser)
    _check_numbers(args, parser)
    try:
        files = _file_options(args)
    except ValueError as e:
        raise OptionError(str(e)) from None
    return JobOptions(args.method, args.threshold, args.seed, args.audit, args.unsafe, settings, files)


#: Faces a request may choose to keep (`keep_boxes`); a photo with more faces than this is a crowd.
MAX_KEEP_BOXES = 200
KEEP_BOXES_FIELD = "keep_boxes"


def parse_keep_boxes(text: str) -> list[list[float]]:
    """The `keep_boxes` field: a JSON list of [x1, y1, x2, y2] boxes in the photo's pixels
    (the faces the user clicked on the page), checked for shape; whether each lies on the
    photo is checked when it is read. Raises `OptionError`."""
    import json

    from ..boxes import BoxesError, face_from

    if len(text) > 64 * MAX_KEEP_BOXES:
        raise OptionError(f"keep_boxes is too long: at most {MAX_KEEP_BOXES} boxes")
    try:
        doc = json.loads(text)
    except ValueError:
        raise OptionError("keep_boxes must be JSON: a list of [x1, y1, x2, y2] boxes in the photo's pixels, "
                          'e.g. [[10, 20, 110, 140]]') from None
    if not isinstance(doc, list):
        raise OptionError(f"keep_boxes must be a list of [x1, y1, x2, y2] boxes, got {type(doc).__name__}")
    if len(doc) > MAX_KEEP_BOXES:
        raise OptionError(f"keep_boxes lists {len(doc)} boxes; at most {MAX_KEEP_BOXES}")
    out = []
    for i, box in enumerate(doc):
        if not isinstance(box, list):  # boxes only: no dicts, no landmarks
            raise OptionError(f"keep_boxes[{i}]: a box is [x1, y1, x2, y2], got {box!r}")
        try:
            out.append(list(face_from(box, f"keep_boxes[{i}]").box))
        except BoxesError as e:
            raise OptionError(str(e)) from None
    return out


def with_frame_limit(files: FileOptions, max_pixels: int) -> FileOptions:
    return dataclasses.replace(files, video=dataclasses.replace(files.video, max_pixels=max_pixels))


def openapi_fields() -> dict[str, dict]:
    """JSON schema of every form field, from the CLI's parser (help, type, choices, default)."""
    props: dict[str, dict] = {}
    for a in form_actions():
        name = field_name(a)
        if is_flag(a):
            schema: dict = {"type": "boolean", "default": False}
        else:
            kind = {int: "integer", float: "number"}.get(a.type, "string")
            schema = {"type": kind}
            if a.choices:
                schema["enum"] = list(a.choices)
            if a.default is not None and a.default is not argparse.SUPPRESS:
                schema["default"] = a.default
        text = (a.help or "").replace("%(default)s", str(a.default))
        schema["description"] = f"{text} (CLI: {max(a.option_strings, key=len)})"
        props[name] = schema
    return props
