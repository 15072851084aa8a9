"""Export: quantisation, the artifact container, size accounting, and loading (docs/artifact.md).

    rtn        the seed's classification, int6 / int8 / fp16 quantisers and dequantisation
    gptq       full-Hessian GPTQ on the same int6 grid (export only)
    container  our pickle-free artifact format
    seedfmt    the seed's final_model.int6.ptz, read with weights_only=True
    artifact   export_run, load_artifact
    codesize   which source files count, and the self-extracting code bundle
    commands   `pgolf export`

  the frontier export (quant.scheme = "frontier", FRONTIER F5):
    sdclip     GPTQ with SDClip steps, the int8 per-row gate quantiser
    lqer       the low-rank correction of the quantisation error
    awq        AWQ-lite's salient column groups
    frontier   the record's classification, quantisation and dequantisation
    calibrate  Hessians from training tokens, inside the training budget
    banks      the record's weight banks <-> per-layer names
    simsort    the L1 nearest-neighbour row order
    codecs     brotli / lzma / lrzip, bounded
    pergroup   pgolf's per-group container (.pgrp)
    recordfmt  the record's PGRP artifact, read safely
    frontier_export  export_frontier, read_frontier, load_frontier_model

Nothing is imported here, so `import pgolf.quant.rtn` stays light.
"""
