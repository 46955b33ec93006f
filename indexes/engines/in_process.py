"""The in-process engine: one model in this process, on one device, encodes the chunks in order."""

from __future__ import annotations

from dataclasses import dataclass

from lyre.basics.progress import ProgressSink
from lyre.indexes.engines.job import EncodeJob, encode_chunk


@dataclass(frozen=True)
class InProcessRunner:
    """``device``: cpu, cuda, cuda:N (default: CUDA when visible); ``num_threads``: CPU threads (default:
    the cores this process may use)."""

    device: str | None = None
    num_threads: int | None = None

    def run(self, job: EncodeJob, progress: ProgressSink) -> None:
        from lyre.models.embedder import Embedder

        embedder = Embedder.from_pretrained(
            job.model_folder,
            recipe=job.recipe,
            device=self.device,
            token_budget=job.token_budget,
            num_threads=self.num_threads,
        )
        docstore, store = job.open_store()
        for chunk in job.chunks:
            encode_chunk(embedder, docstore, store, chunk, progress)
