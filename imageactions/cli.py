"""The `imageactions` command: import, list, show, cancel and download through the /v2 HTTP API.

A client of the API only (argparse and requests): it never imports Django, so it runs anywhere.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

import requests

from imageactions.formats.errors import human_size

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL_STATUSES = ("success", "failure", "cancelled")
POLL_INTERVAL = 0.5  # seconds between polls of an action while waiting
UPLOAD_BLOCK_SIZE = 256 * 1024  # bytes per read of a file being uploaded
DOWNLOAD_BLOCK_SIZE = 1024 * 1024
TIMEOUT = (10, 120)  # seconds: connect, then between bytes of an answer
# An upload's answer comes once the server has staged every byte; it may take a while after the last.
UPLOAD_TIMEOUT = (10, 900)
URL_PATTERN = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
TOKEN_HELP = "manage.py create_api_user USER --project PROJECT prints one"


class CliError(Exception):
    """A problem the user can fix; main() prints it and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class Unreachable(CliError):
    """The connection to the API failed (refused, reset, name unknown); `reason` says which."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


# -- talking to the API ----------------------------------------------------------------


class Api:
    """The /v2 API at `base_url`, with the caller's token."""

    def __init__(self, base_url: str, token: str):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Token {token}", "User-Agent": "imageactions-cli"})

    def request(self, method: str, path: str, *, not_found: str | None = None, timeout=TIMEOUT, **kwargs):
        try:
            response = self.session.request(method, self.base_url + path, timeout=timeout, **kwargs)
        except requests.ConnectionError as error:
            reason = connection_problem(error)
            raise Unreachable(
                f"Cannot reach the ImageActions API at {self.base_url}: {reason}. "
                f"Is the server running? Set IMAGEACTIONS_URL to its address.",
                reason,
            ) from None
        except requests.Timeout:
            raise CliError(
                f"The ImageActions API at {self.base_url} did not answer in time; try again later."
            ) from None
        if response.status_code == 401:
            raise CliError(
                f"The server refused the token (401). Set IMAGEACTIONS_TOKEN to a valid token: {TOKEN_HELP}."
            )
        if response.status_code == 404 and not_found:
            raise CliError(not_found)
        if response.status_code >= 400:
            raise CliError(
                f"The server answered {response.status_code} to {method} {path}: {error_text(response)}",
                exit_code=1 if response.status_code == 409 else 2,
            )
        return response

    def json(self, method: str, path: str, **kwargs) -> dict:
        return self.request(method, path, **kwargs).json()

    def action(self, action_id: str) -> dict:
        return self.json("GET", f"/v2/image-actions/{action_id}", not_found=f"No action '{action_id}' in your project.")


def connection_problem(error: Exception) -> str:
    """The root cause of a connection error, in a few words ("connection refused")."""
    seen = error
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if "Name or service not known" in str(seen) or "nodename nor servname" in str(seen):
            return "the host name does not resolve"
        seen = (
            seen.__cause__
            or seen.__context__
            or (seen.args[0] if seen.args and isinstance(seen.args[0], Exception) else None)
        )
    text = str(error)
    if "Connection refused" in text:
        return "connection refused"
    return text


