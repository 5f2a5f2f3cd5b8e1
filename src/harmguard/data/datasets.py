"""Named datasets: a registry of pinned public files, fetched by name, checked against sha256, cached locally.

Each file is pinned by the commit in its canonical URL and by a sha256 written here (copied once from the
mirror's PROVENANCE.json; never read at run time, so a tampered mirror cannot vouch for itself). A file reaches
``<cache>/datasets/<dataset>/<file>`` from, in order: the cache itself when its digest still matches, the local
mirror (``Settings.data_mirror``) when one is set, else the canonical URL. The base URL can be replaced (tests,
air-gapped hosts serving a mirror over HTTP) with ``base_url_override=`` or ``HARMGUARD_DATASET_BASE_URL``; the
replacement URL follows the mirror layout ``<base>/<dataset>/<file>``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import http.client
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pandas as pd

from harmguard import __version__
from harmguard.digests import sha256_file
from harmguard.settings import Settings

logger = logging.getLogger(__name__)

BASE_URL_ENV = "HARMGUARD_DATASET_BASE_URL"
_CHUNK = 1 << 20  # bytes per read while copying or downloading
_TIMEOUT_S = 60.0  # per socket operation, not for the whole download


class DatasetError(ValueError):
    """A named dataset cannot be found, fetched or parsed; the message says which and why."""


class DatasetFetchError(DatasetError):
    """A dataset file could not be obtained (missing mirror file, network failure)."""


class DatasetChecksumError(DatasetError):
    """A fetched file's sha256 differs from the pinned one; nothing was cached."""

    def __init__(self, dataset: str, filename: str, expected: str, actual: str, source: str) -> None:
        self.dataset = dataset
        self.filename = filename
        self.expected = expected
        self.actual = actual
        self.source = source
        super().__init__(
            f"{dataset}/{filename}: sha256 digest mismatch (expected {expected}, actual {actual}) "
            f"in the file from {source}; it was not cached"
        )


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class DatasetFile:
    """One pinned file of a named dataset."""

    dataset: str  # registry name, also the folder in the mirror and the cache
    filename: str  # file name inside that folder (mirror layout)
    repo: str  # GitHub owner/name of the canonical copy
    commit: str  # the commit that pins the bytes
    source_path: str  # path inside the repository at that commit
    sha256: str  # hex digest of the exact bytes
    size: int  # bytes; used for progress when a server sends no Content-Length

    @property
    def mirror_name(self) -> str:
        """Path relative to a mirror (or cache) root, e.g. ``davidson2017/labeled_data.csv``."""
        return f"{self.dataset}/{self.filename}"

    @property
    def url(self) -> str:
        """The canonical URL (raw.githubusercontent.com at the pinned commit)."""
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.source_path}"


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: its pinned files, which one is the table, how to parse it, licence and citation."""

    name: str
    description: str
    files: tuple[DatasetFile, ...]
    table: str  # file name (in ``files``) that ``load_dataset`` parses; "*" for every file (the parser gets a list)
    parser: Callable[[Any], pd.DataFrame]
    license: str
    citation: str

    def file(self, filename: str) -> DatasetFile:
        """The registered file with that name.

        Raises:
            DatasetError: When the dataset has no such file.
        """
        for f in self.files:
            if f.filename == filename:
                return f
        known = ", ".join(f.filename for f in self.files)
        raise DatasetError(f"dataset {self.name!r} has no file {filename!r}; its files: {known}")


# --- parsers --------------------------------------------------------------------------------------------------
# Every parser reads UTF-8 with keep_default_na=False: texts are kept verbatim, so a tweet reading "NA" or "null"
# stays a string and the data version (a digest of texts as loaded) does not depend on pandas' NA guesses.


def _require_columns(df: pd.DataFrame, expected: list[str], path: Path) -> pd.DataFrame:
    if list(df.columns) != expected:
        raise DatasetError(f"{path}: expected columns {expected}, found {list(df.columns)}")
    return df


def parse_davidson2017(path: Path) -> pd.DataFrame:
    """Parse ``labeled_data.csv``: RFC 4180 CSV (917 tweets hold quoted newlines), first column an unnamed index.

    The index is dropped: it is the authors' row number with gaps (0..25296 for 24,783 rows), not a label.
    """
    df = pd.read_csv(path, index_col=0, encoding="utf-8", keep_default_na=False)
    cols = ["count", "hate_speech", "offensive_language", "neither", "class", "tweet"]
    return _require_columns(df.reset_index(drop=True), cols, path)


def parse_sms_spam(path: Path) -> pd.DataFrame:
    """Parse ``SMSSpamCollection``: ``label<TAB>text`` lines, no header.

    Quoting is off because texts hold unbalanced double quotes; with CSV quoting two rows would merge.
    """
    df = pd.read_csv(
        path,
        sep="\t",
        header=None,
        names=["label", "text"],
        quoting=csv.QUOTE_NONE,
        dtype=str,
        encoding="utf-8",
        keep_default_na=False,
    )
    return _require_columns(df, ["label", "text"], path)


def parse_hatecheck(path: Path) -> pd.DataFrame:
    """Parse ``test_suite_cases.csv``, keeping its columns.

    The unnamed first column is the row position (0..3727) and is dropped; ``case_id`` is the real id. Blank
    ``ref_case_id`` / ``ref_templ_id`` become nullable integers (<NA>); a blank ``target_ident`` (cases with no
    target) stays "". ``test_case`` is verbatim, trailing spaces included.
    """
    df = pd.read_csv(path, index_col=0, encoding="utf-8", keep_default_na=False).reset_index(drop=True)
    for col in ("ref_case_id", "ref_templ_id"):
        df[col] = pd.to_numeric(df[col].replace("", None)).astype("Int64")
    cols = ["functionality", "case_id", "test_case", "label_gold", "target_ident", "direction", "focus_words"]
    cols += ["focus_lemma", "ref_case_id", "ref_templ_id", "templ_id", "case_templ"]
    return _require_columns(df, cols, path)


def parse_bias_madlibs(path: Path) -> pd.DataFrame:
    """Parse ``bias_madlibs_77k.csv``: columns ``Text``, ``Label`` (BAD / NOT_BAD), ``Template``."""
    df = pd.read_csv(path, dtype=str, encoding="utf-8", keep_default_na=False)
    return _require_columns(df, ["Text", "Label", "Template"], path)


def parse_toxigen_prompts(paths: list[Path]) -> pd.DataFrame:
    """Parse the ToxiGen prompt files ``{hate,neutral}_<group>_1k.txt``: columns ``text``, ``label``, ``group``.

    Each line holds several statements separated by a literal backslash-n, each starting with ``- ``; ``label`` is the
    file's prefix (``hate`` or ``neutral``), ``group`` the rest of its name (``asian``, ``women``...).
    """
    rows = []
    for path in sorted(paths, key=lambda p: p.name):
        match = _TOXIGEN_FILE.fullmatch(path.name)
        if match is None:
            raise DatasetError(f"{path}: not a ToxiGen prompt file (hate_<group>_1k.txt or neutral_<group>_1k.txt)")
        for line in path.read_text(encoding="utf-8").splitlines():
            for part in line.split("\\n"):
                text = part.strip().removeprefix("-").strip()  # a line ends in a bare "-": no statement
                if text:
                    rows.append((text, match["label"], match["group"]))
    return pd.DataFrame(rows, columns=["text", "label", "group"])


_TOXIGEN_FILE = re.compile(r"(?P<label>hate|neutral)_(?P<group>[a-z_]+)_1k\.txt")

# --- registry -------------------------------------------------------------------------------------------------


def _files(dataset: str, repo: str, commit: str, entries: list[tuple[str, str, str, int]]) -> tuple[DatasetFile, ...]:
    return tuple(DatasetFile(dataset, name, repo, commit, src, sha, size) for name, src, sha, size in entries)


_DAVIDSON_COMMIT = "cb50f7e9eb855a99abc51423bf40df0e26d6fe30"
_SMS_COMMIT = "ae6d75701433e884ae62bca4bed8eb40c622c3d1"
_HATECHECK_COMMIT = "d84302298ceeb34f4b0dde2d8a1f4932c2caa612"
_MADLIBS_COMMIT = "9c7d91aaa53406a362354661a93e07956d95e59a"
_MADLIBS_DIR = "archive/unintended_ml_bias"
_TOXIGEN_COMMIT = "01517e814639e0334c920a3c502036c8158aac87"
# (file under prompts/, sha256, bytes) of the 31 ToxiGen prompt files (16 hateful, 15 neutral groups).
_TOXIGEN_FILES = [
    ("hate_asian_1k.txt", "0504967034122b691c16dbef10db3acb16492808ecc66d8cd2b2ae87454fd655", 499093),
    ("hate_bisexual_1k.txt", "09a5b6995d0cd0ba940ae9f9d67e8db1451352dcf99ee273315efc34915fc1e3", 443794),
    ("hate_black_1k.txt", "29ef85c5610d77a3a4bb050826ffb6e124ee48e11f5b63d34b29d616ef2ee1c3", 741295),
    ("hate_chinese_1k.txt", "7f99029bad4f71caff707787d6799d1d654fee140f22418691d1244e81ed2b21", 380934),
    ("hate_immigrant_1k.txt", "bebb38d8786f498ca2153f965cdfba14e0490d5216781091106e5ac8ebbe0574", 281309),
    ("hate_jewish_1k.txt", "f5bdf83ef8fd32435241cc5fcfc337c0a57bcf64eb7fb4aa3c8fe15eb86f1fd2", 569538),
    ("hate_latino_1k.txt", "60988864d728cc7b1644a72419181efc1d82b2342f636a5e76f34805e4a88537", 704000),
    ("hate_lgbtq_1k.txt", "7fb7da0d4ad1a485824111ab60f6030f01dd92dbc9342c76534c78faec061a16", 573075),
    ("hate_mental_disability_1k.txt", "5a71f51bf998c5111b5dd6d0b7d7edbaa445f27defbc1fdb798dd920974ad3e2", 476620),
    ("hate_mexican_1k.txt", "2fad743ced369e4a280165b7ea909f8cb30921840cbe5f9f454243cf9e4dcfd5", 671444),
    ("hate_middle_east_1k.txt", "29ffcca6defd3e4f2edd2237417c7617a3c7380de8f9c6cf13d8c087fa595223", 422551),
    ("hate_muslim_1k.txt", "aaa18a9bf72928f71cf3d0d8d4dfa298faeb015a8580f5c7e21ef7afaae3241a", 421760),
    ("hate_native_american_1k.txt", "01c2077f1007268ca11588d08f909ed9c01178148205ae417618d276227b9bbc", 476000),
    ("hate_physical_disability_1k.txt", "8cada46239a52a741faf47677d1ffbfa06dc31d3e480a03935a5aec89ea02dee", 409643),
    ("hate_trans_1k.txt", "6188dfd52082e552230a1332e2bf83a23e8410c5f353d32dca79f259c8daf8b8", 581554),
    ("hate_women_1k.txt", "eecdf3006847c267b9399045ce2fe002f884fe5b682dbef450f3477d7bb24497", 385583),
    ("neutral_asian_1k.txt", "a5f0c58ae51dc8771d1779009ffc3017c5071c529b01f260600fa96c164ceb44", 611895),
    ("neutral_bisexual_1k.txt", "8a3391bb9a178295f619c3e92ba9bc177225c392d90ac9f4ab5702c4140d6e51", 911612),
    ("neutral_black_1k.txt", "8e1da39bf32818c14156f4de32ef6a35f701e1737540dafb02bdf8eb03206a6b", 853769),
    ("neutral_chinese_1k.txt", "aad50dde2f68d75804e44b939a700b8e37ef93a152cae1a045f8881f89c7e982", 408062),
    ("neutral_immigrant_1k.txt", "1807799ed9e45c428792da879f83d874e3f589c63b6fd746716fafe2b117c3d4", 338243),
    ("neutral_jewish_1k.txt", "c804dc98c4a7d90105a9848a66cde4eb05db9a63a8d2668387e46bba90c28380", 645674),
    ("neutral_latino_1k.txt", "7fad9d0003e54e5f18c1dafb7e21b2295dae5bb7290e9c649eadb7a450b80957", 466000),
    ("neutral_lgbtq_1k.txt", "7cefb606353cfff8c9ee4af9b2044f039e698dc8117b7c9414dd02dedca51ba9", 910319),
    ("neutral_mental_disability_1k.txt", "8f513551d7c86c3fd6df5d0a4bb8fd831c45c24d917d69ab3a61f1a984edf3d0", 552905),
    ("neutral_mexican_1k.txt", "e16aaa8a4606b3bf08139b9c91067cb63d620dd5a3a94e63b8ebc3f4198b1597", 479603),
    ("neutral_middle_east_1k.txt", "a4f23dfbe5bd0dec6a2018b2fe1ca9805d2a7ca76791da5300c72e6bcdabcdf9", 411319),
    ("neutral_muslim_1k.txt", "d378bc96f388cef1be42954246b67955dfe3d42cfcbf2ffc2924856c2fb933cd", 487659),
    ("neutral_native_american_1k.txt", "8affc8490fb2fac8ad72041cce775fc9442ebea95a64a7a2274825e1231ef265", 582993),
    ("neutral_physical_disability_1k.txt", "30ae4d6774054136a635cd9097dd4fe530ec2f407932f775e8093afa795cff8e", 454497),
    ("neutral_women_1k.txt", "dfad74fee637cd35415fc9b3a0b8d27d799e5613da5d9be0fdf93774fe813208", 390963),
]

_REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="davidson2017",
            description="24,783 tweets labelled hate (0) / offensive (1) / neither (2) by 3+ annotators.",
            files=_files(
                "davidson2017",
                "t-davidson/hate-speech-and-offensive-language",
                _DAVIDSON_COMMIT,
                [
                    (
                        "labeled_data.csv",
                        "data/labeled_data.csv",
                        "fcb8bc7c68120ae4af04a5b9acd58585513ede11e1548ebf36a5c2040b6f6281",
                        2546446,
                    )
                ],
            ),
            table="labeled_data.csv",
            parser=parse_davidson2017,
            license="MIT",
            citation=(
                "Davidson, T., Warmsley, D., Macy, M., Weber, I. (2017). Automated Hate Speech Detection and the "
                "Problem of Offensive Language. ICWSM 2017."
            ),
        ),
        DatasetSpec(
            name="sms_spam",
            description="5,574 SMS messages labelled ham / spam (403 duplicate texts: dedupe before splitting).",
            files=_files(
                "sms_spam",
                "SnehaKedia/sms-spam-detection-using-tensorflow-keras",
                _SMS_COMMIT,
                [
                    (
                        "SMSSpamCollection",
                        "smsspamcollection/SMSSpamCollection",
                        "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
                        477907,
                    )
                ],
            ),
            table="SMSSpamCollection",
            parser=parse_sms_spam,
            license="free, copyright Almeida & Gomez Hidalgo, citation requested (see readme)",
            citation=(
                "Almeida, T. A., Gomez Hidalgo, J. M., Yamakami, A. (2011). Contributions to the Study of SMS Spam "
                "Filtering: New Collection and Results. DocEng 2011."
            ),
        ),
        DatasetSpec(
            name="hatecheck",
            description="3,728 templated functional test cases for hate speech detection (evaluation only).",
            files=_files(
                "hatecheck",
                "paul-rottger/hatecheck-data",
                _HATECHECK_COMMIT,
                [
                    (
                        "test_suite_cases.csv",
                        "test_suite_cases.csv",
                        "ecf0dc1e93fccc90b6f880e632b19e635c0f0a68b3157915a9e20b6938f121cf",
                        664630,
                    )
                ],
            ),
            table="test_suite_cases.csv",
            parser=parse_hatecheck,
            license="CC-BY-4.0",
            citation=(
                "Rottger, P., Vidgen, B., Nguyen, D., Waseem, Z., Margetts, H., Pierrehumbert, J. (2021). HateCheck: "
                "Functional Tests for Hate Speech Detection Models. ACL 2021."
            ),
        ),
        DatasetSpec(
            name="jigsaw_bias_madlibs",
            description="76,564 synthetic identity-template sentences (BAD / NOT_BAD) for bias metrics (evaluation).",
            files=_files(
                "jigsaw_bias_madlibs",
                "conversationai/unintended-ml-bias-analysis",
                _MADLIBS_COMMIT,
                [
                    (
                        "bias_madlibs_77k.csv",
                        f"{_MADLIBS_DIR}/eval_datasets/bias_madlibs_77k.csv",
                        "aac542254cf158415ec74623d54fa76176f26a7e7d8ef20788e1748a05ba5b4c",
                        3355157,
                    ),
                    (
                        "identity_terms_adjectives_people.txt",
                        f"{_MADLIBS_DIR}/bias_madlibs_data/adjectives_people.txt",
                        "5d999b7488ada99a0bb41715cc7c7c2627927319775f041d4a2d447496411eb8",
                        406,
                    ),
                ],
            ),
            table="bias_madlibs_77k.csv",
            parser=parse_bias_madlibs,
            license="data CC-BY-4.0, code Apache-2.0",
            citation=(
                "Dixon, L., Li, J., Sorensen, J., Thain, N., Vasserman, L. (2018). Measuring and Mitigating "
                "Unintended Bias in Text Classification. AIES 2018."
            ),
        ),
        DatasetSpec(
            name="toxigen_prompts",
            description="ToxiGen prompts: short hateful and neutral statements about 13 minority groups (training).",
            files=_files(
                "toxigen_prompts",
                "microsoft/TOXIGEN",
                _TOXIGEN_COMMIT,
                [(name, f"prompts/{name}", sha, size) for name, sha, size in _TOXIGEN_FILES],
            ),
            table="*",
            parser=parse_toxigen_prompts,
            license="MIT",
            citation=(
                "Hartvigsen, T., Gabriel, S., Palangi, H., Sap, M., Ray, D., Kamar, E. (2022). ToxiGen: A Large-Scale "
                "Machine-Generated Dataset for Adversarial and Implicit Hate Speech Detection. ACL 2022."
            ),
        ),
    )
}


def dataset_names() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(_REGISTRY)


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry of a named dataset.

    Raises:
        DatasetError: For an unknown name; the message lists the known ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}") from None


# --- fetching -------------------------------------------------------------------------------------------------


def _make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; return the ones created, deepest first (to undo on failure)."""
    created = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    return created


