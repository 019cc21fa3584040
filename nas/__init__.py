"""Compiler-aware architecture search (latency model measured on the real runtime, and the search).

"NAS" here means neural architecture search, not network-attached storage.
Not built yet: see the project's issue on compiler-aware NAS.
"""
