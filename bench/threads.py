"""How many torch threads synth should use on a small CPU machine, measured.

For the shipped shapes-32 UNet: seconds per training step (batch 32, AdamW) and per forward pass
(batch 64, what sampling does at every step) with 1 and with all cores, first on an idle machine,
then with one core kept busy by another process (a shared machine, a second job). The default of
synth.threads (cores minus the 1-minute load) follows from these figures.

    python bench/threads.py [--repeats 5]

Last line, for scripts:
`idle: 1 thread <s> s/step, <n> threads <s> s/step; one core busy: 1 thread <s> s/step, <n> threads <s> s/step`
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path

MODEL = Path(__file__).resolve().parents[1] / "plugins" / "synth_shapes" / "models" / "shapes-32" / "unet"


def _spin(stop):
    while not stop.is_set():
        pass


def measure(torch, unet, opt, threads: int, repeats: int) -> tuple[float, float]:
    torch.set_num_threads(threads)
    x = torch.randn(64, 3, 32, 32)
    with torch.inference_mode():
        unet(x, 10)
        t0 = time.perf_counter()
        for _ in range(repeats):
            unet(x, 10)
    forward = (time.perf_counter() - t0) / repeats
    xb, t = torch.randn(32, 3, 32, 32), torch.randint(0, 1000, (32,))

    def step():
        loss = unet(xb, t).sample.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return forward, (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import torch
    from diffusers import UNet2DModel

    cores = len(os.sched_getaffinity(0))
    unet = UNet2DModel.from_pretrained(str(MODEL))
    opt = torch.optim.AdamW(unet.parameters(), 1e-4)
    print(f"machine: {platform.machine()}, {cores} cores available, torch {torch.__version__}")
    results = {}
    for load in ("idle", "one core busy"):
        stop = mp.Event()
        spinner = mp.Process(target=_spin, args=(stop,)) if load != "idle" else None
        if spinner:
            spinner.start()
            time.sleep(0.5)
        try:
            for n in sorted({1, cores}):
                fwd, train = measure(torch, unet, opt, n, args.repeats)
                results[(load, n)] = train
                print(f"{load:>14}, {n} thread(s): forward (batch 64) {fwd:.3f} s, training step (batch 32) {train:.3f} s")
        finally:
            if spinner:
                stop.set()
                spinner.join()
    print(
        f"idle: 1 thread {results[('idle', 1)]:.3f} s/step, {cores} threads {results[('idle', cores)]:.3f} s/step; "
        f"one core busy: 1 thread {results[('one core busy', 1)]:.3f} s/step, {cores} threads {results[('one core busy', cores)]:.3f} s/step"
    )


if __name__ == "__main__":
    main()
