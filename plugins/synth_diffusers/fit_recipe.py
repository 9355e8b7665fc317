"""The parts of `synth fit`'s recipe that decide how fast it converges, as pure functions, each
checked against its formula in tests/test_fit_recipe.py.

- Loss weighting (Min-SNR-gamma, Hang et al. ICCV 2023): timesteps are tasks whose gradients
  conflict; weight each sample's loss by min(SNR(t), gamma) / SNR(t) for epsilon-prediction and
  min(SNR(t), gamma) / (SNR(t) + 1) for v-prediction, so the nearly-clean timesteps (huge SNR)
  stop dominating. gamma = 5 in the paper.
- Timestep sampling: "uniform" over the training schedule, or "logsnr" (Hang et al. 2024,
  Karras et al. 2022): draw log-SNR from a normal (mean, std) and take the discrete timestep it
  falls on, concentrating training where the image is half noise, where it helps most.
- EMA warm-up: decay min(d, (1 + step) / (10 + step)), so early averages are not dominated by the
  random initial weights.
"""

from __future__ import annotations

import numpy as np

WEIGHTINGS = ("uniform", "min_snr")
SAMPLINGS = ("uniform", "logsnr")


def snr(alphas_cumprod: np.ndarray) -> np.ndarray:
    """SNR(t) = alpha_bar_t / (1 - alpha_bar_t) for every training timestep."""
    a = np.asarray(alphas_cumprod, np.float64)
    return a / np.maximum(1.0 - a, 1e-20)


def loss_weights(snr_t: np.ndarray, weighting: str, gamma: float, prediction_type: str) -> np.ndarray:
    """Per-sample loss weights for timesteps whose SNR is ``snr_t``."""
    s = np.asarray(snr_t, np.float64)
    if weighting == "uniform":
        return np.ones_like(s)
    if weighting != "min_snr":
        raise ValueError(f"unknown loss weighting {weighting!r}")
    clipped = np.minimum(s, gamma)
    if prediction_type == "epsilon":
        return clipped / s
    if prediction_type == "v_prediction":
        return clipped / (s + 1.0)
    raise ValueError(f"min_snr weighting is defined here for epsilon and v_prediction, not {prediction_type!r}")


def timestep_probs(alphas_cumprod: np.ndarray, sampling: str, mean: float = 0.0, std: float = 2.0) -> np.ndarray:
    """Probability of each training timestep being drawn.

    "logsnr": log-SNR ~ N(mean, std), mapped to timesteps: each timestep gets the normal's mass
    over its own interval of log-SNR (between the midpoints to its neighbours), so the draw is
    exactly that normal, discretised."""
    n = len(alphas_cumprod)
    if sampling == "uniform":
        return np.full(n, 1.0 / n)
    if sampling != "logsnr":
        raise ValueError(f"unknown timestep sampling {sampling!r}")
    from math import erf, sqrt

    lam = np.log(snr(alphas_cumprod))  # decreasing in t
    edges = np.concatenate([[np.inf], (lam[:-1] + lam[1:]) / 2, [-np.inf]])
    cdf = np.vectorize(lambda x: 0.5 * (1 + erf((x - mean) / (std * sqrt(2)))) if np.isfinite(x) else (1.0 if x > 0 else 0.0))
    mass = cdf(edges[:-1]) - cdf(edges[1:])
    mass = np.maximum(mass, 0.0)
    return mass / mass.sum()


def ema_decay(step: int, decay: float, warmup: bool) -> float:
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


def loss_trend(losses, window: int = 500, min_gain: float = 0.01) -> dict | None:
    """Whether training still pays: the mean loss of the last ``window`` steps against the window
    before. A relative fall under ``min_gain`` is a plateau of the loss, which is not one of the
    samples (see trend_line). None until two windows exist."""
    x = np.asarray(losses, np.float64)
    if len(x) < 2 * window:
        return None
    last, previous = float(x[-window:].mean()), float(x[-2 * window : -window].mean())
    change = (last - previous) / previous if previous > 0 else 0.0
    return {"window": window, "last": round(last, 6), "previous": round(previous, 6), "relative_change": round(change, 4), "plateau": bool(change > -min_gain)}


def trend_line(trend: dict | None) -> str:
    if trend is None:
        return "loss trend: too few steps to tell"
    pct = -100 * trend["relative_change"]
    if trend["plateau"]:
        # Not "stop": a diffusion loss flattens long before its samples stop improving (shapes-32's
        # second stage: loss flat from step 1,000, shape fidelity 0.79 -> 0.86 over 17,000 steps).
        return (f"loss has plateaued ({trend['last']:.4f} over the last {trend['window']} steps vs {trend['previous']:.4f} before, "
                f"{pct:+.1f}%); a diffusion loss flattens long before the samples stop improving, so judge by the sample grids "
                "(progress/), or set [fit].watch to measure them")
    return f"loss still falling ({pct:.1f}% over the last {trend['window']} steps): more steps should help"
