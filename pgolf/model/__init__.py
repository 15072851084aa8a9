"""The model: the seed's GPT, the frontier record's options, and their components (one module each)."""

from pgolf.model.gpt import GPT, build_model, count_params

__all__ = ["GPT", "build_model", "count_params"]
