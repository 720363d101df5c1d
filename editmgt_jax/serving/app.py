"""The Gradio Blocks page over the `Editor`, and its `/edit` endpoint.

Contract (other checks drive the page by these): the inputs' `elem_id`s are `image` (the
ImageEditor), `instruction`, `query`, `steps`, `guidance`, `reference_strength`, `hold_threshold`
(lambda), `seed`, `paste_back`; the button is `run`; the outputs are `before_after` (an
ImageSlider), `edited`, `heatmap` (over the source), `hold` (white = held from the source) and
`info` (JSON). `api_name="/edit"` takes the inputs in that order and returns
(before_after, edited, heatmap, hold, info).

`/edit` is a batched Gradio function (`batch=True`, one batch at a time): see
`editmgt_jax.serving.batching`. A request that cannot run does not fail its batch-mates: its
images are empty and `info["error"]` says why; the page then shows that message as an error (and
each of `info["warnings"]`, e.g. a resized mask, as a warning) through a follow-up step. The
server log gets one line for a request refused for its input ("rejected request: ...") and a
traceback only for an internal error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

import gradio as gr

from editmgt_jax.serving import batching, inputs, outputs
from editmgt_jax.serving.examples import Example

logger = logging.getLogger(__name__)

OUTPUT_NAMES = ("before_after", "edited", "heatmap", "hold", "info")
# Small images (the embedded model works at 64 px) fill their boxes, pixels kept sharp.
CSS = """
#edited img, #heatmap img, #hold img { width: 100%; height: 100%; object-fit: contain; }
#edited img, #heatmap img, #hold img, #before_after img { image-rendering: pixelated; }
#info { font-size: 0.85em; }
"""


@dataclasses.dataclass
class Settings:
    """How the page serves (see `build`)."""

    batch_size: int = 4  # requests per sampler call; every call is padded to it
    output_dir: str = ""  # where edits are written; inside `upload_dir` so Gradio serves it as is
    upload_dir: str = ""  # Gradio's upload folder: the only place request files are read from
    limits: inputs.Limits = dataclasses.field(default_factory=inputs.Limits)
    examples: Sequence[Example] = ()
    title: str = "EditMGT editor"
    description: str = ""
    keep_outputs_s: int = 3600  # Gradio deletes its files (uploads, outputs) after this long


class EditHandler:
    """The batched `/edit` function: columns of raw values in, columns of outputs out."""

    def __init__(self, editor, settings: Settings):
        self.editor = editor
        self.settings = settings

    def edit_one(self, edit: inputs.Edit, ran: batching.Ran) -> tuple:
        if ran.error is not None:
            return (None, None, None, None, outputs.error_info(ran.error, edit))
        try:
            files = outputs.write_images(ran, self.settings.output_dir)
        except OSError as e:
            logger.exception("Could not write an edit's images")
            return (
                None,
                None,
                None,
                None,
                outputs.error_info(f"Could not save the edit: {e}", edit),
            )
        return (
            (files.source, files.edited),
            files.edited,
            files.heatmap,
            files.hold,
            outputs.info(edit, ran),
        )

    def __call__(
        self,
        image: list[Any],
        instruction: list[Any],
        query: list[Any],
        steps: list[Any],
        guidance: list[Any],
        reference_strength: list[Any],
        hold_threshold: list[Any],
        seed: list[Any],
        paste_back: list[Any],
    ) -> list[list[Any]]:
        """One list per input (`inputs.INPUT_NAMES`); one list per output (`OUTPUT_NAMES`)."""
        columns = (
            image,
            instruction,
            query,
            steps,
            guidance,
            reference_strength,
            hold_threshold,
            seed,
            paste_back,
        )
        rows = list(zip(*columns, strict=True))
        answers: list[tuple | None] = [None] * len(rows)
        valid: list[tuple[int, inputs.Edit]] = []
        limits, upload_dir = self.settings.limits, self.settings.upload_dir
        for i, row in enumerate(rows):
            try:
                valid.append((i, inputs.parse(self.editor, row, upload_dir, limits)))
            except inputs.InputError as e:  # the user's mistake: one line, no traceback
                logger.warning("rejected request: %s", e)
                answers[i] = (None, None, None, None, outputs.error_info(str(e)))
            except Exception as e:  # a surprise fails this request only, not its batch-mates
                logger.exception("Could not read a request")
                answers[i] = (None, None, None, None, outputs.error_info(f"Bad request: {e}"))
        ran = batching.run_all(self.editor, [edit for _, edit in valid], self.settings.batch_size)
        for (i, edit), outcome in zip(valid, ran, strict=True):
            answers[i] = self.edit_one(edit, outcome)
        return [list(column) for column in zip(*answers, strict=True)]


def report(info: dict | None) -> None:
    """Shows an edit's error and warnings in the page (the follow-up step of a click)."""
    if not isinstance(info, dict):
        return
    for warning in info.get("warnings") or []:
        gr.Warning(warning)
    if info.get("error"):
        # Already logged where it happened (a rejected request as one line, an internal error
        # with its traceback); Gradio's traceback of this raise would only point here.
        raise gr.Error(info["error"], print_exception=False)


