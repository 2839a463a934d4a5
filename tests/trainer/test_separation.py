"""No sample attends to, or learns from, its neighbour in a pack.

On tiny random causal LMs (built from a config, CPU, float64), the summed loss of a packed
batch — per-sample ``position_ids``, a block-diagonal causal mask, ``labels`` from
:func:`template_forge.data.packing.labels` — equals the sum of the losses of the same samples run
one by one. The negative controls show what each ingredient prevents: a plain causal mask
lets samples attend across the boundary, labels without the first-token −100 train one
sample's start on its neighbour's end, and (for absolute position embeddings) positions
that do not restart change every later sample.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from template_forge.data.packing import IGNORE_INDEX, collate

VOCAB = 101


def tiny(arch: str, attn: str = "sdpa"):
    torch.manual_seed(0)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=256)
        model = GPT2LMHeadModel(cfg)
    model.config._attn_implementation = attn
    return model.double().eval()


class Pack:
    def __init__(self, samples):
        self.input_ids = np.concatenate([s[0] for s in samples])
        self.loss_mask = np.concatenate([s[1] for s in samples])
        self.seq_lengths = np.array([len(s[0]) for s in samples])


def block_causal_mask(seq_lengths: np.ndarray, rows: int, attn: str = "sdpa") -> torch.Tensor:
    """``[B, 1, S, S]``: query i may attend to key j when both are in one sample and j <= i.

    transformers passes a 4D mask through to the attention function unchanged: SDPA takes
    booleans (True = attend), but eager attention *adds* the mask to the scores, so it needs
    0 / -inf floats; a boolean mask there would silently attend everywhere.
    """
    seg = np.repeat(np.arange(len(seq_lengths)), seq_lengths).reshape(rows, -1)
    pos = np.arange(seg.shape[1])
    allowed = torch.from_numpy((seg[:, :, None] == seg[:, None, :]) & (pos[:, None] >= pos[None, :]))[:, None]
    if attn == "eager":
        return torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(~allowed, torch.finfo(torch.float64).min)
    return allowed


def summed_loss(model, batch: dict, *, mask: torch.Tensor | None, positions: np.ndarray | None = None,
                labels: np.ndarray | None = None) -> torch.Tensor:
    positions = batch["position_ids"] if positions is None else positions
    labels = batch["labels"] if labels is None else labels
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(batch["input_ids"]), attention_mask=mask,
                       position_ids=torch.from_numpy(positions)).logits
    # The model's own loss shifts labels the same way; summing (not averaging) makes packs comparable.
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB),
                                             torch.from_numpy(labels)[:, 1:].reshape(-1),
                                             ignore_index=IGNORE_INDEX, reduction="sum")


def random_samples(seed: int, count: int, always_trained_start: bool = False):
    rng = np.random.default_rng(seed)
    out = []
    for n in rng.integers(3, 24, count):
        mask = rng.integers(0, 2, n).astype(np.uint8)
        mask[-1] = 1
        if always_trained_start:
            mask[0] = 1
        out.append((rng.integers(0, VOCAB, n), mask))
    return out


def per_sample_total(model, samples) -> torch.Tensor:
    return sum(summed_loss(model, collate([Pack([s])]), mask=None) for s in samples)


@pytest.mark.parametrize("arch,attn", [("llama", "sdpa"), ("llama", "eager"), ("gpt2", "sdpa")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_packed_loss_equals_the_sum_of_per_sample_losses(arch, attn, seed):
    model = tiny(arch, attn)
    samples = random_samples(seed, 7)
    packs = [Pack(samples[:3]), Pack(samples[3:5]), Pack(samples[5:])]
    batch = collate(packs, length=80)  # two rows end in padding, a segment of its own
    packed = summed_loss(model, batch, mask=block_causal_mask(batch["seq_lengths"], len(packs), attn))
    assert packed.item() == pytest.approx(per_sample_total(model, samples).item(), rel=1e-10)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_plain_causal_mask_lets_samples_see_their_neighbours(arch):
    model = tiny(arch)
    samples = random_samples(3, 4)
    batch = collate([Pack(samples)])
    leaked = summed_loss(model, batch, mask=None)
    assert abs(leaked.item() - per_sample_total(model, samples).item()) > 1e-3


def test_labels_without_the_first_token_rule_train_across_the_boundary():
    model = tiny("llama")
    samples = random_samples(4, 4, always_trained_start=True)
    batch = collate([Pack(samples)])
    naive = np.where(Pack(samples).loss_mask.astype(bool), Pack(samples).input_ids, IGNORE_INDEX)[None]
    crossing = summed_loss(model, batch, mask=block_causal_mask(batch["seq_lengths"], 1), labels=naive)
    assert (naive != IGNORE_INDEX).sum() - (batch["labels"] != IGNORE_INDEX).sum() == len(samples)
    assert crossing.item() > per_sample_total(model, samples).item() + 1e-3


def test_positions_must_restart_for_absolute_position_embeddings():
    model = tiny("gpt2")
    samples = random_samples(5, 4)
    batch = collate([Pack(samples)])
    running = np.arange(batch["input_ids"].shape[1])[None]
    shifted = summed_loss(model, batch, mask=block_causal_mask(batch["seq_lengths"], 1), positions=running)
    assert abs(shifted.item() - per_sample_total(model, samples).item()) > 1e-3


# ------------------------------------------------------------------ the trainer's own forward
def _tensors(batch: dict) -> dict:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v for k, v in batch.items()}


def _with_lora(model):
    """The model as the trainer trains it: wrapped by PEFT, with a non-zero adapter."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  lora_dropout=0.0, task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    return peft_model.double().eval()


