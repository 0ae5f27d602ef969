"""Starting a smaller model from a bigger one: which teacher layers, and copying matching tensors."""
from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ students
def spaced_layers(n_student: int, n_teacher: int) -> list[int]:
    """Teacher layers (1-based) for student layers 1..n: every k-th, ending at the last."""
    return [round((i + 1) * n_teacher / n_student) for i in range(n_student)]


def copy_matching(student, teacher, source: Callable[[str], str]) -> tuple[int, int]:
    """Set each student tensor to teacher tensor ``source(name)`` where it exists with the same
    shape; the rest keep their random initialisation. Returns (copied, kept)."""
    t_state = teacher.state_dict()
    new_state, copied, kept = {}, 0, 0
    for name, value in student.state_dict().items():
        tv = t_state.get(source(name))
        if tv is not None and list(tv.shape) == list(value.shape):
            new_state[name] = tv
            copied += 1
        else:
            new_state[name] = value  # shape differs or no counterpart: keeps its initialisation
            kept += 1
    student.set_state_dict(new_state)
    log.info("student initialised from the teacher: %d tensors copied, %d left as initialised",
             copied, kept)
    return copied, kept
