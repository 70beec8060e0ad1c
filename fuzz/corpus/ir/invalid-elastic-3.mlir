func.func @t(%m: !elastic.mask<mamba_heads, 8, groups = 3>) { return }
