"""Trainer: from a blood-cell image set to a validated, deployable OpenVINO model.

Runs on a workstation (TensorFlow); the edge never imports it. Research use only.
"""

LABELS = ["normal", "ALL"]  # output index order; model.json `labels`
POSITIVE_LABEL = "ALL"


class TrainerError(Exception):
    """An expected problem with the user's input: the CLI prints the message and exits 2."""
