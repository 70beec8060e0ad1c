func.func @t(%m: !elastic.mask<ffn, 8, groups = 2>) { return }
