"""Batch scoring end to end: one Ray cluster and one registered sms_spam champion (a real baseline) per module.

The online server, the CLI in a subprocess (killed midway, then rerun), fake-gcs-server and kfp.local all score with
the same champion, on the module's Ray cluster (subprocesses join it through RAY_ADDRESS).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
import requests
from ray import serve

from harmguard.batch.output import SUCCESS, TEMPORARY, AlreadyCommitted, UncommittedOutput, read_scored
from harmguard.batch.score import BatchConfig, BatchInputError, ScoringError, resolve_record, score_registered
from harmguard.settings import Settings
from harmguard.storage import LocalStore
from harmguard.storage.readers import DataReadError
from tests.conftest import ROOT, mirror_dir

SPAM = "WINNER!! Claim your free prize now, call 09061701461"


@pytest.fixture(scope="module")
def champion(tmp_path_factory, mlflow_uri):
    """A real baseline trained on part of sms_spam, published, registered as sms_spam/1 and made champion."""
    from harmguard.data.datasets import load_dataset
    from harmguard.data.snapshot import build_snapshot, encode_labels, split_frame
    from harmguard.models.baseline import train_baseline
    from harmguard.policy import load_policy
    from harmguard.registry import move_alias, register_version
    from harmguard.registry.models import publish_model

    home = tmp_path_factory.mktemp("batch-home")
    settings = Settings(home=str(home), cache=home / "cache", data_mirror=mirror_dir(), mlflow_tracking_uri=mlflow_uri)
    policy = load_policy("sms_spam")
    snap = build_snapshot(load_dataset("sms_spam", settings), policy)
    train = split_frame(snap, "train").head(1500)
    export = home / "export"
    train_baseline(train["text"].tolist(), encode_labels(train, policy), policy).save(export)
    store = LocalStore(home)
    digest = publish_model(store, export)
    record = register_version(
        store, settings, policy="sms_spam", model_digest=digest, thresholds={"spam": 0.4}, blessing={"blessed": True},
        metrics={}, lineage={}, run_id="test", mlflow_run_id=None, family="baseline", by="test",
    )  # fmt: skip
    move_alias(
        store, settings, policy="sms_spam", alias="champion", to_version=record.version, expected_version=None,
        by="test", reason="batch tests",
    )  # fmt: skip
    texts = split_frame(snap, "test")["text"].tolist()
    return {"settings": settings, "store": store, "record": record, "texts": texts}


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module; its address lets subprocesses join it."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _env(champion, cluster) -> dict[str, str]:
    s = champion["settings"]
    return {
        **os.environ,
        "HARMGUARD_HOME": s.home,
        "HARMGUARD_CACHE": str(s.cache),
        "MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
        "RAY_ADDRESS": cluster,
    }


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def scored(champion, cluster, tmp_path_factory):
    """One batch run over JSONL with edge cases (empty, "NA", null, a number, overlong), in parts of 64 rows."""
    tmp = tmp_path_factory.mktemp("scored")
    texts = champion["texts"][:300] + [SPAM, "see you at lunch?", "", "NA", "x" * 10_001]
    rows = [{"id": f"m{i:04d}", "text": t} for i, t in enumerate(texts)]
    rows += [{"id": "null", "text": None}, {"id": "number", "text": 42}]
    src = _write_jsonl(tmp / "in.jsonl", rows)
    out = str(tmp / "scored")
    # One actor: on 2 cores a second one costs more start-up than it saves (the kill test runs two).
    cfg = BatchConfig(input_uri=src, output_uri=out, rows_per_part=64, batch_size=32, actors=1)
    manifest = score_registered(champion["store"], cfg, policy="sms_spam")
    return {"texts": texts, "rows": rows, "out": out, "cfg": cfg, "manifest": manifest}


def test_batch_decisions_equal_the_online_server(champion, scored):
    from harmguard.serving.config import ServeArgs, user_config_for
    from harmguard.serving.local import start_app

    texts, rows, out, manifest = scored["texts"], scored["rows"], scored["out"], scored["manifest"]
    record = champion["record"]
    assert manifest["model_version"] == record.version and manifest["thresholds_version"] == record.thresholds_version
    assert manifest["skipped"] == {"null_text": 1, "not_text": 1, "too_long": 1, "not_utf8": 0}

    frame = read_scored(out)
    assert frame["id"].tolist() == [r["id"] for r in rows]  # every row, in input order, across several parts
    assert len(manifest["parts"]) == -(-len(rows) // 64)
    assert set(frame["model_version"]) == {record.version}
    assert set(frame["thresholds_version"]) == {record.thresholds_version}
    skipped = frame.set_index("id")["skipped"]
    assert skipped["null"] == "null_text" and skipped["number"] == "not_text"
    assert skipped[f"m{len(texts) - 1:04d}"] == "too_long"
    assert frame.loc[frame["skipped"].notna(), ["score_spam", "decision_spam", "flagged"]].isna().all().all()
    assert "text" not in frame.columns  # sensitive texts are not copied to the output
    assert int(frame["flagged"].sum()) == manifest["flagged"] > 0

    scorable = texts[:-1]  # the overlong text: refused online (413), skipped in batch
    ray_port = _free_port()
    url = start_app(ServeArgs(user_config=user_config_for(record)), port=ray_port, app_name="batch-compare")
    try:
        online = []
        for i in range(0, len(scorable), 256):
            r = requests.post(f"{url}/v1/classify", json={"texts": scorable[i : i + 256]}, timeout=60)
            assert r.status_code == 200, r.text
            assert r.json()["model_version"] == record.version
            assert r.json()["thresholds_version"] == record.thresholds_version
            online += r.json()["results"]
        too_long = requests.post(f"{url}/v1/classify", json={"texts": [texts[-1]]}, timeout=60)
        assert too_long.status_code == 413
    finally:
        serve.shutdown()
    batch = frame.iloc[: len(scorable)]
    assert batch["decision_spam"].tolist() == [o["decisions"]["spam"] for o in online]
    assert batch["flagged"].tolist() == [o["flagged"] for o in online]
    assert batch["score_spam"].tolist() == pytest.approx([o["scores"]["spam"] for o in online], abs=1e-12)
    assert any(o["flagged"] for o in online) and not all(o["flagged"] for o in online)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_committed_output_is_write_once(champion, scored):
    out = Path(scored["out"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(AlreadyCommitted, match="--overwrite"):
        score_registered(champion["store"], scored["cfg"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the refused run changed nothing


def test_empty_input_commits_an_empty_table_with_the_schema(champion, cluster, tmp_path):
    src = tmp_path / "empty.csv"
    src.write_text("id,text\n")
    out = str(tmp_path / "scored")
    manifest = score_registered(champion["store"], BatchConfig(input_uri=str(src), output_uri=out))
    assert manifest["rows"] == 0 and len(manifest["parts"]) == 1
    frame = read_scored(out)
    assert len(frame) == 0
    assert list(frame.columns) == manifest["columns"]
    assert {"id", "score_spam", "decision_spam", "flagged", "model_version", "thresholds_version"} <= set(frame.columns)


@pytest.mark.parametrize(
    ("content", "kwargs", "error", "match"),
    [
        ("id,body\n1,hello\n", {}, BatchInputError, "no column 'text'"),
        ("key,text\n1,hello\n", {}, BatchInputError, "no column 'id'"),
        ("id,text\n1,hello\n", {"id_column": "flagged"}, BatchInputError, "no column 'flagged'"),
        ("", {}, DataReadError, "empty file"),
    ],
    ids=["no text column", "no id column", "unknown id column", "empty file"],
)
def test_bad_input_is_refused_before_anything_is_written(champion, tmp_path, content, kwargs, error, match):
    src = tmp_path / "in.csv"
    src.write_text(content)
    out = tmp_path / "scored"
    with pytest.raises(error, match=match):
        score_registered(champion["store"], BatchConfig(input_uri=str(src), output_uri=str(out), **kwargs))
    assert not out.exists()


def test_id_column_colliding_with_an_output_column_is_refused(champion, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("flagged,text\n1,hello\n")
    with pytest.raises(BatchInputError, match="collides"):
        score_registered(
            champion["store"],
            BatchConfig(input_uri=str(src), output_uri=str(tmp_path / "o"), id_column="flagged"),
        )


def test_a_model_that_does_not_hash_to_its_digest_is_refused(champion, tmp_path):
    from harmguard.batch.score import score_file
    from harmguard.models.loading import ModelDigestMismatch

    src = tmp_path / "in.csv"
    src.write_text("id,text\n1,hello\n")
    tampered = champion["record"].model_copy(update={"model_digest": "0" * 64})
    out = tmp_path / "scored"
    with pytest.raises(ModelDigestMismatch, match="refused"):
        score_file(champion["store"], tampered, BatchConfig(input_uri=str(src), output_uri=str(out)))
    assert not out.exists()


def test_version_resolution(champion, tmp_path):
    store = champion["store"]
    assert resolve_record(store, None, None).version == "sms_spam/1"  # the only policy with a champion
    assert resolve_record(store, "sms_spam", "sms_spam/1").version == "sms_spam/1"
    with pytest.raises(ScoringError, match="does not belong"):
        resolve_record(store, "davidson2017", "sms_spam/1")
    with pytest.raises(ScoringError, match="no version sms_spam/9"):
        resolve_record(store, None, "sms_spam/9")
    with pytest.raises(ScoringError, match="no champion"):
        resolve_record(LocalStore(tmp_path), "sms_spam", None)


def test_killed_run_leaves_no_success_and_a_rerun_completes(champion, cluster, tmp_path):
    n = 20_000
    texts = champion["texts"]
    src = tmp_path / "day.parquet"
    pd.DataFrame({"id": range(n), "text": [f"{texts[i % len(texts)]} #{i}" for i in range(n)]}).to_parquet(src)
    out = tmp_path / "scored"
    args = [sys.executable, "-m", "harmguard.cli", "score", "--policy", "sms_spam", "--input", str(src)]
    args += ["--output", str(out), "--rows-per-part", "500", "--batch-size", "100"]
    env = _env(champion, cluster)
    # A session of its own: the kill reaches the driver and anything it started, and nothing else.
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(f"{TEMPORARY}/*/part-*.parquet")):
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            assert time.monotonic() < deadline, "no part was written within 120 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL
    assert not (out / SUCCESS).exists()
    with pytest.raises(UncommittedOutput, match="not a committed"):
        read_scored(str(out))

    rerun = subprocess.run([*args, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    manifest = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert manifest["rows"] == n and len(manifest["parts"]) == n // 500
    frame = read_scored(str(out))
    assert frame["id"].tolist() == list(range(n))
    assert frame["flagged"].notna().all()
    assert not (out / TEMPORARY).exists()  # the killed attempt's leftovers are gone


def test_cli_refusals_exit_4_for_input_and_2_for_usage(champion, cluster, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("id,body\n1,hello\n")
    env = _env(champion, cluster)
    args = [sys.executable, "-m", "harmguard.cli", "score", "--input", str(src), "--output", str(tmp_path / "o")]
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    message = " ".join(r.stderr.split())  # rich wraps long lines
    assert r.returncode == 4 and "no column 'text'" in message and "--text-column" in message
    r = subprocess.run([*args, "--text-column", "body", "--version", "sms_spam/7"], env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "no version sms_spam/7" in " ".join(r.stderr.split())
    assert not (tmp_path / "o").exists()


def test_gcs_input_and_output(champion, cluster, tmp_path, monkeypatch):
    from harmguard.storage.gcs import GCSStore, make_client
    from tests.support.gcs_emulator import fake_gcs_server

    with fake_gcs_server(tmp_path / "gcs") as url:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)  # the driver reads and writes gs://; the model is local
        make_client().create_bucket("scores")
        rows = [{"id": i, "text": t} for i, t in enumerate(champion["texts"][:30])]
        GCSStore("gs://scores/in").write_atomic("day.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
        out = "gs://scores/out/2026-11-25"
        cfg = BatchConfig(input_uri="gs://scores/in/day.jsonl", output_uri=out, rows_per_part=12)
        manifest = score_registered(champion["store"], cfg)
        assert manifest["rows"] == 30 and len(manifest["parts"]) == 3
        frame = read_scored(out)
        assert frame["id"].tolist() == list(range(30))
        store = GCSStore(out)
        assert store.list(TEMPORARY) == []  # committed: the temporary prefix is gone
        with pytest.raises(AlreadyCommitted):
            score_registered(champion["store"], cfg)
        # --overwrite with bigger parts: 2 parts now, the old third part deleted, the new manifest names the new ones
        again = score_registered(champion["store"], cfg.model_copy(update={"rows_per_part": 20, "overwrite": True}))
        assert [p["name"] for p in again["parts"]] == ["part-00000.parquet", "part-00001.parquet"]
        names = [b.name for b in make_client().list_blobs("scores", prefix="out/2026-11-25/")]
        assert sorted(names) == [
            f"out/2026-11-25/{n}" for n in ("_SUCCESS", "part-00000.parquet", "part-00001.parquet")
        ]
        assert read_scored(out)["id"].tolist() == list(range(30))
        make_client().bucket("scores").blob(f"out/2026-11-25/{SUCCESS}").delete()
        with pytest.raises(UncommittedOutput):
            read_scored(out)


def test_scoring_pipeline_runs_through_kfp_local(champion, cluster, tmp_path, monkeypatch):
    from rich.console import Console

    from harmguard.pipelines.scoring import scoring_pipeline
    from harmguard.runners.local import execute_locally

    for k, v in _env(champion, cluster).items():
        if k.startswith(("HARMGUARD_", "MLFLOW_", "RAY_")):
            monkeypatch.setenv(k, v)
    src = tmp_path / "in.csv"
    pd.DataFrame({"msg_id": [f"a{i}" for i in range(20)], "body": champion["texts"][:20]}).to_csv(src, index=False)
    out = tmp_path / "scored"
    run = execute_locally(
        champion["settings"], "scoring-test", scoring_pipeline,
        {"policy": "sms_spam", "input_uri": str(src), "output_uri": str(out), "version": "", "id_column": "msg_id",
         "text_column": "body"},
        console=Console(stderr=True), title="scoring",
    )  # fmt: skip
    assert run.error is None, run.log.read_text()[-3000:]
    assert run.steps == {"score": "SUCCESS"}
    frame = read_scored(str(out))
    assert frame["msg_id"].tolist() == [f"a{i}" for i in range(20)]
    assert frame.attrs["manifest"]["model_version"] == "sms_spam/1"
    assert ROOT.joinpath("pipelines", "scoring.yaml").is_file()


# --- streaming input (issue #22.3) and the traffic record (issue #19) -------------------------------------------------

EDGE_ROWS = [
    {"id": "007", "text": "call me\nlater"},  # an id kept as written; a quoted newline in CSV
    {"id": "2", "text": "NA"},  # a text, not a missing value
    {"id": "3", "text": ""},  # empty: scored, as the server scores it
    {"id": "4", "text": "x" * 11},  # over max_chars=10
    {"id": "5", "text": SPAM[:10]},
]


def _write_edge_input(path: Path, fmt: str) -> str:
    rows = EDGE_ROWS + ([{"id": "6", "text": None}, {"id": "7", "text": 42}] if fmt == "jsonl" else [])
    if fmt == "jsonl":
        return _write_jsonl(path, rows)
    frame = pd.DataFrame(rows)
    if fmt == "parquet":
        frame.to_parquet(path)
    elif fmt == "tsv":
        frame[frame["text"].str.count("\n") == 0].to_csv(path, sep="\t", index=False)
    else:
        frame.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_the_streaming_reader_reads_what_the_whole_file_reader_reads(cluster, tmp_path, fmt):
    """Ray Data's read tasks give the same ids, texts and skip reasons as reading the file whole (the old path)."""
    from harmguard.batch.reader import input_dataset, open_input, skip_reasons
    from harmguard.storage.readers import read_table

    src = _write_edge_input(tmp_path / f"in.{fmt}", fmt)
    whole = read_table(src, string_columns=["id", "text"])
    texts, why = skip_reasons(whole["text"], max_chars=10)
    spec = open_input(src, "id", "text", max_chars=10)
    streamed = pa_concat([b for b in input_dataset(spec).iter_batches(batch_size=None, batch_format="pyarrow")])
    assert streamed.column("item").to_pylist() == whole["id"].tolist()
    assert streamed.column("text").to_pylist() == texts
    assert streamed.column("skipped").to_pylist() == why
    assert "too_long" in why and "" in texts and "NA" in texts


