"""The provenance record: written by tokenize, read back by pack and prepare, old manifests included."""

from __future__ import annotations

import dataclasses
import json

import pytest

from template_forge.data.packed import pack_tokenized
from template_forge.data.prepare import expected_provenance, tokenize_file
from template_forge.data.provenance import MANIFEST, Provenance, read_manifest
from template_forge.errors import DataError
from template_forge.format.spec import load_builtin
from template_forge.tokens.encoder import Encoder

from conftest import make_tokenizer


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    make_tokenizer(folder)
    return Encoder(load_builtin("llama3"), str(folder))


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Hi {i}"},
                                                     {"role": "assistant", "content": "Hello!"}]}) + "\n"
                            for i in range(5)))
    return path


def test_tokenize_writes_the_record_prepare_expects(encoder, data, tmp_path):
    manifest = tokenize_file(data, encoder, tmp_path / "tok", spec_name="llama3", workers=1).manifest
    record = Provenance.of_manifest(manifest)
    assert record == expected_provenance(data, encoder)  # what lets prepare resume from these rows
    assert record.source_path == str(data.resolve()) and record.spec_name == "llama3"
    assert record.tokenizer_path == encoder.vocab.path and record.tokenizer_engine == encoder.engine
    assert {k: manifest[k] for k in record.manifest_entries()} == record.manifest_entries()
    other = Encoder(load_builtin("chatml"), encoder.vocab)
    assert record != expected_provenance(data, other)  # another spec: other rows
    assert record != expected_provenance(data, encoder, on_error="skip")


def test_a_manifest_written_before_the_record_still_packs(encoder, data, tmp_path):
    tokenize_file(data, encoder, tmp_path / "tok", workers=1)
    path = tmp_path / "tok" / MANIFEST
    old = json.loads(path.read_text())
    for key in ("policy", "parse_special", "max_length", "overlong", "on_error", "warnings"):
        del old[key]  # entries earlier versions did not write
    old["tokenizer"] = {"sha256": old["tokenizer"]["sha256"]}
    path.write_text(json.dumps(old))
    record = Provenance.of_manifest(read_manifest(tmp_path / "tok"))
    assert (record.policy, record.on_error, record.tokenizer_engine) == (None, None, None)
    packed = pack_tokenized(tmp_path / "tok", tmp_path / "packed", context_length=64)
    assert packed["inputs"] == record.inputs(context_length=64, overflow="drop", seed=0)
    assert packed["tokenizer"] == {"sha256": old["tokenizer"]["sha256"]} and "policy" not in packed


def test_the_descriptive_fields_take_no_part_in_equality():
    a = Provenance("d" * 64, "s" * 64, "t" * 64, "assistant", False, None, "drop", "stop", source_path="/a")
    assert a == dataclasses.replace(a, source_path="/b", spec_name="x", tokenizer_path="/t")
    assert a != dataclasses.replace(a, parse_special=True)


def test_a_manifest_without_hashes_is_refused_with_where():
    with pytest.raises(DataError, match=r"t/manifest\.json: no source, spec and tokenizer sha256"):
        Provenance.of_manifest({"format": "tforge.tokenized/1", "source": {}}, where="t/manifest.json")
