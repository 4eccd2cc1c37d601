"""Offline text that every installation already has, for calibration without a corpus.

Two collectors, each returning documents in a stable order (same machine, same output):

- `collect_licenses()`: legal prose from /usr/share/common-licenses and from the license
  files shipped inside installed Python packages (`*.dist-info/**/LICENSE*`, `COPYING*`,
  `NOTICE*`, for every metadata folder on sys.path). One file is one document; identical texts are kept once.
- `collect_pydocs()`: technical prose rendered from the docstrings of a fixed list of
  standard-library modules. One module is one document.

Nothing here is committed corpus text: it is read from the running machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import re
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

from analysis.paths import atomic_write_text, cache_dir

COMMON_LICENSES_DIR = Path("/usr/share/common-licenses")
LICENSE_PREFIXES = ("LICENSE", "LICENCE", "COPYING", "NOTICE")
MAX_LICENSE_BYTES = 1_000_000
"""Larger files are bundles of many licenses (or not licenses at all); skip them."""

PYDOC_MODULES: tuple[str, ...] = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "bz2", "calendar",
    "cmath", "codecs", "collections", "colorsys", "concurrent.futures", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "dis",
    "email.message", "enum", "filecmp", "fnmatch", "fractions", "ftplib", "functools",
    "getopt", "gettext", "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html",
    "html.parser", "http.client", "http.cookies", "http.server", "imaplib", "importlib",
    "inspect", "io", "ipaddress", "itertools", "json", "keyword", "linecache", "locale",
    "logging", "logging.handlers", "lzma", "mailbox", "math", "mimetypes",
    "multiprocessing", "numbers", "operator", "os", "pathlib", "pickle", "pkgutil",
    "platform", "plistlib", "poplib", "pprint", "queue", "quopri", "random", "re",
    "reprlib", "sched", "secrets", "select", "selectors", "shelve", "shlex", "shutil",
    "signal", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "stat", "statistics",
    "string", "struct", "subprocess", "symtable", "sys", "sysconfig", "tarfile",
    "tempfile", "textwrap", "threading", "time", "timeit", "token", "tokenize", "trace",
    "traceback", "types", "typing", "unicodedata", "unittest", "urllib.parse",
    "urllib.request", "uuid", "warnings", "wave", "weakref", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile", "zipimport", "zlib", "zoneinfo",
)
"""Modules rendered by `collect_pydocs`; ones missing from this Python build are skipped."""

PYDOC_RENDER_VERSION = 1
"""Bump when `render_module_doc` changes, so that cached renderings are not reused."""

# Reprs such as "<object object at 0x7f...>" differ between runs; the address is dropped.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class Document(NamedTuple):
    name: str
    """Where the text came from (a path or a module name), for previews and recipes."""
    text: str


def text_digest(documents: list[Document]) -> str:
    """sha256 hex over the documents' names and texts, in order."""
    h = hashlib.sha256()
    for doc in documents:
        for part in (doc.name, doc.text):
            data = part.encode("utf-8")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return h.hexdigest()


def collect_licenses() -> list[Document]:
    """License texts of this machine: system licenses first, then installed packages."""
    candidates: list[tuple[str, Path]] = []
    if COMMON_LICENSES_DIR.is_dir():
        for path in sorted(COMMON_LICENSES_DIR.iterdir()):
            candidates.append((f"common-licenses/{path.name}", path))
    package_files: list[tuple[str, Path]] = []
    for meta_dir in _metadata_dirs():
        for path in meta_dir.rglob("*"):
            if path.name.upper().startswith(LICENSE_PREFIXES) and path.is_file():
                rel = path.relative_to(meta_dir).as_posix()
                package_files.append((f"{meta_dir.name}/{rel}", path))
    candidates.extend(sorted(package_files))

    documents: list[Document] = []
    seen: set[str] = set()
    for label, path in candidates:
        text = _read_small_text(path)
        if text is None:
            continue
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if digest in seen:  # symlinks (GPL -> GPL-3) and the many identical MIT texts
            continue
        seen.add(digest)
        documents.append(Document(label, text))
    return documents


