"""Check that what `tforge compile --tokenizer-dir` wrote is what transformers serves.

Usage: python examples/verify.py TOKENIZER_DIR SPEC CONVERSATION.json
"""

import json
import sys
from pathlib import Path

from transformers.utils.chat_template_utils import render_jinja_template

import template_forge as tf

folder, spec_name, conv_path = sys.argv[1:4]
template = (Path(folder) / "chat_template.jinja").read_text(encoding="utf-8")
messages = json.loads(Path(conv_path).read_text(encoding="utf-8"))["messages"]
spec = tf.load_spec(spec_name)
ok = True
for gen, msgs in ((False, messages), (True, messages[:-1])):
    (served,), spans = render_jinja_template(conversations=[msgs], chat_template=template,
                                             add_generation_prompt=gen, return_assistant_tokens_mask=True)
    expected = tf.render(spec, msgs, add_generation_prompt=gen)
    trained = [served[s:e] for s, e in spans[0] if e > s]
    same = served == expected.text and trained == [expected.text[s:e] for s, e in expected.trained_spans()]
    ok &= same
    print(f"generation prompt={gen!s:5}  transformers == tforge render: {same}  trained spans: {trained}")
sys.exit(0 if ok else 1)
