#!/usr/bin/env python3
# ferryd rate limits, syslog configuration and one-time subject tokens (being written).
print("1..0 # SKIP being written")
