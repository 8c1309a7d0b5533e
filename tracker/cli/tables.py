"""The two-column summary table the commands print at the end (bold names, values)."""

from __future__ import annotations

from rich.table import Table


def key_value_table(title: str) -> Table:
    """An empty summary table titled ``title``: add rows as ``(name, value)``."""
    t = Table(title=title, show_header=False, box=None, title_justify="left", pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    return t
