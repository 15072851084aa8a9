"""Export: quantisation, the artifact container, size accounting, and loading (docs/artifact.md).

    rtn        the seed's classification, int6 / int8 / fp16 quantisers and dequantisation
    gptq       full-Hessian GPTQ on the same int6 grid (export only)
    container  our pickle-free artifact format
    seedfmt    the seed's final_model.int6.ptz, read with weights_only=True
    artifact   export_run, load_artifact
    codesize   which source files count, and the self-extracting code bundle
    commands   `pgolf export`

Nothing is imported here, so `import pgolf.quant.rtn` stays light.
"""
