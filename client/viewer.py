"""The on-screen viewer: an OpenCV window with an fps/PSNR overlay.

Keys: ``m`` cycles fitcast SR -> lanczos -> side by side (left lanczos, right
fitcast, split at the middle); ``q`` or Esc quits.  :func:`compose` builds the
displayed image and is usable without a display.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from fitcast.errors import InvalidInputError

MODES = ("sr", "lanczos", "split")
_LABELS = {"sr": "fitcast", "lanczos": "lanczos", "split": "lanczos | fitcast"}


def compose(sr: np.ndarray, lanczos: np.ndarray, mode: str, lines: list[str]) -> np.ndarray:
    """The RGB image to show for ``mode`` with ``lines`` of overlay text."""
    if mode == "sr":
        img = sr.copy()
    elif mode == "lanczos":
        img = lanczos.copy()
    elif mode == "split":
        img = sr.copy()
        half = img.shape[1] // 2
        img[:, :half] = lanczos[:, :half]
        img[:, half - 1 : half + 1] = (255, 255, 255)
    else:
        raise InvalidInputError(f"unknown view mode {mode!r}; one of {', '.join(MODES)}")
    text = [_LABELS[mode], *lines]
    scale = max(0.5, img.shape[0] / 1080)
    y = int(30 * scale)
    for line in text:
        cv2.putText(img, line, (int(12 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, (0, 0, 0), int(4 * scale),
                    cv2.LINE_AA)
        cv2.putText(img, line, (int(12 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, (255, 255, 255),
                    max(1, int(1.5 * scale)), cv2.LINE_AA)
        y += int(32 * scale)
    return img


@dataclass
class Viewer:
    title: str
    mode: str = "sr"
    fps_ema: float | None = None
    toggles: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise InvalidInputError(
                "this OpenCV build has no window support (opencv-python-headless): "
                "use --headless, or install opencv-python in place of opencv-python-headless"
            ) from None

    def show(self, sr: np.ndarray, lanczos: np.ndarray, frame_seconds: float, psnr: tuple[float, float] | None) -> bool:
        """Display one frame; False when the viewer asked to quit."""
        fps = 1.0 / frame_seconds if frame_seconds > 0 else 0.0
        self.fps_ema = fps if self.fps_ema is None else 0.9 * self.fps_ema + 0.1 * fps
        lines = [f"{self.fps_ema:5.1f} fps"]
        if psnr is not None:
            lines.append(f"PSNR-Y fitcast {psnr[0]:.2f} dB  lanczos {psnr[1]:.2f} dB")
        cv2.imshow(self.title, compose(sr, lanczos, self.mode, lines)[:, :, ::-1])
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        if key == ord("m"):
            self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
            self.toggles.append(self.mode)
        return True

    def close(self) -> None:
        cv2.destroyWindow(self.title)
