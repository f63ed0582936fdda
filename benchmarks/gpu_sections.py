"""The sections of benchmarks/gpu_check.py. Each takes a `Plan` (sizes for a GPU, or tiny ones for the CPU
dry run) and returns a dict with `ok` (True / False / None = not applicable here) and its measurements."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import torch

from clipforge.models import CLIP, get_config

REPO = Path(__file__).resolve().parents[1]

# Tolerances of a training step against CPU fp32 (same weights, same batch): loss relative error, gradient
# relative L2 error over all parameters, gradient cosine similarity.
TOLERANCES = {
    "fp32": {"loss_rel": 1e-4, "grad_rel_l2": 1e-3, "grad_cosine": 0.99999},
    "bf16": {"loss_rel": 3e-2, "grad_rel_l2": 0.1, "grad_cosine": 0.99},
    "fp16": {"loss_rel": 1e-2, "grad_rel_l2": 0.03, "grad_cosine": 0.999},
}

# Dense bf16 tensor-core peak (no sparsity), by substring of the device name, in FLOP/s.
PEAK_BF16_FLOPS = {
    "H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
    "A10G": 70e12, "A10": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12, "T4": 65e12,
}  # fmt: skip


@dataclass(frozen=True)
class Plan:
    device: str  # "cuda" or "cpu" (dry run)
    precisions: tuple[str, ...]
    parity_model: str
    parity_batch: int
    throughput_models: tuple[str, ...]
    throughput_batch: int
    warmup_steps: int
    timed_steps: int
    rounds: int
    compile_rows: bool
    resume_model: str
    backend: str  # process-group backend of the 1-process check

    @classmethod
    def gpu(cls) -> Plan:
        return cls("cuda", ("fp32", "bf16", "fp16"), "ViT-B-32", 32, ("ViT-B-32", "ViT-B-16"), 256, 3, 10, 3,
                   True, "tiny-vit", "nccl")  # fmt: skip

    @classmethod
    def cpu_dry_run(cls) -> Plan:
        return cls("cpu", ("fp32", "bf16", "fp16"), "tiny-vit", 8, ("tiny-vit",), 4, 1, 2, 1, False, "tiny-vit",
                   "gloo")  # fmt: skip


def random_tokens(batch: int, context_length: int, seed: int = 0) -> torch.Tensor:
    """(B, L) token ids with the end-of-text id (the largest) at varied positions, zero padding after it."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 49000, (batch, context_length), generator=generator)
    lengths = torch.randint(5, min(30, context_length), (batch,), generator=generator)
    positions = torch.arange(context_length)
    tokens[positions > lengths[:, None]] = 0
    tokens[torch.arange(batch), lengths] = 49407
    return tokens


def random_batch(config, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    size = config.vision.image_size
    generator = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randn(batch, 3, size, size, generator=generator),
        "text": random_tokens(batch, config.text.context_length, seed),
        "index": torch.arange(batch),
    }


# ---- CUDA tests ----------------------------------------------------------------------------------------------
CUDA_TESTS = ["tests/test_train_gpu.py", "tests/test_train_precision.py::test_fit_on_gpu"]


