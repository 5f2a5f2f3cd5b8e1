"""harmguard's champions beside two free peers, on the same frozen sets, in one run.

The peers, `alt-profanity-check` and `hatesonar`, ship their models inside their PyPI packages. They are not
project dependencies: this script installs them into their own virtual environment (``--venv``, default
``.peers-venv``) and scores there through ``benchmarks/peers_runner.py``. hatesonar's ONNX text normalizer needs the
``en_US.UTF-8`` locale (``apt-get install locales``, enable it in ``/etc/locale.gen``, ``locale-gen``).

harmguard's side: the baselines the shipped policies train. davidson2017 is trained on its train split;
``hate_speech`` on its sources plus weeks 1-6 of the moderation stream. Each is decided at the thresholds it
calibrates on its validation split, as a run does. A registered version is scored too with ``--registered
HOME:hate_speech`` (its champion) or ``--registered HOME:hate_speech/2``, loaded by its verified digest and decided
at its registered thresholds: for example the transformer champion of ``hate_speech``, trained on 2 cores by
``harmguard run --policy hate_speech --family transformer --workers 1 --epochs 1 --max-train-rows 0`` (30 minutes;
the one worker gets both CPUs), or on a GPU.

Sets (binary tasks; macro F1 over the two classes, and FPR, at each system's operating point):

- davidson2017 test rows: hate vs not, and flagged (hate or offensive) vs not. hatesonar is Davidson et al.'s own
  model, trained on this dataset, so these rows may include its training data.
- hatecheck: hateful vs not.
- jigsaw_bias_madlibs: BAD vs not, a stable sample of 5,000 rows.
- moderation stream, weeks 7-8: the items first decided then, by their latest decision (never trained on).

    HARMGUARD_DATA_MIRROR=../shared/datasets .venv/bin/python benchmarks/peers.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import assemble_snapshot, build_snapshot, split_frame
from harmguard.data.sources import load_sources
from harmguard.evaluation.evaluate import calibrate
from harmguard.labels.store import import_events
from harmguard.policy import load_policy
from harmguard.settings import load_settings
from harmguard.storage import LocalStore
from harmguard.training.dispatch import train_model

PEERS = ("alt-profanity-check==1.9.1", "hatesonar==0.1.0")
HERE = Path(__file__).resolve().parent


def peer_python(venv: Path) -> Path:
    """The peers' interpreter, installing them first when the environment is missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS], check=True)
    locales = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower()
    if "en_us.utf8" not in locales:
        sys.exit(
            "hatesonar needs the en_US.UTF-8 locale: apt-get install locales, enable it in /etc/locale.gen, locale-gen"
        )
    return python


def stream_held_out(settings, categories: list[str]) -> pd.DataFrame:
    sys.path.insert(0, str(HERE))
    from feedback_loop import held_out_items  # the same held-out items as the learning curve

    weeks = sorted((Path(str(settings.data_mirror)) / "stormfront_moderation").glob("week-*.jsonl"))
    return held_out_items(weeks, categories)


def harmguard_systems(settings, home: Path) -> dict[str, tuple]:
    """name -> (model, policy, thresholds)."""
    out = {}
    policy = load_policy("davidson2017")
    frame = build_snapshot(load_dataset("davidson2017", settings), policy)
    model = train_model(frame, policy)
    out["harmguard davidson2017"] = (model, policy, frame)
    policy = load_policy("hate_speech")
    store = LocalStore(home)
    weeks = sorted((Path(str(settings.data_mirror)) / "stormfront_moderation").glob("week-*.jsonl"))[:6]
    for week in weeks:
        import_events(store, policy.name, policy.categories, str(week), by="benchmark")
    parts, cut = load_sources(policy, settings, store)
    frame = assemble_snapshot(parts, policy, cut=cut)[0]
    out["harmguard hate_speech"] = (train_model(frame, policy), policy, frame)
    systems = {}
    for name, (model, policy, frame) in out.items():
        doc, _ = calibrate(model, frame, policy, lambda _d, texts, m=model: m.predict_proba(texts))
        systems[name] = (model, policy, doc["thresholds"])
    return systems


def registered_systems(specs: list[str]) -> dict[str, tuple]:
    """Registered versions, ``HOME:VERSION`` or ``HOME:POLICY`` (its champion): name -> (model, policy, thresholds).

    The model is loaded from the registry record after its digest is verified, and decided at the thresholds it was
    approved with: what serving and batch scoring would use.
    """
    from harmguard.batch.score import resolve_record
    from harmguard.models.loading import load_model, verify_model_dir

    out = {}
    for spec in specs:
        home, _, which = spec.rpartition(":")
        store = LocalStore(Path(home))
        record = resolve_record(store, None if "/" in which else which, which if "/" in which else None)
        model = load_model(verify_model_dir(record.model_uri, record.model_digest))
        policy = load_policy(record.version.split("/")[0])
        out[f"harmguard {record.version} ({type(model).__name__})"] = (model, policy, dict(record.thresholds))
    return out


