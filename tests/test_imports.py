"""`import template_forge` stays light: no torch, transformers or tokenizers."""

import subprocess
import sys


def test_import_pulls_in_nothing_heavy():
    code = ("import sys, template_forge, template_forge.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'tokenizers', 'numpy', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
