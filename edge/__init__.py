"""ALL edge daemon: classifies blood-cell images on a Raspberry Pi with OpenVINO.

Research software, not a diagnostic device.
"""

__version__ = "0.1.0"

DISCLAIMER = (
    "Research use only. Not a medical device: results must not be used for diagnosis "
    "or treatment decisions."
)
