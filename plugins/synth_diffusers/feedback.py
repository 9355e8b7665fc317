"""Feedback-guided sampling: a downstream model's uncertainty (or loss) on the predicted clean
image steers each sampling step toward what that model gets wrong, as classifier guidance steers
toward a class. The model is any registered classifier that gives gradients: an image classifier,
or a segmentation model (``per_pixel``; the mean entropy of its pixels, e.g. the downstream model
`synth optimise` saves as best-model/). For a latent model (Stable Diffusion) the estimate is
decoded by the VAE inside the gradient; the classifier sees it resized to its image size.

At step t the model's output gives the clean-image estimate x0; the objective's gradient there,
normalised per sample to unit RMS, moves x0 by ``weight`` (image units, pixels in [-1, 1]) and
the noise estimate with it, so the sampler's next step lands nearer images the
classifier finds hard. Guiding x0 rather than the noise keeps a weight's effect alike at every
noise level (classifier guidance's sqrt(1 - alpha_bar) scaling moves x0 by sqrt(1 - a)^2 / sqrt(a),
which is huge early on). Deterministic: no randomness is added, and a
sample's path still depends only on (seed, index). With weight 0 nothing runs: the samples are
those of no feedback, byte for byte.

Guidance can make images less real; put a realism filter after the generator for a floor.
"""

from __future__ import annotations

from synth import classifiers
from synth.errors import UsageError

from .config import FeedbackConfig


class Feedback:
    """Set up once with the generator; ``guide`` rewrites one step's model output."""

    def __init__(self, gen, config: FeedbackConfig):
        self.gen, self.config = gen, config
        self.clf = classifiers.get(gen.context, config.classifier)
        self.index = None
        if config.objective == "loss":
            if self.clf.per_pixel:
                raise UsageError("generator.feedback: objective = \"loss\" needs each sample's class; a segmentation model's needs masks the sampler does not have (use \"entropy\")")
            missing = [c for c in gen.context.classes if c not in self.clf.classes]
            if missing:
                raise UsageError(f"generator.feedback: objective = \"loss\" needs every class in the classifier's; it has no {missing[0]!r} ({', '.join(self.clf.classes)})")
            self.index = [self.clf.classes.index(c) for c in gen.context.classes]

    def active(self, step: int, steps: int) -> bool:
        return self.config.weight > 0 and step < self.config.until * steps

    def guide(self, out, xin, t, conditions: list[dict], prediction: str):
        torch = self.gen.torch
        alphas = self.gen.pipe.scheduler.alphas_cumprod
        a_bar = alphas[min(max(int(round(float(t))), 0), len(alphas) - 1)].to(out.device, torch.float32)
        a, s = a_bar.sqrt(), (1 - a_bar).sqrt()
        with torch.inference_mode(False), torch.enable_grad():
            xin_f, out_f = xin.detach().clone().float(), out.detach().clone().float()
            if prediction == "v_prediction":
                x0, eps = a * xin_f - s * out_f, s * xin_f + a * out_f
            else:
                x0, eps = (xin_f - s * out_f) / a, out_f
            x0 = x0.detach().requires_grad_(True)
            logits = self.clf.differentiable(self._classifier_input(x0)).float()
            logp = torch.log_softmax(logits, 1)
            if self.config.objective == "entropy":
                objective = -(logp.exp() * logp).sum(1)
                objective = objective.flatten(1).mean(1) if objective.dim() > 1 else objective  # a segmenter's: the mean over pixels
            else:
                if any(c.get("class") is None for c in conditions):
                    raise UsageError("generator.feedback: objective = \"loss\" needs each sample's class (a class-conditional model or templates)")
                target = torch.tensor([self.index[c["class"]] for c in conditions], device=logp.device)
                objective = torch.nn.functional.nll_loss(logp, target, reduction="none")
            (grad,) = torch.autograd.grad(objective.sum(), x0)
        rms = grad.pow(2).mean(dim=tuple(range(1, grad.dim())), keepdim=True).sqrt().clamp_min(1e-12)
        # x0 moves by weight * grad / rms; the noise estimate follows so that the step stays
        # consistent (x = a x0 + s eps holds).
        eps = eps - self.config.weight * a * (grad / rms) / s.clamp_min(1e-4)
        guided = (eps - s * xin_f) / a if prediction == "v_prediction" else eps
        return guided.to(out.dtype)

    def _classifier_input(self, x0):
        """The clean-image estimate as the classifier takes it: pixels in [0, 1] (a latent model's
        decoded by its VAE, so the gradient reaches the latent through it) at its image size."""
        pixels = self.gen.family.clean_pixels(x0)
        size = self.clf.image_size
        if size is not None and tuple(pixels.shape[-2:]) != tuple(size):
            pixels = self.gen.torch.nn.functional.interpolate(pixels, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
        return pixels
