"""Super-resolution networks (a leaf package: imports nothing else of fitcast but the core).

``sr_models.archs`` holds the plain ``nn.Module`` architectures and their
builders; ``sr_models.train`` overfits one model (a pure function: files in,
files out); ``sr_models.export`` writes ONNX.
"""
