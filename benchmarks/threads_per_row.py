"""Why compare runs two rows side by side: a MiniLM LoRA step on one thread and on two.

Each thread count runs in a fresh subprocess (torch's thread pool is fixed once it starts),
10 timed steps after 3 warm-up steps, on random token ids of the given batch and length.
Two one-thread rows side by side do twice one row's work; one two-thread row does the ratio
printed. Run on a quiet machine:

    python benchmarks/threads_per_row.py --batch 16 --length 40
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

STEPS, WARMUP = 10, 3


def seconds_per_step(threads: int, batch: int, length: int) -> float:
    """One LoRA (r 8, query and value) training step of the shipped MiniLM: the timed mean."""
    import torch

    import peftplug
    from peftplug.data import load_encoder

    torch.set_num_threads(threads)
    model, _ = load_encoder(num_labels=2, seed=0)
    model = peftplug.apply(
        model, ["lora"], {"lora": {"r": 8, "target_modules": ["query", "value"]}}
    )
    trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (batch, length), generator=generator)
    labels = torch.randint(0, 2, (batch,), generator=generator)
    for step in range(WARMUP + STEPS):
        if step == WARMUP:
            started = time.perf_counter()
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return (time.perf_counter() - started) / STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=40)
    parser.add_argument("--threads", type=int, help="measure this count only (internal)")
    arguments = parser.parse_args()
    if arguments.threads:
        print(seconds_per_step(arguments.threads, arguments.batch, arguments.length))
        return
    timed = {}
    for threads in (1, 2):
        command = [sys.executable, __file__, "--threads", str(threads)]
        command += ["--batch", str(arguments.batch), "--length", str(arguments.length)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        timed[threads] = float(output.split()[-1])
    print(f"batch {arguments.batch} x {arguments.length} tokens, LoRA r8 on MiniLM:")
    for threads, seconds in timed.items():
        print(f"  {threads} thread(s): {seconds:.3f} s/step")
    print(f"  a second thread: {timed[1] / timed[2]:.2f}x; a second one-thread row: 2.00x")


if __name__ == "__main__":
    main()
