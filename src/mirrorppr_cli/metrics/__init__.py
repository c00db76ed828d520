"""The metric library shared by every backend: pure functions over images.

Images are ``(H, W, 3)`` arrays; uint8/uint16 are scaled to [0, 1], floats are taken as
already in [0, 1]. A prediction of another size is resized bilinearly to the ground truth,
as the official evaluation does.
"""
