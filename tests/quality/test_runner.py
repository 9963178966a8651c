"""Great Expectations at run time: what is saved of its result does not depend on how it is serialised."""

from __future__ import annotations

import json

import pandas as pd

from pipeline.datasets import USAGE
from pipeline.quality import runner


def test_the_saved_ge_result_is_the_one_ge_serialises_with_the_results_in_suite_order() -> None:
    _, _, batch_definitions = runner._gx()
    suite = runner.load_suite(USAGE)
    frame = pd.DataFrame(
        {"company_id": ["A", "B", None, "B"], "active_users": [1, -2, 3, 4], "events": [5, 6, 7, -8]}
    )
    batch = batch_definitions[USAGE].get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(
        suite,
        expectation_parameters={"min_row_count": 10},
        result_format={
            "result_format": "SUMMARY",
            "unexpected_index_column_names": ["company_id"],
            "partial_unexpected_count": 20,
        },
    )
    ge_results = [item.to_json_dict() for item in reversed(result.results)]
    expected = result.to_json_dict()  # what was saved before: GE's whole result, results replaced
    expected["results"] = ge_results

    summary = runner._ge_summary(result, ge_results)

    assert json.dumps(summary) == json.dumps(expected)  # same keys, order and values
    assert not summary["success"] and summary["statistics"]["unsuccessful_expectations"] >= 3
    assert len(result.results) == len(suite.expectations)  # the result is left as it was
