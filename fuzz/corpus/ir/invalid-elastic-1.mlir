func.func @t(%m: !elastic.mask<attn_heads, 8, groups = 0>) { return }
