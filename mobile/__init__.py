"""Export for phones (ONNX and ExecuTorch .pte with XNNPACK, parity-checked) and the device benchmark
(host through the Python runtimes, Android through adb)."""
