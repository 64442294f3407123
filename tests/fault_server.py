"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests: a small fake model that answers every kind of request
the explain and simulate stages send, the faults of a real API on demand, and its own count of the tokens it served.

    with FaultServer(faults=["drop", None, "rate_limit"]) as server:   # request 0 dropped, 1 answered, 2 rate-limited
        make_client("openai:gpt-4o-mini", base_url=server.url, ...)
    server.served_cost(price_per_million)   # what a provider would bill, by the server's own count

Faults come from `faults` (one entry per request, in arrival order; None answers normally) and then from `plan`
(index, path, request body) -> fault or None. A fault that cannot apply to a request (logprobs misaligned on a
request that asked for none) is dropped, so `applied()` counts only faults that happened.

"Served" tokens are those of every answer the fake model produced, whether or not the client could read it: a slow,
truncated, cut-off, misaligned or wrong-format answer is billed by a real provider too. Refused requests (429, 500,
401, 404, a dropped connection) serve nothing.

`secret_places` (end of this module) finds a secret in files, DuckDB tables and captured text; the API-key tests
use it and so can the dashboard's.
"""

from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FAULTS: dict[str, str] = {
    "drop": "reads the request, then closes the connection without answering",
    "rate_limit": "429 with Retry-After (seconds)",
    "server_error": "500 (with retry-after-ms, so tests do not wait out the default backoff)",
    "unauthorized": "401 invalid_api_key",
    "unknown_model": "404 model_not_found",
    "stall": "the answer only after `stall_s` seconds (past the client's timeout), headers and all",
    "slow_body": "the answer's headers at once, then its body one byte every `slow_byte_s` seconds",
    "truncated_json": "a complete HTTP answer whose JSON body is cut in half",
    "cut_body": "the connection closed halfway through the body its Content-Length announced",
    "misaligned_logprobs": "the first logprob token dropped, so the tokens no longer spell the text",
    "wrong_format": "a 200 JSON body that is no completion: the text under 'output', no 'choices'",
    "prose": "a well-formed completion whose text is prose, not the numbered lines or JSON asked for",
    "no_usage": "a well-formed answer without its 'usage' field",
}
"""The fault classes of the LLM API, as the README's reliability section counts them."""

KEY_FAULTS: dict[str, str] = {
    "echo_key_error": "400 whose error message repeats the request's Authorization header",
    "echo_key_answer": "a well-formed answer whose text repeats the request's Authorization header",
    "redirect": "307 to `redirect_to` (another origin) with the same path",
}
"""Faults for the API-key tests (a server that echoes the key, a redirect to another host)."""

SERVED_FAULTS = {"stall", "slow_body", "truncated_json", "cut_body", "misaligned_logprobs", "wrong_format", "prose",
                 "no_usage", "echo_key_answer"}
"""Faults whose answer the fake model did produce (its tokens count as served)."""

_PIECE = re.compile(r"\w+|\s|[^\w\s]")


def pieces(text: str) -> list[str]:
    """The fake model's tokens: runs of word characters, and every other character alone (they spell the text)."""
    return _PIECE.findall(text)


@dataclass(frozen=True)
class Canned:
    """A reply given as is, in place of a fault name (serves nothing)."""

    status: int
    body: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Received:
    """One request as the server saw it."""

    index: int
    method: str
    path: str
    """Path with its query string, e.g. "/v1/chat/completions"."""
    headers: list[tuple[str, str]]
    """Every header in arrival order, names lower-cased."""
    raw: bytes
    """The request body as sent."""
    body: Any
    """The body parsed as JSON (None when it is not JSON)."""
    fault: str | None
    """The fault applied to it (None: answered normally; "canned" for a Canned reply)."""
    at: float
    """time.monotonic() when it arrived."""

    def header(self, name: str) -> str | None:
        """The first header of that name (lower case)."""
        return next((value for key, value in self.headers if key == name), None)


@dataclass
class _Answer:
    """What the fake model made of a request: the JSON answer and its token counts."""

    body: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int


