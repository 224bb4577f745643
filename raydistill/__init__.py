"""raydistill: distil a large text classifier into a small one on Ray, and prove what it is worth."""

__version__ = "0.1.0"
