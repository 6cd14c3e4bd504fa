"""Loads one transaction's documents with dlt's postgres destination; run by bench/.venvs/dlt's python.

    python -I bench/peer_dlt.py DOCS_JSONL CREDENTIALS DATASET TABLE PIPELINES_DIR RESULT_JSON

The documents are read from a JSONL file and handed to dlt in pages, as a resource over an API or
a file would be; dlt infers the table, flattens `_meta` into `_meta__op` and `_meta__uuid`, and
merges on `id` (its default `delete-insert` strategy, through `<dataset>_staging`). Documents with
`_deleted: true` are deleted (the column is hinted `hard_delete`); `_seq`, the document's position
in the transaction, is hinted `dedup_sort` so the last document of a key wins. The loader file
format is `csv`, loaded with COPY: dlt's documented fast path for postgres (its default, INSERT
VALUES statements, measured about 25% slower on small inserts here). The rest is dlt's default.

The time written to RESULT_JSON runs from just before `pipeline.run` (imports done, pipeline object
made, nothing connected) to its return: extract, normalize and load, reading and decoding the file
included, as the connector and the baselines decode their input.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
from dlt.common.json import json as dlt_json  # dlt's own codec (orjson when available)

PAGE = 10_000  # documents per yielded list: dlt's advice is to yield pages, not single items


def pages(path: Path) -> Iterator[list[dict[str, Any]]]:
    page: list[dict[str, Any]] = []
    with path.open("rb") as f:
        for line in f:
            page.append(dlt_json.loadb(line))
            if len(page) == PAGE:
                yield page
                page = []
    if page:
        yield page


def main(docs: str, credentials: str, dataset: str, table: str, pipelines_dir: str, result: str) -> None:
    pipeline = dlt.pipeline(
        pipeline_name="bench_peer_dlt",
        pipelines_dir=pipelines_dir,
        destination=dlt.destinations.postgres(credentials=credentials),
        dataset_name=dataset,
    )
    items = dlt.resource(
        pages(Path(docs)),
        name=table,
        write_disposition="merge",
        primary_key="id",
        # A tombstone deletes its key; of two documents with one key, the later (higher _seq) wins.
        columns={
            "_deleted": {"data_type": "bool", "hard_delete": True},
            "_seq": {"data_type": "bigint", "dedup_sort": "desc"},
        },
    )
    start = time.perf_counter()
    info = pipeline.run(items, loader_file_format="csv")
    seconds = time.perf_counter() - start
    info.raise_on_failed_jobs()
    Path(result).write_text(json.dumps({"seconds": seconds}))
    print(info)


if __name__ == "__main__":
    main(*sys.argv[1:])
