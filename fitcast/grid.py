"""The patch grid of an asset, padding, patch extraction and label-map files.

A frame of ``lr_w x lr_h`` is covered by ``gw x gh`` patches of ``P x P`` LR
pixels.  For extraction the frame is padded by edge replication: ``overlap``
pixels on every side (context for the network) plus enough at the right and
bottom to complete the last row and column of patches.  Patch ``(r, c)`` reads
the window ``[r*P, r*P + P + 2*overlap)`` of the padded frame; its output covers
HR pixels ``[r*P*s, (r+1)*P*s)`` (clipped to the frame), ``s`` the grid's scale.

The encoder, the web comparison, nas, mobile and the player all cut and stitch
patches through this one grid, so they see identical pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fitcast.errors import InvalidInputError


@dataclass(frozen=True)
class Grid:
    """``patch``-pixel LR patches over an ``lr_w x lr_h`` frame, read with ``overlap`` pixels of
    context each side, upscaled ``scale`` times."""

    lr_w: int
    lr_h: int
    patch: int
    overlap: int = 0
    scale: int = 1

    def __post_init__(self) -> None:
        if self.patch <= 0 or self.overlap < 0 or self.scale < 1:
            raise InvalidInputError(f"bad patch grid: patch {self.patch}, overlap {self.overlap}, scale {self.scale}")

    @property
    def gw(self) -> int:
        return -(-self.lr_w // self.patch)

    @property
    def gh(self) -> int:
        return -(-self.lr_h // self.patch)

    @property
    def shape(self) -> tuple[int, int]:
        """(gh, gw): the label map shape of one frame."""
        return (self.gh, self.gw)

    @property
    def window(self) -> int:
        """Side of one extracted LR window: P + 2*overlap."""
        return self.patch + 2 * self.overlap

    @property
    def hr_patch(self) -> int:
        """Side of one patch's HR output: P*s."""
        return self.patch * self.scale

    @property
    def hr_size(self) -> tuple[int, int]:
        """(width, height) of the HR frame."""
        return self.lr_w * self.scale, self.lr_h * self.scale

    @property
    def patches(self) -> int:
        return self.gw * self.gh

    def pad(self, lr: np.ndarray) -> np.ndarray:
        """Edge-pad an LR frame ``[h, w, c]`` for window extraction."""
        if lr.shape[0] != self.lr_h or lr.shape[1] != self.lr_w:
            raise ValueError(f"frame {lr.shape[1]}x{lr.shape[0]} does not match grid {self.lr_w}x{self.lr_h}")
        o, p = self.overlap, self.patch
        pad_b = self.gh * p - self.lr_h
        pad_r = self.gw * p - self.lr_w
        return np.pad(lr, ((o, o + pad_b), (o, o + pad_r), (0, 0)), mode="edge")

    def windows(self, padded: np.ndarray) -> np.ndarray:
        """A view ``[gh, gw, window, window, c]`` of every patch window of a padded frame."""
        win = self.window
        v = sliding_window_view(padded, (win, win), axis=(0, 1))[:: self.patch, :: self.patch]
        # sliding_window_view puts the window axes last: [gh, gw, c, win, win] -> [gh, gw, win, win, c]
        return v.transpose(0, 1, 3, 4, 2)[: self.gh, : self.gw]

    def extract(self, lr: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Copy the windows at (rows, cols) of an LR frame: ``[n, window, window, c]``."""
        return np.ascontiguousarray(self.windows(self.pad(lr))[rows, cols])

    def hr_blocks(self, hr: np.ndarray) -> np.ndarray:
        """HR frame padded (edge) to the grid and viewed as ``[gh, gw, P*s, P*s, c]``."""
        ps = self.hr_patch
        pad_b = self.gh * ps - hr.shape[0]
        pad_r = self.gw * ps - hr.shape[1]
        padded = np.pad(hr, ((0, pad_b), (0, pad_r), (0, 0)), mode="edge")
        return padded.reshape(self.gh, ps, self.gw, ps, -1).transpose(0, 2, 1, 3, 4)

    def valid_mask(self) -> np.ndarray:
        """HR-pixel mask ``[gh, gw, P*s, P*s]`` of pixels inside the frame (not padding)."""
        ps = self.hr_patch
        ys = np.arange(self.gh * ps) < self.lr_h * self.scale
        xs = np.arange(self.gw * ps) < self.lr_w * self.scale
        m = ys[:, None] & xs[None, :]
        return m.reshape(self.gh, ps, self.gw, ps).transpose(0, 2, 1, 3)


def save_labels(labels: np.ndarray) -> bytes:
    """Serialise a label map ``uint8[frames, gh, gw]`` as a compressed ``.npz``."""
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8[frames, gh, gw], got {labels.dtype}{list(labels.shape)}")
    buf = io.BytesIO()
    np.savez_compressed(buf, labels=labels)
    return buf.getvalue()


MAX_MAP_BYTES = 256 << 20  # what a label or plan map may inflate to (a 4K x4 segment's map is under 1 MB)


def _npz_arrays(data: bytes, what: str, want: dict[str, tuple[np.dtype, tuple[int, ...] | None]],
                optional: frozenset[str] = frozenset()) -> list[np.ndarray | None]:
    """The arrays ``want`` names from an ``.npz`` file that came from a server, checked *before*
    they are inflated: each member's dtype and shape from its header (when ``want`` gives a
    shape), and its stored size against what that shape needs, so a small file cannot inflate
    into a large allocation.  A name in ``optional`` that the file lacks comes back as None."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            out: list[np.ndarray | None] = []
            for name, (dtype, shape) in want.items():
                if name in optional and name not in npz.files:
                    out.append(None)
                    continue
                info = npz.zip.getinfo(f"{name}.npy")
                with npz.zip.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    got_shape, _, got_dtype = read_header(member)
                if got_dtype != dtype or (shape is not None and tuple(got_shape) != shape):
                    raise InvalidInputError(f"{what} holds {name} {got_dtype}{list(got_shape)}, expected "
                                            f"{np.dtype(dtype)}{list(shape) if shape is not None else ''}")
                need = int(np.prod(got_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
                if need > MAX_MAP_BYTES:
                    raise InvalidInputError(f"{what}: {name} would take {need} bytes (at most {MAX_MAP_BYTES})")
                if info.file_size > need + 4096:
                    raise InvalidInputError(f"{what}: {name} inflates to {info.file_size} bytes, more than its "
                                            "shape needs")
                out.append(npz[name])
            return out
    except InvalidInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        raise InvalidInputError(f"not a fitcast {what}: {exc}") from None


def load_labels(data: bytes, *, frames: int | None = None, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Inverse of :func:`save_labels`; with ``frames`` and ``shape`` (the manifest's), the map must
    have exactly that shape, checked before it is inflated."""
    want = (frames, *shape) if frames is not None and shape is not None else None
    (labels,) = _npz_arrays(data, "label map", {"labels": (np.dtype(np.uint8), want)})
    assert labels is not None  # not optional
    if labels.ndim != 3:
        raise InvalidInputError(f"label map has shape {labels.shape} and dtype {labels.dtype}")
    return labels


class Plan(NamedTuple):
    """One segment's plan as the player reads it."""

    codes: np.ndarray  # uint8 [frames, gh, gw]: route codes, indices into the manifest's plan routes
    motion: np.ndarray  # int8 [frames, gh, gw, 2]: (dy, dx) HR pixels, used by reuse
    order: np.ndarray | None  # uint16 [frames, gh, gw]: model patches' ranks (1: most valuable); None in older plans


def save_plan(codes: np.ndarray, motion: np.ndarray, predicted_ms: np.ndarray,
              order: np.ndarray | None = None) -> bytes:
    """Serialise a segment's plan: route codes ``uint8[frames, gh, gw]``, motion vectors
    ``int8[frames, gh, gw, 2]`` (dy, dx in HR pixels, used by reuse), the predicted
    milliseconds of each frame and, optionally, the rank of every model patch in the order the
    planner's budget took them (``uint16[frames, gh, gw]``, 0 off models), as a compressed ``.npz``."""
    codes, motion = np.asarray(codes), np.asarray(motion)
    if codes.ndim != 3 or codes.dtype != np.uint8 or motion.shape != (*codes.shape, 2) or motion.dtype != np.int8:
        raise ValueError(f"a plan is uint8[f, gh, gw] codes and int8[f, gh, gw, 2] motion, got "
                         f"{codes.dtype}{list(codes.shape)} and {motion.dtype}{list(motion.shape)}")
    extra: dict[str, np.ndarray] = {}
    if order is not None:
        order = np.asarray(order)
        if order.shape != codes.shape or order.dtype != np.uint16:
            raise ValueError(f"a plan's order is uint16{list(codes.shape)}, got {order.dtype}{list(order.shape)}")
        extra["order"] = order
    buf = io.BytesIO()
    np.savez_compressed(buf, codes=codes, motion=motion, predicted_ms=np.asarray(predicted_ms, np.float32),
                        **extra)  # type: ignore[arg-type]
    return buf.getvalue()


def load_plan(data: bytes, *, frames: int, shape: tuple[int, int], routes: int) -> Plan:
    """Inverse of :func:`save_plan`, checked against what the manifest says (``order`` is None
    in plans made before it was written)."""
    codes, motion, order = _npz_arrays(data, "plan map", {"codes": (np.dtype(np.uint8), (frames, *shape)),
                                                          "motion": (np.dtype(np.int8), (frames, *shape, 2)),
                                                          "order": (np.dtype(np.uint16), (frames, *shape))},
                                       optional=frozenset({"order"}))
    assert codes is not None and motion is not None
    if codes.size and int(codes.max()) >= routes:
        raise InvalidInputError(f"plan map uses route code {int(codes.max())}, the plan has {routes} routes")
    return Plan(codes, motion, order)
