"""The API key goes only into the Authorization header of requests to the configured base URL: it is never printed,
logged, written to a DuckDB file or the LLM cache, or put in a URL. A paid-backend session (the openai backend with a
distinctive fake key) runs against the fault server, whose answers echo the key back where they can; then every file
under the cache's folder (DuckDB files read as bytes and table by table), the captured output and every log record
are searched for the key with tests/fault_server.py's `secret_places` (which the dashboard's test reuses for pages).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fault_server import FaultServer, key_on_the_wire, secret_places

from core.explain import explain_neurons, make_explainer
from core.llm import REDACTED, LLMError, make_client
from core.paths import copy_cache, results_path
from core.simulate import make_simulator
from core.store import open_results_writer
from core.types import NeuronId

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-proj-NeuronAtlasFaultsTest-7f3a9c1e5b2d4068a1c3e5f7091b2d4f"
"""A fake key no real text contains."""
SPEC = "openai:gpt-4o-mini"


@pytest.fixture(autouse=True)
def no_openai_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def echoing_plan(index: int, path: str, body: Any) -> str | None:
    """Now and then an answer or an error that repeats the Authorization header, a refused key, a lost answer."""
    return {3: "echo_key_error", 5: "echo_key_answer", 8: "echo_key_answer", 11: "server_error", 13: "drop",
            17: "unauthorized", 21: "echo_key_error"}.get(index)


# --- the search itself finds what is there ----------------------------------------------------------------------------


def test_the_search_finds_a_planted_key(tmp_path: Path) -> None:
    """The checks below are only worth something if the search finds the key where it is: in a file's bytes, in a
    DuckDB table whose compressed pages do not hold it as such, and in text."""
    import duckdb

    clean = tmp_path / "clean.duckdb"
    planted = tmp_path / "planted.duckdb"
    for path, value in ((clean, "nothing here"), (planted, f"Bearer {KEY}")):
        con = duckdb.connect(str(path))
        con.execute("CREATE TABLE answers AS SELECT ? || ' ' || (i % 7) AS response, i FROM range(20000) t(i)",
                    [value])
        con.close()
    (tmp_path / "log.txt").write_text(f"INFO sent {KEY}\n")
    assert secret_places(KEY, files=[clean]) == []
    found = secret_places(KEY, files=[planted, tmp_path / "log.txt"], texts={"stdout": "x", "stderr": f"({KEY})"})
    assert any("planted.duckdb: table main.answers, column response: 20000 rows" in place for place in found)
    assert any(place.startswith(f"{tmp_path / 'log.txt'}: bytes") for place in found)
    assert any(place.startswith("stderr:") for place in found) and not any("stdout" in p for p in found)


# --- the command line -------------------------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


def test_a_paid_session_on_the_command_line_leaves_the_key_nowhere(tiny_cache: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "home").mkdir(parents=True)
    cache = work / "run.duckdb"
    copy_cache(tiny_cache, cache)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(PYTHONPATH=str(ROOT), OPENAI_API_KEY=KEY, OPENAI_LOG="debug", NEURON_ATLAS_HOME=str(work / "home"))
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    outputs: dict[str, str] = {}
    with FaultServer(plan=echoing_plan, retry_after="0") as server:
        llm = ["--base-url", server.url, "--max-cost", "1", "--timeout", "5"]
        runs = {
            "explain": ["-v", "explain", str(cache), "--neurons", "0:0-3", "--explainer", SPEC, "--simulator", SPEC,
                        *llm],
            "score": ["-v", "score", str(cache), "--neurons", "0:5", "--explanation", 'words like "s"',
                      "--simulator", SPEC, *llm],
            "show": ["show", str(cache), "--neuron", "0:1", "--tokens"],
            "info": ["info", str(cache), "--json"],
            "unreachable": ["-v", "explain", str(cache), "--neurons", "0:6", "--explainer", SPEC, "--base-url",
                            nobody],
        }
        for name, argv in runs.items():
            done = run_cli(*argv, env=env)
            outputs[f"{name} stdout"], outputs[f"{name} stderr"] = done.stdout, done.stderr
            assert "Traceback" not in done.stderr, done.stderr
    assert "HTTP Request" in outputs["explain stderr"] or "Sending HTTP Request" in outputs["explain stderr"]
    assert "cannot reach" in outputs["unreachable stderr"]
    assert server.applied()["echo_key_answer"] >= 1 and server.applied()["echo_key_error"] >= 1

    files = files_under(work)
    assert cache in files and results_path(cache) in files  # the recording and the results the runs wrote
    assert secret_places(KEY, files=files, texts=outputs) == []
    wire = key_on_the_wire(server.requests, KEY)
    assert wire.elsewhere == [] and wire.in_authorization == len(server.requests) > 10


# --- the library ------------------------------------------------------------------------------------------------------


def test_the_library_logs_caches_and_raises_nothing_with_the_key(tiny_cache: Path, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, the SDK's, the HTTP client's
    cache = tmp_path / "run.duckdb"
    copy_cache(tiny_cache, cache)
    results: list[str] = []
    with FaultServer(plan=echoing_plan, retry_after="0") as server, open_results_writer(cache) as store:
        client = make_client(SPEC, responses=store.responses, base_url=server.url, api_key=KEY, max_retries=1,
                             timeout_s=5)
        for index in range(10):
            try:
                results.append(client.chat([{"role": "user", "content": f"question {index}"}])[0].text)
            except LLMError as error:
                results.append(str(error))
        summary = explain_neurons(store, [NeuronId(0, 0), NeuronId(0, 1)], make_explainer(SPEC, client=client),
                                  make_simulator(SPEC, client=client))
        results += [client.usage.describe(), repr(summary)]
    assert any(REDACTED in text for text in results)  # the echoed key reached us, and was replaced
    log_text = "\n".join(f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records)
    assert "HTTP Request" in log_text  # the HTTP client's debug records were captured too
    assert secret_places(KEY, files=files_under(tmp_path), texts={"results": "\n".join(results), "log": log_text}) == []
    wire = key_on_the_wire(server.requests, KEY)
    assert wire.elsewhere == [] and wire.in_authorization == len(server.requests)


def test_the_key_goes_to_the_base_url_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A redirect is not followed (the prompts and the key would go to another host), and a proxy named in the
    environment is not used for a server on this machine (it would read the key in plain HTTP)."""
    with FaultServer() as elsewhere:
        with FaultServer(faults=["redirect"], redirect_to=elsewhere.origin) as configured:
            client = make_client(SPEC, base_url=configured.url, api_key=KEY, max_retries=2)
            with pytest.raises(LLMError, match=r"redirects to http://127\.0\.0\.1:\d+/v1/chat/completions \(HTTP 307\)"
                               r"; requests go to the base URL only"):
                client.chat([{"role": "user", "content": "hello"}])
        assert len(configured.requests) == 1 and elsewhere.requests == []

        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, elsewhere.origin)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with FaultServer() as configured:
            make_client(SPEC, base_url=configured.url, api_key=KEY).chat([{"role": "user", "content": "hello"}])
        assert len(configured.requests) == 1 and elsewhere.requests == []
        assert key_on_the_wire(configured.requests, KEY).in_authorization == 1
