"""The MinerU2.5 checkpoints mineru-fit knows by name, with their hub ids."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownModel:
    """One MinerU2.5 release: its Hugging Face and ModelScope ids (same architecture for all)."""

    name: str  # the repo name, e.g. "MinerU2.5-2509-1.2B"
    hf_id: str
    modelscope_id: str

    def repo_id(self, source: str) -> str:
        """The id on `source` ("huggingface" or "modelscope")."""
        return self.modelscope_id if str(getattr(source, "value", source)) == "modelscope" else self.hf_id

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.hf_id, self.modelscope_id, self.name)


def _known(name: str) -> KnownModel:
    return KnownModel(name=name, hf_id=f"opendatalab/{name}", modelscope_id=f"OpenDataLab/{name}")


KNOWN_MODELS: tuple[KnownModel, ...] = (
    _known("MinerU2.5-2509-1.2B"),
    _known("MinerU2.5-Pro-2604-1.2B"),
    _known("MinerU2.5-Pro-2605-1.2B"),
)
DEFAULT_MODEL = KNOWN_MODELS[0]


def find_known(model_id: str) -> KnownModel | None:
    """The known model `model_id` names (hub id of either hub, or bare name; any case), else None."""
    wanted = model_id.strip().strip("/").lower()
    for model in KNOWN_MODELS:
        if wanted in (i.lower() for i in model.ids):
            return model
    return None
