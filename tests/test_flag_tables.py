"""docs/commands.md's flag tables are the parsers' (matnet.commands.flag_tables)."""
from pathlib import Path

from matnet.commands.flag_tables import SECTION, command_parsers, flag_tables, shown_actions

DOC = Path(__file__).resolve().parents[1] / "docs" / "commands.md"


def test_docs_tables_equal_the_parsers():
    """The section as generated now; regenerate with `python -m matnet.commands.flag_tables`."""
    assert DOC.read_text().split(SECTION, 1)[1] == flag_tables().split(SECTION, 1)[1]


def test_every_shown_flag_is_in_its_commands_table():
    """Independent of the generator's layout: each flag of each command appears in backticks
    in that command's table."""
    tables = flag_tables()
    for name, _, p in command_parsers():
        table = tables.split(f"### `matnet {name}` (", 1)[1].split("\n### ", 1)[0]
        for a in shown_actions(p):
            for flag in a.option_strings:
                assert f"`{flag}" in table, (name, flag)
