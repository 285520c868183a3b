"""What a published number depends on besides the ablation: the code and the numerics.

The sweep records both on its parent run when it starts (tags lth_ray.code.* and lth_ray.numerics.*);
publishing compares the code it runs with the code the sweep ran and refuses a tree that is dirty or
changed since (an editable install of a tree edited during the sweep trains half its trials with
other code), unless told to go on, and then says so in bold in run.md.

Bit-identity on the CPU needs the same code, the same torch build and kernels (the CPU capability
torch dispatches to: AVX2 and AVX-512 kernels round differently), the same threads per trial and
the same numerics environment; anything else gives results that agree only in distribution.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PREFIX_CODE = "lth_ray.code."
PREFIX_NUMERICS = "lth_ray.numerics."
# Environment variables that change which kernels run or how they reduce (threads, ISA, determinism).
NUMERICS_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_DYNAMIC",
    "KMP_DETERMINISTIC_REDUCTION",
    "ATEN_CPU_CAPABILITY",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_DEFAULT_FPMATH_MODE",
    "TORCH_MKLDNN_MATMUL_MIN_DIM",
    "CUBLAS_WORKSPACE_CONFIG",
    "NVIDIA_TF32_OVERRIDE",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
    "CUDA_LAUNCH_BLOCKING",
    "PYTHONHASHSEED",
)
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def package_root() -> Path:
    """The installed lth_ray package's folder (this file is lth_ray/report/provenance.py)."""
    return Path(__file__).resolve().parents[1]


def _version() -> str:
    try:
        return metadata.version("lth_ray")
    except metadata.PackageNotFoundError:
        return "unknown"


def source_digest(root: Path | None = None) -> str:
    """sha256 over the package's Python sources (path and content), the code that actually runs."""
    root = root or package_root()
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_state(root: Path | None = None) -> dict[str, str]:
    """The commit, whether the tree is dirty, how the package is installed, its source digest."""
    pkg = root or package_root()
    top = _git(pkg, "rev-parse", "--show-toplevel")
    state = {
        "digest": source_digest(pkg),
        "version": _version(),
        "install": "site-packages" if "site-packages" in pkg.parts else "source tree",
    }
    if top is None:
        return state | {"commit": "unknown", "dirty": "unknown"}
    status = _git(Path(top), "status", "--porcelain", "--untracked-files=normal") or ""
    return state | {
        "commit": _git(Path(top), "rev-parse", "HEAD") or "unknown",
        "dirty": "true" if status else "false",
    }


def numerics(threads: int | None = None) -> dict[str, str]:
    """What decides the floating-point results on this machine besides the code."""
    import torch

    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    blas = [
        ln.strip()
        for ln in torch.__config__.show().splitlines()
        if any(k in ln for k in ("BLAS_INFO", "LAPACK_INFO", "Intel(R)", "OpenMP", "oneDNN"))
    ]
    env = {k: os.environ[k] for k in NUMERICS_ENV if k in os.environ}
    out = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": model,
        "cpu_flags": " ".join(f for f in CPU_FLAGS if f in flags) or "unknown",
        "blas": "; ".join(blas)[:1000] or "unknown",
        "python": platform.python_version(),
        "env": json.dumps(env, sort_keys=True),
    }
    if threads is not None:
        out["threads_per_trial"] = str(threads)
    return out


def sweep_tags(threads: int) -> dict[str, str]:
    """Tags for a sweep's parent run: the code and numerics its trials start with."""
    tags = {PREFIX_CODE + k: v for k, v in code_state().items()}
    return tags | {PREFIX_NUMERICS + k: v for k, v in numerics(threads).items()}


def recorded(tags: dict[str, str], prefix: str) -> dict[str, str]:
    return {k[len(prefix) :]: v for k, v in tags.items() if k.startswith(prefix)}


def code_problems(sweep_code: dict[str, str], now: dict[str, str]) -> list[str]:
    """Why the code publishing now may not be the code the sweep ran (empty: it is)."""
    out = []
    if not sweep_code:
        out.append("the sweep recorded no code state (commit, source digest)")
    elif sweep_code.get("dirty") == "true":
        out.append(f"the sweep ran from a dirty tree (commit {sweep_code.get('commit')})")
    if now.get("dirty") == "true":
        out.append("the tree publishing now has uncommitted changes")
    if sweep_code and sweep_code.get("digest") != now.get("digest"):
        out.append(
            "the package's sources differ from those the sweep started with"
            f" (commit then {sweep_code.get('commit')}, now {now.get('commit')})"
        )
    return out