@pytest.mark.parametrize("attn", ["sdpa", "eager", "flex_attention"])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_trainers_packed_forward_equals_per_sample_losses(attn, seed):
    """``tforge_trainer.model.loss_sum`` — the function the training loop calls — on a
    PEFT-wrapped model: a packed batch's loss equals the per-sample sum; with its mask
    replaced by a plain causal one it does not."""
    pytest.importorskip("peft")
    from tforge_trainer import model as trainer_model
    from tforge_trainer.model import Forward

    if attn == "flex_attention":
        pytest.importorskip("torch.nn.attention.flex_attention")
    # FlexAttention on CPU compiles its kernel (inductor) and takes float32 at most
    dtype, rel = (torch.float32, 1e-5) if attn == "flex_attention" else (torch.float64, 1e-9)
    model = _with_lora(tiny("llama", attn)).to(dtype)
    samples = random_samples(seed, 7)
    packs = [Pack(samples[:3]), Pack(samples[3:5]), Pack(samples[5:])]
    cpu = torch.device("cpu")

    def total(batch):
        with torch.no_grad():
            return trainer_model.loss_sum(model, _tensors(batch), fwd=Forward(attn, cpu, dtype)).item()

    packed = total(collate(packs, length=80))
    one_by_one = sum(total(collate([Pack([s])])) for s in samples)
    assert packed == pytest.approx(one_by_one, rel=rel)
    kwargs = trainer_model.forward_kwargs(_tensors(collate(packs, length=80)), Forward(attn, cpu, dtype))
    if attn != "flex_attention":
        assert kwargs["attention_mask"].shape == (3, 1, 80, 80)
        assert kwargs["attention_mask"].dtype == (torch.bool if attn == "sdpa" else torch.float64)
    else:  # a BlockMask: sparse blocks, never a dense [L, L] tensor
        assert type(kwargs["attention_mask"]).__name__ == "BlockMask"


def test_the_trainers_mask_is_what_keeps_samples_apart():
    pytest.importorskip("peft")
    from tforge_trainer import model as trainer_model
    from tforge_trainer.model import Forward

    model = _with_lora(tiny("llama", "sdpa"))
    samples = random_samples(6, 4)
    batch = _tensors(collate([Pack(samples)]))
    cpu = torch.device("cpu")
    with torch.no_grad():
        good = trainer_model.loss_sum(model, batch, fwd=Forward("sdpa", cpu, torch.float64))
        kwargs = trainer_model.forward_kwargs(batch, Forward("sdpa", cpu, torch.float64))
        kwargs.pop("attention_mask")  # a plain causal mask
        logits = model(**kwargs).logits
    leaked = torch.nn.functional.cross_entropy(logits[0, :-1], batch["labels"][0, 1:], ignore_index=IGNORE_INDEX,
                                               reduction="sum")
    one_by_one = sum(trainer_model.loss_sum(model, _tensors(collate([Pack([s])])),
                                            fwd=Forward("sdpa", cpu, torch.float64)).item() for s in samples)
    assert good.item() == pytest.approx(one_by_one, rel=1e-9)
    assert abs(leaked.item() - one_by_one) > 1e-3


def _varlen_reference(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """What flash-attention's varlen kernel computes, in plain torch: causal attention within
    each ``cu_seq_lens_q`` segment of the one flat row, nothing across."""
    cu = kwargs["cu_seq_lens_q"].tolist()
    assert query.shape[0] == 1 and kwargs["cu_seq_lens_k"].tolist() == cu and cu[-1] == query.shape[2]
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    out = torch.cat([torch.nn.functional.scaled_dot_product_attention(
        query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling)
        for a, b in zip(cu[:-1], cu[1:])], dim=2)
    return out.transpose(1, 2).contiguous(), None


def test_the_trainers_varlen_inputs_keep_samples_apart():
    """The flash-attention path (rows flattened into one sequence, ``cu_seqlens`` over all of
    them, padding segments included) cannot run without a GPU; a reference varlen attention
    registered in its place checks the inputs the trainer builds for it."""
    pytest.importorskip("peft")
    from transformers import AttentionInterface

    from tforge_trainer import model as trainer_model
    from tforge_trainer.model import Forward

    AttentionInterface.register("tforge_varlen_reference", _varlen_reference)
    model = _with_lora(tiny("llama", "sdpa"))
    model.base_model.model.config._attn_implementation = "tforge_varlen_reference"
    samples = random_samples(7, 7)
    packs = [Pack(samples[:3]), Pack(samples[3:5]), Pack(samples[5:])]
    cpu = torch.device("cpu")

    def total(batch, attn):
        with torch.no_grad():
            return trainer_model.loss_sum(model, _tensors(batch), fwd=Forward(attn, cpu, torch.float64)).item()

    packed = total(collate(packs, length=80), "flash_attention_2")
    kwargs = trainer_model.forward_kwargs(_tensors(collate(packs, length=80)),
                                          Forward("flash_attention_2", cpu, torch.float64))
    assert kwargs["input_ids"].shape == (1, 240) and "attention_mask" not in kwargs
    assert kwargs["cu_seq_lens_q"].dtype == torch.int32 and kwargs["cu_seq_lens_q"][-1] == 240
    model.base_model.model.config._attn_implementation = "sdpa"
    one_by_one = sum(total(collate([Pack([s])]), "sdpa") for s in samples)
    assert packed == pytest.approx(one_by_one, rel=1e-9)
