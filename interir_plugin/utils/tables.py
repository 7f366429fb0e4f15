"""Markdown tables: the one builder behind the leaderboard and the benchmark scripts' output."""


def markdown_table(header, rows):
    """Lines of a markdown table.

    Args:
        header (list[str]): Column titles.
        rows (list[list]): Cells per row, already formatted (``str()`` is applied).

    Returns:
        list[str]: The header line, the ``|---|`` separator and one line per row.
    """
    lines = ['| ' + ' | '.join(str(h) for h in header) + ' |', '|' + '---|' * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f'markdown_table: a row has {len(row)} cells for {len(header)} columns: {row!r}')
        lines.append('| ' + ' | '.join(str(c) for c in row) + ' |')
    return lines
