"""Where a peer runs: its isolated environment under the peers folder, or this interpreter.

A peer whose pins clash with celljepa's (CPA wants torch <= 2.0.1 and Python < 3.11; scGen an scvi-tools
from before 1.0) gets a virtual environment of its own, made by :func:`install_peer` (``celljepa peers
install NAME``) under :func:`peers_home`. celljepa never imports a peer: it writes the fold's data to a work
folder and runs the peer's runner script with the environment's interpreter (see ``_runners/_common.py``),
so any future peer with clashing dependencies plugs in the same way.

Nothing here runs at benchmark time but the peer's own interpreter; :func:`install_peer` is the only thing
that reaches the network (pip, from PyPI), and only when asked.
"""

from __future__ import annotations

import filecmp
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .._errors import InputError
from .._io import write_json_atomic
from .._logging import logger
from ._registry import PEERS, PeerSpec, peer_spec

__all__ = [
    "NoSpaceError",
    "PeerEnvironment",
    "RUNNERS",
    "install_peer",
    "locate_peer",
    "peer_status",
    "peers_home",
    "remove_peer",
]

RUNNERS = Path(__file__).resolve().parent / "_runners"
ENV_FILE = "environment.json"
_IMPORT_TIMEOUT_S = 300
_UNPACK_GB = 0.7  # pip unpacks the largest wheel (torch) in a temporary folder before installing it
_SHARE_MIN_BYTES = 1 << 16  # smaller files are not worth a link


class NoSpaceError(InputError):
    """The disk has no room for a peer's environment (raised before anything is installed)."""


