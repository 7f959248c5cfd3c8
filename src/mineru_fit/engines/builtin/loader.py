"""Load MinerU2.5 (Qwen2VLForConditionalGeneration) and its processor as the options say.

SDPA attention everywhere (never eager in the vision tower: it is quadratic in the patches),
bitsandbytes NF4/int8 when asked, and a processor built from the PIL image processor and the
tokenizer only — no video processor, so no torchvision.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mineru_fit.engines.builtin import hostmemory
from mineru_fit.engines.builtin.options import BuiltinOptions
from mineru_fit.errors import MissingExtraError, ModelNotFoundError

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    tokenizer: Any
    device: Any              # torch.device
    dtype: Any               # torch.dtype
    served_name: str
    model_dir: Path
    weights_bytes: int       # bytes of every tensor the model holds, quantization state included
    min_pixels: int
    max_pixels: int
    pad_token_id: int
    eos_token_ids: tuple[int, ...]


def resolve_model_dir(model: str) -> Path:
    """A local directory as given, or the downloaded copy of a hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    from mineru_fit.models import where

    found = where(model)
    if found is None:
        raise ModelNotFoundError(
            f"{model} is neither a model folder nor a downloaded model — run `mineru-fit models download {model}` "
            "or pass --model DIR"
        )
    return found


def torch_device(name: str) -> Any:
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelNotFoundError(f"device {name} asked for but torch sees no CUDA GPU — use --device cpu")
    if name == "cuda":
        name = "cuda:0"
    if name == "mps" and not torch.backends.mps.is_available():
        raise ModelNotFoundError("device mps asked for but it is not available — use --device cpu")
    return torch.device(name)


def load_model(options: BuiltinOptions) -> LoadedModel:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("torch and transformers", "engine") from exc
    from transformers import AutoConfig, PretrainedConfig, Qwen2VLForConditionalGeneration

    model_dir = resolve_model_dir(options.model)
    device = torch_device(options.device)
    dtype = getattr(torch, options.dtype)
    if device.type == "cuda" and options.mem_fraction_static is not None:
        # Caps the caching allocator (not the CUDA context): the plan's cap, enforced by torch.
        torch.cuda.set_per_process_memory_fraction(options.mem_fraction_static, device)

    config = AutoConfig.from_pretrained(model_dir)
    raw, _ = PretrainedConfig.get_config_dict(str(model_dir))
    # transformers 5 reads tie_word_embeddings from the text config; MinerU2.5's flat file has it
    # at the top only, and an untied lm_head that was never saved would be random.
    tied = raw.get("tie_word_embeddings", raw.get("text_config", {}).get("tie_word_embeddings"))
    if tied is not None:
        config.tie_word_embeddings = tied
        config.get_text_config(decoder=True).tie_word_embeddings = tied

    kwargs: dict[str, Any] = dict(config=config, dtype=dtype, attn_implementation="sdpa")
    quant = _quantization_config(options, dtype)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": device}
    model = Qwen2VLForConditionalGeneration.from_pretrained(model_dir, **kwargs)
    if quant is None:
        model.to(device)
    elif device.type == "cpu":
        _keep_unpackable_4bit_layers_unpacked(model)
    model.eval()

    processor, tokenizer, min_pixels, max_pixels = build_processor(model_dir, options.max_image_pixels)
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    served = options.served_model_name or _served_name(options.model, model_dir)
    weights = weights_bytes(model)
    if device.type == "cpu":
        # On the CPU the plan is RSS: what the loader's threads freed (bf16 → fp32 copies) goes back.
        hostmemory.give_back_free_memory()
    logger.info("loaded %s on %s as %s: %.1f MiB of weights", served, device, options.dtype, weights / 2**20)
    return LoadedModel(model, processor, tokenizer, device, dtype, served, model_dir, weights,
                       min_pixels, max_pixels, pad, eos)


def _keep_unpackable_4bit_layers_unpacked(model: Any) -> None:
    """bitsandbytes 0.50 repacks a 4-bit layer's weight for AVX512-BF16 CPUs on its first forward,
    reshaping its scales to in_features // blocksize columns: a layer narrower than one block (64)
    gets 0 and the forward raises. Such layers keep bitsandbytes' portable path (same numbers);
    MinerU2.5's widths are all multiples of 64, so this only spares small models and CPUs."""
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        blocksize = getattr(state, "blocksize", None)
        if blocksize and getattr(module, "in_features", blocksize) % blocksize:
            if getattr(module, "support_avx512bf16_for_cpu", False):
                module.support_avx512bf16_for_cpu = False


def _quantization_config(options: BuiltinOptions, dtype: Any) -> Optional[Any]:
    if not (options.load_in_4bit or options.load_in_8bit):
        return None
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as exc:
        raise MissingExtraError("bitsandbytes", "engine") from exc
    if options.load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def weights_bytes(model: Any) -> int:
    """Bytes of every distinct tensor in the state dict (bitsandbytes scales and states included)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for tensor in model.state_dict().values():
        if not hasattr(tensor, "untyped_storage"):
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:  # tied embeddings share one storage
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
    return total


def _eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    ids: list[int] = []
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        ids += value if isinstance(value, list) else [value] if value is not None else []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return tuple(dict.fromkeys(ids))


def _served_name(model: str, model_dir: Path) -> str:
    # A hub id is what clients know the model by; a local folder is named by its last part.
    return model if not Path(model).expanduser().is_dir() else model_dir.name


# Used only when the checkpoint ships no chat template: Qwen2-VL's turn format.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] in ('image', 'image_url') %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _chat_template(model_dir: Path, tokenizer: Any) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    for name in ("chat_template.jinja", "chat_template.json"):
        path = model_dir / name
        if path.is_file():
            text = path.read_text()
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return FALLBACK_CHAT_TEMPLATE


def build_processor(model_dir: Path, max_image_pixels: int) -> tuple[Any, Any, int, int]:
    """Image processor (PIL) + tokenizer + chat template, capped at the plan's pixels."""
    from transformers import AutoTokenizer, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        """Qwen2VLProcessor without its video processor, whose class needs torchvision."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):  # noqa: ANN001
            self.image_token = "<|image_pad|>"
            self.video_token = "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(model_dir)
    size = image_processor.size
    min_pixels = int(getattr(size, "shortest_edge", None) or 56 * 56)
    model_max = int(getattr(size, "longest_edge", None) or max_image_pixels)
    max_pixels = min(model_max, max_image_pixels)
    image_processor.size = type(size)(shortest_edge=min_pixels, longest_edge=max_pixels)
    processor = ImageOnlyQwen2VLProcessor(image_processor, tokenizer, chat_template=_chat_template(model_dir, tokenizer))
    return processor, tokenizer, min_pixels, max_pixels
