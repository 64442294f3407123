"""Backend specs ("baseline", "baseline:themes", "baseline:words", "local", "local:MODEL", "openai:MODEL") and the
one place that builds an explainer, a simulator and the LLM clients behind them, for the command line and the
dashboard alike.

`BackendSpec.parse` is the only reader of a spec: core.llm.make_client, core.explain.make_explainer and
core.simulate.make_simulator call it. `wire` decides which clients exist (one per distinct LLM spec, shared by an
explainer and a simulator with the same spec) and where their answers are cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.explain import Explainer
    from core.llm import LLMClient, Usage
    from core.simulate import Simulator
    from core.store import ResponseCache

BACKEND_FORMS = "baseline, local (the built-in smollm2-135m), local:MODEL, or openai:MODEL"
"""The valid specs, for messages."""

BASELINE_VARIANTS: dict[str, dict[str, str]] = {
    "explainer": {"themes": "with themes named by the built-in model"},
    "simulator": {"words": "with knowledge of words"},
}
"""Per role, the variants "baseline:VARIANT" of the offline backend (core.explain, core.simulate) and what they add.
A role not listed here (an LLM spec, a generic backend) accepts every variant."""

THEMES_CLIENT = "local"
"""The LLM client the explainer baseline:themes asks for themes (the built-in model)."""


class BackendKind(StrEnum):
    """What produces explanations or simulations."""

    BASELINE = "baseline"
    """No language model: token statistics (core/baseline.py)."""
    LOCAL = "local"
    """A transformers causal LM in this process."""
    OPENAI = "openai"
    """An OpenAI-compatible API (api.openai.com or any server with the same endpoints)."""


class BackendSpecError(ValueError):
    """A spec that names no backend; the message lists the valid ones."""


@dataclass(frozen=True)
class BackendSpec:
    """A parsed backend spec."""

    kind: BackendKind
    model: str = ""
    """openai: the model name; local: the model spec ("" for the built-in default); baseline: its variant ("",
    "themes" for an explainer, "words" for a simulator; BASELINE_VARIANTS)."""

    def __str__(self) -> str:
        return f"{self.kind}:{self.model}" if self.model else str(self.kind)

    @property
    def is_llm(self) -> bool:
        """Whether a language-model client does the work."""
        return self.kind != BackendKind.BASELINE

    @property
    def client_spec(self) -> str | None:
        """The spec of the LLM client this backend needs (None for none): its own, or the built-in model for the
        explainer baseline:themes."""
        if self.is_llm:
            return str(self)
        return THEMES_CLIENT if self.model == "themes" else None

    @classmethod
    def parse(cls, text: str, role: str = "backend") -> BackendSpec:
        """Read a spec; BackendSpecError names the `role` ("explainer", "simulator", ...) and the valid forms."""
        kind_text, colon, model = text.strip().partition(":")
        try:
            kind = BackendKind(kind_text.strip().lower())
        except ValueError:
            raise BackendSpecError(f"unknown {role} {text!r}: use {forms(role)}") from None
        model = model.strip()
        if kind == BackendKind.BASELINE and colon:
            model = model.lower()
            variants = BASELINE_VARIANTS.get(role) or {k: v for d in BASELINE_VARIANTS.values() for k, v in d.items()}
            if model not in variants:
                raise BackendSpecError(f"unknown {role} {text!r}: 'baseline' takes no model; use {forms(role)}")
        if kind == BackendKind.OPENAI and not model:
            raise BackendSpecError(f"{text!r} names no model: use openai:MODEL, e.g. openai:gpt-4o-mini")
        return cls(kind, model)


def forms(role: str) -> str:
    """The valid specs of a role, for messages: BACKEND_FORMS with the role's baseline variants."""
    variants = "".join(f", baseline:{name} ({what})" for name, what in BASELINE_VARIANTS.get(role, {}).items())
    return BACKEND_FORMS.replace("baseline", f"baseline{variants}", 1)


@dataclass(frozen=True)
class LLMSettings:
    """How LLM clients reach their server and how much they may spend. The key stays out of repr (and logs)."""

    base_url: str | None = None
    """An OpenAI-compatible server's /v1 URL; None: OPENAI_BASE_URL or api.openai.com."""
    api_key: str | None = field(default=None, repr=False)
    """None: OPENAI_API_KEY."""
    max_cost_usd: float | None = None
    """Stop before priced models spend more than this, all the clients of one `wire` together."""
    concurrency: int = 4
    """LLM calls in flight at once, per client."""
    timeout_s: float = 60.0
    """Give up on an answer not complete after this long (each attempt), then retry."""


@dataclass
class Backends:
    """An explainer (when asked for), a simulator and the clients behind them."""

    explainer: Explainer | None
    simulator: Simulator
    clients: dict[str, LLMClient]
    """One client per distinct LLM spec."""

    @property
    def uses_api(self) -> bool:
        """Whether any client calls an API (then work runs concurrently and costs money)."""
        return any(BackendSpec.parse(spec).kind == BackendKind.OPENAI for spec in self.clients)

    def check(self) -> None:
        """One tiny call per API client, so a wrong key, model or server is one clear error before any work."""
        from core.explain import check_client

        for spec, client in self.clients.items():
            if BackendSpec.parse(spec).kind == BackendKind.OPENAI:
                check_client(client)

    def usage(self) -> list[tuple[str, Usage]]:
        """(spec, usage) of each client."""
        return [(client.spec, client.usage) for client in self.clients.values()]


def wire(
    simulator: str,
    *,
    explainer: str | None = None,
    settings: LLMSettings | None = None,
    responses: ResponseCache | None = None,
) -> Backends:
    """The simulator (and explainer) of these specs with their clients; LLM answers are kept in `responses` (the
    results file for the command line, the notes file for the dashboard). The clients share one spending budget, so
    `settings.max_cost_usd` caps the run however many models it uses."""
    from core.explain import make_explainer
    from core.llm import Budget, make_client
    from core.simulate import make_simulator

    settings = settings or LLMSettings()
    specs = {"simulator": BackendSpec.parse(simulator, "simulator")}
    if explainer is not None:
        specs["explainer"] = BackendSpec.parse(explainer, "explainer")
    budget = Budget(settings.max_cost_usd)
    clients: dict[str, LLMClient] = {}
    for spec in specs.values():
        needed = spec.client_spec
        if needed is not None and needed not in clients:
            clients[needed] = make_client(
                needed, responses=responses, base_url=settings.base_url, api_key=settings.api_key,
                budget=budget, concurrency=settings.concurrency, timeout_s=settings.timeout_s,
            )
    made_explainer = None
    if explainer is not None:
        made_explainer = make_explainer(explainer, client=clients.get(specs["explainer"].client_spec or ""))
    made_simulator = make_simulator(simulator, client=clients.get(specs["simulator"].client_spec or ""))
    return Backends(made_explainer, made_simulator, clients)