class FaultServer:
    """The server; a context manager that starts it on a free port of 127.0.0.1 and stops it."""

    def __init__(
        self,
        *,
        faults: Sequence[str | Canned | None] = (),
        plan: Callable[[int, str, Any], str | None] | None = None,
        retry_after: str = "1",
        stall_s: float = 2.0,
        slow_byte_s: float = 0.05,
        usage: tuple[int, int] | None = None,
        greedy: bool = False,
        redirect_to: str | None = None,
    ) -> None:
        for fault in faults:
            if isinstance(fault, str) and fault not in FAULTS and fault not in KEY_FAULTS:
                raise ValueError(f"unknown fault {fault!r}")
        self.faults = list(faults)
        self.plan = plan
        self.retry_after = retry_after
        """The Retry-After header of rate_limit answers."""
        self.stall_s = stall_s
        self.slow_byte_s = slow_byte_s
        self.usage = usage
        """Report (and bill) exactly these (prompt, completion) tokens for every answer, instead of counting."""
        self.greedy = greedy
        """Bill the most a request could cost: every prompt byte a token, completion tokens = max_tokens x n."""
        self.redirect_to = redirect_to
        """Origin ("http://127.0.0.1:PORT") the redirect fault sends clients to."""
        self.requests: list[Received] = []
        self.served: dict[str, list[int]] = {}
        """model -> [prompt tokens, completion tokens] of every answer produced."""
        self.url = ""
        """The base URL, "http://127.0.0.1:PORT/v1"."""
        self.origin = ""
        self.in_flight = 0
        self.max_in_flight = 0
        """The most requests it was answering at once."""
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._http: _HTTPServer | None = None

    # --- running ---

    def __enter__(self) -> FaultServer:
        self._http = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._http.fault_server = self
        self.origin = f"http://127.0.0.1:{self._http.server_address[1]}"
        self.url = f"{self.origin}/v1"
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    # --- what it did ---

    def applied(self) -> Counter[str]:
        """How many requests got each fault."""
        return Counter(r.fault for r in self.requests if r.fault is not None)

    def served_tokens(self) -> dict[str, tuple[int, int]]:
        """model -> (prompt tokens, completion tokens) served."""
        with self.lock:
            return {model: (counts[0], counts[1]) for model, counts in self.served.items()}

    def served_cost(self, price_per_million: Callable[[str], tuple[float, float] | None]) -> float:
        """US dollars a provider would bill for what was served, at these prices (an unpriced model: NaN)."""
        total = 0.0
        for model, (prompt, completion) in self.served_tokens().items():
            price = price_per_million(model)
            if price is None:
                return math.nan
            total += (prompt * price[0] + completion * price[1]) / 1_000_000
        return total

    # --- deciding and answering ---

    def _choose(self, index: int, path: str, body: Any) -> str | Canned | None:
        fault = self.faults[index] if index < len(self.faults) else None
        if fault is None and index >= len(self.faults) and self.plan is not None:
            fault = self.plan(index, path, body)
        if fault == "misaligned_logprobs" and not (isinstance(body, dict) and body.get("logprobs")):
            return None  # nothing to misalign
        if fault == "redirect" and self.redirect_to is None:
            raise ValueError("the redirect fault needs redirect_to")
        return fault

    def _counted(self, answer: _Answer) -> _Answer:
        if self.usage is not None:
            answer.prompt_tokens, answer.completion_tokens = self.usage
            answer.body["usage"] = self._usage(*self.usage)
        return answer

    def _bill(self, model: str, answer: _Answer) -> None:
        with self.lock:
            counts = self.served.setdefault(model, [0, 0])
            counts[0] += answer.prompt_tokens
            counts[1] += answer.completion_tokens

    def answer(self, path: str, request: dict[str, Any], fault: str | None, authorization: str) -> _Answer:
        """The fake model's answer to a chat or completions request, with a content fault applied."""
        if path.endswith("/chat/completions"):
            return self._counted(self._chat(request, fault, authorization))
        return self._counted(self._completion(request, fault))

    def _limit(self, request: dict[str, Any]) -> int:
        limit = request.get("max_tokens") or request.get("max_completion_tokens") or 16
        return max(1, int(limit))

    def _usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    def _chat(self, request: dict[str, Any], fault: str | None, authorization: str) -> _Answer:
        messages = request.get("messages") or []
        contents = [str(m.get("content", "")) for m in messages]
        user = next((c for m, c in zip(reversed(messages), reversed(contents), strict=True)
                     if m.get("role") == "user"), "")
        if request.get("response_format"):
            text = _json_predictions(user)
        elif request.get("logprobs"):
            text = _line_predictions(user)
        else:
            text = f"the main thing this neuron does is find {_explanation(user)}."
        if fault == "prose":
            text = "I think this neuron likes words about code, honestly; hard to say more."
        if fault == "echo_key_answer":
            text = f"the main thing this neuron does is find {authorization}"
        limit, n = self._limit(request), int(request.get("n") or 1)
        tokens = pieces(text)[:limit]
        finish = "length" if len(tokens) < len(pieces(text)) else "stop"
        text = "".join(tokens)
        choices = []
        for index in range(n):
            choice: dict[str, Any] = {"index": index, "finish_reason": finish,
                                      "message": {"role": "assistant", "content": text}}
            if request.get("logprobs"):
                k = int(request.get("top_logprobs") or 0)
                content = [{"token": t, "logprob": -0.1, "bytes": list(t.encode()),
                            "top_logprobs": [{"token": a, "logprob": v, "bytes": list(a.encode())}
                                             for a, v in _alternatives(t)[:k]]} for t in tokens]
                if fault == "misaligned_logprobs":
                    content = content[1:]
                choice["logprobs"] = {"content": content}
            choices.append(choice)
        prompt_tokens = sum(len(pieces(c)) for c in contents) + 4 * len(contents) + 3
        completion_tokens = len(tokens) * n
        if self.greedy:
            prompt_tokens = sum(len(c.encode()) for c in contents) + 4 * len(contents) + 3
            completion_tokens = limit * n
        body = {"id": "chatcmpl-fault", "object": "chat.completion", "created": int(time.time()),
                "model": request.get("model"), "choices": choices,
                "usage": self._usage(prompt_tokens, completion_tokens)}
        return _Answer(body, prompt_tokens, completion_tokens)

    def _completion(self, request: dict[str, Any], fault: str | None) -> _Answer:
        prompt = str(request.get("prompt", ""))
        limit = self._limit(request)
        generated = pieces(" 0 words about code")[:limit]
        tokens = pieces(prompt) + generated if request.get("echo") else generated
        text = "".join(tokens)
        if fault == "prose":
            text = "This is a sentence instead of numbers."
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "text": text, "logprobs": None}
        if request.get("logprobs") is not None and fault != "prose":
            k = int(request["logprobs"])
            tops: list[dict[str, float] | None] = []
            for position, token in enumerate(tokens):
                value = _echo_value(prompt, tokens, position) if request.get("echo") else None
                alternatives = _alternatives(token) if value is None else _value_alternatives(value)
                tops.append(dict(alternatives[:k]))
            values: list[float | None] = [-0.1] * len(tokens)
            if request.get("echo") and tokens:
                values[0], tops[0] = None, None  # nothing predicts the first token
            if fault == "misaligned_logprobs":
                tokens, values, tops = tokens[1:], values[1:], tops[1:]
            choice["logprobs"] = {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops,
                                  "text_offset": []}
        prompt_tokens = len(pieces(prompt))
        completion_tokens = len(generated)
        if self.greedy:
            prompt_tokens, completion_tokens = len(prompt.encode()), limit
        body = {"id": "cmpl-fault", "object": "text_completion", "created": int(time.time()),
                "model": request.get("model"), "choices": [choice],
                "usage": self._usage(prompt_tokens, completion_tokens)}
        return _Answer(body, prompt_tokens, completion_tokens)


