"""template_forge: a chat prompt format as a small declarative spec, and everything derived from it.

The stages, each a sub-package, data flowing one way::

    format/  spec (YAML → Spec) → render (text + segment spans) → compiler (Spec → Jinja), check
       ↓
    tokens/  vocab (what a tokenizer is made of) → encoder (input_ids + loss_mask); convert, view
       ↓
    data/    conversations (JSONL) → prepare → tokenized (Arrow shards + manifest, provenance)
             → packing (best-fit-decreasing plan, positions, labels) → packed (packed shards)

Importing the package loads none of torch, transformers, tokenizers or numpy; ``encode``,
``Encoder``, ``Encoded``, ``TokenizedDataset``, ``plan_packs``, ``PackedDataset``… load numpy,
pyarrow and tokenizers on first use.

Examples:
    >>> import template_forge as tf
    >>> spec = tf.load_spec("llama3")
    >>> tf.render(spec, [{"role": "user", "content": "Hi"}], add_generation_prompt=True).text
    '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n'
"""

from template_forge.errors import DataError, RenderError, SpecError, TemplateForgeError
from template_forge.format.compiler import compile_template
from template_forge.format.formats import builtin_names
from template_forge.format.render import Rendered, Segment, render
from template_forge.format.spec import Spec, load_builtin, load_spec, load_spec_text, spec_from_dict

__version__ = "0.1.0"

_LAZY = {"encode": "template_forge.tokens.encoder", "encode_batch": "template_forge.tokens.encoder", "Encoder": "template_forge.tokens.encoder",
         "Encoded": "template_forge.tokens.encoder", "Vocab": "template_forge.tokens.vocab",
         "TokenizedDataset": "template_forge.data.tokenized", "tokenize_file": "template_forge.data.prepare",
         "plan_packs": "template_forge.data.packing", "collate": "template_forge.data.packing", "PackedDataset": "template_forge.data.packed",
         "pack_tokenized": "template_forge.data.packed", "prepare_file": "template_forge.data.prepare"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'template_forge' has no attribute {name!r}")


__all__ = [
    "DataError", "RenderError", "Rendered", "Segment", "Spec", "SpecError", "TemplateForgeError",
    "builtin_names", "compile_template", "load_builtin", "load_spec", "load_spec_text", "render",
    "spec_from_dict", *_LAZY,
]
