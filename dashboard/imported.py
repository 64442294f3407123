"""Pages on a cache imported from other tools' files (`python -m core import-openai`): its model is not on disk, so
the parts that run the model or read its weights (your own text, related tokens and neurons by weights) say so in
one message with the command that adds the model, instead of failing or asking for a command that cannot run."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from core.live import model_problem
from core.types import RelatedToken, RelatedTokenKind
from dashboard import widgets
from dashboard.i18n import _
from dashboard.state import PageContext

MODEL_CHECK_SECONDS = 60
"""How long the answer "is the model on this machine" is kept (a model copied in is noticed within this)."""

@st.cache_data(show_spinner=False, ttl=MODEL_CHECK_SECONDS)
def _model_problem(model: str) -> str | None:
    return model_problem(model)


def missing_model(ctx: PageContext) -> str | None:
    """The model of an imported cache when it is not on this machine (None for a cache we built, whose model was
    there to record it, and for an imported cache whose model has since been added)."""
    if not ctx.info.settings.get("imported_from"):
        return None
    return ctx.info.model if _model_problem(ctx.info.model) else None


def needs_model(ctx: PageContext, model: str, what: str, then: str) -> None:
    """One message: `what` needs the imported cache's model, which is not here; the commands that add it."""
    st.info(_("This cache was imported from OpenAI's files, and its model **{model}** is not on this machine, so "
              "{what} cannot be computed here. To add it, run `hf download {model}` on a machine with internet, copy "
              "its Hugging Face cache (HF_HOME) here, {then}", model=model, what=what, then=then),
            icon=":material/download:")


def related_command(ctx: PageContext) -> str:
    """The end of needs_model's message for the weight-based tables."""
    return _("then run `{command}`.", command=f"python -m core related {ctx.reader.path}")


def tokens_panel(ctx: PageContext, found: Sequence[tuple[RelatedTokenKind, Sequence[RelatedToken]]],
                 model: str | None) -> None:
    """widgets.related_tokens_panel; when the model is missing, the lists that have tokens and one message for the
    rest (every list is computed by `related`, which reads the model)."""
    if model is None:
        widgets.related_tokens_panel(ctx, found, "imported.tokens")
        return
    kept = [(kind, tokens) for kind, tokens in found if tokens]
    if kept:
        widgets.related_tokens_panel(ctx, kept, "imported.kept_tokens")
    needs_model(ctx, model, _("related tokens"), related_command(ctx))