def error_text(response: requests.Response) -> str:
    """The API's error `detail` and per-field errors, or the start of a body that is not the API's."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason
    if not isinstance(body, dict):
        return str(body)[:200]
    if isinstance(body.get("error"), dict):  # Glance's shape, on /v2/images
        body = {"detail": body["error"].get("message"), "errors": body["error"].get("errors")}
    fields = body.get("errors") or {}
    if len(fields) > 1:
        return "; ".join(f"{name}: {' '.join(messages)}" for name, messages in fields.items())
    return str(body.get("detail", body))


# -- progress --------------------------------------------------------------------------


class ProgressBar:
    """A one-line bar on stderr, redrawn in place: `label [#####.....]  45%  1.2 MiB / 2.7 MiB`.

    Off (silent) unless enabled; redraws when the whole percent changes (or, with no total known,
    at most every 0.1 s), so a fast transfer still shows each step and a slow one costs little.
    """

    WIDTH = 30

    def __init__(self, enabled: bool, stream=sys.stderr):
        self.enabled, self.stream = enabled, stream
        self.shown_width = 0
        self.last_key = None
        self.last_time = 0.0

    def update(self, label: str, done: int, total: int | None, percent: float | None = None):
        if not self.enabled:
            return
        if percent is None and total:
            percent = min(100.0, 100.0 * done / total)
        key = (label, None if percent is None else int(percent))
        now = time.monotonic()
        if key == self.last_key and (percent is not None or now - self.last_time < 0.1):
            return
        self.last_key, self.last_time = key, now
        if percent is None:
            line = f"{label:<10} {human_size(done)}"
        else:
            filled = int(self.WIDTH * percent / 100)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            line = f"{label:<10} [{bar}] {percent:3.0f}%  {human_size(done)} / {human_size(total) if total is not None else '?'}"
        self.stream.write("\r" + line.ljust(self.shown_width))
        self.stream.flush()
        self.shown_width = len(line)

    def finish(self):
        if self.enabled and self.shown_width:
            self.stream.write("\n")
            self.stream.flush()
            self.shown_width, self.last_key = 0, None


class ProgressReader:
    """A file read in blocks for an upload, reporting the bytes handed to the connection so far."""

    def __init__(self, file, size: int, bar: ProgressBar):
        self.file, self.size, self.bar = file, size, bar
        self.sent = 0

    def __len__(self):  # requests sends a Content-Length from it (no chunked upload)
        return self.size

    def read(self, amount: int = -1) -> bytes:
        block = self.file.read(UPLOAD_BLOCK_SIZE if amount is None or amount < 0 else amount)
        self.sent += len(block)
        self.bar.update("sending", self.sent, self.size)
        return block


def note(text: str):
    """A plain status line on stderr (stdout carries only the results, for scripts)."""
    print(text, file=sys.stderr, flush=True)


# -- commands --------------------------------------------------------------------------


def import_image(api: Api, args) -> int:
    source = args.source
    properties = {"name": args.name or default_name(source)}
    if args.disk_format:
        properties["disk_format"] = args.disk_format
    if URL_PATTERN.match(source):
        upload = None
        image_input = {"location": source, "image_properties": properties}
    else:
        upload = Path(source)
        if not upload.is_file():
            raise CliError(f"No such file '{source}', and it is not a URL (http://, https://, s3://, swift://).")
        image_input = {"source": "upload", "image_properties": properties}
    action = api.json("POST", "/v2/image-actions", json={"action_type": "import", "input": image_input})
    note(f"Created import action {action['id']} for image '{properties['name']}'.")
    bar = ProgressBar(args.progress)
    if upload is not None:
        action = upload_file(api, action["id"], upload, bar)
    if not args.wait:
        print(action["id"])
        return 0
    action = wait_for(api, action, bar)
    if action["status"] == "success":
        print(action["result"]["image_ref"])
        return 0
    ended = "was cancelled" if action["status"] == "cancelled" else "failed"
    note(f"The import {ended}: {action['message']}")
    return 1


def default_name(source: str) -> str:
    return source.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or source


def upload_file(api: Api, action_id: str, path: Path, bar: ProgressBar) -> dict:
    size = path.stat().st_size
    note(f"Uploading {path} ({human_size(size)}).")
    with path.open("rb") as file:
        reader = ProgressReader(file, size, bar)
        try:
            action = api.json(
                "PUT",
                f"/v2/image-actions/{action_id}/data",
                data=reader,
                timeout=UPLOAD_TIMEOUT,
                headers={"Content-Type": "application/octet-stream"},
            )
        except Unreachable as error:
            if not reader.sent:
                raise
            # The server answered early (e.g. a refusal) or went away while the bytes were on their way.
            raise CliError(
                f"The upload of {path} broke off after {human_size(reader.sent)} of {human_size(size)} "
                f"({error.reason}). "
                f"See `imageactions show {action_id}`; import again to retry.",
                exit_code=1,
            ) from None
        finally:
            bar.finish()
    note(f"Uploaded {human_size(reader.sent)}.")
    return action


def wait_for(api: Api, action: dict, bar: ProgressBar) -> dict:
    """Poll the action until it ends, showing its progress; Ctrl-C stops waiting, not the action."""
    status = None
    try:
        while True:
            if action["status"] != status:
                bar.finish()
                status = action["status"]
                if not bar.enabled:
                    note(f"Action {action['id']}: {status}")
            if status in TERMINAL_STATUSES:
                return action
            progress = action.get("progress") or {}
            bar.update(status, progress.get("bytes_done") or 0, progress.get("bytes_total"), progress.get("percent"))
            time.sleep(POLL_INTERVAL)
            action = api.action(action["id"])
    except KeyboardInterrupt:
        bar.finish()
        raise CliError(
            f"Stopped waiting; action {action['id']} goes on "
            f"(`imageactions show {action['id']}`, `imageactions cancel {action['id']}`).",
            exit_code=130,
        ) from None
    finally:
        bar.finish()


def list_actions(api: Api, args) -> int:
    params = {"limit": args.limit}
    if args.pending:
        params["status"] = "pending"
    if args.type:
        params["action_type"] = args.type
    page = api.json("GET", "/v2/image-actions", params=params)
    rows = [
        [
            a["id"],
            a["action_type"],
            a["status"],
            progress_text(a.get("progress") or {}),
            short_time(a["created_at"]),
            (a.get("image_properties") or {}).get("name", ""),
            one_line(a.get("message") or "", 60),
        ]
        for a in page["results"]
    ]
    if not rows:
        print("No pending actions." if args.pending else "No actions.")
        return 0
    print_table(["ID", "TYPE", "STATUS", "PROGRESS", "CREATED", "NAME", "MESSAGE"], rows)
    if page.get("next"):
        note(f"Showing the newest {len(rows)}; use --limit to see more.")
    return 0


def progress_text(progress: dict) -> str:
    if progress.get("percent") is not None:
        return f"{progress['percent']:.0f}%"
    return human_size(progress["bytes_done"]) if progress.get("bytes_done") else ""


def short_time(timestamp: str | None) -> str:
    return (timestamp or "")[:19].replace("T", " ")


def one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def print_table(headers: list[str], rows: list[list]):
    cells = [headers] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def show_action(api: Api, args) -> int:
    action = api.action(args.id)
    if args.json:
        print(json.dumps(action, indent=2))
    else:
        for key, value in flatten(action):
            print(f"{key}: {value}")
    return 0


def flatten(data: dict, prefix: str = ""):
    """("progress.percent", 45.0) pairs; empty dicts and nulls shown as they are."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from flatten(value, name + ".")
        elif isinstance(value, (dict, list)):
            yield name, json.dumps(value)
        else:
            yield name, "" if value is None else value


