"""Hot loops of vlmcodec: Triton kernels beside their torch references, and the C++ rANS coder.

Nothing here imports from the engine (``vlmcodec`` top level).
"""
