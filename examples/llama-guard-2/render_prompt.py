"""Serve the trained adapter as a client would: prompt from the saved tokenizer, then generate.

1. Loads the tokenizer that ``tforge train`` saved next to the adapter (its chat template is
   the compiled ``verbatim`` format), renders one validation conversation without its
   assistant turn, with the generation prompt, and checks that the text equals template_forge's
   reference renderer — what the model was trained on is what it will be served.
2. Loads the base weights plus the LoRA adapter and generates a few tokens greedily, and
   prints Llama Guard's classifier score: the probability that the first token is ``unsafe``.

The stand-in model is tiny and random: expect gibberish, not a verdict. With real weights
the first generated token is ``safe`` or ``unsafe``.

Usage::

    python render_prompt.py [--out work/out] [--base work/tiny-llama3]
                            [--valid work/data/valid.jsonl] [--line 1] [--max-new-tokens 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_line(path: Path, line: int) -> list[dict]:
    """The messages of line ``line`` (1-based) of a ``{"messages": [...]}`` JSONL file."""
    with path.open(encoding="utf-8") as fh:
        for n, text in enumerate(fh, start=1):
            if n == line:
                return json.loads(text)["messages"]
    raise SystemExit(f"Error: {path} has fewer than {line} lines")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("work/out"), help="tforge train's output_dir")
    parser.add_argument("--base", type=Path, default=Path("work/tiny-llama3"), help="the base weights")
    parser.add_argument("--valid", type=Path, default=Path("work/data/valid.jsonl"))
    parser.add_argument("--line", type=int, default=1, help="which validation conversation (1-based)")
    parser.add_argument("--max-new-tokens", type=int, default=3)
    args = parser.parse_args(argv)
    needed = ((args.out / "adapter_config.json", "run `tforge train config.yaml` to the end first"),
              (args.base / "config.json", "run make_tiny_model.py first"),
              (args.valid, "run prepare_data.py first"))
    for path, what in needed:
        if not path.is_file():
            print(f"Error: {path} not found: {what}", file=sys.stderr)
            return 1

    import warnings

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    import template_forge

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 deprecation notices from peft
    messages = read_line(args.valid, args.line)
    prompt_messages, expected = messages[:-1], messages[-1]["content"]

    # ---- 1. the prompt, as the saved tokenizer's chat template renders it
    tokenizer = AutoTokenizer.from_pretrained(args.out)
    prompt = tokenizer.apply_chat_template(prompt_messages, add_generation_prompt=True, tokenize=False)
    reference = template_forge.render(template_forge.load_spec("verbatim"), prompt_messages,
                                      add_generation_prompt=True).text
    print(prompt)
    if prompt != reference:
        print(f"Error: the chat template saved in {args.out} renders differently from template_forge's "
              "`verbatim` format; the served format is not the trained one", file=sys.stderr)
        return 1
    print(f"\n-- the chat template in {args.out} renders exactly template_forge's `verbatim` format "
          f"({len(prompt)} characters). Expected answer: {expected!r}")

    # ---- 2. base weights + adapter, greedy generation
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(args.base), args.out).eval()
    # verbatim: no BOS and no special tokens anywhere; the text is the whole input.
    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id, output_scores=True, return_dict_in_generate=True)
    new = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    first = torch.softmax(out.scores[0][0].float(), dim=-1)
    safe_id, unsafe_id = (tokenizer.convert_tokens_to_ids(t) for t in ("safe", "unsafe"))
    print(f"generated {len(new)} tokens greedily: {[tokenizer.decode([i]) for i in new]} "
          "(gibberish is expected: the stand-in model is tiny and random)")
    print(f"first token: P(safe) = {first[safe_id]:.2e}, P(unsafe) = {first[unsafe_id]:.2e} "
          f"(Llama Guard's classifier score is P(unsafe); uniform would be {1 / first.numel():.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