# --- the fake model reads prompts loosely: prompts change, its answers stay plausible ------------------------------

_NUMBERED = re.compile(r"^(\d+)\t(.*)$", re.MULTILINE)
_DESCRIPTION = re.compile(r"description:[ \t]*(.*)", re.IGNORECASE)
_TOP_LINE = re.compile(r"^(.+)\t10$", re.MULTILINE)


def _explanation(user: str) -> str:
    """'words like "X"' for the first wordy token shown at activation 10, else a generic phrase."""
    for match in _TOP_LINE.finditer(user):
        word = match.group(1).strip()
        if re.fullmatch(r"[A-Za-z]{1,20}", word):
            return f'words like "{word}"'
    return "words about code"


def _predict(token: str, description: str) -> int:
    """9 where the description names the token as a word, else 0."""
    word = token.replace("\\n", " ").replace("\\t", " ").strip().lower()
    if word and re.search(rf"(?<!\w){re.escape(word)}(?!\w)", description.lower()):
        return 9
    return 0


def _numbered_tokens(user: str) -> tuple[list[str], str]:
    """The tokens of the first run of lines numbered 1, 2, 3... (a later run is the prompt's example answer)."""
    tokens: list[str] = []
    for line in _NUMBERED.finditer(user):
        if int(line.group(1)) != len(tokens) + 1:
            if tokens:
                break
            continue
        tokens.append(line.group(2))
    match = _DESCRIPTION.search(user)
    return tokens, match.group(1) if match else ""


def _line_predictions(user: str) -> str:
    tokens, description = _numbered_tokens(user)
    return "\n".join(f"{i}\t{_predict(t, description)}" for i, t in enumerate(tokens, start=1)) or "1\t0"


