"""G^-1 for diffusion models: from a clean image (model space) back to the initial latent that
the deterministic sampler (DDIM, eta 0) decodes to it, along the sampler's own timesteps.

- "ddim": plain DDIM inversion. Each step from t to the noisier t' reuses the noise predicted at
  the *current* point, eps(x_t, t), where the sampler's step back from t' will use eps(x_t', t');
  the mismatch accumulates, worst at few steps.
- "fixed_point": the same steps, each solved: x_t' must satisfy
  x_t' = sqrt(a') x0(x_t, eps(x_t', t')) + sqrt(1 - a') eps(x_t', t'), an implicit equation in
  x_t'. Start from the DDIM guess and iterate, re-evaluating the UNet at the current estimate of
  x_t' (as ReNoise, AIDI and fixed-point inversion do), averaging the last iterates' noise
  predictions (ReNoise's averaging) for stability. ``iterations`` extra UNet calls per step.
Both return x at the last timestep, in the variance-preserving form the UNet was trained in:
the initial latent itself, for every deterministic sampler. (A sampler in sigma form, Euler's,
starts from z * init_noise_sigma = z * sqrt(sigma_max^2 + 1), which is exactly this x written
in its form; dividing by init_noise_sigma made Euler's inversions 14.6x too small for SD.)
"""

from __future__ import annotations

from typing import Sequence

from .features import split_prediction

METHODS = ("ddim", "fixed_point")


def _eps_at(unet, x, t: int, prediction_type: str, a, unet_kwargs, run_dtype):
    import torch

    tt = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
    out = unet(x.to(run_dtype), tt, **(unet_kwargs or {})).sample.float()
    eps, _ = split_prediction(out, x.float(), a, prediction_type)
    return eps


def invert(unet, alphas_cumprod, x0, grid: Sequence[int], prediction_type: str, method: str = "ddim", iterations: int = 2, unet_kwargs=None, a_start: float = 1.0, dtype=None):
    """Walk clean ``x0`` up ``grid`` (the sampler's timesteps, ascending) and return the point at
    the top. ``a_start``: the cumulative alpha the sampler's last step lands on (the scheduler's
    final_alpha_cumprod: 1 for DDIM with set_alpha_to_one). ``dtype``: what the UNet runs in."""
    import torch

    if method not in METHODS:
        raise ValueError(f"unknown inversion method {method!r} (one of {', '.join(METHODS)})")
    run_dtype = dtype or x0.dtype
    x = x0.float()
    a = torch.tensor(float(a_start), device=x.device)
    for t_next in grid:
        a_next = alphas_cumprod[int(t_next)].to(x.device, torch.float32)
        # The sampler's step from t_next back to here uses eps(x_next, t_next). The DDIM guess
        # evaluates it where we are instead (x, at t_next's noise level).
        eps = _eps_at(unet, x, t_next, prediction_type, a_next, unet_kwargs, run_dtype)
        x_next = _step(x, a, a_next, eps)
        if method == "fixed_point":
            kept = []
            for _ in range(iterations):
                kept.append(_eps_at(unet, x_next, t_next, prediction_type, a_next, unet_kwargs, run_dtype))
                eps = torch.stack(kept[-2:]).mean(0)  # ReNoise: average the latest predictions
                x_next = _step(x, a, a_next, eps)
        x, a = x_next, a_next
    return x


def _step(x, a, a_next, eps):
    """DDIM's deterministic move from cumulative alpha a to a_next with noise prediction eps."""
    x0_pred = (x - (1 - a).sqrt() * eps) / a.sqrt()
    return a_next.sqrt() * x0_pred + (1 - a_next).sqrt() * eps


def evaluations(steps: int, method: str, iterations: int) -> int:
    """UNet calls an inversion costs: equal-evaluation comparisons use this."""
    return steps * (1 + (iterations if method == "fixed_point" else 0))