def run_systems(runs: list[Path]) -> dict[str, tuple]:
    """A run's trained model that was not registered (the gate rejected it): its run folder's model, checked against
    the digest its gate decision names, decided at the thresholds the run calibrated. Labelled as unregistered."""
    from harmguard.models.loading import load_model, verify_model_dir

    out = {}
    for run in runs:
        records = [run / "blessing.json", run / "thresholds.json"]
        if not all(r.is_file() for r in records):
            sys.exit(f"--run {run}: not a run folder that reached the gate (needs blessing.json and thresholds.json)")
        decision = json.loads(records[0].read_text())
        thresholds = json.loads(records[1].read_text())["thresholds"]
        folders = [m.parent for m in run.glob("kfp/**/train/model/model.json")]
        if len(folders) != 1:
            sys.exit(f"--run {run}: expected one trained model under kfp/, found {len(folders)}")
        (folder,) = folders
        model = load_model(verify_model_dir(str(folder), decision["model_digest"]))
        verdict = "blessed" if decision["blessed"] else "rejected"
        out[f"harmguard {decision['policy']} run, {verdict}, unregistered ({type(model).__name__})"] = (
            model,
            load_policy(decision["policy"]),
            thresholds,
        )
    return out


def decide(model, policy, thresholds: dict[str, float], texts: list[str]) -> tuple[np.ndarray, np.ndarray, float]:
    """(hate decisions, flagged decisions, seconds)."""
    t = time.perf_counter()
    proba = model.predict_proba(texts)
    seconds = time.perf_counter() - t
    decided = np.stack([proba[:, policy.classes.index(c)] >= thresholds[c] for c in policy.categories], axis=1)
    return decided[:, policy.categories.index("hate")], decided.any(axis=1), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path(".peers-venv"))
    parser.add_argument("--madlibs-rows", type=int, default=5000)
    parser.add_argument(
        "--registered",
        action="append",
        default=[],
        metavar="HOME:VERSION|HOME:POLICY",
        help="also score a registered version (a policy: its champion), e.g. the transformer champion of hate_speech",
    )
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        type=Path,
        metavar="RUN_DIR",
        help="also score the model of a run the gate rejected (HOME/runs/<run id>), labelled unregistered",
    )
    args = parser.parse_args()
    settings = load_settings()
    python = peer_python(args.venv)

    davidson = load_policy("davidson2017")
    test = split_frame(build_snapshot(load_dataset("davidson2017", settings), davidson), "test")
    hatecheck = load_dataset("hatecheck", settings)
    madlibs = load_dataset("jigsaw_bias_madlibs", settings).sample(n=args.madlibs_rows, random_state=0)
    stream = stream_held_out(settings, ["hate"])
    sets = {  # name -> (texts, truth, task)
        "davidson2017 test: hate": (test["text"].tolist(), (test["label"] == "hate").to_numpy(), "hate"),
        "davidson2017 test: flagged": (test["text"].tolist(), (test["label"] != "none").to_numpy(), "flag"),
        "hatecheck": (hatecheck["test_case"].tolist(), (hatecheck["label_gold"] == "hateful").to_numpy(), "hate"),
        "jigsaw_bias_madlibs (5k)": (madlibs["Text"].tolist(), (madlibs["Label"] == "BAD").to_numpy(), "hate"),
        "stream weeks 7-8": (stream["text"].tolist(), stream["y"].to_numpy() == 1, "hate"),
    }
    speed: dict[str, tuple[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        payload = Path(tmp) / "in.json"
        payload.write_text(json.dumps({name: texts for name, (texts, _, _) in sets.items()}))
        subprocess.run([str(python), str(HERE / "peers_runner.py"), str(payload), str(Path(tmp) / "out.json")],
                       check=True, env={"LC_ALL": "en_US.UTF-8", "PATH": "/usr/bin:/bin"})  # fmt: skip
        peers = json.loads((Path(tmp) / "out.json").read_text())
        systems = harmguard_systems(settings, Path(tmp) / "home") | registered_systems(args.registered)
        systems |= run_systems(args.run)
    results: dict[str, dict[str, dict[str, float | None]]] = {}
    for system, by_set in peers.items():
        for name, (texts, truth, task) in sets.items():
            pred = np.asarray(by_set[name][task], dtype=bool)
            results.setdefault(name, {})[system] = _scores(truth, pred)
            n, s = speed.get(system, (0, 0.0))
            speed[system] = (n + len(texts), s + by_set[name]["seconds"])
    for system, (model, policy, thresholds) in systems.items():
        for name, (texts, truth, task) in sets.items():
            if task == "flag" and len(policy.categories) == 1:
                results[name][system] = None  # hate_speech decides hate only
                continue
            hate, flag, seconds = decide(model, policy, thresholds, texts)
            results[name][system] = _scores(truth, hate if task == "hate" else flag)
            n, s = speed.get(system, (0, 0.0))
            speed[system] = (n + len(texts), s + seconds)
    names = list(speed)
    print("| set | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for name in sets:
        cells = []
        for system in names:
            r = results[name].get(system)
            cells.append("n/a" if r is None else f"{r['macro_f1']:.3f} (FPR {r['fpr']:.3f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| texts/s | " + " | ".join(f"{n / s:,.0f}" for n, s in speed.values()) + " |")
    print("\ncells: macro F1 over the two classes (FPR) at each system's operating point")
    ours = [s for s in names if s.startswith("harmguard") and "unregistered" not in s]  # champions only
    for name in sets:
        best = max((results[name][s]["macro_f1"] for s in ours if results[name].get(s)), default=0.0)
        peer = max(results[name][s]["macro_f1"] for s in peers)
        print(f"{name}: harmguard best {best:.3f} vs best peer {peer:.3f} -> {'ahead' if best > peer else 'BEHIND'}")


def _scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    negatives = ~truth
    return {
        "macro_f1": float(f1_score(truth, pred, average="macro", zero_division=0)),
        "fpr": float((pred & negatives).sum() / negatives.sum()) if negatives.any() else 0.0,
    }


if __name__ == "__main__":
    main()
