"""The device side: numpy + onnxruntime only (never torch).

session.py  onnxruntime SessionOptions from a plan (optimisation level, arena, memory pattern, threads, capped arena)
rss.py      peak / current RSS of this process and the glibc mmap-threshold lever
profile.py  the memory profile export records into the manifest, measured in fresh processes
planner.py  budget + current RSS + profile -> a plan, or a refusal naming the smallest budget that works
sampler.py  BundleSampler: bundle -> plan -> shared numpy DDIM loop with an onnxruntime denoiser -> images and the
            figures of each phase (it writes nothing: the CLI writes the files)
"""
