"""Result tables: units and directions in headers, the best student marked, ensemble first."""

from ensemble_distill.report.table import (
    ACC,
    AURC,
    AUROC,
    AUROC_MI,
    COLUMNS,
    COMPARE_COLUMNS,
    DEE,
    EAURC,
    FPR95,
    FPR95_MI,
    MI,
    NLL,
    REGRESSION_COLUMNS,
    REGRESSION_REPORT_TABLES,
    REPORT_TABLES,
    best_students,
    compare_rows,
    markdown_table,
    results_markdown,
    table_rows,
)

METHODS = {
    # The ensemble and the member beat every student but are never "best student".
    "ensemble": {"acc": 0.99, "nll": 0.01, "mi": 0.2},
    "member": {"acc": 0.98, "nll": 0.02, "mi": 0.0},
    "kd": {"acc": 0.91, "nll": 0.30, "mi": 0.0},
    "hydra": {"acc": 0.95, "nll": 0.25, "mi": 0.1},
    "endd": {"acc": 0.93, "nll": 0.20, "mi": None},
}


def test_best_student_is_highest_for_up_and_lowest_for_down_columns():
    assert best_students(METHODS, ACC) == {"hydra"}
    assert best_students(METHODS, NLL) == {"endd"}


def test_no_best_for_a_column_without_direction_or_values():
    assert best_students(METHODS, MI) == set()
    assert best_students({"ensemble": {"acc": 1.0}, "kd": {"acc": None}}, ACC) == set()


def test_ties_as_displayed_mark_every_tied_student():
    methods = {"kd": {"acc": 0.90001}, "hydra": {"acc": 0.9}, "endd": {"acc": 0.8}}
    assert best_students(methods, ACC) == {"kd", "hydra"}  # both read 0.9000


def test_nobody_is_marked_when_every_student_ties():
    methods = {"kd": {"dee": 1.0}, "hydra": {"dee": 1.0}}
    assert best_students(methods, DEE) == set()
    assert best_students({"kd": {"dee": 1.0}}, DEE) == {"kd"}


def test_rows_put_the_reference_first_and_mark_the_right_cells():
    rows = dict(table_rows(METHODS, [ACC, NLL, MI]))
    assert list(rows)[:2] == ["ensemble", "member"]
    assert rows["hydra"] == [("0.9500", True), ("0.2500", False), ("0.1", False)]
    assert rows["endd"] == [("0.9300", False), ("0.2000", True), ("n/a", False)]
    assert rows["ensemble"][0] == ("0.9900", False)


def test_markdown_bolds_the_best_student():
    table = markdown_table(METHODS, [ACC, NLL])
    assert "| hydra | **0.9500** | 0.2500 |" in table
    assert "| endd | 0.9300 | **0.2000** |" in table
    assert "| ensemble | 0.9900 | 0.0100 |" in table


def test_every_header_says_its_unit_or_direction():
    tables = [*REPORT_TABLES.values(), *REGRESSION_REPORT_TABLES.values()]
    for column in [*COLUMNS, *REGRESSION_COLUMNS, *(c for cols in tables for c in cols)]:
        assert column.better == 0 or ("↑" if column.better > 0 else "↓") in column.header
        assert column.nominal is None or f"→ {column.nominal:.2f}" in column.header
        assert column.better != 0 or "(" in column.header  # no direction: a unit or a note


def test_results_markdown_keeps_the_pipeline_table():
    results = {"dataset": "tiny", "members": 3, "ood": None, "methods": METHODS}
    text = results_markdown(results)
    assert text.startswith("# tiny: deep ensemble of 3 members vs students")
    assert "| ensemble |" in text and "| **0.9500** |" in text


def test_fpr95_follows_each_ood_auroc_and_aurc_has_its_table():
    uncertainty = REPORT_TABLES["Uncertainty and OOD detection"]
    for columns, pairs in (
        (COLUMNS, [(AUROC, FPR95), (AUROC_MI, FPR95_MI)]),
        (uncertainty, [(AUROC, FPR95), (AUROC_MI, FPR95_MI)]),
        (COMPARE_COLUMNS, [(AUROC, FPR95)]),
    ):
        for auroc, fpr in pairs:
            assert columns.index(fpr) > columns.index(auroc)
    assert REPORT_TABLES["Selective prediction (test split)"] == [AURC, EAURC]
    # Lower is better for all four.
    methods = {"kd": dict.fromkeys(["ood_fpr95", "ood_fpr95_mi", "aurc", "eaurc"], 0.2)}
    methods["hydra"] = dict.fromkeys(methods["kd"], 0.1)
    for column in (FPR95, FPR95_MI, AURC, EAURC):
        assert best_students(methods, column) == {"hydra"}


def test_compare_rows_mark_the_best_student_within_each_run():
    other = {"ensemble": {"acc": 0.9}, "kd": {"acc": 0.8}, "latentbe": {"acc": 0.85}}
    rows = dict(compare_rows([{"methods": METHODS}, {"methods": other}], ACC))
    assert rows["hydra"] == [("0.9500", True), ("n/a", False)]
    assert rows["latentbe"] == [("n/a", False), ("0.8500", True)]
    assert list(rows)[:2] == ["ensemble", "member"]


DEE_METHODS = {
    "ensemble": {"dee": 4.0, "dee_note": None},
    "member": {"dee": 0.8, "dee_note": "extrapolated"},
    "kd": {"dee": 0.62, "dee_note": "extrapolated"},  # worse than one member
    "hydra": {"dee": 4.0, "dee_note": "capped"},  # better than the full ensemble
    "endd": {"dee": 2.5, "dee_note": None},
    "be": {"dee": None},
}


def test_dee_off_the_curve_is_marked_and_explained():
    rows = dict(table_rows(DEE_METHODS, [DEE]))
    assert rows["kd"] == [("0.62†", False)]
    assert rows["member"] == [("0.80†", False)]
    assert rows["hydra"] == [("≥ 4.00", True)]  # still best: ranked by its value
    assert rows["endd"] == [("2.50", False)] and rows["ensemble"] == [("4.00", False)]
    assert rows["be"] == [("n/a", False)]
    text = results_markdown({"dataset": "tiny", "members": 4, "ood": None, "methods": DEE_METHODS})
    assert "| kd |" in text and "0.62†" in text and "**≥ 4.00**" in text
    assert "DEE†: worse than one member's cNLL" in text and "a + b/k" in text


def test_dee_rows_without_a_note_read_as_before():
    # results.json written before dee_note existed
    rows = dict(table_rows({"kd": {"dee": 1.0}, "hydra": {"dee": 2.0}}, [DEE]))
    assert rows == {"kd": [("1.00", False)], "hydra": [("2.00", True)]}
    assert dict(compare_rows([{"methods": DEE_METHODS}], DEE))["kd"] == [("0.62†", False)]
