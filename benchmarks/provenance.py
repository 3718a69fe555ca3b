"""Where a result came from: the source commit and the machine.

Every committed record (`benchmarks/results/`, `research/results/`) names the
commit of the code that made it and the machine it ran on. The scripts under
`benchmarks/`, `research/scripts/`, `examples/` and `tuning/` take both from
here, so that they mark an edited tree and name an accelerator the same way.
A helper of those scripts, not part of the `keras_fame` package; import it
with the checkout's root on `sys.path` (`from benchmarks.provenance import
source_commit`).
"""

import os
import platform
import subprocess
from pathlib import Path

# The folders whose edits change what a script computes. Results, docs and
# the README do not.
CODE_PATHS = (
    "keras_fame",
    "benchmarks",
    "research",
    "examples",
    "tuning",
    ":!benchmarks/results",
    ":!research/results",
    ":!research/REPORT.md",
)


def source_commit(root: str | os.PathLike, paths=CODE_PATHS) -> str:
    """The git commit checked out at `root`, with `"+dirty"` if code differs.

    Args:
        root: A folder inside the git checkout that runs.
        paths: Git pathspecs whose uncommitted changes (to tracked files)
            mark the commit `"+dirty"`.

    Returns:
        The 40-digit commit, `"<commit>+dirty"`, or `"unknown"` where `root`
        is not in a git checkout or git is not installed.
    """
    root = Path(root)

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", *paths)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def machine_description() -> str:
    """One line naming the CPU architecture, its cores and any accelerator.

    For example `"x86_64, 2 CPU cores, no GPU"` or
    `"x86_64, 16 CPU cores, 1 GPU"`; accelerators are those Keras sees
    (`keras.distribution.list_devices`).
    """
    import keras

    devices = [d.split(":")[0].lower() for d in keras.distribution.list_devices()]
    accelerators = [d for d in devices if d != "cpu"]
    if accelerators:
        counts = {kind: accelerators.count(kind) for kind in sorted(set(accelerators))}
        found = ", ".join(
            f"{n} {kind.upper()}" + ("s" if n > 1 else "") for kind, n in counts.items()
        )
    else:
        found = "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {found}"
