"""The per-rank body of tests/test_streaming.py's 2-process gloo test (kept light to import:
each spawned rank imports this module, not the test module and its Lightning imports)."""

from __future__ import annotations

import os

import torch

from avtag.data.streaming import shard_stream

RATE = 4000
CLASSES = ["a", "b", "c"]


def rank_main(rank, world, port, folder, result_dir):
    import torch.distributed as dist
    from litdata import StreamingDataLoader

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)

    def loader():  # no DataLoader workers here: one process with workers is tested on its own
        stream = shard_stream(folder, CLASSES, RATE, RATE, seed=5, shuffle=True, drop_last=False)
        return StreamingDataLoader(stream, batch_size=4, num_workers=0)

    full = [b["index"].tolist() for b in loader()]
    again = [b["index"].tolist() for b in loader()]
    first = loader()
    head = []
    for batch in first:
        head.append(batch["index"].tolist())
        if len(head) == 3:
            state = first.state_dict()
            break
    resumed = loader()
    resumed.load_state_dict(state)
    tail = [b["index"].tolist() for b in resumed]
    gathered = [None] * world
    dist.all_gather_object(gathered, {"full": full, "again": again, "head": head, "tail": tail})
    if rank == 0:
        torch.save(gathered, os.path.join(result_dir, "ranks.pt"))
    dist.destroy_process_group()
