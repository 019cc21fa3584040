"""The reference player: fetch an asset, decode, upscale per patch, report fps and PSNR.

The viewer installs without torch, FastAPI or the server: nothing under
``client`` may import them (a test checks it).
"""
