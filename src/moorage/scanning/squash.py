"""Apply layers in order (OCI image-spec `layer.md` whiteouts) to the selected files.

Per layer: everything lower under its opaque directories goes, then each whiteout's path and
subtree, then the layer's own files (and links) go in. So a whiteout never hides a file of its own
layer, and an opaque marker applies before the layer's entries wherever it sits in the tar. The
history of each path (which layer wrote or deleted it) is kept for per-layer attribution.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from moorage.scanning.layers import LayerInventory

_MAX_LINK_HOPS = 8


@dataclass
class Squashed:
    layers: list[str]
    files: dict[str, bytes] = field(default_factory=dict)  # the final view, links resolved
    # path -> [(layer index, content or None when deleted)], in layer order
    history: dict[str, list[tuple[int, bytes | None]]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # final path -> the path whose content it shows

    def origin_layer(self, path: str, present: Callable[[bytes], bool]) -> str:
        """The digest of the earliest layer from which `present(content)` holds for `path` up to the top."""
        real = self.sources.get(path, path)
        changes = self.history.get(real, [])
        first = len(self.layers) - 1
        for index, content in reversed(changes):
            if content is None or not present(content):
                break
            first = index
        return self.layers[first]


def _under(path: str, directory: str) -> bool:
    return directory == "" or path.startswith(directory + "/")


def squash(layers: Sequence[LayerInventory]) -> Squashed:
    out = Squashed(layers=[layer.digest for layer in layers])
    files: dict[str, bytes] = {}
    links: dict[str, str] = {}

    def delete(paths: Iterable[str], index: int) -> None:
        for p in list(paths):
            if p in files:
                del files[p]
                out.history.setdefault(p, []).append((index, None))
            links.pop(p, None)

    for index, layer in enumerate(layers):
        for directory in layer.opaque_dirs:
            delete([p for p in (*files, *links) if _under(p, directory) and p != directory], index)
        for gone in layer.whiteouts:
            delete([p for p in (*files, *links) if p == gone or _under(p, gone)], index)
        for path, content in layer.files.items():
            links.pop(path, None)
            files[path] = content
            out.history.setdefault(path, []).append((index, content))
        for path, target in layer.links.items():
            if path in files:
                delete([path], index)
            links[path] = target

    out.files = dict(files)
    out.sources = {p: p for p in files}
    for path, target in links.items():
        hops = 0
        while target in links and hops < _MAX_LINK_HOPS:
            target = links[target]
            hops += 1
        if target in files:
            out.files[path] = files[target]
            out.sources[path] = target
    return out
