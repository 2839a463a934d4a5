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


def test_cli_tokenize_and_pack_never_import_pandas(tmp_path):
    # pyarrow imports pandas on the first `pa.array(ndarray)` or `Array.to_numpy()`: 0.2-0.4 s of
    # every command's start. The commands build and view Arrow arrays from buffers instead.
    from conftest import make_tokenizer, write_conversations

    make_tokenizer(tmp_path / "tok")
    data = write_conversations(tmp_path / "data.jsonl", 5, words=["Hi", "there", "Hello!"])
    code = (
        "import sys; from template_forge.cli import main\n"
        "for args in (['tokenize', sys.argv[1], '-f', 'llama3', '-t', sys.argv[2], '-o', sys.argv[3] + '/t', '-q'],\n"
        "             ['pack', sys.argv[3] + '/t', '-n', '64', '-o', sys.argv[3] + '/p'],\n"
        "             ['inspect', sys.argv[3] + '/t', '--table'], ['stats', sys.argv[3] + '/p']):\n"
        "    main(args, standalone_mode=False)\n"
        "print(sorted(m for m in ('pandas', 'torch', 'transformers', 'matplotlib', 'jinja2') if m in sys.modules),"
        " file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, str(data), str(tmp_path / "tok"), str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "[]"
