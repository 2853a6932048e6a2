"""sklatom: scikit-learn-compatible analysis of atomic-resolution microscope images."""

__version__ = "0.1.0.dev0"
