"""`make classroom` (dashboard/serve.py): the link and passcode it prints, the address it serves on; and the plain
app staying on 127.0.0.1. Real `streamlit run` servers on free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from core import classroom
from core.paths import REPO_DIR
from dashboard import serve
from tests.browser.harness import free_port, stop, wait_healthy


def test_the_passcode_comes_from_secrets_or_is_made_new(tmp_path):
    cache = tmp_path / "c.duckdb"
    secrets = tmp_path / "secrets.toml"
    made = serve.plan(cache, "192.0.2.7", 8600, secrets)
    assert made.passcode_from == "new" and len(made.passcode) == 9
    assert made.url == "http://192.0.2.7:8600" and made.env[classroom.CLASS_URL_ENV] == made.url
    assert made.env[classroom.PASSCODE_ENV] == made.passcode
    assert made.command[made.command.index("--server.address") + 1] == "192.0.2.7"  # explicit, never all interfaces
    secrets.write_text('teacher_passcode = "MINE-2024"\nOPENAI_API_KEY = "sk-x"\n')
    chosen = serve.plan(cache, "192.0.2.7", 8600, secrets)
    assert (chosen.passcode, chosen.passcode_from) == ("MINE-2024", "secrets")
    secrets.write_text("teacher_passcode = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        serve.plan(cache, "192.0.2.7", 8600, secrets)


def test_bad_input_gets_one_line_saying_what_to_do(tmp_path, capsys):
    assert serve.main(["--cache", str(tmp_path / "missing.duckdb"), "--address", "127.0.0.1"]) == 2
    assert "make demo" in capsys.readouterr().err
    cache = tmp_path / "c.duckdb"
    cache.write_bytes(b"x")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert serve.main(["--cache", str(cache), "--address", "127.0.0.1", "--port", str(port)]) == 2
    assert "in use" in capsys.readouterr().err


def listening(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex((address, port)) == 0


def test_make_classroom_prints_the_link_and_passcode_and_serves_there(tmp_path):
    cache = tmp_path / "c.duckdb"
    cache.write_bytes(b"x")  # the server opens the cache only when a page asks for it
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "dashboard.serve", "--cache", str(cache), "--address",
                                    "127.0.0.1", "--port", str(port)], cwd=REPO_DIR, stdout=out,
                                   stderr=subprocess.STDOUT, env={**os.environ, classroom.PASSCODE_ENV: ""})
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, 120, log)
        printed = log.read_text()
        assert f"Students open:     http://127.0.0.1:{port}" in printed
        passcode = printed.split("Teacher passcode:")[1].split()[0]
        assert classroom.passcode_matches(passcode, passcode) and len(passcode) == 9
    finally:
        stop(process)


def test_without_make_classroom_the_app_listens_on_this_machine_only(tmp_path):
    config = tomllib.loads((REPO_DIR / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    port = free_port()
    log = tmp_path / "app.log"
    with log.open("w") as out:  # as `streamlit run app.py` is started by hand: no address given
        process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
                                   cwd=REPO_DIR, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "NEURON_ATLAS_CACHE": str(tmp_path / "none.duckdb")})
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, 120, log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as answer:
            assert answer.read() == b"ok"
        lan = classroom.lan_address()
        if lan is not None:  # a machine without a network has nothing else to reach it by
            time.sleep(0.2)
            assert not listening(lan, port)
    finally:
        stop(process)


def test_the_makefile_passes_addresses_explicitly():
    makefile = Path(REPO_DIR / "Makefile").read_text()
    assert "streamlit run app.py --server.address 127.0.0.1" in makefile
    assert "-m dashboard.serve --cache $(CACHE)" in makefile
