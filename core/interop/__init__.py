"""Trading neuron data with other tools: OpenAI's published GPT-2 XL files in and out, Neuronpedia and delphi out.

- `openai_format`: OpenAI's file format (the dataclasses of openai/automated-interpretability), read and written.
- `importer`: `python -m core import-openai`, a folder of OpenAI's files into a normal cache.
- `export_openai`, `export_neuronpedia`, `export_delphi`: `python -m core export CACHE --format ...`.
- `rescore`: `python -m core score --imported`, imported explanations re-scored with our simulators.
- `cache_io`: the only module here that talks to core.store.
The commands are in core/cli/interop.py.

Formats, versions and what each direction keeps and loses: docs/interop.md.
"""


class InteropError(ValueError):
    """A folder, file or option that cannot be imported or exported; the message says what to do."""
