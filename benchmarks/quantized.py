"""Int8 vs float32 transformer inference on these cores, and the GEMM ceiling of each precision (issue #22 item 2).

First fine-tune MiniLM on davidson2017 (a separate command, not part of the benchmark; 10-30 minutes on 2 busy
cores). It trains with the transformer's own loop (plain, world size 1) on a stable sample of the train split,
with ``quantize: int8``, and exports the model as the training step does (int8.safetensors included)::

    HARMGUARD_DATA_MIRROR=../shared/datasets .venv/bin/python benchmarks/quantized.py finetune \\
        --out /tmp/minilm-davidson-int8 [--rows 2000] [--epochs 1]

Then the benchmark (under 10 minutes on 2 cores; it trains nothing)::

    HARMGUARD_DATA_MIRROR=../shared/datasets .venv/bin/python benchmarks/quantized.py bench \\
        --model /tmp/minilm-davidson-int8 [--threads 2] [--onnx]

It prints one JSON object:

- ``throughput``: texts/s of float32 eager and of the int8 path on the same davidson2017 test texts at max length
  64 (the model's own batch scorer: sorted by length, padded to the longest in each batch), median of alternating
  pairs, and the ratio (goal >= 2).
- ``f1``: macro F1 (argmax, the reference metric) on the whole davidson2017 test split, each precision through
  ``predict_proba`` (windows included), and the difference (goal <= 0.005); argmax agreement, largest score gap.
  Any registered transformer will do: a ``hate_speech`` model (hate or not) reads `offensive` rows as not hate.
- ``ceiling``: the GEMM throughput of these cores per precision on the model's own linear shapes (M = one full
  batch of tokens; q, k, v, attention output, intermediate, output per layer): float32 ``torch.matmul`` and int8
  ``torch.ops.quantized.linear_dynamic`` (activation quantization included), as tokens/s through all the encoder's
  linear layers, and the model's achieved tokens/s as a share of the ceiling of its precision (goal >= 0.6).
- ``onnxruntime`` (with ``--onnx``, when onnxruntime and onnx are importable; they are not in the lock): the same
  texts through ONNX Runtime float32 and dynamic-int8 graphs of the same model, for the choice between the two.
- ``load``: the 1-minute load average before and after (the cores are shared).

Why the int8 path is PyTorch's dynamic-quantized linear kernels and not ONNX Runtime: in one run of this benchmark
(2 shared AVX2 cores, no VNNI, load 11-13, same 256 texts) ONNX Runtime 1.31.1's dynamic-int8 graph scored 13.7
texts/s and torch's int8 path 13.8, and ONNX Runtime float32 was slower than torch eager (6.5 vs 12.2): no
measurable gain for two new dependencies (onnxruntime, and onnx for export and quantization, whose newest wheels
pull protobuf 7 while kfp needs protobuf < 7), an ONNX export at training time and a second runtime to verify.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import build_snapshot, split_frame
from harmguard.digests import model_digest
from harmguard.models.loading import load_model
from harmguard.models.transformer import TransformerModel, tokenizer_text
from harmguard.policy import load_policy
from harmguard.settings import load_settings

POLICY = "davidson2017"
MAX_LENGTH = 64


def finetune(out: Path, rows: int, epochs: int, seed: int) -> None:
    """Fine-tune MiniLM on a stable sample of davidson2017's train split and export it with int8 weights."""
    from harmguard.training.dispatch import train_transformer

    policy = load_policy(POLICY)
    frame = build_snapshot(load_dataset(POLICY, load_settings()), policy)
    overrides = {"quantize": "int8", "max_length": MAX_LENGTH, "epochs": epochs, "cpu_max_train_rows": rows}
    t0 = time.perf_counter()
    model = train_transformer(frame, policy, overrides=overrides, seed=seed, use_ray=False)
    model.save(out)
    print(json.dumps({"model": str(out), "model_digest": model_digest(out), "train_s": round(time.perf_counter() - t0),
                      "best": model.train_info.get("best")}))  # fmt: skip


def variants(model: TransformerModel) -> tuple[TransformerModel, TransformerModel]:
    """The same weights in float32 eager and through the int8 path (the exported int8 weights when it has them)."""
    base = dict(
        model=model.model, tokenizer=model.tokenizer, label_mode=model.label_mode, classes=model.classes,
        categories=model.categories,
    )  # fmt: skip
    fp32 = TransformerModel(**base, spec=model.spec.model_copy(update={"quantize": "none"}))
    int8 = (
        model
        if model.int8 is not None
        else TransformerModel(**base, spec=model.spec.model_copy(update={"quantize": "int8"}))
    )
    return fp32, int8


