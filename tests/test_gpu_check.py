"""benchmarks/gpu_check.py --cpu-dry-run: every part of the GPU check that can run on a CPU runs here, so the
one GPU run has the best chance to work first time. (Without a GPU its CUDA tests all skip.)"""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow  # ~1 min idle: training subprocesses (a SIGKILLed one among them) and both libraries' steps
def test_gpu_check_cpu_dry_run(tmp_path):
    from benchmarks.gpu_check import main

    report = main(["--cpu-dry-run", "--out", str(tmp_path)])
    sections = report["sections"]
    assert list(sections) == ["cuda_tests", "precision", "resume", "process_group", "throughput"]
    for name, section in sections.items():
        assert section["ok"] is True, (name, section)
    assert {(r["objective"], r["precision"]) for r in sections["precision"]["rows"]} == {
        (o, p) for o in ("softmax", "sigmoid") for p in ("fp32", "bf16", "fp16")
    }
    resume = sections["resume"]
    assert resume["killed_returncode"] == -9 and resume["tensors_equal"] == resume["tensors"] > 10
    assert {r["lib"] for r in sections["throughput"]["rows"]} == {"clipforge", "open_clip"}
    written = json.loads((tmp_path / "gpu_dryrun.json").read_text())
    assert written["dry_run"] and (tmp_path / "gpu_dryrun.md").read_text().startswith("# GPU check")