def peers_home() -> Path:
    """The folder of the peers' environments.

    ``$CELLJEPA_PEERS_HOME``, else ``$XDG_CACHE_HOME/celljepa/peers`` (default ``~/.cache/celljepa/peers``).
    """
    if os.environ.get("CELLJEPA_PEERS_HOME"):
        return Path(os.environ["CELLJEPA_PEERS_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "celljepa" / "peers"


@dataclass(frozen=True)
class PeerEnvironment:
    """The interpreter a peer runs with, and how it was found (``"isolated"`` or ``"current"``)."""

    name: str
    python: str
    kind: str
    path: Path | None = None


def _env_dir(name: str) -> Path:
    return peers_home() / name


def _env_python(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def locate_peer(name: str) -> PeerEnvironment | None:
    """The environment ``name`` runs in, or None.

    Its isolated environment when installed, else this interpreter when the tool imports here (an extra
    installed beside celljepa).
    """
    spec = peer_spec(name)
    folder = _env_dir(spec.name)
    if (folder / ENV_FILE).is_file() and _env_python(folder).exists():
        return PeerEnvironment(spec.name, str(_env_python(folder)), "isolated", folder)
    if _python_fits(spec, sys.version_info[:2]) and importlib.util.find_spec(spec.module) is not None:
        return PeerEnvironment(spec.name, sys.executable, "current")
    return None


def _python_fits(spec: PeerSpec, version: tuple[int, int]) -> bool:
    return spec.python is None or version == tuple(int(v) for v in spec.python.split("."))


def _import_error(python: str, module: str) -> str | None:
    """None when ``module`` imports under ``python``, else the last line of the error."""
    try:
        done = subprocess.run(
            [python, "-c", f"import {module}"],
            capture_output=True,
            text=True,
            timeout=_IMPORT_TIMEOUT_S,
            env=_child_env(1),
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{type(err).__name__}: {err}"
    if done.returncode == 0:
        return None
    lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {done.returncode}"


def peer_status(name: str, *, check_import: bool = True) -> dict:
    """``{"name", "title", "available", "where", "python", "reason", "predicts"}`` of one peer.

    ``check_import`` imports the tool in its interpreter (a few seconds) so that a broken install is reported
    with its error rather than found at benchmark time.
    """
    spec = peer_spec(name)
    env = locate_peer(spec.name)
    out = {
        "name": spec.name,
        "title": spec.title,
        "predicts": spec.predicts,
        "available": False,
        "where": None,
        "python": None,
        "reason": None,
    }
    if env is None:
        extra = f" (needs Python {spec.python})" if spec.python else ""
        out["reason"] = (
            f"not installed: `celljepa peers install {spec.name}` makes its environment under {peers_home()}{extra}"
        )
        return out
    out.update(where=str(env.path) if env.path else "this Python environment", python=env.python)
    if check_import:
        err = _import_error(env.python, spec.module)
        if err is not None:
            out["reason"] = f"`import {spec.module}` fails in {out['where']}: {err}"
            return out
    out["available"] = True
    return out


def _find_python(version: str) -> str:
    """An interpreter of ``version`` (``"3.10"``): ``python3.10`` on PATH, then pyenv's versions."""
    pyenv = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates = [shutil.which(f"python{version}")] + sorted(
        glob.glob(f"{pyenv}/versions/{version}.*/bin/python"), reverse=True
    )
    for candidate in filter(None, candidates):  # a pyenv shim may exist without the version being active
        try:
            done = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip() == version:
            return candidate
    raise InputError(
        f"this peer needs Python {version} and none was found (python{version} on PATH or "
        f"{pyenv}/versions/{version}.*). Fix: install it, or pass --python /path/to/python{version}."
    )


def _child_env(threads: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONNOUSERSITE"] = "1"
    if threads is not None:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[key] = str(int(threads))
    return env


def _free_gb(folder: Path) -> float:
    """Free space, in GB, of the file system holding ``folder`` (its nearest existing parent)."""
    folder = Path(folder).resolve()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free / 1e9


def _check_space(spec: PeerSpec, home: Path, keep_free_gb: float) -> None:
    need = spec.disk_gb + _UNPACK_GB + keep_free_gb
    free = _free_gb(home)
    if free < need:
        keep = f", keeping {keep_free_gb:g} GB free" if keep_free_gb else ""
        raise NoSpaceError(
            f"peer {spec.name!r} needs about {spec.disk_gb + _UNPACK_GB:.1f} GB of disk to install{keep} and "
            f"{home} has {free:.1f} GB free; nothing was installed. Fix: free some space, or point "
            f"CELLJEPA_PEERS_HOME at a larger disk."
        )


def _site_packages(env: Path) -> list[Path]:
    return sorted(p for p in env.glob("lib*/python*/site-packages") if p.is_dir())


def _share_identical_files(env: Path, others: list[Path]) -> int:
    """Hard-link each file of ``env``'s site-packages to the identical file of another environment; bytes saved.

    Peers pin the same wheels (torch above all: 750 MB per environment), so identical files are linked instead
    of stored again. Only files of the same path under a site-packages of the same Python version are compared
    (size, then every byte); pip never writes into an installed file, it replaces or deletes it, so a shared file
    changes in no environment when another is upgraded or removed.
    """
    saved = 0
    own = {p.parent.name: p for p in _site_packages(env)}
    for other in others:
        for theirs in _site_packages(other):
            mine = own.get(theirs.parent.name)  # python3.11 with python3.11
            if mine is None or mine.resolve() == theirs.resolve():
                continue
            for root, _, files in os.walk(mine):
                for fname in files:
                    path = Path(root) / fname
                    twin = theirs / path.relative_to(mine)
                    try:
                        st, tw = path.lstat(), twin.lstat()
                    except OSError:
                        continue
                    if (
                        not path.is_file()
                        or path.is_symlink()
                        or not twin.is_file()
                        or twin.is_symlink()
                        or st.st_size < _SHARE_MIN_BYTES
                        or st.st_size != tw.st_size
                        or (st.st_ino == tw.st_ino and st.st_dev == tw.st_dev)
                        or not filecmp.cmp(path, twin, shallow=False)
                    ):
                        continue
                    link = path.with_name(f".{fname}~link")
                    try:
                        os.link(twin, link)
                        os.replace(link, path)
                    except OSError:  # another file system, or links not allowed: keep the copy
                        link.unlink(missing_ok=True)
                        continue
                    saved += st.st_size
    return saved


def _sharing_candidates(home: Path, exclude: Path) -> list[Path]:
    """Environments whose files a new one may share: the other peers' and this interpreter's."""
    found = (
        [p for p in sorted(home.iterdir()) if p.is_dir() and p != exclude and (p / ENV_FILE).is_file()]
        if home.is_dir()
        else []
    )
    return found + [Path(sys.prefix)]


def install_peer(
    name: str, *, python: str | None = None, force: bool = False, keep_free_gb: float = 0.0, echo=print
) -> Path:
    """Make the isolated environment of peer ``name`` under :func:`peers_home` (pip, from PyPI).

    The environment is built in a temporary folder and renamed into place when every step succeeded, so an
    interrupted install leaves no half-made environment; ``force`` replaces an existing one. Before anything is
    installed, the disk must have room for it (:attr:`PeerSpec.disk_gb`, plus ``keep_free_gb``), else
    :class:`NoSpaceError`. After each pip step, files identical to another peer's environment or to this
    interpreter's (the same torch wheel, say) are hard-linked rather than stored twice.

    Parameters
    ----------
    python
        The interpreter to make the environment with (default: the version the peer needs, found on PATH or
        in pyenv; this one when the peer has no such need).
    keep_free_gb
        Space to leave free on the disk besides the environment (for the work that follows it).
    echo
        Where progress lines go (``print``; ``None`` for silence).

    Examples
    --------
    >>> from celljepa.peers import install_peer
    >>> install_peer("gears")  # doctest: +SKIP
    peers: making gears's environment with ... in ~/.cache/celljepa/peers/gears
    """
    spec = peer_spec(name)
    target = _env_dir(spec.name)
    if (target / ENV_FILE).is_file() and not force:
        raise InputError(
            f"peer {spec.name!r} is installed at {target}. Fix: --force to make it again, or "
            f"`celljepa peers remove {spec.name}`."
        )
    base = python or (_find_python(spec.python) if spec.python else sys.executable)
    say = echo or (lambda *_: None)
    home = peers_home()
    _check_space(spec, home, keep_free_gb)
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f".{spec.name}~{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        say(f"peers: making {spec.name}'s environment with {base} in {target}")
        subprocess.run([base, "-m", "venv", str(tmp)], check=True)
        py = str(_env_python(tmp))
        pip = [py, "-m", "pip", "install", "-q", "--no-cache-dir"]  # no second copy of every wheel in pip's cache
        subprocess.run([*pip, "--upgrade", "pip"], check=True, env=_child_env(None))
        others, shared = _sharing_candidates(home, target), 0
        for args in spec.install:
            say(f"peers: pip install {' '.join(args)}")
            subprocess.run([*pip, *args], check=True, env=_child_env(None))
            shared += _share_identical_files(tmp, others)
        err = _import_error(py, spec.module)
        if err is not None:
            raise InputError(f"peer {spec.name!r} installed but `import {spec.module}` fails: {err}")
        frozen = subprocess.run([py, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
        version = subprocess.run(
            [py, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True, check=True
        ).stdout.strip()
        write_json_atomic(
            tmp / ENV_FILE,
            {
                "peer": spec.name,
                "python": version,
                "install": spec.install,
                "packages": frozen.splitlines(),
                "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "install_s": round(time.perf_counter() - t0, 1),
                "shared_gb": round(shared / 1e9, 2),
            },
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except subprocess.CalledProcessError as err:
        raise InputError(
            f"installing peer {spec.name!r} failed at `{' '.join(map(str, err.cmd))}` (exit status "
            f"{err.returncode}); nothing was installed. pip needs PyPI to be reachable."
        ) from None
    except OSError as err:
        raise InputError(f"installing peer {spec.name!r} failed: {err}; nothing was installed.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(
        f"peers: {spec.name} ready in {time.perf_counter() - t0:.0f} s ({target}; {shared / 1e9:.1f} GB shared "
        f"with other environments)"
    )
    logger.info("peer %s installed at %s", spec.name, target)
    return target


def remove_peer(name: str) -> bool:
    """Delete the isolated environment of ``name``; False when there was none."""
    target = _env_dir(peer_spec(name).name)
    if not target.exists():
        return False
    shutil.rmtree(target)
    return True


def environment_record(env: PeerEnvironment) -> dict:
    """The ``environment.json`` of an isolated environment (packages and versions), or ``{}``."""
    if env.path is None or not (env.path / ENV_FILE).is_file():
        return {}
    return json.loads((env.path / ENV_FILE).read_text(encoding="utf-8"))


def known_peers() -> list[str]:
    """The names of every peer celljepa knows."""
    return list(PEERS)
