"""Side-by-side benchmarks of edge-mfr against the seed-style and face_recognition (dlib) baselines.

Host-side only: TensorFlow, mtcnn and dlib are imported here, never by ``edge_mfr/``.
Run ``python tools/bench/run.py --data ../shared/data --out bench-out/``.
"""