def brush_radius(resolution: int) -> int:
    """Default brush radius in image pixels: 1/16 of the model's working resolution (Gradio's
    "auto" sizes it by the 800 px canvas, which covers a whole 64 px image)."""
    return max(2, int(resolution) // 16)


def _slider_max(default: float, usual: float) -> float:
    return max(usual, float(default))


def _output_image(label: str, elem_id: str) -> gr.Image:
    """A read-only result image, sent to the page as PNG (lossless: webp would change the pixels
    the guarantee keeps)."""
    return gr.Image(
        label=label,
        elem_id=elem_id,
        type="filepath",
        format="png",
        interactive=False,
        height=240,
    )


def build(editor, settings: Settings) -> gr.Blocks:
    """The page (not launched; `editmgt_jax.serving.server.start` launches it)."""
    if not settings.output_dir or not settings.upload_dir:
        raise ValueError("Settings need output_dir and upload_dir")
    os.makedirs(settings.output_dir, exist_ok=True)
    pipeline = editor.pipeline
    handler = EditHandler(editor, settings)
    keep = settings.keep_outputs_s
    with gr.Blocks(
        title=settings.title,
        analytics_enabled=False,
        delete_cache=(keep, keep) if keep > 0 else None,
    ) as blocks:
        gr.Markdown(f"## {settings.title}\n{settings.description}")
        with gr.Row():
            with gr.Column():
                image = gr.ImageEditor(
                    label="Image: paint where the edit may happen (no stroke = the whole image)",
                    elem_id="image",
                    sources=("upload", "clipboard"),
                    brush=gr.Brush(
                        default_size=brush_radius(pipeline["resolution"]),
                        colors=["#ffffff"],
                        color_mode="fixed",
                    ),
                    layers=False,
                    transforms=("crop",),
                    format="png",
                    height=420,
                )
                instruction = gr.Textbox(
                    label="Instruction",
                    placeholder="make the red circle blue",
                    elem_id="instruction",
                )
                query = gr.Textbox(
                    label="Query phrase (optional: the words whose attention localizes the edit)",
                    elem_id="query",
                )
                with gr.Accordion("Settings", open=True):
                    steps = gr.Slider(
                        1,
                        settings.limits.max_steps,
                        value=int(pipeline["steps"]),
                        step=1,
                        label="Steps",
                        elem_id="steps",
                    )
                    guidance = gr.Slider(
                        0,
                        _slider_max(pipeline["guidance"], 10),
                        value=float(pipeline["guidance"]),
                        step=0.1,
                        label="Guidance (CFG; 1 = off)",
                        elem_id="guidance",
                    )
                    reference_strength = gr.Slider(
                        0.05,
                        _slider_max(pipeline["reference_strength"], 3),
                        value=float(pipeline["reference_strength"]),
                        step=0.05,
                        label="Reference strength (attention to the source)",
                        elem_id="reference_strength",
                    )
                    hold_threshold = gr.Slider(
                        0,
                        1,
                        value=float(pipeline["hold_threshold"]),
                        step=0.01,
                        label="λ: region-hold threshold (0 = off)",
                        elem_id="hold_threshold",
                    )
                    seed = gr.Number(
                        value=0,
                        precision=0,
                        minimum=0,
                        maximum=inputs.MAX_SEED,
                        label="Seed",
                        elem_id="seed",
                    )
                    paste_back = gr.Checkbox(
                        value=bool(pipeline["paste_back"]),
                        label="Paste back: keep the original pixels outside the mask and on held tokens",
                        elem_id="paste_back",
                    )
                run = gr.Button("Edit", variant="primary", elem_id="run")
            with gr.Column():
                before_after = gr.ImageSlider(
                    label="Before / after",
                    elem_id="before_after",
                    type="filepath",
                    format="png",
                    interactive=False,
                )
                with gr.Row():
                    edited = _output_image("Edited", "edited")
                    heatmap = _output_image("Heatmap (consolidated attention)", "heatmap")
                    hold = _output_image("Hold mask (white = kept from the source)", "hold")
                info = gr.JSON(label="Info", elem_id="info", open=True)
        if settings.examples:
            gr.Examples(
                examples=[[e.image, e.instruction] for e in settings.examples],
                inputs=[image, instruction],
                cache_examples=False,
            )
        request_inputs = [
            image,
            instruction,
            query,
            steps,
            guidance,
            reference_strength,
            hold_threshold,
            seed,
            paste_back,
        ]
        run.click(
            handler,
            inputs=request_inputs,
            outputs=[before_after, edited, heatmap, hold, info],
            api_name="edit",
            batch=True,
            max_batch_size=settings.batch_size,
            preprocess=False,  # files are opened by inputs.parse, per request
            concurrency_limit=1,  # one sampler call at a time; the queue batches the rest
        ).then(report, inputs=[info], outputs=None, api_visibility="private", queue=True)
    return blocks
