"""paddleqa bench: every artifact measured in its own process; ARM files listed, not timed."""
import json

import pytest

from paddleqa import cli
from paddleqa.runtime.bench import BenchConfig, run
from paddleqa.stages.export import ExportConfig, run as export


def test_bench_measures_each_artifact_side_by_side(teacher_run, tmp_path):
    tmp, data, doc = teacher_run
    model = f"{doc['run_dir']}/teacher/model"
    export(ExportConfig(model=model, out_dir=str(tmp_path / "exp"), targets=["arm", "x86"]))
    res = run(BenchConfig(artifacts=[model, str(tmp_path / "exp" / "inference"),
                                     str(tmp_path / "exp" / "x86-fp32"),
                                     str(tmp_path / "exp" / "arm-fp32" / "model.nb")],
                          seq_lens=[16, 32], threads=[1], repeats=3, warmup=1, throughput_batch=2,
                          throughput_repeats=1, out=str(tmp_path / "bench.json")))
    rows = {r["backend"]: r for r in res["rows"]}
    assert set(rows) == {"dygraph", "paddle-inference", "lite-x86", "lite-arm"}
    for backend in ("dygraph", "paddle-inference", "lite-x86"):
        r = rows[backend]
        assert "error" not in r and r["peak_rss_mib"] > 0 and r["sgemm_gflops"] > 0
        assert [s["seq_len"] for s in r["settings"]] == [16, 32]
        for s in r["settings"]:
            assert 0 < s["latency_ms_p50"] <= s["latency_ms_p90"]
            assert s["throughput_qps"] > 0 and s["flops"] > 0 and s["flop_floor_ms"] > 0
        assert r["settings"][1]["flops"] > r["settings"][0]["flops"]
    assert rows["lite-arm"]["settings"] == [] and "no ARM runtime" in rows["lite-arm"]["note"]
    assert json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))["rows"]


def test_bench_rejects_bad_settings(capsys, tmp_path):
    code = cli.main(["bench", str(tmp_path), "--seq-len", "4"])
    assert code == 2 and "seq_lens must be >= 8" in capsys.readouterr().err
    with pytest.raises(ValueError, match="threads must be >= 1"):
        BenchConfig(artifacts=["x"], threads=[0])
