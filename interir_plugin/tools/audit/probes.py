"""Probes of the routing: :class:`RoutingProbe` records (or replaces) the ``(alpha, gamma)`` of every EConv call,
and the intervention replaces an image's routing by label centroids and measures what that changes.

The routing vector is the ``alpha`` (expert mix) and ``gamma`` (prior gates) of every EConv call of one forward
pass, concatenated in module order, raw (no scaling: it is what the convolutions receive). It is recorded by
wrapping each EConv instance's ``route``, not read from ``aux``, so it holds every EConv wherever it sits.
"""
import numpy as np
import torch

from interir_plugin.archs.econv import EConv
from interir_plugin.tools.audit.statistics import psnr_float
from interir_plugin.tools.forward import image_tensor
from interir_plugin.utils.padding import crop_to, pad_for_network


class RoutingProbe:
    """Records, or replaces, the routing ``(alpha, gamma)`` of every :class:`EConv` call of a network.

    While the probe is active (``with probe:``) every EConv instance's ``route`` is wrapped: in recording mode
    it stores what the router returns; with :meth:`set_override` it returns the given routing instead (the
    router is not run). ``econv.py`` is untouched; leaving the block restores the instances.

    Args:
        net (nn.Module): The bare network.
    """

    def __init__(self, net):
        self.econvs = [m for m in net.modules() if isinstance(m, EConv)]
        self.calls = [[] for _ in self.econvs]
        self.layout = None  # ((econv, call, M, P), ...) of the routing vector, set by the first vectors() call
        self.override = None
        self._saved = []

    def __enter__(self):
        for i, m in enumerate(self.econvs):
            self._saved.append(m.__dict__.get('route'))
            m.route = self._wrap(i, m.route)
        return self

    def __exit__(self, *exc):
        for m, saved in zip(self.econvs, self._saved):
            if saved is None:
                del m.route
            else:
                m.route = saved
        self._saved = []
        self.override = None

    def _wrap(self, i, original):
        def route(x, cond=None):
            k = len(self.calls[i])
            if self.override is not None:
                alpha, gamma = self.override[i][k]
                self.calls[i].append(None)
                return alpha.to(x.device), gamma.to(x.device)
            alpha, gamma = original(x, cond)
            self.calls[i].append((alpha.detach().float().cpu(), gamma.detach().float().cpu()))
            return alpha, gamma

        return route

    def reset(self):
        """Forget the calls of the last forward pass (call before each forward)."""
        self.calls = [[] for _ in self.econvs]

    def vectors(self):
        """Routing vectors (``B x D`` float64 array) of the last recorded forward; the layout must not change."""
        layout = tuple((i, k, a.shape[1], g.shape[1]) for i, calls in enumerate(self.calls)
                       for k, (a, g) in enumerate(calls))
        if self.layout is None:
            self.layout = layout
        elif layout != self.layout:
            raise ValueError('audit: the EConv calls of this forward pass differ from the first one; the routing '
                             'vectors cannot be compared')
        parts = [torch.cat(c, 1) for calls in self.calls for c in calls]
        return torch.cat(parts, 1).double().numpy()

    def mean_routing(self, vectors):
        """The mean expert mix and mean prior gates over every EConv call of each row of ``vectors``.

        Args:
            vectors (ndarray): ``N x D`` routing vectors (the layout of :meth:`vectors`).

        Returns:
            tuple | None: ``(N x M mean alpha, N x P mean gamma)``; None when the EConvs differ in ``M`` or ``P``
            (their experts are then not the same columns).
        """
        sizes = {(m, p) for _, _, m, p in self.layout or ()}
        if len(sizes) != 1:
            return None
        (m, p), = sizes
        calls = np.asarray(vectors, np.float64).reshape(len(vectors), len(self.layout), m + p)
        return calls[..., :m].mean(1), calls[..., m:].mean(1)

    def set_override(self, vectors):
        """Replace every EConv's routing by rows of ``vectors`` (``K x D``, the layout of :meth:`vectors`)."""
        v = torch.as_tensor(np.asarray(vectors), dtype=torch.float32)
        override, start = [[] for _ in self.econvs], 0
        for i, _, m, p in self.layout:
            override[i].append((v[:, start:start + m], v[:, start + m:start + m + p]))
            start += m + p
        self.override = override
        self.reset()


def intervene(net, sample, probe, centroids, device):
    """Final-output PSNRs (float) of ``sample`` with every EConv's routing set to each row of ``centroids``."""
    x = image_tensor(sample.lq)[None].to(device)
    gt = image_tensor(sample.gt)
    padded, size = pad_for_network(x.expand(len(centroids), -1, -1, -1).contiguous(), net)
    probe.set_override(centroids)
    try:
        with torch.no_grad():
            out = net(padded)
    finally:
        probe.override = None
    final = crop_to(out[-1] if isinstance(out, (list, tuple)) else out, size)
    return [psnr_float(final[k, :3].cpu(), gt) for k in range(len(centroids))]


def intervention_summary(net, samples, records, probe, centroids, device, log, notes):
    """Per image: PSNR under its own label's held-out centroid routing minus the mean under the other labels'.

    Every EConv's routing is replaced by a label's centroid routing of the *other* clean images (an own-label
    centroid holding the image's own routing would sit closer to it and give a positive "drop" even when routing
    does not matter), one batched forward per image over all labels.

    Args:
        net (nn.Module): Bare network in eval mode.
        samples (list[Sample]): The images.
        records (list[dict]): Their per-image records (gain ``intervention``: ``{own, others}``).
        probe (RoutingProbe): Active probe of ``net``.
        centroids (tuple | None): ``(label names, N x K x D held-out centroids, N x K counts)``; None: not run.
        device (torch.device): Where ``net`` runs.
        log (callable): Progress lines.
        notes (list[str]): Why a figure is missing (appended to).

    Returns:
        dict: ``intervention_psnr_drop`` (None when not measured), ``intervention_images``,
        ``intervention_psnr_change`` ``{own, other}`` against the unaltered run.
    """
    if centroids is None:
        return {'intervention_psnr_drop': None}
    names, table, counts = centroids
    drops, own_change, other_change = [], [], []
    for i, (sample, record) in enumerate(zip(samples, records)):
        own_index = names.index(sample.label)
        usable = [k for k in range(len(names)) if counts[i, k] > 0]
        if own_index not in usable or len(usable) < 2:
            continue  # no held-out routing of its own label, or of no other label
        values = dict(zip(usable, intervene(net, sample, probe, table[i, usable], device)))
        own = values.pop(own_index)
        others = float(np.mean(list(values.values())))
        record['intervention'] = {'own': own, 'others': others}
        drops.append(own - others)
        own_change.append(own - record['final_psnr_float'])
        other_change.append(others - record['final_psnr_float'])
        if (i + 1) % 20 == 0:
            log(f'  intervention {i + 1}/{len(samples)}')
    if not drops:
        notes.append('intervention_psnr_drop: no image has held-out centroids of its own label and of another')
        return {'intervention_psnr_drop': None}
    return {'intervention_psnr_drop': float(np.mean(drops)), 'intervention_images': len(drops),
            'intervention_psnr_change': {'own': float(np.mean(own_change)), 'other': float(np.mean(other_change))}}