def _json_predictions(user: str) -> str:
    tokens, description = _numbered_tokens(user)
    return json.dumps({"activations": [{"token": t, "activation": _predict(t, description)} for t in tokens]})


def _echo_value(prompt: str, tokens: list[str], position: int) -> int | None:
    """The prediction at an "unknown" placeholder right after a tab (the all-at-once prompt), else None."""
    if tokens[position] != "unknown" or position == 0 or tokens[position - 1] != "\t":
        return None
    at = sum(len(t) for t in tokens[: position - 1])  # where the tab is
    line = prompt[prompt.rfind("\n", 0, at) + 1 : at]
    found = list(_DESCRIPTION.finditer(prompt[:at]))
    return _predict(line, found[-1].group(1) if found else "")


def _alternatives(token: str) -> list[tuple[str, float]]:
    """Top alternatives at a position: digits get a spread over values, other tokens themselves then fillers."""
    if token.isdigit() and int(token) <= 10:
        return _value_alternatives(int(token))
    return [(token, -0.05), (" the", -4.0), ("\n", -5.0), (",", -6.0), (" a", -7.0)]


def _value_alternatives(value: int) -> list[tuple[str, float]]:
    other = (value + 5) % 11
    return [(str(value), -0.1), (str(other), -2.5), ("1", -4.0), ("x", -5.0), (" ", -6.0)]


# --- HTTP ------------------------------------------------------------------------------------------------------------


def _error(message: str, code: str | None, kind: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fault_server: FaultServer


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read `requests`

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, json.dumps({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})
                       .encode())
        else:
            self._send(404, _error("no such path", "not_found"))

    def do_POST(self) -> None:
        fake = self.server.fault_server
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with fake.lock:
            index = len(fake.requests)
        fault = fake._choose(index, self.path, body)
        received = Received(index, "POST", self.path, [(k.lower(), v) for k, v in self.headers.items()], raw, body,
                            "canned" if isinstance(fault, Canned) else fault, time.monotonic())
        with fake.lock:
            fake.requests.append(received)
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            self._reply(fake, body, fault)
        finally:
            with fake.lock:
                fake.in_flight -= 1

    def _reply(self, fake: FaultServer, body: Any, fault: str | Canned | None) -> None:
        authorization = self.headers.get("authorization") or ""
        if isinstance(fault, Canned):
            self._send(fault.status, fault.body.encode(), dict(fault.headers))
            return
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "rate_limit":
            self._send(429, _error("Rate limit reached for requests", "rate_limit_exceeded", "requests"),
                       {"retry-after": fake.retry_after})
            return
        if fault == "server_error":
            self._send(500, _error("The server had an error while processing your request.", None, "server_error"),
                       {"retry-after-ms": "10"})
            return
        if fault == "unauthorized":
            self._send(401, _error("Incorrect API key provided.", "invalid_api_key"))
            return
        if fault == "unknown_model":
            model = body.get("model") if isinstance(body, dict) else None
            self._send(404, _error(f"The model `{model}` does not exist or you do not have access to it.",
                                   "model_not_found"))
            return
        if fault == "echo_key_error":
            self._send(400, _error(f"malformed header: {authorization}", "bad_header"))
            return
        if fault == "redirect":
            self._send(307, b"", {"location": f"{fake.redirect_to}{self.path}"})
            return
        if not isinstance(body, dict) or not self.path.endswith(("/chat/completions", "/completions")):
            self._send(400, _error("expected a JSON chat or completions request", None))
            return
        answer = fake.answer(self.path, body, fault, authorization)
        fake._bill(str(body.get("model")), answer)
        if fault == "no_usage":
            answer.body.pop("usage")
        if fault == "wrong_format":
            first = answer.body["choices"][0]
            answer.body = {"output": first.get("text") or first["message"]["content"], "usage": answer.body["usage"]}
        payload = json.dumps(answer.body).encode()
        if fault == "truncated_json":
            self._send(200, payload[: len(payload) // 2])
        elif fault == "cut_body":
            self._send(200, payload, length=len(payload), stop_after=len(payload) // 2)
        elif fault == "slow_body":
            self._send(200, payload, drip_s=fake.slow_byte_s)
        elif fault == "stall":
            if not fake.stopping.wait(fake.stall_s):
                self._send(200, payload)
        else:
            self._send(200, payload)

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None, *, length: int | None = None,
              stop_after: int | None = None, drip_s: float = 0.0) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload) if length is None else length))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if stop_after is not None:
                self.wfile.write(payload[:stop_after])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif drip_s:
                self.wfile.flush()
                for byte in payload:
                    if self.server.fault_server.stopping.wait(drip_s):
                        break
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            else:
                self.wfile.write(payload)
        except OSError:
            self.close_connection = True  # the client gave up (a timeout) or the socket was shut on purpose


