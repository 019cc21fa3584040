"""`make demo`: encode a real clip through the HTTP service and play it back.

Cuts 5 s of ../shared/media/leaf_720p_pyscenedetect.mp4, starts `fitcast serve`
on a free loopback port, uploads the piece over HTTP, waits for the encode
(printing progress), plays the asset over HTTP headless against the piece and
prints fps and PSNR-Y for fitcast and lanczos, then stops the server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fitcast.media import cut
from server.launch import start_server

ROOT = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("FITCAST_MEDIA", ROOT.parent / "shared" / "media"))
CLIP = MEDIA / "leaf_720p_pyscenedetect.mp4"
OUT = ROOT / "demo-out"
FITCAST = str(Path(sys.executable).with_name("fitcast"))


def main() -> int:
    t0 = time.time()
    if not CLIP.is_file():
        print(f"demo: error: {CLIP} not found (set FITCAST_MEDIA)", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    piece = OUT / "leaf_3s-8s.mp4"
    cut(CLIP, piece, start=3.0, duration=5.0)
    print(f"[demo] cut 5 s of {CLIP.name} -> {piece.relative_to(ROOT)}")

    store = OUT / f"store-{int(t0)}"
    try:
        server, base = start_server(store, log=open(OUT / "server.log", "w"), new_session=True)
    except RuntimeError as exc:
        print(f"demo: error: {exc} (see demo-out/server.log)", file=sys.stderr)
        return 1
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            print(f"[demo] server on {base}, store {store.relative_to(ROOT)}")
            with open(piece, "rb") as f:
                r = http.post("/v1/assets", params={"scale": 2, "k": 2}, content=f,
                              headers={"Content-Type": "video/mp4", "Idempotency-Key": f"demo-{int(t0)}"})
            r.raise_for_status()
            asset = r.json()
            print(f"[demo] uploaded: asset {asset['id']} ({r.status_code}), encoding at x2 …")
            last_stage, last_print = None, 0.0
            while True:
                a = http.get(f"/v1/assets/{asset['id']}").json()
                stage = (a["status"], a["progress"]["stage"])
                if stage != last_stage or time.time() - last_print >= 10:
                    print(f"[demo]   {a['status']:10s} {a['progress']['stage'] or '':10s} "
                          f"{100 * (a['progress']['fraction'] or 0):5.1f}%  ({time.time() - t0:.0f} s)", flush=True)
                    last_stage, last_print = stage, time.time()
                if a["status"] in ("ready", "errored"):
                    break
                time.sleep(2)
            if a["status"] == "errored":
                print(f"demo: error: encode failed: {a['error']}", file=sys.stderr)
                return 1
            q = http.get(f"/v1/assets/{asset['id']}/report/quality.json").json()
            print(f"[demo] encode report: lanczos {q['psnr_y_lanczos']:.2f} dB, fitcast {q['psnr_y_sr']:.2f} dB, "
                  f"train {q['seconds']['train']:.0f} s, total {q['seconds']['total']:.0f} s")
        report = OUT / "play-report.json"
        print(f"[demo] playing {asset['links']['self']} headless …", flush=True)
        rc = subprocess.call([FITCAST, "play", asset["links"]["self"], "--reference", str(piece), "--headless",
                              "--report", str(report)])
        if rc != 0:
            return rc
        r = json.loads(report.read_text())
        print(f"[demo] fps median {r['fps_median']:.1f} (p5 {r['fps_p5']:.1f}) at "
              f"{r['output_size'][0]}x{r['output_size'][1]}; "
              f"PSNR-Y fitcast {r['psnr_y_sr']:.2f} dB vs lanczos {r['psnr_y_lanczos']:.2f} dB "
              f"({r['psnr_y_sr'] - r['psnr_y_lanczos']:+.2f} dB); {time.time() - t0:.0f} s in all")
        return 0
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
