"""Compiler-aware architecture search ("NAS": neural architecture search).

``profile`` times candidate networks on the runtime that will run them, ``predictor`` fits a
latency model on those times, ``search`` picks depth and per-layer width for an fps budget.
"""