# --- finding a secret ----------------------------------------------------------------------------------------------


def secret_places(secret: str, *, files: Iterable[Path] = (), texts: dict[str, str] | None = None) -> list[str]:
    """Where `secret` occurs: in each file's bytes (and, for DuckDB files, in every text or blob value of every table,
    since DuckDB may compress strings so that their bytes never appear as such) and in the named texts. Each place
    is one line, e.g. "cache.duckdb: table main.llm_cache, column response"."""
    needle = secret.encode()
    found: list[str] = []
    for path in files:
        data = path.read_bytes()
        if needle in data:
            found.append(f"{path}: bytes at offset {data.index(needle)}")
        if data[8:12] == b"DUCK":
            found += [f"{path}: {place}" for place in _duckdb_places(path, secret)]
    for name, text in (texts or {}).items():
        if secret in text:
            found.append(f"{name}: at character {text.index(secret)}")
    return found


def _duckdb_places(path: Path, secret: str) -> list[str]:
    """Tables and columns of a DuckDB file holding `secret` in a value (read from a copy, so a file in use works)."""
    import shutil
    import tempfile

    import duckdb

    places = []
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "copy.duckdb"
        shutil.copy(path, copy)
        wal = path.with_name(path.name + ".wal")
        if wal.exists():  # answers not yet checkpointed into the file
            shutil.copy(wal, copy.with_name(copy.name + ".wal"))
        con = duckdb.connect(str(copy), read_only=True)
        try:
            columns = con.execute(
                "SELECT schema_name, table_name, column_name FROM duckdb_columns() "
                "WHERE database_name = current_database() AND (data_type IN ('VARCHAR', 'BLOB', 'JSON') "
                "OR data_type LIKE '%[]' OR data_type LIKE 'STRUCT%' OR data_type LIKE 'MAP%')"
            ).fetchall()
            for schema, table, column in columns:
                table_sql, column_sql = _identifier(schema) + "." + _identifier(table), _identifier(column)
                hits = con.execute(
                    f"SELECT count(*) FROM {table_sql} WHERE contains(CAST({column_sql} AS VARCHAR), ?)", [secret]
                ).fetchone()
                if hits and hits[0]:
                    places.append(f"table {schema}.{table}, column {column}: {hits[0]} rows")
        finally:
            con.close()
    return places


def _identifier(name: str) -> str:
    """A catalogue name as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


@dataclass
class KeyReport:
    """Where an API key went on the wire, from a server's `requests`."""

    in_authorization: int = 0
    """Requests whose Authorization header is exactly "Bearer KEY"."""
    elsewhere: list[str] = field(default_factory=list)
    """Any other place it appeared: a path, a query, another header, a body."""


def key_on_the_wire(requests: Sequence[Received], key: str) -> KeyReport:
    """Check every request: the key may appear only as the Authorization header's bearer token."""
    report = KeyReport()
    for request in requests:
        if key in request.path:
            report.elsewhere.append(f"request {request.index}: path {request.path!r}")
        for name, value in request.headers:
            if key not in value:
                continue
            if name == "authorization" and value == f"Bearer {key}":
                report.in_authorization += 1
            else:
                report.elsewhere.append(f"request {request.index}: header {name}")
        if key.encode() in request.raw:
            report.elsewhere.append(f"request {request.index}: body")
    return report


# --- a cache to explain ----------------------------------------------------------------------------------------------


def build_tiny_cache(subject: Any, path: Path) -> Path:
    """A real cache of a tiny model (the `tiny_subject` fixture) over 512 stdlib tokens in 8-token excerpts: each
    neuron has 4 explain, 2 calibrate and 2 + 2 score excerpts, so a run through this server costs a few requests
    per neuron."""
    from core.corpus import build_corpus
    from core.record import BuildPlan, RecordConfig, record_corpus

    plan = BuildPlan(model=subject.name, corpus="stdlib", tokens=512, excerpt_len=8, settings={})
    record_corpus(subject, lambda: build_corpus("stdlib", subject.tokenizer, max_tokens=512, excerpt_len=8),
                  path, plan, RecordConfig(top_k=8, bottom_k=4, random_samples=4), progress=False)
    return path