def batch_tokens(model: TransformerModel, texts: list[str]) -> int:
    """Tokens the batch scorer runs (padded to the longest text of each length-sorted batch)."""
    prepared = [tokenizer_text(t, model.spec) for t in texts]
    order = np.argsort([len(t) for t in prepared], kind="stable")
    bs, total = model.spec.eval_batch_size, 0
    for start in range(0, len(order), bs):
        idx = order[start : start + bs]
        enc = model.tokenizer(
            [prepared[i] for i in idx], padding=True, truncation=True, max_length=model.spec.max_length
        )
        total += len(idx) * len(enc["input_ids"][0])
    return total


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def throughput(fp32: TransformerModel, int8: TransformerModel, texts: list[str], pairs: int) -> dict[str, Any]:
    fp32._proba(texts[:64]), int8._proba(texts[:64])  # warm-up
    t_fp, t_q = [], []
    for _ in range(pairs):  # alternating, so a change of load hits both sides alike
        t_fp.append(timed(lambda: fp32._proba(texts)))
        t_q.append(timed(lambda: int8._proba(texts)))
    tokens = batch_tokens(fp32, texts)
    fp_s, q_s = statistics.median(t_fp), statistics.median(t_q)
    return {
        "texts": len(texts), "tokens": tokens, "pairs": pairs,
        "fp32_texts_per_s": round(len(texts) / fp_s, 1), "int8_texts_per_s": round(len(texts) / q_s, 1),
        "fp32_tokens_per_s": round(tokens / fp_s), "int8_tokens_per_s": round(tokens / q_s),
        "int8_over_fp32": round(fp_s / q_s, 3), "goal_ratio": 2.0,
    }  # fmt: skip


