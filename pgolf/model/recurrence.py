"""Depth recurrence: which layer each virtual pass runs, and which encoder pass feeds each skip.

Pure functions of (num_layers, num_loops, loop_start, loop_end) — FRONTIER F2.6. With the
loops on, layers loop_start..loop_end run num_loops+1 times in a row; the virtual list is
split in half into encoder and decoder passes exactly as PR #1855 splits it. With the loops
off (or num_loops = 0) it is the plain U-Net: the first num_layers//2 layers encode.
"""

from __future__ import annotations


def virtual_layers(num_layers: int, num_loops: int, loop_start: int, loop_end: int) -> list[int]:
    """[0..start) + [start..end] x (num_loops+1) + (end..num_layers): the looped layer order."""
    if num_loops <= 0:
        return list(range(num_layers))
    segment = list(range(loop_start, loop_end + 1))
    return [*range(loop_start), *segment * (num_loops + 1), *range(loop_end + 1, num_layers)]


def layer_schedule(
    num_layers: int, num_loops: int, loop_start: int, loop_end: int, looping: bool
) -> tuple[list[int], list[int]]:
    """(encoder layers, decoder layers) in pass order."""
    if num_loops > 0 and looping:
        order = virtual_layers(num_layers, num_loops, loop_start, loop_end)
        half = len(order) // 2
        return order[:half], order[half:]
    half = num_layers // 2
    return list(range(half)), list(range(half, num_layers))


def num_skip_rows(num_layers: int, num_loops: int, loop_start: int, loop_end: int) -> int:
    """Rows of skip weights: enough for the longer (looping) schedule, as the record sizes them."""
    enc, dec = layer_schedule(num_layers, num_loops, loop_start, loop_end, looping=num_loops > 0)
    return min(len(enc), len(dec))


def skip_sources(num_encoder_passes: int, num_decoder_passes: int, rows: int) -> list[int | None]:
    """For decoder pass k, the encoder pass whose output it receives (None: no skip).

    Encoder outputs form a stack; decoder pass k pops it while k < rows and it is not empty,
    and uses skip row k. So pass k reads encoder pass num_encoder_passes-1-k.
    """
    return [
        num_encoder_passes - 1 - k if k < rows and k < num_encoder_passes else None for k in range(num_decoder_passes)
    ]
