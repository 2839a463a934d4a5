"""`import template_forge` stays light: no torch, transformers or tokenizers; the tokenizing
modules never pull in torch or transformers."""

import subprocess
import sys


def test_import_pulls_in_nothing_heavy():
    code = ("import sys, template_forge, template_forge.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'tokenizers', 'numpy', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tokenizing_modules_never_import_torch_or_transformers():
    code = ("import sys, template_forge.tokens.vocab, template_forge.tokens.encoder, template_forge.tokens.view, "
            "template_forge.data.conversations, template_forge.data.provenance, template_forge.data.tokenized, "
            "template_forge.data.packing, template_forge.data.packed, template_forge.data.prepare, "
            "template_forge.cli.format, template_forge.cli.tokens, template_forge.cli.packs; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_exports():
    import template_forge as tf

    assert tf.encode is __import__("template_forge.tokens.encoder", fromlist=["encode"]).encode
    assert tf.Encoder.__name__ == "Encoder" and tf.TokenizedDataset.__name__ == "TokenizedDataset"
    assert tf.plan_packs is __import__("template_forge.data.packing", fromlist=["plan_packs"]).plan_packs
    assert tf.PackedDataset.__name__ == "PackedDataset" and callable(tf.prepare_file) and callable(tf.collate)
