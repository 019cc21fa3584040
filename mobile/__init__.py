"""Export for phones (ExecuTorch .pte) and the on-device benchmark.

Not built yet: see the project's issue on mobile export.
"""
