"""Save / load a lineage state: safetensors (no pickle) + JSON, written atomically.

The JSON (config, tasks, head kinds, vocab sizes, vocabularies) lives in the safetensors header
metadata, so the single file is the whole state and one ``os.replace`` publishes it; a readable copy
is written next to it as ``<name>.json``.
"""
from __future__ import annotations

from conure_core.errors import ConureError

import json
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from conure_core.atomic import atomic_write_bytes, sha256_file
from conure_core.config import ModelConfig
from conure_core.lineage import Lineage, TaskInfo
from conure_core.model import head_shape
from conure_core.heads import build_head

FORMAT = "conure-lineage/1"


class CheckpointError(ConureError, ValueError):
    """A state file is missing, not a Conure safetensors state, or inconsistent."""


def lineage_meta(lineage: Lineage) -> dict:
    """The JSON-safe description of a lineage (no tensors)."""
    return {"format": FORMAT, "config": lineage.config.to_dict(), "num_items": lineage.num_items,
            "item_vocab": lineage.item_vocab, "tasks": [i.to_dict() for i in lineage.infos]}


def state_bytes(lineage: Lineage) -> bytes:
    """The serialised state (deterministic for identical weights and metadata)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, p in lineage.params.items():
        tensors[f"backbone.{name}"] = p.detach().cpu().contiguous()
    for name, owner in lineage.ownership.maps.items():
        tensors[f"owner.{name}"] = owner.detach().cpu().contiguous()
    for i, info in enumerate(lineage.infos):
        head = lineage.heads[info.name]
        for name, p in [*head.named_parameters(), *head.named_buffers()]:
            tensors[f"head.{i}.{name}"] = p.detach().cpu().contiguous()
    meta = json.dumps(lineage_meta(lineage), sort_keys=True, separators=(",", ":"))
    return st_save(tensors, metadata={"conure": meta})


def save_state(lineage: Lineage, path: str | os.PathLike) -> Path:
    """Write ``path`` (a .safetensors file) and ``path.with_suffix('.json')`` atomically; returns ``path``."""
    path = Path(path)
    data = state_bytes(lineage)
    atomic_write_bytes(path, data)
    readable = json.dumps(lineage_meta(lineage), indent=2, sort_keys=True).encode()
    atomic_write_bytes(path.with_suffix(".json"), readable)
    return path


def _read_checked(path: Path) -> tuple[bytes, dict]:
    if not path.is_file():
        raise CheckpointError(f"lineage state {path} does not exist; save one with conure_core.checkpoint.save_state.")
    data = path.read_bytes()
    meta = _safetensors_meta(data)
    if meta is None:
        if data[:2] == b"PK" or data[:1] == b"\x80":
            raise CheckpointError(
                f"{path} is a pickle / torch.save file; refusing to load it (pickle can run code). "
                "Load it in a trusted session and re-save it with conure_core.checkpoint.save_state.")
        raise CheckpointError(f"{path} is not a Conure safetensors lineage state; "
                              "point to a file written by conure_core.checkpoint.save_state.")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has state format {meta.get('format')!r}; this code reads {FORMAT!r}.")
    return data, meta


def _safetensors_meta(data: bytes) -> dict | None:
    """The Conure metadata of a safetensors file, or None when ``data`` is not one.

    Decided by the header itself (8-byte length + JSON), never by the first byte: a safetensors
    header length can start with 0x80, the byte that also opens a pickle.
    """
    if len(data) < 10:
        return None
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8 or data[8:9] != b"{":
        return None
    try:
        header = json.loads(data[8:8 + size])
        return json.loads(header["__metadata__"]["conure"])
    except (ValueError, KeyError, TypeError):
        return None


def load_state(path: str | os.PathLike, device: str | torch.device | None = None) -> Lineage:
    """Rebuild a Lineage from a state file written by ``save_state`` (no pickle involved)."""
    path = Path(path)
    data, meta = _read_checked(path)
    tensors = st_load(data)
    config = ModelConfig.from_dict(meta["config"])
    lineage = Lineage(config, meta["num_items"], meta.get("item_vocab") or [], device=device)
    try:
        with torch.no_grad():
            for name, p in lineage.params.items():
                p.copy_(tensors[f"backbone.{name}"])
            for name, owner in lineage.ownership.maps.items():
                owner.copy_(tensors[f"owner.{name}"])
            for i, raw in enumerate(meta["tasks"]):
                info = TaskInfo(**raw)
                head = build_head(info.kind, config.width, info.num_labels, normalize=config.head_norm,
                                  **head_shape(config, info.kind, lineage.num_items)).to(lineage.device)
                for name, buf in head.named_buffers():  # at the saved shape: a fitted table's k is the data's
                    saved = tensors[f"head.{i}.{name}"]
                    buf.resize_(saved.shape).copy_(saved)
                for name, p in head.named_parameters():
                    saved = tensors[f"head.{i}.{name}"]
                    if saved.shape != p.shape:
                        raise CheckpointError(
                            f"{path}: tensor head.{i}.{name} has shape {list(saved.shape)} where this code's model has "
                            f"{list(p.shape)}; the state is from another model or from a Conure before the sparse "
                            "per-item parts (issue 16): learn the lineage again.")
                    p.copy_(saved)
                    p.requires_grad_(False)
                lineage.heads[info.name] = head
                lineage.infos.append(info)
    except KeyError as exc:
        raise CheckpointError(f"{path} lacks tensor {exc.args[0]!r}; the file is incomplete or from another model.") from None
    for p in lineage.params.values():
        p.requires_grad_(False)
    return lineage


def state_digest(path: str | os.PathLike) -> str:
    """sha256 of a state file's bytes (hex)."""
    return sha256_file(path).hexdigest()
