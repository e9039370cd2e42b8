"""1:K search at 100,000 identities: milliseconds per query, against a plain full scan.

The gallery holds 100,000 synthetic identities with the anisotropy of real encodings
(shared low-rank structure plus noise); queries are noisy copies of enrolled templates.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import machine, parse

IDENTITIES = 100_000


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    from jetkiosk.edge.faces.search import EXACT_LIMIT, TemplateIndex

    args = parse(argparse.ArgumentParser(description=__doc__.split("\n")[0]),
                 "just past the exact-search limit (the indexed path), 20 queries")
    identities, count = (EXACT_LIMIT + 5_000, 20) if args.quick else (IDENTITIES, 200)
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(64, 512))
    templates = unit(rng.normal(size=(identities, 64)) @ basis
                     + 3.0 * rng.normal(size=(identities, 512)))
    start = time.perf_counter()
    index = TemplateIndex(templates)
    build = time.perf_counter() - start
    targets = rng.choice(identities, count, replace=False)
    queries = unit(templates[targets] + 0.5 * unit(rng.normal(size=(count, 512))))
    index.nearest(queries[:5])  # warm-up
    start = time.perf_counter()
    best = np.concatenate([index.nearest(q[None])[0] for q in queries])
    ours = (time.perf_counter() - start) / len(queries)
    start = time.perf_counter()
    exact = np.array([int(np.argmax(templates @ q)) for q in queries])
    scan = (time.perf_counter() - start) / len(queries)
    print(f"# {identities} identities x 512-d, {len(queries)} single queries, {machine()}")
    print(f"index build: {build:.2f} s")
    print(f"jetkiosk TemplateIndex: {ours * 1000:6.2f} ms/query")
    print(f"full float32 scan:      {scan * 1000:6.2f} ms/query")
    print(f"same nearest identity as the full scan: {np.mean(best == exact) * 100:.1f}% "
          f"(true identity found: {np.mean(best == targets) * 100:.1f}%)")


if __name__ == "__main__":
    main()
