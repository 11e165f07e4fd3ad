"""Tile ops by scope: warp (one warp owns a register tile), group (N warps share shared/global copies),
warpgroup (4 warps, wgmma)."""
