"""Griffe extension for the API reference: doctest lines as code blocks.

The package's docstrings write examples as `Example:` followed by `>>>`
lines at the docstring's indentation, which Markdown would read as nested
quotes. This wraps each run of `>>>` / `...` lines and their output in a
`pycon` code block before the docstring is parsed.
"""

from __future__ import annotations

import griffe


def fence_doctests(text: str) -> str:
    """`text` with each doctest run (a `>>>` line up to a blank line) fenced."""
    out, block = [], []
    for line in text.splitlines() + [""]:
        stripped = line.strip()
        if block and not stripped:
            indent = block[0][: len(block[0]) - len(block[0].lstrip())]
            if out and out[-1].strip():
                out.append("")  # a paragraph of its own
            out += [indent + "```pycon", *block, indent + "```"]
            block = []
        if stripped.startswith(">>>") or (block and stripped):
            block.append(line)
        else:
            out.append(line)
    return "\n".join(out[:-1] if out and out[-1] == "" else out)


class DoctestBlocks(griffe.Extension):
    """Fences the doctest lines of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
