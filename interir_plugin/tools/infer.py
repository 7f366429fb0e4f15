"""Restore a folder (or one file) of images with a shipped model or an option file's network: any size,
grey/RGB/RGBA, 8/16-bit.

Without an option file the shipped InterIR-S runs (:mod:`interir_plugin.weights`: its SHA-256 checked, loaded with
``weights_only=True``, tiled as its manifest entry says). Images go through :meth:`UnfoldingRestorationModel.restore`,
so padding to the network's size multiple, tiling (``--tile``, else the option file's ``val.tile`` or the shipped
model's ``tile``) and self-ensemble are the model class's. The image-mode rules are those of
:mod:`interir_plugin.tools.imageio`. Outputs keep the input file names; with ``maps`` the physical head's maps and
decisions are written beside each (:mod:`interir_plugin.tools.maps`). Inputs are never overwritten: a run whose
output folder is the input folder, or any of whose targets is an input file or another target, is refused before
anything is computed.
"""
import os

import numpy as np
import torch
from tqdm import tqdm

from interir_plugin.tools.imageio import is_image_file, read_image, write_image
from interir_plugin.tools.loading import build_restorer, input_channels, model_options, resolve_device
from interir_plugin.tools.maps import check_has_maps, map_targets, restore_with_maps, write_maps
from interir_plugin.weights import DEFAULT_MODEL, PREFIX


def collect_inputs(input_path):
    """Image files to process: ``input_path`` itself, or the images directly inside that folder (sorted).

    Args:
        input_path (str): An image file or a folder (not searched recursively).

    Returns:
        list[str]: Image paths.
    """
    if os.path.isfile(input_path):
        return [input_path]
    if not os.path.isdir(input_path):
        raise FileNotFoundError(f'--input {input_path}: no such file or folder')
    files = sorted(os.path.join(input_path, n) for n in os.listdir(input_path)
                   if is_image_file(n) and os.path.isfile(os.path.join(input_path, n)))
    if not files:
        raise ValueError(f'--input {input_path}: the folder holds no image files (extensions: png, jpg, tif, ...)')
    return files


def _refuse_input_target(dst, inputs, input_real):
    """Raise ``ValueError`` if writing ``dst`` would overwrite one of ``inputs``."""
    if os.path.realpath(dst) in input_real or (os.path.exists(dst) and any(os.path.samefile(dst, p) for p in inputs)):
        raise ValueError(f'target {dst} is an input file; refusing to overwrite it. Choose another output folder.')


def plan_outputs(inputs, output_dir, maps=False):
    """Target path of every input (``output_dir/<input name>``), refusing any plan that would overwrite an input.

    Args:
        inputs (list[str]): Input image paths.
        output_dir (str): Output folder (may not exist yet).
        maps (bool): Also check the map files written beside each target (:func:`~interir_plugin.tools.maps.
            map_targets`): none may be an input or another target. Default: False.

    Returns:
        list[tuple[str, str]]: ``(input, target)`` pairs.
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f'--output {output_dir} exists and is not a folder')
    out_real = os.path.realpath(output_dir)
    input_dirs = {os.path.realpath(os.path.dirname(os.path.abspath(p))) for p in inputs}
    if out_real in input_dirs:
        raise ValueError(f'--output {output_dir} is the input folder; refusing to overwrite the inputs. '
                         'Choose another output folder.')
    input_real = {os.path.realpath(p) for p in inputs}
    pairs, owner = [], {}
    for src in inputs:
        dst = os.path.join(output_dir, os.path.basename(src))
        for target in [dst, *(map_targets(dst).values() if maps else ())]:
            _refuse_input_target(target, inputs, input_real)
            if target in owner:
                raise ValueError(f'{owner[target]} and {src} would both write {target}; restore them in separate '
                                 'runs (or rename one)')
            owner[target] = src
        pairs.append((src, dst))
    return pairs


def restore_image(model, image, channels):
    """Run the model on one :class:`LoadedImage`; return the ``C x H x W`` float32 output in [0, 1].

    Args:
        model (UnfoldingRestorationModel): Test-mode model.
        image (LoadedImage): Decoded image.
        channels (int): The network's input channels.

    Returns:
        ndarray: Output, clipped to [0, 1].
    """
    x = torch.from_numpy(image.network_input(channels))[None].to(model.device)
    net = getattr(model, 'net_g_ema', model.net_g)
    net.eval()
    with torch.no_grad():
        out = model.restore(x, net)
    return out[0].float().clamp_(0, 1).cpu().numpy().astype(np.float32)


def infer(option_path, input_path, output_dir, tile=None, tile_overlap=None, self_ensemble=None, device='auto',
          progress=True, maps=False, log=print):
    """Restore every input image and write it, in its own mode and bit depth, to ``output_dir``.

    Args:
        option_path (str | None): Option file (``network_g``, ``path.pretrain_network_g``, ``val.tile*``), or
            ``pretrained:<name>``; None: the shipped :data:`~interir_plugin.weights.DEFAULT_MODEL`.
        input_path (str): Image file or folder.
        output_dir (str): Output folder (created).
        tile (int, optional): Tile side for tiled inference (0: whole images); overrides ``val.tile``. Default: None.
        tile_overlap (int, optional): Tile overlap; overrides ``val.tile_overlap``. Default: None.
        self_ensemble (bool, optional): x8 self-ensemble; overrides ``val.self_ensemble``. Default: None.
        device (str): ``'auto'``, ``'cpu'`` or ``'cuda[:i]'``. Default: 'auto'.
        progress (bool): Show a progress bar on stderr. Default: True.
        maps (bool): Write the physical head's maps and decisions beside every output (InterIR). Default: False.
        log (callable): Receives the line that says which weights run. Default: print.

    Returns:
        dict: ``images`` (written files, in input order), ``maps`` (map files written) and ``weights`` (which
        weights ran, as logged).
    """
    spec = option_path or f'{PREFIX}{DEFAULT_MODEL}'
    opt, weights = model_options(spec)
    pairs = plan_outputs(collect_inputs(input_path), output_dir, maps)
    model = build_restorer(opt, resolve_device(device), spec, tile=tile, tile_overlap=tile_overlap,
                           self_ensemble=self_ensemble)
    if maps:
        check_has_maps(model.get_bare_model(model.net_g), spec)
    log(f'interir infer: weights {weights}')
    channels = input_channels(opt['network_g'])
    os.makedirs(output_dir, exist_ok=True)
    written, map_files = [], []
    for src, dst in tqdm(pairs, desc='interir infer', unit='img', disable=not progress):
        image = read_image(src)
        if maps:
            x = torch.from_numpy(image.network_input(channels))[None].to(model.device)
            output, planes, tiles = restore_with_maps(model, x)
            map_files += write_maps(dst, planes, tiles, {'input': src, 'weights': weights, 'tile': model.tile,
                                                         'tile_overlap': model.tile_overlap})
        else:
            output = restore_image(model, image, channels)
        write_image(dst, output, image)
        written.append(dst)
    return {'images': written, 'maps': map_files, 'weights': weights}
