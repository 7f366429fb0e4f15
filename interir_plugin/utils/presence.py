"""The four degradations InterIR's physical head recognises and gates, and the presence targets of a batch's label
names (used by the head, its loss and the model class alike)."""
import torch

#: The degradations the physical head recognises, in the order of its presence logits; each gates its own maps.
PRESENCE_PARTS = ('low', 'haze', 'rain', 'snow')
#: The label of an undegraded image (CDD-11's folder of clean targets): none of the four present.
CLEAR_LABEL = 'clear'


def presence_targets(label_names, device=None):
    """Presence targets (``B x 4``, 0/1 in :data:`PRESENCE_PARTS` order) of label names such as ``'low_haze_rain'``.

    A label made only of those parts (CDD-11's eleven) has its parts present and the others absent; :data:`CLEAR_LABEL`
    has none present (a clean image, to be left as it is). Any other label
    (``'noise'``, ``'blur'``, a data set name) has all four on (the head may use every map) and a known-flag of 0,
    so it adds nothing to the recogniser's loss.

    Returns:
        tuple: ``(targets, known)``, float tensors ``B x 4`` and ``B``.
    """
    rows, known = [], []
    for name in label_names:
        parts = [] if str(name) == CLEAR_LABEL else str(name).split('_')
        ok = all(part in PRESENCE_PARTS for part in parts)
        rows.append([float(part in parts) if ok else 1.0 for part in PRESENCE_PARTS])
        known.append(float(ok))
    return torch.tensor(rows, device=device), torch.tensor(known, device=device)
