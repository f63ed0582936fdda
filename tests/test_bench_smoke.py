"""The benchmark harness end to end on a tiny model: JSON rows, output equality across libraries."""

import pytest

pytest.importorskip("open_clip")


@pytest.mark.slow  # two fresh processes importing torch + open_clip: ~30 s idle, minutes on a loaded host
def test_bench_case_rows_and_equal_outputs(tmp_path):
    from benchmarks.report import targets
    from benchmarks.run import run_case
    from benchmarks.weights import prepare_weights

    prepare_weights({"tiny-resnet"}, tmp_path)
    rows = run_case(
        "image:tiny-resnet:2", ["clipforge", "open_clip"], repeats=1, weights=tmp_path, threads=1, rounds=2
    )
    assert [row["lib"] for row in rows] == ["clipforge", "open_clip"]
    for row in rows:
        assert {"items_per_s", "median_s", "min_s", "max_s", "peak_rss_mb", "clipforge_speedup"} <= set(row)
        assert row["min_s"] <= row["median_s"] <= row["max_s"]
        assert row["max_abs_diff"] < 1e-5  # same weights, same images: same features
        assert row["repeats"] == 2 and row["local_peak_gflops"] > 0  # timed interleaved, peak beside it
    report = {"rows": rows, "pipeline": {"tokenizer": [], "loader": {}}}
    (memory,) = targets(report)
    assert memory["target"].startswith("peak RSS")
