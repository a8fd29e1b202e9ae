"""The claims ledger: rules on known values, and agreement with the committed reference notebooks."""

from __future__ import annotations

import re

import pytest

from companion import ledger as lg


def _row(**changes):
    base = {
        "claim": "c",
        "source": "derived",
        "chapter": "x",
        "section": "s",
        "measured": "m",
        "theory": "t",
        "rule": "interval",
        "why": "w",
        "scale": "d",
        "low": "lo",
        "high": "hi",
    }
    base.update(changes)
    return lg.Row(**base)


def test_rules_on_known_values():
    assert lg.evaluate(_row(), {"m": "-0.7", "t": "-0.75", "lo": "-0.8", "hi": "-0.6"}).verdict == "holds"
    assert lg.evaluate(_row(), {"m": "-0.7", "t": "-0.75", "lo": "-0.72", "hi": "-0.6"}).verdict == "misses"
    ratio = _row(rule="ratio", tolerance=0.1, low=None, high=None)
    assert lg.evaluate(ratio, {"m": "1.05", "t": "1"}).verdict == "holds"
    assert lg.evaluate(ratio, {"m": "1.2", "t": "1"}).verdict == "misses"
    err = _row(rule="within_error", error="e", low=None, high=None, theory="=3")
    assert lg.evaluate(err, {"m": "2.9", "e": "0.2"}).verdict == "holds"
    assert lg.evaluate(err, {"m": "2.5", "e": "0.2"}).verdict == "misses"
    most = _row(rule="at_most", tolerance=0.05, theory="=0", low=None, high=None)
    assert lg.evaluate(most, {"m": "1.4%"}).verdict == "holds" and lg.evaluate(most, {"m": "7%"}).verdict == "misses"
    missing = lg.evaluate(_row(), {"m": "-0.7"})
    assert missing.verdict == "not measured" and set(missing.missing) == {"t", "lo", "hi"}


def test_number_parses_glued_strings():
    assert lg.number("-0.79") == -0.79 and lg.number("14%") == pytest.approx(0.14)
    assert lg.number("1.4e-02") == 0.014 and lg.number("896,000") == 896000 and lg.number("4 of 4") == 4
    with pytest.raises(ValueError, match="no number"):
        lg.number("n/a")


def test_every_row_is_well_formed():
    assert len({r.claim for r in lg.ROWS}) == len(lg.ROWS)
    for r in lg.ROWS:
        assert all(tag in lg.SOURCES for tag in r.source.split(" + ")), r.claim
        assert r.rule in {"interval", "within_error", "ratio", "at_most"}, r.claim
        assert (lg.BOOK / f"{r.chapter}.md").exists(), r.claim


@pytest.mark.parametrize("entry", lg.ledger(), ids=lambda e: e.row.claim[:40])
def test_row_is_measured_and_agrees_with_its_chapter(entry):
    assert not entry.missing, (
        f"{entry.row.chapter}.ipynb does not glue {list(entry.missing)}: regenerate the "
        f"chapter, or the chapter lost a number the ledger reports"
    )
    assert entry.verdict in {"holds", "misses"}
    if entry.row.chapter_verdict:
        assert entry.chapter_verdict == entry.verdict, (
            f"{entry.row.claim}: the ledger says {entry.verdict}, the chapter glues {entry.chapter_verdict!r}"
        )


def test_every_glued_verdict_has_a_row():
    covered = {(r.chapter, r.chapter_verdict) for r in lg.ROWS if r.chapter_verdict}
    pattern = re.compile(r"(_verdict|_within|_vs_)")
    orphans = []
    for notebook in sorted(lg.BOOK.glob("[0-9]*.ipynb")):
        for key in lg.glued(notebook.stem):
            if pattern.search(key) and (notebook.stem, key) not in covered:
                orphans.append(f"{notebook.stem}:{key}")
    assert not orphans, f"chapters glue verdicts that no ledger row records: {orphans}"


def test_unknown_rule_is_refused_and_a_missing_chapter_glues_nothing(tmp_path):
    with pytest.raises(ValueError, match="unknown rule 'between'"):
        lg.evaluate(_row(rule="between"), {"m": "1", "t": "1", "lo": "0", "hi": "2"})
    assert lg.glued("no_such_chapter", tmp_path) == {}
    assert lg._value("'-0.79'") == "-0.79" and lg._value("not a literal (") == "not a literal ("


def test_table_rows_show_every_rule_with_its_numbers():
    rows = [
        (_row(), {"m": "-0.7", "t": "-0.75", "lo": "-0.8", "hi": "-0.6"}),
        (_row(rule="ratio", tolerance=0.1, low=None, high=None), {"m": "1.2", "t": "1"}),
        (_row(rule="within_error", error="e", low=None, high=None, theory="=3"), {"m": "2.9", "e": "0.2"}),
        (_row(rule="at_most", tolerance=0.05, theory="=0", low=None, high=None), {"m": "7%"}),
    ]
    entries = [lg.evaluate(r, v) for r, v in rows]
    table = lg.table_rows(entries)
    assert [len(r) for r in table] == [8] * 4
    assert table[0][3] == "-0.7 (-0.8 to -0.6)" and table[0][5].startswith("theory inside the measured interval")
    assert table[1][5].startswith("|measured / theory − 1| ≤ 0.1") and table[1][6] == "misses"
    assert table[2][3] == "2.9 ± 0.2" and table[2][5].startswith("|measured − theory| ≤ 0.2")
    assert table[3][2] == "0" and table[3][5].startswith("|measured − theory| ≤ 0.05")
    assert all(r[7] == "[x](x.md)" for r in table)
    unmeasured = lg.table_rows([lg.evaluate(rows[2][0], {})])[0]
    assert (
        unmeasured[3] == "—" and unmeasured[5].startswith("|measured − theory| ≤ e") and unmeasured[6] == "not measured"
    )