def cancel_action(api: Api, args) -> int:
    action = api.json(
        "POST", f"/v2/image-actions/{args.id}/cancel", not_found=f"No action '{args.id}' in your project."
    )
    if action["status"] == "cancelled":
        print(f"Cancelled action {action['id']}.")
    else:
        print(f"Asked action {action['id']} to stop; it is {action['status']} and stops at its next checkpoint.")
    return 0


def list_images(api: Api, args) -> int:
    page = api.json("GET", "/v2/images", params={"limit": args.limit})
    rows = [
        [
            i["id"],
            i["name"] or "",
            i["disk_format"] or "-",
            human_size(i["size"]) if i["size"] is not None else "-",
            i["status"],
            short_time(i["created_at"]),
        ]
        for i in page["images"]
    ]
    if not rows:
        print("No images.")
        return 0
    print_table(["ID", "NAME", "FORMAT", "SIZE", "STATUS", "CREATED"], rows)
    if page.get("next"):
        note(f"Showing the newest {len(rows)}; use --limit to see more.")
    return 0


def download_image(api: Api, args) -> int:
    target = Path(args.file)
    partial = target.with_name(target.name + ".part")
    bar = ProgressBar(args.progress)
    response = api.request(
        "GET", f"/v2/images/{args.image_id}/file", stream=True, not_found=f"No image '{args.image_id}' in your project."
    )
    total = int(response.headers["Content-Length"]) if "Content-Length" in response.headers else None
    md5, done = hashlib.md5(), 0
    try:
        with response, partial.open("wb") as out:
            for block in response.iter_content(DOWNLOAD_BLOCK_SIZE):
                out.write(block)
                md5.update(block)
                done += len(block)
                bar.update("download", done, total)
    except (requests.RequestException, OSError) as error:
        partial.unlink(missing_ok=True)
        raise CliError(
            f"The download of image {args.image_id} broke off after {human_size(done)}: {error}. "
            "Run the command again.",
            exit_code=1,
        ) from None
    finally:
        bar.finish()
    expected_md5 = response.headers.get("Content-MD5")
    if (total is not None and done != total) or (
        expected_md5 and base64.b64encode(md5.digest()).decode() != expected_md5
    ):
        partial.unlink(missing_ok=True)
        raise CliError(
            f"The download of image {args.image_id} arrived incomplete or damaged "
            f"({done} of {total} bytes); nothing was saved. Run the command again.",
            exit_code=1,
        )
    partial.replace(target)
    print(f"Saved image {args.image_id} ({human_size(done)}) to {target}.")
    return 0


