-- wrk script for the event-gateway benchmark: POST one CloudEvent with a bearer token.
-- Reads BENCH_BODY_FILE (the request body) and BENCH_TOKEN from the environment, counts
-- 2xx and non-2xx responses per thread and prints one "BENCH_JSON {...}" line at the end.

local f = assert(io.open(assert(os.getenv("BENCH_BODY_FILE"), "BENCH_BODY_FILE unset"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/cloudevents+json"
wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("BENCH_TOKEN"), "BENCH_TOKEN unset")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok2xx = 0
  non2xx = 0
  statuses = {}
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok2xx = ok2xx + 1
  else
    non2xx = non2xx + 1
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local ok, bad, by_code, codes = 0, 0, {}, {}
  for _, thread in ipairs(threads) do
    ok = ok + thread:get("ok2xx")
    bad = bad + thread:get("non2xx")
    for code, n in pairs(thread:get("statuses")) do
      by_code[code] = (by_code[code] or 0) + n
    end
  end
  for code, n in pairs(by_code) do
    codes[#codes + 1] = string.format('"%d":%d', code, n)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"ok2xx":%d,"non2xx":%d,"statuses":{%s},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, ok, bad, table.concat(codes, ","),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
