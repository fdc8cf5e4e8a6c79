"""The guided ε̂ a latent pipeline's own loop makes, for `compare`'s loop (`ppddpm.core.loop`): the
denoiser, its conditioning and classifier-free guidance, for k stacked batches of model inputs."""
from __future__ import annotations

from typing import Optional

from ppddpm.errors import BadValue
from ppddpm.pipelines.latent.kinds import DEFAULT_GUIDANCE, call_arguments, kind_of


def denoiser(pipe, pipe_kwargs: Optional[dict] = None, batch_size: int = 1):
    """(model, fn, batch): `fn(x, t)` is the ε̂ the pipeline's loop would hand `scheduler.step` for the
    model inputs x = k stacked batches ([k·batch, C, h, w], already `scale_model_input`-ed): the
    conditioning of `pipe_kwargs` (prompt / embeddings, class labels) and classifier-free guidance
    ε̂_u + g (ε̂_c − ε̂_u) as the pipeline combines them. Pixel pipelines and LDM: `unet(x, t).sample`.
    `model` is the denoiser (its config gives the latent shape); `batch` the rows one run has."""
    kind = kind_of(pipe)
    if kind is None or kind.halves is None:
        return pipe.unet, (lambda x, t: pipe.unet(x, t).sample), batch_size
    kwargs = dict(pipe_kwargs or {})
    scale = float(kwargs.get("guidance_scale", DEFAULT_GUIDANCE[kind.name]))
    if kind.name == "dit":
        labels = call_arguments(pipe, batch_size, None, 1, kwargs)["class_labels"]
        return pipe.transformer, _dit_eps(pipe, list(labels), scale), len(labels)
    call = call_arguments(pipe, batch_size, None, 1, kwargs)
    embeds = call.get("prompt_embeds")
    if isinstance(call.get("prompt"), list) or (embeds is not None and embeds.shape[0] != 1):
        raise BadValue("compare on a StableDiffusionPipeline takes one prompt (a string, or prompt_embeds of batch 1); "
                       "batch_size sets how many samples share it")
    pos, neg = pipe.encode_prompt(call.get("prompt"), batch_size, scale > 1, call.get("negative_prompt"),
                                  prompt_embeds=call.get("prompt_embeds"),
                                  negative_prompt_embeds=call.get("negative_prompt_embeds"))
    return pipe.unet, _sd_eps(pipe, pos, neg, scale), batch_size


def _sd_eps(pipe, pos, neg, scale):
    """StableDiffusionPipeline's denoiser call and guidance (uncond rows first), for k stacked batches."""
    import paddle

    def fn(x, t):
        k = x.shape[0] // pos.shape[0]
        t = t.reshape([1])
        if scale <= 1:
            return pipe.unet(x, t, encoder_hidden_states=pos.tile([k, 1, 1])).sample
        embeds = paddle.concat([neg.tile([k, 1, 1]), pos.tile([k, 1, 1])])
        uncond, cond = pipe.unet(paddle.concat([x, x]), t, encoder_hidden_states=embeds).sample.chunk(2)
        return uncond + scale * (cond - uncond)
    return fn


def _dit_eps(pipe, labels, scale):
    """DiTPipeline's transformer call and guidance (cond rows first, the null class 1000, the first C
    output channels), for k stacked batches of len(labels)."""
    import paddle

    def fn(x, t):
        k, channels = x.shape[0] // len(labels), x.shape[1]
        classes = paddle.to_tensor(labels * k)
        if scale > 1:
            x, classes = paddle.concat([x, x]), paddle.concat([classes, paddle.to_tensor([1000] * len(labels) * k)])
        steps = (t if len(t.shape) else t[None]).expand([x.shape[0]])
        eps = pipe.transformer(x, timestep=steps, class_labels=classes).sample[:, :channels]
        if scale <= 1:
            return eps
        cond, uncond = paddle.chunk(eps, 2)
        return uncond + scale * (cond - uncond)
    return fn