# -- the command line ------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imageactions",
        description="Import, list, cancel and download images through the ImageActions API. "
        f"Reads IMAGEACTIONS_TOKEN (your API token) and IMAGEACTIONS_URL (default {DEFAULT_URL}).",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("IMAGEACTIONS_URL", DEFAULT_URL),
        help="the API's address (default: $IMAGEACTIONS_URL or %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, handler, help_text):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    def add_progress(command):
        command.add_argument(
            "--progress",
            action="store_true",
            default=sys.stderr.isatty(),
            help="draw a progress bar on stderr even when it is not a terminal",
        )

    command = add("import", import_image, "Import an image from a URL, or upload a local FILE.")
    command.add_argument("source", metavar="URL|FILE")
    command.add_argument("--name", help="the new image's name (default: the file's name)")
    command.add_argument("--disk-format", help="raw, qcow2, vmdk, vpc, vhd, vhdx, vdi or iso (default: detected)")
    command.add_argument("--wait", action="store_true", help="wait for the import to end; print the image id")
    add_progress(command)

    command = add("actions", list_actions, "List your actions, newest first.")
    command.add_argument("--pending", action="store_true", help="only those that have not ended")
    command.add_argument("--type", help="only actions of this type, e.g. import")
    command.add_argument("--limit", type=int, default=50, help="at most this many (default %(default)s)")

    command = add("show", show_action, "Show one action.")
    command.add_argument("id")
    command.add_argument("--json", action="store_true", help="print the action as JSON")

    command = add("cancel", cancel_action, "Cancel an action that has not ended.")
    command.add_argument("id")

    command = add("images", list_images, "List your images, newest first.")
    command.add_argument("--limit", type=int, default=50, help="at most this many (default %(default)s)")

    command = add("download", download_image, "Download an image's bytes to FILE.")
    command.add_argument("image_id")
    command.add_argument("file")
    add_progress(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    token = os.environ.get("IMAGEACTIONS_TOKEN", "").strip()
    try:
        if not token:
            raise CliError(f"Set IMAGEACTIONS_TOKEN to your API token ({TOKEN_HELP}).")
        return args.handler(Api(args.url, token), args)
    except CliError as error:
        print(f"imageactions: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("imageactions: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
