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
    code = ("import sys, template_forge.mask, template_forge.pipeline, template_forge.tokenized, template_forge.view, "
            "template_forge.pack, template_forge.shards, template_forge.prepare, template_forge.cli_data; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_exports():
    import template_forge as tf

    assert tf.encode is __import__("template_forge.mask", fromlist=["encode"]).encode
    assert tf.Encoder.__name__ == "Encoder" and tf.TokenizedDataset.__name__ == "TokenizedDataset"
    assert tf.plan_packs is __import__("template_forge.pack", fromlist=["plan_packs"]).plan_packs
    assert tf.PackedDataset.__name__ == "PackedDataset" and callable(tf.prepare_file) and callable(tf.collate)
