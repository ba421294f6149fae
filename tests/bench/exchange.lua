-- tests/bench/exchange.lua - wrk script for tests/bench/run-exchange.sh: RFC 8693 token
-- exchanges (or, with BENCH_MODE=client_credentials, OAuth client-credentials grants for the
-- oidc-provider peer; with BENCH_MODE=get, GETs of BENCH_PATH with a bearer token, for
-- tests/bench/run-secrets.sh).
--
-- Environment (read once per wrk thread):
--   BENCH_TOKENS  file with one subject token per line; requests cycle through them, each
--                 wrk thread starting at its own offset (exchange mode)
--   BENCH_AUDIENCE, BENCH_SCOPE  the audience and scope asked for (exchange mode)
--   BENCH_MODE    "exchange" (default), "client_credentials" or "get"
--   BENCH_BEARER  the bearer token of every request (get mode)
--   BENCH_BASIC   "Authorization: Basic" credential, base64 (client_credentials mode)
--   BENCH_RESOURCE  the resource indicator asked for (client_credentials mode)
--   BENCH_PATH    request path (default /v1/token)
--   BENCH_DELAY_MS  when set and > 0, every connection waits this long (milliseconds,
--                 wrk's delay()) before each request: a fixed offered rate of about
--                 connections * 1000 / (BENCH_DELAY_MS + latency) per second
--   BENCH_STOP_AFTER  when set, each wrk thread stops once it has counted this many responses
--                 and creates the file BENCH_STOP_FILE (if set): wrk's main thread sleeps for
--                 the whole -d duration whatever its threads do, so run-exchange.sh waits
--                 for that file and then sends wrk SIGINT, which ends the run at once
--
-- done() prints one line of key=value pairs that run-exchange.sh parses:
--   wrkresult requests=N ok=N non200=N errors_connect=N errors_read=N errors_write=N
--             errors_status=N errors_timeout=N duration_us=N rps=N p50_us=N p90_us=N
--             p99_us=N p999_us=N max_us=N mean_us=N first_bad_status=S active_us=N
-- Everything but a 200 counts in non200; the first bad status and body are printed on stderr.
-- rps is the 200 answers divided by active_us, the wall-clock time from the first request
-- to the last response (CLOCK_MONOTONIC through LuaJIT's ffi), so a stopped run is not
-- charged for the time until wrk's main thread noticed; without ffi it is wrk's duration.

local threads = {}
local counter = 0

local have_ffi, ffi = pcall(require, "ffi")
if have_ffi then
    ffi.cdef[[
        typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
        int clock_gettime(int clk, bench_timespec *ts);
    ]]
end
local ts = have_ffi and ffi.new("bench_timespec") or nil
local function now_us()
    if not ts then return 0 end
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

function setup(thread)
    thread:set("id", counter)
    table.insert(threads, thread)
    counter = counter + 1
end

local function urlencode(s)
    return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local bodies = {}
local nbodies = 0
local index = 0
local headers = {}
local path = "/v1/token"
local delay_ms = 0
local stop_after = 0
local stop_file = nil
local stopped = false
local method = "POST"
t_first = 0
t_last = 0
ok = 0
non200 = 0
first_bad = ""

function init(args)
    local mode = os.getenv("BENCH_MODE") or "exchange"
    path = os.getenv("BENCH_PATH") or "/v1/token"
    delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0") or 0
    stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "0") or 0
    stop_file = os.getenv("BENCH_STOP_FILE")
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    if mode == "get" then
        method = "GET"
        headers["Content-Type"] = nil
        headers["Authorization"] = "Bearer " .. assert(os.getenv("BENCH_BEARER"), "BENCH_BEARER")
        bodies[1] = nil
        nbodies = 1
    elseif mode == "client_credentials" then
        headers["Authorization"] = "Basic " .. assert(os.getenv("BENCH_BASIC"), "BENCH_BASIC")
        bodies[1] = "grant_type=client_credentials&resource=" ..
            urlencode(assert(os.getenv("BENCH_RESOURCE"), "BENCH_RESOURCE"))
        nbodies = 1
    else
        local file = assert(os.getenv("BENCH_TOKENS"), "BENCH_TOKENS is not set")
        local tail = "&audience=" .. urlencode(assert(os.getenv("BENCH_AUDIENCE"))) ..
            "&scope=" .. urlencode(assert(os.getenv("BENCH_SCOPE")))
        local head = "grant_type=" ..
            urlencode("urn:ietf:params:oauth:grant-type:token-exchange") ..
            "&subject_token_type=" .. urlencode("urn:ietf:params:oauth:token-type:access_token") ..
            "&subject_token="
        for line in io.lines(file) do
            if #line > 0 then
                nbodies = nbodies + 1
                bodies[nbodies] = head .. urlencode(line) .. tail
            end
        end
        assert(nbodies > 0, "no tokens in " .. file)
    end
    -- wrk calls init() once per thread; spread the threads over the pool.
    index = ((id or 0) * 7919) % nbodies
end

function request()
    if t_first == 0 then t_first = now_us() end
    index = index + 1
    if index > nbodies then index = 1 end
    return wrk.format(method, path, headers, bodies[index])
end

if (tonumber(os.getenv("BENCH_DELAY_MS") or "0") or 0) > 0 then
    function delay()
        return delay_ms
    end
end

function response(status, hdrs, body)
    if stopped then return end
    if status == 200 then
        ok = ok + 1
    else
        non200 = non200 + 1
        if first_bad == "" then
            first_bad = tostring(status)
            io.stderr:write("exchange.lua: status " .. status .. ": " ..
                string.sub(body or "", 1, 300) .. "\n")
        end
    end
    t_last = now_us()
    if stop_after > 0 and ok + non200 >= stop_after then
        stopped = true
        wrk.thread:stop()
        if stop_file then
            local f = io.open(stop_file, "w")
            if f then f:close() end
        end
    end
end

function done(summary, latency, requests)
    local okn, bad, firstbad, t0, t1 = 0, 0, "", nil, nil
    for _, t in ipairs(threads) do
        local a, b = t:get("t_first") or 0, t:get("t_last") or 0
        if a > 0 and (not t0 or a < t0) then t0 = a end
        if b > 0 and (not t1 or b > t1) then t1 = b end
        okn = okn + (t:get("ok") or 0)
        bad = bad + (t:get("non200") or 0)
        local fb = t:get("first_bad")
        if firstbad == "" and fb and fb ~= "" then firstbad = fb end
    end
    local e = summary.errors
    local active = summary.duration
    if t0 and t1 and t1 > t0 then active = t1 - t0 end
    local secs = active / 1e6
    io.write(string.format(
        "wrkresult requests=%d ok=%d non200=%d errors_connect=%d errors_read=%d " ..
        "errors_write=%d errors_status=%d errors_timeout=%d duration_us=%d rps=%.1f " ..
        "p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d mean_us=%.1f first_bad_status=%s " ..
        "active_us=%d\n",
        summary.requests, okn, bad, e.connect, e.read, e.write, e.status, e.timeout,
        summary.duration, okn / secs,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9), latency.max, latency.mean,
        firstbad == "" and "-" or firstbad, active))
end
