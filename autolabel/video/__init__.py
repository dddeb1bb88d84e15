"""Video clips as inputs: decoding with bounded memory, frame sampling, chunks, track ids and their storage.

A clip is labeled in chunks of consecutive sampled frames (:mod:`.chunks`); the frames of a chunk go through the
pipeline's frame and tracking stages, their chunk-local track ids are stitched onto the clip's ids, and the chunk
is committed with the clip's progress (:mod:`.store`), so a killed run resumes at the chunk in flight. Track
filters run once a clip's last chunk is in (:mod:`.loop`). Nothing here imports PyAV until a clip is decoded.
"""
