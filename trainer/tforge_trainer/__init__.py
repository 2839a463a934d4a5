"""tforge_trainer: a thin LoRA trainer (torch + peft) over template_forge's packed shards.

Shipped from the ``trainer/`` folder as the ``tforge_trainer`` package (extra ``[train]``).
``import template_forge`` never imports it; ``tforge train`` / ``tforge merge`` load it
lazily.
"""
