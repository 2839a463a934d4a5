"""The format stage: a spec (YAML → :class:`~template_forge.format.spec.Spec`), the built-in
formats, the reference renderer, the compiler to Jinja, and the check against a template."""