def f1_compare(fp32: TransformerModel, int8: TransformerModel, texts: list[str], y: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import f1_score

    p_fp, p_q = fp32.predict_proba(texts), int8.predict_proba(texts)
    f_fp = f1_score(y, p_fp.argmax(1), average="macro", labels=range(len(fp32.classes)))
    f_q = f1_score(y, p_q.argmax(1), average="macro", labels=range(len(fp32.classes)))
    return {
        "rows": len(texts), "fp32_macro_f1": round(float(f_fp), 4), "int8_macro_f1": round(float(f_q), 4),
        "difference": round(float(f_q - f_fp), 4), "goal_abs_difference": 0.005,
        "argmax_agreement": round(float((p_fp.argmax(1) == p_q.argmax(1)).mean()), 4),
        "max_abs_score_gap": round(float(np.abs(p_fp - p_q).max()), 4),
    }  # fmt: skip


def _best(fn: Any, repeats: int) -> float:
    fn()
    return min(timed(fn) for _ in range(repeats))


def gemm_ceiling(model: TransformerModel, repeats: int) -> dict[str, Any]:
    """Seconds per full batch of tokens through every encoder linear layer, per precision, at the model's shapes."""
    import torch

    cfg = model.model.config
    m = model.spec.eval_batch_size * MAX_LENGTH
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    shapes = [(h, h)] * 4 + [(h, inter), (inter, h)]  # (in, out): q, k, v, attention output, intermediate, output
    fp_s = q_s = 0.0
    rows = []
    for k, n in shapes:
        x, w = torch.randn(m, k), torch.randn(k, n)
        scale = (w.abs().amax(0) / 127).double()
        qw = torch.quantize_per_channel(w.t().contiguous(), scale, torch.zeros(n, dtype=torch.long), 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(qw, torch.zeros(n))
        with torch.inference_mode():
            a = _best(lambda x=x, w=w: torch.matmul(x, w), repeats)
            b = _best(lambda x=x, p=packed: torch.ops.quantized.linear_dynamic(x, p, True), repeats)
        fp_s, q_s = fp_s + a, q_s + b
        rows.append({"m": m, "k": k, "n": n, "fp32_gflops": round(2 * m * k * n / a / 1e9, 1),
                     "int8_gops": round(2 * m * k * n / b / 1e9, 1)})  # fmt: skip
    return {
        "shapes": rows, "layers": layers,
        "fp32_tokens_per_s": round(m / (fp_s * layers)), "int8_tokens_per_s": round(m / (q_s * layers)),
    }  # fmt: skip


def onnxruntime_side(fp32: TransformerModel, texts: list[str], pairs: int) -> dict[str, Any]:
    """The same model as ONNX Runtime float32 and dynamic-int8 graphs, scored on the same batches."""
    try:
        import onnxruntime as ort
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        return {"skipped": f"onnxruntime/onnx not importable: {e}"}
    folder = Path(tempfile.mkdtemp(prefix="harmguard-onnx-"))
    names = ["input_ids", "attention_mask", "token_type_ids"]

    class Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, ids: Any, mask: Any, types: Any) -> Any:
            return self.inner(input_ids=ids, attention_mask=mask, token_type_ids=types).logits

    prepared = [tokenizer_text(t, fp32.spec) for t in texts]
    order = np.argsort([len(t) for t in prepared], kind="stable")
    bs = fp32.spec.eval_batch_size
    batches = [
        dict(fp32.tokenizer([prepared[i] for i in order[s : s + bs]], padding=True, truncation=True,
                            max_length=fp32.spec.max_length, return_tensors="np"))
        for s in range(0, len(order), bs)
    ]  # fmt: skip
    sample = fp32.tokenizer(prepared[:2], padding=True, return_tensors="pt")
    torch.onnx.export(  # a copy: the exporter leaves changes on the module it traces
        Logits(copy.deepcopy(fp32.model)), tuple(sample[k] for k in names), str(folder / "fp32.onnx"),
        input_names=names, output_names=["logits"], dynamic_axes={k: {0: "batch", 1: "tokens"} for k in names},
        dynamo=False, opset_version=17,
    )  # fmt: skip
    quantize_dynamic(str(folder / "fp32.onnx"), str(folder / "int8.onnx"), weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    sessions = {p: ort.InferenceSession(str(folder / f"{p}.onnx"), options) for p in ("fp32", "int8")}
    wanted = {i.name for i in sessions["fp32"].get_inputs()}

    def run(p: str) -> None:
        for b in batches:
            sessions[p].run(None, {k: v.astype(np.int64) for k, v in b.items() if k in wanted})

    run("fp32"), run("int8")
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(pairs):
        for p in times:
            times[p].append(timed(lambda p=p: run(p)))
    out = {f"{p}_texts_per_s": round(len(texts) / statistics.median(t), 1) for p, t in times.items()}
    return {"version": ort.__version__, **out}


def _partial(name: str, value: Any) -> Any:
    """Each section on stderr as soon as it is measured (a run cut short still leaves its figures)."""
    print(json.dumps({name: value, "load_1min": round(os.getloadavg()[0], 2)}), file=sys.stderr, flush=True)
    return value


def model_labels(model: TransformerModel, labels: pd.Series) -> np.ndarray:
    """davidson2017's labels as indices of the model's classes; a category the model lacks reads as its none class.

    A davidson2017 model keeps all three; a ``hate_speech`` model (hate or not) reads `offensive` as not hate, as
    that policy's label map does.
    """
    nones = [c for c in model.classes if c not in model.categories]
    if len(nones) != 1:
        raise SystemExit(f"the F1 check needs an exclusive model with one none class (classes {model.classes})")
    (none,) = nones
    return np.array([model.classes.index(v if v in model.classes else none) for v in labels])


def bench(model_dir: Path, threads: int, n_texts: int, pairs: int, f1_rows: int, onnx: bool) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    model = load_model(model_dir)
    if not isinstance(model, TransformerModel):
        raise SystemExit(f"{model_dir} is a {model.family} model: this benchmark needs a transformer")
    if model.spec.max_length != MAX_LENGTH:
        model.spec = model.spec.model_copy(update={"max_length": MAX_LENGTH})
    fp32, int8 = variants(model)
    policy = load_policy(POLICY)
    test = split_frame(build_snapshot(load_dataset(POLICY, load_settings()), policy), "test")
    texts = test["text"].tolist()
    result: dict[str, Any] = {
        "model": str(model_dir), "model_digest": model_digest(model_dir),
        "int8_weights": "exported" if model.int8 is not None else "quantized at load (a float32 export)",
        "threads": threads, "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "quantized_engine": torch.backends.quantized.engine,
    }  # fmt: skip
    result["throughput"] = _partial("throughput", throughput(fp32, int8, texts[:n_texts], pairs))
    result["ceiling"] = ceiling = _partial("ceiling", gemm_ceiling(fp32, repeats=5))
    t = result["throughput"]
    result["ceiling"]["fp32_share"] = round(t["fp32_tokens_per_s"] / ceiling["fp32_tokens_per_s"], 3)
    result["ceiling"]["int8_share"] = round(t["int8_tokens_per_s"] / ceiling["int8_tokens_per_s"], 3)
    result["ceiling"]["goal_share"] = 0.6
    rows = test if not f1_rows else test.iloc[:f1_rows]
    result["f1"] = _partial("f1", f1_compare(fp32, int8, rows["text"].tolist(), model_labels(model, rows["label"])))
    if onnx:  # last: it traces the model
        result["onnxruntime"] = _partial("onnxruntime", onnxruntime_side(fp32, texts[:n_texts], pairs))
    result["load"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ft = sub.add_parser("finetune", help="Fine-tune MiniLM on davidson2017 and export it with int8 weights.")
    ft.add_argument("--out", type=Path, required=True, help="Folder to export the model to.")
    ft.add_argument("--rows", type=int, default=2000, help="Train rows (a stable sample; 0: all).")
    ft.add_argument("--epochs", type=int, default=1)
    ft.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("bench", help="Measure float32 vs int8 on an exported transformer model.")
    b.add_argument("--model", type=Path, required=True, help="An exported transformer model folder.")
    b.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads.")
    b.add_argument("--texts", type=int, default=512, help="Test texts per throughput run.")
    b.add_argument("--pairs", type=int, default=3, help="Alternating float32/int8 throughput runs.")
    b.add_argument("--f1-rows", type=int, default=0, help="Test rows for macro F1 (0: the whole split).")
    b.add_argument("--onnx", action="store_true", help="Also measure ONNX Runtime (needs onnxruntime and onnx).")
    a = parser.parse_args()
    if a.command == "finetune":
        finetune(a.out, a.rows, a.epochs, a.seed)
    else:
        print(json.dumps(bench(a.model, a.threads, a.texts, a.pairs, a.f1_rows, a.onnx)), flush=True)


if __name__ == "__main__":
    main()
