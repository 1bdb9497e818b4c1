"""Everything Easel does to pixels, with no Discord and no I/O: pure functions for `asyncio.to_thread`.

- `inputs`: make any upload (PNG, JPEG, WEBP, GIF, BMP, TIFF, HEIC) into what the model accepts, or refuse it.
- `masks`: masks from a region, a mask image or the image's own transparency, and a preview of the area.
- `outpaint`: zoom out and pan: the image on a larger transparent canvas, with the mask of the new border.
- `fit`: result images into Discord's per-file and per-message limits with the fewest encodes.
- `grid`: an n-up preview of several results with index labels.
- `pool`: the async face of fit and grid, on a process pool so big encodes never stall the event loop.
- `edits`: uploads, masks and canvases put together for an edit, a variation or an outpaint.
"""
