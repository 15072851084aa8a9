"""pgolf: parameter golf, from data to a reproducible, honestly scored artifact."""

__version__ = "0.1.0"


def load_artifact(path, device="cpu", preset=None, environ=None):
    """Rebuild a model in eval mode from a pgolf artifact, a seed ``.ptz`` or a frontier record's
    per-group artifact (see pgolf.quant.artifact); `environ` overrides a record preset's fields by
    the challenge's environment names, as the record's own run would."""
    from pgolf.quant.artifact import load_artifact as _load

    return _load(path, device=device, preset=preset, environ=environ)


__all__ = ["__version__", "load_artifact"]
