"""Real models in and out: Hugging Face checkpoints (`load_hf`, `save_hf`) and the lm-evaluation-harness
adapter (`rocket.interop.lm_eval`)."""

from rocket.interop.hf import load_hf, resolve, save_hf
from rocket.interop.hf_config import FAMILIES, InteropError, family_of

__all__ = ["FAMILIES", "InteropError", "family_of", "load_hf", "resolve", "save_hf"]
