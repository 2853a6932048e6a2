"""The warnings sklatom raises, in one place.

Errors are the built-in ``ValueError`` and ``TypeError`` (with messages that name the argument,
what was given and what is expected), as in scikit-learn; the warnings below let a user filter
sklatom's own warnings, e.g. ``warnings.simplefilter("error", SklatomWarning)``.
"""

__all__ = ["ImageQualityWarning", "OutOfDistributionWarning", "SklatomWarning"]


class SklatomWarning(UserWarning):
    """Base class of the warnings sklatom raises for recoverable oddities in the input."""


class ImageQualityWarning(SklatomWarning):
    """An image, or part of it, shows nothing: saturated, clipped, blanked, constant, tiny."""


class OutOfDistributionWarning(SklatomWarning):
    """An image is unlike the images the model's uncertainty was calibrated on: its atoms, and
    their existence probabilities, are not to be trusted (see :mod:`sklatom.uncertainty`)."""
