"""MaskCLR pieces that are not model code: AGPM masking (`agpm`) and the MLCL losses (`losses`), METHOD.md §5–6."""