def cuda_tests(plan: Plan, timeout_s: float) -> dict:
    """The test files whose tests need CUDA (they skip elsewhere); on a GPU none may skip."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *CUDA_TESTS]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", done.stdout)}
    row = {"command": " ".join(command[2:]), "returncode": done.returncode, **counts}
    if plan.device == "cuda":
        row["ok"] = done.returncode == 0 and counts.get("skipped", 0) == 0 and counts.get("passed", 0) > 0
    else:  # dry run: everything skips for want of CUDA, nothing errors
        row["ok"] = done.returncode == 0 and counts.get("skipped", 0) > 0 and not counts.get("failed")
    if not row["ok"]:
        row["output_tail"] = done.stdout[-3000:] + done.stderr[-2000:]
    return row


# ---- precision parity ----------------------------------------------------------------------------------------
def _step_gradients(
    model, batch, device, precision: str, objective_name: str
) -> tuple[float, torch.Tensor, dict]:
    """Loss and the flattened gradient of one training step, as the trainer computes them. fp16: as the
    GradScaler does over steps, a step whose scaled gradients overflow is redone at half the scale."""
    from clipforge.device import autocast_dtype
    from clipforge.train.objectives import ContrastiveObjective
    from clipforge.train.sigmoid import SigmoidObjective
    from clipforge.train.step import accumulate_gradients

    model = copy.deepcopy(model).to(device).train()
    objective = ContrastiveObjective(model) if objective_name == "softmax" else SigmoidObjective(model)
    batch = {k: v.to(device) for k, v in batch.items()}
    dtype = autocast_dtype(precision)
    kwargs = {"autocast": lambda: torch.autocast(device.type, dtype=dtype)} if dtype else {}
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.0)
    info = {"fp16_scale": None, "fp16_attempts": None}
    for attempt in range(1, 25):
        optimizer.zero_grad(set_to_none=True)
        backward = (lambda loss: scaler.scale(loss).backward()) if scaler else torch.Tensor.backward
        loss = accumulate_gradients(objective, batch, 1, backward=backward, **kwargs)["loss"]
        if scaler is None:
            break
        info = {"fp16_scale": scaler.get_scale(), "fp16_attempts": attempt}
        scaler.unscale_(optimizer)
        found_inf = sum(
            float(v) for v in scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"].values()
        )
        scaler.step(optimizer)  # skipped on overflow, like the trainer's step
        scaler.update()
        if not found_inf:
            break
    grads = torch.cat([p.grad.detach().float().reshape(-1).cpu() for p in params if p.grad is not None])
    return float(loss), grads, info


def precision_parity(plan: Plan) -> dict:
    config = get_config(plan.parity_model)
    torch.manual_seed(0)
    model = CLIP(config)
    batch = random_batch(config, plan.parity_batch)
    device = torch.device(plan.device)
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    rows = []
    try:
        for objective_name in ("softmax", "sigmoid"):
            cpu = torch.device("cpu")
            reference_loss, reference, _ = _step_gradients(model, batch, cpu, "fp32", objective_name)
            for precision in plan.precisions:
                loss, grads, info = _step_gradients(model, batch, device, precision, objective_name)
                row = {"objective": objective_name, "precision": precision, "loss": loss,
                       "reference_loss": reference_loss,
                       "loss_rel": abs(loss - reference_loss) / abs(reference_loss),
                       "grad_rel_l2": float((grads - reference).norm() / reference.norm()),
                       "grad_cosine": float(torch.nn.functional.cosine_similarity(grads, reference, dim=0)), **info}  # fmt: skip
                limits = TOLERANCES[precision]
                row["ok"] = (row["loss_rel"] <= limits["loss_rel"] and row["grad_rel_l2"] <= limits["grad_rel_l2"]
                             and row["grad_cosine"] >= limits["grad_cosine"])  # fmt: skip
                rows.append(row)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = allow_tf32
    return {"model": plan.parity_model, "batch": plan.parity_batch, "tolerances": TOLERANCES, "rows": rows,
            "ok": all(r["ok"] for r in rows)}  # fmt: skip


# ---- SIGKILL + resume ----------------------------------------------------------------------------------------
def resume_overrides(plan: Plan, output_dir: Path) -> list[str]:
    return [
        f"model.name={plan.resume_model}",
        "model.context_length=16",
        "data.num_samples=160",
        "data.batch_size=16",
        "epochs=2",
        "optim.warmup_steps=2",
        "optim.lr=1e-3",
        "checkpoint.every_steps=3",
        "checkpoint.keep_last=10",
        "log.every_steps=2",
        "log.progress=false",
        "log.plot=false",
        "deterministic=true",
        f"device={plan.device}",
        f"precision={'bf16' if plan.device == 'cuda' else 'fp32'}",
        f"output_dir={output_dir}",
    ]  # fmt: skip  (10 steps per epoch, 20 in all; checkpoints at 3, 6, 9 (mid-epoch), 12, ...)


def train_worker(overrides: list[str], kill_at_step: int | None) -> None:
    """`python -m benchmarks.gpu_check --train-worker`: fit(), SIGKILLing itself right after the checkpoint
    of `kill_at_step` is written (a crash mid-epoch at a known point)."""
    from clipforge.overrides import load_config
    from clipforge.train import TrainConfig, fit

    def kill(event: str, info: dict) -> None:
        if event == "checkpoint" and info["step"] == kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    fit(load_config(TrainConfig, None, overrides), callbacks=(kill,) if kill_at_step else ())


def _start_worker(overrides: list[str], kill_at_step: int | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--train-worker", json.dumps(overrides)]
    if kill_at_step:
        command += ["--kill-at-step", str(kill_at_step)]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(process: subprocess.Popen, timeout_s: float) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return process.returncode, output


def sigkill_resume(plan: Plan, work: Path, timeout_s: float) -> dict:
    from clipforge.train.state import load_state

    reference, killed = work / "reference", work / "killed"
    started = time.monotonic()
    processes = {"reference": _start_worker(resume_overrides(plan, reference)),
                 "killed": _start_worker(resume_overrides(plan, killed), kill_at_step=9)}  # fmt: skip
    runs = {name: _finish(process, timeout_s / 2) for name, process in processes.items()}  # side by side
    saved = sorted((killed / "checkpoints").glob("step_*.pt"))
    state = load_state(saved[-1]) if saved else {}
    left = timeout_s - (time.monotonic() - started)
    runs["resumed"] = _finish(
        _start_worker([*resume_overrides(plan, killed), "checkpoint.resume=auto"]), left
    )
    row = {"returncodes": {name: code for name, (code, _) in runs.items()}, "killed_returncode": runs["killed"][0], "killed_at": saved[-1].name if saved else None,
           "killed_epoch_offset": state.get("epoch_offset"), "model": plan.resume_model}  # fmt: skip
    final, expected = (
        killed / "checkpoints" / "step_00000020.pt",
        reference / "checkpoints" / "step_00000020.pt",
    )
    if not (final.exists() and expected.exists()):
        row["ok"] = False
        row["output_tail"] = {name: output[-2000:] for name, (_, output) in runs.items()}
        return row
    a, b = load_state(final)["model"], load_state(expected)["model"]
    row["tensors_equal"] = sum(torch.equal(a[k], b[k]) for k in b)
    row["tensors"] = len(b)
    row["max_abs_diff"] = max(float((a[k].float() - b[k].float()).abs().max()) for k in b)
    row["ok"] = (row["killed_returncode"] == -signal.SIGKILL and row["tensors_equal"] == row["tensors"]
                 and bool(row["killed_epoch_offset"]))  # fmt: skip
    return row


# ---- one-process process group -------------------------------------------------------------------------------
def process_group_worker(backend: str, device_name: str, work: str) -> None:
    """`--group-worker`: the collectives the trainer uses, on a 1-process group, then fit() inside it."""
    import torch.distributed as dist

    from clipforge.overrides import load_config
    from clipforge.train import TrainConfig, fit

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getpid() % 1000))
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group(backend, rank=0, world_size=1)
    checks = {}
    value = torch.arange(4.0, device=device)
    dist.all_reduce(value)
    checks["all_reduce"] = torch.equal(value.cpu(), torch.arange(4.0))
    gathered = torch.empty(4, device=device)
    dist.all_gather_into_tensor(gathered, value)
    checks["all_gather"] = torch.equal(gathered.cpu(), torch.arange(4.0))
    shared = [{"order": [3, 1, 2]}]
    dist.broadcast_object_list(shared, src=0)
    checks["broadcast_object"] = shared == [{"order": [3, 1, 2]}]
    overrides = ["model.context_length=12", "data.num_samples=64", "data.batch_size=16", "max_steps=4",
                 "log.progress=false", "log.plot=false", f"device={device_name}", f"output_dir={work}"]  # fmt: skip
    results = fit(load_config(TrainConfig, None, overrides))
    checks["fit_steps"] = results["steps"] == 4 and results["final_loss"] is not None
    dist.destroy_process_group()
    print(json.dumps(checks))


def one_process_group(plan: Plan, work: Path, timeout_s: float) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.gpu_check",
        "--group-worker",
        plan.backend,
        plan.device,
        str(work),
    ]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    checks = json.loads(lines[-1]) if lines else {}
    row = {"backend": plan.backend, "returncode": done.returncode, **checks}
    row["ok"] = done.returncode == 0 and bool(checks) and all(checks.values())
    if not row["ok"]:
        row["output_tail"] = (done.stdout + done.stderr)[-3000:]
    return row


# ---- throughput and MFU --------------------------------------------------------------------------------------
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 20) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def spec_peak_flops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def clipforge_step(config, batch, device, dtype, compiled: bool):
    from clipforge.train.objectives import ContrastiveObjective
    from clipforge.train.optim import build_optimizer
    from clipforge.train.speed import compile_towers
    from clipforge.train.step import accumulate_gradients

    torch.manual_seed(0)
    model = CLIP(config).to(device).train()
    if compiled:
        compile_towers(model)
    objective = ContrastiveObjective(model)
    optimizer = build_optimizer(objective, 1e-5, 0.2, (0.9, 0.98), 1e-6)
    params = [p for p in objective.parameters() if p.requires_grad]
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else None
    kwargs = {"autocast": autocast} if autocast else {}

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        accumulate_gradients(objective, batch, 1, **kwargs)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return step


def open_clip_step(config, batch, device, dtype):
    import open_clip

    from benchmarks.weights import open_clip_cfg

    torch.manual_seed(0)
    model = open_clip.CLIP(**open_clip_cfg(config)).to(device).train()
    loss_fn = open_clip.loss.ClipLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2, fused=True)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            image_features, text_features, logit_scale = model(batch["images"], batch["text"])[:3]
            loss = loss_fn(image_features, text_features, logit_scale)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return step


def throughput(plan: Plan, deadline: float) -> dict:
    """Training samples/s and MFU, libraries interleaved round by round on the same batch and precision."""
    from clipforge.flops import model_gflops

    device = torch.device(plan.device)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    name, spec_peak = spec_peak_flops(device)
    local_peak = matmul_peak_flops(device, dtype or torch.float32, 8192 if device.type == "cuda" else 512)
    rows = []
    for model_name in plan.throughput_models:
        config = get_config(model_name)
        batch = {k: v.to(device) for k, v in random_batch(config, plan.throughput_batch).items()}
        image_gflops, text_gflops = model_gflops(config)
        train_flops = 3 * (image_gflops + text_gflops) * 1e9  # per sample: forward + backward (2x)
        libs = {"clipforge": clipforge_step(config, batch, device, dtype, compiled=False),
                "open_clip": open_clip_step(config, batch, device, dtype)}  # fmt: skip
        if plan.compile_rows and time.monotonic() < deadline - 150:
            libs["clipforge+compile"] = clipforge_step(config, batch, device, dtype, compiled=True)
        times = {lib: [] for lib in libs}
        for step in libs.values():
            for _ in range(plan.warmup_steps):
                step()
        for _ in range(plan.rounds):
            for lib, step in libs.items():
                _synchronize(device)
                start = time.perf_counter()
                for _ in range(plan.timed_steps):
                    step()
                _synchronize(device)
                times[lib].append((time.perf_counter() - start) / plan.timed_steps)
        for lib, samples in times.items():
            step_s = median(samples)
            achieved = train_flops * plan.throughput_batch / step_s
            rows.append({"model": model_name, "lib": lib, "batch": plan.throughput_batch,
                         "precision": "bf16" if dtype else "fp32", "step_s": step_s,
                         "samples_per_s": plan.throughput_batch / step_s,
                         "train_gflops_per_sample": train_flops / 1e9, "achieved_tflops": achieved / 1e12,
                         "mfu_spec": achieved / spec_peak if spec_peak else None,
                         "mfu_local_matmul": achieved / local_peak})  # fmt: skip
        del libs
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"device": name, "spec_peak_tflops": spec_peak / 1e12 if spec_peak else None,
            "local_matmul_peak_tflops": local_peak / 1e12, "rows": rows, "ok": bool(rows)}  # fmt: skip
