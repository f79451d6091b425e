// Boost.JSON compiled into the fuzz targets, so that its parser is
// instrumented too and the fuzzer sees coverage inside it.
#include <boost/json/src.hpp>
