-- wrk script: GET <path>, rotating the session cookie over the values in <file>
-- (one per line), each of <threads> threads starting at its own offset. Without a file ("-") no cookie
-- is sent (the login workload). done() prints one JSON line for bench/run.py.
--
--   wrk -t1 -c32 -d10s -s bench/wrk/rotate.lua http://127.0.0.1:8101 -- /read ids.tmp 1

local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local path = "/"
local cookies = {}
local n = 0
local idx = 0

function init(args)
  path = args[1] or "/"
  local file = args[2]
  if file ~= nil and file ~= "-" then
    for line in io.lines(file) do
      if #line > 0 then
        n = n + 1
        cookies[n] = "session=" .. line
      end
    end
  end
  local nthreads = tonumber(args[3] or "1")
  if n > 0 then
    idx = math.floor((tid or 0) * n / nthreads) % n
  end
end

function request()
  if n == 0 then
    return wrk.format("GET", path)
  end
  idx = idx % n + 1
  return wrk.format("GET", path, { ["Cookie"] = cookies[idx] })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
