# nestor_embed(<out-var> <symbol> <file>): embeds <file> (relative to the current source dir) in
# the binary at build time. Appends to <out-var> a generated .cpp that defines
#   namespace nestor::embedded { extern const char <symbol>[]; extern const size_t <symbol>_size; }
# (the bytes, NUL-terminated; the size excludes the NUL). It is regenerated when the file changes.
set(NESTOR_EMBED_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/NestorEmbedFile.cmake)

function(nestor_embed out_var symbol file)
  get_filename_component(src ${file} ABSOLUTE BASE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
  set(out ${CMAKE_CURRENT_BINARY_DIR}/embed/${symbol}.cpp)
  add_custom_command(OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DSRC=${src} -DOUT=${out} -DSYMBOL=${symbol} -P ${NESTOR_EMBED_SCRIPT}
    DEPENDS ${src} ${NESTOR_EMBED_SCRIPT}
    COMMENT "Embedding ${file}" VERBATIM)
  set(${out_var} ${${out_var}} ${out} PARENT_SCOPE)
endfunction()
