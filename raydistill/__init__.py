"""raydistill: distil a large text classifier into a small one on Ray, and prove what it is worth."""

__version__ = "0.1.0"


__all__ = ["__version__", "results"]


def __dir__() -> list[str]:
    """``results`` is loaded on first use, but tab completion should still offer it."""
    return sorted(__all__)


def __getattr__(name: str):
    """``raydistill.results(run_dir)``: the study as DataFrames, imported on first use so that
    ``import raydistill`` (every CLI call, every Ray worker) stays light."""
    if name == "results":
        from raydistill.platform.report import results

        return results
    raise AttributeError(f"module 'raydistill' has no attribute {name!r}")
