"""Stages and generators declare what a worker holding them needs (CPUs, GPUs, memory); the
manifest adds up its pipeline's; the Ray executor places actors by it unless [run.ray] says
otherwise."""

import pytest

from synth.protocols import Resources

SHAPES = """
[dataset]
name = "r"
output = "out"
num_samples = 4

[generator]
name = "diffusers"
model = "builtin:shapes-32"
{device}
"""
SAM_ON = '[[stage]]\nname = "generate"\n[[stage]]\nname = "sam"\nbackend = "transformers"\nmodel = "facebook/sam-vit-base"\ndevice = "{device}"\n'


def _manifest(tmp_path, text):
    from synth.manifest import load_manifest

    path = tmp_path / "m.toml"
    path.write_text(text)
    return load_manifest(path)


def test_a_pipeline_needs_the_most_cpus_and_gpus_of_its_steps_and_the_sum_of_their_memory():
    parts = [Resources(cpus=2, memory_gb=3), Resources(gpus=0.5, memory_gb=1.5), Resources(cpus=1, gpus=1)]
    assert Resources.of_pipeline(parts) == Resources(cpus=2, gpus=1, memory_gb=4.5)
    assert Resources.of_pipeline([Resources(), Resources()]) == Resources()  # nothing said stays unsaid


def test_the_generator_and_stages_declare_a_gpu_unless_told_to_run_on_the_cpu(tmp_path):
    assert _manifest(tmp_path, SHAPES.format(device="")).resources().gpus == 1.0  # auto: CUDA where present
    on_cpu = _manifest(tmp_path, SHAPES.format(device='device = "cpu"'))
    assert on_cpu.resources() == Resources(gpus=0.0)
    with_sam = _manifest(tmp_path, SHAPES.format(device='device = "cpu"') + SAM_ON.format(device="auto"))
    assert with_sam.resources().gpus == 1.0  # one step on the GPU: the worker holds one
    assert _manifest(tmp_path, SHAPES.format(device='device = "cpu"') + SAM_ON.format(device="cpu")).resources().gpus == 0.0


def test_ray_places_actors_by_what_the_pipeline_declares():
    from synth.manifest import RunConfig
    from synth_ray.executor import RayConfig, RayExecutor

    def place(cfg, res, needs, tasks=100):
        return RayExecutor(RunConfig(), RayConfig(**cfg))._placement(res, tasks, needs)

    gpu_cluster = {"CPU": 16, "GPU": 4, "memory": 64 * 2**30}
    assert place({}, gpu_cluster, Resources()) == (4, 1.0)  # a step that does not say: one GPU each
    assert place({}, gpu_cluster, Resources(gpus=0.0)) == (16, 0.0)  # all on the CPU: no GPU held
    assert place({}, gpu_cluster, Resources(gpus=0.5)) == (8, 0.5)
    assert place({}, gpu_cluster, Resources(gpus=0.0, cpus=4)) == (4, 0.0)
    assert place({}, gpu_cluster, Resources(gpus=0.0, memory_gb=20)) == (3, 0.0)  # 64 GiB hold three
    assert place({"gpus_per_worker": 1, "cpus_per_worker": 2}, gpu_cluster, Resources(gpus=0.0, cpus=8)) == (4, 1.0)  # [run.ray] wins
    assert place({}, {"CPU": 16}, Resources(gpus=1.0)) == (16, 0.0)  # no GPUs in the cluster: the model falls back to the CPU
    with pytest.raises(Exception, match="has 0 GPUs"):
        place({"gpus_per_worker": 1}, {"CPU": 16}, Resources())
