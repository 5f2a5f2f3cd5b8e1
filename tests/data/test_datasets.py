"""Named datasets: fetched from a mirror or a URL, verified by sha256 before caching, parsed as documented."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harmguard.data import datasets
from harmguard.data.datasets import (
    BASE_URL_ENV,
    DatasetChecksumError,
    DatasetError,
    DatasetFetchError,
    fetch_file,
    get_dataset,
    load_dataset,
    load_identity_terms,
)
from harmguard.settings import Settings
from tests.conftest import mirror_dir


@pytest.fixture
def mirror() -> Path:
    path = mirror_dir()
    assert (path / "PROVENANCE.json").is_file(), f"{path} is not the shared datasets folder (no PROVENANCE.json)"
    return path


def make_settings(tmp: Path, data_mirror: Path | None = None) -> Settings:
    return Settings(
        home=str(tmp),
        cache=tmp / "cache",
        data_mirror=data_mirror,
        mlflow_tracking_uri="sqlite:///" + str(tmp / "m.db"),
    )


def cached_files(settings: Settings) -> list[Path]:
    return sorted(p for p in Path(settings.cache).rglob("*") if p.is_file())


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell may set the override; these tests choose the source themselves.
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    # urllib honours *_proxy variables; a CI proxy must not intercept requests to the local test server.
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")


# --- registry -------------------------------------------------------------------------------------------------


def test_dataset_names() -> None:
    assert datasets.dataset_names() == [
        "davidson2017",
        "hatecheck",
        "jigsaw_bias_madlibs",
        "sms_spam",
        "toxigen_prompts",
    ]


def test_unknown_dataset_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'davidson2018'") as exc:
        load_dataset("davidson2018", make_settings(tmp_path))
    for name in datasets.dataset_names():
        assert name in str(exc.value)
    assert not (tmp_path / "cache").exists()  # failed before touching the cache


def test_unknown_file_of_a_dataset() -> None:
    with pytest.raises(DatasetError, match="no file 'nope.csv'.*labeled_data.csv"):
        get_dataset("davidson2017").file("nope.csv")


def test_canonical_urls_pin_the_commit() -> None:
    f = get_dataset("davidson2017").file("labeled_data.csv")
    assert f.url == (
        "https://raw.githubusercontent.com/t-davidson/hate-speech-and-offensive-language/"
        "cb50f7e9eb855a99abc51423bf40df0e26d6fe30/data/labeled_data.csv"
    )
    assert f.mirror_name == "davidson2017/labeled_data.csv"


def test_registry_matches_mirror_provenance(mirror: Path) -> None:
    # The code never reads PROVENANCE.json; this checks the hard-coded pins were copied from it faithfully.
    provenance = json.loads((mirror / "PROVENANCE.json").read_text())
    for name in datasets.dataset_names():
        spec, entry = get_dataset(name), provenance[name]
        assert spec.license == entry["license"]
        assert spec.table == "*" or spec.table in {f.filename for f in spec.files}
        assert spec.citation and spec.description
        for f in spec.files:
            pinned = entry["files"][f.filename]
            assert (f.repo, f.commit) == (entry["repo"], entry["commit"])
            assert (f.source_path, f.sha256, f.size) == (pinned["source_path"], pinned["sha256"], pinned["bytes"])


# --- mirror and parsers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rows", "columns", "label_column", "label_counts"),
    [
        (
            "davidson2017",
            24_783,
            ["count", "hate_speech", "offensive_language", "neither", "class", "tweet"],
            "class",
            {0: 1_430, 1: 19_190, 2: 4_163},
        ),
        ("sms_spam", 5_574, ["label", "text"], "label", {"ham": 4_827, "spam": 747}),
        (
            "hatecheck",
            3_728,
            [
                "functionality",
                "case_id",
                "test_case",
                "label_gold",
                "target_ident",
                "direction",
                "focus_words",
                "focus_lemma",
                "ref_case_id",
                "ref_templ_id",
                "templ_id",
                "case_templ",
            ],
            "label_gold",
            {"hateful": 2_563, "non-hateful": 1_165},
        ),
        ("jigsaw_bias_madlibs", 76_564, ["Text", "Label", "Template"], "Label", {"BAD": 38_282, "NOT_BAD": 38_282}),
    ],
)
def test_load_from_mirror_matches_readme(
    mirror: Path,
    tmp_path: Path,
    name: str,
    rows: int,
    columns: list[str],
    label_column: str,
    label_counts: dict[object, int],
) -> None:
    settings = make_settings(tmp_path, mirror)
    df = load_dataset(name, settings)
    assert len(df) == rows
    assert list(df.columns) == columns  # unnamed index columns are dropped
    assert df[label_column].value_counts().to_dict() == label_counts
    # cached under <cache>/datasets/<name>/<table>, no temporary files beside it
    spec = get_dataset(name)
    assert cached_files(settings) == [Path(settings.cache) / "datasets" / name / spec.table]


def test_toxigen_prompts_split_into_statements(mirror: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, mirror)
    df = load_dataset("toxigen_prompts", settings)
    assert list(df.columns) == ["text", "label", "group"]
    unique = df.drop_duplicates(["text", "label"])["label"].value_counts().to_dict()
    assert unique == {"hate": 371, "neutral": 297}  # the mirror README's counts, split on the literal \n
    assert df.groupby("label")["group"].nunique().to_dict() == {"hate": 16, "neutral": 15}
    assert not df["text"].str.startswith("- ").any() and not df["text"].str.contains("\\n", regex=False).any()
    assert len(cached_files(settings)) == 31  # every file fetched and checked, each under its own name


def test_a_corrupted_toxigen_file_is_refused(mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mirror" / "toxigen_prompts"
    dest.mkdir(parents=True)
    for f in (mirror / "toxigen_prompts").glob("*_1k.txt"):
        dest.joinpath(f.name).write_bytes(f.read_bytes())
    dest.joinpath("neutral_women_1k.txt").write_bytes(b"- tampered\n")
    with pytest.raises(DatasetChecksumError, match="neutral_women_1k.txt"):
        load_dataset("toxigen_prompts", make_settings(tmp_path, tmp_path / "mirror"))


def test_davidson_keeps_quoted_newlines(mirror: Path, tmp_path: Path) -> None:
    df = load_dataset("davidson2017", make_settings(tmp_path, mirror))
    assert df["tweet"].str.contains("\n").sum() > 0  # RFC 4180 quoted newlines stayed inside their tweet
    assert df["class"].dtype.kind == "i"
    assert (df["count"] == df["hate_speech"] + df["offensive_language"] + df["neither"]).all()


def test_sms_spam_reads_quotes_literally(mirror: Path, tmp_path: Path) -> None:
    df = load_dataset("sms_spam", make_settings(tmp_path, mirror))
    assert df["text"].str.contains('"').any()  # quoting off: stray quotes neither merge nor drop rows
    assert df["text"].duplicated().sum() == 403  # README: dedupe before splitting


def test_hatecheck_missing_refs_are_nullable_ints(mirror: Path, tmp_path: Path) -> None:
    df = load_dataset("hatecheck", make_settings(tmp_path, mirror))
    assert str(df["ref_case_id"].dtype) == "Int64"
    assert df["ref_case_id"].isna().any() and df["ref_case_id"].notna().any()
    assert df["case_id"].is_unique
    assert df["target_ident"].nunique() == 8  # 7 identity groups plus "" for cases without a target


def test_identity_terms(mirror: Path, tmp_path: Path) -> None:
    terms = load_identity_terms(make_settings(tmp_path, mirror))
    assert len(terms) == 50
    assert terms[0] == "lesbian"
    assert "middle eastern" in terms
    assert all(t == t.strip() and t for t in terms)


def test_missing_mirror_file_names_the_path(tmp_path: Path) -> None:
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    settings = make_settings(tmp_path, empty_mirror)
    expected = str(empty_mirror / "sms_spam" / "SMSSpamCollection")
    with pytest.raises(DatasetFetchError, match="not in the data mirror") as exc:
        load_dataset("sms_spam", settings)
    assert expected in str(exc.value)
    assert not Path(settings.cache).exists()  # the folders it made are removed again


def test_corrupted_mirror_copy_is_refused(mirror: Path, tmp_path: Path) -> None:
    bad_mirror = _copy_mirror(mirror, tmp_path / "mirror", flip="sms_spam/SMSSpamCollection")
    settings = make_settings(tmp_path, bad_mirror)
    with pytest.raises(DatasetChecksumError, match="mirror"):
        load_dataset("sms_spam", settings)
    assert cached_files(settings) == []


def test_corrupted_cache_file_is_fetched_again(mirror: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, mirror)
    spec_file = get_dataset("sms_spam").file("SMSSpamCollection")
    path = fetch_file(spec_file, settings)
    original = path.read_bytes()
    path.write_bytes(original[:-10] + b"tampered!\n")
    assert fetch_file(spec_file, settings) == path
    assert path.read_bytes() == original
    assert len(load_dataset("sms_spam", settings)) == 5_574


def test_valid_cache_needs_no_source(mirror: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, mirror)
    load_dataset("sms_spam", settings)
    offline = settings.model_copy(update={"data_mirror": tmp_path / "gone"})  # mirror gone: the cache suffices
    assert len(load_dataset("sms_spam", offline)) == 5_574


# --- download from a URL (a local HTTP server standing in for raw.githubusercontent.com) ----------------------


def _copy_mirror(mirror: Path, dest: Path, flip: str | None = None) -> Path:
    """Copy the small files the tests need; flip one bit of ``flip`` (a mirror-relative name)."""
    for rel in ("sms_spam/SMSSpamCollection", "davidson2017/labeled_data.csv"):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mirror / rel, dest / rel)
    if flip:
        data = bytearray((dest / flip).read_bytes())
        data[len(data) // 2] ^= 0x01
        (dest / flip).write_bytes(bytes(data))
    return dest


@dataclass
class Server:
    base_url: str
    requests: list[str]  # request paths, in order
    stop: Callable[[], None]  # shut the server down (idempotent)


@pytest.fixture
def http_mirror(mirror: Path, tmp_path: Path) -> Iterator[Server]:
    """Serve a copy of the mirror with sms_spam corrupted and davidson2017 intact."""
    root = _copy_mirror(mirror, tmp_path / "site", flip="sms_spam/SMSSpamCollection")
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002  # signature fixed by the base
            seen.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)
            stopped = True

    server = Server(base_url=f"http://127.0.0.1:{httpd.server_address[1]}", requests=seen, stop=stop)
    try:
        yield server
    finally:
        stop()


def test_download_verifies_caches_and_reuses(http_mirror: Server, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)  # no mirror: the URL is the source
    df = load_dataset("davidson2017", settings, base_url_override=http_mirror.base_url)
    assert len(df) == 24_783
    assert http_mirror.requests == ["/davidson2017/labeled_data.csv"]
    assert cached_files(settings) == [Path(settings.cache) / "datasets" / "davidson2017" / "labeled_data.csv"]

    http_mirror.stop()
    again = load_dataset("davidson2017", settings, base_url_override=http_mirror.base_url)
    assert again.equals(df)
    assert len(http_mirror.requests) == 1  # served from the cache


def test_download_with_wrong_digest_caches_nothing(http_mirror: Server, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    spec_file = get_dataset("sms_spam").file("SMSSpamCollection")
    with pytest.raises(DatasetChecksumError, match="sha256 digest mismatch") as exc:
        load_dataset("sms_spam", settings, base_url_override=http_mirror.base_url)
    err = exc.value
    assert (err.dataset, err.filename, err.expected) == ("sms_spam", "SMSSpamCollection", spec_file.sha256)
    assert err.actual != err.expected and err.actual in str(err) and err.expected in str(err)
    assert f"{http_mirror.base_url}/sms_spam/SMSSpamCollection" in str(err)
    assert isinstance(err, ValueError)
    assert http_mirror.requests == ["/sms_spam/SMSSpamCollection"]
    assert not Path(settings.cache).exists() or not any(Path(settings.cache).iterdir())  # nothing left behind


def test_base_url_from_environment(http_mirror: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BASE_URL_ENV, http_mirror.base_url + "/")  # read per call, trailing slash tolerated
    assert len(load_dataset("davidson2017", make_settings(tmp_path))) == 24_783
    assert http_mirror.requests == ["/davidson2017/labeled_data.csv"]


def test_base_url_parameter_beats_environment(
    http_mirror: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9/unused")
    load_dataset("davidson2017", make_settings(tmp_path), base_url_override=http_mirror.base_url)
    assert http_mirror.requests == ["/davidson2017/labeled_data.csv"]


def test_download_failure_is_a_fetch_error(http_mirror: Server, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with pytest.raises(DatasetFetchError, match="404"):
        load_dataset("hatecheck", settings, base_url_override=http_mirror.base_url)  # not served
    assert cached_files(settings) == []
