"""tforge_trainer: a thin LoRA trainer (torch + peft) over template_forge's packed shards.

Shipped from the ``trainer/`` folder as the ``tforge_trainer`` package (extra ``[train]``).
``import template_forge`` never imports it; ``tforge train`` / ``tforge merge`` load it
lazily (``tforge plot`` reads :mod:`tforge_trainer.metrics`, which needs no torch).

``recipe.train`` is the entry point, a page of phases; the helpers it calls live in
``config`` (the YAML), ``distributed`` (ranks), ``weights`` (fetching and checking the
weights), ``remote`` (``s3://``), ``packs`` (data preparation, the pack order, collation),
``model`` (the PEFT model and the packed forward), ``checkpoint`` and ``metrics``;
``merge`` folds a finished adapter into its base weights.
"""
