"""`make classroom`: serve the dashboard to a class on the local network (issue 13).

    .venv/bin/python -m dashboard.serve --cache caches/smollm2-135m-stdlib.duckdb [--address IP] [--port 8501]

Finds this machine's address on the local network (or takes --address), prints the link students open and the
teacher's passcode, and runs `streamlit run app.py` listening on that address only, in classroom mode
(core.classroom's environment variables). The passcode is `teacher_passcode` from .streamlit/secrets.toml when it is
set there, else a new one made for this class. Without this command the app listens on 127.0.0.1 only
(.streamlit/config.toml, and `make app` says so too).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core import classroom
from core.paths import REPO_DIR

SECRETS = REPO_DIR / ".streamlit" / "secrets.toml"
DEFAULT_PORT = 8501


@dataclass(frozen=True)
class ClassServer:
    """What `main` runs: the command, its environment, the link, and where the passcode came from."""

    command: list[str]
    env: dict[str, str]
    url: str
    passcode: str
    passcode_from: str
    """"secrets" (.streamlit/secrets.toml) or "new" (made now)."""


def secret_passcode(secrets: Path = SECRETS) -> str | None:
    """`teacher_passcode` of a secrets.toml (None when the file or the key is missing); ValueError when the file is
    not TOML."""
    if not secrets.is_file():
        return None
    try:
        value = tomllib.loads(secrets.read_text()).get(classroom.PASSCODE_SECRET)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{secrets} is not valid TOML ({error}); fix it or move it away") from None
    if value is None:
        return None
    return str(value).strip() or None


def port_free(address: str, port: int) -> bool:
    """Whether nothing listens on `address`:`port` yet."""
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def plan(cache: Path, address: str, port: int, secrets: Path = SECRETS) -> ClassServer:
    """The server to start for a class on `address`:`port` over `cache`."""
    found = secret_passcode(secrets)
    passcode = found or classroom.new_passcode()
    url = f"http://{address}:{port}"
    env = {classroom.CLASS_URL_ENV: url, classroom.PASSCODE_ENV: passcode, "NEURON_ATLAS_CACHE": str(cache.resolve())}
    command = [sys.executable, "-m", "streamlit", "run", str(REPO_DIR / "app.py"), "--server.address", address,
               "--server.port", str(port), "--server.headless", "true"]
    return ClassServer(command, env, url, passcode, "secrets" if found else "new")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dashboard.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="the cache the class explores")
    parser.add_argument("--address", help="the address to listen on (default: this machine's on the local network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the link and the passcode, then become the Streamlit server (Ctrl+C stops it)."""
    args = parse_args(argv)
    if not args.cache.is_file():
        print(f"error: no cache at {args.cache}; build one with `make demo`", file=sys.stderr)
        return 2
    address = args.address or classroom.lan_address()
    if address is None:
        print("error: this machine is on no local network; join the room's Wi-Fi (or give --address IP)",
              file=sys.stderr)
        return 2
    if not port_free(address, args.port):
        print(f"error: port {args.port} on {address} is in use (another dashboard?); stop it or give --port",
              file=sys.stderr)
        return 2
    try:
        server = plan(args.cache, address, args.port)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    where = ("set in .streamlit/secrets.toml" if server.passcode_from == "secrets"
             else "made for this class; set teacher_passcode in .streamlit/secrets.toml to choose your own")
    print(f"\n  Students open:     {server.url}\n"
          f"                     (the home page shows it as a QR code for the projector)\n"
          f"  Teacher passcode:  {server.passcode}   ({where})\n"
          f"  Cache:             {args.cache}\n"
          f"  Sign in as the teacher in the sidebar; keep the passcode off the projector. Ctrl+C stops the class.\n",
          flush=True)
    os.execve(server.command[0], server.command, {**os.environ, **server.env})
    return 0  # not reached: the process is now the server


if __name__ == "__main__":
    raise SystemExit(main())
