"""Fault injection for the resume tests, through xdistil's own seam (`xdistil.fit.before_step`).

No test patches a torch, accelerate or transformers function to steer control flow: which
library function a release calls is not ours to rely on (accelerate 1.16 stopped calling
``torch.nn.utils.clip_grad_norm_``, and four tests that patched it stopped interrupting)."""

from xdistil.fit import before_step  # noqa: F401  (re-exported for the tests)


class Interrupt(Exception):
    """Raised by `interrupt_at`: a crash the test can catch."""


def interrupt_at(n: int):
    """A `before_step` hook that raises `Interrupt` before the process's n-th optimizer step
    from now (counted over every fit while the hook is installed)."""
    calls = {"n": 0}

    def hook(desc, state):
        calls["n"] += 1
        if calls["n"] == n:
            raise Interrupt(f"{desc}: interrupted before optimizer step {state.global_step + 1}")

    return hook