def pa_concat(tables):
    import pyarrow as pa

    return pa.concat_tables(tables)


def test_a_parse_error_names_the_row_but_never_quotes_it(champion, cluster, tmp_path):
    """A bad row past what the driver checks fails the read task: the error says where, not what the row holds."""
    from harmguard.storage.readers import DataReadError

    texts = champion["texts"]
    body = "".join(f'{i},"{texts[i % len(texts)][:60].replace(chr(34), "")}"\n' for i in range(30_000))
    src = tmp_path / "in.csv"
    src.write_text("id,text\n" + body + "30000,SECRET-SLUR,extra\n")
    assert src.stat().st_size > 1 << 20  # past the driver's 1 MiB look at the head: the read task finds it
    out = tmp_path / "scored"
    with pytest.raises(DataReadError) as refused:
        score_registered(
            champion["store"], BatchConfig(input_uri=str(src), output_uri=str(out), actors=1, record_traffic=False)
        )
    assert "Row #" in str(refused.value) and "Expected 2 columns, got 3" in str(refused.value)
    assert "SECRET" not in str(refused.value) and "Traceback" not in str(refused.value)
    assert not (out / SUCCESS).exists()


def test_batch_writes_the_traffic_record_serving_writes(champion, cluster, tmp_path, monkeypatch):
    """Scored rows recorded with source=batch (ids from the id column, the keyed hash for a null id), no text; the
    review sample at the registered policy's rate; ``harmguard monitor`` reads the record. The driver never reads
    the input whole."""
    from datetime import UTC, datetime, timedelta

    import pyarrow.parquet as pq
    import yaml

    import harmguard.storage.readers as readers
    from harmguard.batch.score import score_file
    from harmguard.monitoring.commands import monitor_command
    from harmguard.monitoring.parts import read_traffic
    from harmguard.monitoring.traffic import sampled
    from harmguard.registry import store_policy_file

    monkeypatch.setattr(readers, "read_table", lambda *a, **k: pytest.fail("the driver read the input whole"))
    # A home of its own: the module's other runs record into the champion's home.
    home = tmp_path / "home"
    store = LocalStore(home)
    doc = yaml.safe_load((ROOT / "src" / "harmguard" / "policies" / "sms_spam.yaml").read_text())
    doc.setdefault("monitoring", {})["sample_rate"] = 0.5
    digest = store_policy_file(store, yaml.safe_dump(doc).encode())
    record = champion["record"].model_copy(update={"lineage": {"policy_digest": digest}})

    texts = champion["texts"][:120]
    rows = [{"id": f"m{i:03d}", "text": t} for i, t in enumerate(texts)]
    rows += [{"id": None, "text": SPAM}, {"id": "skip", "text": None}]
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    before = datetime.now(UTC) - timedelta(minutes=1)
    manifest = score_file(store, record, BatchConfig(input_uri=src, output_uri=str(tmp_path / "out"), actors=1))
    after = datetime.now(UTC) + timedelta(minutes=1)
    scored = len(texts) + 1
    assert manifest["scored"] == scored
    assert manifest["traffic"] | {"parts": 0} == {
        "recorded": scored, "written": scored, "sampled": manifest["traffic"]["sampled"], "dropped": 0, "parts": 0,
        "errors": 0, "source": "batch", "sample_rate": 0.5,
    }  # fmt: skip

    traffic = read_traffic(store, "sms_spam", before, after)
    assert traffic is not None and traffic.num_rows == scored  # the skipped row has no scores: not recorded
    assert "text" not in traffic.column_names
    assert set(traffic.column("source").to_pylist()) == {"batch"}
    assert set(traffic.column("version").to_pylist()) == {record.version}
    ids = traffic.column("item_id").to_pylist()
    assert ids[:-1] == [r["id"] for r in rows[: len(texts)]]
    assert ids[-1].startswith("hmac:") and traffic.column("id_source").to_pylist()[-1] == "hmac"
    assert SPAM not in json.dumps(traffic.to_pylist(), default=str)
    out = read_scored(str(tmp_path / "out"))
    assert traffic.column("score_spam").to_pylist() == pytest.approx(out["score_spam"].iloc[:scored].tolist(), abs=1e-6)
    assert traffic.column("text_length").to_pylist() == [len(t) for t in [*texts, SPAM]]

    expected = [i for i in ids if sampled(i, 0.5)]
    assert 0 < len(expected) < scored
    review = [pq.read_table(p) for p in sorted(home.glob("review/sms_spam/dt=*/*.parquet"))]
    assert sorted(i for t in review for i in t.column("item_id").to_pylist()) == sorted(expected)
    assert manifest["traffic"]["sampled"] == len(expected)

    settings = champion["settings"].model_copy(update={"home": str(home)})
    verdict = monitor_command("sms_spam", from_=before.isoformat(), until=after.isoformat(), settings=settings)
    assert verdict["records"] == scored and verdict["sources"] == {"batch": scored}
    assert verdict["versions"] == {record.version: scored}