def _copy_stream(src: BinaryIO, dst: BinaryIO, digest: _Digest, advance: Callable[[int], object]) -> None:
    while chunk := src.read(_CHUNK):
        dst.write(chunk)
        digest.update(chunk)
        advance(len(chunk))


@contextlib.contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[int], object]]:
    """A download progress bar on stderr (stdout is reserved for --json output); silent when not a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def _resolve_url(spec_file: DatasetFile, base_url_override: str | None) -> str:
    # The environment is read here, per call, so importing this module never captures it.
    base = base_url_override or os.environ.get(BASE_URL_ENV)
    return f"{base.rstrip('/')}/{spec_file.mirror_name}" if base else spec_file.url


def fetch_file(
    spec_file: DatasetFile, settings: Settings, *, base_url_override: str | None = None, folder: str = "datasets"
) -> Path:
    """Return a verified local copy of a dataset file, fetching it into the cache when needed.

    Order: the cached copy when its sha256 matches (a stale one is deleted); the mirror when
    ``settings.data_mirror`` is set; else a download from the canonical URL, or from
    ``<base>/<dataset>/<file>`` when ``base_url_override`` (first) or ``HARMGUARD_DATASET_BASE_URL`` gives a base.
    The bytes go to a temporary file beside the target and are renamed into place only after their digest matched,
    so the cache never holds an unverified file.

    Args:
        spec_file: The registered file (``get_dataset(name).file(filename)``).
        settings: Supplies ``cache`` and ``data_mirror``.
        base_url_override: Replaces the canonical URL's base (mirror layout); ignored when a mirror is set.
        folder: Folder of the cache the file goes to (``schemas`` for the pinned CRDs of ``harmguard.k8s.schemas``).

    Returns:
        The path ``settings.cache / folder / <dataset> / <filename>``.

    Raises:
        DatasetChecksumError: When the fetched bytes do not match the pinned sha256 (nothing is cached).
        DatasetFetchError: When the mirror lacks the file or the download fails.
    """
    target = Path(settings.cache) / folder / spec_file.dataset / spec_file.filename
    if target.is_file():
        actual = sha256_file(target)
        if actual == spec_file.sha256:
            return target
        logger.warning("cached %s has sha256 %s, expected %s: fetching it again", target, actual, spec_file.sha256)
        target.unlink()

    created = _make_dirs(target.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec_file.filename}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            if settings.data_mirror is not None:
                src_path = Path(settings.data_mirror) / spec_file.dataset / spec_file.filename
                source = f"mirror {src_path}"
                if not src_path.is_file():
                    raise DatasetFetchError(
                        f"{spec_file.mirror_name}: not in the data mirror: {src_path} does not exist "
                        "(check HARMGUARD_DATA_MIRROR)"
                    )
                with open(src_path, "rb") as src:
                    _copy_stream(src, out, digest, lambda n: None)
            else:
                url = _resolve_url(spec_file, base_url_override)
                source = f"URL {url}"
                logger.info("downloading %s from %s", spec_file.mirror_name, url)
                _download(url, out, digest, spec_file)
        # Verify before the rename: a reader of the cache path only ever sees pinned bytes. No fsync: a torn file
        # after a crash fails the digest check on the next use and is fetched again.
        actual = digest.hexdigest()
        if actual != spec_file.sha256:
            raise DatasetChecksumError(spec_file.dataset, spec_file.filename, spec_file.sha256, actual, source)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for d in created:  # deepest first; leave folders that another writer filled meanwhile
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return target


def _download(url: str, out: BinaryIO, digest: _Digest, spec_file: DatasetFile) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": f"harmguard/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or spec_file.size)
            with _progress(spec_file.mirror_name, total) as advance:
                _copy_stream(response, out, digest, advance)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        raise DatasetFetchError(f"{spec_file.mirror_name}: download from {url} failed: {exc}") from exc


def load_dataset(name: str, settings: Settings, *, base_url_override: str | None = None) -> pd.DataFrame:
    """Fetch (or reuse from the cache) a named dataset's table and parse it.

    Args:
        name: A registered name (see ``dataset_names()``).
        settings: Supplies ``cache`` and ``data_mirror``.
        base_url_override: See ``fetch_file``.

    Returns:
        The parsed table; columns as documented on the dataset's parser.

    Raises:
        DatasetError: For an unknown name, a failed fetch or a checksum mismatch.
    """
    spec = get_dataset(name)
    if spec.table == "*":  # a dataset of several files (toxigen_prompts): each fetched and checked, parsed together
        return spec.parser([fetch_file(f, settings, base_url_override=base_url_override) for f in spec.files])
    path = fetch_file(spec.file(spec.table), settings, base_url_override=base_url_override)
    return spec.parser(path)


def load_identity_terms(settings: Settings, *, base_url_override: str | None = None) -> list[str]:
    """The 50 identity terms of jigsaw_bias_madlibs (``lesbian``, ``middle eastern``, ...), in file order.

    Args:
        settings: Supplies ``cache`` and ``data_mirror``.
        base_url_override: See ``fetch_file``.

    Returns:
        One term per non-blank line, stripped.
    """
    spec_file = get_dataset("jigsaw_bias_madlibs").file("identity_terms_adjectives_people.txt")
    path = fetch_file(spec_file, settings, base_url_override=base_url_override)
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