def collect_pydocs(modules: tuple[str, ...] = PYDOC_MODULES) -> list[Document]:
    """One document per importable module: its docstring, then its public API's docs."""
    documents = []
    for module_name in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(module_name)
        except Exception:  # noqa: BLE001 - optional modules (ssl, sqlite3, lzma) may be absent
            continue
        text = render_module_doc(module)
        if text.strip():
            documents.append(Document(f"pydoc/{module_name}", text))
    return documents


def cached_pydocs() -> list[Document]:
    """`collect_pydocs()`, kept in `<cache>/calibration/` per Python version.

    Rendering imports ~120 modules (a second or more); the cached file is read in
    milliseconds. The cache is optional: any error reading or writing it is ignored.
    """
    key = hashlib.sha256(
        json.dumps([sys.version, list(PYDOC_MODULES), PYDOC_RENDER_VERSION]).encode()
    ).hexdigest()[:16]
    try:
        path = cache_dir() / "calibration" / f"pydocs-{key}.json"
    except OSError:  # no writable cache folder
        return collect_pydocs()
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return [Document(str(name), str(text)) for name, text in rows]
    except (OSError, ValueError, TypeError):
        pass
    documents = collect_pydocs()
    with contextlib.suppress(OSError):
        atomic_write_text(path, json.dumps([list(d) for d in documents]))
    return documents


def render_module_doc(module) -> str:
    """Plain text: module docstring, then each public class and function with its doc.

    Signatures list parameter names only: default values can be sets or objects whose
    repr changes between runs, and the text must be stable.
    """
    lines = [f"Module {module.__name__}", ""]
    doc = inspect.getdoc(module)
    if doc:
        lines += [doc, ""]
    for name in _public_names(module):
        obj = getattr(module, name, None)
        if inspect.isclass(obj) and _defined_in(obj, module):
            lines += _render_object(f"class {name}", obj, indent="")
            for member_name, member in sorted(vars(obj).items()):
                if member_name.startswith("_") and member_name != "__init__":
                    continue
                if inspect.isfunction(member) or inspect.ismethoddescriptor(member):
                    lines += _render_object(member_name, member, indent="    ")
        elif (inspect.isfunction(obj) or inspect.isbuiltin(obj)) and _defined_in(obj, module):
            lines += _render_object(name, obj, indent="")
    return _ADDRESS.sub("", "\n".join(lines)).strip() + "\n"


def _render_object(title: str, obj, indent: str) -> list[str]:
    doc = inspect.getdoc(obj)
    if not doc:
        return []
    body = "\n".join(indent + "    " + line if line else "" for line in doc.splitlines())
    return [f"{indent}{title}{_signature(obj)}", body, ""]


def _signature(obj) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    params = [p.replace(default=inspect.Parameter.empty, annotation=inspect.Parameter.empty)
              for p in sig.parameters.values()]
    try:
        return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))
    except ValueError:
        return ""


def _public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if not isinstance(names, (list, tuple)):
        names = [n for n in dir(module) if not n.startswith("_")]
    return sorted({str(n) for n in names})


def _defined_in(obj, module) -> bool:
    # Re-exported names (os.path inside os, typing's aliases) belong to other documents.
    owner = getattr(obj, "__module__", None) or ""
    return owner == module.__name__ or owner.lstrip("_") == module.__name__.split(".")[-1]


def _metadata_dirs() -> list[Path]:
    """`*.dist-info` / `*.egg-info` folders on sys.path (scanning them beats parsing
    every package's RECORD through importlib.metadata, which takes seconds)."""
    found: dict[str, Path] = {}
    for entry in sys.path:
        root = Path(entry or ".")
        if not root.is_dir():
            continue
        try:
            children = sorted(root.iterdir())
        except OSError:
            continue
        for child in children:
            if child.suffix in (".dist-info", ".egg-info") and child.is_dir():
                found.setdefault(child.name, child)
    return [found[name] for name in sorted(found)]


def _read_small_text(path: Path) -> str | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_LICENSE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.strip() else None
