# cmake -DSRC=<file> -DOUT=<cpp> -DSYMBOL=<name> -P NestorEmbedFile.cmake (see NestorEmbed.cmake).
file(READ ${SRC} hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR size "${hex_length} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
# Break the initialiser into lines of 16 bytes.
string(REGEX REPLACE "(('[^']*',){16})" "\\1\n  " bytes "${bytes}")
get_filename_component(name ${SRC} NAME)
file(WRITE ${OUT}.tmp
"// Generated from ${name} by NestorEmbedFile.cmake; do not edit.
#include <cstddef>
namespace nestor::embedded {
extern const char ${SYMBOL}[];
extern const std::size_t ${SYMBOL}_size;
const char ${SYMBOL}[] = {
  ${bytes}'\\0'};
const std::size_t ${SYMBOL}_size = ${size};
} // namespace nestor::embedded
")
file(RENAME ${OUT}.tmp ${OUT})
