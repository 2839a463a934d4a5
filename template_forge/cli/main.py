"""The ``tforge`` command line. Thin: each command parses options, calls the library, prints.

The commands live with their stage (:mod:`~template_forge.cli.format`,
:mod:`~template_forge.cli.tokens`, :mod:`~template_forge.cli.packs`,
:mod:`~template_forge.cli.train`). Library errors (:class:`TemplateForgeError`) become
``Error: …`` and exit status 1 in one place (:class:`_Group`); usage errors stay click's
(exit 2); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import click

from template_forge.cli import format as format_commands
from template_forge.cli import packs, tokens, train
from template_forge.errors import TemplateForgeError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TemplateForgeError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(package_name="template-forge")
def main() -> None:
    """template_forge: prompt formats as a spec, compiled to exact chat templates."""


for _command in (format_commands.compile_cmd, format_commands.render_cmd, format_commands.check_cmd,
                 tokens.tokenize_cmd, tokens.inspect_cmd, tokens.convert_tokenizer_cmd, format_commands.formats_cmd,
                 packs.pack_cmd, packs.prepare_cmd, packs.stats_cmd, train.train_cmd, train.plot_cmd, train.merge_cmd):
    main.add_command(_command)
