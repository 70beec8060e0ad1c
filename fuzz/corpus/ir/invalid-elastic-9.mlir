func.func @t(%m: !elastic.mask<ffn, -4>) { return }
