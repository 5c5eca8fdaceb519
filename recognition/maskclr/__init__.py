"""MaskCLR pieces that are not model code: AGPM masking (`agpm`) and MLCL losses (`losses`), docs/method.md §5–6."""
