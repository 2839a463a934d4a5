"""The tokens stage: what a tokenizer is made of (vocab), conversations → ``input_ids`` +
``loss_mask`` (encoder), vendor tokenizer files → Hugging Face ones (convert), and views."""
