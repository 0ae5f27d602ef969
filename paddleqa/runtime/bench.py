"""Latency, throughput and memory of artifacts, side by side in one run.

Every (artifact, thread count) pair is measured in its own child process, so that the thread
variables are set before Paddle loads and peak RSS belongs to that artifact alone. The child
also times an sgemm (Paddle's MKL, same threads) to turn FLOPs into a "FLOP floor": the latency
the model would have if every FLOP ran at this machine's measured matrix-multiply rate.

Inputs are real-shaped synthetic windows (``[CLS]`` + random ids + ``[SEP]``, all tokens real),
which cost the same as real text for these dense models.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from ..core.config import opt
from ..core.errors import PaddleQAError, PaddleQAError as _Err
from ..core.io import write_json
from ..core.manifest import versions
from ..core.settings import Int8Settings
from ..models.build import architecture_of, count_params, own_class
from ..models.flops import flops_per_query
from .artifacts import artifact_kind, explicit_inputs, open_artifact
from .evaluate import EvaluateConfig, run as evaluate

log = logging.getLogger(__name__)


@dataclasses.dataclass
class BenchConfig(Int8Settings):
    """Benchmark artifacts: batch-1 latency, batch-N throughput, peak RSS, CPU use, FLOP floor."""

    artifacts: list[str] = opt(factory=list, help="model folders, inference models, .nb files")
    seq_lens: list[int] = opt(factory=lambda: [128, 384], help="window lengths to time")
    # Not ThreadSettings.threads: a list of thread counts to sweep, one child process each.
    threads: list[int] = opt(factory=lambda: [1, 2], help="CPU thread counts (one child process each)")
    repeats: int = opt(20, help="timed batch-1 runs per setting (after warmup)")
    warmup: int = opt(3, help="untimed runs first")
    throughput_batch: int = opt(8, help="batch size of the throughput measurement")
    throughput_repeats: int = opt(5, help="timed runs at throughput_batch")
    # int8_ops: inherited from Int8Settings (core/settings.py)
    mkl_debug_cpu_type: str = opt("5", help="MKL_DEBUG_CPU_TYPE for the children ('' = leave unset); "
                                  "5 makes Paddle's MKL use its AVX2 path on AMD CPUs")
    out: str = opt("", help="write the results JSON here ('' = only print)")
    score_file: str = opt("", help="also score every runnable artifact on this SQuAD/CMRC JSON "
                          "(official CMRC 2018 EM/F1), so each row carries its accuracy")
    no_score: list[str] = opt(factory=list, help="artifacts (of `artifacts`) timed but not scored: "
                              "model folders whose own stage already scored them on the same file, "
                              "or latency baselines")

    def __post_init__(self) -> None:
        if not self.artifacts:
            raise ValueError("give at least one artifact")
        if not self.seq_lens or min(self.seq_lens) < 8:
            raise ValueError(f"seq_lens must be >= 8, got {self.seq_lens}")
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        stray = sorted(set(self.no_score) - set(self.artifacts))
        if stray:
            raise ValueError(f"no_score names artifacts that are not benchmarked: {', '.join(stray)}")
        for name in ("repeats", "throughput_batch", "throughput_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


def model_config_for(path: Path):
    """The model config behind an artifact (for params/FLOPs), or None when it cannot be found."""
    import json as _json

    from paddlenlp.transformers import AutoConfig

    candidates = [path if path.is_dir() else path.parent]
    for folder in list(candidates):
        for meta in (folder / "bundle.json", folder / "manifest.json", folder.parent / "manifest.json"):
            try:
                rec = _json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            src = (rec.get("source") or {}).get("model") or ((rec.get("inputs") or {}).get("model") or {}).get("path")
            if src:
                candidates.append(Path(src))
    for folder in candidates:
        if (folder / "config.json").exists():

            own = own_class(architecture_of(folder))
            try:
                return (own.config_class if own else AutoConfig).from_pretrained(str(folder))
            except Exception:  # noqa: BLE001 -- a config we cannot read just means no FLOPs
                return None
    return None


def _child(spec: dict) -> dict:
    """Runs in the child process: open the artifact, time it, report."""
    import resource

    import numpy as np


    threads = spec["threads"]
    runner = open_artifact(spec["artifact"], threads=threads, int8_ops=tuple(spec["int8_ops"]))
    rng = np.random.default_rng(0)
    vocab = runner.tokenizer_dir / "vocab.txt"
    n_vocab = sum(1 for _ in open(vocab, encoding="utf-8")) if vocab.exists() else 100

    def batch(n, L):
        ids = rng.integers(min(10, n_vocab - 1), n_vocab, size=(n, L))
        ids[:, 0], ids[:, -1] = 1, 2
        types = np.zeros_like(ids)
        types[:, L // 4:] = 1
        return explicit_inputs({"input_ids": ids, "token_type_ids": types}, np.full(n, L))

    params = None
    if runner.model is not None:

        params = count_params(runner.model)["params"]
    out = {"backend": runner.backend, "precision": runner.precision, "file_bytes": runner.file_bytes,
           "params": params, "settings": []}
    for L in spec["seq_lens"]:
        one = batch(1, L)
        try:
            for _ in range(spec["warmup"]):
                runner.predict(one)
        except Exception as exc:  # noqa: BLE001 -- e.g. a window longer than the model takes
            out["settings"].append({"seq_len": L, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        times = []
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        for _ in range(spec["repeats"]):
            t = time.perf_counter()
            runner.predict(one)
            times.append((time.perf_counter() - t) * 1000)
        cpu_util = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
        many = batch(spec["throughput_batch"], L)
        runner.predict(many)
        t = time.perf_counter()
        for _ in range(spec["throughput_repeats"]):
            runner.predict(many)
        tput = spec["throughput_batch"] * spec["throughput_repeats"] / (time.perf_counter() - t)
        out["settings"].append({
            "seq_len": L, "latency_ms_p50": round(float(np.percentile(times, 50)), 3),
            "latency_ms_p90": round(float(np.percentile(times, 90)), 3),
            "throughput_qps": round(tput, 2), "cpu_utilisation": round(cpu_util, 2),
        })
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["sgemm_gflops"] = _sgemm_gflops()
    return out


def _score(config: BenchConfig, rows: list[dict]) -> None:
    """EM/F1 of each runnable artifact on ``score_file`` (one evaluation per artifact)."""
    import tempfile

    base = Path(config.out).parent / "eval" if config.out else Path(tempfile.mkdtemp(prefix="paddleqa-bench-"))
    done: dict[str, dict] = {}
    todo = [r["artifact"] for r in rows if r["backend"] != "lite-arm" and r["artifact"] not in config.no_score]
    for i, artifact in enumerate(dict.fromkeys(todo)):
        try:
            m = evaluate(EvaluateConfig(model=artifact, data_file=config.score_file,
                                        out_dir=str(base / str(i)), int8_ops=config.int8_ops,
                                        progress=False))
            done[artifact] = {"dev_em": m["em"], "dev_f1": m["f1"], "scored_on": config.score_file,
                              "predictions": str(base / str(i) / "predictions.json")}
        except _Err as exc:
            done[artifact] = {"score_error": str(exc)}
    for r in rows:
        r.update(done.get(r["artifact"], {}))


def _recorded_params(path: Path) -> int | None:
    """Params recorded by the stage that wrote the artifact (export/quantize metrics.json)."""
    folder = path if path.is_dir() else path.parent
    for d in (folder, folder.parent, folder.parent.parent):
        try:
            m = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(m.get("params"), int):
            return m["params"]
    return None


def _sgemm_gflops() -> float:
    """Paddle's fp32 matmul rate (GFLOP/s) on a 4096x256 @ 256x1024 product, this process's threads."""
    import paddle

    a = paddle.randn([4096, 256])
    b = paddle.randn([256, 1024])
    for _ in range(2):
        paddle.matmul(a, b).numpy()
    n, t = 10, time.perf_counter()
    for _ in range(n):
        paddle.matmul(a, b).numpy()
    return round(2 * 4096 * 256 * 1024 * n / (time.perf_counter() - t) / 1e9, 2)


def run(config: BenchConfig) -> dict:
    """Measure every artifact x thread count in a child process; returns (and writes) the rows."""

    rows = []
    for artifact in config.artifacts:
        kind, path = artifact_kind(artifact)
        cfg = model_config_for(path if path.exists() else path.parent)
        flops = {L: flops_per_query(cfg, L) for L in config.seq_lens} if cfg is not None else {}
        for threads in config.threads:
            base = {"artifact": str(artifact), "backend": kind, "threads": threads}
            if kind == "lite-arm":
                rows.append({**base, "file_bytes": path.stat().st_size, "settings": [],
                             "note": "ARM .nb: no ARM runtime on this machine"})
                continue
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            if config.mkl_debug_cpu_type:
                env["MKL_DEBUG_CPU_TYPE"] = config.mkl_debug_cpu_type
            spec = {"artifact": str(artifact), "threads": threads, "seq_lens": config.seq_lens,
                    "repeats": config.repeats, "warmup": config.warmup,
                    "throughput_batch": config.throughput_batch,
                    "throughput_repeats": config.throughput_repeats, "int8_ops": config.int8_ops}
            log.info("bench %s (%s), %d thread(s)", artifact, kind, threads)
            res = subprocess.run([sys.executable, "-m", "paddleqa.runtime.bench", json.dumps(spec)],
                                 env=env, capture_output=True, text=True)
            if res.returncode != 0:
                last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
                rows.append({**base, "settings": [], "error": last[:400]})
                log.warning("bench %s failed: %s", artifact, last)
                continue
            result = json.loads(res.stdout.strip().splitlines()[-1])
            for s in result["settings"]:
                f = flops.get(s["seq_len"])
                s["flops"] = f
                if f and result["sgemm_gflops"] and "latency_ms_p50" in s:
                    s["flop_floor_ms"] = round(f / (result["sgemm_gflops"] * 1e9) * 1000, 3)
            result["params"] = result["params"] or _recorded_params(path)
            rows.append({**base, **result})
    if config.score_file:
        _score(config, rows)
    out = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions(),
           "mkl_debug_cpu_type": config.mkl_debug_cpu_type or None,
           "config": dataclasses.asdict(config), "rows": rows}
    if config.out:
        write_json(config.out, out)
    return out


def format_table(result: dict) -> str:
    lines = ["| artifact | backend | threads | seq | p50 ms | p90 ms | batch qps | CPU use | FLOP floor ms | RSS MiB | size MiB |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        size = r.get("file_bytes")
        size_s = f"{size / 2**20:.2f}" if size else ""
        if not r.get("settings"):
            why = r.get("note") or ("error: " + r.get("error", "")[:80])
            lines.append(f"| {r['artifact']} | {r['backend']} | {r['threads']} | {why} |  |  |  |  |  |  | "
                         f"{size_s} |")
            continue
        for s in r["settings"]:
            if "error" in s:
                lines.append(f"| {r['artifact']} | {r['backend']} | {r['threads']} | {s['seq_len']} | "
                             f"error: {s['error'][:80]} |  |  |  |  |  | {size_s} |")
                continue
            lines.append(
                f"| {r['artifact']} | {r['backend']} | {r['threads']} | {s['seq_len']} | "
                f"{s['latency_ms_p50']:.1f} | {s['latency_ms_p90']:.1f} | {s['throughput_qps']:.1f} | "
                f"{s['cpu_utilisation']:.2f} | {s.get('flop_floor_ms') or ''} | {r['peak_rss_mib']} | {size_s} |")
    return "\n".join(lines)


if __name__ == "__main__":  # the child process of run()
    import zlib  # noqa: F401 -- before paddle (bundled zlib clash with pyarrow; see paddleqa/__init__)

    try:
        print(json.dumps(_child(json.loads(sys.argv[1]))))
    except PaddleQAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
