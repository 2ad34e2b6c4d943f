"""Prepared training shards: curated videos stored as JPEG frames in tar files, read by direct seeks.

Why this format (measured by benchmarks/bench_shards.py, results/shards.md): a training clip is V frames at
random times, so what counts is the cost of one random frame. On the shared videos (V=3, 224, one thread)
the training loader makes 45-55x the clips/s of raw web video from these JPEG tars, and ~6x what the other
candidate, the same frames re-encoded as short-GOP or all-intra H.264, gives (that one still seeks and
sets up a decoder per clip), for ~2-4x its disk. So ``vito prepare`` decodes each video once at a reduced
frame rate and short side, and stores frame ``k`` (the frame on screen at ``t_k = k / fps``) as one JPEG.

Layout of a shard folder:
- ``shard-000000.tar`` ...: WebDataset-compatible tars (sample key = clip number; members ``KEY.json``
  with the clip's metadata and ``KEY.000000.jpg`` ... its frames), so they can also be streamed;
- ``shard-000000.json`` ...: that shard's index: for every clip its metadata and the byte offset and size
  of every frame inside the tar, so reading one clip touches only its own region of one file;
- ``shards.json``: the format, the settings and the shards with their clip counts (small, read first).

Modules: ``format`` (the settings, the folder index and the frame-time rule that writer and reader share),
``writer`` (``vito prepare``) and ``reader`` (``ShardSource``, what the training loader reads).
"""
