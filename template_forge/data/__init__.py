"""The data stage: conversation files, tokenized and packed Arrow folders with their
manifests, the packing plan, and ``prepare`` (both steps at once)."""
