/* ferry/http.c */
#include "config.h"
#include "basic/macro.h"
#include "ferry/http.h"
FERRY_EXPORT int ferry_http_global_init(void) { return 0; }
