"""pgolf: parameter golf, from data to a reproducible, honestly scored artifact."""

__version__ = "0.1.0"


def load_artifact(path, device="cpu", preset=None):
    """Rebuild a model in eval mode from a pgolf artifact or a seed ``.ptz`` (see pgolf.quant.artifact)."""
    from pgolf.quant.artifact import load_artifact as _load

    return _load(path, device=device, preset=preset)


__all__ = ["__version__", "load_artifact"]
