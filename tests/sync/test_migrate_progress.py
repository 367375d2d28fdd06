"""The progress of a migrate step: a bar redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from sync.migrate.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_is_redrawn_in_place_with_the_counts() -> None:
    out = Terminal()
    progress = Progress("documents", 4, out)
    progress.advance(1)
    progress.advance(3)
    progress.finish("(done)")
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("  (done)\n")
    assert "[#######-----------------------] 1/4" in text
    assert "[##############################] 4/4" in text


def test_elsewhere_it_writes_plain_lines_and_always_the_last() -> None:
    out = io.StringIO()
    progress = Progress("SMS", 2, out)
    progress.advance(2)  # within the first 2 s: no line yet
    progress.finish()
    assert out.getvalue() == "SMS: 2/2\n"
