"""The flag tables of docs/commands.md, generated from the parsers so that the document
cannot drift from the code: ``python -m matnet.commands.flag_tables`` rewrites the
section "Every command and its flags" (a test checks the file equals what this prints)."""
from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

from ..cli import GROUPS, build_parser
from .options import Deprecated

SECTION = "## Every command and its flags"


def command_parsers():
    """(command name, group, parser) of every command and sub-command, in ``matnet --help``'s order."""
    group_of = {name: group for group, commands in GROUPS.items() for name in commands}
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield name, group_of[name], p
        for a in subs:
            yield from ((f"{name} {n}", group_of[name], q) for n, q in a.choices.items())


def shown_actions(p: argparse.ArgumentParser) -> list:
    """The actions a user sees in ``--help`` (deprecated spellings and -h left out)."""
    return [a for a in p._actions if a.help != argparse.SUPPRESS
            and not isinstance(a, (argparse._HelpAction, Deprecated, argparse._SubParsersAction))]


def _cell(text: str) -> str:
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _row(p: argparse.ArgumentParser, a) -> str:
    fmt = p._get_formatter()
    if not a.option_strings:
        return f"| `{fmt._metavar_formatter(a, a.dest)(1)[0]}` (positional) | {_cell(a.help or '')} |"
    flags = fmt._format_action_invocation(a).split(", ")
    help_ = (a.help or "") % {"default": a.default} if "%(default)" in (a.help or "") else (a.help or "")
    return f"| {', '.join(f'`{f}`' for f in flags)} | {_cell(help_)} |"


def flag_tables() -> str:
    """The section: one table per command, a row per flag as ``--help`` spells it."""
    out = [SECTION, ""]
    for name, group, p in command_parsers():
        out += [f"### `matnet {name}` ({group})", "", "| flag | meaning |", "|---|---|"]
        out += [_row(p, a) for a in shown_actions(p)]
        out.append("")
    return "\n".join(out)


def rewrite(doc: Path) -> None:
    """Replace the section of ``doc`` (from its heading to the end of the file)."""
    text = doc.read_text()
    if SECTION not in text:
        raise ValueError(f"{doc}: no '{SECTION}' heading to replace")
    doc.write_text(text.split(SECTION, 1)[0] + flag_tables())


if __name__ == "__main__":
    rewrite(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/commands.md"))
